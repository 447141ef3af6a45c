"""The Sweeps tab: Optuna sweeps, their trials, curves and parameter scatters.

A thread worker reads ``logs/.sweeps/`` every few seconds while the tab is
shown (:func:`tui_ft.tui.study_model.list_sweep_rows` and
:func:`~tui_ft.tui.study_model.load_sweep_view`, both total) and posts
:class:`SweepsPane.Loaded`. ``p`` cycles the parameter of the scatter, ``b``
saves the best trial as ``presets/<sweep>-best.toml`` (asking before it
overwrites one).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Static

from tui_ft.core.common.paths import Paths
from tui_ft.tui.charts import nice_ticks
from tui_ft.tui.columns import plain
from tui_ft.tui.messages import RescanRequested
from tui_ft.tui.modals import ConfirmScreen, TextScreen
from tui_ft.tui.studies import REFRESH_S, ListViewPane, ViewPlot, cursor_key, restore_cursor
from tui_ft.tui.study_model import (
    SweepListRow,
    SweepView,
    best_preset_path,
    fmt_param,
    fmt_value,
    list_sweep_rows,
    load_sweep_view,
    next_key,
    save_best_preset,
    scatter_data,
    sweep_curves,
    trial_cells,
)


class SweepCurves(ViewPlot):
    """The best trial's validation MAE per epoch, the other trials faint beneath it."""

    view: SweepView | None

    def _draw(self) -> None:
        v = self.view
        if v is None:
            self._blank("no sweep: run a preset with a [sweep] table")
            return
        curves = sweep_curves(v, max(10, 2 * (self.plot_width - 10)))
        if not curves:
            self._blank(f"{v.name}: no trial has an epoch yet")
            return
        best = f"best trial {v.best.number}" if v.best is not None else "no finished trial yet"
        # only the best trial is named: forty faint trials would fill the plot with their legend
        self.draw_curves(curves, f"sweep {v.name}: {best} (others faint)", legend={curves[-1].label})


