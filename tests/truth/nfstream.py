"""Reader for nfstream's `tests/results/<pcap>` CSVs (stored here as `<pcap>.csv`).

The CSV has no addresses or ports: match it as a multiset of (packets, bytes, app) or through the nDPI
`.out` of the same capture. Bytes are whole frames (link layer included), as in nDPI.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = (
    "id",
    "bidirectional_packets",
    "bidirectional_bytes",
    "application_name",
    "application_category_name",
    "application_is_guessed",
    "application_confidence",
)


@dataclass(frozen=True)
class NfstreamFlow:
    """One exported flow. `application_confidence` is nDPI's enum (6 = DPI, 1 = match by port, ...)."""

    id: int
    bidirectional_packets: int
    bidirectional_bytes: int
    application_name: str
    application_category_name: str
    application_is_guessed: bool
    application_confidence: int

    @property
    def master(self) -> str | None:
        """`STUN` of `STUN.FacebookVoip`; None without a dot."""
        master, dot, _ = self.application_name.partition(".")
        return master if dot else None

    @property
    def app(self) -> str:
        """`FacebookVoip` of `STUN.FacebookVoip`; the whole name without a dot."""
        return self.application_name.rpartition(".")[2]


def _flag(text: str, path: Path | str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"{path}: application_is_guessed is {text!r}, expected 0 or 1")
    return text == "1"


def read_nfstream_csv(path: Path | str) -> list[NfstreamFlow]:
    """Parse an nfstream result CSV."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: unexpected columns {reader.fieldnames}")
        return [
            NfstreamFlow(
                id=int(row["id"]),
                bidirectional_packets=int(row["bidirectional_packets"]),
                bidirectional_bytes=int(row["bidirectional_bytes"]),
                application_name=row["application_name"],
                application_category_name=row["application_category_name"],
                application_is_guessed=_flag(row["application_is_guessed"], path),
                application_confidence=int(row["application_confidence"]),
            )
            for row in reader
        ]
