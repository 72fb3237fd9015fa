"""Dropping root after the capture sockets and the metrics listener are open.

Started as root, the agent opens what needs privileges (AF_PACKET sockets need CAP_NET_RAW; a
listener on a port below 1024 needs CAP_NET_BIND_SERVICE; root-only secret and capture files) and
then becomes an unprivileged user: open sockets and files keep working, and a compromised agent
cannot do more than that user. Started as a service user with only CAP_NET_RAW (systemd
`AmbientCapabilities=CAP_NET_RAW`), there is nothing to drop.

The drop (:func:`drop_privileges`), in this order, while still root:

1. the state directory is handed to the user without ever following a link: the user owns that
   directory between two starts, so whatever it holds is untrusted. A symbolic link, a hard-linked
   file or anything that is neither a regular file nor a directory would hand a root file to the
   user (``chown`` follows links), so such an entry is removed with a log line;
2. every capability is dropped from the bounding set, so nothing the agent runs afterwards (the
   stream probe's children) can regain one through a file capability or a set-user-id program;
3. supplementary groups, group and user change; ``PR_SET_NO_NEW_PRIVS`` is set, and getting root
   back must fail.
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

__all__ = ["PrivilegeError", "drop_privileges", "hand_over", "user_exists"]

# prctl(2) options (linux/prctl.h).
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
#: Deeper directories in the state directory are not handed over (the agent makes two levels:
#: snapshots/<camera>); a deep tree the user made is the user's already, and this bounds the walk.
MAX_DEPTH: Final = 8


class PrivilegeError(RuntimeError):
    """The agent could not become the configured user."""


def user_exists(user: str) -> bool:
    """Is there a local account named ``user``?"""
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def drop_privileges(user: str | None, state_dir: Path) -> str:
    """Become `user` if running as root; returns the name of the user the agent now runs as.

    The state directory is handed to that user first (:func:`hand_over`), so the agent can keep writing
    its outbox and inventory there.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    if user is None:
        # The configuration's own warning (run_as_user is null) has said so already, once.
        log.debug("run_as_user is null: staying root")
        return "root"
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise PrivilegeError(
            f"run_as_user {user!r} does not exist: create it (useradd --system {user}) or set run_as_user"
        ) from exc
    hand_over(state_dir, entry.pw_uid, entry.pw_gid)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    _drop_bounding_set()
    os.setgroups(groups)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    _set_no_new_privs()
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - would mean the drop did not happen
        raise PrivilegeError("privileges could be regained after dropping them")
    log.info("dropped privileges: now running as %s (uid %d)", user, entry.pw_uid)
    return user


# --------------------------------------------------------------------------------------------------
# The state directory


def hand_over(state_dir: Path, uid: int, gid: int) -> list[str]:
    """Give ``state_dir`` and what it holds to ``uid:gid`` without following links; returns the entries
    removed (each logged).

    Every entry is opened relative to its directory's descriptor with ``O_NOFOLLOW`` and changed through
    that descriptor, so swapping a name for a link between the check and the change does not help: the
    inode changed is the one checked. ``state_dir`` itself is the configured path (root's choice) and may
    be reached through a link.
    """
    removed: list[str] = []
    top = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _hand_over_dir(top, str(state_dir), uid, gid, 0, removed)
    finally:
        os.close(top)
    return removed


def _hand_over_dir(fd: int, where: str, uid: int, gid: int, depth: int, removed: list[str]) -> None:
    os.fchown(fd, uid, gid)
    if depth >= MAX_DEPTH:
        log.warning("%s: deeper than %d levels: its content is not handed over", where, MAX_DEPTH)
        return
    for name in os.listdir(fd):
        path = f"{where}/{name}"
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:  # replaced by a link or a file since: handled at the next start
                log.warning("%s: not handed over (%s)", path, exc.strerror or exc)
                continue
            try:
                _hand_over_dir(child, path, uid, gid, depth + 1, removed)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode) and _hand_over_file(fd, name, path, uid, gid):
            continue
        else:
            _remove(fd, name, path, st.st_mode, removed)


def _hand_over_file(fd: int, name: str, path: str, uid: int, gid: int) -> bool:
    """Change the owner of one regular file through its descriptor; False if it is not one we may."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        child = os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        log.warning("%s: not handed over (%s)", path, exc.strerror or exc)
        return True  # nothing to remove: it could not even be opened (a link: ELOOP is removed next start)
    try:
        st = os.fstat(child)
        # A second name for the inode may be a root file's: the user could then write to it.
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        os.fchown(child, uid, gid)
    finally:
        os.close(child)
    return True


def _remove(fd: int, name: str, path: str, mode: int, removed: list[str]) -> None:
    what = (
        "a symbolic link"
        if stat.S_ISLNK(mode)
        else "a file with other names (hard links)"
        if stat.S_ISREG(mode)
        else "not a regular file or directory"
    )
    try:
        os.unlink(name, dir_fd=fd)
    except OSError as exc:
        log.error("%s is %s, which the agent never makes, and cannot be removed: %s", path, what, exc)
        return
    removed.append(path)
    log.warning(
        "%s was %s, which the agent never makes: removed rather than handed to the service user", path, what
    )


# --------------------------------------------------------------------------------------------------
# Capabilities


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to call into (not Linux)
        return None


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text().strip())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one as of Linux 5.9


def _drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP: done while still root)."""
    libc = _libc()
    if libc is None:
        return
    failed: list[int] = []
    for cap in range(_last_cap() + 1):
        if libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != 22:  # EINVAL: a capability this kernel does not have
                failed.append(cap)
    if failed:
        # Without CAP_SETPCAP (a restricted container) the set stays as it is; the drop still happens.
        log.warning(
            "cannot drop %d capabilities from the bounding set (%s): continuing with the user change",
            len(failed),
            os.strerror(ctypes.get_errno()) or "no CAP_SETPCAP",
        )


def _set_no_new_privs() -> None:
    """No execve() of this process or its children can gain privileges any more."""
    libc = _libc()
    if libc is None:
        return
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0) != 0:
        log.warning("cannot set no_new_privs: %s", os.strerror(ctypes.get_errno()))
