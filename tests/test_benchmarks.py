"""The benchmarks run once, in their `--smoke` mode: each completes and prints its figures.

A smoke run checks that a benchmark still works (its generators, its correctness checks, its peers, its
report), not how fast anything is: nothing here looks at a time. The real measurements are run by hand
(benchmarks/README.md).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.netns import skip_reason
from tests.benchsmoke import BENCH, smoke


def test_replay_benchmark(tmp_path: Path) -> None:
    # The installed camwatch as its own baseline: the comparison of two checkouts runs end to end.
    baseline = Path(sys.executable).parent / "camwatch"
    out = smoke("replay.py", "--out-dir", str(tmp_path), "--baseline", str(baseline), timeout=600)
    report = json.loads((tmp_path / "replay.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["runs"] == 1
    assert list(report["captures"]) == ["site", "short-flows"]
    flows = {}
    for kind, section in report["captures"].items():
        assert f"Capture `{kind}`" in out
        verification = section["verification"]
        assert verification["per_flow_match"] and verification["packets"] == 20_000
        flows[kind] = verification["flows"]
        tools = [row["tool"] for row in section["results"]]
        assert tools[:4] == [
            "camwatch replay --flows /dev/null",
            "baseline camwatch replay --flows /dev/null",
            "dpkt loop (flow table)",
            "camwatch replay (no --flows)",
        ]
        assert section["camwatch_vs_baseline"] > 0
        assert section["camwatch_vs_dpkt_loop"] == section["results"][0]["vs_dpkt_loop"] > 0
        assert all(row["median_s"] > 0 for row in section["results"])
    # The two captures are the two ends: a few long flows, and a flow every few packets.
    assert flows["site"] < 1_000 and flows["short-flows"] > 20_000 / 8
    assert out.count("| camwatch replay --flows /dev/null | 20,000 |") == 2
    assert "camwatch replay --flows vs the dpkt loop: site " in out


def test_short_flow_capture_is_deterministic(tmp_path: Path) -> None:
    digests = []
    for name in ("a.pcap", "b.pcap"):
        res = subprocess.run(
            [sys.executable, str(BENCH / "gen_short_flows.py"), str(tmp_path / name), "--packets", "3000"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
        meta = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        assert meta["packets"] == 3000
    assert digests[0] == digests[1]


def test_probe_benchmark(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the stream extra (PyAV) is not installed")
    pytest.importorskip("cv2", reason="the stream extra (opencv-python-headless) is not installed")
    out = smoke("probe.py", "--json", str(tmp_path / "probe.json"), timeout=300)
    assert "| camwatch probe (PyAV child + OpenCV child) |" in out and "| peer: one PyAV child" in out
    runs = json.loads((tmp_path / "probe.json").read_text(encoding="utf-8"))["runs"]
    assert [len(r) for r in runs.values()] == [1, 1]
    assert all(r[0]["report"]["frames"] > 0 for r in runs.values())


def test_live_benchmark(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    out = smoke("live.py", "--json", str(tmp_path / "live.json"), timeout=300)
    assert "decision: " in out
    doc = json.loads((tmp_path / "live.json").read_text(encoding="utf-8"))
    assert set(doc["engine_runs"]) == {"ring", "ring-copy", "recv"}
    assert all(run["capture"]["batches"] > 0 for run in doc["engine_runs"].values())
    assert set(doc["ramps"]) == {
        "ring",
        "ring-copy",
        "recv",
        "ring+engine",
        "ring-copy+engine",
        "recv+engine",
    }


def test_the_replay_check_reports_a_flow_that_differs(tmp_path: Path) -> None:
    """The correctness step compares every flow: one packet more on one side is caught and shown."""
    sys.path.insert(0, str(BENCH))
    try:
        import replay  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))

    def camwatch_record(dst_packets: int) -> str:
        return json.dumps({
            "source": {"ip": "10.0.0.1", "port": 5000, "packets": 1, "bytes": 60},
            "destination": {"ip": "10.0.0.2", "port": 53, "packets": dst_packets, "bytes": 80 * dst_packets},
            "network": {"iana_number": 17},
            "event": {"duration": 2_000_000},
        })  # fmt: skip

    dpkt_record = json.dumps(
        {"proto": 17, "vlan": [-1, -1], "src": ["10.0.0.1", 5000, 1, 60], "dst": ["10.0.0.2", 53, 1, 80],
         "start": 1.0, "end": 1.002}
    )  # fmt: skip
    totals = {"flows": 1, "packets": 2, "bytes": 140, "flow_packets": 2, "flow_bytes": 140}
    cw_path, dp_path = tmp_path / "cw.jsonl", tmp_path / "dp.jsonl"
    dp_path.write_text(dpkt_record + "\n")
    cw_path.write_text(camwatch_record(1) + "\n")
    assert replay.compare_flow_files(totals, totals, cw_path, dp_path) == []
    cw_path.write_text(camwatch_record(2) + "\n")
    problems = replay.compare_flow_files(totals, totals, cw_path, dp_path)
    assert problems[0] == "packets in flow records: camwatch 3 != dpkt peer 2"
    assert "1 flow(s) only in camwatch, 1 only in dpkt" in problems


@pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")
def test_flow_outputs_benchmark(tmp_path: Path) -> None:
    out = smoke("flow_outputs.py", "--out-dir", str(tmp_path), timeout=300)
    report = json.loads((tmp_path / "flow_outputs.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["mqtt"] is True
    runs = {r["name"]: r for r in report["runs"]}
    with_outputs, without = runs["short: flows_file + mqtt.flows"], runs["short: no flow output"]
    assert with_outputs["records"] > 500 and without["records"] == 0
    assert runs["plain json.dumps + write (peer)"]["records"] == with_outputs["records"]
    # The camera day: every camera's flows of the hour, in records and bytes on disk.
    assert report["per_camera_day"]["records"] > 100 and report["per_camera_day"]["bytes"] > 0
    assert "Per camera per day:" in out and "| day: flows_file + mqtt.flows |" in out
