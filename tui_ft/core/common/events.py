"""Typed run events, written and read as JSON Lines.

A run writes one event per line to ``logs/<run_id>/events.jsonl``. The headless
CLI prints them, the dashboard follows the file. Every event has a ``type``
(its tag), the ``run_id`` and a wall-clock ``time``; :func:`event_from_dict`
turns a decoded line back into the same dataclass, checking every field's type
(pydantic, strict) so a reader never meets a wrong-typed value.

Each event class is the one place that knows its fields: how it reads as a line
(:meth:`Event.describe`, the same text in the headless output and the dashboard
log), its tone (the front ends' styling) and how it folds into a run summary
(:meth:`Event.apply_to`). Adding a field touches this file and its test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator

from tui_ft.core.common.files import EVENTS_MAX_BYTES, NotRegularFile, open_regular
from tui_ft.core.common.procs import is_run_process, own_start, pid_alive
from tui_ft.core.common.tail import LineTail



@dataclass
class Event:
    type: ClassVar[str] = "event"
    # how the line is styled: info | warning | error | epoch | done
    tone: ClassVar[str] = "info"
    # the headless CLI prints it on stderr (progress and problems) rather than stdout (results)
    to_stderr: ClassVar[bool] = False
    run_id: str
    time: float = field(default_factory=time.time, kw_only=True)

    def describe(self) -> str | None:
        """The event as one line of text (None: not shown, e.g. one per checkpoint is too chatty)."""
        return None

    def apply_to(self, summary: "RunSummary") -> None:
        """Fold this event into a run summary (``summary.updated`` is set by the caller)."""

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
    pid_start: int | None = None  # the writer's start time (procs.start_ticks): a reused pid is not this run
    unit: str | None = None  # the target's unit (data.unit or units.default_unit); "" unknown, None not recorded
    data_sha256: str | None = None  # of the data source's bytes (None: not recorded, runs before compare)
    split_sha256: str | None = None  # of the ids of each split (tui_ft.core.train.engine.split_sha256)
    tone: ClassVar[str] = "done"

    def __post_init__(self) -> None:
        _stamp_pid(self)

    def describe(self) -> str:
        stage = f" stage {self.stage}" if self.stage else ""
        finetune = self.preset.get("finetune")
        mode = finetune.get("mode", "?") if isinstance(finetune, dict) else "?"
        return (
            f"run {self.run_id}{stage}: preset {self.preset_name}, {mode} mode, "
            f"device {self.device}, train {self.n_train} / val {self.n_val} / test {self.n_test}"
            + (f", from {self.parent}" if self.parent else "")
            + (f", MAE in {self.unit}" if self.unit else "")
        )

    def apply_to(self, summary: "RunSummary") -> None:
        summary.preset_name = self.preset_name
        summary.status = "running"
        summary.started = self.time
        summary.device = self.device
        summary.parent = self.parent
        summary.pid = self.pid
        summary.pid_start = self.pid_start
        summary.epochs = self.epochs
        summary.plan = self.plan
        summary.stage = self.stage
        summary.preset = self.preset
        summary.test_metrics = None
        summary.data_sha256 = self.data_sha256
        summary.split_sha256 = self.split_sha256


@dataclass
class Message(Event):
    """Free-text progress or warning (data loading, graph cache, AtomRef refit)."""

    type: ClassVar[str] = "message"
    text: str
    level: str = "info"
    pid: int = 0  # the process that wrote it: a run that dies before run_started shows as crashed
    pid_start: int | None = None
    to_stderr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _stamp_pid(self)

    @property
    def tone(self) -> str:  # type: ignore[override]
        return self.level if self.level in ("warning", "error") else "info"

    def describe(self) -> str:
        return self.text if self.level == "info" else f"[{self.level}] {self.text}"

    def apply_to(self, summary: "RunSummary") -> None:
        if summary.status == "pending" and self.pid:
            summary.pid = self.pid  # started (loading data or model), no run_started yet
            summary.pid_start = self.pid_start
        if self.level in ("warning", "error"):
            summary.message = self.text


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
    unit: str | None = None  # the MAEs' unit ("" unknown, None: not recorded, runs before units)
    # every named metric of the epoch (tui_ft.core.task.metrics names them and their units);
    # None in runs written before tasks: their metrics are train_mae / val_mae (:meth:`named`)
    metrics: dict[str, float] | None = None
    tone: ClassVar[str] = "epoch"

    def named(self) -> dict[str, float]:
        """The epoch's metrics by name; for runs from before tasks, from train_mae / val_mae."""
        if self.metrics:
            return dict(self.metrics)
        out = {"val_mae": self.val_mae}
        if self.train_mae is not None:
            out["train_mae"] = self.train_mae
        return out

    def describe(self) -> str:
        from tui_ft.core.common.metrics import compact, is_potential

        if is_potential(self.metrics):  # a potential: its named metrics, validation first
            tr = compact(self.metrics, "train")
            return (f"epoch {self.epoch:3d}  val {compact(self.metrics, 'val')}" + (f"  | train {tr}" if tr else "")
                    + f"  lr {self.lr:.2e}  {self.seconds:6.1f}s  best {self.best_val_mae:.4g}@{self.best_epoch}")
        tr = "-" if self.train_mae is None else f"{self.train_mae:.4f}"
        return (
            f"epoch {self.epoch:3d}  val_mae {self.val_mae:.4f}  train_mae {tr:>6}  lr {self.lr:.2e}  "
            f"{self.seconds:6.1f}s  best {self.best_val_mae:.4f}@{self.best_epoch}"
            + (f"  [{self.unit}]" if self.unit else "")
        )

    def apply_to(self, summary: "RunSummary") -> None:
        summary.epoch = self.epoch
        summary.best_val_mae = self.best_val_mae
        summary.best_epoch = self.best_epoch
        summary.history.append(self)


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
    unit: str | None = None  # the MAEs' unit ("" unknown, None: not recorded, runs before units)
    peak_gpu_mem_mb: float | None = None  # torch.cuda.max_memory_allocated on the run's GPU (rank 0 under DDP)
    test_metrics: dict[str, float | None] | None = None  # every named test metric (None before tasks)
    tone: ClassVar[str] = "done"

    def describe(self) -> str:
        from tui_ft.core.common.metrics import compact, is_potential

        gpu = "" if self.peak_gpu_mem_mb is None else f", peak GPU memory {self.peak_gpu_mem_mb:.0f} MiB"
        if is_potential(self.test_metrics):
            return (f"test {compact(self.test_metrics, 'test')}  (best epoch {self.best_epoch}, val {self.best_val_mae:.4g}, "
                    f"{self.n_test} test frames, {self.seconds:.1f}s{gpu})  run {self.run_id}")
        tm = "n/a" if self.test_mae is None else f"{self.test_mae:.4f}" + (f" {self.unit}" if self.unit else "")
        return (
            f"test_mae {tm}  (best epoch {self.best_epoch}, val_mae {self.best_val_mae:.4f}, "
            f"{self.n_test} test structures, {self.seconds:.1f}s{gpu})  run {self.run_id}"
        )

    def apply_to(self, summary: "RunSummary") -> None:
        summary.status = "finished"
        summary.test_mae = self.test_mae
        summary.best_val_mae = self.best_val_mae
        summary.best_epoch = self.best_epoch
        summary.predictions = self.predictions
        summary.test_metrics = self.test_metrics


