"""The camera lab's network namespaces: build and remove them, find them, and enter one from a thread.

`build_network` turns a `LabDescription` (`lab.topology`) into namespaces, links, addresses and
routes with iproute2; `remove_network` deletes them. Only namespaces named exactly `<prefix>-<role>`
belong to a lab, so labs with other prefixes (and anything else on the host) are never touched.

`in_namespace` moves only the calling thread into a namespace (`setns` applies per thread for network
namespaces) and always moves it back: a socket created there stays in that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from lab.topology import LabDescription, check_prefix

__all__ = [
    "NETNS_DIR",
    "NetworkError",
    "build_network",
    "existing_namespaces",
    "in_namespace",
    "lab_namespaces",
    "namespace_pids",
    "remove_network",
]

NETNS_DIR: Final = "/run/netns"
NETNS_ETC: Final = "/etc/netns"
CLONE_NEWNET: Final = 0x40000000
_ROLE_RE: Final = re.compile(r"(gw|rec|office|inet|cam[0-9]{1,3})")


class NetworkError(RuntimeError):
    """A step of building or removing the lab's namespaces failed (the message names the command)."""


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"`{' '.join(argv)}` failed: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check)


def existing_namespaces() -> list[str]:
    """Names of every network namespace `ip netns` knows."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_namespaces(prefix: str) -> list[str]:
    """The namespaces of lab `prefix` that exist (named exactly `<prefix>-<role>`)."""
    check_prefix(prefix)
    start = f"{prefix}-"
    return [
        ns for ns in existing_namespaces() if ns.startswith(start) and _ROLE_RE.fullmatch(ns[len(start) :])
    ]


def namespace_pids(ns: str) -> list[int]:
    """Processes running in namespace `ns`."""
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _sysctl(ns: str, *settings: str) -> None:
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])


def _resolv_conf(ns: str, resolver: str) -> None:
    # `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    path = Path(NETNS_ETC, ns)
    path.mkdir(parents=True, exist_ok=True)
    (path / "resolv.conf").write_text(f"nameserver {resolver}\n", encoding="utf-8")


def build_network(desc: LabDescription) -> None:
    """Create the namespaces, links, addresses and routes of the lab; NetworkError names the failing step.

    Leftovers are not removed here: the caller checks that no namespace of the prefix exists.
    """
    gw = desc.gateway
    for ns in desc.namespaces:
        _ip("netns", "add", ns)
        # Before any link exists, so that every interface is created with IPv6 off.
        _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        _ip("-n", ns, "link", "set", "lo", "up")
    _sysctl(gw.namespace, "net.ipv4.ip_forward=1")
    g = ("-n", gw.namespace)
    _ip(*g, "link", "add", gw.bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
    _ip(*g, "link", "set", gw.bridge, "address", gw.bridge_mac)
    _ip(*g, "addr", "add", f"{gw.bridge_ip}/24", "dev", gw.bridge)
    _ip(*g, "link", "set", gw.bridge, "up")

    def attach(port: str, ns: str, mac: str, addresses: Sequence[str], prefix_len: int, via: str) -> None:
        # Both ends are created directly in their namespaces: no name ever exists in the caller's.
        _ip("link", "add", port, "netns", gw.namespace, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", ns, "link", "set", "eth0", "address", mac)
        for addr in addresses:
            _ip("-n", ns, "addr", "add", f"{addr}/{prefix_len}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "via", via)
        _resolv_conf(ns, desc.services.resolver)

    for cam in desc.cameras:
        port = f"p-{cam.name}"
        attach(port, cam.namespace, cam.mac, [cam.ip], 24, gw.bridge_ip)
        _ip(*g, "link", "set", port, "master", gw.bridge, "up")
    rec = desc.recorder
    attach("p-rec", rec.namespace, rec.mac, [rec.ip], rec.prefix_len, gw.bridge_ip)
    _ip(*g, "link", "set", "p-rec", "master", gw.bridge, "up")
    for host, ifname, gw_ip in (
        (desc.office, gw.office_if, gw.office_ip),
        (desc.internet, gw.inet_if, gw.inet_ip),
    ):
        attach(ifname, host.namespace, host.mac, [host.ip, *host.extra_ips], host.prefix_len, gw_ip)
        _ip(*g, "addr", "add", f"{gw_ip}/{host.prefix_len}", "dev", ifname)
        _ip(*g, "link", "set", ifname, "up")


def remove_network(prefix: str) -> list[str]:
    """Delete every namespace of lab `prefix` and its resolver files; returns the names deleted."""
    removed: list[str] = []
    for ns in lab_namespaces(prefix):
        _ip("netns", "del", ns, check=False)
        removed.append(ns)
    for role_dir in Path(NETNS_ETC).glob(f"{prefix}-*") if Path(NETNS_ETC).is_dir() else ():
        if _ROLE_RE.fullmatch(role_dir.name[len(prefix) + 1 :]):
            shutil.rmtree(role_dir, ignore_errors=True)
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_namespace(ns: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace `ns` (sockets made there stay there)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