class ParamScatter(ViewPlot):
    """One sampled parameter against the objective, one point per finished trial."""

    view: SweepView | None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key: str | None = None

    def set_view(self, view: SweepView | None, key: str | None) -> None:  # type: ignore[override]
        self.view, self.key = view, key
        self.redraw()

    def _draw(self) -> None:
        v, key = self.view, self.key
        if v is None or key is None:
            self._blank("no parameter to show")
            return
        sc = scatter_data(v, key)
        if not sc.xs:
            self._blank(f"{key}: no finished trial yet")
            return
        plt = self.plt
        plt.clear_figure()
        plt.scatter(sc.xs, sc.ys, color=(190, 190, 190), marker="•")
        if sc.best is not None:
            plt.scatter([sc.best[0]], [sc.best[1]], color=(86, 180, 233), marker="●")
        if sc.ticks:
            plt.xticks(sc.ticks, sc.labels)
            lo, hi = min(sc.ticks), max(sc.ticks)
            pad = 0.5 if not sc.log else 0.1
            plt.xlim(lo - pad, hi + pad)
        elif len(set(sc.xs)) > 1:
            ticks, labels = nice_ticks(min(sc.xs), max(sc.xs), max(3, self.plot_width // 12))
            plt.xticks(ticks, labels)
        plt.title(f"{key} vs objective ({len(sc.xs)} finished trials)")
        plt.xlabel(f"{key}{' (log scale)' if sc.log else ''}")
        plt.ylabel("best val MAE")
        self.refresh()


class SweepsPane(ListViewPane):
    """The sweeps of ``logs/.sweeps/``; the selected one's trials, curves and scatter."""

    LIST_TABLE = "sweeps-table"
    BINDINGS = [
        Binding("p", "next_param", "Next param", tooltip="show the next sampled parameter in the scatter"),
        Binding("b", "save_best", "Save best", tooltip="save the best trial as presets/<sweep>-best.toml"),
        Binding("r", "refresh", "Refresh", tooltip="read the sweeps from disk now"),
    ]

    @dataclass
    class Loaded(Message):
        """A worker read the sweeps (``view``: the selected one, or None)."""

        rows: list[SweepListRow]
        problems: list[str]
        view: SweepView | None

    def __init__(self, paths: Paths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.rows: list[SweepListRow] = []
        self.problems: list[str] = []
        self.view: SweepView | None = None
        self.key: str | None = None  # the parameter in the scatter
        self.loads = 0  # completed reads (tests wait for them)

    def compose(self) -> ComposeResult:
        yield DataTable(id="sweeps-table", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="trials-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sweep-status")
        with Horizontal(id="sweep-bottom"):
            yield SweepCurves(id="sweep-curve")
            yield ParamScatter(id="sweep-scatter")

    def on_mount(self) -> None:
        t = self.sweeps_table
        for label in ("sweep", "done", "finished", "pruned", "failed", "running", "best", "trial"):
            t.add_column(label, key=label)
        t.border_title = "logs/.sweeps/"
        self.trials_table.border_title = "trials"
        self.set_interval(REFRESH_S, self.refresh_if_shown, name="sweeps-refresh")

    @property
    def sweeps_table(self) -> DataTable:
        return self.query_one("#sweeps-table", DataTable)

    @property
    def trials_table(self) -> DataTable:
        return self.query_one("#trials-table", DataTable)


    @work(thread=True, exclusive=True, exit_on_error=False, group="sweeps", description="read sweeps")
    def _read(self, name: str | None) -> None:
        rows, problems = list_sweep_rows(self.paths)
        names = [r.name for r in rows]
        if name not in names:
            name = names[0] if names else None
        view = load_sweep_view(name, self.paths) if name else None
        self.post_message(self.Loaded(rows, problems, view))

    def on_sweeps_pane_loaded(self, message: Loaded) -> None:
        message.stop()
        self.loads += 1
        if message.rows != self.rows:
            self.rows = message.rows
            t = self.sweeps_table
            key = cursor_key(t) or (message.view.name if message.view else None)
            t.clear()
            for r in message.rows:
                if r.problem:
                    t.add_row(*plain(r.name, "-", "-", "-", "-", "-", r.problem, "-"), key=r.name)
                    continue
                done = f"{r.complete + r.pruned}/{r.requested if r.requested is not None else '?'}"
                t.add_row(*plain(r.name, done, str(r.complete), str(r.pruned), str(r.failed), str(r.running),
                                 fmt_value(r.best_value), "-" if r.best_trial is None else str(r.best_trial)), key=r.name)
            restore_cursor(t, key)
        self.problems = message.problems
        view = message.view
        if view is not None and view.name != self.selected:
            return  # the selection moved while it was read: the next read brings it
        if view != self.view or view is None:
            self.show_view(view)

    def show_view(self, view: SweepView | None) -> None:
        self.view = view
        t = self.trials_table
        key = cursor_key(t)
        t.clear(columns=True)
        keys = view.keys if view else []
        for label in ("trial", "state", "value", "epoch", *keys, "run"):
            t.add_column(label, key=label)
        if view is not None:
            for row in view.rows:
                t.add_row(*plain(*trial_cells(row, keys)), key=str(row.number))
            t.border_title = f"trials of {escape(view.name)} (by value)"
        restore_cursor(t, key)
        if self.key not in keys:
            self.key = keys[0] if keys else None
        self.update_status()
        self.query_one(SweepCurves).set_view(view)
        self.query_one(ParamScatter).set_view(view, self.key)

    def update_status(self) -> None:
        v = self.view
        if self.problems:
            text = "problem: " + self.problems[0]
        elif v is None:
            text = "no sweep under logs/.sweeps/ yet: run a preset with a [sweep] table (tui-ft --preset FILE)"
        elif v.problem:
            text = "problem: " + v.problem
        elif v.best is None:
            text = f"{v.name}: no finished trial yet"
        else:
            b = v.best
            shown = "  ".join(f"{k}={fmt_param(x)}" for k, x in b.params.items())
            text = f"best: trial {b.number}  value {fmt_value(b.value)}  {shown}   (p: next parameter, b: save as preset)"
        self.query_one("#sweep-status", Static).update(Text(text))  # not markup: "[sweep]" stays

    @on(DataTable.RowHighlighted, "#sweeps-table")
    def _sweep_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key else None
        if name and (self.view is None or self.view.name != name):
            self._read(name)

    def action_next_param(self) -> None:
        if self.view is None or not self.view.keys:
            self.notify("no sampled parameter to show", severity="warning", timeout=3)
            return
        self.key = next_key(self.view.keys, self.key)
        self.query_one(ParamScatter).set_view(self.view, self.key)

    def action_save_best(self) -> None:
        v = self.view
        if v is None or v.problem:
            self.notify("no readable sweep selected", severity="warning", timeout=4)
            return
        if v.best is None:
            self.notify(f"sweep {v.name} has no finished trial yet", severity="warning", timeout=4)
            return
        target = best_preset_path(self.paths, v.name)
        if not target.exists():
            self._save(v.name, overwrite=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._save(v.name, overwrite=True)

        self.app.push_screen(
            ConfirmScreen(f"presets/{target.name} exists. Overwrite it with the best trial of {v.name}?",
                          yes="Overwrite", no="Keep", danger=True),
            answered,
        )

    def _save(self, name: str, *, overwrite: bool) -> None:
        try:
            path = save_best_preset(self.paths, name, overwrite=overwrite)
        except FileExistsError as exc:
            self.notify(f"{exc} exists; not overwritten", severity="warning", timeout=6)
            return
        except Exception as exc:  # noqa: BLE001 - SweepError, PresetError, OSError: shown, not fatal
            self.app.push_screen(TextScreen(f"cannot save the best trial of {name}", str(exc), error=True))
            return
        self.notify(f"saved presets/{path.name}: it is in the Presets tab", title="best preset", timeout=6)
        self.post_message(RescanRequested())
