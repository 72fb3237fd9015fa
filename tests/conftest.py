"""Suite-wide pytest plugins: `tests.envskip` (CI refuses skipped tests) and pytester (to test it); and the
cycle collector put back after each test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest_plugins = ("tests.envskip", "pytester")


@pytest.fixture(autouse=True)
def _cycle_collector() -> Iterator[None]:
    # `camwatch replay` run in-process (cli.main) tunes the collector for the rest of its process: start-up
    # objects frozen out of its scans (gc.get_objects() no longer lists them) and a higher threshold. A
    # test after it must see the collector as a fresh process does.
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