@dataclass
class RunFailed(Event):
    type: ClassVar[str] = "run_failed"
    tone: ClassVar[str] = "error"
    to_stderr: ClassVar[bool] = True
    message: str
    epoch: int | None = None

    def describe(self) -> str:
        return f"run {self.run_id} failed: {self.message}"

    def apply_to(self, summary: "RunSummary") -> None:
        summary.status = "failed"
        summary.message = self.message


@dataclass
class RunInterrupted(Event):
    type: ClassVar[str] = "run_interrupted"
    tone: ClassVar[str] = "warning"
    to_stderr: ClassVar[bool] = True
    epoch: int | None = None
    message: str = "interrupted"

    def describe(self) -> str:
        return f"run {self.run_id} interrupted: {self.message}"

    def apply_to(self, summary: "RunSummary") -> None:
        summary.status = "interrupted"
        summary.message = self.message


@dataclass
class RunPruned(Event):
    """A sweep stopped this trial run early (after its ``run_interrupted``); its checkpoints are kept."""

    type: ClassVar[str] = "run_pruned"
    tone: ClassVar[str] = "warning"
    to_stderr: ClassVar[bool] = True
    epoch: int | None = None  # the last epoch reported to the pruner
    reason: str = "pruned"

    def describe(self) -> str:
        at = "" if self.epoch is None else f" at epoch {self.epoch}"
        return f"run {self.run_id} pruned{at}: {self.reason}"

    def apply_to(self, summary: "RunSummary") -> None:
        summary.status = "pruned"
        summary.message = self.reason


