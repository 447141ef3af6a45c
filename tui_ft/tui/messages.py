"""Messages the dashboard's workers post to the app.

Workers (the launcher, the run followers, the folder scanner) never touch a
widget or the run state: they post one of these and the app applies it on its
own thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from tui_ft.core.events import Event
    from tui_ft.tui.launcher import LaunchedRun
    from tui_ft.tui.scanner import ScanResult


class RunLaunched(Message):
    """A training process was started for ``run_id``."""

    def __init__(self, launched: "LaunchedRun", *, select: bool = True) -> None:
        super().__init__()
        self.launched = launched
        self.select = select  # show it in the runs tab (a queued launch does not switch tabs)
        self.run_id = launched.run_id


class PlanLaunched(Message):
    """A multi-stage plan process was started."""

    def __init__(self, launched, *, select: bool = True) -> None:
        super().__init__()
        self.launched = launched  # tui_ft.tui.launcher.LaunchedPlan
        self.select = select


class LaunchFailed(Message):
    """A preset could not be launched (bad preset, missing checkpoint, OS error)."""

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title = title
        self.text = text


class RunEvents(Message):
    """New events appended to a run's ``events.jsonl``."""

    def __init__(self, run_id: str, events: list["Event"]) -> None:
        super().__init__()
        self.run_id = run_id
        self.events = events


class RunOutput(Message):
    """New lines in a run's ``stderr.log``."""

    def __init__(self, run_id: str, lines: list[str]) -> None:
        super().__init__()
        self.run_id = run_id
        self.lines = lines


class RunEnded(Message):
    """The process behind a followed run is gone (``returncode`` is None when it
    was not our child, e.g. a headless run in another terminal)."""

    def __init__(self, run_id: str, returncode: int | None, stderr_tail: list[str]) -> None:
        super().__init__()
        self.run_id = run_id
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class FollowWarning(Message):
    """A follower skipped something (a garbled event line), or stopped on an error."""

    def __init__(self, run_id: str, text: str, *, stopped: bool = False) -> None:
        super().__init__()
        self.run_id = run_id
        self.text = text
        self.stopped = stopped


class ScanDone(Message):
    """The periodic look at ``logs/``, ``presets/`` and ``checkpoints/``."""

    def __init__(self, result: "ScanResult") -> None:
        super().__init__()
        self.result = result
