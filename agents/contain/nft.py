"""Running nft: check and load scripts, read camwatch's table back, know whether we may.

The only module of the package that runs anything. Every change is an `nft -f` script on standard input
(one transaction each: all of it or nothing); ``check`` is `nft -c -f`, which the kernel validates without
committing (it needs CAP_NET_ADMIN too). ``command`` lets tests run nft inside a network namespace
(``("ip", "netns", "exec", NS, "nft")``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agents.contain.render import COMMENT_RE, FAMILY, TABLE
from monitor.policy import IPAddress

__all__ = ["CAP_NET_ADMIN", "Nft", "NftError", "SetElement", "TableState", "has_net_admin"]

CAP_NET_ADMIN: Final = 12
DEFAULT_TIMEOUT: Final = 30.0


class NftError(RuntimeError):
    """nft refused a script or could not run; the message has nft's own words."""


@dataclass(frozen=True, slots=True)
class SetElement:
    """One element of a set with timeouts: the address, and for a concatenation the transport and port;
    ``expires`` is the seconds left (None: no timeout)."""

    address: IPAddress
    transport: str | None = None
    port: int | None = None
    expires: float | None = None


@dataclass(frozen=True, slots=True)
class TableState:
    """camwatch's table as the kernel holds it now."""

    digest: str | None
    site: str | None
    counters: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Named counter -> (packets, bytes)."""
    sets: Mapping[str, tuple[SetElement, ...]] = field(default_factory=dict)
    """The dynamic sets (``quarantine_v4``, ``names_any_v6``, ...) and their elements."""

    def elements(self, kind: str) -> list[SetElement]:
        """Elements of both families' ``kind`` sets (``quarantine`` -> ``quarantine_v4`` and ``_v6``)."""
        return [e for v in (4, 6) for e in self.sets.get(f"{kind}_v{v}", ())]


def has_net_admin() -> bool:
    """Whether nft started by this process may change the ruleset: root, or CAP_NET_ADMIN in the
    effective *and* ambient sets (a non-root process passes capabilities to the programs it runs only
    through the ambient set: systemd's ``AmbientCapabilities=``)."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    caps = {
        k: int(v, 16)
        for k, _, v in (line.partition(":\t") for line in status.splitlines())
        if k.startswith("Cap")
    }
    bit = 1 << CAP_NET_ADMIN
    return bool(caps.get("CapEff", 0) & bit and caps.get("CapAmb", 0) & bit)


class Nft:
    """nft, run as a child process."""

    def __init__(self, command: Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        if command is None:
            path = shutil.which("nft") or next(
                (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
            )
            command = (path,) if path else ("nft",)
        self.command = tuple(command)
        self.timeout = timeout

    def available(self) -> bool:
        """True if the nft program can be found."""
        first = self.command[0]
        return os.access(first, os.X_OK) if os.sep in first else shutil.which(first) is not None

    def _run(self, args: Sequence[str], script: str | None = None) -> str:
        try:
            done = subprocess.run(
                [*self.command, *args],
                input=script,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise NftError(
                f"nft is not installed ({exc.filename}): install nftables (apt-get install nftables)"
            ) from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f"nft could not run: {exc}") from exc
        if done.returncode != 0:
            raise NftError(_first_lines(done.stderr) or f"nft exited with status {done.returncode}")
        return done.stdout

    def check(self, script: str) -> None:
        """Validate ``script`` against the running kernel without changing anything (`nft -c`)."""
        self._run(["-c", "-f", "-"], script)

    def load(self, script: str) -> None:
        """Load ``script`` as one transaction; on failure nothing changed."""
        self._run(["-f", "-"], script)

    def table(self) -> TableState | None:
        """camwatch's table, or None when it is not loaded."""
        try:
            text = self._run(["list", "table", FAMILY, TABLE])
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        match = COMMENT_RE.search(text)
        data = json.loads(self._run(["-j", "list", "table", FAMILY, TABLE]))
        counters: dict[str, tuple[int, int]] = {}
        sets: dict[str, tuple[SetElement, ...]] = {}
        for item in data.get("nftables", []):
            if "counter" in item:
                c = item["counter"]
                counters[str(c["name"])] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
            elif "set" in item and "timeout" in item["set"].get("flags", ()):
                s = item["set"]
                sets[str(s["name"])] = tuple(_element(e) for e in s.get("elem", ()))
        return TableState(
            digest=match.group(1) if match else None,
            site=match.group(2) if match else None,
            counters=counters,
            sets=sets,
        )


def _element(raw: object) -> SetElement:
    """An element of `nft -j` output: ``"10.0.0.1"``, ``{"elem": {"val": ..., "expires": s}}``, or a
    concatenation ``{"concat": ["10.0.0.1", "tcp", 443]}``."""
    expires: float | None = None
    value = raw
    if isinstance(value, dict) and "elem" in value:
        elem = value["elem"]
        expires = float(elem["expires"]) if "expires" in elem else None
        value = elem["val"]
    if isinstance(value, dict) and "concat" in value:
        addr, transport, port = value["concat"]
        return SetElement(ipaddress.ip_address(str(addr)), str(transport), int(port), expires)
    return SetElement(ipaddress.ip_address(str(value)), None, None, expires)


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    more = f" (+{len(lines) - limit} more lines)" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more
