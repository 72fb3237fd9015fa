"""No traceback for any input: mutated site policies, agent configurations and captures given to `camwatch`.

Each input is a seeded mutation of a real one (examples/, the demo capture, a corpus pcapng). The command must
end with its documented exit code and one line per problem (each naming the file), never with an exception
escaping camwatch (`main` turns a bug into "internal error", exit 70: that is what these tests catch).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import cli
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from tests.truth.paths import PCAPS

ROOT = Path(__file__).parents[2]
EXAMPLE_POLICY = (ROOT / "examples" / "site-policy.yaml").read_text(encoding="utf-8")
EXAMPLE_AGENT = (ROOT / "examples" / "agent.yaml").read_text(encoding="utf-8")

# Values that break assumptions: types, sizes, YAML features (tags, anchors, merge keys), odd numbers.
_VALUES = (
    "-1", "0", "1e999", ".inf", ".nan", "~", "null", "[]", "{}", "[[]]", "{a: b}", "x" * 300,
    "!!binary aGVsbG8=",
    "&a x", "*a", "!!python/object/apply:os.system ['true']", "? [a]", "2001:db8::/200", '"\\x00"',
    "99999999999999999999999", "0x10", "0o7", "yes", "no", "2024-01-01", "10.20.0.0/33", "'10.20.0.1/24'",
    "00:11", "-", "|\n  text", ">-", "!custom x", "%YAML 1.1", "@x", "`x`", "'", '"', "[a, b", "{a",
    "\t", "é", "\u2028", "0b101", "+1", "1_000", "60s", "5m", "100MiB", "-5s", "0s", "9" * 40 + "s",
)  # fmt: skip
_CHARS = ":[]{}-#&*!|>'\"%@`,?\t\n "
# 32-bit fields set to these: lengths, counts, magic numbers (pcapng section and byte-order magic).
_EXTREMES = (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x00\x01\x00",
             b"\x0a\x0d\x0d\x0a", b"\x1a\x2b\x3c\x4d")  # fmt: skip


def mutate_yaml(text: str, rng: random.Random) -> str:
    """One to three edits of a YAML document: lines moved, values replaced, syntax characters inserted."""
    lines = text.splitlines()
    for _ in range(rng.choice((1, 1, 2, 3))):
        if not lines:
            lines = [rng.choice(_VALUES)]
        i = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 2 and ":" in lines[i]:  # a key's value replaced
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {rng.choice(_VALUES)}"
        elif op == 3:  # a list item's value replaced
            indent = len(lines[i]) - len(lines[i].lstrip())
            lines.insert(i, " " * indent + "- " + rng.choice(_VALUES))
        elif op == 4:
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + rng.choice(_CHARS) + lines[i][pos:]
        elif op == 5:  # indentation changed
            lines[i] = " " * rng.choice((0, 1, 2, 3, 4, 8)) + lines[i].lstrip()
        else:  # a comment marker removed: the commented-out examples come alive, half-written
            lines[i] = lines[i].replace("# ", "", 1)
    return "\n".join(lines) + "\n"


def mutate_capture(data: bytes, rng: random.Random) -> bytes:
    """Header and record fields set to extremes, bytes flipped, the file cut or a block repeated."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 2, 3))):
        op = rng.randrange(5)
        # Mostly the headers: the file header and the first records' lengths decide how the rest is read.
        pos = rng.randrange(min(len(buf), 256)) if rng.random() < 0.7 and buf else rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos : pos + 4] = rng.choice(_EXTREMES)
        elif op == 2:
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.choice((4, 16, 28, 64))]
        else:
            buf[pos:pos] = rng.randbytes(rng.choice((1, 4, 12)))
    return bytes(buf)


@pytest.fixture(autouse=True)
def _no_gc_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() freezes the cycle collector's start-up objects for a replay: not in the test process.
    monkeypatch.setattr(cli, "_tune_gc", lambda: None)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = cli.main(list(args))
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, (args, err)
    return code, err.splitlines()


def _cases(n: int, seed: int) -> Iterator[random.Random]:
    for i in range(n):
        yield random.Random(seed * 1_000_003 + i)


def test_mutated_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    codes: dict[int, int] = {}
    capture = tmp_path / "one.pcap"
    capture.write_bytes(pcap_bytes(list(scenario.site_packets(scenario.demo_shape()))[:20]))
    for n, rng in enumerate(_cases(300, 1)):
        path = tmp_path / f"policy{n}.yaml"
        path.write_text(mutate_yaml(EXAMPLE_POLICY, rng), encoding="utf-8")
        code, lines = run(capsys, "check-config", str(path))
        assert code in (cli.EXIT_OK, cli.EXIT_USAGE)
        if code == cli.EXIT_USAGE:
            # The heading or each problem names the file.
            assert all(line.startswith(("camwatch: ", str(path))) for line in lines) and str(path) in lines[
                0
            ] + (lines[1] if len(lines) > 1 else ""), lines
        codes[code] = codes.get(code, 0) + 1
        if n % 10 == 0:  # replay --policy reads it the same way
            replayed, _ = run(
                capsys, "replay", str(capture), "--policy", str(path), "--alerts", str(tmp_path / "a")
            )
            assert replayed == code
    # The mutations reach both ends: valid documents and invalid ones.
    assert codes.get(cli.EXIT_OK, 0) >= 10 and codes.get(cli.EXIT_USAGE, 0) >= 100, codes


def test_mutated_agent_configurations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "site-policy.yaml").write_text(EXAMPLE_POLICY, encoding="utf-8")  # its policy_file
    codes: dict[int, int] = {}
    for n, rng in enumerate(_cases(300, 2)):
        path = tmp_path / f"agent{n}.yaml"
        path.write_text(mutate_yaml(EXAMPLE_AGENT, rng), encoding="utf-8")
        code, lines = run(capsys, "check-config", str(path))
        assert code in (cli.EXIT_OK, cli.EXIT_USAGE), lines
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(cli.EXIT_OK, 0) >= 10 and codes.get(cli.EXIT_USAGE, 0) >= 100, codes


def _pcapng_seed() -> bytes:
    found = sorted(p for p in PCAPS.rglob("*.pcapng") if p.is_file() and p.stat().st_size < 200_000)
    assert found, "the corpus holds pcapng files"
    return found[0].read_bytes()


def test_mutated_captures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = [pcap_bytes(list(scenario.site_packets(scenario.demo_shape()))[:60]), _pcapng_seed()]
    codes: dict[int, int] = {}
    for n, rng in enumerate(_cases(200, 3)):
        path = tmp_path / f"capture{n}"
        path.write_bytes(mutate_capture(seeds[n % 2], rng))
        code, lines = run(capsys, "replay", str(path), "--alerts", str(tmp_path / "alerts.jsonl"))
        assert code in (cli.EXIT_OK, cli.EXIT_INPUT), lines
        if code == cli.EXIT_INPUT:
            errors = [line for line in lines if line.startswith("camwatch: error: ")]
            assert len(errors) == 1 and errors[0].startswith(f"camwatch: error: {path}"), lines
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(cli.EXIT_OK, 0) >= 20 and codes.get(cli.EXIT_INPUT, 0) >= 20, codes
