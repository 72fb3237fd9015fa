"""Two network namespaces joined by a veth pair, for live-capture tests (needs root).

    from tests.agents.netns import netns_pair  # the pytest fixture (module scope)

    def test_x(netns_pair: NetnsPair) -> None:
        with inside(netns_pair.ns_b):
            source = RingSource(netns_pair.if_b).open()   # the socket lives in namespace B
        send_frames(netns_pair.ns_a, netns_pair.if_a, [frame])

Namespaces are ``cw-test-a-<pid>`` and ``cw-test-b-<pid>``; the interfaces inside them are ``cwveth-a``
and ``cwveth-b`` with fixed MACs and addresses, up, IPv6 off (no router solicitations or MLD reports
to filter out). Deleting the namespaces deletes the veth pair. Without root or ``ip netns`` the fixture
skips with the reason.

:func:`inside` is the lab's :func:`lab.netns.in_namespace`: it moves only the calling thread into a
namespace (``setns`` applies per thread for network namespaces) and always moves it back, so a socket
created there stays in that namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from lab.netns import NETNS_DIR, in_namespace

__all__ = [
    "NetnsPair",
    "create_pair",
    "delete_pair",
    "exec_in",
    "inside",
    "netns_pair",
    "raw_socket",
    "send_frames",
    "skip_reason",
    "veth_pair",
]

ETH_P_ALL = 0x0003

# The tests' name for the lab's setns helper (one implementation for both).
inside = in_namespace


@dataclass(frozen=True, slots=True)
class NetnsPair:
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    mac_a: str
    mac_b: str
    addr_a: str
    addr_b: str
    prefix: int = 24


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def skip_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "live capture tests need root (CAP_NET_ADMIN for namespaces, CAP_NET_RAW for capture)"
    if shutil.which("ip") is None:
        return "live capture tests need iproute2's `ip` (ip netns)"
    probe = _ip("netns", "list", check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip() or probe.returncode}"
    return None


def exec_in(ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` (``ip netns exec``)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check, timeout=timeout
    )


def create_pair(tag: str | None = None) -> NetnsPair:
    """Create the namespaces and the veth pair (deleting leftovers with the same names first)."""
    tag = tag or str(os.getpid())
    pair = NetnsPair(
        ns_a=f"cw-test-a-{tag}",
        ns_b=f"cw-test-b-{tag}",
        if_a="cwveth-a",
        if_b="cwveth-b",
        mac_a="02:cc:00:00:00:0a",
        mac_b="02:cc:00:00:00:0b",
        addr_a="10.199.0.1",
        addr_b="10.199.0.2",
    )
    delete_pair(pair)
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", ns)
            # Before the veth exists, so that it is created with IPv6 off (no DAD, RS or MLD noise).
            exec_in(
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
                check=False,
            )
        _ip("link", "add", pair.if_a, "netns", pair.ns_a, "type", "veth", "peer", "name", pair.if_b, "netns",
            pair.ns_b)  # fmt: skip
        for ns, ifname, mac, addr in (
            (pair.ns_a, pair.if_a, pair.mac_a, pair.addr_a),
            (pair.ns_b, pair.if_b, pair.mac_b, pair.addr_b),
        ):
            _ip("-n", ns, "link", "set", "dev", ifname, "address", mac)
            _ip("-n", ns, "addr", "add", f"{addr}/{pair.prefix}", "dev", ifname)
            _ip("-n", ns, "link", "set", "dev", ifname, "up")
            _ip("-n", ns, "link", "set", "dev", "lo", "up")
    except BaseException:
        delete_pair(pair)
        raise
    _wait_up(pair)
    return pair


def _wait_up(pair: NetnsPair, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _ip("-n", pair.ns_b, "-o", "link", "show", "dev", pair.if_b).stdout
        if "LOWER_UP" in out:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{pair.if_b} in {pair.ns_b} did not come up")


def delete_pair(pair: NetnsPair) -> None:
    """Delete both namespaces (and so the veth pair); no error if they are gone."""
    for ns in (pair.ns_a, pair.ns_b):
        if os.path.exists(os.path.join(NETNS_DIR, ns)):
            _ip("netns", "del", ns, check=False)


@contextmanager
def veth_pair(tag: str | None = None) -> Iterator[NetnsPair]:
    pair = create_pair(tag)
    try:
        yield pair
    finally:
        delete_pair(pair)


@pytest.fixture(scope="module")
def netns_pair() -> Iterator[NetnsPair]:
    """Namespaces A and B joined by a veth pair; skips when that is impossible here."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        pair = create_pair()
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"cannot create network namespaces: {detail}")
    try:
        yield pair
    finally:
        delete_pair(pair)


def raw_socket(ns: str, ifname: str) -> socket.socket:
    """A packet socket bound to ``ifname`` in namespace ``ns``, for sending whole frames."""
    with inside(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((ifname, ETH_P_ALL))
        except OSError:
            sock.close()
            raise
    return sock


def send_frames(ns: str, ifname: str, frames: Iterable[bytes], *, gap_s: float = 0.0) -> int:
    """Write each frame as is on ``ifname`` in namespace ``ns``; returns the count."""
    count = 0
    with raw_socket(ns, ifname) as sock:
        for frame in frames:
            sock.send(frame)
            count += 1
            if gap_s:
                time.sleep(gap_s)
    return count
