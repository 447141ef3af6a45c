"""Typed run events, written and read as JSON Lines.

A run writes one event per line to ``logs/<run_id>/events.jsonl``. The headless
CLI prints them, the dashboard follows the file. Every event has a ``type``
(its tag), the ``run_id`` and a wall-clock ``time``; :func:`event_from_dict`
turns a decoded line back into the same dataclass.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator


@dataclass
class Event:
    type: ClassVar[str] = "event"
    run_id: str
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type}
        d.update(asdict(self))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=True)


@dataclass
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    preset_name: str
    preset: dict[str, Any]
    device: str
    n_train: int
    n_val: int
    n_test: int
    parent: str | None = None
    pid: int = 0
    plan: str | None = None
    stage: int | None = None
    epochs: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class Message(Event):
    """Free-text progress or warning (data loading, graph cache, AtomRef refit)."""

    type: ClassVar[str] = "message"
    text: str
    level: str = "info"
    pid: int = 0  # the process that wrote it: a run that dies before run_started shows as crashed


@dataclass
class EpochEnd(Event):
    type: ClassVar[str] = "epoch_end"
    epoch: int
    train_mae: float | None
    val_mae: float
    lr: float
    seconds: float
    best_val_mae: float
    best_epoch: int
    n_structures: int = 0


@dataclass
class CheckpointSaved(Event):
    type: ClassVar[str] = "checkpoint_saved"
    kind: str  # "best" | "last"
    path: str
    epoch: int
    val_mae: float


@dataclass
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    test_mae: float | None
    best_epoch: int
    best_val_mae: float
    seconds: float
    n_test: int = 0
    predictions: str | None = None  # CSV with id,true,pred for the test set
    stopped_early: bool = False


@dataclass
class RunFailed(Event):
    type: ClassVar[str] = "run_failed"
    message: str
    epoch: int | None = None


@dataclass
class RunInterrupted(Event):
    type: ClassVar[str] = "run_interrupted"
    epoch: int | None = None
    message: str = "interrupted"


@dataclass
class RunPruned(Event):
    """A sweep stopped this trial run early (after its ``run_interrupted``); its checkpoints are kept."""

    type: ClassVar[str] = "run_pruned"
    epoch: int | None = None  # the last epoch reported to the pruner
    reason: str = "pruned"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, Message, EpochEnd, CheckpointSaved, RunFinished, RunFailed, RunInterrupted, RunPruned)
}
TERMINAL_TYPES = frozenset({"run_finished", "run_failed", "run_interrupted", "run_pruned"})


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event; unknown extra keys are ignored so old readers survive new fields."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    return cls(**kwargs)


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


class EventWriter:
    """Append events to a JSONL file, one flushed line each (readers may follow the file)."""

    def __init__(self, path: Path | str, *, echo=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._echo = echo
        if _ends_mid_line(self.path):
            # a crash left a torn last line: start a fresh one, or the next event is glued to it and lost
            self._fh.write("\n")
            self._fh.flush()

    def emit(self, event: Event) -> None:
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()
        try:
            os.fsync(self._fh.fileno())
        except OSError:  # pragma: no cover - fsync unsupported
            pass
        if self._echo is not None:
            self._echo(event)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_lines(lines: Iterator[str] | list[str], *, source: str = "events.jsonl", warn=None) -> list[Event]:
    """Decode lines; a truncated or garbled line is skipped with a warning, never raised."""
    out: list[Event] = []
    for n, line in enumerate(lines, 1):
        ev = _parse_line(line, f"{source}:{n}", warn)
        if ev is not None:
            out.append(ev)
    return out


def _parse_line(line: str, where: str, warn) -> Event | None:
    """One event from one line; ``None`` for a blank line or (with a warning) a garbled one."""
    line = line.strip()
    if not line:
        return None
    try:
        return event_from_json(line)
    except (ValueError, TypeError) as exc:
        msg = f"{where}: skipped unreadable event line ({exc})"
        if warn is not None:
            warn(msg)
        else:
            warnings.warn(msg, stacklevel=3)
        return None


def read_events(path: Path | str, *, warn=None) -> list[Event]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return parse_lines(text.splitlines(), source=str(path), warn=warn)


class EventFollower:
    """Incrementally read new complete lines from a growing events file.

    ``poll()`` returns the events appended since the last call. A partial last
    line (the writer is mid-write) is kept until its newline arrives.
    """

    def __init__(self, path: Path | str, *, warn=None):
        self.path = Path(path)
        self._offset = 0
        self._buf = b""
        self._lineno = 0
        self._warn = warn

    def poll(self) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offset += len(chunk)
        data = self._buf + chunk
        *complete, self._buf = data.split(b"\n")
        events: list[Event] = []
        for raw in complete:
            self._lineno += 1
            ev = _parse_line(raw.decode("utf-8", errors="replace"), f"{self.path}:{self._lineno}", self._warn)
            if ev is not None:
                events.append(ev)
        return events
