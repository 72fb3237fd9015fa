"""The one HTTP/1.1 response form the lab's small servers send: a whole body, then the connection closes."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["encode_response"]


def encode_response(status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """Status line, `headers`, Content-Length and `Connection: close`, then `body` (head in Latin-1)."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
