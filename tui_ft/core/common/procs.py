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


def is_our_run(pid: object, recorded_start: object, run_id: str | None = None) -> bool:
    """The one rule before signalling a process whose pid was read from a file (a study's
    database, a state file): ``pid`` is ours only if it is alive, its start time
    (/proc/PID/stat field 22) equals ``recorded_start``, and its command line, when it
    can be read, is a tui-ft process naming ``run_id``. Without a recorded start time,
    or without /proc to check it, the answer is False: a reused pid is never signalled."""
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
        return False
    if not (isinstance(recorded_start, int) and not isinstance(recorded_start, bool)):
        return False
    if not pid_alive(pid) or start_ticks(pid) != recorded_start:
        return False
    cmd = cmdline(pid)
    if cmd is None:
        return True  # it started when ours did: the start time alone identifies it
    if "tui_ft" not in cmd and "tui-ft" not in cmd:
        return False
    return run_id is None or run_id in cmd.split()


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
