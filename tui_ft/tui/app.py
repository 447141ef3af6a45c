"""The tui-ft dashboard.

The app owns the run state (one :class:`RunState` per run folder) and the
launch queue. Workers do the waiting: a thread worker scans the project
folders every two seconds, a thread worker launches each run, and an async
worker per live run follows its ``events.jsonl`` and ``stderr.log``. They
report with the messages of :mod:`tui_ft.tui.messages`; the handlers here
update the state and hand it to the panes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path

from functools import partial

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from tui_ft.core.events import TERMINAL_TYPES, CheckpointSaved, EpochEnd, EventFollower, RunFinished, RunStarted
from tui_ft.core.library import CheckpointInfo, Library
from tui_ft.core.paths import Paths
from tui_ft.core.presets import Preset, PresetError, dump_preset, load_preset, preset_from_dict
from tui_ft.core.runs import RunSummary, pid_alive
from tui_ft.tui.charts import Predictions, PredictionsError, chain_stages, read_predictions, series_from_history
from tui_ft.tui.commands import TuiFtCommands
from tui_ft.tui.form import PresetForm
from tui_ft.tui.launcher import (
    STDERR_FILE,
    LaunchedPlan,
    TextTail,
    check_plan_file,
    check_preset,
    interrupt,
    launch,
    launch_plan,
    tail_lines,
)
from tui_ft.tui.messages import (
    FollowWarning,
    LaunchFailed,
    PlanLaunched,
    RunEnded,
    RunEvents,
    RunLaunched,
    RunOutput,
    ScanDone,
)
from tui_ft.tui.modals import ConfirmScreen, HelpScreen, PresetPicker, TextScreen
from tui_ft.tui.panes import LibraryPane, PresetsPane, RunsPane
from tui_ft.tui.plots import CurvePlot, ErrorPlot, ParityPlot
from tui_ft.tui.scanner import PENDING_LIVE_S, PresetEntry, ScanResult, scan
from tui_ft.tui.state import LaunchQueue, LogLine, RunState

POLL_S = 0.25  # how often a follower reads a live run's files
SCAN_S = 2.0  # how often logs/, presets/ and checkpoints/ are looked at

# which tab each tab-specific action belongs to (the footer shows a tab's keys only there)
TAB_OF_ACTION = {
    "launch": "presets",
    "enqueue": "presets",
    "new_preset": "presets",
    "cancel_run": "runs",
    "toggle_overlay": "runs",
    "toggle_log": "runs",
    "next_chart": "runs",
    "clear_queue": "runs",
    "continue_selected": "library",
    "show_ckpt_preset": "library",
    "delete_ckpt": "library",
}


def needs_ui(method):
    """Skip a handler once the app is closing (its widgets are gone; a worker's
    last message may still arrive)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._closing or self._closed or not self.query("#runs-pane"):
            return None
        return method(self, *args, **kwargs)

    return wrapper


