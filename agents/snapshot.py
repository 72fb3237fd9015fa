"""What the metrics endpoint shows, read from a running agent at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.sinks.prometheus import AgentSnapshot, InterfaceStats, MqttStats, SpoolStats

if TYPE_CHECKING:
    from agents.runtime import Agent

# Walking every live flow for the per-device external traffic holds the engine lock; above this
# many live flows a scrape reports ended flows only (they are accumulated as flows end).
LIVE_EXTERNAL_MAX_FLOWS = 50_000


def snapshot_of(agent: Agent) -> AgentSnapshot:
    capture: dict[str, InterfaceStats] = {}
    healthy = True
    for st in agent.sources:
        kernel_packets = kernel_drops = None
        if agent.config.capture.pcap is None:  # a file has no kernel counters
            cs = st.source.stats()
            kernel_packets, kernel_drops = cs.kernel_packets, cs.kernel_drops
        up = st.error is None and not (st.finished and agent.config.capture.pcap is None)
        healthy &= st.error is None
        capture[st.name] = InterfaceStats(st.packets, st.bytes, kernel_packets, kernel_drops, up)
    mqtt = None
    if agent.publisher is not None:
        p = agent.publisher
        mqtt = MqttStats(p.connected, p.published_total, p.publish_failures_total, p.reconnects_total)
    spool = None
    if agent.spool is not None:
        s = agent.spool
        spool = SpoolStats(s.depth(), s.bytes(), s.dropped, s.near_full)
    with agent.lock:
        return AgentSnapshot.from_engine(
            agent.engine,
            capture=capture,
            start_time=agent.counters.started,
            healthy=healthy,
            mqtt=mqtt,
            spool=spool,
            live_external=len(agent.engine.flows) <= LIVE_EXTERNAL_MAX_FLOWS,
        )
