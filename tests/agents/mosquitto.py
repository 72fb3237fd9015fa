"""A real Mosquitto broker for tests, plus the tools to watch and break the link to it.

Fixtures (import them into a test module: `from tests.agents.mosquitto import mosquitto`):
- `mosquitto`: anonymous broker on 127.0.0.1 and a free port, persistence off;
- `mosquitto_auth`: the same with a password file (`AUTH_USER` / `AUTH_PASSWORD`), needs `mosquitto_passwd`;
- `tls_files` / `mosquitto_tls`: a throw-away CA and server certificate made with `openssl`, and a broker
  with a TLS listener using them.
Each broker can be stopped and started again on the same port (`stop()`, `start()`). Tests skip, saying
why, when mosquitto (or openssl, mosquitto_passwd) is not installed; `scripts/test` installs them.

`Subscriber` is a plain aiomqtt client that collects what arrives (and resubscribes after a broker
restart); `TcpProxy` sits between a client and the broker and can cut the connection abruptly, the way a
dying agent or a broken network does (the broker then publishes the client's last will).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest

from tests.agents.promserver import free_port

MOSQUITTO = Path(os.environ.get("CAMWATCH_MOSQUITTO", "/usr/sbin/mosquitto"))
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
OPENSSL = Path(shutil.which("openssl") or "/usr/bin/openssl")
HOST = "127.0.0.1"
AUTH_USER = "camwatch"
AUTH_PASSWORD = "s3cret-for-tests"


def require(path: Path, what: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"{what} not installed ({path}); scripts/test installs it with apt-get")


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for 127.0.0.1 / localhost, signed by it."""

    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """One mosquitto process with a generated configuration; restartable on the same port."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = False,
        port: int | None = None,
    ) -> None:
        require(MOSQUITTO, "mosquitto")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} {HOST}"]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}", "tls_version tlsv1.2"]
        if users:
            require(MOSQUITTO_PASSWD, "mosquitto_passwd")
            pwfile = workdir / "passwd"
            for n, (user, password) in enumerate(users.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run(
                    [str(MOSQUITTO_PASSWD), *create, "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines += ["allow_anonymous true"]
        if persistence:
            # Lets a subscriber's persistent session and its queued messages survive a restart.
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        lines += [
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto 2 switches to the `mosquitto` user, which cannot read pytest's tmp_path.
            lines += ["user root"]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}:\n{self.log_text()[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_text()[-2000:]
                    raise RuntimeError(f"mosquitto did not listen on {self.address}:\n{tail}") from None
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it hangs)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def make_tls_files(workdir: Path) -> TlsFiles:
    """A CA and a server certificate (EC P-256, SAN 127.0.0.1 and localhost) made with openssl."""
    require(OPENSSL, "openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    cert, key, csr = workdir / "server.crt", workdir / "server.key", workdir / "server.csr"
    ext = workdir / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n",
        encoding="utf-8",
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str | Path) -> None:
        subprocess.run([str(OPENSSL), *map(str, args)], check=True, capture_output=True)

    ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=camwatch test CA",
        *ca_ext,
    )
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)  # fmt: skip
    return TlsFiles(ca=ca, cert=cert, key=key)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous broker on 127.0.0.1, persistence off."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def mosquitto_auth(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that wants `AUTH_USER` / `AUTH_PASSWORD` (password file made with mosquitto_passwd)."""
    with Mosquitto(tmp_path / "broker-auth", users={AUTH_USER: AUTH_PASSWORD}) as broker:
        yield broker


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and server certificate (made once per session)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def mosquitto_tls(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    """An anonymous broker with a TLS listener (certificate for 127.0.0.1 and localhost)."""
    with Mosquitto(tmp_path / "broker-tls", tls=tls_files) as broker:
        yield broker


# ---------------------------------------------------------------------- watching: a subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Subscriber:
    """Collects every message under `topic` (QoS 1); reconnects and resubscribes when the broker restarts.

    With `persistent=True` the session survives the subscriber's disconnections (clean_session false and
    a fixed client id), so a broker with persistence queues what is published while it reconnects.
    """

    broker: Mosquitto
    topic: str = "#"
    client_id: str = "camwatch-test-subscriber"
    persistent: bool = False
    client_options: dict[str, Any] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="test-subscriber")
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=self.client_id,
                    clean_session=not self.persistent,
                    keepalive=5,
                    **self.client_options,
                )
                async with client:
                    await client.subscribe(self.topic, qos=1)
                    self.connections += 1
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.messages.append(
                            Received(str(message.topic), bytes(payload), message.qos, message.retain)
                        )
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    async def wait_until(self, check: Callable[[list[Received]], bool], timeout: float) -> None:
        """Wait until `check(messages)` holds; fail the test after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not check(self.messages):
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s; received {len(self.messages)} messages")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


async def retained(broker: Mosquitto, topic: str, timeout: float = 5.0) -> Received | None:
    """The message the broker retains on `topic` (read by a fresh subscriber), or None."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"retained-{time.monotonic_ns()}"
    ) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes | bytearray)
                    return Received(str(message.topic), bytes(payload), message.qos, message.retain)
        except TimeoutError:
            return None
    return None


# ---------------------------------------------------------------------- breaking: a TCP proxy


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the broker; `cut()` kills every connection without an MQTT DISCONNECT."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = HOST
        self.port = 0
        self.connections = 0
        self.stalled = False
        """While true, bytes are swallowed in both directions: a hung broker or a black-holed route."""
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.resume()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        await self.pause()

    async def pause(self) -> None:
        """Stop listening: new connections are refused, as by a host with no broker."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def resume(self) -> None:
        """Listen again (on the same port once one was chosen). The port is chosen below Linux's ephemeral
        range (32768-60999): while paused, a port from that range can be taken as the local port of any
        outgoing connection on the machine, and listening on it again would fail (EADDRINUSE)."""
        if self._server is not None:
            return
        if self.port:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
            return
        for port in random.Random().sample(range(20000, 32000), 64):
            try:
                self._server = await asyncio.start_server(self._handle, self.host, port)
            except OSError:
                continue  # taken: try another
            self.port = port
            return
        raise OSError("no free port between 20000 and 32000 for the proxy")

    def cut(self) -> None:
        """Abort both sides of every proxied connection (RST, no FIN handshake, no DISCONNECT)."""
        for writer in list(self._links):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends a RST, as when a process dies with unread data in flight.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._links |= {writer, up_writer}
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pipe(reader, up_writer))
            tg.create_task(self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.stalled:
                    writer.write(data)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(writer)
            writer.transport.abort()


@contextlib.asynccontextmanager
async def proxy_to(broker: Mosquitto) -> AsyncIterator[TcpProxy]:
    """A `TcpProxy` in front of `broker`."""
    async with TcpProxy(broker.host, broker.port) as proxy:
        yield proxy
