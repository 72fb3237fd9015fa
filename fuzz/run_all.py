"""Run every ``fuzz/fuzz_*.py`` campaign (each module exposes ``NAME``, ``parse`` and ``seeds()``).

``python -m fuzz.run_all [--runs N] [--engine auto|atheris|mutate] [--only dns,dhcp]`` from the repository
root (``python fuzz/run_all.py`` works too). Prints one line per campaign and a table; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from fuzz.common import (  # noqa: E402  (needs the path set above)
    DEFAULT_LEAK_THRESHOLD,
    DEFAULT_RSS_LIMIT_MB,
    DEFAULT_RUNS,
    FuzzResult,
    quiet_corpus_warnings,
    run_fuzz,
)


def campaigns() -> list[ModuleType]:
    """Every fuzz module that exposes NAME, parse and seeds, sorted by file name."""
    found: list[ModuleType] = []
    for path in sorted(HERE.glob("fuzz_*.py")):
        module = importlib.import_module(f"fuzz.{path.stem}")
        if all(hasattr(module, attr) for attr in ("NAME", "parse", "seeds")):
            found.append(module)
        else:
            print(f"skipping {path.name}: it lacks NAME, parse or seeds()", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    ap.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take (atheris)")
    ap.add_argument("--rss-limit-mb", type=int, default=DEFAULT_RSS_LIMIT_MB, help="libFuzzer's memory limit")
    ap.add_argument(
        "--leak-threshold",
        type=float,
        default=DEFAULT_LEAK_THRESHOLD,
        help="bytes per input that make a leak",
    )
    ap.add_argument("--only", default="", help="comma-separated NAMEs to run")
    args = ap.parse_args(argv)
    quiet_corpus_warnings()
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    results: list[FuzzResult] = []
    for module in campaigns():
        if only and module.NAME not in only:
            continue
        result = run_fuzz(
            module.NAME,
            module.parse,
            module.seeds(),
            args.runs,
            engine=args.engine,
            seed=args.seed,
            timeout_s=args.timeout,
            rss_limit_mb=args.rss_limit_mb,
            leak_threshold=args.leak_threshold,
        )
        print(result, flush=True)
        results.append(result)
    print(f"\n{'campaign':<10} {'engine':<8} {'inputs':>9} {'seconds':>8} {'failures':>8} {'B/input':>8}")
    for r in results:
        growth = r.growth_per_input()
        per = f"{growth:>8.0f}" if growth is not None else f"{'-':>8}"
        print(f"{r.name:<10} {r.engine:<8} {r.inputs:>9} {r.seconds:>8.1f} {len(r.failures):>8} {per}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
