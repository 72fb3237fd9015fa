"""The Prometheus endpoint (docs/design.md §4.5): a small HTTP(S) server for ``/metrics`` over a registry.

The metrics themselves are collectors, one per component of the agent, each building its families at
scrape time (agents/collectors.py says which; docs/metrics.md lists every family). The agent registers
them on the registry this server serves; formatting and sending happen in the server's own thread,
never on the packet path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import hmac
import html
import io
import ipaddress
import logging
import os
import platform
import queue
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import DEFAULT_METRICS_PORT, MetricsConfig, read_password_file
from monitor import __version__

__all__ = [
    "CLOSE_REASONS",
    "DEFAULT_METRICS_PORT",
    "ExporterCollector",
    "ExporterStats",
    "MetricsServer",
    "tls_server_context",
]

log = logging.getLogger(__name__)

#: A new connection's first request head (its TLS handshake included) must be complete within this.
HEAD_TIMEOUT: Final = 10.0
#: A kept-alive connection's next request head must be complete within this after the last answer.
IDLE_TIMEOUT: Final = 120.0
#: Sending an answer may take this long (a client that does not read is dropped).
WRITE_TIMEOUT: Final = 15.0
#: Connections at once from one address; in all.
MAX_PER_CLIENT: Final = 16
MAX_CONNECTIONS: Final = 256
#: Threads answering complete requests.
WORKERS: Final = 8
#: A request head larger than this is refused (Prometheus sends a few hundred bytes).
MAX_HEAD: Final = 16 * 1024
#: Wrong passwords from one address before its requests get 429, and how many more per minute after that.
AUTH_BURST: Final = 5
AUTH_PER_MINUTE: Final = 5.0
BACKLOG: Final = 128
ACCEPT_BATCH: Final = 64
READ_SIZE: Final = 4096


def tls_server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) with the given PEM certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An empty password: an encrypted key fails here instead of OpenSSL prompting on a terminal.
    context.load_cert_chain(cert_file, key_file, password=b"")
    return context


class _TlsFiles:
    """The TLS context, rebuilt when the certificate or key file changes (renewals, months apart).

    Checked at most once a minute. If the new files cannot be loaded (e.g. a root-only key after
    privileges were dropped) the old context stays in use and a warning is logged.
    """

    CHECK_SECONDS: Final = 60.0

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._files = (cert_file, key_file)
        self._lock = threading.Lock()
        self._context = tls_server_context(cert_file, key_file)
        self._stamp = self._mtimes()
        self._checked = time.monotonic()

    def _mtimes(self) -> tuple[float, ...]:
        try:
            return tuple(f.stat().st_mtime for f in self._files)
        except OSError:
            return ()

    def context(self) -> ssl.SSLContext:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.CHECK_SECONDS:
                self._checked = now
                stamp = self._mtimes()
                if stamp and stamp != self._stamp:
                    try:
                        self._context = tls_server_context(*self._files)
                        self._stamp = stamp
                        log.info("metrics: reloaded the TLS certificate %s", self._files[0])
                    except (ssl.SSLError, OSError) as exc:
                        log.warning(
                            "metrics: cannot reload the TLS certificate, keeping the old one: %s", exc
                        )
            return self._context


@dataclass(frozen=True, slots=True)
class _Credentials:
    """Basic-auth credentials, kept as a digest so the comparison takes the same time for any input."""

    digest: bytes = field(repr=False)

    @classmethod
    def of(cls, username: str, password: str) -> _Credentials:
        return cls(hashlib.sha256(f"{username}:{password}".encode()).digest())

    def accepts(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(given).digest(), self.digest)


class _AuthThrottle:
    """Wrong passwords per client address: a token bucket of :data:`AUTH_BURST` failures, refilled at one per
    ``60 / AUTH_PER_MINUTE`` s. An empty bucket answers 429 without checking the password, so guessing goes no
    faster than that from one address; a client that never fails never notices."""

    def __init__(self, burst: int, per_minute: float, max_clients: int = 4096) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float, bool]] = OrderedDict()  # tokens, at, said

    def _tokens(self, client: str, now: float) -> tuple[float, bool]:
        tokens, at, said = self._buckets.get(client, (float(self.burst), now, False))
        return min(float(self.burst), tokens + (now - at) * self.rate), said

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try a password again (0: it may now)."""
        with self._lock:
            tokens, _ = self._tokens(client, time.monotonic())
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def failure(self, client: str) -> float | None:
        """Count a wrong password; the lockout in seconds when this one used the last token and it was not
        said yet (log it once per lockout), else None."""
        with self._lock:
            now = time.monotonic()
            tokens, said = self._tokens(client, now)
            tokens = max(0.0, tokens - 1.0)
            locked = tokens < 1.0
            self._buckets.pop(client, None)
            self._buckets[client] = (tokens, now, locked)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            if locked and not said:
                return (1.0 - tokens) / self.rate
            return None


