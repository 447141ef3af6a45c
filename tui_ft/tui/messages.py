"""Messages the dashboard's workers and panes post to the app.

Workers (the launcher, the run followers, the folder scanner) never touch a
widget or the run state: they post one of these and the app applies it on its
own thread. Panes post the requests that need the app (a launch, a rescan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from textual.message import Message

if TYPE_CHECKING:
    from tui_ft.core.common.events import Event
    from tui_ft.tui.launcher import LaunchedPlan, LaunchedRun
    from tui_ft.core.common.system import SystemSample
    from tui_ft.tui.scanner import PresetEntry, ScanResult


@dataclass
class Launched(Message):
    """A training process (a preset's run or a plan) was started.
    ``select``: show it in the runs tab (a queued launch does not switch tabs)."""

    launched: Union["LaunchedRun", "LaunchedPlan"]
    select: bool = True


@dataclass
class LaunchFailed(Message):
    """A preset could not be launched (bad preset, missing checkpoint, OS error)."""

    title: str
    text: str


@dataclass
class RunEvents(Message):
    """New events appended to a run's ``events.jsonl``."""

    run_id: str
    events: list["Event"]


@dataclass
class RunOutput(Message):
    """New lines in a run's ``stderr.log``."""

    run_id: str
    lines: list[str]


@dataclass
class RunEnded(Message):
    """The process behind a followed run is gone (``returncode`` is None when it
    was not our child, e.g. a headless run in another terminal)."""

    run_id: str
    returncode: int | None
    stderr_tail: list[str] = field(default_factory=list)
    events_sig: tuple = ()  # the events file as the follower last read it (the scan watches it from there)


@dataclass
class FollowWarning(Message):
    """A follower skipped something (a garbled event line), or stopped on an error."""

    run_id: str
    text: str
    stopped: bool = False


@dataclass
class ScanDone(Message):
    """The periodic look at ``logs/``, ``presets/`` and ``checkpoints/``."""

    result: "ScanResult"


@dataclass
class LaunchRequested(Message):
    """A pane asks for a launch: ``now`` at once, else through the queue."""

    entry: "PresetEntry"
    now: bool = True


@dataclass
class ContinueRequested(Message):
    """The library asks to train a preset from checkpoint ``ref``."""

    ref: str


@dataclass
class RescanRequested(Message):
    """A pane changed files (a saved preset, deleted checkpoints): look again."""


@dataclass
class ResumeRequested(Message):
    """The runs pane asks to resume an ended run (``tui-ft resume RUN_ID``)."""

    run_id: str


@dataclass
class SystemSampled(Message):
    """A look at the machine: CPU, memory, GPUs and the training processes."""

    sample: "SystemSample"