@dataclass
class Progress(Event):
    """How far a long step has come: ``stage`` is ``graphs`` (crystal graph conversion or
    cache load), ``features`` (frozen-backbone features) or ``predict`` (test predictions).

    The engine throttles them (about two a second per stage, always the first and the
    last, which has ``done == total``), so a run's file stays small. A front end shows
    the latest on a progress bar; a log shows only the milestones (:meth:`milestone`).
    """

    type: ClassVar[str] = "progress"
    to_stderr: ClassVar[bool] = True
    stage: str
    done: int
    total: int
    rate: float | None = None  # items per second since the stage began

    @property
    def final(self) -> bool:
        return self.done >= self.total

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0

    def describe(self) -> str:
        rate = f" ({self.rate:.0f}/s)" if self.rate else ""
        return f"{self.stage} {self.done}/{self.total}{rate}"

    def label(self) -> str:
        """The short form for a status cell: ``graphs 45%``."""
        return f"{self.stage} {int(100 * self.fraction)}%"

    def milestone(self, last: "Progress | None") -> bool:
        """Whether this event earns a line in a log after ``last`` (the last one that did, of
        the same run and stage): the first, each tenth of the way and the last, so a stage
        writes at most a dozen lines however long it runs."""
        if last is None or last.stage != self.stage or self.done < last.done:
            return True  # a stage (re)starts
        if self.final:
            return not last.final
        return int(10 * self.fraction) > int(10 * last.fraction)

    def apply_to(self, summary: "RunSummary") -> None:
        """Progress is not part of a run's summary (the dashboard keeps the latest per run)."""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, Message, EpochEnd, CheckpointSaved, RunFinished, RunFailed, RunInterrupted, RunPruned,
                Progress)
}
TERMINAL_TYPES = frozenset({"run_finished", "run_failed", "run_interrupted", "run_pruned"})


def describe(ev: Event) -> str | None:
    """The one text of an event, for the headless output and the dashboard log alike."""
    return ev.describe()


def _stamp_pid(ev: "RunStarted | Message") -> None:
    """An event written by its own process records when that process started."""
    if ev.pid_start is None and ev.pid and ev.pid == os.getpid():
        ev.pid_start = own_start()


_SCHEMAS: dict[type[Event], Any] = {}


