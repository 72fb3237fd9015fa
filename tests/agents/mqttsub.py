"""A plain (paho) MQTT subscriber whose socket lives in a network namespace, for the live agent tests.

    sub = NamespaceSubscriber(ns, port, client_id="live-test")   # connects within 10 s, subscribes camwatch/#
    sub.online()             # the agent published its "online" status
    sub.alerts()             # the alerts so far, decoded
    sub.arrivals()           # the same with the wall-clock time each one arrived
    sub.close()

The socket is created inside namespace ``ns`` and stays there; paho's network thread then serves it
from the test process's own namespace.
"""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from tests.agents.netns import inside

__all__ = ["NamespaceSubscriber"]


class NamespaceSubscriber:
    """Subscribed to ``camwatch/#`` at ``127.0.0.1:port`` in namespace ``ns``; times each arrival."""

    def __init__(self, ns: str, port: int, *, client_id: str) -> None:
        self.messages: list[tuple[float, str, bytes]] = []  # (time.time() on arrival, topic, payload)
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        deadline = time.monotonic() + 10
        with inside(ns):  # the socket is created in the namespace and stays there
            while True:
                try:
                    self.client.connect("127.0.0.1", port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.client.subscribe("camwatch/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((time.time(), msg.topic, bytes(msg.payload)))

    def online(self) -> bool:
        """Whether the agent's status topic said "online"."""
        with self.lock:
            return any(t.endswith("/status") and b"online" in p for _, t, p in self.messages)

    def arrivals(self) -> list[tuple[float, dict[str, object]]]:
        """Every alert so far with the time it arrived (``time.time()``), in arrival order."""
        with self.lock:
            return [(at, json.loads(p)) for at, t, p in self.messages if "/alerts/" in t]

    def alerts(self) -> list[dict[str, object]]:
        """Every alert so far, in arrival order."""
        return [alert for _, alert in self.arrivals()]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
