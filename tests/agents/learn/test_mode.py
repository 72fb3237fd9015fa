"""The agent's learning mode: per-device states, marked alerts, the state file, relearning, and the
agent end to end (a learning capture through ``camwatch run``'s runtime, then ``learn --from-state``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from agents import cli
from agents.config import AgentConfig, LearningConfig, MqttSettings
from agents.learn.mode import ENFORCING, LEARNING, LEARNING_SEVERITY, LearningMode, is_learning_record
from agents.learn.observe import OUT, UsageKey
from agents.learn.state import LEARNING_FILE, RELEARN_DIR, request_relearn
from agents.runtime import Agent
from lab import sitelife
from lab.sitelife import LifeShape, site_life
from monitor.alerts import Alert, Endpoint, Rule
from monitor.engine import Engine
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.agents.mosquitto import free_port
from tests.enginerun import vendors

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = sitelife.T0
CAM, OTHER = "44-19-b6-00-00-01", "44-19-b6-00-00-02"
EGRESS = Rule("egress.unexpected_destination", "Camera connected to an unexpected destination", 3)


def mode(tmp_path: Path, **kw: Any) -> LearningMode:
    return LearningMode(LearningConfig(period=24 * 3600, **kw), tmp_path)


def alert(device: str, ts: int, rule: Rule = EGRESS) -> Alert:
    return Alert(
        rule,
        ts,
        f"id-{device}-{ts}",
        "s/g",
        "m",
        Endpoint("10.20.0.11", 1, device),
        Endpoint("192.0.2.1", 443),
        "tcp",
        device_id=device,
    )


def engine() -> Engine:
    return Engine(SitePolicy.default(), vendors())


def test_devices_learn_until_the_sites_window_closes_then_enforce(tmp_path: Path) -> None:
    m = mode(tmp_path)
    assert m.state(CAM, T0) == (LEARNING, T0 + 24 * HOUR)
    assert m.state(OTHER, T0 + 23 * HOUR) == (LEARNING, T0 + 24 * HOUR)  # seen in the window: same end
    assert m.state(CAM, T0 + 24 * HOUR) == (ENFORCING, None)
    # A device first seen after the window enforces at once (a stranger gets no days of silence)...
    assert m.state("44-19-b6-00-00-03", T0 + 25 * HOUR) == (ENFORCING, None)
    # ... unless new devices learn too.
    m = mode(tmp_path, new_devices="learn")
    m.state(CAM, T0)
    assert m.state("44-19-b6-00-00-03", T0 + 25 * HOUR) == (LEARNING, T0 + 49 * HOUR)
    assert mode(tmp_path, enabled=False).state(CAM, T0) == (ENFORCING, None)


def test_alerts_of_learning_devices_are_marked_not_paging(tmp_path: Path) -> None:
    m = mode(tmp_path)
    e = engine()
    learning = alert(CAM, T0)
    record = learning.to_record()
    assert m.on_alert(learning, record, e)
    assert record["event"]["severity"] == LEARNING_SEVERITY == 1
    assert record["camwatch"] == {
        "learning": {"state": "learning", "until": "2026-01-02T00:00:00.000Z", "severity": 3}
    }
    assert is_learning_record(record)
    # Published below every paging topic: <prefix>/<site>/<gateway>/alerts/1.
    assert MqttSettings(host="h", site="s", gateway="g").alert_topic(record) == "camwatch/s/g/alerts/1"
    enforcing = alert(CAM, T0 + 25 * HOUR)
    plain = enforcing.to_record()
    assert not m.on_alert(enforcing, plain, e) and not is_learning_record(plain)
    assert plain["event"]["severity"] == 3
    assert m.reading().alerts == {"egress.unexpected_destination": 1}


def test_critical_alerts_of_learning_devices_still_page(tmp_path: Path) -> None:
    # A camera compromised in its learning week: its scan or an exploit against it is not made quiet.
    from monitor.registry import RULES

    m = mode(tmp_path)
    e = engine()
    m.state(CAM, T0)
    for rule_id in ("device.scanning", "exploit.attempt"):
        critical = alert(CAM, T0 + HOUR, RULES[rule_id])
        record = critical.to_record()
        assert not m.on_alert(critical, record, e) and not is_learning_record(record)
        assert record["event"]["severity"] == 5


def test_relearning_forgets_and_starts_a_new_period(tmp_path: Path) -> None:
    m = mode(tmp_path)
    m.state(CAM, T0)
    m.observations.record(UsageKey(CAM, OUT, "name", "old.example.com", 443, "tcp"), T0, True, None)
    m.observations.record(UsageKey(OTHER, OUT, "name", "x.example.com", 443, "tcp"), T0, True, None)
    assert m.state(CAM, T0 + 30 * HOUR)[0] == ENFORCING
    request_relearn(tmp_path, ["44:19:b6:00:00:01"])
    assert (tmp_path / RELEARN_DIR / CAM).is_file()
    m.save()
    assert not (tmp_path / RELEARN_DIR / CAM).exists()
    # The new period starts at the device's next traffic.
    assert m.state(CAM, T0 + 31 * HOUR) == (LEARNING, T0 + 55 * HOUR)
    assert {k.device for k in m.observations.usages} == {OTHER}


def test_the_state_file_resumes_and_a_damaged_one_is_set_aside(tmp_path: Path, caplog: Any) -> None:
    m = mode(tmp_path)
    m.state(CAM, T0)
    m.observations.record(UsageKey(CAM, OUT, "name", "vms.example.com", 443, "tcp"), T0, True, None)
    m.save()
    again = mode(tmp_path)
    again.load()
    assert again.window_start_ns == T0 and again.state(CAM, T0 + 2 * HOUR) == (LEARNING, T0 + 24 * HOUR)
    assert again.observations.usages == m.observations.usages
    (tmp_path / LEARNING_FILE).write_text('{"version": 1, "devices": {"x": "nope"}}', encoding="utf-8")
    broken = mode(tmp_path)
    broken.load()
    assert broken.window_start_ns is None and not broken.devices
    assert not (tmp_path / LEARNING_FILE).exists() and list(tmp_path.glob("learning.json.damaged-*"))
    assert "learning starts again" in caplog.text


def test_the_collector_reports_states_and_learning_alerts(tmp_path: Path) -> None:
    m = mode(tmp_path)
    m.on_alert(alert(CAM, T0), alert(CAM, T0).to_record(), engine())
    m.state(OTHER, T0 + 25 * HOUR)
    families = {f.name: f for f in m.collector().collect()}
    devices = {s.labels["state"]: s.value for s in families["camwatch_learning_devices"].samples}
    assert devices == {"learning": 0, "enforcing": 2}
    counted = {s.labels["rule"]: s.value for s in families["camwatch_learning_alerts"].samples}
    assert counted["egress.unexpected_destination"] == 1 and counted["dns.vendor_cloud"] == 0


# ---------------------------------------------------------------------------------------------------
# The agent end to end


def agent_config(tmp_path: Path, pcap: Path, state: Path) -> AgentConfig:
    (tmp_path / "site.yaml").write_text(sitelife.LIFE_POLICY, encoding="utf-8")
    text = f"""
