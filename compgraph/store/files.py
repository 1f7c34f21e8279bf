"""What the file system says about an embedded store: write failures and who holds it.

A write the file system refuses (no space left, a read-only file system, a quota) ends a
command with one line naming the cause and the store, never with the engine's own
message about whichever statement happened to fail (:func:`disk_error`). The engine may
learn of it late, in a background page flush, and fail the next statement for a reason
that does not say why; :func:`disk_error` therefore also looks at the free space left.

A store directory is locked by the process that has it open (the engine's
``database.lck``, an ``fcntl`` lock): :func:`holder` finds that process through
``/proc/locks`` so that the error can name it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import NamedTuple

from compgraph.errors import DiskWriteError

RESUME = "run the same command again to resume"
LOW_SPACE = 1 << 20
"""Free bytes below which a failed write is put down to a full disk (the engine writes
pages of 64 KiB and more)."""

_CAUSES = {
    errno.ENOSPC: ("No space left on device", "no space left on device writing {where}; free space and " + RESUME),
    errno.EROFS: ("Read-only file system", "the file system of {where} is read-only; remount it read-write and " + RESUME),
    errno.EDQUOT: ("Disk quota exceeded", "disk quota exceeded writing {where}; free space or raise the quota and "
                   + RESUME),
}


def disk_message(code: int, where: str | os.PathLike) -> str | None:
    """The one-line message for a refused write (None: not a file-system refusal)."""
    cause = _CAUSES.get(code)
    return cause[1].format(where=where) if cause else None


def disk_error(messages: list[str], where: str | os.PathLike, *, unexplained: bool = True) -> DiskWriteError | None:
    """The :class:`DiskWriteError` behind a failed store operation, if the file system
    refused a write: one of ``messages`` (the engine's exception chain) names the
    cause, or — when the engine gave no specific reason (``unexplained``: not a syntax
    error, a duplicate key, a missing parameter) — the store's file system has less than
    :data:`LOW_SPACE` bytes free."""
    for code, (text, _) in _CAUSES.items():
        if any(text in m for m in messages):
            return DiskWriteError(disk_message(code, where))
    if unexplained and free_bytes(where) < LOW_SPACE:
        return DiskWriteError(disk_message(errno.ENOSPC, where))
    return None


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (its nearest
    existing ancestor's); a very large number when it cannot be told."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


class Holder(NamedTuple):
    pid: int
    command: str
    """Its command line, shortened; "" when it cannot be read."""


def holder(lock_file: str | os.PathLike) -> Holder | None:
    """The process holding an ``fcntl`` lock on ``lock_file`` (None when none or unknown)."""
    try:
        st = os.stat(lock_file)
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 2910 fd:01:1234 0 EOF" (OFD locks show pid -1)
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            device = os.makedev(int(major, 16), int(minor, 16))
            same = int(inode) == st.st_ino and device == st.st_dev
        except ValueError:
            continue
        if same and pid > 0 and pid != os.getpid():
            return Holder(pid, command_line(pid))
    return None


def command_line(pid: int) -> str:
    """A process's command line as :func:`shown_command` gives it ("" when unreadable)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    return shown_command([a.decode(errors="replace") for a in argv if a])


def shown_command(args: list[str], limit: int = 80) -> str:
    """A command line in one line of at most ``limit`` characters, ``python -m
    compgraph.cli`` and a ``compgraph`` script path shown as ``compgraph``."""
    for i, arg in enumerate(args):
        if arg in ("compgraph.cli", "compgraph") and i and args[i - 1] == "-m":
            args = ["compgraph", *args[i + 1:]]
            break
        if Path(arg).name == "compgraph":
            args = ["compgraph", *args[i + 1:]]
            break
    text = " ".join(" ".join(a.split()) for a in args)
    return text if len(text) <= limit else text[: limit - 1] + "…"


SERVED = "serving.json"
"""The file ``compgraph serve`` leaves in a store it serves: its pid and Bolt URI."""


def served_at(root: str | os.PathLike, pid: int) -> str | None:
    """The Bolt URI process ``pid`` serves the store at ``root`` on (None: it does not)."""
    try:
        info = json.loads((Path(root) / SERVED).read_text())
    except (OSError, ValueError):
        return None
    return info.get("uri") if info.get("pid") == pid else None


def in_use(root: str | os.PathLike, lock_file: str | os.PathLike) -> str:
    """The message for a store another process holds: who (when it can be told) and what
    to do."""
    who = holder(lock_file)
    if who is None:
        return (f"store {root} is in use by another process; wait for it to end or stop it, "
                f"or serve the store to both (compgraph serve --store {root})")
    named = f"pid {who.pid}: {who.command}" if who.command else f"pid {who.pid}"
    uri = served_at(root, who.pid)
    if uri:
        return f"store {root} is served by another process ({named}); use --store {uri}"
    return (f"store {root} is in use by another process ({named}); wait for it to end or stop it "
            f"(a stopped job resumes when run again); to read while a job writes, run both through "
            f"compgraph serve --store {root}")
