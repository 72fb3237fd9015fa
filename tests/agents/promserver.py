"""A real Prometheus server for tests: scrapes the targets a test names and answers PromQL queries.

Uses the Debian ``prometheus`` package's binary (``/usr/bin/prometheus``, or ``prometheus`` on
``PATH``); tests skip with :data:`SKIP_REASON` when it is missing. Typical use::

    with running_prometheus(tmp_path, [ScrapeTarget(f"127.0.0.1:{server.port}")]) as prom:
        prom.wait_for('camwatch_up', lambda v: v == 1)

Each server gets its own free port, configuration and TSDB directory under the test's directory,
so tests can run in parallel. Its log is ``prometheus.log`` there (shown when start-up fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SKIP_REASON",
    "PrometheusServer",
    "ScrapeTarget",
    "free_port",
    "https_get",
    "prometheus_binary",
    "running_prometheus",
    "wait_ready",
]

SKIP_REASON = (
    "the Prometheus server binary is not installed (/usr/bin/prometheus): install the Debian package "
    "'prometheus' to run the tests against a real Prometheus"
)


def prometheus_binary() -> str | None:
    """The Prometheus server binary, or None when it is not installed."""
    if os.access("/usr/bin/prometheus", os.X_OK):
        return "/usr/bin/prometheus"
    return shutil.which("prometheus")


def wait_ready(
    url: str, process: subprocess.Popen[bytes], name: str, log: Callable[[], str], timeout: float
) -> None:
    """Wait until ``url``/-/ready answers 200 (Prometheus and Alertmanager both serve it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{name} was not ready after {timeout:.0f} s:\n{log()}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process could take it; good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: ``address`` is ``host:port``; TLS and basic auth as the exporter needs."""

    address: str
    job: str = "camwatch"
    scheme: str = "http"
    labels: Mapping[str, str] = field(default_factory=lambda: {"site": "test-site", "gateway": "gw-test"})
    basic_auth: tuple[str, Path] | None = None  # (username, password file)
    ca_file: Path | None = None
    metrics_path: str = "/metrics"

    def scrape_config(self, interval: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "job_name": self.job,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "metrics_path": self.metrics_path,
            "scheme": self.scheme,
            "static_configs": [{"targets": [self.address], "labels": dict(self.labels)}],
        }
        if self.basic_auth is not None:
            user, password_file = self.basic_auth
            config["basic_auth"] = {"username": user, "password_file": str(password_file)}
        if self.ca_file is not None:
            config["tls_config"] = {"ca_file": str(self.ca_file)}
        return config


class PrometheusServer:
    """A Prometheus process and a small client for its HTTP API."""

    def __init__(self, workdir: Path, binary: str, port: int) -> None:
        self.workdir = workdir
        self.binary = binary
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(
        self, targets: Sequence[ScrapeTarget], scrape_interval: str = "1s", timeout: float = 20.0
    ) -> None:
        """Write the configuration, start Prometheus and wait until ``/-/ready`` answers 200."""
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [t.scrape_config(scrape_interval) for t in targets],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        (self.workdir / "data").mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_ready(self.url, self._process, "prometheus", self.log_tail, timeout)
        except TimeoutError:
            self.stop()
            raise

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def api(self, endpoint: str, **params: str) -> Any:
        """GET ``/api/v1/<endpoint>`` and return its ``data`` (raises on an API error)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{endpoint}?{query}", timeout=5) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{endpoint} {params}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        if body.get("status") != "success":
            raise RuntimeError(f"{endpoint} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the vector's samples, each ``{"metric": {...}, "value": [ts, "v"]}``."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise RuntimeError(f"{expr}: expected a vector, got {data['resultType']}")
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"{expr}: {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, predicate: Callable[[float], bool], timeout: float = 15.0) -> float:
        """Poll ``expr`` until its single value satisfies ``predicate``; return that value."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and predicate(last):
                return last
            time.sleep(0.2)
        targets = self.api("targets")
        raise AssertionError(f"{expr}: last value {last} after {timeout:.0f} s; targets: {targets}")


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, targets: Sequence[ScrapeTarget], scrape_interval: str = "1s"
) -> Iterator[PrometheusServer]:
    """A started Prometheus scraping ``targets``; stopped on exit. Needs :func:`prometheus_binary`."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    workdir.mkdir(parents=True, exist_ok=True)
    server = PrometheusServer(workdir, binary, free_port())
    server.start(targets, scrape_interval)
    try:
        yield server
    finally:
        server.stop()


def https_get(url: str, ca_file: Path, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET over HTTPS trusting ``ca_file`` (a helper for exporter tests)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
