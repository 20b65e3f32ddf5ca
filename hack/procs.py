"""Process bookkeeping for the dev tooling (localstack.py).

One job: remember processes we started (pid files that survive the starting
process) and stop them reliably, including everything they forked.

Identity: a pid file holds ``PID STARTTICKS`` where STARTTICKS is field 22 of
``/proc/PID/stat`` (the start time in clock ticks since boot). A pid whose
start time differs is a recycled pid, not ours, and is treated as gone.

Every process we start runs in its own session (``start_new_session=True``),
so its process group id equals its pid and stopping the group stops its
children too. Linux only (reads /proc).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = [
    "start_ticks",
    "is_running",
    "group_members",
    "write_pidfile",
    "read_pidfile",
    "stop_group",
]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state); start time is field 22 -> index 19
    return int(fields[19]) if fields else None


def is_running(pid: int, ticks: int | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if given) started at ``ticks``."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[2] is field 5 (pgrp)
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def group_rss_mb(pgid: int) -> float:
    """Resident memory (MiB, VmRSS summed) of the live processes in process group ``pgid``."""
    total_kb = 0
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                total_kb += next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
    return total_kb / 1024


def write_pidfile(path: Path, pid: int) -> None:
    """Record ``pid`` with its start time in ``path`` (atomically)."""
    ticks = start_ticks(pid)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid} {ticks if ticks is not None else 0}\n")
    tmp.replace(path)


def read_pidfile(path: Path) -> int | None:
    """Pid recorded in ``path`` if that very process is still running, else None."""
    try:
        pid_s, ticks_s = path.read_text().split()[:2]
        pid, ticks = int(pid_s), int(ticks_s)
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_running(pid, ticks or None) else None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, grace_s: float = 10.0, reap=None) -> bool:
    """Stop process group ``pgid``: SIGTERM, wait up to ``grace_s`` seconds, SIGKILL.

    ``reap`` is an optional callable run while waiting (for example
    ``Popen.poll``) so that our own children do not linger as zombies.
    Returns True if the group was gone before SIGKILL was needed.
    """
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap:
            reap()
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    for _ in range(50):  # up to 5 s for the kernel to tear the group down
        if reap:
            reap()
        if not group_members(pgid):
            break
        time.sleep(0.1)
    return False
