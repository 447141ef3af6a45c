"""The headless display of a run's events (a front end, beside ``cli``): plain lines or a
rich display on a terminal, and the output helpers that survive a closed pipe."""

from __future__ import annotations

import os
import sys


def silence(name: str) -> None:
    """Send what is still written to ``sys.<name>`` to /dev/null: its reader is gone
    (``| head``, a closed terminal or SSH session) and output never stops a run."""
    stream = getattr(sys, name)
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    try:
        os.dup2(devnull.fileno(), stream.fileno())  # buffered bytes then flush harmlessly at exit
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured by a test)
        pass
    setattr(sys, name, devnull)


def write_line(name: str, line: str) -> None:
    try:
        print(line, file=getattr(sys, name), flush=True)
    except OSError:  # BrokenPipeError, EIO from a hung-up terminal...
        silence(name)


def err(msg: str) -> None:
    write_line("stderr", msg)


def out(msg: str) -> None:
    write_line("stdout", msg)


class Printer:
    """Writes each run's events to logs/<run>/events.jsonl and shows them to the user:
    plain lines when stdout is not a terminal (or --plain), a rich display otherwise.
    Progress events (graph conversion, features, test predictions) drive a rich progress
    bar on a terminal; in plain output only their milestones are printed
    (``Progress.milestone``: the first, each tenth and the last of a stage)."""

    def __init__(self, plain: bool):
        self.plain = plain or not sys.stdout.isatty()
        self.failed_shown = False
        self.console = None
        self.status = None
        self._bar = None  # rich.progress.Progress while a stage runs (terminal only)
        self._tasks: dict[tuple[str, str], object] = {}
        self._milestones: dict[tuple[str, str], object] = {}  # (run, stage) -> last Progress printed
        if not self.plain:
            from rich.console import Console

            self.console = Console(no_color=bool(os.environ.get("NO_COLOR")))
            self.status = self.console.status("starting...")
            self.status.start()

    def writer_for(self, run_id: str):
        """The display callback for a run (the engine itself writes events.jsonl)."""
        return self.show

    def on_batch(self, epoch: int, done: int, total: int) -> None:
        if self.status is not None:
            self.status.update(f"epoch {epoch}: {done}/{total} structures")

    def show(self, ev) -> None:
        """One line per event, the same text the dashboard's log shows (``describe``):
        results on stdout, progress and problems on stderr."""
        from tui_ft.core.common.events import EpochEnd, Message, Progress, RunFailed, RunInterrupted, describe

        if isinstance(ev, Progress):
            self._show_progress(ev)
            return
        line = describe(ev)
        if isinstance(ev, RunInterrupted):
            line = resume_hint(ev, line)
        if isinstance(ev, RunFailed):
            self.failed_shown = True
        if isinstance(ev, Message) and self.status is not None:
            self.status.update(ev.text)
        if line is None:
            return
        if ev.to_stderr:
            err(line)
        elif self.console is not None:
            try:
                self.console.print(line, highlight=False, markup=False)
                if isinstance(ev, EpochEnd) and self.status is not None:
                    self.status.update(f"epoch {ev.epoch + 1} training...")
            except OSError:  # the terminal went away: keep training, show nothing more
                self._drop_console()
        else:
            out(line)

    def _drop_console(self) -> None:
        status, self.status, self.console = self.status, None, None
        if status is not None:
            try:
                status.stop()
            except OSError:
                pass
        silence("stdout")

    def _show_progress(self, ev) -> None:
        key = (ev.run_id, ev.stage)
        if self.console is None:
            if ev.milestone(self._milestones.get(key)):
                self._milestones[key] = ev
                err(ev.describe())
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            if self.status is not None:
                self.status.stop()
            self._bar = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._bar.start()
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = self._bar.add_task(ev.stage, total=ev.total, rate="")
        self._bar.update(task, completed=ev.done, total=ev.total, rate=f"{ev.rate:.0f}/s" if ev.rate else "")
        if ev.final:
            self._bar.remove_task(task)
            del self._tasks[key]
            if not self._tasks:
                self._stop_bar()
            err(ev.describe())  # the stage's last line stays

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._tasks.clear()
            if self.status is not None:
                self.status.start()

    def close(self) -> None:
        self._stop_bar()
        if self.status is not None:
            try:
                self.status.stop()
            except OSError:
                self._drop_console()


def resume_hint(ev, line: str) -> str:
    """The ``run_interrupted`` line with how to continue, when a last.pt was saved:
    ``run R interrupted: ...; last.pt (epoch 1) saved; continue with: tui-ft resume R``
    (not for a sweep trial stopped by its pruner: that run is done)."""
    msg = ev.message or ""
    if line is None or "last.pt" not in msg or "nothing to resume" in msg or "pruner" in msg:
        return line
    return f"{line}; continue with: tui-ft resume {ev.run_id}"


def make_printer(plain: bool) -> Printer:
    return Printer(plain)
