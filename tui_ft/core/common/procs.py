"""Is a process id still the tui-ft run that recorded it? (pids are reused)."""

from __future__ import annotations

import os


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            rest = fh.read().rsplit(") ", 1)[1].split()
        return int(rest[19])  # fields after "pid (comm)" start at field 3
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", errors="replace")
    except OSError:
        return None


def own_start() -> int | None:
    return start_ticks(os.getpid())


def is_run_process(pid: int, recorded_start: int | None) -> bool:
    """Whether a live ``pid`` is the process that wrote the run's events: its start
    time matches the recorded one, or (older runs, no start recorded) its command
    line names tui_ft. Without /proc the pid alone is trusted."""
    if recorded_start is not None:
        actual = start_ticks(pid)
        if actual is not None:
            return actual == recorded_start
    cmd = cmdline(pid)
    if cmd is None:
        return True
    return "tui_ft" in cmd or "tui-ft" in cmd


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            if fh.read().split(") ", 1)[1].startswith("Z"):
                return False
    except (OSError, IndexError):
        pass
    return True
