"""camwatch analysis engine: bytes and timestamps in, events out (no I/O)."""

__version__ = "0.1.0"