site: lifesite
gateway: gw-learn
capture:
  pcap: {pcap}
  pace: fast
policy_file: site.yaml
metrics:
  listen: 127.0.0.1
  port: {free_port()}
state_dir: {state}
run_as_user: null
alerts_file: alerts.jsonl
learning:
  period: 1d
"""
    return AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)


async def run_to_end(agent: Agent, timeout: float = 120) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent")

    async def finished() -> None:
        while not agent.sources or not all(st.finished for st in agent.sources):
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(finished(), timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def test_an_agent_learns_marks_its_alerts_and_proposes_from_its_state(tmp_path: Path) -> None:
    pcap = tmp_path / "learn.pcap"
    pcap.write_bytes(pcap_bytes(list(site_life(LifeShape(scan=True)))))
    state = tmp_path / "state"
    config = agent_config(tmp_path, pcap, state)
    agent = Agent(config, vendors())
    asyncio.run(run_to_end(agent))
    records = [
        json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {r["rule"]["id"] for r in records} >= {
        "device.new",
        "dns.vendor_cloud",
        "egress.unexpected_destination",
    }
    # Every alert was raised while its device learned: marked, severity 1, and not in camwatch_alerts_total;
    # critical ones (the capture's scan, exploit attempts) excepted: they page as ever.
    from monitor.registry import RULES

    critical = [r for r in records if RULES[r["rule"]["id"]].severity == 5]
    assert all(
        r["event"]["severity"] == 1 and r["camwatch"]["learning"]["state"] == "learning"
        for r in records
        if r not in critical
    )
    assert all(r["event"]["severity"] == 5 and "learning" not in r.get("camwatch", {}) for r in critical)
    counted = agent.alert_counts.snapshot()
    assert sum(counted.values()) == len(critical) if critical else counted == {}
    assert (state / LEARNING_FILE).is_file()

    # The proposal from the agent's state is the one from the capture.
    def learn(*source: str) -> str:
        out = tmp_path / f"learned-{len(source)}.yaml"
        args = ["learn", *source, "--policy", str(tmp_path / "site.yaml"), "--out", str(out)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(args) == 0
        return "\n".join(
            line for line in out.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
        )

    assert learn("--from-state", str(state)) == learn(str(pcap))

    # Re-learning a device is one command; the running agent (here: its next run) takes it.
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert cli.main(["learn", "--relearn", "44:19:b6:01:00:00", "--from-state", str(state)]) == 0
    assert "asked to learn again" in said.getvalue()
    later = tmp_path / "later.pcap"
    later.write_bytes(pcap_bytes(list(site_life(LifeShape(start_ns=T0 + 48 * HOUR, seconds=600)))))
    agent = Agent(agent_config(tmp_path, later, state), vendors())
    asyncio.run(run_to_end(agent))
    saved = json.loads((state / LEARNING_FILE).read_text(encoding="utf-8"))
    since, until = saved["devices"]["44-19-b6-01-00-00"]
    assert since >= T0 + 48 * HOUR and until == since + 24 * HOUR
    # The other devices' window closed: their alerts page again, the relearning one's do not.
    records = [
        json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    late = [r for r in records if r["@timestamp"] >= "2026-01-03"]
    relearning = [r for r in late if r.get("device", {}).get("id") == "44-19-b6-01-00-00"]
    others = [r for r in late if r.get("device", {}).get("id") != "44-19-b6-01-00-00"]
    assert relearning and all(is_learning_record(r) for r in relearning)
    assert others and not any(is_learning_record(r) for r in others)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("learning: {period: 10m}", "learning.period"),
        ("learning: {new_devices: always}", "learning.new_devices"),
        ("learning: {perod: 1d}", "did you mean 'period'?"),
        ("learning: yes", "learning"),
        ("learning: {max_observations: 5}", "learning.max_observations"),
    ],
)
def test_the_learning_section_is_validated(tmp_path: Path, section: str, message: str) -> None:
    from agents.config import ConfigError

    text = f"site: s\ncapture: {{interfaces: [eth0]}}\nstate_dir: {tmp_path}\nrun_as_user: null\n{section}\n"
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)
    assert message in str(info.value)


def test_learning_defaults(tmp_path: Path) -> None:
    text = f"site: s\ncapture: {{interfaces: [eth0]}}\nstate_dir: {tmp_path}\nrun_as_user: null\n"
    text += "learning: {}\n"
    assert AgentConfig.from_yaml(text, "a.yaml", base_dir=tmp_path).learning == LearningConfig()
    text = text.replace("learning: {}\n", "")
    assert AgentConfig.from_yaml(text, "a.yaml", base_dir=tmp_path).learning is None


def test_relearn_requests_belong_to_the_agent_and_never_follow_links(tmp_path: Path) -> None:
    import os

    from agents.learn.state import LearningStateError, take_relearn_requests

    state = tmp_path / "state"
    state.mkdir()
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)  # the service user owns its state directory
    (made,) = request_relearn(state, ["4419.b601.0000"])
    assert made == "44-19-b6-01-00-00"
    if os.geteuid() == 0:  # written by root for the agent, which deletes it
        assert (state / RELEARN_DIR / made).stat().st_uid == 65534
        assert (state / RELEARN_DIR).stat().st_uid == 65534
    (state / RELEARN_DIR / "not-a-mac").write_text("x", encoding="utf-8")
    assert take_relearn_requests(state) == [made]
    assert sorted(p.name for p in (state / RELEARN_DIR).iterdir()) == ["not-a-mac"]
    # A link planted in place of the directory is refused, not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / RELEARN_DIR / "not-a-mac").unlink()
    (state / RELEARN_DIR).rmdir()
    (state / RELEARN_DIR).symlink_to(elsewhere)
    with pytest.raises(LearningStateError, match="not a directory"):
        request_relearn(state, ["44:19:b6:01:00:00"])
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(ValueError, match="not a MAC"):
        request_relearn(tmp_path, ["camera-1"])
