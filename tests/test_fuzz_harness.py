"""The fuzz harness (fuzz/common.py) reports what stopped a campaign: an out-of-memory abort is a failure with
the inputs run until then (not "0 inputs, 0 failures"), and memory that grows with inputs is a leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import monitor.engine  # noqa: F401  (the engine's modules loaded, so _instrument sees their functions)
from fuzz import common
from fuzz.common import NOT_INSTRUMENTED, atheris_result, leak_failure, run_fuzz

# What libFuzzer prints when its -rss_limit_mb is crossed (atheris 2.3), shortened.
OOM_LOG = b"""INFO: Seed: 1
#2\tINITED cov: 1185 ft: 1716 corp: 208/25Kb exec/s: 0 rss: 80Mb
#32768\tpulse  cov: 1192 ft: 2058 corp: 220/27Kb lim: 1461 exec/s: 992 rss: 285Mb
#65536\tpulse  cov: 1208 ft: 2290 corp: 248/31Kb lim: 1531 exec/s: 1110 rss: 490Mb
#262144\tpulse  cov: 1230 ft: 2590 corp: 300/36Kb lim: 2326 exec/s: 1226 rss: 1700Mb
==4242== ERROR: libFuzzer: out-of-memory (used: 2049Mb; exceeds: 2048Mb)
   To change the out-of-memory limit use -rss_limit_mb=<N>

MS: 1 ChangeBit-; base unit: 0000
artifact_prefix='/tmp/x/'; Test unit written to /tmp/x/oom-abcdef
SUMMARY: libFuzzer: out-of-memory
"""


def test_an_out_of_memory_abort_is_a_failure_with_its_inputs(tmp_path: Path) -> None:
    (tmp_path / "oom-abcdef").write_bytes(b"\x01\x02")
    result = atheris_result("engine", tmp_path, OOM_LOG, -6, 300.0, 1024)
    assert not result.ok
    assert result.inputs == 262144  # the last status line: libFuzzer never printed "Done"
    kinds = {f.exc_type: f for f in result.failures}
    assert kinds["out-of-memory"].message == "ERROR: libFuzzer: out-of-memory (used: 2049Mb; exceeds: 2048Mb)"
    assert kinds["out-of-memory"].example == b"\x01\x02" and kinds["out-of-memory"].where == "oom-abcdef"
    # 490 MiB at input 65536 (the sample nearest half of 262144) to 1700 MiB: a leak too.
    assert "leak" in kinds
    text = str(result)
    assert "262144 inputs" in text and "out-of-memory" in text and "0 distinct failure" not in text


def test_an_out_of_memory_without_an_artifact_still_counts(tmp_path: Path) -> None:
    result = atheris_result("engine", tmp_path, OOM_LOG, 1, 300.0, 1e9)
    assert [f.exc_type for f in result.failures] == ["out-of-memory"]


def test_a_killed_campaign_is_not_a_pass(tmp_path: Path) -> None:
    log = b"#2\tINITED cov: 3 ft: 3 corp: 1/1b exec/s: 0 rss: 30Mb\n"
    result = atheris_result("dns", tmp_path, log, -9, 1.0, 1024)
    assert not result.ok and [f.exc_type for f in result.failures] == ["aborted"] and result.inputs == 2


def test_a_flat_campaign_passes(tmp_path: Path) -> None:
    log = (
        b"#65536\tpulse  cov: 1 ft: 1 corp: 1/1b exec/s: 1 rss: 80Mb\n"
        b"#131072\tpulse  cov: 1 ft: 1 corp: 1/1b exec/s: 1 rss: 81Mb\n"
        b"#200000\tDONE   cov: 1 ft: 1 corp: 1/1b exec/s: 1 rss: 82Mb\n"
        b"Done 200000 runs in 160 second(s)\n"
    )
    result = atheris_result("engine", tmp_path, log, 0, 160.0, 1024)
    assert result.ok and result.inputs == 200000
    growth = result.growth_per_input()
    assert growth is not None and 0 < growth < 100


def test_the_leak_threshold() -> None:
    grows = [(10_000, 100_000), (20_000, 140_000), (40_000, 220_000)]  # KiB: 4 kB per input
    leak = leak_failure(grows, 1024)
    assert leak is not None and leak.exc_type == "leak" and "4096 bytes per input" in leak.message
    assert leak_failure(grows, 8192) is None
    # A small total is noise even at a high rate.
    assert leak_failure([(10, 100_000), (20, 100_400)], 1024) is None


_KEPT: list[bytes] = []


def _leaky(data: bytes) -> None:
    _KEPT.append(bytes(2048) + data)  # each input keeps 2 kB


def _clean(data: bytes) -> None:
    _ = bytes(2048) + data  # allocated and freed


def test_the_mutation_engine_reports_a_leak() -> None:
    # In a fresh process: this one's heap may hold memory freed by earlier tests, which the kept inputs
    # would reuse without the resident size growing.
    code = (
        "import json\n"
        "from fuzz.common import run_fuzz\n"
        "from tests.test_fuzz_harness import _leaky\n"
        "r = run_fuzz('leaky', _leaky, [b'seed'], 20_000, engine='mutate', seed=1)\n"
        "print(json.dumps([[f.exc_type for f in r.failures], r.ok]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == [["leak"], False]
    clean = run_fuzz("clean", _clean, [b"seed"], 20_000, engine="mutate", seed=1)
    assert clean.ok and clean.rss and len(clean.rss) >= 10


class _FakeAtheris:
    def __init__(self) -> None:
        self.modules: set[str] = set()

    def instrument_func(self, fn: Any) -> None:
        self.modules.add(fn.__module__)


def test_numpy_array_modules_are_not_instrumented() -> None:
    """atheris leaks the result of every instrumented array comparison: those modules are left out."""
    fake = _FakeAtheris()
    assert common._instrument(fake, ("monitor.",)) > 0
    assert "monitor.analysis" in fake.modules
    assert not {m for m in fake.modules if m.startswith(NOT_INSTRUMENTED)}
    assert set(NOT_INSTRUMENTED) == {"monitor.decode", "monitor.flows", "monitor.pcapfile"}