@dataclass(slots=True)
class ExporterStats:
    """What the endpoint turned away, for ``camwatch_metrics_*`` (plain ints: one thread writes each)."""

    open: int = 0  # connections open now (waiting for a request, or being answered)
    closed: Counter[str] = field(default_factory=Counter)  # by reason: CLOSE_REASONS
    auth_failures: int = 0
    throttled: int = 0


#: Why the endpoint closes a connection on its own (``camwatch_metrics_connections_closed_total{reason}``).
CLOSE_REASONS: Final = ("header_timeout", "client_limit", "evicted", "full", "too_large")


class ExporterCollector(Collector):
    """``camwatch_metrics_*``: the endpoint's own connections, wrong passwords and throttled requests."""

    def __init__(self, stats: ExporterStats) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        return _exporter_families(ExporterStats())

    def collect(self) -> Iterable[Metric]:
        return _exporter_families(self._stats)


def _exporter_families(stats: ExporterStats) -> list[Metric]:
    closed = CounterMetricFamily(
        "camwatch_metrics_connections_closed",
        "Connections the metrics endpoint closed on its own, by reason.",
        labels=("reason",),
    )
    for reason in CLOSE_REASONS:
        closed.add_metric([reason], stats.closed[reason])
    return [
        GaugeMetricFamily(
            "camwatch_metrics_connections", "Connections open to the metrics endpoint.", value=stats.open
        ),
        closed,
        CounterMetricFamily(
            "camwatch_metrics_auth_failures",
            "Requests refused with 401: no or wrong basic-auth credentials.",
            value=stats.auth_failures,
        ),
        CounterMetricFamily(
            "camwatch_metrics_requests_throttled",
            "Requests refused with 429 because their client sent too many wrong passwords.",
            value=stats.throttled,
        ),
    ]


class _Notices:
    """One WARNING per kind of trouble per minute at most, with how many happened since the last one."""

    EVERY: Final = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def note(self, kind: str, client: str, what: str) -> None:
        with self._lock:
            self._since[kind] += 1
            now = time.monotonic()
            if now - self._last.get(kind, -self.EVERY) < self.EVERY:
                return
            count, self._since[kind] = self._since[kind], 0
            self._last[kind] = now
        log.warning(
            "metrics: %s (%d time(s) in the last minute at most, the last from %s): is something flooding "
            "the metrics port?",
            what,
            count,
            client,
        )


