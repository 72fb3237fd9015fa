"""benchmarks/contain.py runs once in its `--smoke` mode: it completes and reports every figure.

Nothing here looks at a time (the measurement is run by hand, benchmarks/README.md): only that each
condition ran, the load went through, the probe got answers, and only the camwatch ruleset dropped the
phone-home datagrams.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agents.contain.conftest import needs_nft

BENCH = Path(__file__).parents[3] / "benchmarks" / "contain.py"


@needs_nft
def test_the_containment_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "contain.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["cameras"] == 5
    for condition in ("none", "conntrack", "camwatch"):
        (run,) = report["runs"][condition]
        assert run["load_sent_pps"] > 0.9 * report["load_pps"], run
        assert run["probes"] > 50 and run["blast_pps"] > 0 and run["blast_cpu_us_per_packet"] > 0
        # One phone-home datagram per camera and second: dropped by the camwatch ruleset only.
        assert (run["dropped_policy_packets"] >= 5) == (condition == "camwatch"), run
    assert "| camwatch |" in done.stdout and "camwatch vs conntrack: RTT p50 x" in done.stdout
