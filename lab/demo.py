"""Write the demo site capture: `python -m lab.demo OUT.pcap`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab import scenario
from monitor.pcapwrite import PcapWriter


def write_demo(path: Path) -> int:
    """Write the demo capture (deterministic: the same bytes every time); returns the packet count."""
    writer = PcapWriter()
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(writer.header())
        for ts, frame in scenario.site_packets(scenario.demo_shape()):
            fh.write(writer.record(ts, frame))
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the camwatch demo site capture.")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    count = write_demo(args.out)
    sys.stderr.write(f"wrote {args.out} ({count} packets)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
