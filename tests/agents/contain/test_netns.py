"""Containment with real nftables on a forwarding gateway in network namespaces (root).

Camera, recorder, office and "internet" namespaces around a gateway that routes between them
(tests/agents/contain/gateway_site.py). Every test loads what it needs into the gateway and tries real
TCP connections and UDP exchanges through it: what passes and what is dropped must be exactly what the
policy says, and what the plan's own judgement (used for dry-run counting) says; quarantines end on
their own; reloading changes nothing; a refused ruleset leaves the previous one in force; dry-run
leaves the kernel alone.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

from agents.contain.audit import AuditLog, last_records
from agents.contain.control import Controller
from agents.contain.files import ContainmentFiles
from agents.contain.plan import ContainmentPlan
from agents.contain.quarantine import QuarantineSettings
from monitor.policy import SitePolicy
from tests.agents.contain.conftest import needs_nft
from tests.agents.contain.gateway_site import (
    API,
    CAM1,
    CAM2,
    CLOUD,
    OFFICE,
    POLICY,
    REC,
    RESOLVER,
    VMS,
    Site,
)

pytestmark = needs_nft

PLAN = ContainmentPlan.build(SitePolicy.from_yaml(POLICY))
ip = ipaddress.ip_address

# (who, from, to, port, transport, passes, why): the policy of gateway_site.POLICY, case by case.
CASES = [
    ("cam", CAM1, CLOUD, 8666, "tcp", False, "a vendor cloud: not allowed"),
    ("cam", CAM1, CLOUD, 6002, "udp", False, "a vendor cloud over UDP"),
    ("cam", CAM1, VMS, 8666, "tcp", True, "allow rule without ports"),
    ("cam", CAM1, VMS, 9000, "tcp", True, "allow rule without ports, another port"),
    ("cam", CAM1, API, 8443, "tcp", True, "allow rule, its port"),
    ("cam", CAM1, API, 8444, "tcp", False, "allow rule, not its port"),
    ("cam", CAM1, API, 123, "udp", True, "allow rule, its UDP port"),
    ("cam", CAM1, API, 124, "udp", False, "allow rule, not its UDP port"),
    ("cam", CAM1, RESOLVER, 53, "udp", True, "the resolver, DNS over UDP"),
    ("cam", CAM1, RESOLVER, 53, "tcp", True, "the resolver, DNS over TCP"),
    ("cam", CAM1, RESOLVER, 7000, "tcp", False, "the resolver, not a DNS port"),
    ("cam", CAM1, REC, 7000, "tcp", True, "another monitored network: site-internal"),
    ("cam", CAM1, REC, 5004, "udp", True, "RTP to the recorder"),
    ("cam", CAM1, OFFICE, 7000, "tcp", False, "private but not monitored (allow_private false)"),
    ("rec", REC, CAM1, 554, "tcp", True, "the recorder pulls: the camera's reply passes"),
    ("off", OFFICE, CAM1, 554, "tcp", True, "a connection opened to the camera: its reply passes"),
    ("inet", CLOUD, CAM1, 554, "tcp", True, "inbound is not containment's business"),
    ("off", OFFICE, CLOUD, 8666, "tcp", True, "not a watched device"),
    ("rec", REC, CLOUD, 8666, "tcp", True, "a never-block host's own traffic"),
]


def probe(site: Site, who: str, src: str, dst: str, port: int, transport: str) -> bool:
    return (site.tcp if transport == "tcp" else site.udp)(who, src, dst, port)


def controller(site: Site, tmp_path: Path, mode: str = "enforce", **quarantine: object) -> Controller:
    files = ContainmentFiles.at(tmp_path / "state")
    return Controller(
        files,
        site.nft(),
        AuditLog(files, "cwtest/gw"),
        mode,
        QuarantineSettings(**quarantine),  # type: ignore[arg-type]
    )


def loaded(site: Site) -> str:
    """The table as listed, without what changes by itself (counters, time left)."""
    text = site.nft()._run(["list", "table", "inet", "camwatch"])
    text = re.sub(r"packets \d+ bytes \d+", "", text)
    return re.sub(r" expires [0-9hms]+", "", text)


def start_clean(site: Site) -> None:
    site.nft().load("table inet camwatch {}\ndelete table inet camwatch\n")


def test_flows_pass_or_drop_exactly_as_the_policy_says(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    # Without containment everything passes: the servers and routes work.
    assert all(probe(site, *case[:5]) for case in CASES)
    result = controller(site, tmp_path).apply(PLAN, "test", "test")
    assert result.outcome == "applied", result.record
    got = {case: probe(site, *case[:5]) for case in CASES}
    wrong = [f"{c[1]} -> {c[2]}:{c[3]}/{c[4]} ({c[6]}): {'passed' if got[c] else 'dropped'}" for c in CASES
             if got[c] != c[5]]  # fmt: skip
    assert wrong == []
    # The plan's own judgement (dry-run counting) agrees with the kernel on every case.
    for _who, src, dst, port, transport, passes, _ in CASES:
        assert PLAN.judge(ip(src), ip(dst), transport, port).allowed == passes, (src, dst, port)
    state = site.nft().table()
    assert state is not None and state.digest == PLAN.digest and state.site == "cwtest"
    assert state.counters["dropped_policy"][0] > 0
    assert state.counters["dropped_quarantine"] == (0, 0)


def test_loading_again_changes_nothing_and_keeps_quarantines(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    ctl = controller(site, tmp_path)
    assert ctl.apply(PLAN, "test", "first").outcome == "applied"
    first = loaded(site)
    record = ctl.quarantine(
        PLAN, "44-19-b6-00-00-02", [ip(CAM2)], "test", "test", automatic=False, seconds=600
    )
    assert record.outcome == "applied", record
    for _ in range(3):
        assert ctl.apply(PLAN, "test", "again").outcome == "applied"
    again = loaded(site)
    # Only the quarantine element differs (it is in the set, with its remaining time).
    assert again.replace(f"elements = {{ {CAM2} timeout", "") != again
    assert re.sub(r"\s*elements = \{ 10\.91\.0\.12 timeout \w+ \}\n", "\n", again) == first
    state = site.nft().table()
    assert state is not None and [str(e.address) for e in state.elements("quarantine")] == [CAM2]
    assert not site.tcp("cam", CAM2, VMS, 9000)  # still quarantined after three reloads
    assert site.tcp("cam", CAM1, VMS, 9000)


def test_quarantine_cuts_a_device_off_but_the_recorder_and_ends_on_its_own(
    site: Site, tmp_path: Path
) -> None:
    start_clean(site)
    ctl = controller(site, tmp_path)
    assert ctl.apply(PLAN, "test", "test").outcome == "applied"
    assert site.tcp("cam", CAM2, VMS, 9000) and site.tcp("off", OFFICE, CAM2, 554)
    record = ctl.quarantine(
        PLAN, "44-19-b6-00-00-02", [ip(CAM2)], "test", "incident", automatic=False, seconds=3
    )
    assert record.outcome == "applied" and record.expires is not None
    assert not site.tcp("cam", CAM2, VMS, 9000), "an allowed destination is cut off"
    assert not site.tcp("off", OFFICE, CAM2, 554), "nobody but never-block hosts and viewers reaches it"
    assert site.tcp("rec", REC, CAM2, 554), "the recorder keeps pulling video"
    assert site.tcp("cam", CAM2, REC, 7000), "it still reaches the never-block hosts"
    assert site.tcp("cam", CAM1, VMS, 9000), "the other camera is not affected"
    state = site.nft().table()
    assert state is not None and state.counters["dropped_quarantine"][0] > 0
    # The kernel ends it on its own: wait for the element to go, then the traffic passes again.
    deadline = time.monotonic() + 15
    while site.nft().table().elements("quarantine") and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.2)
    assert site.nft().table().elements("quarantine") == []  # type: ignore[union-attr]
    assert site.tcp("cam", CAM2, VMS, 9000) and site.tcp("off", OFFICE, CAM2, 554)
    # The book forgets it too, with an audit record saying it expired.
    expired = ctl.expire()
    assert [e.device for e in expired] == ["44-19-b6-00-00-02"]
    assert last_records(ctl.files.audit, 1)[0].action == "expire"


def test_a_never_block_host_is_never_quarantined_and_the_cap_holds(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    ctl = controller(site, tmp_path, max_devices=1)
    assert ctl.apply(PLAN, "test", "test").outcome == "applied"
    refused = ctl.quarantine(PLAN, "00-11-32-00-00-02", [ip(REC)], "test", "test", automatic=False)
    assert refused.outcome == "refused" and "never-block" in refused.reason
    assert ctl.quarantine(PLAN, "cam1", [ip(CAM1)], "test", "t", automatic=True).outcome == "applied"
    capped = ctl.quarantine(PLAN, "cam2", [ip(CAM2)], "test", "t", automatic=True)
    assert capped.outcome == "refused" and "max_devices" in capped.reason
    state = site.nft().table()
    assert state is not None and [str(e.address) for e in state.elements("quarantine")] == [CAM1]
    assert site.tcp("rec", REC, CLOUD, 8666) and site.tcp("cam", CAM2, VMS, 9000)
    released = ctl.release(CAM1, "test", "done")
    assert released.outcome == "applied" and released.device == "cam1"
    assert site.nft().table().elements("quarantine") == []  # type: ignore[union-attr]
    assert site.tcp("cam", CAM1, VMS, 9000)


def test_a_ruleset_nft_refuses_leaves_the_previous_one_in_force(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    ctl = controller(site, tmp_path)
    assert ctl.apply(PLAN, "test", "good").outcome == "applied"
    # Overlapping intervals in a concatenated set (what the plan's collapsing prevents): nft refuses them.
    broken = ContainmentPlan(
        site="cwtest",
        watched=PLAN.watched,
        internal=PLAN.internal,
        allow_any=(),
        allow_ports=(
            (ipaddress.ip_network("203.0.113.0/24"), "tcp", 8666),
            (ipaddress.ip_network("203.0.113.0/25"), "tcp", 8666),
        ),
        resolvers=PLAN.resolvers,
        never_block=PLAN.never_block,
        viewers=PLAN.viewers,
    )
    result = ctl.apply(broken, "test", "broken")
    assert result.outcome == "refused" and "nft -c refused" in result.record.reason
    state = site.nft().table()
    assert state is not None and state.digest == PLAN.digest
    assert not site.tcp("cam", CAM1, CLOUD, 8666), "the previous ruleset still blocks"


def test_dry_run_changes_nothing_in_the_kernel(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    before = site.nft()._run(["list", "ruleset"])
    ctl = controller(site, tmp_path, mode="dry-run")
    result = ctl.apply(PLAN, "test", "dry")
    assert result.outcome == "dry-run" and "not loaded" in result.record.reason
    q = ctl.quarantine(PLAN, "cam1", [ip(CAM1)], "test", "t", automatic=True)
    assert q.outcome == "dry-run" and q.expires is not None
    assert site.nft()._run(["list", "ruleset"]) == before
    assert site.nft().table() is None
    assert site.tcp("cam", CAM1, CLOUD, 8666) and site.udp("cam", CAM1, API, 124)
    assert [r.outcome for r in last_records(ctl.files.audit, 2)] == ["dry-run", "dry-run"]


def test_remove_opens_the_site_and_says_so(site: Site, tmp_path: Path) -> None:
    start_clean(site)
    ctl = controller(site, tmp_path)
    assert ctl.apply(PLAN, "test", "test").outcome == "applied"
    ctl.quarantine(PLAN, "cam2", [ip(CAM2)], "test", "t", automatic=False)
    record = ctl.remove("cli:test", "maintenance")
    assert record.action == "remove" and record.outcome == "applied" and record.plan == PLAN.digest
    assert site.nft().table() is None and ctl.files.read_removed() is not None
    assert ctl.book().active == {}
    assert [r.action for r in last_records(ctl.files.audit, 2)] == ["release", "remove"]
    assert site.tcp("cam", CAM1, CLOUD, 8666) and site.tcp("cam", CAM2, VMS, 9000)
    assert ctl.remove("cli:test", "again").outcome == "unchanged"
    assert ctl.apply(PLAN, "cli:test", "back").outcome == "applied"
    assert ctl.files.read_removed() is None
