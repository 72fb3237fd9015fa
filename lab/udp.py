"""The lab's UDP servers' asyncio side: a protocol that answers each datagram through a handler, and the
life of a server around it (bind, port, close, `async with`).

The answer is a pure function of the datagram and its sender (`DatagramHandler`), so the servers built
on it (`lab.services.UdpService`, `lab.webrtc.StunServer`) keep their logic testable
without sockets; this module only moves bytes between the socket and the handler.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Self, cast

__all__ = ["Address", "DatagramHandler", "DatagramResponder", "DatagramServer"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], bytes | None]


class DatagramResponder(asyncio.DatagramProtocol):
    """Answer each datagram with ``handler(data, peer)`` (None: no answer), sent back to its sender."""

    def __init__(self, name: str, handler: DatagramHandler) -> None:
        self.name = name
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is one, but does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = self.handler(data, (str(addr[0]), int(addr[1])))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("%s: %s", self.name, exc)


class DatagramServer(abc.ABC):
    """A UDP server's life: `start` binds it (subclasses say how, then call `_listen`), `close` or leaving
    ``async with`` closes it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def port(self) -> int:
        """The bound UDP port (the real one when constructed with 0)."""
        if self._transport is None:
            return self._port
        return int(self._transport.get_extra_info("sockname")[1])

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind the socket and start answering."""

    async def _listen(
        self,
        name: str,
        handler: DatagramHandler,
        *,
        sock: socket.socket | None = None,
        local_addr: Address | None = None,
    ) -> None:
        """Answer datagrams on `sock`, or on a new socket bound to `local_addr`, with `handler`."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DatagramResponder(name, handler), local_addr=local_addr, sock=sock
        )
        self._transport = transport

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
