"""The DNS answers watched devices receive reach containment's name rules (agents/contain/answers.py);
answers to anyone else do not."""

from __future__ import annotations

from agents.contain.answers import with_answers
from lab import synth
from lab.payloads import dns_query
from lab.sitelife import a_record, cname_record, dns_response
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.registry import rulebook
from monitor.vendors.oui import VendorTable

NS = 1_000_000_000
GW = ("02:00:00:00:00:01", "10.20.0.1")
CAMERA = ("44:19:b6:00:00:01", "10.20.0.11")  # Hikvision OUI: watched
LAPTOP = ("02:00:00:00:00:77", "10.20.0.77")  # not watched


def exchange(ts: int, host: tuple[str, str], txid: int, name: str, records: list) -> list[tuple[int, bytes]]:
    query = dns_query(txid, name)
    answer = dns_response(txid, name, records)
    return [
        (ts, synth.udp4_frame(host[0], GW[0], host[1], GW[1], 40000 + txid, 53, query)),
        (ts + 1000, synth.udp4_frame(GW[0], host[0], GW[1], host[1], 53, 40000 + txid, answer)),
    ]


def run(frames: list[tuple[int, bytes]]) -> list[tuple[str, str, float]]:
    learned: list[tuple[str, str, float]] = []
    engine = Engine(
        SitePolicy.default(),
        VendorTable.load(),
        EngineConfig(),
        rules=with_answers(rulebook(), lambda *answer: learned.append(answer)),
    )
    parser = CaptureParser("frames", 65536)
    for batch in [*parser.feed(pcap_bytes(frames)), *parser.flush()]:
        engine.feed(batch)
    engine.finish()
    return learned


def test_a_watched_device_s_answers_are_learned_with_every_name_of_the_chain() -> None:
    records = [
        cname_record("eu.api.example", "edge.cdn.example", 300),
        a_record("edge.cdn.example", "203.0.113.5", 60),
    ]
    learned = run(exchange(1 * NS, CAMERA, 1, "eu.api.example", records))
    assert learned == [
        ("eu.api.example", "203.0.113.5", 60.0),
        ("edge.cdn.example", "203.0.113.5", 60.0),
    ]


def test_answers_to_a_device_that_is_not_watched_are_not() -> None:
    frames = [
        *exchange(1 * NS, LAPTOP, 2, "eu.api.example", [a_record("eu.api.example", "203.0.113.9", 60)]),
        *exchange(2 * NS, CAMERA, 3, "ntp.example", [a_record("ntp.example", "192.0.2.10", 600)]),
    ]
    assert run(frames) == [("ntp.example", "192.0.2.10", 600.0)]
