"""Reading the files tui-ft keeps under ``logs/`` and ``checkpoints/``: regular files only, size-capped.

Every reader of a state file (``events.jsonl``, ``study.json``, ``sweep.json``,
a plan's ``state.json``, checkpoint sidecars, prediction CSVs) opens it through
:func:`open_regular`. A FIFO put where such a file belongs would block an
ordinary ``open()`` for ever (no writer ever comes), and a device would never
end: the file is opened with ``O_NONBLOCK`` (opening a FIFO then returns at
once), checked with ``fstat`` on the open descriptor (no race with a rename),
and refused unless it is a regular file no larger than the cap.

The errors are :class:`OSError` subclasses whose ``strerror`` says what is
wrong, so every ``except OSError`` that reported an unreadable file before
reports these the same way, in one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

MiB = 1 << 20
STATE_MAX_BYTES = 16 * MiB  # study.json, sweep.json, state.json, sidecars, lock files
EVENTS_MAX_BYTES = 512 * MiB  # a run's events.jsonl (a long run writes well under 100 MiB)
TABLE_MAX_BYTES = 1024 * MiB  # prediction CSVs (a potential's test_forces.csv has one row per atom)


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a folder, not a regular file."""


class FileTooLarge(OSError):
    """A regular file larger than the reader's cap."""


def entry_kind(mode: int) -> str | None:
    """What a file-system entry is, from its ``st_mode`` (``os.lstat`` for links): None for a
    regular file, else "a folder", "a symbolic link", "a pipe (FIFO)", "a character device",
    "a block device", "a socket". The one wording of every reader's and writer's refusal."""
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def open_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading, when it is a regular file of at most ``max_bytes``.

    Never blocks on a FIFO or a device. Raises :class:`FileNotFoundError` and the
    other ``OSError`` of ``open``, :class:`NotRegularFile`, :class:`FileTooLarge`."""
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
            raise NotRegularFile(code, f"{entry_kind(st.st_mode)}, expected a regular file", name)
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileTooLarge(errno.EFBIG, f"{_size(st.st_size)}, more than the {_size(max_bytes)} expected", name)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~getattr(os, "O_NONBLOCK", 0))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole file's bytes (:func:`open_regular`); a file that grew past the cap while read is refused too."""
    with open_regular(path, max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(errno.EFBIG, f"more than the {_size(max_bytes)} expected", os.fspath(path))
    return data


def read_regular_text(path: str | os.PathLike[str], max_bytes: int, *, errors: str = "strict") -> str:
    """The whole file as UTF-8 text (:func:`read_regular_bytes`); ``UnicodeDecodeError`` (a ``ValueError``)
    for bytes that are not UTF-8 unless ``errors`` says otherwise."""
    return read_regular_bytes(path, max_bytes).decode("utf-8", errors=errors)


def is_regular(path: str | os.PathLike[str]) -> bool:
    """The path is a regular file (following symlinks), without opening it."""
    try:
        return stat.S_ISREG(Path(path).stat().st_mode)
    except (OSError, ValueError):
        return False
