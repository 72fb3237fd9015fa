"""Shared fuzzing plumbing for the analyzers (not run by pytest).

`run_fuzz(name, parse_fn, seeds, runs)` feeds `runs` inputs derived from `seeds` to `parse_fn` and returns a
`FuzzResult`. An input passes when `parse_fn` returns or raises `AnalyzerError`; any other exception is a
failure, recorded once per (exception type, innermost frame) with the first input that triggered it.

Engines:
- ``atheris`` (default when the package imports): coverage-guided libFuzzer, run in a forked child so a
  crash, a hang (``-timeout``) or libFuzzer's own exit cannot take the caller down; the seeds are its
  starting corpus; the functions of `monitor.*` and of the fuzz target are instrumented for coverage.
- ``mutate``: a dependency-free mutator (bit flips, interesting bytes, insertions, deletions, duplicated
  ranges, truncation, splicing, dictionary tokens); inputs that parse are added back to the pool so the
  search goes deeper than the seeds. Deterministic for a given ``seed``.

Memory: a campaign that runs out of memory (libFuzzer's ``-rss_limit_mb``) is a failure, reported with the
inputs run until then, never as "0 inputs, 0 failures"; and resident memory is sampled as inputs run: growth
beyond ``leak_threshold`` bytes per input over the second half of a campaign (after its tables have filled)
is reported as a leak, whatever the engine.

Each ``fuzz/fuzz_<module>.py`` exposes ``NAME``, ``parse(data)`` and ``seeds()``; run one with
``python -m fuzz.fuzz_<module> [runs] [--engine E]`` and all with ``python -m fuzz.run_all`` (from the
repository root; ``python fuzz/run_all.py`` works too).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `monitor` and `tests` (the corpus readers) for seeds()

from monitor.analyzers import AnalyzerError  # noqa: E402  (needs the path set above)

ParseFn = Callable[[bytes], object]

DEFAULT_RUNS = 200_000
DEFAULT_RSS_LIMIT_MB = 2048
# Resident memory may grow while a campaign's state fills its bounded tables; over the second half of a
# campaign, more than this many bytes per input is a leak (the engine fuzzer under atheris grew 6.3 kB).
DEFAULT_LEAK_THRESHOLD = 1024
# Leaks smaller than this in total are noise (allocator arenas, a cache reaching its bound).
_LEAK_MIN_BYTES = 16 << 20
_MAX_EXAMPLE = 4096  # bytes of a failing input kept in the report
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x3F, 0x40, 0xC0, 0x20, 0x0A, 0x0D, 0x3C, 0x3E, 0x22)
_TOKENS = (
    b"\x00",
    b"\xff\xff",
    b"\xc0\x0c",
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b"&amp;",
    b"<![CDATA[",
    b"<!DOCTYPE x>",
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b"\\u0000",
    b"%",
    b"\xef\xbb\xbf",
)


@dataclass
class Failure:
    """One distinct bug: the exception type and where it was raised, with the first input seen."""

    exc_type: str
    message: str
    where: str
    example: bytes
    count: int = 1

    def __str__(self) -> str:
        head = f"{self.exc_type} at {self.where} (x{self.count}): {self.message[:120]}"
        return f"{head} input={self.example[:64]!r}"


@dataclass
class FuzzResult:
    """What a campaign did. `failures` is empty when every input passed and memory stayed flat."""

    name: str
    engine: str
    inputs: int
    seconds: float
    failures: list[Failure] = field(default_factory=list)
    note: str = ""
    # (inputs run, resident memory in KiB) as the campaign went: how memory grew
    rss: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failure and the campaign ran to the end."""
        return not self.failures and not self.note

    def growth_per_input(self) -> float | None:
        """Bytes of resident memory gained per input over the second half of the campaign (None: too few
        samples to say)."""
        return growth_per_input(self.rss)

    def __str__(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        head = (
            f"{self.name}: {self.inputs} inputs in {self.seconds:.1f} s ({rate:.0f}/s, {self.engine}), "
            f"{len(self.failures)} distinct failure(s)"
        )
        lines = [head] + [f"  - {f}" for f in self.failures]
        growth = self.growth_per_input()
        if self.rss:
            first, last = self.rss[0][1] / 1024, self.rss[-1][1] / 1024
            per = f", {growth:+.0f} B/input over the second half" if growth is not None else ""
            lines.append(f"  memory: {first:.0f} MiB -> {last:.0f} MiB resident{per}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _halfway(samples: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The sample nearest half the inputs, before the last one (samples: inputs, KiB)."""
    if len(samples) < 2 or samples[-1][0] <= 0:
        return None
    end = samples[-1][0]
    mid = min(samples[:-1], key=lambda s: abs(s[0] - end // 2))
    return mid if mid[0] < end else None


def growth_per_input(samples: Sequence[tuple[int, int]]) -> float | None:
    """Bytes per input from about half the inputs to the last sample (samples: inputs, KiB); None: too few."""
    mid = _halfway(samples)
    if mid is None:
        return None
    end_inputs, end_kib = samples[-1]
    return (end_kib - mid[1]) * 1024 / (end_inputs - mid[0])


def leak_failure(samples: Sequence[tuple[int, int]], threshold: float) -> Failure | None:
    """A "leak" failure when memory grew more than `threshold` bytes per input over the second half (and
    by more than noise in total), else None."""
    per = growth_per_input(samples)
    if per is None or per <= threshold:
        return None
    end_inputs, end_kib = samples[-1]
    mid_inputs, mid_kib = _halfway(samples) or samples[0]
    if (end_kib - mid_kib) * 1024 < _LEAK_MIN_BYTES:
        return None
    return Failure(
        "leak",
        f"resident memory grew {per:.0f} bytes per input from input {mid_inputs} to {end_inputs} "
        f"({mid_kib // 1024} MiB -> {end_kib // 1024} MiB; more than {threshold:.0f} B/input)",
        "memory",
        b"",
    )


def rss_kib() -> int:
    """This process's resident memory now (KiB); its peak where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _Recorder:
    """Distinct failures keyed by (type, innermost frame)."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, str], Failure] = {}

    def check(self, parse_fn: ParseFn, data: bytes) -> bool:
        """Run one input; True when it parsed, False when it was refused (or failed)."""
        try:
            parse_fn(data)
        except AnalyzerError:
            return False
        except Exception as exc:  # the point of fuzzing: anything else is a bug
            self.add(exc, data)
            return False
        return True

    def add(self, exc: BaseException, data: bytes) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        key = (type(exc).__name__, where)
        if key in self.failures:
            self.failures[key].count += 1
        else:
            self.failures[key] = Failure(type(exc).__name__, str(exc), where, data[:_MAX_EXAMPLE])


class Mutator:
    """Seeded byte-level mutations of a pool of inputs."""

    def __init__(self, seeds: Sequence[bytes], rng: random.Random, tokens: Sequence[bytes] = _TOKENS) -> None:
        self.pool = list(dict.fromkeys(seeds)) or [b""]
        self.rng = rng
        self.tokens = tokens

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
            op = rng.randrange(10)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and buf:  # flip a bit
                i = min(pos, len(buf) - 1)
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1 and buf:  # set an interesting or random byte
                i = min(pos, len(buf) - 1)
                buf[i] = rng.choice(_INTERESTING) if rng.random() < 0.6 else rng.randrange(256)
            elif op == 2:  # insert random bytes
                buf[pos:pos] = rng.randbytes(rng.choice((1, 1, 2, 4, 16)))
            elif op == 3 and buf:  # delete a range
                del buf[pos : pos + rng.choice((1, 1, 2, 4, 16, 64))]
            elif op == 4 and buf:  # duplicate a range elsewhere
                start = rng.randrange(len(buf))
                chunk = buf[start : start + rng.choice((1, 2, 4, 16, 64))]
                buf[pos:pos] = chunk
            elif op == 5 and buf:  # truncate
                del buf[rng.randrange(len(buf)) :]
            elif op == 6:  # splice with another input
                other = rng.choice(self.pool)
                cut = rng.randrange(len(other) + 1)
                buf[pos:] = other[cut:]
            elif op == 7:  # dictionary token
                buf[pos:pos] = rng.choice(self.tokens)
            elif op == 8 and len(buf) >= 2:  # 16-bit field to an extreme (lengths, counts, pointers)
                i = min(pos, len(buf) - 2)
                buf[i : i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\x00\x01"))
            elif op == 9 and buf:  # overwrite with a copy of another part
                src = rng.randrange(len(buf))
                n = rng.choice((1, 2, 4, 8))
                buf[pos : pos + n] = buf[src : src + n]
        return bytes(buf)

    def next_input(self) -> bytes:
        return self.mutate(self.rng.choice(self.pool))


def _run_mutate(
    name: str, parse_fn: ParseFn, seeds: Sequence[bytes], runs: int, seed: int, leak_threshold: float
) -> FuzzResult:
    rec = _Recorder()
    mut = Mutator(seeds, random.Random(seed))
    start = time.perf_counter()
    done = 0
    every = max(1, runs // 20)  # twenty memory samples a campaign
    samples: list[tuple[int, int]] = []
    for data in mut.pool[:runs]:  # the seeds themselves first
        rec.check(parse_fn, data)
        done += 1
    while done < runs:
        data = mut.next_input()
        if rec.check(parse_fn, data) and len(mut.pool) < 2000 and data not in mut.pool:
            mut.pool.append(data)  # accepted inputs are the best starting points for deeper mutations
        done += 1
        if done % every == 0:
            samples.append((done, rss_kib()))
    failures = list(rec.failures.values())
    leak = leak_failure(samples, leak_threshold)
    if leak is not None:
        failures.append(leak)
    return FuzzResult(name, "mutate", done, time.perf_counter() - start, failures, rss=samples)


# Modules whose functions compare whole numpy arrays (`lengths >= 20`, `ethertype == ETH_IPV4`): atheris's
# comparison hook keeps a reference to every comparison result that is not a bool, so an instrumented array
# comparison leaks its result array, once per call (atheris 2.3; one leaked block per call in a three-line
# reproduction). Instrumenting these made the engine fuzzer grow 6.3 kB per input up to libFuzzer's 2 GB
# limit, while the same inputs replayed without atheris stay flat (docs/design.md §6). Their branches are
# over whole batches, not per packet, so coverage loses little.
NOT_INSTRUMENTED = ("monitor.decode", "monitor.flows", "monitor.pcapfile")


def _instrument(atheris: Any, prefixes: tuple[str, ...], exclude: tuple[str, ...] = NOT_INSTRUMENTED) -> int:
    """Instrument the functions of modules starting with `prefixes` (but not `exclude`); returns how many."""
    # atheris.instrument_all() rewrites every loaded function (numpy, hypothesis...): over a minute of
    # start-up and a slower loop. Coverage only matters in our code: the analyzers and the fuzz target.
    count = 0
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        module = str(getattr(obj, "__module__", ""))
        if module.startswith(prefixes) and not module.startswith(exclude):
            with contextlib.suppress(Exception):
                atheris.instrument_func(obj)
                count += 1
    return count


_DONE_RE = re.compile(rb"Done (\d+) runs in (\d+) second")
# libFuzzer's status lines: "#65536\tpulse  cov: 1208 ft: 2290 corp: 248/31Kb ... rss: 490Mb"
_STATUS_RE = re.compile(rb"^#(\d+)\s.*?\brss: (\d+)Mb", re.MULTILINE)
_OOM_RE = re.compile(rb"ERROR: libFuzzer: out-of-memory \((?:used|malloc)[^)]*\)")
# Artifacts libFuzzer writes for a stopping input, by file-name prefix, and what each means.
_ARTIFACTS = (
    ("crash-", "crash"),
    ("timeout-", "timeout"),
    ("oom-", "out-of-memory"),
    ("leak-", "leak"),
)


def atheris_result(
    name: str, work: Path, log: bytes, code: int, seconds: float, leak_threshold: float
) -> FuzzResult:
    """Read what a libFuzzer run left: its log, its exit code and the artifacts in `work`."""
    failures: list[Failure] = []
    fail_log = work / "failures.jsonl"
    if fail_log.exists():
        for line in fail_log.read_text().splitlines():
            d = json.loads(line)
            failures.append(
                Failure(d["type"], d["message"], d["where"], bytes.fromhex(d["example"]), d["count"])
            )
    samples = [(int(n), int(mb) * 1024) for n, mb in _STATUS_RE.findall(log)]
    done = _DONE_RE.search(log)
    # Inputs run: libFuzzer's own count at the end, or its last status line when it stopped early.
    inputs = int(done.group(1)) if done else (samples[-1][0] if samples else 0)
    tail = log.decode("utf-8", "replace").strip().splitlines()[-6:]
    note = ""
    if code != 0 or done is None:
        note = f"libFuzzer exited with {code} after {inputs} inputs: " + " | ".join(tail)
        for prefix, kind in _ARTIFACTS:
            for artifact in sorted(work.glob(f"{prefix}*")):
                what = " | ".join(tail)[-300:]
                if kind == "out-of-memory" and (oom := _OOM_RE.search(log)) is not None:
                    what = oom.group(0).decode("utf-8", "replace")
                failures.append(Failure(kind, what, artifact.name, artifact.read_bytes()[:_MAX_EXAMPLE]))
        if not any(f.where.startswith(tuple(p for p, _ in _ARTIFACTS)) for f in failures):
            # Killed from outside, or libFuzzer stopped without an artifact (an OOM it only logged).
            oom = _OOM_RE.search(log)
            kind = "out-of-memory" if oom else "aborted"
            failures.append(
                Failure(kind, (oom.group(0).decode() if oom else " | ".join(tail))[-300:], "?", b"")
            )
    leak = leak_failure(samples, leak_threshold)
    if leak is not None:
        failures.append(leak)
    return FuzzResult(name, "atheris", inputs, seconds, failures, note, samples)


def _run_atheris(
    name: str,
    parse_fn: ParseFn,
    seeds: Sequence[bytes],
    runs: int,
    seed: int,
    timeout_s: int,
    rss_limit_mb: int,
    leak_threshold: float,
) -> FuzzResult:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        corpus.mkdir()
        for i, data in enumerate(dict.fromkeys(seeds)):
            (corpus / f"seed{i:05d}").write_bytes(data)
        fail_log = work / "failures.jsonl"
        out_log = work / "libfuzzer.log"
        max_len = min(max(1024, 2 * max((len(s) for s in seeds), default=0)), 16384)
        args = [
            f"fuzz-{name}",
            f"-runs={runs}",
            f"-seed={seed or 1}",
            f"-max_len={max_len}",
            f"-timeout={timeout_s}",
            f"-rss_limit_mb={rss_limit_mb}",
            f"-artifact_prefix={work}/",
            str(corpus),
        ]
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 3
            try:
                fd = os.open(out_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                atheris: Any = importlib.import_module("atheris")
                rec = _Recorder()

                def one_input(data: bytes) -> None:
                    before = sum(f.count for f in rec.failures.values())
                    rec.check(parse_fn, data)
                    if sum(f.count for f in rec.failures.values()) != before:
                        with fail_log.open("w") as fh:
                            for f in rec.failures.values():
                                fh.write(
                                    json.dumps(
                                        {
                                            "type": f.exc_type,
                                            "message": f.message,
                                            "where": f.where,
                                            "example": f.example.hex(),
                                            "count": f.count,
                                        }
                                    )
                                    + "\n"
                                )

                _instrument(atheris, ("monitor.", getattr(parse_fn, "__module__", None) or "__main__"))
                atheris.Setup(args, one_input)
                atheris.Fuzz()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        seconds = time.perf_counter() - start
        log = out_log.read_bytes() if out_log.exists() else b""
        return atheris_result(name, work, log, os.waitstatus_to_exitcode(status), seconds, leak_threshold)


def have_atheris() -> bool:
    """True when the atheris package imports."""
    try:
        importlib.import_module("atheris")
    except ImportError:
        return False
    return True


def run_fuzz(
    name: str,
    parse_fn: ParseFn,
    seeds: list[bytes],
    runs: int = DEFAULT_RUNS,
    *,
    engine: str = "auto",
    seed: int = 0,
    timeout_s: int = 10,
    rss_limit_mb: int = DEFAULT_RSS_LIMIT_MB,
    leak_threshold: float = DEFAULT_LEAK_THRESHOLD,
) -> FuzzResult:
    """Fuzz `parse_fn` with `runs` inputs grown from `seeds`; only AnalyzerError may escape it, and memory
    must not grow more than `leak_threshold` bytes per input over the second half."""
    if engine == "auto":
        engine = "atheris" if have_atheris() else "mutate"
    if engine == "atheris":
        return _run_atheris(name, parse_fn, seeds, runs, seed, timeout_s, rss_limit_mb, leak_threshold)
    if engine == "mutate":
        return _run_mutate(name, parse_fn, seeds, runs, seed, leak_threshold)
    raise ValueError(f"unknown fuzz engine {engine!r} (auto, atheris, mutate)")


class StreamParser(Protocol):
    """What `feed_in_pieces` needs of an analyzer's stream parser."""

    @property
    def buffered(self) -> int: ...

    def feed(self, segment: bytes) -> object: ...


def feed_in_pieces(parser: StreamParser, data: bytes, max_buffer: int, name: str) -> None:
    """Feed `data` to `parser` in pieces of ``1 + data[0]`` bytes.

    Raises AssertionError if the parser raises or buffers more than `max_buffer` bytes; `name` labels it.
    """
    # The segmentation comes from the input itself so the fuzzer explores how messages split across segments.
    size = 1 + (data[0] if data else 0)
    try:
        for i in range(0, len(data), size):
            parser.feed(data[i : i + size])
            if parser.buffered > max_buffer:
                raise AssertionError(f"stream parser holds {parser.buffered} bytes")
    except AnalyzerError as exc:
        # A stream parser must absorb bad input (drop or resync), never raise: unlike parse(), it is a bug.
        raise AssertionError(f"{name}.feed raised {exc!r}") from exc


def quiet_corpus_warnings() -> None:
    """Silence the capture reader's warnings about odd corpus files while seeds are extracted."""
    logging.basicConfig(level=logging.ERROR)


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every fuzz script accepts."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("runs_pos", nargs="?", type=int, help="inputs to run (same as --runs)")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"inputs to run (default {DEFAULT_RUNS})")
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    ap.add_argument("--seed", type=int, default=0, help="random seed (0: libFuzzer picks one for atheris)")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take (atheris)")
    ap.add_argument(
        "--rss-limit-mb",
        type=int,
        default=DEFAULT_RSS_LIMIT_MB,
        help=f"libFuzzer's memory limit; beyond it the campaign fails (default {DEFAULT_RSS_LIMIT_MB})",
    )
    ap.add_argument(
        "--leak-threshold",
        type=float,
        default=DEFAULT_LEAK_THRESHOLD,
        help=f"bytes of growth per input that make a leak (default {DEFAULT_LEAK_THRESHOLD})",
    )
    return ap


def main(
    name: str, parse_fn: ParseFn, seeds: Callable[[], list[bytes]], argv: list[str] | None = None
) -> int:
    """CLI of one fuzz script: prints the result, exits 1 on any failure."""
    args = arg_parser(f"fuzz the {name} analyzer").parse_args(argv)
    quiet_corpus_warnings()
    runs = args.runs_pos if args.runs_pos is not None else args.runs
    with contextlib.suppress(BrokenPipeError):
        result = run_fuzz(
            name,
            parse_fn,
            seeds(),
            runs,
            engine=args.engine,
            seed=args.seed,
            timeout_s=args.timeout,
            rss_limit_mb=args.rss_limit_mb,
            leak_threshold=args.leak_threshold,
        )
        print(result)
        return 0 if result.ok else 1
    return 1
