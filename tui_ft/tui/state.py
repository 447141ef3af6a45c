"""The dashboard's view of each run and of the launch queue (no Textual here)."""

from __future__ import annotations

import re
import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tui_ft.core.common.events import (
    EpochHistory,
    Event,
    Message,
    Progress,
    RunFinished,
    RunStarted,
    describe,
)
from tui_ft.core.common.units import fmt_elapsed  # noqa: F401 - the panes import it from here
from tui_ft.core.library.runs import RunSummary
from tui_ft.tui.launcher import LaunchedRun

ACTIVE = ("pending", "running")
# the headless printer's echo of a final event (already shown from the event itself)
_ECHO = re.compile(r"^run \S+ (failed|interrupted): ")
MAX_LOG = 2000
# the epochs of a run the dashboard keeps for its charts and tables: fewer than twice this many,
# thinned evenly once a run has more (EpochHistory); a run of a million epochs stays small
CHART_EPOCHS = 512


@dataclass
class LogLine:
    text: str
    level: str = "info"  # info | warning | error | epoch | done | stderr


def fmt_mae(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def event_line(ev: Event) -> LogLine | None:
    """How an event reads in the log panel: the core's one text (the headless
    output prints the same line), styled by its tone."""
    text = describe(ev)
    return None if text is None else LogLine(text, ev.tone)


@dataclass
class RunState:
    """One run as the dashboard sees it: the core's summary plus what only the
    dashboard knows (its process, if we started it; its log lines; overlay)."""

    summary: RunSummary
    launched: LaunchedRun | None = None
    log: list[LogLine] = field(default_factory=list)
    following: bool = False
    returncode: int | None = None
    overlay: bool = False
    cancel_requested: bool = False
    stderr_loaded: bool = False
    progress: Progress | None = None  # the latest progress of a stage under way (None once it ends)
    # events_signature() of its events.jsonl when it was last read in full, once it is no longer
    # followed (None while followed): the scan reads it again when the file changes (a resume elsewhere)
    events_sig: tuple | None = None
    test_metrics: dict[str, float | None] | None = None  # the named test metrics of its run_finished event
    _messages: set[str] = field(default_factory=set, repr=False)
    _milestones: dict[str, Progress] = field(default_factory=dict, repr=False)  # stage -> last logged

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    @property
    def status(self) -> str:
        return self.summary.status

    @property
    def active(self) -> bool:
        return self.summary.status in ACTIVE

    @property
    def pid(self) -> int:
        if self.launched is not None:
            return self.launched.pid
        return self.summary.pid

    @property
    def progress_label(self) -> str | None:
        """``graphs 45%`` while a long step of an active run is under way, else None."""
        if self.progress is None or not self.active:
            return None
        return self.progress.label()

    @property
    def sort_key(self) -> tuple[float, str]:
        started = self.summary.started
        if started is None and self.launched is not None:
            started = self.launched.started
        return (started or 0.0, self.run_id)

    def _add_log(self, line: LogLine) -> None:
        self.log.append(line)
        if len(self.log) > MAX_LOG:
            del self.log[: len(self.log) - MAX_LOG]

    def __post_init__(self) -> None:
        h = self.summary.history
        if getattr(h, "limit", None) is None:  # every epoch kept: keep a thinned history instead
            self.summary.history = EpochHistory(h, limit=CHART_EPOCHS)

    def apply(self, events: Iterable[Event]) -> list[LogLine]:
        """Fold events in (a list, or a file's events one at a time); return the log lines
        they add. Only the last ``MAX_LOG`` events that have a line are described: the
        log keeps no more."""
        shown: deque[Event] = deque(maxlen=MAX_LOG)
        for ev in events:
            self.summary.apply(ev)
            if isinstance(ev, (RunStarted, RunFinished)):  # a resume starts over; a finish says them
                self.test_metrics = ev.test_metrics if isinstance(ev, RunFinished) else None
            if isinstance(ev, Message):
                self._messages.add(ev.text)
            if isinstance(ev, Progress):
                self.progress = None if ev.final else ev
                if not ev.milestone(self._milestones.get(ev.stage)):
                    continue  # the log shows a stage's milestones only, like the headless output
                self._milestones[ev.stage] = ev
            if type(ev).describe is not Event.describe:  # an event of a kind that reads as a line
                shown.append(ev)
        added: list[LogLine] = []
        for ev in shown:
            line = event_line(ev)
            if line is not None:
                if ev.to_stderr:  # the run prints this same line to its stderr too
                    self._messages.add(line.text)
                self._add_log(line)
                added.append(line)
        return added

    def add_stderr(self, lines: list[str]) -> list[LogLine]:
        """stderr lines that are not echoes of Message events (the run prints
        each message to stderr too)."""
        added: list[LogLine] = []
        for ln in lines:
            if not ln.strip() or ln in self._messages or _ECHO.match(ln):
                continue
            line = LogLine(ln, "stderr")
            self._add_log(line)
            added.append(line)
        return added

    def ended(self, returncode: int | None, stderr_tail: list[str]) -> None:
        """The process is gone. Without a final event the run failed or crashed."""
        self.returncode = returncode
        self.following = False
        s = self.summary
        if s.status not in ACTIVE:
            return
        tail = [ln for ln in stderr_tail if ln.strip()]
        last = tail[-1] if tail else ""
        if returncode == 130:
            s.status = "interrupted"
            s.message = last or "interrupted"
        elif returncode == 2:
            s.status = "failed"
            s.message = last or "the preset was rejected (exit code 2)"
        elif returncode is None:
            s.status = "crashed" if s.status == "running" else "failed"
            s.message = s.message or last or "the training process ended without a final event"
        elif returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            s.status = "crashed"
            s.message = f"the training process was killed by {name} (out of memory? killed by hand?)"
        else:
            s.status = "crashed"
            s.message = last or f"the training process exited with code {returncode} without a final event"
        s.updated = time.time()
        self._add_log(LogLine(f"{s.status}: {s.message}", "error"))


@dataclass
class QueueItem:
    path: Path
    name: str


class LaunchQueue:
    """Presets waiting to run one after another on one device."""

    def __init__(self) -> None:
        self.items: list[QueueItem] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, path: Path, name: str) -> None:
        self.items.append(QueueItem(path, name))

    def pop_if_idle(self, busy: bool) -> QueueItem | None:
        """The next preset to start, if the device is free."""
        if busy or not self.items:
            return None
        return self.items.pop(0)

    def remove(self, index: int) -> QueueItem | None:
        if 0 <= index < len(self.items):
            return self.items.pop(index)
        return None

    def describe(self) -> str:
        return ", ".join(i.name for i in self.items)
