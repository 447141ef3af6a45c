"""The Studies tab: ``tui-ft matbench`` studies, their folds, curves and running mean;
``tui-ft ensemble`` ensembles, their members and (key ``c``) the calibration of their std.

A thread worker reads ``logs/.studies/`` every few seconds while the tab is
shown (:func:`tui_ft.tui.study_model.list_studies` and
:func:`~tui_ft.tui.study_model.load_study_view`, both total) and posts
:class:`StudiesPane.Loaded`; the pane draws it. The maths of what is drawn
lives in :mod:`tui_ft.tui.study_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from tui_ft.core.common.paths import Paths
from tui_ft.tui.charts import PALETTE, Curve, int_ticks, metric_label
from tui_ft.tui.columns import plain
from tui_ft.tui.panes import _cursor_key, _restore_cursor
from tui_ft.tui.plots import _Plot
from tui_ft.tui.study_model import (
    StudyListRow,
    StudyView,
    calibration_points,
    fold_cells,
    list_studies,
    load_study_view,
    study_curves,
    study_reference_lines,
    study_summary_lines,
)

REFRESH_S = 3.0  # how often a shown view reads the disk again


# the Runs/Library panes' cursor helpers, shared
cursor_key, restore_cursor = _cursor_key, _restore_cursor


class ViewPlot(_Plot):
    """The dashboard's plot base (:class:`tui_ft.tui.plots._Plot`: rebuilt on ``redraw``, on resize,
    and when shown again after changing while hidden) with the views' curve drawing."""

    DEFAULT_CSS = """
    ViewPlot {
        min-height: 6;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view: Any = None  # the study or sweep view drawn (None: nothing to show)

    def set_view(self, view: Any) -> None:
        self.view = view
        self.redraw()

    def draw_curves(self, curves: list[Curve], title: str, hlines: list[tuple[str, float, tuple[int, int, int]]] = (),
                    legend: set[str] | None = None, ylabel: str = "val MAE (eV/atom)") -> None:
        """``legend``: the labels to name in plotext's legend (None: all of them)."""
        plt = self.plt
        plt.clear_figure()
        for c in curves:
            shown = legend is None or c.label in legend
            plt.plot(c.xs, c.ys, color=c.color, marker=c.marker, label=c.label if shown else None)
        xs = [x for c in curves for x in c.xs]
        for label, y, color in hlines:  # a labelled line across the epochs (plotext's hline has no label)
            if xs and max(xs) > min(xs):
                plt.plot([min(xs), max(xs)], [y, y], color=color, label=label)
            else:
                plt.hline(y, color)
        if xs:
            lo, hi = int(min(xs)), int(max(xs))
            if hi > lo:
                plt.xlim(lo, hi)
            plt.xticks(int_ticks(lo, hi, max(2, self.plot_width // 10)))
        plt.title(title)
        plt.xlabel("epoch")
        plt.ylabel(ylabel)
        self.refresh()


class StudyCurves(ViewPlot):
    """Each fold's validation MAE per epoch, with the running mean test MAE and the
    published numbers (on the task's own data) as horizontal lines."""

    view: StudyView | None
    calibration = False  # an ensemble's calibration chart instead of the curves (StudiesPane's key c)

    def _draw(self) -> None:
        v = self.view
        if v is None:
            self._blank("no study: run `tui-ft matbench PRESET` (or `tui-ft ensemble PRESET -k K`) and it appears here")
            return
        if self.calibration and v.axis == "member":
            self._draw_calibration(v)
            return
        curves = study_curves(v, max(10, 2 * (self.plot_width - 10)))
        if not curves:
            self._blank(f"{v.name}: no fold has an epoch yet" if not v.problem else f"{v.name}: unreadable")
            return
        what = metric_label(v.metric, v.unit)  # "MAE (eV/atom)", a potential's "force MAE (meV/Å)"
        self.draw_curves(curves, f"{'ensemble' if v.axis == 'member' else 'study'} {v.name}: val "
                         f"{what.split(' (')[0]} per {v.axis}", study_reference_lines(v), ylabel=f"val {what}")

    def _draw_calibration(self, v: StudyView) -> None:
        """Mean |error| of the ensemble's mean against the members' mean std, per std decile of the
        test structures (force and stress components for a potential), one series per target, with
        the line |error| = std: points above it are errors larger than the spread says."""
        points = calibration_points(v)
        if not points:
            self._blank(f"{v.name}: no calibration yet (it is computed when every member has finished)")
            return
        plt = self.plt
        plt.clear_figure()
        hi = 0.0
        units = (v.ensemble or {}).get("calibration_units") or {}
        for i, (t, pts) in enumerate(points.items()):
            # a potential's targets have different units: each is scaled to its own largest std
            scale = max(p[0] for p in pts) or 1.0
            xs = [p[0] / scale for p in pts] if len(points) > 1 else [p[0] for p in pts]
            ys = [p[1] / scale for p in pts] if len(points) > 1 else [p[1] for p in pts]
            unit = units.get(t) or ((v.ensemble or {}).get("targets", {}).get(t, {}).get("unit") or "")
            plt.plot(xs, ys, marker="dot", color=PALETTE[i % len(PALETTE)],
                     label=f"{t}" + (f" (÷ {scale:.3g} {unit})" if len(points) > 1 else f" ({unit})"))
            hi = max(hi, *xs, *ys)
        plt.plot([0.0, hi], [0.0, hi], color=(150, 150, 150), label="|error| = std")
        plt.title(f"ensemble {v.name}: calibration on its test rows (per std decile)")
        plt.xlabel("members' std")
        plt.ylabel("|error| of the mean")
        self.refresh()


class ListViewPane(Vertical):
    """A pane listing something under ``logs/`` in the table ``#LIST_TABLE``: the selected row is its
    key, and the pane re-reads the disk (its ``_read`` worker) when shown and every REFRESH_S while shown."""

    LIST_TABLE = ""

    @property
    def list_table(self) -> DataTable:
        return self.query_one(f"#{self.LIST_TABLE}", DataTable)

    @property
    def selected(self) -> str | None:
        return cursor_key(self.list_table)

    def on_show(self) -> None:
        self.list_table.focus()
        self.action_refresh()

    def refresh_if_shown(self) -> None:
        if self.is_on_screen:
            self.action_refresh()

    def action_refresh(self) -> None:
        self._read(self.selected)

    def _read(self, name: str | None) -> None:  # pragma: no cover - overridden by a worker
        raise NotImplementedError


class StudiesPane(ListViewPane):
    """The studies of ``logs/.studies/``; the selected one's folds, curves and mean."""

    LIST_TABLE = "studies-table"
    BINDINGS = [
        Binding("r", "refresh", "Refresh", tooltip="read the studies from disk now"),
        Binding("c", "calibration", "Calibration", tooltip="an ensemble: its calibration chart / its curves"),
    ]

    @dataclass
    class Loaded(Message):
        """A worker read the studies (``view``: the selected one, or None)."""

        rows: list[StudyListRow]
        view: StudyView | None

    def __init__(self, paths: Paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.rows: list[StudyListRow] = []
        self.view: StudyView | None = None
        self.loads = 0  # completed reads (tests wait for them)

    def compose(self) -> ComposeResult:
        yield DataTable(id="studies-table", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="folds-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="study-bottom"):
            yield StudyCurves(id="study-curve")
            with VerticalScroll(id="study-summary-box"):
                yield Static("", id="study-summary")

    def on_mount(self) -> None:
        t = self.studies_table
        for label, key in (("study", "name"), ("status", "status"), ("folds", "folds"), ("data", "data"), ("preset", "preset")):
            t.add_column(label, key=key)
        t.border_title = "logs/.studies/"
        f = self.folds_table
        for label in ("fold", "run", "status", "best val", "test MAE", "epochs", "wall"):
            f.add_column(label, key=label)
        f.border_title = "folds"
        self.query_one("#study-summary-box").border_title = "mean ± std"
        self.set_interval(REFRESH_S, self.refresh_if_shown, name="studies-refresh")

    @property
    def studies_table(self) -> DataTable:
        return self.query_one("#studies-table", DataTable)

    @property
    def folds_table(self) -> DataTable:
        return self.query_one("#folds-table", DataTable)


    @work(thread=True, exclusive=True, exit_on_error=False, group="studies", description="read studies")
    def _read(self, name: str | None) -> None:
        rows = list_studies(self.paths)
        names = [r.name for r in rows]
        if name not in names:
            name = names[0] if names else None
        view = load_study_view(name, self.paths) if name else None
        self.post_message(self.Loaded(rows, view))

    def on_studies_pane_loaded(self, message: Loaded) -> None:
        message.stop()
        self.loads += 1
        if message.rows != self.rows:
            self.rows = message.rows
            t = self.studies_table
            key = cursor_key(t) or (message.view.name if message.view else None)
            t.clear()
            for r in message.rows:
                folds = f"{r.finished}/{r.folds}" + (" members" if r.axis == "member" else "") if r.problem is None else "-"
                t.add_row(*plain(r.name, r.status, folds, r.data_source or "-", r.problem or r.source_name or "-"), key=r.name)
            restore_cursor(t, key)
        view = message.view
        if view is not None and view.name != self.selected:
            return  # the selection moved while it was read: the next read brings it
        if view != self.view:
            self.show_view(view)

    def show_view(self, view: StudyView | None) -> None:
        self.view = view
        f = self.folds_table
        key = cursor_key(f)
        f.clear()
        if view is not None:
            for row in view.folds:
                f.add_row(*plain(*fold_cells(row)), key=str(row.fold))
            f.border_title = f"{view.axis}s of {escape(view.name)}"
        first = next(iter(f.columns.values()), None)
        if first is not None and str(first.label) != (view.axis if view else "fold"):
            first.label = Text(view.axis if view else "fold")
            f.refresh()
        restore_cursor(f, key)
        lines = study_summary_lines(view) if view else ["no study under logs/.studies/ yet: `tui-ft matbench PRESET`"]
        self.query_one("#study-summary", Static).update(Text("\n".join(lines)))  # not markup: names, problems
        self.query_one(StudyCurves).set_view(view)

    def action_calibration(self) -> None:
        chart = self.query_one(StudyCurves)
        chart.calibration = not chart.calibration
        if chart.calibration and (self.view is None or self.view.axis != "member"):
            self.app.notify("c shows an ensemble's calibration chart; this is a Matbench study", timeout=3)
        chart.redraw()

    @on(DataTable.RowHighlighted, "#studies-table")
    def _study_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key else None
        if name and (self.view is None or self.view.name != name):
            self._read(name)