@dataclass(eq=False, slots=True)
class _Conn:
    """A client connection while the selector owns it (reading a request head) or a worker answers it."""

    sock: socket.socket  # an SSLSocket with TLS
    client: str  # the peer's address, without the port
    address: Any  # the peer's full address
    since: float  # monotonic: when accepted
    deadline: float  # monotonic: the request head (TLS handshake included) must be complete by then
    buf: bytearray = field(default_factory=bytearray)
    handshaking: bool = False
    busy: bool = False
    served: bool = False  # answered a request with 200 (authenticated, when auth is on)
    events: int = selectors.EVENT_READ


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the selector has read (``rfile`` holds it); never reads the socket."""

    server: Any
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses the connection (and its TLS session)
    server_version = f"camwatch/{__version__}"
    sys_version = ""

    def __init__(self, conn: _Conn, head: bytes, exporter: _Exporter) -> None:
        self.conn = conn
        self.exporter = exporter
        self.ok = False
        self.close_connection = True
        self.request = conn.sock
        self.client_address = conn.address
        self.rfile = io.BytesIO(head)
        self.wfile = socketserver._SocketWriter(conn.sock)  # type: ignore[attr-defined]
        self.handle_one_request()

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        exporter = self.exporter
        credentials = exporter.credentials
        if credentials is not None:
            client = self.conn.client
            wait = exporter.throttle.blocked(client)
            if wait > 0:
                exporter.stats.throttled += 1
                self.close_connection = True
                retry = [("Retry-After", str(max(1, round(wait))))]
                self._send(429, b"429 Too many wrong passwords: try later\n", _TEXT, head, retry)
                return
            given = self.headers.get("Authorization")
            if not credentials.accepts(given):
                exporter.stats.auth_failures += 1
                self.close_connection = True  # a client without the password keeps no connection
                if given is not None:
                    lockout = exporter.throttle.failure(client)
                    if lockout is not None:
                        log.warning(
                            "metrics: %d wrong passwords from %s: its requests get 429 for %.0f s (then one "
                            "more try every %.0f s)",
                            exporter.throttle.burst,
                            client,
                            lockout,
                            1 / exporter.throttle.rate,
                        )
                self._send(
                    401,
                    b"401 Unauthorized\n",
                    _TEXT,
                    head,
                    [("WWW-Authenticate", 'Basic realm="camwatch", charset="UTF-8"')],
                )
                return
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(exporter.registry)
            except Exception:
                log.exception("metrics: collecting the metrics failed")
                self._send(500, b"500 collecting the metrics failed\n", _TEXT, head)
                return
            extra: list[tuple[str, str]] = []
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body, compresslevel=6)
                extra.append(("Content-Encoding", "gzip"))
            self.ok = True
            self._send(200, body, content_type, head, extra)
        elif path in ("/", "/index.html"):
            self.ok = True
            self._send(200, exporter.landing, "text/html; charset=utf-8", head)
        else:
            self._send(404, b"404 Not Found: try /metrics\n", _TEXT, head)

    def _send(
        self, code: int, body: bytes, content_type: str, head: bool, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: %s %s", self.conn.client, format % args)


_TEXT: Final = "text/plain; charset=utf-8"


class _Exporter:
    """The endpoint's event loop: one thread accepts connections and reads request heads for all of them
    (a TLS handshake included) without blocking; only a complete head is handed to a worker thread, which
    answers it and hands a keep-alive connection back. So a connection that sends nothing, or a header line
    every few seconds, costs a file descriptor and a buffer, never a worker, and is closed at its deadline.

    Limits: :data:`HEAD_TIMEOUT` for the first request head (TLS handshake included), :data:`IDLE_TIMEOUT`
    for each following one on a kept-alive connection; :data:`MAX_PER_CLIENT` connections per address (a new
    one replaces that client's oldest idle one, or is refused); :data:`MAX_CONNECTIONS` in all, beyond which a
    new connection replaces the oldest idle one, those that never got an answer first. A connection being
    answered is never closed for another. Wrong passwords are throttled per address (:class:`_AuthThrottle`).
    """

    def __init__(
        self,
        listener: socket.socket,
        registry: CollectorRegistry,
        tls: _TlsFiles | None,
        credentials: _Credentials | None,
        landing: bytes,
    ) -> None:
        self.listener = listener
        self.registry = registry
        self.tls = tls
        self.credentials = credentials
        self.landing = landing
        self.stats = ExporterStats()
        self.throttle = _AuthThrottle(AUTH_BURST, AUTH_PER_MINUTE)
        self.notices = _Notices()
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, _Conn] = {}  # by file descriptor: the connections the selector reads
        self._clients: Counter[str] = Counter()  # open connections per client address
        self._answering: set[_Conn] = set()
        self._next_expiry = 0.0
        self._returned: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="metrics-http")
        self._stopping = threading.Event()
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    # ------------------------------------------------------------------ the loop (its own thread)

    def serve(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _mask in self._selector.select(timeout=0.25):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        conn = self._waiting.get(key.fd)
                        if conn is not None:
                            self._read(conn)
                self._take_back()
                self._expire()
        finally:
            for conn in list(self._waiting.values()):
                self._close(conn)
            for conn in list(self._answering):  # a worker blocked sending returns at once
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
            self._selector.close()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):  # then the heads already read get their turn
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the loop goes on, the listener too
                log.warning("metrics: cannot accept a connection: %s", exc)
                return
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: Any) -> None:
        client = str(address[0])
        if self._clients[client] >= MAX_PER_CLIENT and not self._evict(lambda c: c.client == client):
            self._refuse(
                sock, client, "client_limit", f"more than {MAX_PER_CLIENT} connections from one client"
            )
            return
        if self.stats.open >= MAX_CONNECTIONS and not self._evict(lambda c: True):
            self._refuse(sock, client, "full", f"{MAX_CONNECTIONS} connections open, each being answered")
            return
        now = time.monotonic()
        sock.setblocking(False)
        conn = _Conn(sock, client, address, now, now + HEAD_TIMEOUT)
        if self.tls is not None:
            try:
                conn.sock = self.tls.context().wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except (ssl.SSLError, OSError) as exc:
                log.debug("metrics: TLS with %s failed: %s", client, exc)
                sock.close()
                return
            conn.handshaking = True
        self._clients[client] += 1
        self.stats.open += 1
        self._watch(conn)

    def _evict(self, which: Callable[[_Conn], bool]) -> bool:
        """Close the waiting connection chosen by ``which`` that matters least (never answered, oldest);
        False if there is none."""
        candidates = [c for c in self._waiting.values() if which(c)]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: (c.served, c.since))
        self.stats.closed["evicted"] += 1
        self.notices.note("evicted", victim.client, "closed idle connections to make room for new ones")
        self._close(victim)
        return True

    def _refuse(self, sock: socket.socket, client: str, reason: str, what: str) -> None:
        self.stats.closed[reason] += 1
        self.notices.note(reason, client, f"refused connections: {what}")
        with contextlib.suppress(OSError):
            sock.close()

    def _watch(self, conn: _Conn) -> None:
        self._waiting[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, conn.events)

    def _unwatch(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        self._waiting.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)

    def _close(self, conn: _Conn) -> None:
        self._unwatch(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self._clients[conn.client] -= 1
        if self._clients[conn.client] <= 0:
            del self._clients[conn.client]
        self.stats.open -= 1

    def _read(self, conn: _Conn) -> None:
        """Read what the client sent (or do the next step of its TLS handshake) without blocking; a complete
        request head goes to a worker."""
        try:
            if conn.handshaking:
                assert isinstance(conn.sock, ssl.SSLSocket)
                conn.sock.do_handshake()
                conn.handshaking = False
            while True:
                chunk = conn.sock.recv(READ_SIZE)
                if not chunk:
                    self._close(conn)  # the client went away
                    return
                conn.buf += chunk
                pending = conn.sock.pending() if isinstance(conn.sock, ssl.SSLSocket) else 0
                if not pending or len(conn.buf) > MAX_HEAD:
                    break
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (BlockingIOError, InterruptedError):
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("metrics: connection from %s failed: %s", conn.client, exc)
            self._close(conn)
            return
        self._dispatch(conn)

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.modify(conn.sock, events)

    def _dispatch(self, conn: _Conn) -> None:
        """A complete request head in ``conn.buf`` goes to a worker (the rest stays for the next request)."""
        buf = conn.buf.lstrip(b"\r\n")
        end = buf.find(b"\r\n\r\n")
        size = end + 4 if end >= 0 else -1
        if size < 0:
            bare = buf.find(b"\n\n")
            size = bare + 2 if bare >= 0 else -1
        if size < 0:
            if len(buf) > MAX_HEAD:
                self.stats.closed["too_large"] += 1
                self.notices.note(
                    "too_large",
                    conn.client,
                    f"closed connections sending a head over {MAX_HEAD} bytes",
                )
                self._close(conn)
            else:
                conn.buf = buf
            return
        head, conn.buf = bytes(buf[:size]), bytearray(buf[size:])
        self._unwatch(conn)
        conn.busy = True
        self._answering.add(conn)
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(WRITE_TIMEOUT)
            self._workers.submit(self._answer, conn, head)
        except (RuntimeError, OSError):  # shutting down
            conn.busy = False
            self._answering.discard(conn)
            self._close(conn)

    def _answer(self, conn: _Conn, head: bytes) -> None:
        """In a worker: answer one request, then hand the connection back (kept alive or to be closed)."""
        keep = False
        try:
            handler = _Handler(conn, head, self)
            keep = not handler.close_connection
            conn.served = conn.served or handler.ok
        except Exception:  # a client gone mid-answer is routine; nothing may reach the worker's caller
            log.debug("metrics: error answering %s", conn.client, exc_info=True)
        self._returned.put((conn, keep))
        self._wake()

    def _take_back(self) -> None:
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            conn.busy = False
            self._answering.discard(conn)
            if not keep or self._stopping.is_set():
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)
                continue
            conn.deadline = time.monotonic() + IDLE_TIMEOUT
            conn.events = selectors.EVENT_READ
            self._watch(conn)
            if conn.buf:  # a pipelined request, already here
                self._dispatch(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry:  # a busy loop wakes often; deadlines are seconds apart
            return
        self._next_expiry = now + 0.1
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            if not conn.served:  # a kept-alive connection that goes quiet is routine, not trouble
                self.stats.closed["header_timeout"] += 1
                self.notices.note(
                    "header_timeout",
                    conn.client,
                    f"closed connections without a complete request after {HEAD_TIMEOUT:g} s",
                )
            self._close(conn)


def _landing_page(version: str, tls: bool) -> bytes:
    esc = html.escape
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>camwatch</title></head><body>\n'
        "<h1>camwatch</h1>\n"
        "<p>Edge monitor for CCTV camera traffic: the agent's Prometheus endpoint.</p>\n"
        '<p><a href="metrics">Metrics</a></p>\n'
        f"<p>Version {esc(version)}, Python {esc(platform.python_version())}"
        f"{', served over TLS' if tls else ''}.</p>\n"
        "</body></html>\n"
    ).encode()


def _address_family(host: str, port: int) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return infos[0][0]


class MetricsServer:
    """Serves ``/metrics`` (and a landing page at ``/``) from ``registry`` in a daemon thread.

    :meth:`start` binds the socket in the calling thread (so the agent binds before it drops
    privileges, and a port in use fails at start-up) and then serves in the background.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str = "0.0.0.0",
        port: int = DEFAULT_METRICS_PORT,
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        version: str = __version__,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        self.registry = registry
        self.listen = listen
        self._port = port
        self._tls = _TlsFiles(tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self._credentials = _Credentials.of(*basic_auth) if basic_auth is not None else None
        self._landing = _landing_page(version, self._tls is not None)
        self.stats = ExporterStats()
        self._exporter: _Exporter | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    @classmethod
    def from_config(
        cls,
        config: MetricsConfig,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> MetricsServer:
        """A server for the ``metrics`` section serving ``registry`` (a fresh one by default), with the
        standard ``process_*`` metrics added. Reads the basic-auth password file now, while the agent
        still has its start-up privileges."""
        registry = registry if registry is not None else CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=registry)
        auth: tuple[str, str] | None = None
        if config.basic_auth is not None:
            auth = (config.basic_auth.username, read_password_file(config.basic_auth.password_file))
        return cls(
            registry,
            config.listen,
            config.port,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
            basic_auth=auth,
        )

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        return self._bound_port if self._bound_port is not None and self._exporter is not None else self._port

    @property
    def url(self) -> str:
        """The ``/metrics`` URL (for a wildcard listen address, on the loopback address)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.listen, self.listen)
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/metrics"

    def collector(self) -> ExporterCollector:
        """The ``camwatch_metrics_*`` metrics of this endpoint (register it on the registry it serves)."""
        return ExporterCollector(self.stats)

    def start(self) -> None:
        """Bind and start serving; raises OSError (e.g. the port is in use) from the caller's thread."""
        if self._exporter is not None:
            return
        host = self.listen.strip("[]")
        family = _address_family(host, self._port)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((host, self._port))
            listener.listen(BACKLOG)
        except OSError as exc:
            listener.close()
            raise OSError(
                exc.errno, f"metrics: cannot listen on {self.listen}:{self._port}: {exc.strerror}"
            ) from exc
        self._bound_port = int(listener.getsockname()[1])
        exporter = _Exporter(listener, self.registry, self._tls, self._credentials, self._landing)
        exporter.stats = self.stats
        self._exporter = exporter
        self._thread = threading.Thread(target=exporter.serve, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics: serving %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        exporter, thread = self._exporter, self._thread
        self._exporter = self._thread = None
        if exporter is None:
            return
        exporter.stop()
        if thread is not None:
            thread.join(timeout=5)
        exporter.listener.close()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