def _schema(cls: type[Event]):
    """A strict pydantic model with the dataclass's fields: the one type check on read."""
    model = _SCHEMAS.get(cls)
    if model is None:
        from pydantic import ConfigDict, Field, create_model

        hints = typing.get_type_hints(cls)
        spec: dict[str, Any] = {}
        for f in fields(cls):
            if f.default is not dataclasses.MISSING:
                default: Any = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = Field(default_factory=f.default_factory)
            else:
                default = ...
            spec[f.name] = (hints[f.name], default)
        model = create_model(f"{cls.__name__}Fields", __config__=ConfigDict(strict=True, extra="ignore"), **spec)
        _SCHEMAS[cls] = model
    return model


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event; unknown extra keys are ignored so old readers survive new fields.
    Raises ``ValueError`` naming the field for a missing or wrong-typed value."""
    from pydantic import ValidationError

    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    try:
        checked = _schema(cls).model_validate(d)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg'].lower()}" for e in exc.errors()[:3]
        )
        raise ValueError(f"{kind}: {problems}") from None
    return cls(**{f.name: getattr(checked, f.name) for f in fields(cls)})


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))


def _ends_mid_line(path: Path) -> bool:
    try:
        with open_regular(path) as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def _open_append(path: Path):
    """``path`` opened for appending text, created if missing; a FIFO, a device or a folder is refused
    (:class:`tui_ft.core.common.files.NotRegularFile`) instead of blocking the run or writing into it."""
    import fcntl
    import stat

    nonblock = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == 6:  # ENXIO: a FIFO nobody reads
            raise NotRegularFile(exc.errno, "a pipe (FIFO), expected a regular file", str(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(22, "not a regular file (a FIFO or a device)", str(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


class EventWriter:
    """Append events to a JSONL file, one flushed line each (readers may follow the file)."""

    def __init__(self, path: Path | str, *, echo=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = _open_append(self.path)
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
    except (ValueError, TypeError, RecursionError) as exc:
        msg = f"{where}: skipped unreadable event line ({exc})"
        if warn is not None:
            warn(msg)
        else:
            warnings.warn(msg, stacklevel=3)
        return None


def _report(msg: str, warn) -> None:
    if warn is not None:
        warn(msg)
    else:
        warnings.warn(msg, stacklevel=3)


def iter_events(path: Path | str, *, warn=None) -> Iterator[Event]:
    """The events of an events file one at a time, read line by line: a reader that folds them
    (a summary, a bounded history) holds one line at a time, whatever the file's size. Regular
    files only, at most ``EVENTS_MAX_BYTES``: a FIFO, a device or a huge file is reported through
    ``warn`` and gives nothing, never blocks; a file that grows past the cap while it is read
    ends there, reported."""
    path = Path(path)
    try:
        fh = open_regular(path, EVENTS_MAX_BYTES)
    except FileNotFoundError:
        return
    except OSError as exc:  # a folder, a FIFO, no permission, too large: reported, never fatal
        _report(f"{path}: cannot read events ({exc.strerror or exc})", warn)
        return
    left = EVENTS_MAX_BYTES
    with fh:
        for n, raw in enumerate(fh, 1):
            left -= len(raw)
            if left < 0:
                _report(f"{path}:{n}: cannot read events past {EVENTS_MAX_BYTES >> 20} MiB (the file grew while read)", warn)
                return
            ev = _parse_line(raw.decode("utf-8", errors="replace"), f"{path}:{n}", warn)
            if ev is not None:
                yield ev


def read_events(path: Path | str, *, warn=None) -> list[Event]:
    """Every event of an events file, in a list (:func:`iter_events`)."""
    return list(iter_events(path, warn=warn))


class EpochHistory(list):
    """A run's ``EpochEnd`` events in order (a list).

    Without ``limit`` it keeps them all (``tui-ft history``, the trainer). With one (the
    dashboard's), it keeps fewer than ``2 * limit``: every ``stride``-th event as they
    came, the stride doubling whenever the list is full, plus the latest event and the
    best epoch's. A run of a million epochs then keeps an evenly thinned learning curve
    in bounded memory. ``seen`` counts every epoch appended.
    """

    def __init__(self, items=(), limit: int | None = None):
        super().__init__()
        self.limit = limit if limit is None else max(2, int(limit))
        self.seen = 0
        self.stride = 1
        self.best: EpochEnd | None = None  # the event of the latest epoch that was its run's best
        self._seq: list[int] = []  # each kept event's number in arrival order
        for ev in items:
            self.append(ev)

    def append(self, ev) -> None:  # type: ignore[override]
        n, self.seen = self.seen, self.seen + 1
        if getattr(ev, "epoch", None) == getattr(ev, "best_epoch", -1):
            self.best = ev
        if self.limit is None:
            super().append(ev)
            return
        if self and self._seq[-1] % self.stride and self[-1] is not self.best:
            super().pop()  # the latest before this one, kept only for being the latest
            self._seq.pop()
        super().append(ev)
        self._seq.append(n)
        if len(self) >= 2 * self.limit:
            self.stride *= 2
            keep = [i for i, (k, e) in enumerate(zip(self._seq, self)) if k % self.stride == 0 or e is self.best or k == n]
            self[:] = [self[i] for i in keep]
            self._seq = [self._seq[i] for i in keep]


FOLLOW_CHUNK = 4 << 20  # bytes of events one poll reads at most (about 14,000 epochs): a long file comes in steps


class EventFollower:
    """Incrementally read new complete lines from a growing events file.

    ``poll()`` returns the events appended since the last call, at most ``chunk_max``
    bytes of them (:attr:`behind` says when more are there). A partial last
    line (the writer is mid-write) is kept until its newline arrives.
    """

    def __init__(self, path: Path | str, *, warn=None, chunk_max: int = FOLLOW_CHUNK):
        self.path = Path(path)
        self._tail = LineTail(self.path, chunk_max=chunk_max)
        self._warn = warn

    @property
    def behind(self) -> bool:
        """The last poll stopped at ``chunk_max`` bytes: more lines are there already."""
        return self._tail.behind

    def poll(self) -> list[Event]:
        lines = self._tail.poll()
        first = self._tail.lineno - len(lines) + 1
        events: list[Event] = []
        for n, line in enumerate(lines, first):
            ev = _parse_line(line, f"{self.path}:{n}", self._warn)
            if ev is not None:
                events.append(ev)
        return events


@dataclass
class RunSummary:
    run_id: str
    preset_name: str = "?"
    status: str = "pending"  # pending | running | finished | failed | interrupted | pruned | crashed
    epoch: int | None = None
    epochs: int = 0
    best_val_mae: float | None = None
    best_epoch: int | None = None
    test_mae: float | None = None
    started: float | None = None
    updated: float | None = None
    device: str = "?"
    parent: str | None = None
    pid: int = 0
    pid_start: int | None = None  # when that process started, if recorded (a reused pid is not ours)
    message: str = ""
    plan: str | None = None
    stage: int | None = None
    history: EpochHistory = field(default_factory=EpochHistory)  # bounded in the dashboard (its limit)
    predictions: str | None = None
    preset: dict[str, Any] | None = field(default=None, repr=False)  # the resolved preset of its latest start
    test_metrics: dict[str, float | None] | None = None  # the named test metrics of its run_finished
    data_sha256: str | None = None
    split_sha256: str | None = None
    elapsed_before: float = 0.0  # seconds of the run's processes before its latest run_started (resumes)

    @property
    def elapsed(self) -> float | None:
        """The run's total time: every process's span from its run_started to its last event
        (the time between an interruption and the resume is not counted)."""
        if self.started is None:
            return None
        end = self.updated if self.status not in ("running", "pending") else time.time()
        return self.elapsed_before + max(0.0, (end or self.started) - self.started)

    def best_metrics(self) -> dict[str, float] | None:
        """The named metrics of the run's best epoch (the one its best.pt holds; after a resume,
        its latest pass), or None before its first epoch."""
        h = self.history
        return self.epoch_metrics(self.best_epoch if self.best_epoch is not None else (h[-1].best_epoch if h else None))

    def epoch_metrics(self, epoch: int | None) -> dict[str, float] | None:
        """The named metrics of one epoch (its latest pass after a resume), None when not logged."""
        return None if epoch is None else next((ev.named() for ev in reversed(self.history) if ev.epoch == epoch), None)

    def apply(self, ev: Event) -> None:
        """Fold one event into the summary (the dashboard calls this as events arrive)."""
        if isinstance(ev, RunStarted) and self.started is not None and self.updated is not None:
            self.elapsed_before += max(0.0, self.updated - self.started)  # a resume: the earlier process's span counts
        self.updated = ev.time
        ev.apply_to(self)

    def check_alive(self) -> None:
        """A run whose process is gone without a final event has crashed (killed, OOM, ...).
        A live pid that is not this run's process (reused after a reboot or a crash, e.g. pid 1)
        counts as gone."""
        if self.status in ("running", "pending") and self.pid and not (
            pid_alive(self.pid) and is_run_process(self.pid, self.pid_start)
        ):
            self.status = "crashed"
            if not self.message:
                self.message = "the training process ended without a final event (killed or crashed)"
