"""The ``camwatch learn`` arguments, kept apart from the work (agents/learn/command.py) so that building
the CLI's parser imports nothing heavy: ``camwatch replay`` starts as fast as before."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``learn`` subcommand's arguments (registered by agents/cli.py)."""
    p = sub.add_parser(
        "learn",
        help="propose a site policy from captures or a learning agent's state (docs/learning.md)",
        description="Learn what the watched devices normally do and write it as a site policy to review.",
    )
    p.add_argument("captures", nargs="*", metavar="CAPTURE", help="pcap or pcapng files, in capture order")
    p.add_argument("--policy", metavar="FILE", help="the base site policy (required to learn)")
    p.add_argument("--out", metavar="FILE", help="where to write the learned policy")
    p.add_argument(
        "--from-state",
        metavar="DIR",
        help="learn from a learning agent's state directory instead of captures",
    )
    p.add_argument("--alerts", metavar="FILE", help="write the alerts behind the findings as JSON lines")
    p.add_argument(
        "--mud", metavar="DIR", help="also write RFC 8520 MUD files, one per device model or vendor"
    )
    p.add_argument(
        "--mud-url",
        metavar="URL",
        default="https://camwatch.invalid/mud/",
        help="where the MUD files will be served (default: https://camwatch.invalid/mud/)",
    )
    p.add_argument(
        "--min-flows",
        type=int,
        default=3,
        metavar="N",
        help="flows a destination needs to be learned (default 3)",
    )
    p.add_argument(
        "--min-span",
        default="10m",
        metavar="DURATION",
        help="first to last flow a destination needs, e.g. 10m, 1h, 0 (default 10m)",
    )
    p.add_argument(
        "--max-rules",
        type=int,
        metavar="N",
        default=1000,
        help="most destinations a proposal may hold; more is refused (default 1000)",
    )
    p.add_argument(
        "--gateway", default="learn", metavar="NAME", help="gateway name in the alerts' observer.name"
    )
    p.add_argument(
        "--relearn",
        nargs="+",
        metavar="MAC",
        help="ask the agent of --from-state DIR to learn these devices again (after a firmware change)",
    )
