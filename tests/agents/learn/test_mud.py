"""MUD files (RFC 8520) from ``camwatch learn --mud``, checked against the structure the YANG modules
define: ietf-mud (RFC 8520 section 2.1: the ``mud`` container and its augmentation of ACE matches),
ietf-access-control-list (RFC 8519: acls, aces, matches, actions) and ietf-acldns (RFC 8520 section 3:
``src-dnsname``/``dst-dnsname``), in their JSON encoding (RFC 7951: module-qualified top-level and
augmenting names, ``[null]`` for a leaf of type empty)."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agents import cli
from lab import sitelife
from lab.sitelife import LifeShape, site_life
from monitor.pcapwrite import pcap_bytes

# ietf-mud grouping mud-grouping (mandatory: mud-version, mud-url, last-update, is-supported).
MUD_LEAVES = {
    "mud-version",
    "mud-url",
    "last-update",
    "mud-signature",
    "cache-validity",
    "is-supported",
    "systeminfo",
    "mfg-name",
    "model-name",
    "firmware-rev",
    "software-rev",
    "documentation",
    "extensions",
    "from-device-policy",
    "to-device-policy",
}
MANDATORY = {"mud-version", "mud-url", "last-update", "is-supported"}
MUD_MATCHES = {"manufacturer", "same-manufacturer", "model", "local-networks", "controller", "my-controller"}
EMPTY_LEAVES = {"same-manufacturer", "local-networks", "my-controller"}
IP_MATCH = {
    4: {
        "protocol",
        "dscp",
        "ecn",
        "length",
        "ttl",
        "source-ipv4-network",
        "destination-ipv4-network",
        "ietf-acldns:src-dnsname",
        "ietf-acldns:dst-dnsname",
    },
    6: {
        "protocol",
        "dscp",
        "ecn",
        "length",
        "ttl",
        "source-ipv6-network",
        "destination-ipv6-network",
        "flow-label",
        "ietf-acldns:src-dnsname",
        "ietf-acldns:dst-dnsname",
    },
}
L4 = {"tcp": 6, "udp": 17}
DATE_AND_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
HOST = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


class MudError(AssertionError):
    """The document does not follow the YANG-derived structure."""


def check(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise MudError(f"{where}: {what}")


def check_mud_document(doc: Any) -> None:
    """Raise MudError where ``doc`` departs from the ietf-mud / ietf-access-control-list structure."""
    check(isinstance(doc, dict), "/", "a JSON object")
    check(
        set(doc) == {"ietf-mud:mud", "ietf-access-control-list:acls"}, "/", f"top-level members {sorted(doc)}"
    )
    mud = doc["ietf-mud:mud"]
    check(isinstance(mud, dict), "mud", "a container")
    check(set(mud) <= MUD_LEAVES, "mud", f"unknown members {sorted(set(mud) - MUD_LEAVES)}")
    check(set(mud) >= MANDATORY, "mud", f"missing mandatory {sorted(MANDATORY - set(mud))}")
    check(mud["mud-version"] == 1 and type(mud["mud-version"]) is int, "mud-version", "uint8, version 1")
    check(
        isinstance(mud["mud-url"], str) and mud["mud-url"].startswith("https://"), "mud-url", "an https URI"
    )
    check(
        isinstance(mud["last-update"], str) and DATE_AND_TIME.fullmatch(mud["last-update"]) is not None,
        "last-update",
        "yang:date-and-time",
    )
    validity = mud.get("cache-validity", 48)
    check(type(validity) is int and 1 <= validity <= 168, "cache-validity", "uint8 in 1..168")
    check(type(mud["is-supported"]) is bool, "is-supported", "a boolean")
    for leaf in ("systeminfo", "mfg-name", "model-name"):
        if leaf in mud:
            check(isinstance(mud[leaf], str) and mud[leaf] != "", leaf, "a string")
    acls = doc["ietf-access-control-list:acls"]
    check(
        isinstance(acls, dict) and set(acls) == {"acl"} and isinstance(acls["acl"], list), "acls", "acls/acl"
    )
    by_name: dict[str, dict[str, Any]] = {}
    for acl in acls["acl"]:
        check(
            set(acl) <= {"name", "type", "aces"} and isinstance(acl.get("name"), str),
            "acl",
            "name, type, aces",
        )
        check(acl["name"] not in by_name, f"acl {acl['name']}", "names are the list key: unique")
        by_name[acl["name"]] = acl
        check(acl.get("type") in ("ipv4-acl-type", "ipv6-acl-type"), f"acl {acl['name']}", "an ACL type")
        check_aces(acl)
    referenced: list[str] = []
    for policy in ("from-device-policy", "to-device-policy"):
        if policy not in mud:
            continue
        lists = mud[policy]["access-lists"]["access-list"]
        check(isinstance(lists, list), policy, "access-lists/access-list is a list")
        for entry in lists:
            check(set(entry) == {"name"}, policy, "each entry is its key, name")
            check(entry["name"] in by_name, policy, f"leafref to a missing ACL {entry['name']}")
            referenced.append(entry["name"])
    check(sorted(referenced) == sorted(by_name), "acls", "every ACL is used by exactly one policy")


def check_aces(acl: dict[str, Any]) -> None:
    version = 4 if acl["type"] == "ipv4-acl-type" else 6
    aces = acl["aces"]["ace"]
    check(isinstance(aces, list) and bool(aces), f"acl {acl['name']}", "a non-empty ace list")
    names = [ace["name"] for ace in aces]
    check(len(names) == len(set(names)), f"acl {acl['name']}", "ace names are unique")
    for ace in aces:
        where = f"{acl['name']}/{ace['name']}"
        check(set(ace) == {"name", "matches", "actions"}, where, "name, matches, actions")
        check(
            ace["actions"] == {"forwarding": "accept"}
            or ace["actions"].get("forwarding") in ("drop", "reject"),
            where,
            "forwarding accept, drop or reject",
        )
        matches = ace["matches"]
        allowed = {f"ipv{version}", "tcp", "udp", "ietf-mud:mud"}
        check(set(matches) <= allowed, where, f"matches of an IPv{version} ACL, not {sorted(set(matches))}")
        ip = matches.get(f"ipv{version}", {})
        check(set(ip) <= IP_MATCH[version], where, f"unknown ipv{version} members {sorted(set(ip))}")
        for key, value in ip.items():
            if key.endswith("-network"):
                network = ipaddress.ip_network(value)
                check(network.version == version, where, f"{value} is an IPv{version} prefix")
            elif key.startswith("ietf-acldns:"):
                check(HOST.fullmatch(value) is not None, where, f"{value} is an inet:host name")
            elif key == "protocol":
                check(type(value) is int and 0 <= value <= 255, where, "protocol is a uint8")
        for proto, number in L4.items():
            if proto not in matches:
                continue
            check(ip.get("protocol") == number, where, f"{proto} matches need protocol {number}")
            l4 = matches[proto]
            keys = {"source-port", "destination-port"} | (
                {"ietf-mud:direction-initiated"} if proto == "tcp" else set()
            )
            check(set(l4) <= keys, where, f"unknown {proto} members {sorted(set(l4) - keys)}")
            for side in ("source-port", "destination-port"):
                if side in l4:
                    check(l4[side]["operator"] == "eq" and 0 <= l4[side]["port"] <= 65535, where, "port eq N")
            if "ietf-mud:direction-initiated" in l4:
                check(
                    l4["ietf-mud:direction-initiated"] in ("from-device", "to-device"), where, "a direction"
                )
        extra = matches.get("ietf-mud:mud", {})
        check(set(extra) <= MUD_MATCHES, where, f"unknown mud matches {sorted(set(extra))}")
        for leaf in EMPTY_LEAVES & set(extra):
            check(extra[leaf] == [None], where, f"{leaf} is type empty: [null]")
        if "controller" in extra:
            check(isinstance(extra["controller"], str) and ":" in extra["controller"], where, "a URI")


@pytest.fixture(scope="module")
def mud_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mud")
    (root / "base.yaml").write_text(sitelife.LIFE_POLICY, encoding="utf-8")
    (root / "learn.pcap").write_bytes(pcap_bytes(list(site_life(LifeShape(scan=True)))))
    args = [
        "learn",
        str(root / "learn.pcap"),
        "--policy",
        str(root / "base.yaml"),
        "--out",
        str(root / "p.yaml"),
    ]
    assert cli.main([*args, "--mud", str(root / "mud"), "--mud-url", "https://mud.example.com/site7"]) == 0
    return root / "mud"


def test_a_group_without_a_mud_file_is_named_with_why(
    mud_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file for a group with nothing to describe (an empty MUD file would forbid everything), and the
    report says so for each group, with what its traffic was."""
    root = mud_dir.parent
    args = ["learn", str(root / "learn.pcap"), "--policy", str(root / "base.yaml"), "--out",
            str(tmp_path / "p.yaml"), "--mud", str(tmp_path / "mud"), "--min-flows", "100000"]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"camwatch learn: 0 MUD file(s) -> {tmp_path / 'mud'}" in out
    groups = [line for line in out.splitlines() if line.startswith("  [no-mud] ")]
    # Every group is named (the same groups the files were written for with the default support).
    assert len(groups) == len(list(mud_dir.iterdir())) >= 2
    assert f"no MUD file for {len(groups)} group(s)" in out
    assert any(line.startswith("  [no-mud] Hikvision DS-2CD2143G2-I: of its ") for line in groups)
    for line in groups:
        assert re.search(
            r": of its (\d+) peer/port pair\(s\), \1 below the support asked \(100000 flows", line
        ) or ("flagged by a rule" in line and "below the support asked (100000 flows" in line), line
    assert list((tmp_path / "mud").iterdir()) == []


