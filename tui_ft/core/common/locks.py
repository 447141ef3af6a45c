"""One process at a time: an atomic lock file with a stale-lock check that survives pid reuse.

A :class:`ProcessLock` is a file created with ``O_CREAT | O_EXCL`` (so two
processes can never both create it) holding ``{"pid", "start", "created"}``,
where ``start`` is the owner's process start time (field 22 of
``/proc/<pid>/stat``). A lock whose pid is dead, or whose pid now belongs to a
process that started at another time (pid reuse), is stale and taken over.

Used for plans (``logs/.plans/<name>/lock``) and runs (``logs/<run_id>/lock``).
This module imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tui_ft.core.common.files import (
    STATE_MAX_BYTES,
    FileTooLarge,
    NotRegularFile,
    read_regular_bytes,
)

__all__ = ["LockHeld", "ProcessLock", "RunLock", "process_start_time", "LOCK_NAME"]

LOCK_NAME = "lock"
_UNWRITTEN_LOCK_GRACE_S = 10.0  # an empty/unreadable lock younger than this is being written, so held


class LockHeld(RuntimeError):
    """Another live process holds the lock."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, as a token that differs between two processes
    that had the same pid: field 22 of ``/proc/<pid>/stat`` (clock ticks after boot),
    else psutil's ``create_time`` when psutil is installed; None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
        return f"proc:{fields[19]}"
    except (OSError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return f"psutil:{psutil.Process(pid).create_time():.6f}"
    except Exception:  # noqa: BLE001 - no such process, access denied, ...
        return None


def _pid_alive(pid: int) -> bool:
    from tui_ft.core.common.procs import pid_alive

    return pid_alive(pid)


class ProcessLock:
    """The lock file ``path``. Use as a context manager; :meth:`acquire` raises
    :class:`LockHeld` while another live process holds it (this process too: one
    holder at a time)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._mine: bytes | None = None

    @property
    def held(self) -> bool:
        return self._mine is not None

    def acquire(self) -> ProcessLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        body = json.dumps({"pid": me, "start": process_start_time(me), "created": time.time()}).encode()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen = self._read()
                if seen is None:
                    continue  # released between our create and our read: try again
                why_stale = self._stale(seen)
                if why_stale is None:
                    pid = self._pid(seen)
                    who = f"process {pid}" if pid else "another process"
                    raise LockHeld(f"already running in {who} (lock {self.path})", pid) from None
                self._break(seen)
                continue
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._mine = body
            return self
        raise LockHeld(f"could not take the lock {self.path}: other processes keep taking it")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self._mine is not None and self._read() == self._mine:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self._mine = None

    def holder(self) -> int | None:
        """The pid of the live process holding the lock, or None (free or stale)."""
        seen = self._read()
        if seen is None or self._stale(seen) is not None:
            return None
        return self._pid(seen)

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- helpers

    def _read(self) -> bytes | None:
        try:
            return read_regular_bytes(self.path, STATE_MAX_BYTES)
        except FileNotFoundError:
            return None
        except (NotRegularFile, FileTooLarge) as exc:  # never read a FIFO or a device for a lock
            raise LockHeld(f"the lock file {self.path} is {exc.strerror}; remove it", None) from None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            obj = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("pid"), int) or isinstance(obj.get("pid"), bool):
            return None
        return obj

    def _pid(self, raw: bytes) -> int | None:
        obj = self._parse(raw)
        return obj["pid"] if obj else None

    def _stale(self, raw: bytes) -> str | None:
        """Why the lock with content ``raw`` is stale; None when its owner is alive."""
        obj = self._parse(raw)
        if obj is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "gone"
            return "unreadable" if age > _UNWRITTEN_LOCK_GRACE_S else None
        pid = obj["pid"]
        if not _pid_alive(pid):
            return f"process {pid} is gone"
        start, now = obj.get("start"), process_start_time(pid)
        if isinstance(start, str) and now is not None and start != now:
            return f"pid {pid} now belongs to another process"
        return None

    def _break(self, seen: bytes) -> None:
        """Remove the stale lock whose content is ``seen``, and only that one: it is
        renamed aside first, and put back if another process had already replaced it."""
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process broke it first
        try:
            if read_regular_bytes(aside, STATE_MAX_BYTES) != seen:  # a fresh lock, taken after we read the stale one
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)


class RunLock(ProcessLock):
    """``logs/<run_id>/lock``: held by the process that trains the run, fresh or resumed."""

    def __init__(self, run_id: str, paths: Any = None):
        from tui_ft.core.common.paths import Paths

        self.run_id = run_id
        super().__init__((paths or Paths.default()).run_log_dir(run_id) / LOCK_NAME)
