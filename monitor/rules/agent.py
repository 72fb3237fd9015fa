"""The agent's own rules: what it says about itself, not about the cameras.

The agent raises them (agents/runtime.py), not the engine: they are declared here so the rule catalogue
(metrics, docs, the tests) knows every rule camwatch can raise.
"""

from __future__ import annotations

from monitor.alerts import Rule

# A capture source that fails leaves its network unwatched until it runs again: every other alert of that
# network is missing meanwhile, hence high.
CAPTURE_FAILED = Rule(
    "agent.capture_failed",
    "Capture source failed: its network is not watched until it is restarted",
    4,
    ("host",),
    ("error",),
)
RULES = (CAPTURE_FAILED,)
