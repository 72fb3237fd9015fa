"""The syslog sink: RFC 5424 messages with the alert's JSON, octet-counted over TCP and TLS, datagrams over
UDP, received and written by a real rsyslog; durable across a receiver outage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agents.sinks.outbox import Outbox
from agents.sinks.syslog import SyslogSettings, SyslogSink, format_message, octet_counted
from tests.agents.mosquitto import TlsFiles, make_tls_files
from tests.agents.rsyslog import Rsyslog, require_rsyslog


def alert(n: int, severity: int = 3, rule: str = "egress.unexpected_destination") -> dict[str, Any]:
    return {
        "@timestamp": f"2026-02-02T10:00:{n % 60:02d}.123Z",
        "event": {"kind": "alert", "id": f"incident-{n}", "severity": severity, "category": ["network"]},
        "rule": {"id": rule, "name": "Camera connected to an unexpected destination"},
        "source": {"ip": "10.20.0.11", "mac": "44-19-b6-00-00-01"},
        "device": {"manufacturer": "Hikvision", "id": "44-19-b6-00-00-01"},
        "observer": {"name": "depot-7/gw-1"},
        # Quotes, brackets, a backslash, non-ASCII and a line break: all must arrive as they were.
        "message": f'Caméra #{n} "gate" [north] \\ went\nout',
    }


def settings(protocol: str, port: int, tls: TlsFiles | None = None) -> SyslogSettings:
    return SyslogSettings(
        host="127.0.0.1",
        port=port,
        protocol=protocol,
        hostname="gw-1",
        ca_file=tls.ca if tls is not None else None,
        backoff_initial=0.05,
        backoff_max=0.2,
        drain_timeout=10.0,
    )


def test_the_message_is_rfc5424_with_the_alert_json() -> None:
    s = SyslogSettings(host="siem", hostname="gw 1/ü", facility="local4")
    msg = format_message(alert(7, severity=4, rule="p2p.nat_traversal"), s, procid=4242)
    header, _, body = msg.partition(b" {")
    # local4 (20) * 8 + critical (2); HOSTNAME made printable ASCII; MSGID is the rule id.
    assert header == (
        b'<162>1 2026-02-02T10:00:07.123Z gw-1/- camwatch 4242 p2p.nat_traversal [origin software="camwatch" '
        b'swVersion="0.1.0"]'
    )
    assert json.loads(b"{" + body) == alert(7, severity=4, rule="p2p.nat_traversal")
    assert not body.startswith(b"\xef\xbb\xbf")
    assert format_message(alert(1, severity=2), s, 1).startswith(b"<166>1 ")  # info -> informational (6)
    assert format_message(alert(1, severity=3), s, 1).startswith(b"<164>1 ")  # warning -> warning (4)
    critical = alert(1, severity=5, rule="exploit.attempt")
    assert format_message(critical, s, 1).startswith(b"<161>1 ")  # critical -> alert (1)
    no_time = {**alert(1), "@timestamp": "yesterday"}  # not an RFC 3339 time: the time of sending instead
    assert format_message(no_time, s, 1).split(b" ")[1].endswith(b"Z")
    assert octet_counted(b"<14>1 x") == b"7 <14>1 x"


@pytest.mark.parametrize("transport", ["tcp", "tls", "udp"])
def test_rsyslog_receives_every_alert_parsed(tmp_path: Path, transport: str) -> None:
    require_rsyslog()
    tls = make_tls_files(tmp_path / "tls")
    alerts = [alert(n, severity=(2, 3, 4)[n % 3]) for n in range(30)]
    with Rsyslog(tls) as rs, Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
        channel = outbox.channel("syslog", 1000, 1 << 20)
        sink = SyslogSink(settings(transport, rs.port(transport), tls), channel)

        async def run() -> None:
            await sink.start()
            for a in alerts:
                await sink.submit(a)
            await sink.close()

        asyncio.run(run())
        got = rs.wait_for(transport, len(alerts))
    assert sink.sent_total == len(alerts) and channel.depth() == 0
    assert [json.loads(m["msg"]) for m in got] == alerts  # every alert, whole, in order
    for m, a in zip(got, alerts, strict=True):
        assert m["hostname"] == "gw-1" and m["app"] == "camwatch" and m["msgid"] == a["rule"]["id"]
        assert m["pri"] == str(16 * 8 + {2: 6, 3: 4, 4: 2}[a["event"]["severity"]])
        assert m["timestamp"] == a["@timestamp"]  # when it happened, as rsyslog read it from the header
        assert m["sd"] == '[origin software="camwatch" swVersion="0.1.0"]'


def test_alerts_wait_in_the_outbox_while_the_receiver_is_down(tmp_path: Path) -> None:
    require_rsyslog()
    tls = make_tls_files(tmp_path / "tls")
    rs = Rsyslog(tls)  # configured, not started: nothing listens on its ports yet
    try:
        with Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
            channel = outbox.channel("syslog", 1000, 1 << 20)
            sink = SyslogSink(settings("tcp", rs.tcp_port), channel)

            async def run() -> None:
                await sink.start()
                for n in range(5):
                    await sink.submit(alert(n))
                while sink.send_failures_total < 2:  # it tried and failed, and keeps trying
                    await asyncio.sleep(0.05)
                assert channel.depth() == 5 and sink.sent_total == 0 and not sink.connected
                await asyncio.to_thread(rs.start)
                await sink.submit(alert(5))
                while channel.depth():
                    await asyncio.sleep(0.05)
                await sink.close()

            asyncio.run(run())
        got = rs.wait_for("tcp", 6)
        assert [json.loads(m["msg"])["event"]["id"] for m in got] == [f"incident-{n}" for n in range(6)]
    finally:
        rs.__exit__(None, None, None)


def test_a_receiver_whose_certificate_does_not_verify_gets_nothing(tmp_path: Path) -> None:
    require_rsyslog()
    tls = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other-ca")  # the sink trusts another CA
    with Rsyslog(tls) as rs, Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
        channel = outbox.channel("syslog", 1000, 1 << 20)
        sink = SyslogSink(settings("tls", rs.tls_port, other), channel)

        async def run() -> None:
            await sink.start()
            await sink.submit(alert(1))
            while sink.send_failures_total < 2:
                await asyncio.sleep(0.05)
            await sink.close()

        asyncio.run(run())
        assert channel.depth() == 1 and sink.sent_total == 0
        assert rs.received("tls") == []
