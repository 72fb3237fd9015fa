"""Readers for the upstream ground truth kept in `tests/data/corpus/truth/` (see its MANIFEST.md).

One module per format, pure functions returning dataclasses:

- `ndpi.read_ndpi_out`: nDPI `ndpiReader -v 2` result (`.out`) -> `NdpiResult` (flows + per-app summary)
- `zeek.read_zeek_log`: Zeek ASCII log or `zeek-cut -m` table -> `ZeekLog`;
  `zeek.read_community_id_out`: `bifs.community_id.run-pcaps` output -> `list[CommunityIdCase]`
- `arkime.read_arkime_test`: Arkime `.test` -> session bodies, plus typed accessors
- `nfstream.read_nfstream_csv`: nfstream result CSV -> `list[NfstreamFlow]`
- `suricata.read_suricata_test` / `read_suricata_checks`: suricata-verify `test.yaml` checks
- `paths`: corpus locations and (capture, truth) pairs
"""

from __future__ import annotations

from tests.truth.arkime import read_arkime_test
from tests.truth.ndpi import NdpiFlow, NdpiResult, NdpiTotals, read_ndpi_out
from tests.truth.nfstream import NfstreamFlow, read_nfstream_csv
from tests.truth.suricata import SuricataCheck, SuricataTest, read_suricata_checks, read_suricata_test
from tests.truth.zeek import CommunityIdCase, ZeekLog, read_community_id_out, read_zeek_log

__all__ = [
    "CommunityIdCase",
    "NdpiFlow",
    "NdpiResult",
    "NdpiTotals",
    "NfstreamFlow",
    "SuricataCheck",
    "SuricataTest",
    "ZeekLog",
    "read_arkime_test",
    "read_community_id_out",
    "read_ndpi_out",
    "read_nfstream_csv",
    "read_suricata_checks",
    "read_suricata_test",
    "read_zeek_log",
]
