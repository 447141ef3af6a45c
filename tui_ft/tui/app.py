"""The tui-ft dashboard.

The app wires the dashboard model (:class:`tui_ft.tui.model.Dashboard`: runs,
plans, queue, scan results; no Textual) to the three panes, which own their
keys. Workers do the waiting: a thread worker scans the project folders every
two seconds, a thread worker launches each run or plan, and an async worker
per live run follows its ``events.jsonl`` and ``stderr.log``. They report
with the messages of :mod:`tui_ft.tui.messages`; the handlers here update the
model and hand it to the panes.
"""

from __future__ import annotations

import asyncio
import functools
import os
from functools import partial
from pathlib import Path

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from tui_ft.core.common.events import CheckpointSaved, EpochEnd, RunFinished, RunStarted
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import Preset, load_preset
from tui_ft.core.config.fields import PresetError
from tui_ft.tui.commands import TuiFtCommands
from tui_ft.tui.gcpolicy import IdleCollector
from tui_ft.tui.launcher import LaunchedPlan, check_target, launch, launch_resume, resumable, tail_lines
from tui_ft.tui.messages import (
    ContinueRequested,
    FollowWarning,
    Launched,
    LaunchFailed,
    LaunchRequested,
    RescanRequested,
    ResumeRequested,
    RunEnded,
    RunEvents,
    RunOutput,
    ScanDone,
    SystemSampled,
)
from tui_ft.tui.modals import ConfirmScreen, HelpScreen, PresetPicker, TextScreen, binding_rows
from tui_ft.tui.model import Dashboard, RunWatch, Target
from tui_ft.tui.panes import LibraryPane, PresetsPane, RunsPane
from tui_ft.tui.plots import CurvePlot
from tui_ft.tui.scanner import PresetEntry, scan
from tui_ft.tui.state import RunState
from tui_ft.tui.studies import StudiesPane
from tui_ft.tui.sweeps import SweepsPane

POLL_S = 0.25  # how often a follower reads a live run's files
SYSTEM_S = 3.0  # how often the system pane samples CPU, memory and GPUs
SCAN_S = 2.0  # how often logs/, presets/ and checkpoints/ are looked at
# a scan that brought this many runs in: what it read lives as long as the app, so it is moved out of
# the garbage collector's full passes (tui_ft.tui.gcpolicy: with 3,000 runs read, a full pass walked
# every run's events and took 0.5-1.4 s, a pause that landed in the keys; BENCHMARKS.md section 13)
GC_FREEZE_RUNS = 50
TAB_TABLES = {"presets": "#presets-table", "runs": "#runs-table", "library": "#ckpt-table"}


