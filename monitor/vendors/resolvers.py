"""Public resolvers reached over DNS over TLS or HTTPS (``data/resolvers.yaml``), by name and address."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True, slots=True)
class PublicResolvers:
    """Names (TLS SNI) and addresses of public DoH/DoT services, each mapped to its provider's name."""

    hosts: dict[str, str]
    addresses: dict[str, str]

    def by_name(self, name: str | None) -> str | None:
        """The provider serving DNS under this TLS server name, if it is a known one."""
        return self.hosts.get(name.lower().rstrip(".")) if name else None

    def by_address(self, ip: str) -> str | None:
        """The provider whose resolver answers at this address, if it is a known one."""
        return self.addresses.get(ip)

    @classmethod
    def from_mapping(cls, data: object) -> PublicResolvers:
        """Read the file's structure; raises ValueError naming the entry that is wrong."""
        if (
            not isinstance(data, dict)
            or data.get("version") != 1
            or not isinstance(data.get("resolvers"), list)
        ):
            raise ValueError("resolvers: need 'version: 1' and a 'resolvers' list")
        hosts: dict[str, str] = {}
        addresses: dict[str, str] = {}
        for i, entry in enumerate(data["resolvers"]):
            where = f"resolvers[{i}]"
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), str)
                or not entry.get("source")
            ):
                raise ValueError(f"{where}: needs a name and a source")
            for host in entry.get("hosts", []):
                hosts[str(host).lower()] = entry["name"]
            for addr in entry.get("addresses", []):
                addresses[str(ipaddress.ip_address(str(addr)))] = entry["name"]
        return cls(hosts, addresses)


@cache
def public_resolvers() -> PublicResolvers:
    """The shipped table."""
    text = resources.files("monitor.vendors").joinpath("data/resolvers.yaml").read_text(encoding="utf-8")
    return PublicResolvers.from_mapping(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
