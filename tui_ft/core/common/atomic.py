"""Atomic file writes: write a temp file in the same folder, fsync, rename.

The file gets the mode an ordinary ``open(path, "w")`` would give it (``0o666`` less
the umask), not ``mkstemp``'s owner-only ``0o600``: an exported model, a checkpoint or
a predictions file is readable by the group where the user's umask says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system says it
    (``/proc/self/status`` on Linux); elsewhere set-and-restore under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # pragma: no cover - not Linux
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits a new file gets: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def atomic_write(path: Path | str, writer: Callable[[Any], None], *, binary: bool = True) -> None:
    """Call ``writer(fileobj)`` on a temp file beside ``path``, then rename it over ``path``.

    A reader sees either the old file or the whole new one, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes it 0o600 whatever the umask
        except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows) or a file system without modes
            pass
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C / SIGTERM until the block ends, then deliver them.

    ``torch.save`` writes through a Python callback; a ``KeyboardInterrupt``
    raised inside it comes back out of torch as a ``RuntimeError``, so a run
    interrupted mid-save would be recorded as failed. Outside the main thread
    (where handlers cannot be changed) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {}
    for s in signums:
        try:
            old[s] = signal.signal(s, lambda signum, frame: pending.append(signum))
        except (ValueError, OSError):  # pragma: no cover - unsupported signal
            pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in pending:
            h = old.get(s)
            if callable(h):
                h(s, None)  # e.g. default_int_handler raises KeyboardInterrupt
            elif h == signal.SIG_DFL:
                os.kill(os.getpid(), s)
