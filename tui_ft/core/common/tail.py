"""Follow a growing text file line by line (events.jsonl, stderr.log)."""

from __future__ import annotations

import os
from pathlib import Path

from tui_ft.core.common.files import open_regular

CHUNK_MAX = 64 << 20  # bytes read by one poll at most (the rest comes with the next)
LINE_MAX = 16 << 20  # a partial line longer than this is dropped (the next line is read whole)


class LineTail:
    """The complete lines appended to a file since the last :meth:`poll`.

    A partial last line (the writer is mid-write) is kept until its newline
    arrives. A file that shrank (truncated or replaced) is read again from its
    start. ``max_first`` bytes: a huge file is first read from near its end
    (``lineno`` then counts from there). One poll reads at most ``chunk_max`` bytes
    (``behind`` then says more is there). A missing or unreadable file gives [], and so
    does anything but a regular file (a FIFO is never opened for a blocking read).
    """

    def __init__(self, path: Path | str, *, start_at_end: bool = False, max_first: int | None = None,
                 chunk_max: int = CHUNK_MAX):
        self.path = Path(path)
        self.chunk_max = chunk_max
        self.behind = False  # the last poll stopped at chunk_max: more is there to read
        self._offset = 0
        self._buf = b""
        self._max_first = max_first
        self.lineno = 0  # complete lines returned so far
        if start_at_end:
            try:
                self._offset = self.path.stat().st_size
            except OSError:
                pass

    def poll(self) -> list[str]:
        try:
            with open_regular(self.path) as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._offset:  # truncated or replaced
                    self._offset, self._buf, self.lineno = 0, b"", 0
                if self._offset == 0 and self._max_first is not None and size > self._max_first:
                    self._offset = size - self._max_first
                fh.seek(self._offset)
                chunk = fh.read(self.chunk_max)
                self.behind = self._offset + len(chunk) < size
        except OSError:
            self.behind = False
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        *complete, self._buf = (self._buf + chunk).split(b"\n")
        if len(self._buf) > LINE_MAX:
            self._buf = b""
        self.lineno += len(complete)
        return [c.decode("utf-8", errors="replace").rstrip("\r") for c in complete]
