"""The Prometheus endpoint (docs/design.md §4.5): a small HTTP(S) server for ``/metrics`` over a registry.

The metrics themselves are collectors, one per component of the agent, each building its families at
scrape time (agents/collectors.py says which; docs/metrics.md lists every family). The agent registers
them on the registry this server serves; formatting and sending happen in the server's own thread,
never on the packet path.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import html
import ipaddress
import logging
import os
import platform
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted

from agents.config import DEFAULT_METRICS_PORT, MetricsConfig, read_password_file
from monitor import __version__

__all__ = ["DEFAULT_METRICS_PORT", "MetricsServer", "tls_server_context"]

log = logging.getLogger(__name__)


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


class _Server(ThreadingHTTPServer):
    """One thread per connection (daemon threads: a stuck client cannot keep the agent alive)."""

    daemon_threads = True
    block_on_close = False
    #: Connections served at once; more are closed at once (a scrape needs one, a flood gets no
    #: more threads than this).
    max_connections = 32

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        tls: _TlsFiles | None,
        credentials: _Credentials | None,
        landing: bytes,
    ) -> None:
        self.address_family = family
        self.registry = registry
        self.tls = tls
        self.credentials = credentials
        self.landing = landing
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("metrics: too many connections, closing one from %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang for seconds on an
        # appliance without working DNS; the name is only used for CGI.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        if self.tls is None or not isinstance(request, socket.socket):
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, in the connection's thread, so a slow or silent client
        # cannot hold up the accept loop.
        request.settimeout(_Handler.timeout)
        try:
            conn = self.tls.context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("metrics: TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that go away mid-response are routine; the default prints a traceback to stderr.
        log.debug("metrics: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses the connection (and its TLS session)
    server_version = f"camwatch/{__version__}"
    sys_version = ""
    timeout = 30

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        credentials = self.server.credentials
        if credentials is not None and not credentials.accepts(self.headers.get("Authorization")):
            self._send(
                401,
                b"401 Unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                [("WWW-Authenticate", 'Basic realm="camwatch", charset="UTF-8"')],
            )
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(self.server.registry)
            except Exception:
                log.exception("metrics: collecting the metrics failed")
                self._send(500, b"500 collecting the metrics failed\n", "text/plain; charset=utf-8", head)
                return
            extra: list[tuple[str, str]] = []
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body, compresslevel=6)
                extra.append(("Content-Encoding", "gzip"))
            self._send(200, body, content_type, head, extra)
        elif path in ("/", "/index.html"):
            self._send(200, self.server.landing, "text/html; charset=utf-8", head)
        else:
            self._send(404, b"404 Not Found: try /metrics\n", "text/plain; charset=utf-8", head)

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
        log.debug("metrics: %s %s", self.address_string(), format % args)


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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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
        return self._server.server_port if self._server is not None else self._port

    @property
    def url(self) -> str:
        """The ``/metrics`` URL (for a wildcard listen address, on the loopback address)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.listen, self.listen)
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and start serving; raises OSError (e.g. the port is in use) from the caller's thread."""
        if self._server is not None:
            return
        host = self.listen.strip("[]")
        try:
            server = _Server(
                (host, self._port),
                _address_family(host, self._port),
                self.registry,
                self._tls,
                self._credentials,
                self._landing,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"metrics: cannot listen on {self.listen}:{self._port}: {exc.strerror}"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics: serving %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
