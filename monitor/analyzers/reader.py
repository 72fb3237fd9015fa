"""A bounds-checked big-endian reader shared by the binary analyzers: every overrun is an AnalyzerError."""

from __future__ import annotations

from typing import ClassVar, Self

from monitor.analyzers import AnalyzerError


class ByteReader:
    """Reads over ``data[pos:end]``; subclasses set ``protocol`` (the name in the errors)."""

    __slots__ = ("data", "end", "pos", "what")
    protocol: ClassVar[str] = "binary"

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.end - self.pos:
            raise AnalyzerError(
                self.protocol, f"{self.what}: {field} needs {n} bytes, {self.end - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, len_size: int, field: str) -> Self:
        """A sub-reader (of this reader's class) over a length-prefixed vector; this reader moves past it."""
        n = self.uint(len_size, f"{field} length")
        if n > self.end - self.pos:
            raise AnalyzerError(
                self.protocol, f"{self.what}: {field} length {n} exceeds the {self.left()} bytes left"
            )
        sub = type(self)(self.data, f"{self.what} {field}", self.pos, self.pos + n)
        self.pos += n
        return sub
