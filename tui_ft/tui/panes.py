"""The three tabs: presets, runs, checkpoint library.

Each pane owns the keys that act on it (its ``BINDINGS``: the footer and the
help screen are made from them) and reads the dashboard model the app hands
it. What needs the app (a launch, a rescan) is asked for with a message of
:mod:`tui_ft.tui.messages`; panes never start training processes themselves.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from rich.style import Style
from rich.syntax import Syntax
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, RichLog, Static, TabbedContent, TabPane

from tui_ft.core.library.checkpoints import CheckpointInfo, Library
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.fields import PresetError
from tui_ft.core.config.dump import dump_preset
from tui_ft.core.config.presets import preset_from_dict
from tui_ft.tui.columns import KEEP, Col, FitTable
from tui_ft.tui.form import PresetForm
from tui_ft.tui import launcher
from tui_ft.tui.launcher import interrupt, resumable
from tui_ft.tui.messages import ContinueRequested, LaunchRequested, RescanRequested, ResumeRequested
from tui_ft.tui.modals import PREVIEW_THEME, ConfirmScreen, PathPrompt, TextScreen
from tui_ft.tui.model import Dashboard
from tui_ft.tui.charts import default_metric, metric_label, metric_options, short_id
from tui_ft.core.common.metrics import METRICS, headline, is_potential
from tui_ft.tui.plots import CurvePlot, CurveChart, ErrorPlot, ParityPlot
from tui_ft.tui.scanner import PresetEntry
from tui_ft.tui.state import LogLine, RunState, fmt_elapsed, fmt_mae

ERROR_LINE_STYLE = Style(reverse=True, bold=True)
STATUS_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "finished": "green",
    "failed": "bold red",
    "crashed": "bold red",
    "interrupted": "yellow",
}
LOG_STYLE = {
    "info": "",
    "warning": "yellow",
    "error": "bold red",
    "epoch": "cyan",
    "done": "green",
    "stderr": "dim",
}


def fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _cursor_key(table: DataTable) -> str | None:
    if table.row_count == 0:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:  # noqa: BLE001 - an empty or changing table
        return None


def _restore_cursor(table: DataTable, key: str | None) -> None:
    if key is None or table.row_count == 0:
        return
    try:
        table.move_cursor(row=table.get_row_index(key), animate=False)
    except Exception:  # noqa: BLE001 - the row is gone
        pass


# --------------------------------------------------------------------------- presets


PRESET_COLUMNS = (
    Col("name", "preset", KEEP, "middle", min_width=12),
    Col("mode", "mode", 60),
    Col("data", "data", 70, "middle", min_width=14, early=True),  # "mp_e_f…10% f0": source start, fraction and fold
    Col("lr", "lr", 80),
    Col("epochs", "epochs", 75),
    Col("init", "init", 65, "middle", min_width=12),
)


class PresetsPane(Vertical):
    """Preset files with their TOML; broken files listed with their error."""

    BINDINGS = [
        Binding("l", "launch", "Launch", tooltip="launch the selected preset now"),
        Binding("e", "enqueue", "Enqueue", tooltip="add it to the queue: queued presets start one by one, when no run is training"),
        Binding("n", "new_preset", "New preset", tooltip="new preset from the selected one (form)"),
    ]

    def __init__(self, model: Dashboard, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.entries: dict[str, PresetEntry] = {}
        self.select_after_scan: str | None = None  # a preset just saved by the form

    def compose(self) -> ComposeResult:
        with Horizontal(id="presets-main"):
            with Vertical(id="presets-left"):
                yield FitTable(id="presets-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="preset-status")
            with VerticalScroll(id="preset-view"):
                yield Static("", id="preset-toml")

    def on_mount(self) -> None:
        t = self.table
        t.set_columns(PRESET_COLUMNS)
        t.border_title = "presets/"
        self.query_one("#preset-view").border_title = "TOML"

    @property
    def table(self) -> FitTable:
        return self.query_one("#presets-table", FitTable)

    @property
    def selected(self) -> PresetEntry | None:
        key = _cursor_key(self.table)
        return self.entries.get(key) if key else None

    def set_entries(self, entries: list[PresetEntry]) -> None:
        t = self.table
        self.entries = {e.key: e for e in entries}
        rows = []
        for e in entries:
            if e.is_plan and e.ok:
                rows.append((e.key, [e.name, Text("plan", style="cyan"), e.data_label, "", "", ""]))
            elif e.ok:
                rows.append((e.key, [e.name, e.mode, e.data_label, e.lr, e.epochs, e.init or "-"]))
            elif e.missing_data and len(e.missing_data) == len(e.errors):
                # it loads; only its data file is not there: the file's name in the data column
                style = "red"
                mode = Text("plan", style="cyan") if e.is_plan else e.mode
                missing = Text(e.missing_label, style=style)
                rows.append((e.key, [Text(e.name, style=style), mode, missing, e.lr, e.epochs, (e.init or "-") if not e.is_plan else ""]))
            else:
                style = "red"
                # the whole error is under the table; the data column shows its start
                rows.append((e.key, [
                    Text(e.name, style=style),
                    Text(e.mode if not e.is_plan else "plan", style=style),
                    Text(e.error.split(": ", 1)[-1], style=style),
                    "",
                    "",
                    "",
                ]))
        t.set_rows(rows)
        t.border_title = f"presets/ ({len(entries)})"
        self.show(self.selected)
        if self.select_after_scan:
            self.select(self.select_after_scan)
            self.select_after_scan = None

    def select(self, key: str) -> None:
        _restore_cursor(self.table, key)
        self.show(self.selected)

    def show(self, entry: PresetEntry | None) -> None:
        status = self.query_one("#preset-status", Static)
        view = self.query_one("#preset-toml", Static)
        box = self.query_one("#preset-view")
        if entry is None:
            status.update(Text("no presets in presets/: add a .toml file", style="dim"))
            view.update("")
            box.border_title = "TOML"
            return
        box.border_title = escape(str(Path("presets") / entry.path.name))  # a title is markup
        if entry.ok and entry.is_plan:
            plan = entry.plan
            text = Text()
            text.append(f"plan: l runs its {entry.data_label} in order, each one a run in Runs\n", style="cyan")
            text.append(getattr(plan, "description", "") or "")
            status.update(text)
            status.remove_class("error")
        elif entry.ok:
            p = entry.preset
            text = Text()
            text.append(p.run.description or p.name)
            if p.model.init:
                text.append(f"\nstarts from {p.model.init}", style="cyan")
            status.update(text)
            status.remove_class("error")
        else:
            status.update(Text(self.short_paths(entry.error), style="bold red"))
            status.add_class("error")
        syntax = Syntax(
            entry.text or "(empty file)",
            "toml",
            theme=PREVIEW_THEME,
            line_numbers=True,
            word_wrap=True,
            background_color="default",
        )
        n_lines = (entry.text or "").count("\n") + 1
        if entry.error_line and 1 <= entry.error_line <= n_lines:
            # the line with the error in reverse video (Syntax's own "❱" marker is a
            # fixed dark red that NO_COLOR turns into an unreadable grey)
            width = len((entry.text or "").splitlines()[entry.error_line - 1]) if entry.text else 0
            syntax.stylize_range(ERROR_LINE_STYLE, (entry.error_line, 0), (entry.error_line, max(1, width)))
        view.update(syntax)

    def short_paths(self, text: str) -> str:
        """``text`` with absolute paths under the project folder (or beside it) written relative
        to it, as the presets name them: the hint under the table fits in a few lines (the
        header shows the folder; ``l`` shows the whole message)."""
        root = str(self.model.paths.root.resolve())
        text = text.replace(root + "/", "")
        parent = str(Path(root).parent)
        return text.replace(parent + "/", "../") if parent != "/" else text

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show(self.entries.get(event.row_key.value) if event.row_key else None)

    def checked_selection(self) -> PresetEntry | None:
        """The selected entry if it can be launched; else say why."""
        entry = self.selected
        if entry is None:
            self.notify("no preset selected", severity="warning")
            return None
        if not entry.ok:
            self.app.push_screen(TextScreen(f"{entry.path.name} cannot be launched", "\n".join(entry.errors), error=True))
            return None
        return entry

    def action_launch(self) -> None:
        if (entry := self.checked_selection()) is not None:
            self.post_message(LaunchRequested(entry))

    def action_enqueue(self) -> None:
        if (entry := self.checked_selection()) is not None:
            self.post_message(LaunchRequested(entry, now=False))

    def action_new_preset(self) -> None:
        entry = self.checked_selection()
        if entry is None:
            return
        if entry.preset is None:
            self.notify("the form makes a preset from a preset; select one (this is a plan)", severity="warning")
            return

        def saved(path: Path | None) -> None:
            if path is None:
                return
            self.notify(f"saved presets/{path.name}", timeout=4)
            self.select_after_scan = path.name
            self.post_message(RescanRequested())

        lib = Library(self.model.paths)
        form = PresetForm(entry.preset, self.model.paths.presets, refs=self.model.init_refs(), resolve_init=lib.resolve_ref)
        self.app.push_screen(form, saved)


# --------------------------------------------------------------------------- runs


class RunLog(RichLog):
    """The selected run's log. It keeps its lines and rewraps them when its
    width changes (RichLog itself keeps lines wrapped at the old width)."""

    MAX = 2000
    ON_SWITCH = 200  # lines written when another run is selected

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, highlight=False, wrap=True, min_width=20, max_lines=self.MAX, auto_scroll=True, **kwargs)
        self.lines_shown: list[LogLine] = []
        self._wrapped_at = 0

    def show(self, lines: list[LogLine]) -> None:
        self.lines_shown = list(lines[-self.ON_SWITCH :])
        if len(lines) > self.ON_SWITCH:
            self.lines_shown.insert(0, LogLine(f"({len(lines) - self.ON_SWITCH} earlier lines not shown)", "stderr"))
        self._rewrite()

    def add(self, lines: list[LogLine]) -> None:
        if not lines:
            return
        self.lines_shown.extend(lines)
        if len(self.lines_shown) > self.MAX:
            del self.lines_shown[: len(self.lines_shown) - self.MAX]
        self.write(Text("\n").join(Text(ln.text, style=LOG_STYLE.get(ln.level, "")) for ln in lines))

    def _rewrite(self) -> None:
        self.clear()
        if self.lines_shown:
            # one write of all lines: much cheaper than a write per line
            text = Text("\n").join(Text(ln.text, style=LOG_STYLE.get(ln.level, "")) for ln in self.lines_shown)
            self.write(text, scroll_end=False)
        # scroll once the new lines are measured (the writes above only queue them)
        self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._wrapped_at:
            self._wrapped_at = width
            self._rewrite()
        else:  # taller or shorter: stay at the newest line
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)



RUN_COLUMNS = ("overlay", "run", "status", "epoch", "best", "test", "elapsed", "preset", "device")
# what a narrow terminal drops first: low priority; ids are shortened in the middle, never dropped
RUN_TABLE = (
    Col("overlay", "", KEEP, min_width=1),
    Col("run", "run", KEEP, "middle", min_width=16),
    Col("status", "status", 95),
    Col("epoch", "epoch", 85),
    Col("best", "best val", 80),
    Col("test", "test MAE", 70),
    Col("elapsed", "elapsed", 40),
    Col("preset", "preset", 30),
    Col("device", "device", 20),
)


FLUSH_S = 0.2  # table updates are batched: a DataTable re-renders all its rows on any change


class FilterInput(Input):
    """The Runs tab's filter line: escape goes back to the table (hiding an empty line)."""

    BINDINGS = [Binding("escape", "leave", "Back to the table", show=False)]

    def action_leave(self) -> None:
        pane = next((a for a in self.ancestors if isinstance(a, RunsPane)), None)
        if pane is None:
            return
        if pane.filter is None:
            self.value = ""
            self.display = False
        else:
            self.value = pane.filter.text
        pane.query_one("#runs-filter-error", Static).display = False
        pane.table.focus()


