"""The compare view: two or more runs side by side (``d`` in the Runs tab).

The resolved presets with only the keys that differ (data and split hashes included, so
"same data?" is answered), the runs' learning curves of one metric overlaid, and their
results in one table: what ``tui-ft compare`` prints, as widgets
(:mod:`tui_ft.core.library.compare` computes both).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from tui_ft.core.library.compare import Compared, _elapsed, _num, _show, compare_runs, epochs_cell
from tui_ft.tui.charts import series_from_history
from tui_ft.tui.plots import CurveChart, CurvePlot
from tui_ft.tui.state import RunState


class CompareScreen(ModalScreen[None]):
    """Runs side by side: the keys that differ, the curves, the results (escape closes)."""

    BINDINGS = [Binding("escape,q", "close", "Close")]
    DEFAULT_CSS = """
    CompareScreen #compare-box { width: 96%; height: 92%; }
    CompareScreen #compare-top { height: 1fr; }
    CompareScreen #compare-keys { width: 3fr; height: 1fr; }
    CompareScreen #compare-curve { width: 2fr; height: 1fr; }
    CompareScreen #compare-results { height: auto; max-height: 12; }
    CompareScreen #compare-note { height: auto; }
    """

    def __init__(self, states: list[RunState], metric: str | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.states = states
        self.metric = metric
        self.result: Compared = compare_runs([st.summary for st in states])

    @property
    def run_ids(self) -> list[str]:
        return self.result.run_ids

    def compose(self) -> ComposeResult:
        res = self.result
        with Vertical(id="compare-box", classes="dialog wide"):
            yield Label(f"compare {len(res.run_ids)} runs", classes="dialog-title", markup=False)
            yield Static(self._note(), id="compare-note")
            with Horizontal(id="compare-top"):
                yield DataTable(id="compare-keys", cursor_type="row", zebra_stripes=True)
                yield CurveChart(plot_id="compare-curve-plot", id="compare-curve")
            yield DataTable(id="compare-results", cursor_type="row", zebra_stripes=True)
            yield Label("escape: close", classes="dialog-hint")

    def _note(self) -> Text:
        res = self.result
        hashes = {"data_sha256", "split_sha256"} & set(res.differing_keys)
        if not hashes:
            data = ("same data and split", "green")
        elif hashes == {"split_sha256"}:
            data = ("same data, other splits", "yellow")
        else:
            data = ("other data" + (" or data not recorded" if any(
                v is None for k, vals in res.differing if k in hashes for v in vals) else ""), "yellow")
        n = len(res.differing)
        keys = f"{n} key{'s' if n != 1 else ''} differ{'s' if n == 1 else ''}, {res.n_same} the same"
        return Text.assemble(data, "  ·  ", keys)

    def on_mount(self) -> None:
        res = self.result
        keys = self.query_one("#compare-keys", DataTable)
        keys.add_columns("key", *(letter(i) for i in range(len(res.run_ids))))  # A, B, ...: the results' rows
        for key, vals in res.differing:
            keys.add_row(key, *(_show(v) for v in vals), key=key)
        if not res.differing:
            keys.add_row("(no key differs)", *("" for _ in res.run_ids))
        keys.border_title = "preset keys that differ"
        table = self.query_one("#compare-results", DataTable)
        table.add_columns("", "run", "preset", "status", "best val", "at", "test", "epochs", "wall", "unit")
        for i, r in enumerate(res.rows):
            ep = epochs_cell(r)
            table.add_row(letter(i), r["run_id"], r["preset"], r["status"], _num(r["best_val_mae"]), _num(r["best_epoch"], "d"),
                          _num(r["test_mae"]), ep, _elapsed(r["elapsed_s"]), r["unit"] or "-", key=r["run_id"])
        table.border_title = "results"
        series = [series_from_history(st.run_id, st.summary.history, self.metric) for st in self.states]
        plot = self.query_one("#compare-curve-plot", CurvePlot)
        plot.set_runs(series[0] if series else None, series[1:], metric=self.metric)

    def action_close(self) -> None:
        self.dismiss(None)


def letter(i: int) -> str:
    """A, B, ..., Z, AA, AB, ...: a run's column in the keys table and its row in the results."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out