def test_one_valid_mud_file_per_model(mud_dir: Path) -> None:
    files = sorted(p.name for p in mud_dir.iterdir())
    assert "hikvision-ds-2cd2143g2-i.json" in files and "dahua-ipc-hfw2431s-s-s2.json" in files
    for name in files:
        doc = json.loads((mud_dir / name).read_text(encoding="utf-8"))
        check_mud_document(doc)
        assert doc["ietf-mud:mud"]["mud-url"] == f"https://mud.example.com/site7/{name}"


def _aces(doc: dict[str, Any], suffix: str) -> list[dict[str, Any]]:
    return [
        ace
        for acl in doc["ietf-access-control-list:acls"]["acl"]
        if acl["name"].endswith(suffix)
        for ace in acl["aces"]["ace"]
    ]


def test_the_hikvision_file_says_what_its_cameras_do(mud_dir: Path) -> None:
    doc = json.loads((mud_dir / "hikvision-ds-2cd2143g2-i.json").read_text(encoding="utf-8"))
    mud = doc["ietf-mud:mud"]
    assert (mud["mfg-name"], mud["model-name"], mud["cache-validity"]) == ("Hikvision", "DS-2CD2143G2-I", 48)
    text = json.dumps(doc)
    assert "ezviz" not in text and sitelife.EZVIZ_IP not in text and "198.18." not in text
    out = [ace["matches"] for ace in _aces(doc, "v4fr") if not ace["name"].endswith("r")]
    assert {
        "ipv4": {"ietf-acldns:dst-dnsname": sitelife.NTP_NAME, "protocol": 17},
        "udp": {"destination-port": {"operator": "eq", "port": 123}},
    } in out
    assert {
        "ipv4": {"ietf-acldns:dst-dnsname": sitelife.VMS_NAME, "protocol": 6},
        "tcp": {
            "ietf-mud:direction-initiated": "from-device",
            "destination-port": {"operator": "eq", "port": 443},
        },
    } in out
    assert {
        "ipv4": {"destination-ipv4-network": "198.51.100.20/32", "protocol": 17},
        "udp": {"destination-port": {"operator": "eq", "port": 514}},
    } in out
    assert {
        "ietf-mud:mud": {"controller": "urn:ietf:params:mud:dns"},
        "ipv4": {"protocol": 17},
        "udp": {"destination-port": {"operator": "eq", "port": 53}},
    } in out
    # The recorder pulls video: my-controller may open tcp/554 to the camera, and the replies go back.
    into = [ace["matches"] for ace in _aces(doc, "v4to") if not ace["name"].endswith("r")]
    assert {
        "ietf-mud:mud": {"my-controller": [None]},
        "ipv4": {"protocol": 6},
        "tcp": {
            "ietf-mud:direction-initiated": "to-device",
            "destination-port": {"operator": "eq", "port": 554},
        },
    } in into
    # Each request has its reply in the other direction's ACL (names and ports mirrored).
    replies = [ace["matches"] for ace in _aces(doc, "v4to") if ace["name"].endswith("r")]
    assert {
        "ipv4": {"ietf-acldns:src-dnsname": sitelife.NTP_NAME, "protocol": 17},
        "udp": {"source-port": {"operator": "eq", "port": 123}},
    } in replies
    # Names apply to IPv6 too; an IPv4 network does not.
    v6 = json.dumps(_aces(doc, "v6fr"))
    assert sitelife.NTP_NAME in v6 and "198.51.100.20" not in v6


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["ietf-mud:mud"].pop("mud-version"),
        lambda d: d["ietf-mud:mud"].update({"cache-validity": 0}),
        lambda d: d["ietf-mud:mud"].update({"last-update": "yesterday"}),
        lambda d: d["ietf-mud:mud"]["from-device-policy"]["access-lists"]["access-list"].append(
            {"name": "nope"}
        ),
        lambda d: d["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]["matches"].update(
            {"ipv6": {}}
        ),
        lambda d: d["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0].update({"actions": {}}),
        lambda d: d["ietf-mud:mud"].update({"colour": "red"}),
    ],
)
def test_the_checker_finds_departures_from_the_structure(mud_dir: Path, damage: Any) -> None:
    doc = json.loads((mud_dir / "hikvision-ds-2cd2143g2-i.json").read_text(encoding="utf-8"))
    check_mud_document(copy.deepcopy(doc))
    damage(doc)
    with pytest.raises(MudError):
        check_mud_document(doc)
