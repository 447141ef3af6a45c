"""The three tabs: presets, runs, checkpoint library.

Panes only display what the app hands them (preset entries, run states,
checkpoint infos) and report the selection with Textual's own DataTable
messages; they never start processes or read run folders themselves.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, RichLog, Static, TabbedContent, TabPane

from tui_ft.core.library import CheckpointInfo, Library
from tui_ft.core.paths import Paths
from tui_ft.tui.plots import CurveChart, ErrorPlot, ParityPlot
from tui_ft.tui.scanner import PresetEntry
from tui_ft.tui.state import LogLine, RunState, fmt_elapsed, fmt_mae

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


class PresetsPane(Vertical):
    """Preset files with their TOML; broken files listed with their error."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: dict[str, PresetEntry] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(id="presets-main"):
            with Vertical(id="presets-left"):
                yield DataTable(id="presets-table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="preset-status")
            with VerticalScroll(id="preset-view"):
                yield Static("", id="preset-toml")

    def on_mount(self) -> None:
        t = self.query_one("#presets-table", DataTable)
        t.add_column("preset", key="name")
        t.add_column("mode", key="mode")
        t.add_column("data", key="data")
        t.add_column("lr", key="lr")
        t.add_column("epochs", key="epochs")
        t.add_column("init", key="init")
        t.border_title = "presets/"
        self.query_one("#preset-view").border_title = "TOML"

    @property
    def table(self) -> DataTable:
        return self.query_one("#presets-table", DataTable)

    @property
    def selected(self) -> PresetEntry | None:
        key = _cursor_key(self.table)
        return self.entries.get(key) if key else None

    def set_entries(self, entries: list[PresetEntry]) -> None:
        t = self.table
        key = _cursor_key(t)
        self.entries = {e.key: e for e in entries}
        t.clear()
        for e in entries:
            if e.is_plan and e.ok:
                t.add_row(e.name, Text("plan", style="cyan"), e.data_label, "", "", "", key=e.key)
            elif e.ok:
                t.add_row(e.name, e.mode, e.data_label, e.lr, e.epochs, e.init or "-", key=e.key)
            else:
                style = "red"
                t.add_row(
                    Text(e.name, style=style),
                    Text(e.mode if not e.is_plan else "plan", style=style),
                    Text(e.error.split(": ", 1)[-1], style=style),
                    "",
                    "",
                    "",
                    key=e.key,
                )
        t.border_title = f"presets/ ({len(entries)})"
        _restore_cursor(t, key)
        self.show(self.selected)

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
        box.border_title = str(Path("presets") / entry.path.name)
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
            status.update(Text(entry.error, style="bold red"))
            status.add_class("error")
        lines = {entry.error_line} if entry.error_line else set()
        view.update(
            Syntax(
                entry.text or "(empty file)",
                "toml",
                theme="ansi_dark",
                line_numbers=True,
                highlight_lines=lines,
                word_wrap=True,
                background_color="default",
            )
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show(self.entries.get(event.row_key.value) if event.row_key else None)


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
FLUSH_S = 0.2  # table updates are batched: a DataTable re-renders all its rows on any change


class RunsPane(Vertical):
    """The runs table, the charts of the selected run and its log."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, list[str]] = {}  # the cells on screen, as plain text, per run
        self._dirty: dict[str, RunState] = {}
        self._flush_timer = None

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="queue-line")
        with Horizontal(id="runs-bottom"):
            with TabbedContent(id="chart-tabs"):
                with TabPane("Learning curve", id="tab-curve"):
                    yield CurveChart(plot_id="curve")
                with TabPane("Parity", id="tab-parity"):
                    yield ParityPlot(id="parity")
                with TabPane("Errors", id="tab-errors"):
                    yield ErrorPlot(id="errors")
            yield RunLog(id="run-log")

    def on_mount(self) -> None:
        t = self.query_one("#runs-table", DataTable)
        t.add_column("", key="overlay", width=1)
        for label, key in (
            ("run", "run"),
            ("status", "status"),
            ("epoch", "epoch"),
            ("best val", "best"),
            ("test MAE", "test"),
            ("elapsed", "elapsed"),
            ("preset", "preset"),
            ("device", "device"),
        ):
            t.add_column(label, key=key)
        t.border_title = "runs"
        self.query_one(RunLog).border_title = "log"
        self.set_queue("")

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    @property
    def selected_run_id(self) -> str | None:
        return _cursor_key(self.table)

    @staticmethod
    def cells(st: RunState) -> list:
        s = st.summary
        status = Text(s.status, style=STATUS_STYLE.get(s.status, ""))
        if st.cancel_requested and s.status == "running":
            status = Text("stopping", style="yellow")
        if s.epoch is None:
            epoch = "-"
        elif s.epochs:
            epoch = f"{s.epoch}/{s.epochs}"
        else:
            epoch = str(s.epoch)
        return [
            Text("●", style="bold") if st.overlay else "",
            s.run_id,
            status,
            epoch,
            fmt_mae(s.best_val_mae),
            fmt_mae(s.test_mae),
            fmt_elapsed(s.elapsed),
            s.preset_name,
            s.device,
        ]

    def set_runs(self, states: list[RunState]) -> None:
        """Rebuild the table, newest first, keeping the cursor on the same run."""
        t = self.table
        key = _cursor_key(t)
        t.clear()
        self._shown.clear()
        self._dirty.clear()
        for st in sorted(states, key=lambda s: s.sort_key, reverse=True):
            cells = self.cells(st)
            t.add_row(*cells, key=st.run_id)
            self._shown[st.run_id] = [str(c) for c in cells]
        t.border_title = f"runs ({len(states)})"
        _restore_cursor(t, key)

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
        for run_id, st in dirty.items():
            shown = self._shown.get(run_id)
            if shown is None:
                continue  # not in the table (set_runs adds it)
            for i, (col, value) in enumerate(zip(RUN_COLUMNS, self.cells(st))):
                text = str(value)
                if text == shown[i]:
                    continue
                shown[i] = text
                # widening a column relayouts the screen: only when it must
                try:
                    wider = len(text) > t.columns[col].content_width
                except (KeyError, AttributeError):
                    wider = False
                t.update_cell(run_id, col, value, update_width=wider)

    def select(self, run_id: str) -> None:
        _restore_cursor(self.table, run_id)

    def set_queue(self, text: str) -> None:
        q = self.query_one("#queue-line", Static)
        q.update(Text.assemble(("queue: ", "bold"), text, ("   (x: clear)", "dim")) if text else "")
        q.display = bool(text)

    # -- log
    def show_log(self, run_id: str | None, lines: list[LogLine]) -> None:
        log = self.query_one(RunLog)
        log.border_title = f"log: {run_id}" if run_id else "log"
        log.show(lines)

    def append_log(self, lines: list[LogLine]) -> None:
        self.query_one(RunLog).add(lines)


# --------------------------------------------------------------------------- library


class _Snapshot(Library):
    """A Library over a list already read (lineage without re-reading sidecars)."""

    def __init__(self, paths: Paths, items: list[CheckpointInfo]):
        super().__init__(paths)
        self._items = items

    def list(self) -> list[CheckpointInfo]:
        return list(self._items)


class LibraryPane(Vertical):
    """All checkpoints; lineage and children of the selected one."""

    def __init__(self, paths: Paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.items: dict[str, CheckpointInfo] = {}
        self.library = _Snapshot(paths, [])

    def compose(self) -> ComposeResult:
        yield DataTable(id="ckpt-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="ckpt-detail-box"):
            yield Static("", id="ckpt-detail")

    def on_mount(self) -> None:
        t = self.query_one("#ckpt-table", DataTable)
        for label, key in (
            ("checkpoint", "ref"),
            ("preset", "preset"),
            ("epoch", "epoch"),
            ("val MAE", "val"),
            ("test MAE", "test"),
            ("run", "status"),
            ("saved", "time"),
            ("parent", "parent"),
        ):
            t.add_column(label, key=key)
        t.border_title = "checkpoints/"
        self.query_one("#ckpt-detail-box").border_title = "lineage"

    @property
    def table(self) -> DataTable:
        return self.query_one("#ckpt-table", DataTable)

    @property
    def selected(self) -> CheckpointInfo | None:
        key = _cursor_key(self.table)
        return self.items.get(key) if key else None

    def set_items(self, items: list[CheckpointInfo]) -> None:
        t = self.table
        key = _cursor_key(t)
        self.items = {c.ref: c for c in items}
        self.library = _Snapshot(self.paths, items)
        t.clear()
        for c in items:
            status = "finished" if c.finished else str(c.meta.get("status") or "unfinished")
            t.add_row(
                Text(c.ref, style="" if c.kind == "best" else "dim"),
                c.preset_name,
                "-" if c.epoch is None else str(c.epoch),
                fmt_mae(c.val_mae),
                fmt_mae(c.test_mae),
                Text(status, style=STATUS_STYLE.get(status, "yellow")),
                fmt_time(c.created),
                c.parent or "-",
                key=c.ref,
            )
        t.border_title = f"checkpoints/ ({len(items)})"
        _restore_cursor(t, key)
        self.show(self.selected)

    def select(self, ref: str) -> None:
        _restore_cursor(self.table, ref)
        self.show(self.selected)

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
            f"val {fmt_mae(c.val_mae)} · test {fmt_mae(c.test_mae)} · "
            f"{'finished' if c.finished else meta.get('status', 'unfinished')} · {fmt_time(c.created)}\n"
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
        text.append("enter/n: continue from here   p: show its preset   d: delete the run's checkpoints", style="dim")
        detail.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show(self.items.get(event.row_key.value) if event.row_key else None)
