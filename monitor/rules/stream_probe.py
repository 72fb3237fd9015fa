"""The stream probe's rules (``agents/probe``): the camera's own picture, watched over RTSP.

The agent's probe raises them, not the engine: they are declared here so the rule catalogue (metrics,
docs, the tests) knows every rule camwatch can raise.
"""

from __future__ import annotations

from monitor.alerts import Rule

STREAM_UNAVAILABLE = Rule(
    "stream.unavailable", "Camera stream cannot be opened or delivers no video", 3, ("network",), ("error",)
)
STREAM_FROZEN = Rule("stream.frozen", "Camera image is frozen", 3, ("host",), ("error",))
STREAM_BLACK = Rule("stream.black", "Camera image is black", 3, ("host",), ("error",))
# A covered or defocused lens is the classic way to blind a camera: tampering, hence intrusion detection.
STREAM_COVERED = Rule(
    "stream.covered",
    "Camera image is covered or has lost all detail",
    4,
    ("intrusion_detection",),
    ("indicator",),
)
RULES = (STREAM_UNAVAILABLE, STREAM_FROZEN, STREAM_BLACK, STREAM_COVERED)
