"""Protocol analyzers: sans-I/O parsers of the few control protocols camwatch reads deeply.

Conventions (every module here follows them):

- one module per protocol; wire formats are frozen dataclasses with a ``parse(data: bytes)``
  classmethod (or a module-level ``parse`` function) that raises :class:`AnalyzerError` (a
  ``ValueError``) with a precise reason on malformed input, and never anything else;
- an optional ``looks_like(payload: bytes) -> bool`` is a cheap check used to recognise the protocol
  on a port it does not usually use; it must never raise;
- parse only what camwatch needs (names, identities, endpoints), keep the rest as raw bytes.
"""

from __future__ import annotations


class AnalyzerError(ValueError):
    """Malformed or truncated protocol data. ``protocol`` names the analyzer."""

    def __init__(self, protocol: str, reason: str) -> None:
        super().__init__(f"{protocol}: {reason}")
        self.protocol = protocol
        self.reason = reason

    def detached(self) -> AnalyzerError:
        """This error without its traceback and chained errors, to keep on a flow's parser state.

        A caught exception's traceback holds the frames it went through, and with them the whole packet
        batch and its decoded columns: an error kept for a flow's life kept its batch alive that long
        (benchmarks/mutated.py found it: the engine grew without bound under malformed HTTP).
        """
        self.__traceback__ = None
        self.__context__ = self.__cause__ = None
        return self
