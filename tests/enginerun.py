"""Run the engine over a capture file in tests (the same path `camwatch replay` takes)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agents.capture.pcap_source import PcapFileSource
from monitor.engine import Engine, EngineConfig
from monitor.flows import Flow, FlowConfig
from monitor.pcapfile import CaptureParser, PacketBatch
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.vendors.oui import VendorTable

# Long enough that no flow of the corpus is cut: nDPI's file mode has no timeouts.
NO_TIMEOUTS = FlowConfig(
    tcp_idle_timeout=1e9,
    udp_idle_timeout=1e9,
    other_idle_timeout=1e9,
    active_timeout=1e9,
    tcp_close_linger=1e9,
)

_VENDORS: VendorTable | None = None


def vendors() -> VendorTable:
    global _VENDORS
    if _VENDORS is None:
        _VENDORS = VendorTable.load()
    return _VENDORS


def run_engine(
    path: Path,
    flow_config: FlowConfig | None = None,
    policy: SitePolicy | None = None,
    batch_size: int = 65536,
    *,
    live: bool = False,
) -> tuple[Engine, list[Flow], list[dict[str, object]]]:
    """Replay `path`; returns the engine, every ended flow and the alert records. With ``live`` the engine is
    not finished: the flows still running come back instead (their analyzers' state is dropped at the end)."""
    return _run(PcapFileSource(path, batch_size).batches(), flow_config, policy, live)


def run_frames(
    frames: Iterable[tuple[int, bytes]],
    flow_config: FlowConfig | None = None,
    policy: SitePolicy | None = None,
    batch_size: int = 65536,
) -> tuple[Engine, list[Flow], list[dict[str, object]]]:
    """Replay Ethernet frames given as ``(ts_ns, frame)`` (written as a pcap in memory first)."""
    parser = CaptureParser("frames", batch_size)
    batches = [*parser.feed(pcap_bytes(list(frames))), *parser.flush()]
    return _run(batches, flow_config, policy)


def _run(
    batches: Iterable[PacketBatch],
    flow_config: FlowConfig | None,
    policy: SitePolicy | None,
    live: bool = False,
) -> tuple[Engine, list[Flow], list[dict[str, object]]]:
    engine = Engine(
        policy or SitePolicy.default(), vendors(), EngineConfig(flows=flow_config or FlowConfig())
    )
    flows: list[Flow] = []
    alerts: list[dict[str, object]] = []
    for batch in batches:
        ev = engine.feed(batch)
        flows += ev.flows
        alerts += [a.to_record() for a in ev.alerts]
    if live:
        return engine, list(engine.flows.flows()), alerts
    ev = engine.finish()
    flows += ev.flows
    alerts += [a.to_record() for a in ev.alerts]
    return engine, flows, alerts
