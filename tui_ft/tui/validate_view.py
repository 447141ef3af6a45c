"""The validation of a checkpoint in the dashboard: a screen over one results folder of ``tui-ft validate``
(``results.json`` and ``events.jsonl``, see :mod:`tui_ft.core.validate.runner`).

It shows a table of the checks (status, verdict, one line of numbers), the equation of state of one
structure per model with the data's points (plotext, through the project's plot widget and ticks), and
the last progress lines. It re-reads the folder every second, so a validation running in its own process
(started here with ``r``, or from the CLI) fills in as it goes. Opened from the Library tab with ``v``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from tui_ft.core.validate.events import read_events
from tui_ft.core.validate.runner import read_results
from tui_ft.core.validate.summary import NAMES, check_rows, eos_curves
from tui_ft.tui.charts import nice_ticks
from tui_ft.tui.plots import _Plot

COLORS = ((86, 180, 233), (230, 159, 0), (150, 150, 150))
MARKERS = ("braille", "dot", "•")


class EosPlot(_Plot):
    """E − E_min (meV/atom) against volume (Å³/atom), one curve per model and the data's points: each
    relative to its own lowest energy, so curves of models with different energy zeros compare in shape."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.curves: dict[str, tuple[list[float], list[float]]] = {}
        self.title = ""

    def set_curves(self, curves: dict[str, tuple[list[float], list[float]]], title: str) -> None:
        self.curves, self.title = curves, title
        self.redraw()

    def _draw(self) -> None:
        if not self.curves:
            self._blank(self.title or "no equation of state yet")
            return
        plt = self.plt
        plt.clear_figure()
        xs_all, ys_all = [], []
        for k, (label, (vs, es)) in enumerate(self.curves.items()):
            lo = min(es)
            ys = [1000 * (e - lo) for e in es]
            xs_all += vs
            ys_all += ys
            if label == "data":
                plt.scatter(vs, ys, color=COLORS[2], marker=MARKERS[2], label="data labels")
            else:
                plt.plot(vs, ys, color=COLORS[k % 2], marker=MARKERS[k % 2], label=label[:28])
        ticks, labels = nice_ticks(min(xs_all), max(xs_all), max(3, self.plot_width // 14))
        plt.xticks(ticks, labels)
        plt.title(self.title)
        plt.xlabel("volume (Å³/atom)")
        plt.ylabel("E − E_min (meV/atom)")
        self.refresh()


class ValidateScreen(ModalScreen[None]):
    """One checkpoint's validation results (see the module docstring)."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,q", "close", "Close"),
        Binding("r", "run_validate", "Run validate", tooltip="run `tui-ft validate REF` in its own process (default bounds)"),
        Binding("s", "next_structure", "Next structure", tooltip="the EOS of the next relaxed structure"),
    ]

    def __init__(self, ref: str, folder: Path, root: Path | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.ref, self.folder, self.root = ref, Path(folder), root
        self.index = 0
        self.proc: subprocess.Popen | None = None
        self.results: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="validate-dialog"):
            yield Label(f"validate {self.ref}", classes="dialog-title", markup=False)
            yield Label("", id="validate-status", markup=False)
            table = DataTable(id="validate-checks", cursor_type="row", zebra_stripes=True)
            table.add_columns("check", "status", "verdict", "result")
            yield table
            yield EosPlot(id="validate-eos")
            yield Static("", id="validate-log", markup=False)
            yield Label("r: run validate  s: next structure  escape: close", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#validate-eos").styles.height = 14
        self.reload()
        self.set_interval(1.0, self.reload)

    def reload(self) -> None:
        self.results = read_results(self.folder)
        events = read_events(self.folder / "events.jsonl")
        running = self.proc is not None and self.proc.poll() is None
        table = self.query_one("#validate-checks", DataTable)
        table.clear()
        status = self.query_one("#validate-status", Label)
        if self.results is None:
            status.update(("validation running…" if running or events else
                           "no validation yet: press r to run `tui-ft validate " + self.ref + "`") + f"  ({self.folder})")
        else:
            done = "finished" if self.results.get("finished") else ("running…" if running else "unfinished")
            ag = (self.results.get("against") or {}).get("label", "nothing")
            status.update(f"{done}: against {ag}  ({self.folder})")
            for name, st, verdict, line in check_rows(self.results):
                table.add_row(NAMES.get(name, name), st, verdict or "–", line[:160], key=name)
        self.query_one("#validate-log", Static).update("\n".join(ev.line() for ev in events[-4:]))
        self._draw_eos()

    def _draw_eos(self) -> None:
        res = self.results or {}
        rows = ((res.get("checks") or {}).get("eos") or {}).get("rows") or []
        if not rows:
            self.query_one(EosPlot).set_curves({}, "the equation of state appears when the eos check has run")
            return
        self.index %= len(rows)
        self.query_one(EosPlot).set_curves(eos_curves(res, self.index),
                                           f"EOS {rows[self.index]['name']} ({self.index + 1}/{len(rows)})")

    def action_next_structure(self) -> None:
        self.index += 1
        self._draw_eos()

    def action_run_validate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.notify("a validation is already running", severity="warning")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.root is not None:
            env["TUI_FT_HOME"] = str(self.root)
        env.pop("TEXTUAL", None)
        with open(self.folder / "validate.log", "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tui_ft", "validate", self.ref, "--out", str(self.folder)],
                                         cwd=self.root or None, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self.notify(f"validating {self.ref} (pid {self.proc.pid}); progress in {self.folder / 'events.jsonl'}",
                    title="validate", timeout=6)

    def action_close(self) -> None:
        self.dismiss(None)
