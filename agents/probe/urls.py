"""Camera RTSP URLs: where they point, and how to show them without credentials."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["DEFAULT_PORTS", "CameraUrl", "with_credentials"]

#: RTSP's registered ports (RFC 7826): 554, and 322 for RTSP over TLS.
DEFAULT_PORTS: Final = {"rtsp": 554, "rtsps": 322}


@dataclass(frozen=True, slots=True)
class CameraUrl:
    """An ``rtsp://`` or ``rtsps://`` URL, split: ``redacted`` is safe to log and to put in alerts."""

    scheme: str
    host: str
    port: int
    redacted: str  # the URL without user name and password
    username: str | None = None  # percent-decoded
    password: str | None = None  # percent-decoded

    @property
    def ip(self) -> str | None:
        """The host when it is an IP address literal, else None (a name)."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None

    @classmethod
    def parse(cls, url: str) -> CameraUrl:
        """Split ``url``; ValueError saying what is wrong (the message never repeats a password)."""
        if not isinstance(url, str) or not url:
            raise ValueError("the URL is empty")
        if any(ord(c) < 0x21 or c == "\x7f" for c in url):
            raise ValueError("the URL contains spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"the URL cannot be parsed ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"the scheme is '{scheme or 'none'}', not rtsp or rtsps")
        host = parts.hostname
        if not host:
            raise ValueError("the URL names no host")
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        redacted = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
        return cls(
            scheme=scheme,
            host=host,
            port=port if port is not None else DEFAULT_PORTS[scheme],
            redacted=redacted,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with ``username`` (and ``password``) put in, percent-encoded; unchanged without a user."""
    if username is None:
        return url
    parts = urlsplit(url)
    userinfo = quote(username, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))
