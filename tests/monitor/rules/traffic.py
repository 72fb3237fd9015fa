"""A small camera site for the attack rules' tests: who is who, TCP exchanges, and the engine run over them.

The site is the demo site's policy (examples/site-policy.yaml: 10.20.0.0/24 watched, the recorder
10.20.0.2 the only viewer, the gateway 10.20.0.1 the resolver). Request shapes come from lab/attacks.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab import personas
from monitor.policy import SitePolicy
from tests.enginerun import run_frames

NS = 1_000_000_000
MS = NS // 1000
T0 = 1_700_000_000 * NS
POLICY = SitePolicy.from_yaml(
    (Path(__file__).parents[3] / "examples" / "site-policy.yaml").read_text(), "site-policy.yaml"
)


@dataclass(frozen=True)
class Host:
    ip: str
    mac: str

    @property
    def mac_id(self) -> str:
        return self.mac.replace(":", "-")


GW = Host("10.20.0.1", "02:00:00:00:00:01")
RECORDER = Host("10.20.0.2", "00:11:32:00:00:02")
HIK = Host("10.20.0.11", "44:19:b6:00:00:11")
DAHUA = Host("10.20.0.12", "3c:ef:8c:00:00:12")
XM = Host("10.20.0.42", "02:12:41:00:05:01")  # a white-label Xiongmai board (locally administered MAC)
ATTACKER = Host("198.51.100.66", GW.mac)  # on the Internet: its frames come through the gateway
OFFICE = Host("10.20.5.10", GW.mac)  # another site network, routed


def exchange(
    t: int, client: Host, server: Host, cport: int, sport: int, turns: list[tuple[bytes, bytes]]
) -> list[tuple[int, bytes]]:
    """A TCP connection: handshake, request/answer turns, FIN both ways (1 ms apart)."""
    return personas.tcp_exchange(t, client.mac, server.mac, client.ip, server.ip, cport, sport, turns)


def alerts(frames: Iterable[tuple[int, bytes]], batch_size: int = 65536) -> list[dict[str, object]]:
    """The alert records the engine raises on these frames (the demo site's policy)."""
    _, _, records = run_frames(sorted(frames, key=lambda f: f[0]), policy=POLICY, batch_size=batch_size)
    return records


def of_rule(records: list[dict[str, object]], rule: str) -> list[dict[str, object]]:
    return [r for r in records if r["rule"]["id"] == rule]  # type: ignore[index]