def needs_ui(method):
    """Skip a handler once the app is closing (its widgets are gone; a worker's
    last message may still arrive); report an error in it as a problem."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._closing or self._closed or not self.query("#runs-pane"):
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - what the files held must never end the app
            # these handlers apply what workers read from logs/, checkpoints/ and
            # presets/: report the cause once and keep running
            self.log.error(f"{method.__name__} failed", exc)
            self.report_problem(f"{method.__name__}: {type(exc).__name__}: {exc}", severity="error")
            return None

    return wrapper


class TuiFtApp(App):
    """Presets, live runs and the checkpoint library of one project folder."""

    CSS_PATH = "app.tcss"
    TITLE = "tui-ft"
    SUB_TITLE = "CHGNet fine-tuning"
    COMMANDS = App.COMMANDS | {TuiFtCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    ENABLE_COMMAND_PALETTE = True

    # the keys of each tab are on its pane (PresetsPane, RunsPane, LibraryPane)
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?", tooltip="this help"),
        Binding("q", "quit", "Quit", tooltip="quit (runs keep training in the background)"),
        Binding("f1", "help", "Help", show=False, tooltip="this help"),
        Binding("1", "show_tab('presets')", "Presets tab", show=False),
        Binding("2", "show_tab('runs')", "Runs tab", show=False),
        Binding("3,k", "show_tab('library')", "Library tab", show=False),
        Binding("4", "show_tab('studies')", "Studies tab", show=False),
        Binding("5", "show_tab('sweeps')", "Sweeps tab", show=False),
        Binding(
            "ctrl+p", "command_palette", "palette", show=False, priority=True,
            tooltip="command palette: launch or enqueue a preset, show or resume a run, continue from a checkpoint, problems",
        ),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, tooltip="quit (runs keep training in the background)"),
    ]

    def __init__(self, paths: Paths | None = None, *, bell: bool = False) -> None:
        super().__init__()
        self.paths = paths or Paths.default()
        self.bell_on_end = bell  # ring the terminal bell when a run ends (tui-ft --bell)
        self.model = Dashboard(self.paths)
        self.scans = 0  # completed scans (tests wait for the first)
        self._scan_worker: Worker | None = None
        self._rescan = False  # a scan was asked for while one ran: start it when that one is done
        self._rescan_force = False
        self._sampler = None  # tui_ft.core.common.system.SystemSampler, made in its worker
        self.gc = IdleCollector()  # the collector's full passes between keys (tui_ft.tui.gcpolicy)
        self.system_samples = 0  # system pane samples shown (tests wait for the first)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="main-tabs", initial="presets"):
            with TabPane("Presets", id="presets"):
                yield PresetsPane(self.model, id="presets-pane")
            with TabPane("Runs", id="runs"):
                yield RunsPane(self.model, id="runs-pane")
            with TabPane("Library", id="library"):
                yield LibraryPane(self.model, id="library-pane")
            with TabPane("Studies", id="studies"):
                yield StudiesPane(self.paths, id="studies-pane")
            with TabPane("Sweeps", id="sweeps"):
                yield SweepsPane(self.paths, id="sweeps-pane")
        yield Footer()

    def on_unmount(self) -> None:
        self.gc.stop()  # the process may go on (a test, a script): Python's own collector again

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent) and not event.is_forwarded:
            self.gc.input()
        await super().on_event(event)

    def on_mount(self) -> None:
        self.gc.start()
        self.set_interval(0.5, self.gc.tick, name="gc")
        self.sub_title = str(self.paths.root)
        self.request_scan(force=True)
        self.set_interval(SCAN_S, self.request_scan, name="scan")
        self.set_interval(1.0, self._tick, name="elapsed")
        self.set_timer(0.5, self._sample_system)
        self.set_interval(SYSTEM_S, self._sample_system, name="system")
        self.query_one("#presets-table", DataTable).focus()

    @property
    def presets_pane(self) -> PresetsPane:
        return self.query_one(PresetsPane)

    @property
    def runs_pane(self) -> RunsPane:
        return self.query_one(RunsPane)

    @property
    def library_pane(self) -> LibraryPane:
        return self.query_one(LibraryPane)

    @property
    def runs(self) -> dict[str, RunState]:
        return self.model.runs

    @property
    def curve(self) -> CurvePlot:
        return self.query_one("#curve", CurvePlot)

    @property
    def active_tab(self) -> str:
        return self.query_one("#main-tabs", TabbedContent).active

    # ------------------------------------------------------------------ keys

    @on(TabbedContent.TabActivated, "#main-tabs")
    @needs_ui
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        target = TAB_TABLES.get(event.pane.id or "")
        if target:
            self.query_one(target, DataTable).focus()
        self.refresh_bindings()

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one("#main-tabs", TabbedContent)
        if tabs.active == tab:
            return
        # Let go of the focus first. When a focused widget is hidden with its tab, Textual hands
        # the focus to a focusable sibling even if that sibling is hidden too (the Library's
        # lineage box next to its table). That focus switched the tab straight back, so 4 and 5
        # did nothing there. The new tab's table takes the focus (_tab_changed, ListViewPane.on_show).
        # A tab with a table (TAB_TABLES) gets it in the same step as the switch instead: no layout
        # comes in between (so nothing is handed to a hidden sibling), and the footer is rebuilt
        # fewer times (not for a moment with no focus and again for the table: each a layout of the screen).
        screen, target = tabs.screen, TAB_TABLES.get(tab)
        if screen.focused is not None and target is None:
            screen.set_focus(None)
        tabs.active = tab
        if target is not None:
            screen.set_focus(self.query_one(target, DataTable))

    def show_run(self, run_id: str) -> None:
        self.action_show_tab("runs")
        self.runs_pane.show_run(run_id)

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The keys, read from the bindings: the app's and its main screen's, then each tab's pane."""
        sections = [("Everywhere", binding_rows([self, self.screen_stack[0]], self.get_key_display))]
        for title, pane in (("Presets", self.presets_pane), ("Runs", self.runs_pane), ("Library", self.library_pane),
                           ("Studies", self.query_one(StudiesPane)), ("Sweeps", self.query_one(SweepsPane))):
            sections.append((title, binding_rows([pane], self.get_key_display)))
        return sections

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    async def action_quit(self) -> None:
        """Quit; say first that our runs keep training without the dashboard."""
        busy = self.model.training()
        if not busy:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        names = ", ".join(busy[:3]) + (" ..." if len(busy) > 3 else "")
        question = (
            f"{len(busy)} run(s) still training: {names}.\nThey keep running in the background; "
            "open tui-ft again to follow them, or cancel them first. Quit now?"
        )
        self.push_screen(ConfirmScreen(question, yes="Quit", no="Stay"), answered)

    def get_system_commands(self, screen: Screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help: keys", "Show the keys of each tab", self.action_help)
        yield SystemCommand("Toggle log scale", "Logarithmic MAE axis on the learning curve", self.action_toggle_log_any)
        yield SystemCommand("Problems", "Files the dashboard skipped (bad event lines, bad checkpoint sidecars)", self.action_show_problems)

    def action_show_problems(self) -> None:
        probs = self.model.problems
        body = "\n".join(f"- {p}" for p in probs) if probs else "none so far"
        self.push_screen(TextScreen(f"problems seen ({len(probs)}), each reported once", body))

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None, markup: bool = False) -> None:
        """A notification, always as plain text: its messages name files, runs and errors
        (``[sweep]``, ``[optim]``), which Rich markup would eat. Widgets' ``notify`` lands here."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def report_problem(self, text: str, *, severity: str = "warning") -> None:
        """Show a problem once per distinct cause (a notification; all are
        listed by the "Problems" palette command), never a modal per scan."""
        if self.model.new_problem(text):
            self.notify(text, title="problem", severity=severity, timeout=8)

    def action_toggle_log_any(self) -> None:
        self.runs_pane.action_toggle_log()

    # ------------------------------------------------------------------ scanning

    def request_scan(self, force: bool = False) -> None:
        """Scan the project folders in a worker; while a scan runs, the next one waits for it
        (a long run's events take a while to read: scans must not pile up reading it at once)."""
        w = self._scan_worker
        if w is not None and w.state in (WorkerState.PENDING, WorkerState.RUNNING):
            self._rescan, self._rescan_force = True, self._rescan_force or force
            return
        force = force or self._rescan_force
        self._rescan = self._rescan_force = False
        m = self.model
        self._scan_worker = self._scan(
            frozenset(m.runs), None if force else m.presets_sig, None if force else m.library_sig, m.settled()
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan", description="scan project folders")
    def _scan(self, known: frozenset[str], presets_sig: tuple | None, library_sig: tuple | None, settled: dict[str, tuple]) -> None:
        self.post_message(ScanDone(scan(self.paths, known, presets_sig, library_sig, settled)))

    @needs_ui
    def on_scan_done(self, message: ScanDone) -> None:
        res = message.result
        changes = self.model.apply_scan(res)
        if len(res.new_runs) + len(res.changed_runs) >= GC_FREEZE_RUNS:
            # once the rows are drawn too; refcounting still frees what is dropped later (only cycles wait)
            self.call_after_refresh(self.gc.freeze)
        for st in changes.to_follow:
            self._follow(st)
        if changes.runs_changed:
            self.runs_pane.refresh_runs()
        if self.runs_pane.selected_run in changes.replaced:
            self.runs_pane.watch_selected_run(self.runs_pane.selected_run)  # read again: its log and charts
        if res.presets is not None:
            self.presets_pane.set_entries(res.presets)
        if res.library is not None:
            self.library_pane.set_items(res.library)
        elif changes.runs_changed:
            self.library_pane.refresh_status()
        if changes.replaced:
            self.runs_pane.refresh_cancel_key()
        for w in res.warnings:
            self.report_problem(w)
        self.scans += 1
        if self._rescan:
            self.set_timer(0.05, self.request_scan)  # asked for meanwhile: once this worker has ended

    # ------------------------------------------------------------------ the machine

    def _sample_system(self) -> None:
        pids = {st.run_id: st.pid for st in self.model.runs.values() if st.active and st.pid}
        self._system_sample(pids)

    @work(thread=True, exclusive=True, exit_on_error=False, group="system", description="sample CPU, memory, GPU")
    def _system_sample(self, pids: dict[str, int]) -> None:
        if self._sampler is None:
            from tui_ft.core.common.system import SystemSampler

            self._sampler = SystemSampler()
        self.post_message(SystemSampled(self._sampler.sample(pids)))

    def on_system_sampled(self, message: SystemSampled) -> None:
        try:
            pane = self.runs_pane
        except Exception:  # noqa: BLE001 - the app is closing
            return
        pane.show_system(message.sample.lines())
        self.system_samples += 1

    def on_rescan_requested(self, message: RescanRequested) -> None:
        self.request_scan(force=True)

    # ------------------------------------------------------------------ following runs

    def _follow(self, st: RunState) -> None:
        if st.following:
            return
        st.following = True
        self.run_worker(
            self._follow_run(st.run_id),
            group="follow",
            description=f"follow {st.run_id}",
            exclusive=False,
            exit_on_error=False,
        )

    async def _follow_run(self, run_id: str) -> None:
        """Post a run's new events and stderr lines every POLL_S seconds until
        it ended (see :class:`RunWatch`)."""
        worker = get_current_worker()
        try:
            watch = RunWatch(
                self.paths,
                run_id,
                launched=lambda: getattr(self.model.get(run_id), "launched", None),
                warn=lambda msg: self.post_message(FollowWarning(run_id, msg)),
            )
            while not worker.is_cancelled:
                step = await asyncio.to_thread(watch.step)  # reading and parsing lines: off the UI's loop
                if step.events:
                    self.post_message(RunEvents(run_id, step.events))
                if step.lines:
                    self.post_message(RunOutput(run_id, step.lines))
                if step.ended:
                    self.post_message(RunEnded(run_id, step.returncode, step.stderr_tail or [], step.events_sig))
                    return
                await asyncio.sleep(0.02 if step.more else POLL_S)  # a long file: its next part soon
        except Exception as exc:  # noqa: BLE001 - report, keep the app running
            self.post_message(FollowWarning(run_id, f"stopped following {run_id}: {type(exc).__name__}: {exc}", stopped=True))

    @needs_ui
    def on_run_events(self, message: RunEvents) -> None:
        pane, run_id, events = self.runs_pane, message.run_id, message.events
        new = run_id not in self.model.runs
        st = self.model.run(run_id)
        if new:
            pane.set_runs(list(self.model.runs.values()))
        before = st.status
        added = st.apply(events)
        pane.update_run(st)
        selected = run_id == pane.selected_run
        if selected:
            pane.append_log(added)
        if any(isinstance(ev, RunStarted) for ev in events):
            pane.set_runs(list(self.model.runs.values()))  # its start time fixes its place
        if any(isinstance(ev, EpochEnd) for ev in events) and (selected or st.overlay):
            pane.update_curve()
        if any(isinstance(ev, (CheckpointSaved, RunFinished)) for ev in events):
            self.request_scan()
        for ev in events:
            if ev.type in ("run_finished", "run_failed", "run_pruned", "run_interrupted"):
                self.notify_end(run_id, ev, st.summary.message)
            if isinstance(ev, RunFinished) and selected:
                pane.update_predictions()
        if before != st.status:
            pane.refresh_cancel_key()
            self.library_pane.refresh_status()
        if selected and any(isinstance(ev, RunStarted) for ev in events):
            pane.show_default_chart(run_id)  # a run (re)starts: its learning curve

    def notify_end(self, run_id: str, ev, message: str = "") -> None:
        """A Textual notification that a run ended (and the terminal bell with ``tui-ft --bell``)."""
        from tui_ft.core.common.metrics import compact, is_potential

        if ev.type == "run_finished":
            if is_potential(ev.test_metrics):
                text = f"{run_id} finished: test {compact(ev.test_metrics, 'test')}"
            else:
                tm = "n/a" if ev.test_mae is None else f"{ev.test_mae:.4f}" + (f" {ev.unit}" if ev.unit else "")
                text = f"{run_id} finished: test MAE {tm}"
            self.notify(text, title="run finished", timeout=6)
        elif ev.type == "run_failed":
            self.notify(f"{run_id}: {message or ev.message}", title="run failed", severity="error", timeout=10)
        elif ev.type == "run_pruned":
            self.notify(f"{run_id} pruned at epoch {ev.epoch}: {ev.reason}", title="run pruned", severity="warning", timeout=8)
        else:
            self.notify(f"{run_id}: {ev.message}", title="run interrupted", severity="warning", timeout=8)
        if self.bell_on_end:
            self.bell()

    @needs_ui
    def on_run_output(self, message: RunOutput) -> None:
        st = self.model.get(message.run_id)
        if st is None:
            return
        added = st.add_stderr(message.lines)
        if added and message.run_id == self.runs_pane.selected_run:
            self.runs_pane.append_log(added)

    @needs_ui
    def on_run_ended(self, message: RunEnded) -> None:
        st = self.model.get(message.run_id)
        if st is None:
            return
        was_active = st.active
        n_log = len(st.log)
        st.ended(message.returncode, message.stderr_tail)
        st.events_sig = message.events_sig  # from here the scan notices new events (a resume elsewhere)
        self.runs_pane.update_run(st)
        if message.run_id == self.runs_pane.selected_run:
            self.runs_pane.append_log(st.log[n_log:])
        if was_active and not st.active:
            self.notify(f"{message.run_id}: {st.summary.message}", title=f"run {st.status}", severity="error", timeout=10)
            self.library_pane.refresh_status()
        elif st.launched is not None and st.launched.kind == "resume" and message.returncode not in (0, None) and st.status != "finished":
            why = message.stderr_tail[-1] if message.stderr_tail else f"exit code {message.returncode}"
            self.notify(f"resume of {message.run_id} ended: {why}", title="resume failed", severity="error", timeout=10)
        self.runs_pane.refresh_cancel_key()
        self._start_queued()

    @needs_ui
    def on_follow_warning(self, message: FollowWarning) -> None:
        self.report_problem(message.text)
        st = self.model.get(message.run_id)
        if message.stopped and st is not None:
            st.following = False

    @needs_ui
    def _tick(self) -> None:
        for st in self.model.runs.values():
            if st.active:
                self.runs_pane.update_elapsed(st)
        for lp, rc in self.model.ended_plans():
            if rc == 0:
                self.notify(f"plan {lp.name} finished", title="plan finished", timeout=6)
            else:
                tail = tail_lines(lp.stderr_path, 3)
                what = {130: "was interrupted", 2: "was rejected"}.get(rc, f"ended with exit code {rc}")
                self.notify(
                    f"plan {lp.name} {what}" + (f": {tail[-1]}" if tail else ""),
                    title="plan ended",
                    severity="warning" if rc == 130 else "error",
                    timeout=10,
                )
            self.request_scan()
            self._start_queued()

    # ------------------------------------------------------------------ launching

    def on_launch_requested(self, message: LaunchRequested) -> None:
        if message.now:
            self.launch_entry(message.entry)
        else:
            self.enqueue_entry(message.entry)

    def launch_entry(self, entry: PresetEntry) -> None:
        """Launch a preset file (read again: it may have changed since the last scan) or a plan file."""
        if entry.is_plan:
            self.launch(entry.path)
            return
        try:
            preset = load_preset(entry.path)
        except PresetError as exc:
            self.push_screen(TextScreen(f"{entry.path.name} cannot be launched", str(exc), error=True))
            self.request_scan()
            return
        self.launch(preset)

    def launch(self, target: Target, *, select: bool = True) -> None:
        """Start a preset or a plan file in its own process (from a thread worker).
        ``select``: switch to the runs tab (a queued launch does not)."""
        self.model.launching += 1
        name = target.name if isinstance(target, Preset) else f"plan {target.stem}"
        self.run_worker(
            partial(self._launch_blocking, target, select),
            thread=True,
            group="launch",
            description=f"launch {name}",
            exclusive=False,
            exit_on_error=False,
        )

    def on_resume_requested(self, message: ResumeRequested) -> None:
        self.resume(message.run_id)

    def resume(self, run_id: str) -> None:
        """``tui-ft resume RUN_ID`` in its own process (from a thread worker), then follow it."""
        st = self.model.get(run_id)
        status = st.status if st is not None else "unknown"
        why = resumable(run_id, status, self.paths)
        if st is not None and st.launched is not None and st.launched.poll() is None:
            why = f"{run_id} is still running"
        if why:
            self.notify(f"cannot resume: {why}", severity="warning")
            return
        self.model.launching += 1
        preset_name = st.summary.preset_name if st is not None else "?"
        self.run_worker(
            partial(self._resume_blocking, run_id, preset_name),
            thread=True,
            group="launch",
            description=f"resume {run_id}",
            exclusive=False,
            exit_on_error=False,
        )

    def _resume_blocking(self, run_id: str, preset_name: str) -> None:
        try:
            launched = launch_resume(run_id, preset_name, self.paths)
        except OSError as exc:
            self.post_message(LaunchFailed(f"cannot resume {run_id}", f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(Launched(launched))

    def _launch_blocking(self, target: Target, select: bool) -> None:
        name = target.name if isinstance(target, Preset) else f"plan {target.name}"
        try:
            check_target(target, self.paths)
            launched = launch(target, self.paths)
        except PresetError as exc:
            self.post_message(LaunchFailed(f"cannot launch {name}", str(exc)))
        except OSError as exc:
            self.post_message(LaunchFailed(f"cannot launch {name}", f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(Launched(launched, select=select))

    @needs_ui
    def on_launched(self, message: Launched) -> None:
        launched = message.launched
        if isinstance(launched, LaunchedPlan):
            self.model.add_plan(launched)
            self.notify(f"started plan {launched.name}: its stages appear in Runs as they start", timeout=5)
            if message.select:
                self.action_show_tab("runs")
            self.request_scan()
            return
        st = self.model.add_launched(launched)
        self._follow(st)
        self.runs_pane.set_runs(list(self.model.runs.values()))
        self.notify(f"{'resuming' if launched.kind == 'resume' else 'started'} {launched.run_id}", timeout=3)
        if message.select:
            self.show_run(launched.run_id)
            if launched.kind == "resume":
                self.runs_pane.watch_selected_run(launched.run_id)  # same run, fresh state: redraw
        elif self.active_tab != "runs":
            # not looking at the runs: have the new run selected when they do
            self.runs_pane.show_run(launched.run_id)
        self.runs_pane.refresh_cancel_key()

    @needs_ui
    def on_launch_failed(self, message: LaunchFailed) -> None:
        self.model.launch_done()
        self.push_screen(TextScreen(message.title, message.text, error=True))
        self._start_queued()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised: show the error, keep the app running."""
        if event.state != WorkerState.ERROR:
            return
        worker = event.worker
        err = worker.error
        if worker.group == "launch":
            self.model.launch_done()
        if worker.group == "scan":
            # the scan runs every SCAN_S: report its error once per cause, not a modal every time
            self.report_problem(f"scanning the project folders failed: {type(err).__name__}: {err}", severity="error")
            return
        self.push_screen(TextScreen(f"error in '{worker.description}'", f"{type(err).__name__}: {err}", error=True))

    # ------------------------------------------------------------------ queue

    def enqueue_entry(self, entry: PresetEntry) -> None:
        self.model.queue.add(entry.path, entry.name)
        self.notify(f"queued {entry.name} ({len(self.model.queue)} waiting)", timeout=3)
        self.runs_pane.show_queue()
        self._start_queued()

    def _start_queued(self) -> None:
        def skipped(item, why: str) -> None:
            self.notify(f"queued preset {item.name} skipped: {why}", severity="error", timeout=10)

        waiting = len(self.model.queue)
        target = self.model.next_queued(skipped)
        if len(self.model.queue) != waiting:
            self.runs_pane.show_queue()
        if target is not None:
            # a queued launch must not pull the user away from the tab they are on
            self.launch(target, select=False)

    # ------------------------------------------------------------------ continue from a checkpoint

    def on_continue_requested(self, message: ContinueRequested) -> None:
        self.continue_from(message.ref)

    def continue_from(self, ref: str) -> None:
        """Pick a preset and launch it with ``model.init = ref``."""
        choices = self.model.continue_choices()
        if not choices:
            self.notify("no valid preset in presets/ to continue with", severity="error")
            return

        def picked(path: Path | None) -> None:
            if path is None:
                return
            try:
                preset = load_preset(path).with_changes({"model.init": ref})
            except PresetError as exc:
                self.push_screen(TextScreen(f"cannot continue from {ref}", str(exc), error=True))
                return
            self.launch(preset)

        self.push_screen(PresetPicker(ref, choices), picked)


def main() -> None:  # pragma: no cover - `python -m tui_ft.tui.app`
    TuiFtApp().run()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TUI_FT_HOME", os.getcwd())
    main()
