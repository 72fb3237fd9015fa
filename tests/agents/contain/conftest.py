"""Fixtures of the containment tests: a forwarding gateway in namespaces (root and nft)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.agents.contain.gateway_site import Site, gateway_site
from tests.agents.netns import skip_reason


def nft_skip_reason() -> str | None:
    """Why real nftables cannot be used here, or None."""
    reason = skip_reason()
    if reason:
        return reason
    if shutil.which("nft") is None and not os.access("/usr/sbin/nft", os.X_OK):
        return "nft is not installed (apt-get install nftables; scripts/setup-system.sh does)"
    return None


needs_nft = pytest.mark.skipif(nft_skip_reason() is not None, reason=nft_skip_reason() or "")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The gateway and its neighbours, shared by a module's tests (each test starts by loading what it
    needs: the table is the test's state)."""
    reason = nft_skip_reason()
    if reason:
        pytest.skip(reason)
    with gateway_site() as built:
        yield built
