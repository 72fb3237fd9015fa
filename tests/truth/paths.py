"""Locations of the test corpus (`tests/data/corpus/`) and capture/truth pairs in it."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
PCAPS = CORPUS / "pcaps"
TRUTH = CORPUS / "truth"

# nfstream truths whose capture is byte-identical to an nDPI one are stored under pcaps/ndpi/.
_PCAP_SOURCES_FOR = {"nfstream": ("nfstream", "ndpi")}


def pcap(rel: str) -> Path:
    """Path of a capture, `rel` relative to `pcaps/` (e.g. "ndpi/sip.pcap")."""
    return PCAPS / rel


def truth(rel: str) -> Path:
    """Path of a truth file, `rel` relative to `truth/` (e.g. "ndpi/sip.pcap.out")."""
    return TRUTH / rel


def _files(pattern: str, under: Path) -> list[Path]:
    return sorted(p for p in under.glob(pattern) if p.is_file())


def ndpi_outs() -> list[Path]:
    """Every nDPI `.out` file."""
    return _files("*.out", TRUTH / "ndpi")


def nfstream_csvs() -> list[Path]:
    """Every nfstream `.csv` file."""
    return _files("*.csv", TRUTH / "nfstream")


def arkime_tests() -> list[Path]:
    """Every Arkime `.test` file."""
    return _files("*.test", TRUTH / "arkime")


def suricata_tests() -> list[Path]:
    """Every suricata-verify `test.yaml` (none in the current copy: see `suricata_captures`)."""
    return _files("**/test.yaml", TRUTH / "suricata-verify")


def suricata_captures() -> list[Path]:
    """Every suricata-verify capture: `pcaps/suricata-verify/<test dir>/<file>`."""
    return _files("**/*.pcap", PCAPS / "suricata-verify")


def suricata_test_of(capture: Path) -> Path:
    """Where the `test.yaml` of a suricata-verify capture belongs: `truth/suricata-verify/<test dir>/`."""
    return TRUTH / "suricata-verify" / capture.parent.relative_to(PCAPS / "suricata-verify") / "test.yaml"


def zeek_logs() -> list[Path]:
    """Every Zeek log baseline: `*.log` and `zeek-cut` output `*.log.cut`."""
    root = TRUTH / "zeek"
    return sorted({*_files("**/*.log", root), *_files("**/*.log.cut", root)})


def zeek_community_id_outs() -> list[Path]:
    """Every `bifs.community_id.run-pcaps` output (`communityid/<pcap>/.../<pcap>.out`)."""
    return _files("communityid/*/bifs.community_id.run-pcaps/*.pcap.out", TRUTH / "zeek")


def zeek_trace_of(truth_file: Path) -> Path:
    """Capture a Zeek truth file belongs to: `truth/zeek/<trace>/<btest>/<file>` -> `pcaps/zeek/<trace>`."""
    rel = truth_file.relative_to(TRUTH / "zeek")
    return PCAPS / "zeek" / Path(*rel.parts[:-2])


def ndpi_pairs() -> list[tuple[Path, Path]]:
    """(capture, `.out`) for every nDPI capture that has a truth file."""
    pairs = [(PCAPS / "ndpi" / out.name.removesuffix(".out"), out) for out in ndpi_outs()]
    return [(p, t) for p, t in pairs if p.is_file()]


def nfstream_pairs() -> list[tuple[Path, Path]]:
    """(capture, `.csv`) for every nfstream truth file whose capture is in the copy."""
    pairs: list[tuple[Path, Path]] = []
    for csv_path in nfstream_csvs():
        name = csv_path.name.removesuffix(".csv")
        for source in _PCAP_SOURCES_FOR["nfstream"]:
            if (PCAPS / source / name).is_file():
                pairs.append((PCAPS / source / name, csv_path))
                break
    return pairs


def arkime_pairs() -> list[tuple[Path, Path]]:
    """(capture, `.test`) for every Arkime truth file whose capture is in the copy."""
    pairs = [(PCAPS / "arkime" / (t.name.removesuffix(".test") + ".pcap"), t) for t in arkime_tests()]
    return [(p, t) for p, t in pairs if p.is_file()]


def zeek_log_pairs() -> list[tuple[Path, Path]]:
    """(capture, log) for every Zeek log baseline."""
    pairs = [(zeek_trace_of(log), log) for log in zeek_logs()]
    return [(p, t) for p, t in pairs if p.is_file()]


def zeek_community_id_pairs() -> list[tuple[Path, Path]]:
    """(capture, `<pcap>.out`) for every Zeek Community ID baseline."""
    pairs = [(zeek_trace_of(out), out) for out in zeek_community_id_outs()]
    return [(p, t) for p, t in pairs if p.is_file()]
