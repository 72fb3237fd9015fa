"""A real rsyslog for the syslog sink's tests: unprivileged, on high ports, one file per transport.

    with Rsyslog(workdir, tls=make_tls_files(...)) as rs:   # listens on rs.tcp_port, rs.tls_port, rs.udp_port
        ...
        rs.wait_for("tcp", 5)                                 # the first 5 messages rsyslog wrote, parsed

rsyslogd runs in the foreground (``-n``) with its own configuration, pid file and work directory in a
directory of its own. Started as root (CI), it runs as ``nobody`` (``setpriv``): a syslog receiver needs no
privilege on ports above 1024. Each transport's input writes to its own file, one JSON object per message
with what rsyslog parsed out of the RFC 5424 header (``pri``, ``hostname``, ``app``, ``procid``, ``msgid``,
``sd``, ``timestamp``) and the message (``msg``), so a test sees exactly what a SIEM fed by rsyslog would.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.agents.mosquitto import TlsFiles
from tests.agents.promserver import free_port

RSYSLOGD = Path(shutil.which("rsyslogd") or "/usr/sbin/rsyslogd")
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
TRANSPORTS = ("tcp", "tls", "udp")

_CONFIG = """
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
module(load="imudp")
template(name="parsed" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="tcp") {{ action(type="omfile" file="{out}/tcp.jsonl" template="parsed") }}
ruleset(name="tls") {{ action(type="omfile" file="{out}/tls.jsonl" template="parsed") }}
ruleset(name="udp") {{ action(type="omfile" file="{out}/udp.jsonl" template="parsed") }}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="tcp")
input(type="imtcp" port="{tls}" address="127.0.0.1" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="udp")
"""


def require_rsyslog() -> None:
    if not RSYSLOGD.exists() or not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")):
        pytest.skip("rsyslog (and rsyslog-gnutls) not installed; scripts/test installs them with apt-get")


class Rsyslog:
    """One rsyslogd with a TCP, a TLS and a UDP input on free ports of 127.0.0.1."""

    def __init__(self, tls: TlsFiles) -> None:
        require_rsyslog()
        # A directory of its own under /tmp: pytest's tmp_path is 0700 root, and rsyslog runs as nobody.
        self.dir = Path(tempfile.mkdtemp(prefix="camwatch-rsyslog-"))
        self.out = self.dir / "out"
        self.work = self.dir / "work"
        self.out.mkdir()
        self.work.mkdir()
        for name, src in (("ca.pem", tls.ca), ("cert.pem", tls.cert), ("key.pem", tls.key)):
            shutil.copy(src, self.dir / name)
        self.tcp_port, self.tls_port, self.udp_port = free_port(), free_port(), _free_udp_port()
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(
            _CONFIG.format(
                work=self.work,
                out=self.out,
                ca=self.dir / "ca.pem",
                cert=self.dir / "cert.pem",
                key=self.dir / "key.pem",
                tcp=self.tcp_port,
                tls=self.tls_port,
                udp=self.udp_port,
            )
        )
        self.log = self.dir / "rsyslogd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def port(self, transport: str) -> int:
        return {"tcp": self.tcp_port, "tls": self.tls_port, "udp": self.udp_port}[transport]

    def start(self) -> None:
        cmd = [str(RSYSLOGD), "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")]
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            cmd = [SETPRIV, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *cmd]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        for port in (self.tcp_port, self.tls_port):
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"rsyslogd exited: {self.log.read_text(errors='replace')}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"rsyslogd is not listening: {self.log.read_text(errors='replace')}"
                        ) from exc
                    time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def received(self, transport: str) -> list[dict[str, Any]]:
        """What rsyslog wrote for that input so far (whole lines only)."""
        path = self.out / f"{transport}.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        data = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def wait_for(self, transport: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """At least ``count`` messages on that input (rsyslog writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(transport)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
