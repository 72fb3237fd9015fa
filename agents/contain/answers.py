"""DNS answers for containment's name rules: a rule module the agent adds to the engine's rulebook when
containment is on. It hands every address a watched device was told (each name on the chain from the
question, with the chain's TTL) to :meth:`agents.contain.agent.AgentContainment.learn`, which only queues:
the engine calls it with its lock held, on the capture thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monitor.alerts import Alert
from monitor.events import DnsAnswer, Event
from monitor.registry import Rulebook
from monitor.rules import RuleModule

__all__ = ["Learn", "with_answers"]

#: ``learn(name, address, ttl_seconds)``.
Learn = Callable[[str, str, float], None]


def with_answers(book: Rulebook, learn: Learn) -> Rulebook:
    """``book`` with a module that passes the DNS answers watched devices receive to ``learn``."""

    class ContainmentAnswers(RuleModule):
        consumes = (DnsAnswer,)

        def judge(self, event: Event) -> Sequence[Alert]:
            # Only answers a watched device received: the name rules are theirs, and an answer sent to
            # anyone else must not open the gateway for them.
            if isinstance(event, DnsAnswer) and self.site.watched(event.flow, not event.from_src) is not None:
                for resolved in event.addresses:
                    for name in resolved.names:
                        learn(name, resolved.address, float(resolved.ttl))
            return ()

    return Rulebook(book.rules, (*book.modules, ContainmentAnswers))
