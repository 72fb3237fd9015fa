"""The alerting chain for tests: a Prometheus that evaluates rule files, a real Alertmanager, a webhook.

* :class:`AlertingPrometheus` is :class:`~tests.agents.promserver.PrometheusServer` with ``rule_files``
  and ``alerting.alertmanagers`` in its configuration (``evaluation_interval`` = the scrape interval).
* :func:`running_alertmanager` starts the Debian ``prometheus-alertmanager`` binary on a free loopback
  port with a configuration the test writes (clustering off, its own storage directory).
* :class:`WebhookReceiver` is a tiny HTTP server in a thread that keeps every Alertmanager webhook
  notification (JSON, version 4) it receives.

Typical use::

    with WebhookReceiver() as hook, running_alertmanager(tmp_path / "am", webhook_config(hook.url)) as am:
        with running_alerting_prometheus(tmp_path / "prom", [target], RULES, am.url) as prom:
            hook.wait_for_alert(lambda a: a["labels"]["alertname"] == "CameraEgress", 60)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.agents.promserver import PrometheusServer, ScrapeTarget, free_port, prometheus_binary, wait_ready

__all__ = [
    "ALERTMANAGER_SKIP_REASON",
    "AlertingPrometheus",
    "Alertmanager",
    "WebhookReceiver",
    "alertmanager_binary",
    "running_alerting_prometheus",
    "running_alertmanager",
    "webhook_config",
]

ALERTMANAGER_SKIP_REASON = (
    "Alertmanager is not installed (/usr/bin/prometheus-alertmanager, amtool): install the Debian package "
    "'prometheus-alertmanager' to run the alert routing tests"
)


def alertmanager_binary() -> str | None:
    """The Alertmanager server binary, or None when it is not installed."""
    if os.access("/usr/bin/prometheus-alertmanager", os.X_OK):
        return "/usr/bin/prometheus-alertmanager"
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class AlertingPrometheus(PrometheusServer):
    """A Prometheus that also loads ``rule_files`` and sends its alerts to ``alertmanager_url``."""

    def __init__(
        self, workdir: Path, binary: str, port: int, rule_files: Sequence[Path], alertmanager_url: str
    ) -> None:
        super().__init__(workdir, binary, port)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.alertmanager_url = alertmanager_url

    def start(
        self, targets: Sequence[ScrapeTarget], scrape_interval: str = "1s", timeout: float = 20.0
    ) -> None:
        am = urllib.parse.urlsplit(self.alertmanager_url)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "alerting": {
                "alertmanagers": [
                    {"scheme": am.scheme, "api_version": "v2", "static_configs": [{"targets": [am.netloc]}]}
                ]
            },
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
                    # Firing alerts are re-sent every minute by default; the first send is immediate.
                    "--rules.alert.resend-delay=1s",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_ready(self.url, self._process, "prometheus", self.log_tail, timeout)
        except BaseException:
            self.stop()
            raise

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's view of its alerts (``/api/v1/alerts``): pending and firing."""
        return list(self.api("alerts")["alerts"])


@contextlib.contextmanager
def running_alerting_prometheus(
    workdir: Path,
    targets: Sequence[ScrapeTarget],
    rule_files: Sequence[Path],
    alertmanager_url: str,
    scrape_interval: str = "1s",
) -> Iterator[AlertingPrometheus]:
    """A started :class:`AlertingPrometheus`; stopped on exit."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError("the Prometheus server binary is not installed (/usr/bin/prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = AlertingPrometheus(workdir, binary, free_port(), rule_files, alertmanager_url)
    server.start(targets, scrape_interval)
    try:
        yield server
    finally:
        server.stop()


class Alertmanager:
    """An Alertmanager process (no clustering) and a small client for its v2 API."""

    def __init__(self, workdir: Path, binary: str, port: int) -> None:
        self.workdir = workdir
        self.binary = binary
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "alertmanager.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, config: Mapping[str, Any] | str, timeout: float = 20.0) -> None:
        """Write ``config`` (a mapping, or YAML text), start Alertmanager and wait for ``/-/ready``."""
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        config_path = self.workdir / "alertmanager.yml"
        config_path.write_text(text, encoding="utf-8")
        (self.workdir / "data").mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",  # no gossip: one instance, no port 9094
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_ready(self.url, self._process, "alertmanager", self.log_tail, timeout)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def stop(self) -> None:
        process, self._process = self._process, None
        _stop(process)

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts (``{"labels": {...}, "annotations": {...}}``) to ``/api/v2/alerts``."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            if resp.status != 200:
                raise RuntimeError(f"POST /api/v2/alerts: HTTP {resp.status}")

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds (active, silenced and inhibited), with its ``status``."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            return list(json.load(resp))


@contextlib.contextmanager
def running_alertmanager(workdir: Path, config: Mapping[str, Any] | str) -> Iterator[Alertmanager]:
    """A started Alertmanager with ``config``; stopped on exit. Needs :func:`alertmanager_binary`."""
    binary = alertmanager_binary()
    if binary is None:
        raise RuntimeError(ALERTMANAGER_SKIP_REASON)
    workdir.mkdir(parents=True, exist_ok=True)
    server = Alertmanager(workdir, binary, free_port())
    server.start(config)
    try:
        yield server
    finally:
        server.stop()


def webhook_config(url: str, group_wait: str = "1s") -> dict[str, Any]:
    """An Alertmanager configuration that sends every alert, alone in its group, to ``url``."""
    return {
        "route": {
            "receiver": "test-webhook",
            "group_by": ["..."],
            "group_wait": group_wait,
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test-webhook", "webhook_configs": [{"url": url, "send_resolved": True}]}],
    }


class WebhookReceiver:
    """A loopback HTTP server in a thread keeping every JSON body POSTed to it (Alertmanager webhooks)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver.payloads.append(payload)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification received so far, in order."""
        with self._cond:
            return [alert for payload in self.payloads for alert in payload.get("alerts", [])]

    def wait_for_alert(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait until a notification holds an alert satisfying ``predicate``: (notification, alert)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for payload in self.payloads:
                    for alert in payload.get("alerts", []):
                        if predicate(alert):
                            return payload, alert
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching alert after {timeout:.0f} s; received: {self.payloads}"
                    )
                self._cond.wait(remaining)