class RunsPane(Vertical):
    """The runs table, the charts of the selected run and its log."""

    BINDINGS = [
        Binding("c", "cancel_run", "Cancel run", tooltip="cancel the selected run (it saves last.pt)"),
        Binding("r", "resume_run", "Resume", tooltip="resume the selected interrupted, crashed or failed run from its last.pt"),
        Binding("o,space", "toggle_overlay", "Overlay", tooltip="overlay the selected run on the chart"),
        Binding("g", "toggle_log", "Log scale", tooltip="logarithmic MAE axis on/off"),
        Binding("v", "next_chart", "Chart", tooltip="next chart: learning curve, parity plot, error histogram"),
        Binding("m", "next_metric", "Metric", tooltip="learning curve: next metric of the selected run "
                "(a potential's loss, energy, force, stress MAE; val and train)"),
        Binding("t", "toggle_after_parent", "After parent", show=False, tooltip="draw a continued run after its parent's last epoch, or from its own epoch 0"),
        Binding("x", "clear_queue", "Clear queue", show=False, tooltip="clear the queue"),
        Binding("slash", "filter", "Filter", key_display="/",
                tooltip="filter the runs by preset keys and results: finetune.mode = full and optim.lr < 1e-4 "
                        "(and / or / not; status, test_mae, preset ~ lpft*, ...; the same as tui-ft runs --where)"),
        Binding("d", "compare", "Compare", tooltip="compare the pinned runs (o) and the selected one: the preset "
                "keys that differ (data and split included), their curves and results (tui-ft compare)"),
    ]
    CHARTS = ("tab-curve", "tab-parity", "tab-parity-f", "tab-errors", "tab-errors-f")
    FORCE_CHARTS = ("tab-parity-f", "tab-errors-f")  # a potential run's: shown only for one
    # tab labels: a property run's, a potential run's (short, five tabs fit 48 columns)
    TAB_LABELS = (("tab-curve", "Learning curve", "Curve"), ("tab-parity", "Parity", "Parity E"),
                  ("tab-errors", "Errors", "Errors E"))

    selected_run: reactive[str | None] = reactive(None, init=False)
    log_scale: reactive[bool] = reactive(False, init=False)

    def __init__(self, model: Dashboard, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self._keys_enabled: tuple[bool, ...] = (False, False, False)  # (cancel, resume, metric) as the footer shows them
        self.metric: str | None = None  # the learning curve's metric the user picked with m (None: each run's default)
        self._potential_tabs = False  # the force tabs are shown
        self.chart_choice: dict[str, str] = {}  # the chart the user picked for a run (v or a click)
        self._auto_chart = self.CHARTS[0]  # the chart last shown without the user asking
        self._shown: dict[str, list[str]] = {}  # the cells on screen, as plain text, per run
        self._dirty: dict[str, RunState] = {}
        self._flush_timer = None
        self._cancel_dialog: tuple[str, ConfirmScreen] | None = None  # "Cancel RUN?" while it is open
        self.filter = None  # the runs filter in force (tui_ft.core.library.query.Filter), None: every run
        self._records: dict[str, tuple[tuple, dict]] = {}  # run id -> (what it was made from, its filter record)

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder="filter, e.g. optim.lr < 1e-4 and finetune.mode = full  "
                          "(enter: apply; empty: every run; escape: back to the table)", id="runs-filter")
        yield Static("", id="runs-filter-error")
        yield FitTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="queue-line")
        yield Static("CPU, memory, GPU: sampling ...", id="system-pane")
        with Horizontal(id="runs-bottom"):
            with TabbedContent(id="chart-tabs"):
                with TabPane("Learning curve", id="tab-curve"):
                    yield CurveChart(plot_id="curve")
                with TabPane("Parity", id="tab-parity"):
                    yield ParityPlot(id="parity")
                with TabPane("Parity F", id="tab-parity-f"):
                    yield ParityPlot(id="parity-force")
                with TabPane("Errors", id="tab-errors"):
                    yield ErrorPlot(id="errors")
                with TabPane("Errors F", id="tab-errors-f"):
                    yield ErrorPlot(id="errors-force")
            yield RunLog(id="run-log")

    def on_mount(self) -> None:
        t = self.table
        t.set_columns(RUN_TABLE)
        t.border_title = "runs"
        self.query_one(RunLog).border_title = "log"
        self.set_queue("")
        tabs = self.query_one("#chart-tabs", TabbedContent)
        for pane_id in self.FORCE_CHARTS:
            tabs.hide_tab(pane_id)
        self.watch_selected_run(None)

    @property
    def table(self) -> FitTable:
        return self.query_one("#runs-table", FitTable)

    @property
    def selected_run_id(self) -> str | None:
        return _cursor_key(self.table)

    @staticmethod
    def cells(st: RunState) -> list:
        s = st.summary
        status = Text(s.status, style=STATUS_STYLE.get(s.status, ""))
        status = Text(st.progress_label, style="cyan") if st.progress_label else status  # e.g. graphs 45%
        if st.cancel_requested and s.status == "running":
            status = Text("stopping", style="yellow")
        if s.epoch is None:
            epoch = "-"
        elif s.epochs:
            epoch = f"{s.epoch}/{s.epochs}"
        else:
            epoch = str(s.epoch)
        best, test = fmt_mae(s.best_val_mae), fmt_mae(s.test_mae)
        if Dashboard.is_potential_run(st):  # its selection value is a loss: show an MAE with its unit
            best = headline(s.best_metrics(), "val") or best
            test = headline(st.test_metrics, "test") or test
        return [
            Text("●", style="bold") if st.overlay else "",
            s.run_id,
            status,
            epoch,
            best,
            test,
            fmt_elapsed(s.elapsed),
            s.preset_name,
            s.device,
        ]

    def set_runs(self, states: list[RunState]) -> None:
        """Rebuild the table, newest first, keeping the cursor on the same run."""
        t = self.table
        self._shown.clear()
        self._dirty.clear()
        rows = []
        for st in sorted(states, key=lambda s: s.sort_key, reverse=True):
            if not self.passes(st):
                continue
            cells = self.cells(st)
            rows.append((st.run_id, cells))
            self._shown[st.run_id] = [str(c) for c in cells]
        t.set_rows(rows)
        if self.filter is None:
            t.border_title = f"runs ({len(states)})"
        else:
            t.border_title = f"runs ({len(rows)} of {len(states)}, filter: {self.filter.text})"

    # -- filter
    def record(self, st: RunState) -> dict:
        """The run as the filter sees it (made again when the run changed)."""
        from tui_ft.core.library.compare import record_of

        s = st.summary
        made_from = (s.updated, s.status, s.epoch, s.test_mae, id(s.preset))
        got = self._records.get(st.run_id)
        if got is None or got[0] != made_from:
            got = self._records[st.run_id] = (made_from, record_of(s))
        return got[1]

    def passes(self, st: RunState) -> bool:
        return self.filter is None or self.filter.matches(self.record(st))

    def action_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.display = True
        box.focus()

    def apply_filter(self, text: str) -> bool:
        """Use ``text`` as the runs filter ("" shows every run); a bad one is shown under the
        line, and the table keeps the filter in force before it. True when it was taken."""
        from tui_ft.core.library.compare import FilterError, compile_filter

        err = self.query_one("#runs-filter-error", Static)
        text = text.strip()
        if not text:
            self.filter = None
        else:
            try:
                self.filter = compile_filter(text, [self.record(st) for st in self.model.runs.values()])
            except FilterError as exc:
                err.update(Text(f"{exc}\n{exc.pointer()}", style="red"))
                err.display = True
                return False
        err.display = False
        self.query_one("#runs-filter", Input).display = self.filter is not None
        self.set_runs(list(self.model.runs.values()))
        return True

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_filter(event.value):
            self.table.focus()

    # -- compare
    def compare_states(self) -> list[RunState]:
        """The pinned runs (o), and the selected one, in the table's order."""
        chosen = [st for st in self.model.runs.values() if st.overlay or st.run_id == self.selected_run]
        return sorted(chosen, key=lambda s: s.sort_key, reverse=True)

    def action_compare(self) -> None:
        from tui_ft.tui.compare_view import CompareScreen

        states = self.compare_states()
        if len(states) < 2:
            self.notify("compare needs two or more runs: pin runs with o (they are overlaid), then press d "
                        "on another one", timeout=5)
            return
        self.app.push_screen(CompareScreen(states, metric=self.curve_metric()))

    def show_system(self, lines: list[str]) -> None:
        # its height is fixed (two lines): no layout pass, the charts keep their size
        self.query_one("#system-pane", Static).update(Text("\n".join(lines[:2]), style="dim"), layout=False)

    def update_run(self, st: RunState, *, now: bool = False) -> None:
        """Show a run's new state: at once with ``now``, else within FLUSH_S
        together with the other runs that changed meanwhile."""
        self._dirty[st.run_id] = st
        if now:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = self.set_timer(FLUSH_S, self.flush)

    def update_elapsed(self, st: RunState) -> None:
        self.update_run(st)

    def flush(self) -> None:
        self._flush_timer = None
        dirty, self._dirty = self._dirty, {}
        if not self.is_mounted:
            return
        t = self.table
        if self.filter is not None and any((run_id in self._shown) != self.passes(st) for run_id, st in dirty.items()):
            self.set_runs(list(self.model.runs.values()))  # a run came into or went out of the filter
            return
        for run_id, st in dirty.items():
            shown = self._shown.get(run_id)
            if shown is None:
                continue  # not in the table (set_runs adds it)
            for i, (col, value) in enumerate(zip(RUN_COLUMNS, self.cells(st))):
                text = str(value)
                if text == shown[i]:
                    continue
                shown[i] = text
                t.update_fitted(run_id, col, value)

    def select(self, run_id: str) -> None:
        _restore_cursor(self.table, run_id)

    def show_run(self, run_id: str) -> None:
        """Put the cursor on ``run_id`` and show its charts and log."""
        self.select(run_id)
        self.selected_run = run_id

    def refresh_runs(self) -> None:
        """Rebuild the table from the model; keep a selection when the selected run is gone."""
        self.set_runs(list(self.model.runs.values()))
        if self.selected_run is None or self.selected_run not in self.model.runs:
            self.selected_run = self.selected_run_id

    def show_queue(self) -> None:
        self.set_queue(self.model.queue.describe())

    def set_queue(self, text: str) -> None:
        q = self.query_one("#queue-line", Static)
        q.update(Text.assemble(("queue: ", "bold"), text, ("   (x: clear)", "dim")) if text else "")
        q.display = bool(text)

    # -- log
    def show_log(self, run_id: str | None, lines: list[LogLine]) -> None:
        log = self.query_one(RunLog)
        room = max(12, (log.size.width or 48) - 11)  # the border and "─ log: " take the rest
        log.border_title = f"log: {short_id(run_id, room)}" if run_id else "log"
        log.show(lines)

    def append_log(self, lines: list[LogLine]) -> None:
        self.query_one(RunLog).add(lines)

    # -- selection and charts
    @on(DataTable.RowHighlighted, "#runs-table")
    def _run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected_run = event.row_key.value if event.row_key else None

    def watch_selected_run(self, run_id: str | None) -> None:
        st = self.model.get(run_id)
        if st is not None:
            self.model.load_stderr_tail(st)
        self.show_log(run_id, st.log if st else [])
        self.update_curve()
        self.update_predictions()
        self.refresh_cancel_key()
        self.show_default_chart(run_id)

    def show_default_chart(self, run_id: str | None) -> None:
        """The learning curve for a newly selected (or newly started) run,
        unless the user picked another chart for that run."""
        tabs = self.query_one("#chart-tabs", TabbedContent)
        want = self.chart_choice.get(run_id or "", self.CHARTS[0])
        self._auto_chart = want
        if tabs.active != want:
            tabs.active = want

    @on(TabbedContent.TabActivated, "#chart-tabs")
    def _chart_picked(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        pane_id = event.pane.id or ""
        if pane_id != self._auto_chart and self.selected_run:
            self.chart_choice[self.selected_run] = pane_id
            self._auto_chart = pane_id

    def watch_log_scale(self, value: bool) -> None:
        self.query_one("#curve", CurvePlot).log_scale = value

    def metric_options(self, run_id: str | None = None) -> list[str]:
        """The metrics the learning curve can draw for ``run_id`` (the selected run)."""
        st = self.model.get(run_id if run_id is not None else self.selected_run)
        return metric_options(st.summary.history) if st is not None else []

    def curve_metric(self, run_id: str | None = None) -> str | None:
        """The metric drawn for ``run_id``: the one picked with m when the run has it, else
        the run's default (a potential's validation force MAE, else its loss; a property's
        selection value, ``None``)."""
        options = self.metric_options(run_id)
        if self.metric in options:
            return None if self.metric == "mae" else self.metric
        return default_metric(options)

    def action_next_metric(self) -> None:
        options = self.metric_options()
        if len(options) < 2:
            self.notify("the selected run has one metric only (its MAE)", timeout=3)
            return
        now = self.curve_metric() or "mae"
        self.metric = options[(options.index(now) + 1) % len(options)] if now in options else options[0]
        self.update_curve()
        names = ", ".join(METRICS.get(m, (m, ""))[0] for m in options)
        self.notify(f"learning curve: val/train {metric_label(self.curve_metric())}  (m: {names})", timeout=4)

    def update_curve(self) -> None:
        metric = self.curve_metric()
        primary, overlays, bounds = self.model.curve(self.selected_run, metric)
        note = self.model.curve_note(self.selected_run)
        self.query_one("#curve", CurvePlot).set_runs(primary, overlays, boundaries=bounds, note=note, metric=metric)

    def show_force_tabs(self, show: bool) -> None:
        """A potential run's tabs (short labels, the force parity plot and histogram), or a property run's."""
        if show == self._potential_tabs:
            return
        self._potential_tabs = show
        tabs = self.query_one("#chart-tabs", TabbedContent)
        if not show and tabs.active in self.FORCE_CHARTS:
            self._auto_chart = self.CHARTS[0]
            tabs.active = self.CHARTS[0]
        for pane_id in self.FORCE_CHARTS:
            (tabs.show_tab if show else tabs.hide_tab)(pane_id)
        for pane_id, prop_label, pot_label in self.TAB_LABELS:
            tabs.get_tab(pane_id).label = pot_label if show else prop_label

    def update_predictions(self) -> None:
        pot = self.model.potential_results(self.selected_run)
        self.show_force_tabs(pot is not None)
        if pot is None:
            shown = self.model.predictions(self.selected_run)
            self.query_one("#parity", ParityPlot).set_predictions(*shown)
            self.query_one("#errors", ErrorPlot).set_predictions(*shown)
            return
        run_id, res, note = pot
        for plot_id, cls, attr, why in (
            ("#parity", ParityPlot, "energy", "energy_note"), ("#errors", ErrorPlot, "energy_errors", "energy_note"),
            ("#parity-force", ParityPlot, "forces", "force_note"), ("#errors-force", ErrorPlot, "force_errors", "force_note"),
        ):
            data = getattr(res, attr) if res is not None else None
            self.query_one(plot_id, cls).set_predictions(run_id, data, (getattr(res, why) if res is not None else "") or note)
        for problem in res.problems if res is not None else ():
            report = getattr(self.app, "report_problem", None)
            if report is not None:
                report(problem)  # once per cause (the app keeps the list: "Problems" in the palette)

    def can_resume(self, st: RunState | None) -> bool:
        if st is None or st.active or (st.launched is not None and st.launched.poll() is None):
            return False
        return resumable(st.run_id, st.status, self.model.paths) is None

    def refresh_cancel_key(self) -> None:
        """Dim or light "c Cancel run" and "r Resume" in the footer when that
        changes (a footer refresh rebuilds its keys and relayouts the screen:
        not on every move)."""
        st = self.model.get(self.selected_run)
        keys = (st is not None and st.active, self.can_resume(st), len(self.metric_options()) > 1)
        if keys != self._keys_enabled:
            self._keys_enabled = keys
            self.refresh_bindings()
        self.close_stale_cancel()

    def close_stale_cancel(self) -> None:
        """The run asked about in "Cancel RUN?" ended meanwhile: close the question, say so."""
        if self._cancel_dialog is None:
            return
        run_id, dialog = self._cancel_dialog
        st = self.model.get(run_id)
        if st is not None and st.active:
            return
        self._cancel_dialog = None
        status = st.status if st is not None else "gone"
        if self.app.screen is dialog:
            dialog.dismiss(None)
        # else a screen is on top of it: answering it later only says this again (see action_cancel_run)
        self.notify(f"{run_id} {status} meanwhile: nothing left to cancel", timeout=6)

    # -- keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_run":
            st = self.model.get(self.selected_run)
            return True if st is not None and st.active else None
        if action == "resume_run":
            return True if self.can_resume(self.model.get(self.selected_run)) else None
        if action == "clear_queue":
            return bool(len(self.model.queue))
        if action == "next_metric":  # in the footer for a run with more than one metric (a potential)
            return len(self.metric_options()) > 1
        return True

    def action_toggle_overlay(self) -> None:
        st = self.model.get(self.selected_run_id)
        if st is None:
            return
        st.overlay = not st.overlay
        self.update_run(st, now=True)
        self.update_curve()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.notify("logarithmic MAE axis" if self.log_scale else "linear MAE axis", timeout=2)

    def action_toggle_after_parent(self) -> None:
        self.model.after_parent = not self.model.after_parent
        self.notify(
            "continued runs drawn after their parent's last epoch" if self.model.after_parent
            else "continued runs drawn from their own epoch 0 (plans stay joined)",
            timeout=3,
        )
        self.update_curve()

    def action_next_chart(self) -> None:
        tabs = self.query_one("#chart-tabs", TabbedContent)
        order = [c for c in self.CHARTS if self._potential_tabs or c not in self.FORCE_CHARTS]
        nxt = order[(order.index(tabs.active) + 1) % len(order)] if tabs.active in order else order[0]
        if self.selected_run:
            self.chart_choice[self.selected_run] = nxt
        self._auto_chart = nxt
        tabs.active = nxt

    def action_resume_run(self) -> None:
        st = self.model.get(self.selected_run)
        if st is None:
            self.notify("select an interrupted, crashed or failed run to resume it", severity="warning")
            return
        why = "it is still running" if st.active else resumable(st.run_id, st.status, self.model.paths)
        if why:
            self.notify(f"cannot resume: {why}", severity="warning")
            return
        self.post_message(ResumeRequested(st.run_id))

    def action_clear_queue(self) -> None:
        self.model.queue.items.clear()
        self.show_queue()

    def action_cancel_run(self) -> None:
        st = self.model.get(self.selected_run)
        if st is None or not st.active:
            self.notify("select a running run to cancel it", severity="warning")
            return
        if not st.pid:
            self.notify(f"{st.run_id} has no process id yet; try again in a moment", severity="warning")
            return

        run_id = st.run_id

        def answered(yes: bool | None) -> None:
            if self._cancel_dialog is not None and self._cancel_dialog[0] == run_id:
                self._cancel_dialog = None
            if not yes:
                return
            now = self.model.get(run_id)
            if now is None or not now.active:
                self.notify(f"{run_id} {now.status if now else 'gone'} meanwhile: nothing left to cancel", timeout=6)
                return
            self.cancel_run(run_id)

        question = f"Cancel {run_id}?\nIt stops after saving last.pt (resume later with `tui-ft resume`)."
        dialog = ConfirmScreen(question, yes="Cancel run", no="Keep running", danger=True)
        self._cancel_dialog = (run_id, dialog)
        self.app.push_screen(dialog, answered)

    def cancel_run(self, run_id: str) -> None:
        st = self.model.get(run_id)
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
        self.update_run(st, now=True)
        self.notify(f"interrupting {run_id}...", timeout=3)


# --------------------------------------------------------------------------- library


class _Snapshot(Library):
    """A Library over a list already read (lineage without re-reading sidecars)."""

    def __init__(self, paths: Paths, items: list[CheckpointInfo]):
        super().__init__(paths)
        self._items = items

    def list(self) -> list[CheckpointInfo]:
        return list(self._items)


CKPT_COLUMNS = (
    Col("ref", "checkpoint", KEEP, "middle", min_width=20),
    Col("preset", "preset", 40),  # the start of the checkpoint id says it too: dropped, not shortened
    Col("epoch", "epoch", 60),
    Col("val", "val MAE", 80),
    Col("test", "test MAE", 70),
    Col("status", "run", 95),
    Col("time", "saved", 30),
    Col("parent", "parent", 50, "middle", min_width=20),
)


POTENTIAL_TARGETS = (("energy_mae", "E", "energy"), ("force_mae", "F", "force"), ("stress_mae", "S", "stress"),
                     ("magmom_mae", "M", "magmom"))


def potential_test_text(metrics: dict[str, float | None] | None, *, long: bool = False) -> str | None:
    """A potential checkpoint's test MAE of each target with its unit (``E 12.3 meV/atom
    F 45.6 meV/Å S 0.123 GPa``; ``long``: ``energy 12.3 meV/atom · force ...``), or None
    for a property checkpoint (its one test MAE)."""
    if not is_potential(metrics):
        return None
    parts = []
    for metric, short, word in POTENTIAL_TARGETS:
        v = metrics.get(f"test_{metric}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{word if long else short} {v:.3g} {METRICS[metric][1]}")
    return (" · " if long else "  ").join(parts) or "-"


class LibraryPane(Vertical):
    """All checkpoints; lineage and children of the selected one."""

    BINDINGS = [
        Binding("enter", "continue_selected", "Continue from", key_display="enter", show=False, tooltip="continue from this checkpoint: pick a preset, launch it from here"),
        Binding("n", "continue_selected", "Continue from", tooltip="continue from this checkpoint: pick a preset, launch it from here"),
        Binding("p", "show_ckpt_preset", "Preset", tooltip="show the resolved preset stored in the checkpoint"),
        Binding("d", "delete_ckpt", "Delete", tooltip="delete the run's checkpoints (asks first)"),
        Binding("x", "export_ckpt", "Export", tooltip="export for chgnet: exports/RUN-KIND.pt (RUN-KIND-2.pt, ... when taken), loads with CHGNet.from_file"),
        Binding("f", "predict_ckpt", "Predict on…", tooltip="predict a data source, structure file or folder with this checkpoint (predictions/*.csv; a potential's: energies eV/atom and total eV)"),
        Binding("v", "validate_ckpt", "Validate", tooltip="a potential's validation: relaxation, EOS, MD, drift, test errors (tui-ft validate)"),
    ]

    def __init__(self, model: Dashboard, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        paths = self.paths = model.paths
        self.items: dict[str, CheckpointInfo] = {}
        self._outputs_started: set[Path] = set()  # outputs of export / predict started here (see _fresh_output)
        self.library = _Snapshot(paths, [])

    def compose(self) -> ComposeResult:
        yield FitTable(id="ckpt-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="ckpt-detail-box"):
            yield Static("", id="ckpt-detail")

    def on_mount(self) -> None:
        t = self.table
        t.set_columns(CKPT_COLUMNS)
        t.border_title = "checkpoints/"
        self.query_one("#ckpt-detail-box").border_title = "lineage"

    @property
    def table(self) -> FitTable:
        return self.query_one("#ckpt-table", FitTable)

    @property
    def selected(self) -> CheckpointInfo | None:
        key = _cursor_key(self.table)
        return self.items.get(key) if key else None

    def set_items(self, items: list[CheckpointInfo]) -> None:
        t = self.table
        self.items = {c.ref: c for c in items}
        self.library = _Snapshot(self.paths, items)
        rows = []
        for c in items:
            status = self.model.checkpoint_status(c)
            rows.append((c.ref, [
                Text(c.ref, style="" if c.kind == "best" else "dim"),
                c.preset_name,
                "-" if c.epoch is None else str(c.epoch),
                self.model.checkpoint_val_text(c),
                potential_test_text(self.model.test_metrics(c.run_id)) or fmt_mae(c.test_mae),
                Text(status, style=STATUS_STYLE.get(status, "yellow")),
                fmt_time(c.created),
                c.parent or "-",
            ]))
        t.set_rows(rows)
        t.border_title = f"checkpoints/ ({len(items)})"
        self.show(self.selected)

    def select(self, ref: str) -> None:
        _restore_cursor(self.table, ref)
        self.show(self.selected)

    def refresh_status(self) -> None:
        """A run's status changed: show it (it comes from the run's events)."""
        if self.items:
            self.set_items(list(self.items.values()))

    def show(self, c: CheckpointInfo | None) -> None:
        detail = self.query_one("#ckpt-detail", Static)
        if c is None:
            detail.update(Text("no checkpoints yet: finished runs put theirs here", style="dim"))
            return
        meta = c.meta
        text = Text()
        text.append(c.ref, style="bold")
        text.append(
            f"   preset {c.preset_name} · {meta.get('mode', '?')} mode · epoch {c.epoch} · "
            f"val {fmt_mae(c.val_mae)} · test {potential_test_text(self.model.test_metrics(c.run_id), long=True) or fmt_mae(c.test_mae)} · "
            f"run {self.model.checkpoint_status(c)} · {fmt_time(c.created)}\n"
        )
        chain = self.library.lineage(c)
        text.append("lineage  ", style="bold")
        for i, link in enumerate(chain):
            if i:
                text.append("  ←  ", style="dim")
            text.append(link.ref, style="cyan" if i == 0 else "")
            if i:
                text.append(f" (val {fmt_mae(link.val_mae)})", style="dim")
        last = chain[-1]
        if last.parent:
            text.append("  ←  ", style="dim")
            text.append(f"{last.parent} (not in the library)", style="yellow")
        else:
            pre = (last.meta.get("preset") or {}).get("model", {}).get("pretrained", "0.3.0")
            text.append("  ←  ", style="dim")
            text.append(f"pretrained CHGNet {pre}", style="dim")
        text.append("\n")
        kids = self.library.children(c.run_id)
        text.append("children ", style="bold")
        if kids:
            text.append(", ".join(f"{k.ref} (val {fmt_mae(k.val_mae)})" for k in kids))
        else:
            text.append("none", style="dim")
        text.append("\n")
        text.append("enter/n: continue from here   p: show its preset   x: export for chgnet   f: predict on...   "
                    "d: delete the run's checkpoints", style="dim")
        detail.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show(self.items.get(event.row_key.value) if event.row_key else None)

    def _selected_ckpt(self) -> CheckpointInfo | None:
        c = self.selected
        if c is None:
            self.notify("no checkpoint selected", severity="warning")
        return c

    @on(DataTable.RowSelected, "#ckpt-table")
    def _ckpt_enter(self, event: DataTable.RowSelected) -> None:
        self.action_continue_selected()

    def action_continue_selected(self) -> None:
        if (c := self._selected_ckpt()) is not None:
            self.post_message(ContinueRequested(c.ref))

    def action_show_ckpt_preset(self) -> None:
        c = self._selected_ckpt()
        if c is None:
            return
        d = c.meta.get("preset")
        if not isinstance(d, dict):
            self.app.push_screen(TextScreen(f"{c.ref}: preset", "this checkpoint stores no preset", error=True))
            return
        try:
            body, lang = dump_preset(preset_from_dict(d, f"{c.ref} meta")), "toml"
        except (PresetError, TypeError, ValueError):
            body, lang = json.dumps(d, indent=2, sort_keys=True), "json"
        self.app.push_screen(TextScreen(f"{c.ref}: the resolved preset it was trained with", body, language=lang))

    def _fresh_output(self, folder: str, stem: str, suffix: str) -> Path:
        """``ROOT/folder/stem.suffix``, or ``stem-2``, ``stem-3``, ... when that name is taken: by a
        file (export and predict refuse an existing output without ``--force``, and the dashboard
        never overwrites one) or by an export / predict this pane started that has not written yet."""
        taken = self._outputs_started
        base = self.paths.root / folder
        for n in range(1, 10_000):
            out = base / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            if out not in taken and not os.path.lexists(out):
                taken.add(out)
                return out
        raise OSError(f"{base}: {stem}{suffix} and 9998 numbered names are taken")

    def action_export_ckpt(self) -> None:
        c = self._selected_ckpt()
        if c is not None:
            out = self._fresh_output("exports", f"{c.run_id}-{c.kind}", ".pt")
            self.notify(f"exporting {c.ref} to {out}...", title="export", timeout=4)
            self._run_cli(["export", c.ref, str(out)], f"{c.ref} exported (CHGNet.from_file loads it)", out)

    def action_validate_ckpt(self) -> None:
        if (c := self._selected_ckpt()) is not None:
            from tui_ft.core.validate.models import results_dir_for
            from tui_ft.tui.validate_view import ValidateScreen

            self.app.push_screen(ValidateScreen(c.ref, results_dir_for(c, self.paths), self.paths.root))

    def action_predict_ckpt(self) -> None:
        c = self._selected_ckpt()
        if c is None:
            return

        def chosen(source: str | None) -> None:
            if not source:
                return
            stem = Path(source.rstrip("/")).name.split(".")[0] or "input"
            out = self._fresh_output("predictions", f"{c.run_id}-{c.kind}-{stem}", ".csv")
            self.notify(f"predicting {source} with {c.ref}...", title="predict", timeout=4)
            self._run_cli(["predict", c.ref, source, "--out", str(out)], f"{source} predicted with {c.ref}", out)

        self.app.push_screen(
            PathPrompt(f"Predict with {c.ref}: a data source, a structure file or a folder of them",
                       "data/my_structures/  or  demo  or  structures.extxyz"),
            chosen,
        )

    @work(thread=True, exit_on_error=False, group="library-io", description="export / predict")
    def _run_cli(self, args: list[str], done: str, out: Path) -> None:
        """``tui-ft export|predict`` in its own process (they load torch); the outcome as a notification."""
        try:
            rc, _stdout, stderr = launcher.run_cli(args, self.paths)
        except (OSError, ValueError) as exc:  # subprocess could not start / timed out
            rc, stderr = -1, f"{type(exc).__name__}: {exc}"
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        if rc == 0:
            self.app.call_from_thread(self.notify, f"{done}: {out}", title=args[0], timeout=10)
        elif rc == 1 and args[0] == "predict" and out.is_file():  # some structures failed, listed by id
            # the summary line, a property's or a potential's alike: "predicted N of M structures ...; K failed"
            counted = re.search(r"; (\d+) failed$", lines[-1]) if lines else None
            failed = counted.group(1) if counted else "some"
            self.app.call_from_thread(self.notify, f"{done}: {out} ({failed} structure(s) failed; see the CSV's input)",
                                      title=args[0], severity="warning", timeout=10)
        else:
            why = lines[-1] if lines else f"exit code {rc}"
            self.app.call_from_thread(self.notify, f"{args[0]} {args[1]} failed: {why}", title=args[0],
                                      severity="error", timeout=15)

    def action_delete_ckpt(self) -> None:
        c = self._selected_ckpt()
        if c is None:
            return
        st = self.model.get(c.run_id)
        if st is not None and st.active:
            self.notify(f"{c.run_id} is still running; cancel it first", severity="warning")
            return
        kids = self.library.children(c.run_id)
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
            self.post_message(RescanRequested())

        self.app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep", danger=True), answered)
