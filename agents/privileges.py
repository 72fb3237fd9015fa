"""Dropping root after the capture sockets and the metrics listener are open.

Started as root, the agent opens what needs privileges (AF_PACKET sockets need CAP_NET_RAW; a
listener on a port below 1024 needs CAP_NET_BIND_SERVICE) and then becomes an unprivileged user:
open sockets keep working, and a compromised agent cannot do more than that user. Started as a
service user with only CAP_NET_RAW (systemd `AmbientCapabilities=CAP_NET_RAW`), there is nothing
to drop.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from pathlib import Path

log = logging.getLogger(__name__)


class PrivilegeError(RuntimeError):
    """The agent could not become the configured user."""


def drop_privileges(user: str | None, state_dir: Path) -> str:
    """Become `user` if running as root; returns the name of the user the agent now runs as.

    The state directory is handed to that user first, so the agent can keep writing its spool and
    inventory there.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    if user is None:
        log.warning("running as root: set run_as_user to drop privileges after start-up")
        return "root"
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise PrivilegeError(
            f"run_as_user {user!r} does not exist: create it (useradd --system {user}) or set run_as_user"
        ) from exc
    for path in [state_dir, *state_dir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    os.setgroups(groups)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - would mean the drop did not happen
        raise PrivilegeError("privileges could be regained after dropping them")
    log.info("dropped privileges: now running as %s (uid %d)", user, entry.pw_uid)
    return user
