"""The dashboard's compare view, filter line and system pane, driven with Textual's pilot (issue 28).

Two real demo runs (head mode, 2 epochs) differ only in ``optim.lr``; a third run, in full
mode, is an event stream written by the test (what a finished full-mode run writes), so
the filter has something to leave out without a full-mode training here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from conftest import pilot_ready, pilot_until
from test_compare import _preset, write_run
from tui_ft.tui.app import TuiFtApp
from tui_ft.tui.compare_view import CompareScreen

SIZE = (130, 42)
RUN_TIMEOUT = 300

DEMO = """\
[run]
name = "{name}"
description = "compare test: the demo, head mode"

[data]
source = "demo"

[finetune]
mode = "head"

[optim]
lr = {lr}

[train]
epochs = 2
batch_size = 8
device = "cpu"
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, request) -> tuple[Path, list[str]]:
    try:
        cache = request.getfixturevalue("graph_cache_dir")
    except pytest.FixtureLookupError:
        cache = tmp_path_factory.mktemp("cache")
    root = tmp_path_factory.mktemp("compare") / "project"
    (root / "presets").mkdir(parents=True)
    env = {**os.environ, "TUI_FT_HOME": str(root), "TUI_FT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    ids = []
    for rid, lr in (("lr-1e-3", "1e-3"), ("lr-1e-4", "1e-4")):
        path = root / "presets" / f"demo_{rid}.toml"
        path.write_text(DEMO.format(name="demo_cmp", lr=lr), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "tui_ft", "run", str(path), "--plain", "--run-id", rid],
                              cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ids.append(rid)
    write_run(root, "full-lr1e-5", _preset(name="full_cmp", lr=1e-5, mode="full"), t0=time.time() - 50_000)
    return root, ids


@pytest.fixture
def home(two_runs, monkeypatch):
    root, ids = two_runs
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.chdir(root)
    return root, ids


def table_ids(app) -> list[str]:
    t = app.runs_pane.table
    return [t.coordinate_to_cell_key((r, 0)).row_key.value for r in range(t.row_count)]


@pytest.mark.slow
async def test_compare_view_shows_exactly_the_key_that_differs(home):
    root, (a, b) = home
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot_ready(pilot)
        await pilot.press("2")
        await pilot_until(pilot, lambda: {a, b} <= set(table_ids(app)), "the two runs in the table")
        app.runs_pane.select(a)
        await pilot.press("o")  # pin a
        app.runs_pane.select(b)
        await pilot.pause()
        await pilot.press("d")  # compare the pinned runs with the selected one
        await pilot_until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare view")
        screen = app.screen
        assert screen.run_ids == [b, a] or screen.run_ids == [a, b]
        keys = screen.query_one("#compare-keys", DataTable)
        rows = [keys.get_row_at(i) for i in range(keys.row_count)]
        assert [str(r[0]) for r in rows] == ["optim.lr"]  # exactly that key: data, split, the rest equal
        assert sorted(str(c) for c in rows[0][1:]) == ["0.0001", "0.001"]
        results = screen.query_one("#compare-results", DataTable)
        assert results.row_count == 2
        assert "same data" in str(screen.query_one("#compare-note", Static).render())
        assert screen.query_one("#compare-curve") is not None
        await pilot.press("escape")
        await pilot_until(pilot, lambda: not isinstance(app.screen, CompareScreen), "the compare view closed")
        # one run alone: nothing to compare, said plainly without leaving the tab
        app.model.runs[a].overlay = False
        app.runs_pane.select(a)
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)


@pytest.mark.slow
async def test_the_filter_line_keeps_the_matching_runs_and_shows_a_bad_filter_in_place(home):
    root, (a, b) = home
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot_ready(pilot)
        await pilot.press("2")
        await pilot_until(pilot, lambda: len(table_ids(app)) == 3, "three runs in the table")
        await pilot.press("slash")
        box = app.runs_pane.query_one("#runs-filter", Input)
        assert box.display and box.has_focus
        box.value = "optim.lr < 1e-3 and finetune.mode = head"
        await pilot.press("enter")
        await pilot.pause()
        assert table_ids(app) == [b]  # lr 1e-4, head; not lr 1e-3, not the full-mode run
        assert "1 of 3" in str(app.runs_pane.table.border_title)
        # a bad filter: its error under the line, the table and the last good filter kept, same tab
        box.focus()
        box.value = "optim.lr < 1e-3 andd status = finished"
        await pilot.press("enter")
        await pilot.pause()
        err = app.runs_pane.query_one("#runs-filter-error", Static)
        assert err.display and "column 17" in str(err.render()) and "andd" in str(err.render())
        assert table_ids(app) == [b]
        assert app.query_one("#main-tabs").active == "runs"
        # the filter persists while runs stream in: a new matching run shows, a new other one does not
        write_run(root, "late-head", _preset(name="late", lr=5e-5))
        write_run(root, "late-full", _preset(name="late", lr=5e-5, mode="full"))
        app.request_scan()
        await pilot_until(pilot, lambda: "late-head" in table_ids(app), "the new matching run")
        assert "late-full" not in table_ids(app)
        # an empty filter shows every run again
        box.focus()
        box.value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert len(table_ids(app)) == 5 and not err.display


@pytest.mark.slow
async def test_the_system_pane_renders_without_a_gpu(home):
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot_ready(pilot)
        await pilot.press("2")
        await pilot_until(pilot, lambda: app.system_samples > 0, "a system sample")
        text = str(app.query_one("#system-pane", Static).render())
        assert "CPU" in text and "memory" in text
        assert "GPU" in text  # what it says of the GPU: its use, or that there is none
