"""The replay progress line: shown on a terminal, silent when piped."""

from __future__ import annotations

import io

from agents.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_and_cleared_at_the_end() -> None:
    out = Tty()
    p = Progress(out, interval_s=0.0)
    p.update("site.pcap", 50, 200, 12_345)
    assert "\rsite.pcap:  25.0%  12,345 packets" in out.getvalue()
    p.clear()
    assert out.getvalue().endswith("\r\x1b[K")


def test_progress_is_silent_when_piped() -> None:
    out = io.StringIO()
    p = Progress(out, interval_s=0.0)
    p.update("site.pcap", 50, 200, 1)
    p.clear()
    assert out.getvalue() == ""