class TuiFtApp(App):
    """Presets, live runs and the checkpoint library of one project folder."""

    CSS_PATH = "app.tcss"
    TITLE = "tui-ft"
    SUB_TITLE = "CHGNet fine-tuning"
    COMMANDS = App.COMMANDS | {TuiFtCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f1", "help", "Help", show=False),
        Binding("1", "show_tab('presets')", "Presets tab", show=False),
        Binding("2", "show_tab('runs')", "Runs tab", show=False),
        Binding("3,k", "show_tab('library')", "Library tab", show=False),
        # presets tab
        Binding("l", "launch", "Launch"),
        Binding("q", "enqueue", "Queue"),
        Binding("n", "new_preset", "New preset"),
        # runs tab
        Binding("c", "cancel_run", "Cancel run"),
        Binding("o,space", "toggle_overlay", "Overlay"),
        Binding("g", "toggle_log", "Log scale"),
        Binding("v", "next_chart", "Chart"),
        Binding("x", "clear_queue", "Clear queue", show=False),
        # library tab
        Binding("n", "continue_selected", "Continue from"),
        Binding("p", "show_ckpt_preset", "Preset"),
        Binding("d", "delete_ckpt", "Delete"),
    ]

    selected_run: reactive[str | None] = reactive(None)
    log_scale: reactive[bool] = reactive(False)

    def __init__(self, paths: Paths | None = None) -> None:
        super().__init__()
        self.paths = paths or Paths.default()
        self.runs: dict[str, RunState] = {}
        self.plans: list[LaunchedPlan] = []  # plan processes started here (their stages are in runs)
        self.queue = LaunchQueue()
        self.preset_entries: list[PresetEntry] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.scans = 0  # completed scans (tests wait for the first)
        self._presets_sig: tuple | None = None
        self._library_sig: tuple | None = None
        self._launching = 0
        self._predictions: dict[str, Predictions | str] = {}
        self._select_preset_after_scan: str | None = None
        self._cancel_enabled = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="main-tabs", initial="presets"):
            with TabPane("Presets", id="presets"):
                yield PresetsPane(id="presets-pane")
            with TabPane("Runs", id="runs"):
                yield RunsPane(id="runs-pane")
            with TabPane("Library", id="library"):
                yield LibraryPane(self.paths, id="library-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.paths.root)
        self.request_scan(force=True)
        self.set_interval(SCAN_S, self.request_scan, name="scan")
        self.set_interval(1.0, self._tick, name="elapsed")
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
    def curve(self) -> CurvePlot:
        return self.query_one("#curve", CurvePlot)

    @property
    def active_tab(self) -> str:
        return self.query_one("#main-tabs", TabbedContent).active

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tab = TAB_OF_ACTION.get(action)
        if tab is None:
            return True
        try:
            if self.active_tab != tab:
                return False
        except Exception:  # noqa: BLE001 - not composed yet
            return False
        if action == "cancel_run":
            st = self.runs.get(self.selected_run or "")
            return True if st is not None and st.active else None
        if action == "clear_queue":
            return bool(len(self.queue))
        return True

    @on(TabbedContent.TabActivated, "#main-tabs")
    @needs_ui
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        target = {"presets": "#presets-table", "runs": "#runs-table", "library": "#ckpt-table"}.get(event.pane.id or "")
        if target:
            self.query_one(target, DataTable).focus()
        self.refresh_bindings()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#main-tabs", TabbedContent).active = tab

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        return [
            (
                "Everywhere",
                [
                    ("1 2 3", "Presets / Runs / Library tab (k: Library)"),
                    ("? / F1", "this help"),
                    ("ctrl+p", "command palette: launch a preset, show a run, continue from a checkpoint"),
                    ("tab", "move the focus"),
                    ("ctrl+q", "quit (runs keep training in the background)"),
                ],
            ),
            (
                "Presets",
                [
                    ("l", "launch the selected preset now"),
                    ("q", "queue it: queued presets start one by one, when no run is training"),
                    ("n", "new preset from the selected one (form)"),
                ],
            ),
            (
                "Runs",
                [
                    ("c", "cancel the selected run (it saves last.pt)"),
                    ("o / space", "overlay the selected run on the chart"),
                    ("g", "log scale (log10 MAE) on/off"),
                    ("v", "next chart: learning curve, parity plot, error histogram"),
                    ("x", "clear the queue"),
                ],
            ),
            (
                "Library",
                [
                    ("enter / n", "continue from this checkpoint: pick a preset, launch it from here"),
                    ("p", "show the resolved preset stored in the checkpoint"),
                    ("d", "delete the run's checkpoints (asks first)"),
                ],
            ),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    async def action_quit(self) -> None:
        """Quit; say first that our runs keep training without the dashboard."""
        ours = [st for st in self.runs.values() if st.active and st.launched is not None and st.launched.poll() is None]
        plans = [lp for lp in self.plans if lp.poll() is None]
        if not ours and not plans:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        busy = [st.run_id for st in ours] + [f"plan {lp.name}" for lp in plans]
        names = ", ".join(busy[:3]) + (" ..." if len(busy) > 3 else "")
        self.push_screen(
            ConfirmScreen(
                f"{len(busy)} run(s) still training: {names}.\nThey keep running in the background; "
                "open tui-ft again to follow them, or cancel them first. Quit now?",
                yes="Quit",
                no="Stay",
            ),
            answered,
        )

    def get_system_commands(self, screen: Screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help: keys", "Show the keys of each tab", self.action_help)
        yield SystemCommand("Toggle log scale", "Plot log10 MAE on the learning curve", self.action_toggle_log_any)

    # ------------------------------------------------------------------ scanning

    def request_scan(self, force: bool = False) -> None:
        self._scan(
            frozenset(self.runs),
            None if force else self._presets_sig,
            None if force else self._library_sig,
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan", description="scan project folders")
    def _scan(self, known: frozenset[str], presets_sig: tuple | None, library_sig: tuple | None) -> None:
        result = scan(self.paths, known, presets_sig, library_sig)
        self.post_message(ScanDone(result))

    @needs_ui
    def on_scan_done(self, message: ScanDone) -> None:
        res: ScanResult = message.result
        changed = False
        for found in res.new_runs:
            if found.run_id in self.runs:
                continue
            st = RunState(RunSummary(run_id=found.run_id))
            if found.live:
                self.runs[found.run_id] = st
                self._follow(st)
            else:
                st.apply(found.events)
                st.summary.check_alive()
                if st.active:  # no final event and nobody writing: it ended badly
                    st.ended(None, tail_lines(self.paths.run_log_dir(found.run_id) / STDERR_FILE, 5))
                self.runs[found.run_id] = st
            changed = True
        for run_id in res.gone_runs:
            st = self.runs.get(run_id)
            if st is not None and not st.active:
                del self.runs[run_id]
                changed = True
        if changed:
            self.runs_pane.set_runs(list(self.runs.values()))
            if self.selected_run is None or self.selected_run not in self.runs:
                self.selected_run = self.runs_pane.selected_run_id
        if res.presets is not None:
            self._presets_sig = res.presets_sig
            self.preset_entries = res.presets
            self.presets_pane.set_entries(res.presets)
            if self._select_preset_after_scan:
                self.presets_pane.select(self._select_preset_after_scan)
                self._select_preset_after_scan = None
        if res.library is not None:
            self._library_sig = res.library_sig
            self.checkpoints = res.library
            self.library_pane.set_items(res.library)
        for w in res.warnings[:3]:
            self.notify(w, severity="warning", timeout=6)
        self.scans += 1

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
        its process is gone (our child) or it wrote a final event (a run
        started elsewhere)."""
        try:
            await self._follow_loop(run_id)
        except Exception as exc:  # noqa: BLE001 - report, keep the app running
            self.post_message(FollowWarning(run_id, f"stopped following {run_id}: {type(exc).__name__}: {exc}", stopped=True))

    async def _follow_loop(self, run_id: str) -> None:
        worker = get_current_worker()
        run_dir = self.paths.run_log_dir(run_id)
        follower = EventFollower(run_dir / "events.jsonl", warn=lambda msg: self.post_message(FollowWarning(run_id, msg)))
        stderr = TextTail(run_dir / STDERR_FILE)
        pid = 0
        terminal = False
        last_change = time.monotonic()

        def drain() -> None:
            nonlocal pid, terminal, last_change
            events = follower.poll()
            if events:
                last_change = time.monotonic()
                for ev in events:
                    if isinstance(ev, RunStarted):
                        pid = ev.pid
                    if ev.type in TERMINAL_TYPES:
                        terminal = True
                self.post_message(RunEvents(run_id, events))
            lines = stderr.poll()
            if lines:
                self.post_message(RunOutput(run_id, lines))

        while not worker.is_cancelled:
            drain()
            st = self.runs.get(run_id)
            launched = st.launched if st is not None else None
            if launched is not None:
                rc = launched.poll()
                if rc is not None:
                    drain()
                    self.post_message(RunEnded(run_id, rc, tail_lines(launched.stderr_path, 8)))
                    return
            elif terminal:
                self.post_message(RunEnded(run_id, None, []))
                return
            elif pid and not pid_alive(pid):
                await asyncio.sleep(POLL_S)  # the last lines may still be on their way
                drain()
                self.post_message(RunEnded(run_id, None, tail_lines(run_dir / STDERR_FILE, 8)))
                return
            elif not pid and time.monotonic() - last_change > PENDING_LIVE_S:
                self.post_message(RunEnded(run_id, None, tail_lines(run_dir / STDERR_FILE, 8)))
                return
            await asyncio.sleep(POLL_S)

    @needs_ui
    def on_run_events(self, message: RunEvents) -> None:
        st = self.runs.get(message.run_id)
        if st is None:
            st = self.runs[message.run_id] = RunState(RunSummary(run_id=message.run_id))
            self.runs_pane.set_runs(list(self.runs.values()))
        before = st.status
        added = st.apply(message.events)
        self.runs_pane.update_run(st)
        if message.run_id == self.selected_run:
            self.runs_pane.append_log(added)
        if any(isinstance(ev, RunStarted) for ev in message.events):
            self.runs_pane.set_runs(list(self.runs.values()))  # its start time fixes its place
        if any(isinstance(ev, EpochEnd) for ev in message.events):
            if message.run_id == self.selected_run or st.overlay:
                self._update_curve()
        if any(isinstance(ev, (CheckpointSaved, RunFinished)) for ev in message.events):
            self.request_scan()
        for ev in message.events:
            if isinstance(ev, RunFinished):
                tm = "n/a" if ev.test_mae is None else f"{ev.test_mae:.4f}"
                self.notify(f"{message.run_id} finished: test MAE {tm} eV/atom", title="run finished", timeout=6)
                if message.run_id == self.selected_run:
                    self._update_predictions()
            elif ev.type == "run_failed":
                self.notify(f"{message.run_id}: {st.summary.message}", title="run failed", severity="error", timeout=10)
        if before != st.status:
            self._refresh_cancel_key()

    @needs_ui
    def on_run_output(self, message: RunOutput) -> None:
        st = self.runs.get(message.run_id)
        if st is None:
            return
        added = st.add_stderr(message.lines)
        if added and message.run_id == self.selected_run:
            self.runs_pane.append_log(added)

    @needs_ui
    def on_run_ended(self, message: RunEnded) -> None:
        st = self.runs.get(message.run_id)
        if st is None:
            return
        was_active = st.active
        n_log = len(st.log)
        st.ended(message.returncode, message.stderr_tail)
        self.runs_pane.update_run(st)
        if message.run_id == self.selected_run:
            self.runs_pane.append_log(st.log[n_log:])
        if was_active and not st.active:
            self.notify(f"{message.run_id}: {st.summary.message}", title=f"run {st.status}", severity="error", timeout=10)
        self._refresh_cancel_key()
        self._start_queued()

    @needs_ui
    def on_follow_warning(self, message: FollowWarning) -> None:
        self.notify(message.text, severity="warning", timeout=6)
        st = self.runs.get(message.run_id)
        if message.stopped and st is not None:
            st.following = False

    @needs_ui
    def _tick(self) -> None:
        for st in self.runs.values():
            if st.active:
                self.runs_pane.update_elapsed(st)
        for lp in self.plans:
            rc = lp.poll()
            if rc is None or lp.reported:
                continue
            lp.reported = True
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

    # ------------------------------------------------------------------ selection and charts

    @on(DataTable.RowHighlighted, "#runs-table")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected_run = event.row_key.value if event.row_key else None

    @needs_ui
    def watch_selected_run(self, run_id: str | None) -> None:
        st = self.runs.get(run_id or "")
        if st is not None and not st.launched and not st.stderr_loaded:
            # a run from an earlier session: show the end of its stderr.log once
            st.stderr_loaded = True
            if not st.following:
                old = st.add_stderr(tail_lines(self.paths.run_log_dir(st.run_id) / STDERR_FILE, 20))
                if old:
                    st.log.insert(len(st.log) - len(old), LogLine("── end of stderr.log ──", "stderr"))
        self.runs_pane.show_log(run_id, st.log if st else [])
        self._update_curve()
        self._update_predictions()
        self._refresh_cancel_key()

    def _refresh_cancel_key(self) -> None:
        """Dim or light "c Cancel run" in the footer when that changes (a footer
        refresh rebuilds its keys and relayouts the screen: not on every move)."""
        st = self.runs.get(self.selected_run or "")
        can = st is not None and st.active
        if can != self._cancel_enabled:
            self._cancel_enabled = can
            self.refresh_bindings()

    def watch_log_scale(self, value: bool) -> None:
        try:
            self.curve.log_scale = value
        except Exception:  # noqa: BLE001 - before compose
            pass

    def _plan_chain(self, st: RunState) -> list[RunState]:
        """The earlier stages of the plan ``st`` belongs to, followed by ``st``
        (parent links between stages of the same plan), oldest first."""
        chain = [st]
        seen = {st.run_id}
        cur = st
        while cur.summary.plan and (cur.summary.stage or 1) > 1 and cur.summary.parent:
            prev = self.runs.get(cur.summary.parent.split("@")[0])
            if prev is None or prev.run_id in seen or prev.summary.plan != cur.summary.plan:
                break
            chain.append(prev)
            seen.add(prev.run_id)
            cur = prev
        return chain[::-1]

    def _update_curve(self) -> None:
        st = self.runs.get(self.selected_run or "")
        primary = None
        bounds: list[float] = []
        if st is not None:
            stages = [series_from_history(s.run_id, s.summary.history) for s in self._plan_chain(st)]
            primary, bounds = chain_stages(stages)
        overlays = [
            series_from_history(o.run_id, o.summary.history)
            for o in sorted(self.runs.values(), key=lambda s: s.run_id)
            if o.overlay and (st is None or o.run_id != st.run_id)
        ]
        self.curve.set_runs(primary, overlays, boundaries=bounds)

    def predictions_path(self, st: RunState) -> Path:
        p = st.summary.predictions
        if p and Path(p).is_absolute() and Path(p).is_file():
            return Path(p)
        return self.paths.run_log_dir(st.run_id) / (Path(p).name if p else "test_predictions.csv")

    def _update_predictions(self) -> None:
        parity = self.query_one("#parity", ParityPlot)
        errors = self.query_one("#errors", ErrorPlot)
        st = self.runs.get(self.selected_run or "")
        if st is None or st.status != "finished":
            note = "the parity plot and error histogram appear when the run finishes"
            if st is not None and st.status in ("failed", "crashed", "interrupted"):
                note = f"no test predictions: the run {st.status}"
            parity.set_predictions(None, None, note)
            errors.set_predictions(None, None, note)
            return
        cached = self._predictions.get(st.run_id)
        if cached is None:
            try:
                cached = read_predictions(self.predictions_path(st))
            except PredictionsError as exc:
                cached = str(exc)
            self._predictions[st.run_id] = cached
        if isinstance(cached, str):
            parity.set_predictions(st.run_id, None, cached)
            errors.set_predictions(st.run_id, None, cached)
        else:
            parity.set_predictions(st.run_id, cached)
            errors.set_predictions(st.run_id, cached)

    def action_toggle_overlay(self) -> None:
        run_id = self.runs_pane.selected_run_id
        st = self.runs.get(run_id or "")
        if st is None:
            return
        st.overlay = not st.overlay
        self.runs_pane.update_run(st, now=True)
        self._update_curve()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.notify("log scale: log10 MAE" if self.log_scale else "linear scale", timeout=2)

    def action_next_chart(self) -> None:
        tabs = self.query_one("#chart-tabs", TabbedContent)
        order = ["tab-curve", "tab-parity", "tab-errors"]
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)] if tabs.active in order else order[0]

    def action_toggle_log_any(self) -> None:
        self.action_toggle_log()

    def show_run(self, run_id: str) -> None:
        self.action_show_tab("runs")
        self.runs_pane.select(run_id)
        self.selected_run = run_id

    # ------------------------------------------------------------------ launching

    def _selected_entry(self) -> PresetEntry | None:
        entry = self.presets_pane.selected
        if entry is None:
            self.notify("no preset selected", severity="warning")
            return None
        if not entry.ok:
            self.push_screen(TextScreen(f"{entry.path.name} cannot be launched", "\n".join(entry.errors), error=True))
            return None
        return entry

    def action_launch(self) -> None:
        entry = self._selected_entry()
        if entry is not None:
            self.launch_entry(entry)

    def launch_entry(self, entry: PresetEntry) -> None:
        if entry.is_plan:
            self.launch_plan(entry.path)
            return
        # reload: the file may have changed since the last scan
        try:
            preset = load_preset(entry.path)
        except PresetError as exc:
            self.push_screen(TextScreen(f"{entry.path.name} cannot be launched", str(exc), error=True))
            self.request_scan()
            return
        self.launch_preset(preset)

    def launch_preset(self, preset: Preset, *, select: bool = True) -> None:
        """Start ``preset`` in its own process (from a thread worker)."""
        self._launching += 1
        self.run_worker(
            partial(self._launch_blocking, preset, select),
            thread=True,
            group="launch",
            description=f"launch {preset.name}",
            exclusive=False,
            exit_on_error=False,
        )

    def _launch_blocking(self, preset: Preset, select: bool) -> None:
        try:
            check_preset(preset, self.paths)
            launched = launch(preset, self.paths)
        except PresetError as exc:
            self.post_message(LaunchFailed(f"cannot launch {preset.name}", str(exc)))
        except OSError as exc:
            self.post_message(LaunchFailed(f"cannot launch {preset.name}", f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(RunLaunched(launched, select=select))

    @needs_ui
    def launch_plan(self, path: Path, *, select: bool = True) -> None:
        """Start a multi-stage plan in its own process (from a thread worker)."""
        self._launching += 1
        self.run_worker(
            partial(self._launch_plan_blocking, path, select),
            thread=True,
            group="launch",
            description=f"launch plan {path.stem}",
            exclusive=False,
            exit_on_error=False,
        )

    def _launch_plan_blocking(self, path: Path, select: bool) -> None:
        try:
            check_plan_file(path, self.paths)
            launched = launch_plan(path, self.paths)
        except PresetError as exc:
            self.post_message(LaunchFailed(f"cannot launch plan {path.name}", str(exc)))
        except OSError as exc:
            self.post_message(LaunchFailed(f"cannot launch plan {path.name}", f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(PlanLaunched(launched, select=select))

    @needs_ui
    def on_plan_launched(self, message: PlanLaunched) -> None:
        self._launching = max(0, self._launching - 1)
        self.plans.append(message.launched)
        self.notify(f"started plan {message.launched.name}: its stages appear in Runs as they start", timeout=5)
        if message.select:
            self.action_show_tab("runs")
        self.request_scan()

    def on_run_launched(self, message: RunLaunched) -> None:
        self._launching = max(0, self._launching - 1)
        launched = message.launched
        st = self.runs.get(launched.run_id)
        if st is None:
            st = self.runs[launched.run_id] = RunState(RunSummary(run_id=launched.run_id, preset_name=launched.preset_name))
        st.launched = launched
        if st.summary.preset_name == "?":
            st.summary.preset_name = launched.preset_name
        self._follow(st)
        self.runs_pane.set_runs(list(self.runs.values()))
        self.notify(f"started {launched.run_id}", timeout=3)
        if message.select:
            self.show_run(launched.run_id)
        elif self.active_tab != "runs":
            # not looking at the runs: have the new run selected when they do
            self.runs_pane.select(launched.run_id)
            self.selected_run = launched.run_id
        self._refresh_cancel_key()

    @needs_ui
    def on_launch_failed(self, message: LaunchFailed) -> None:
        self._launching = max(0, self._launching - 1)
        self.push_screen(TextScreen(message.title, message.text, error=True))
        self._start_queued()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised: show the error, keep the app running."""
        if event.state != WorkerState.ERROR:
            return
        worker = event.worker
        err = worker.error
        if worker.group == "launch":
            self._launching = max(0, self._launching - 1)
        self.push_screen(TextScreen(f"error in '{worker.description}'", f"{type(err).__name__}: {err}", error=True))

    # ------------------------------------------------------------------ queue

    @property
    def device_busy(self) -> bool:
        if self._launching:
            return True
        if any(lp.poll() is None for lp in self.plans):
            return True
        for st in self.runs.values():
            if st.launched is not None and st.launched.poll() is None:
                return True
            if st.active and st.following:
                return True
        return False

    def action_enqueue(self) -> None:
        entry = self._selected_entry()
        if entry is not None:
            self.enqueue_entry(entry)

    def enqueue_entry(self, entry: PresetEntry) -> None:
        self.queue.add(entry.path, entry.name)
        self.notify(f"queued {entry.name} ({len(self.queue)} waiting)", timeout=3)
        self._show_queue()
        self._start_queued()

    def _show_queue(self) -> None:
        self.runs_pane.set_queue(self.queue.describe())

    def _start_queued(self) -> None:
        item = self.queue.pop_if_idle(self.device_busy)
        if item is None:
            return
        self._show_queue()
        if next((e.is_plan for e in self.preset_entries if e.path == item.path), False):
            self.launch_plan(item.path, select=False)
            return
        try:
            preset = load_preset(item.path)
        except PresetError as exc:
            self.notify(f"queued preset {item.name} skipped: {exc}", severity="error", timeout=10)
            self._start_queued()
            return
        # a queued launch must not pull the user away from the tab they are on
        self.launch_preset(preset, select=False)

    def action_clear_queue(self) -> None:
        self.queue.items.clear()
        self._show_queue()

    # ------------------------------------------------------------------ cancel

    def action_cancel_run(self) -> None:
        st = self.runs.get(self.selected_run or "")
        if st is None or not st.active:
            self.notify("select a running run to cancel it", severity="warning")
            return
        pid = st.pid
        if not pid:
            self.notify(f"{st.run_id} has no process id yet; try again in a moment", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel_run(st.run_id)

        self.push_screen(
            ConfirmScreen(f"Cancel {st.run_id}?\nIt stops after saving last.pt (resume later with `tui-ft resume`).", yes="Cancel run", no="Keep running", danger=True),
            answered,
        )

    def cancel_run(self, run_id: str) -> None:
        st = self.runs.get(run_id)
        if st is None:
            return
        try:
            interrupt(st.pid)
        except ProcessLookupError:
            self.notify(f"{run_id}: its process is already gone", severity="warning")
            return
        except PermissionError as exc:
            self.notify(f"{run_id}: cannot signal process {st.pid}: {exc}", severity="error")
            return
        st.cancel_requested = True
        self.runs_pane.update_run(st, now=True)
        self.notify(f"interrupting {run_id}...", timeout=3)

    # ------------------------------------------------------------------ presets form

    def action_new_preset(self) -> None:
        entry = self._selected_entry()
        if entry is None:
            return
        if entry.preset is None:
            self.notify("the form makes a preset from a preset; select one (this is a plan)", severity="warning")
            return
        refs = sorted({c.ref for c in self.checkpoints} | {f"{c.preset_name}@best" for c in self.checkpoints if c.finished})
        lib = Library(self.paths)

        def saved(path: Path | None) -> None:
            if path is None:
                return
            self.notify(f"saved presets/{path.name}", timeout=4)
            self._select_preset_after_scan = path.name
            self.request_scan(force=True)

        self.push_screen(PresetForm(entry.preset, self.paths.presets, refs=refs, resolve_init=lib.resolve_ref), saved)

    # ------------------------------------------------------------------ library

    def _selected_ckpt(self) -> CheckpointInfo | None:
        c = self.library_pane.selected
        if c is None:
            self.notify("no checkpoint selected", severity="warning")
        return c

    @on(DataTable.RowSelected, "#ckpt-table")
    def _ckpt_enter(self, event: DataTable.RowSelected) -> None:
        self.action_continue_selected()

    def action_continue_selected(self) -> None:
        c = self._selected_ckpt()
        if c is not None:
            self.continue_from(c.ref)

    def continue_from(self, ref: str) -> None:
        """Pick a preset and launch it with ``model.init = ref``."""
        ok = [e for e in self.preset_entries if e.ok and e.preset is not None]
        if not ok:
            self.notify("no valid preset in presets/ to continue with", severity="error")
            return

        def rank(e: PresetEntry) -> tuple:
            p = e.preset
            return (0 if p.model.init else 1, 0 if p.finetune.mode == "full" else 1, e.name)

        choices = []
        for e in sorted(ok, key=rank):
            p = e.preset
            choices.append((e.path, f"{e.name:<22} {p.finetune.mode:<4}  lr {p.optim.lr:.0e}  {p.train.epochs} ep  data {e.data_label}"))

        def picked(path: Path | None) -> None:
            if path is None:
                return
            try:
                base = load_preset(path)
                preset = base.with_changes({"model.init": ref})
            except PresetError as exc:
                self.push_screen(TextScreen(f"cannot continue from {ref}", str(exc), error=True))
                return
            self.launch_preset(preset)

        self.push_screen(PresetPicker(ref, choices), picked)

    def action_show_ckpt_preset(self) -> None:
        c = self._selected_ckpt()
        if c is None:
            return
        d = c.meta.get("preset")
        if not isinstance(d, dict):
            self.push_screen(TextScreen(f"{c.ref}: preset", "this checkpoint stores no preset", error=True))
            return
        try:
            body, lang = dump_preset(preset_from_dict(d, f"{c.ref} meta")), "toml"
        except (PresetError, TypeError, ValueError):
            body, lang = json.dumps(d, indent=2, sort_keys=True), "json"
        self.push_screen(TextScreen(f"{c.ref}: the resolved preset it was trained with", body, language=lang))

    def action_delete_ckpt(self) -> None:
        c = self._selected_ckpt()
        if c is None:
            return
        st = self.runs.get(c.run_id)
        if st is not None and st.active:
            self.notify(f"{c.run_id} is still running; cancel it first", severity="warning")
            return
        kids = self.library_pane.library.children(c.run_id)
        extra = f"\n{len(kids)} checkpoint(s) were trained from it; they stay, but lose their parent." if kids else ""
        question = f"Delete all checkpoints of run {c.run_id} (best.pt and last.pt)?\nIts logs stay in logs/.{extra}"

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                Library(self.paths).delete(c.run_id)
            except (LookupError, OSError) as exc:
                self.notify(f"delete failed: {exc}", severity="error")
                return
            self.notify(f"deleted the checkpoints of {c.run_id}", timeout=4)
            self.request_scan(force=True)

        self.push_screen(ConfirmScreen(question, yes="Delete", no="Keep", danger=True), answered)


def main() -> None:  # pragma: no cover - `python -m tui_ft.tui.app`
    TuiFtApp().run()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TUI_FT_HOME", os.getcwd())
    main()
