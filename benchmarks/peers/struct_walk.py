"""Peer: walk the pcap records with `struct` and nothing else (a floor for any per-packet Python loop).

    python benchmarks/peers/struct_walk.py PCAP

Reads each 16-byte record header, unpacks it, reads the captured bytes, and sums packets and
original lengths. No decoding at all: any tool that looks at every packet from Python pays
at least this much. Prints one JSON line on stdout.
"""

from __future__ import annotations

import json
import struct
import sys

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}


def walk(path: str) -> dict[str, int | str]:
    packets = total_bytes = 0
    with open(path, "rb") as f:
        head = f.read(24)
        order = _MAGICS.get(head[:4])
        if order is None or len(head) < 24:
            raise SystemExit(f"{path}: not a classic pcap file")
        record = struct.Struct(order + "IIII")
        read, unpack, size = f.read, record.unpack, record.size
        while True:
            hdr = read(size)
            if len(hdr) < size:
                break
            _sec, _frac, incl, orig = unpack(hdr)
            data = read(incl)
            if len(data) < incl:
                break  # a cut-off last record, as tcpdump would stop
            packets += 1
            total_bytes += orig
    return {"tool": "struct_walk", "packets": packets, "bytes": total_bytes}


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: struct_walk.py PCAP", file=sys.stderr)
        return 2
    print(json.dumps(walk(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
