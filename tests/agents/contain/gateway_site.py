"""A forwarding gateway and its neighbours in network namespaces, for containment tests (root).

    cam  10.91.0.11, .12 ── cam0 ┐                ┌ inet0 ── inet 203.0.113.10, .20; 198.51.100.7, .53
    rec  10.92.0.2      ── rec0 ─┤ gw (forwards) ─┤
                                  └ off0 ── off 10.93.0.10 (office: private, not monitored)

The gateway routes between all of them (no bridge: every conversation crosses its forward hook). Each
leaf namespace runs small servers on every address: TCP (accept, send ``ok``, close) on the ports of
:data:`TCP_PORTS` and UDP echo on :data:`UDP_PORTS`. :meth:`Site.tcp` and :meth:`Site.udp` try a
conversation from one namespace and source address and say whether it got through.

Namespace names carry the process id and a counter, so parallel runs (other worktrees) never collide;
:func:`gateway_site` deletes them whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from agents.contain.nft import Nft
from lab.netns import in_namespace

TCP_PORTS: Final = (53, 554, 7000, 8443, 8444, 8666, 9000)
UDP_PORTS: Final = (53, 123, 124, 5004, 6002)
POLICY: Final = """\
site: cwtest
monitored: {networks: [10.91.0.0/24, 10.92.0.0/24]}
resolvers: [198.51.100.53]
viewers: [10.92.0.2]
known_devices: []
allow:
  - {name: ntp and api, to: [198.51.100.7/32], ports: [123/udp, 8443/tcp]}
  - {name: vms, to: [203.0.113.20/32]}
"""
CAM1, CAM2, REC, OFFICE = "10.91.0.11", "10.91.0.12", "10.92.0.2", "10.93.0.10"
CLOUD, VMS, API, RESOLVER = "203.0.113.10", "203.0.113.20", "198.51.100.7", "198.51.100.53"
_counter = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Site:
    """The namespaces (role -> name) and their servers."""

    tag: str
    ns: dict[str, str]
    addresses: dict[str, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def gw(self) -> str:
        return self.ns["gw"]

    def nft(self) -> Nft:
        """nft in the gateway namespace."""
        return Nft(("ip", "netns", "exec", self.gw, "nft"))

    def tcp(self, role: str, src: str, dst: str, port: int, timeout: float = 0.6) -> bool:
        """Did a TCP connection from ``src`` (in namespace ``role``) to ``dst:port`` get its ``ok``?"""
        with in_namespace(self.ns[role]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(timeout)
            try:
                sock.bind((src, 0))
                sock.connect((dst, port))
                return sock.recv(16) == b"ok"
            except OSError:
                return False

    def udp(self, role: str, src: str, dst: str, port: int, timeout: float = 0.6) -> bool:
        """Did a datagram from ``src`` to ``dst:port`` come back?"""
        with in_namespace(self.ns[role]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(timeout)
            try:
                sock.bind((src, 0))
                sock.sendto(b"ping", (dst, port))
                data, peer = sock.recvfrom(64)
                return data == b"ping" and peer == (dst, port)
            except OSError:
                return False

    def serve(self) -> None:
        """Start the servers of every leaf namespace (threads; stopped by :meth:`close`)."""
        for role in ("cam", "rec", "inet", "off"):
            with in_namespace(self.ns[role]):
                socks = []
                for port in TCP_PORTS:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", port))
                    s.listen(64)
                    socks.append(s)
                # UDP per address: a reply must come from the address that was asked (a socket on
                # 0.0.0.0 answers from whatever address the route back picks).
                for address in self.addresses[role]:
                    for port in UDP_PORTS:
                        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        u.bind((address, port))
                        socks.append(u)
            thread = threading.Thread(target=self._loop, args=(socks,), name=f"serve-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, socks: list[socket.socket]) -> None:
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    with contextlib.suppress(OSError):
                        if ready.type == socket.SOCK_STREAM:
                            conn, _ = ready.accept()
                            with conn:
                                conn.sendall(b"ok")
                        else:
                            data, peer = ready.recvfrom(2048)
                            ready.sendto(data, peer)
        finally:
            for s in socks:
                s.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)


def build() -> Site:
    """Create the namespaces, links, addresses and routes (deleted again if a step fails)."""
    tag = f"{os.getpid() % 100_000}{next(_counter)}"
    site = Site(tag, {role: f"cwc{tag}-{role}" for role in ("gw", "cam", "rec", "inet", "off")})
    try:
        for name in site.ns.values():
            _ip("netns", "add", name)
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            _ip("-n", name, "link", "set", "lo", "up")
        gw = site.gw
        subprocess.run(
            ["ip", "netns", "exec", gw, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        legs = {
            "cam": ("cam0", ["10.91.0.1/24"], [f"{CAM1}/24", f"{CAM2}/24"], "10.91.0.1"),
            "rec": ("rec0", ["10.92.0.1/24"], [f"{REC}/24"], "10.92.0.1"),
            "inet": (
                "inet0",
                ["203.0.113.1/24", "198.51.100.1/24"],
                [f"{CLOUD}/24", f"{VMS}/24", f"{API}/24", f"{RESOLVER}/24"],
                "203.0.113.1",
            ),
            "off": ("off0", ["10.93.0.1/24"], [f"{OFFICE}/24"], "10.93.0.1"),
        }
        for role, (port, gw_addrs, addrs, via) in legs.items():
            leaf = site.ns[role]
            _ip("link", "add", port, "netns", gw, "type", "veth", "peer", "name", "eth0", "netns", leaf)
            for addr in gw_addrs:
                _ip("-n", gw, "addr", "add", addr, "dev", port)
            _ip("-n", gw, "link", "set", port, "up")
            for addr in addrs:
                _ip("-n", leaf, "addr", "add", addr, "dev", "eth0")
            site.addresses[role] = [a.split("/")[0] for a in addrs]
            _ip("-n", leaf, "link", "set", "eth0", "up")
            _ip("-n", leaf, "route", "add", "default", "via", via)
        site.serve()
    except BaseException:
        site.close()
        raise
    return site


@contextlib.contextmanager
def gateway_site() -> Iterator[Site]:
    site = build()
    try:
        yield site
    finally:
        site.close()
