"""Issue 13 ("a new user's first hour") and issue 12 item 7 in the dashboard.

Driven with Textual's pilot over the fixed fake run history of the snapshot
tests (no training here): ``q`` quits and ``e`` enqueues (13.8), ``r`` resumes
an ended run through the one launch path (13.6), the log-scale axis is
labelled in eV/atom (13.9), tables keep identifying text whole at 120x40 and
80x24 (13.11), the chart goes back to the learning curve for another run
(13.12), and wrong-typed event lines and sidecars written while the app runs
are each reported once and never stop it (12.7).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from textual.screen import ModalScreen

import torch
from test_tui_snapshots import T0, write_history

from tui_ft.core.common.events import EventWriter, RunStarted
from tui_ft.core.library.ckptfile import save_checkpoint
from tui_ft.tui import launcher
from tui_ft.tui.app import TuiFtApp
from tui_ft.tui.charts import log_ticks, short_id
from tui_ft.tui.columns import Col, fit_columns, shorten
from tui_ft.tui.commands import TuiFtCommands
from tui_ft.tui.launcher import LaunchedRun
from tui_ft.tui.messages import RunEvents
from tui_ft.tui.modals import ConfirmScreen, HelpScreen
from tui_ft.tui.screenshots import screen_text
from conftest import pilot_ready as ready  # noqa: E402
from conftest import pilot_until as until  # noqa: E402

FINISHED = "demo-20250101-120000-a1b2"
CHILD = "demo_full-20250101-121500-c3d4"
FAILED = "demo-20250101-123000-e5f6"
INTERRUPTED = "demo-20250101-124500-a7b8"
ALL_RUNS = (FINISHED, CHILD, FAILED, INTERRUPTED)


@pytest.fixture
def hist(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    write_history(root)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(root)
    return root


def started_event(run_id: str, pid: int) -> RunStarted:
    return RunStarted(
        run_id, preset_name="demo", preset={}, device="cpu", n_train=173, n_val=19, n_test=48, pid=pid, epochs=9, time=T0 + 9000
    )


async def footer(pilot) -> str:
    """The footer line (after the footer rebuilt its keys: a binding change recomposes it)."""
    for _ in range(50):
        await pilot.pause(0.1)
        found = [ln for ln in screen_text(pilot.app).splitlines() if "? Help" in ln]
        if found:
            return found[-1]
    raise AssertionError("no footer")


# --------------------------------------------------------------------------- 13.8: q quits, e enqueues


async def test_q_quits_and_e_adds_to_the_queue(hist, monkeypatch):
    launched = []
    monkeypatch.setattr(TuiFtApp, "launch", lambda self, target, select=True: launched.append((target, select)))
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.presets_pane.select("demo.toml")
        await pilot.pause()
        keys = await footer(pilot)
        assert "e Enqueue" in keys and "q Quit" in keys and "q Queue" not in keys
        await pilot.press("e")
        await pilot.pause()
        # nothing runs: the queued preset starts at once, without leaving the tab
        assert [(t.name, s) for t, s in launched] == [("demo", False)]
        assert app.is_running and app.active_tab == "presets"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_text = screen_text(app)
        assert re.search(r"\be\b.*add it to the queue", help_text) and re.search(r"\bq\b.*quit", help_text)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running  # quit, no question: nothing of ours trains


async def test_q_asks_while_our_runs_train(hist):
    app = TuiFtApp()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            st = app.model.run("demo-20250101-130000-ffff")
            st.launched = LaunchedRun("demo-20250101-130000-ffff", "demo", hist / "x.toml", hist / "x.log", proc)
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen) and "still training" in app.screen.question
            await pilot.press("n")
            await pilot.pause()
            assert app.is_running and not isinstance(app.screen, ConfirmScreen)
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
        assert not app.is_running
        assert proc.poll() is None  # quitting leaves runs training
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- 13.6: resume


FAKE_RESUME = r"""
import sys, time
from tui_ft.core.common.events import EventWriter, RunStarted, EpochEnd, RunFinished
args = sys.argv[1:]
assert args[:2] == ["-m", "tui_ft"], args
cmd, run_id = args[2], args[3]
import os
from pathlib import Path
with EventWriter(Path(os.environ["TUI_FT_HOME"]) / "logs" / run_id / "events.jsonl") as w:
    w.emit(RunStarted(run_id, preset_name="demo", preset={}, device="cpu", n_train=173, n_val=19, n_test=48, pid=os.getpid(), epochs=5, time=time.time()))
    time.sleep(0.5)
    w.emit(EpochEnd(run_id, epoch=4, train_mae=0.23, val_mae=0.4871, lr=1e-3, seconds=1.0, best_val_mae=0.4871, best_epoch=4, time=time.time()))
    w.emit(RunFinished(run_id, test_mae=0.45, best_epoch=4, best_val_mae=0.4871, seconds=2.0, n_test=48, time=time.time()))
"""


async def test_r_resumes_an_interrupted_run_and_follows_it(hist, monkeypatch):
    calls = []
    real_popen = subprocess.Popen

    def popen(argv, **kw):
        calls.append(list(argv))
        # the real command line is checked above; a stand-in writes what `tui-ft resume` would
        return real_popen([sys.executable, "-c", FAKE_RESUME, *argv[1:]], **kw)

    monkeypatch.setattr(launcher.subprocess, "Popen", popen)
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.show_run(FINISHED)
        await pilot.pause()
        assert "r Resume" in await footer(pilot)
        assert app.runs_pane.check_action("resume_run", ()) is None  # a finished run: dimmed
        await pilot.press("r")
        await pilot.pause()
        assert calls == []
        # the palette offers resume for the interrupted run only (it has last.pt)
        provider = TuiFtCommands(app.screen)
        await provider.startup()
        titles = [t for t, _, _ in provider.items]
        assert f"Resume run {INTERRUPTED}" in titles
        assert not any(t.startswith("Resume run") and INTERRUPTED not in t for t in titles)

        app.show_run(INTERRUPTED)
        await pilot.pause()
        assert app.runs_pane.check_action("resume_run", ()) is True
        await pilot.press("r")
        await until(pilot, lambda: calls, "the resume process")
        assert calls[0][1:] == ["-m", "tui_ft", "resume", INTERRUPTED, "--plain"]
        await until(pilot, lambda: app.model.get(INTERRUPTED).status == "finished", "the resumed run to finish")
        st = app.model.get(INTERRUPTED)
        assert st.launched is not None and st.launched.kind == "resume"
        assert [ev.epoch for ev in st.summary.history][-1] == 4
        assert app.runs_pane.selected_run == INTERRUPTED

        def row() -> str:
            return next(ln for ln in screen_text(app).splitlines() if INTERRUPTED in ln and "│" in ln)

        # the table shows a change within FLUSH_S (batched) plus a render: on a loaded machine later
        # than any fixed pause, so wait for the row itself (a row stuck at "running" still fails)
        await until(pilot, lambda: "finished" in row(), "the runs table to show the resumed run finished")
        # the library's status column follows the run's events too
        assert app.model.run_status(INTERRUPTED) == "finished"


# --------------------------------------------------------------------------- 13.9: log axis in eV/atom


def test_log_ticks_are_mae_values_at_their_log_positions():
    for lo, hi in [(0.23, 0.58), (0.1, 1.0), (0.4598, 0.5772), (0.001, 2.0), (0.05, 0.06)]:
        pos, labels = log_ticks(math.log10(lo), math.log10(hi), 6)
        assert len(pos) >= 3 and len(pos) == len(labels)
        for p, lab in zip(pos, labels):
            value = float(lab)
            assert value > 0  # a value, never its logarithm
            assert abs(math.log10(value) - p) < 1e-9
            assert lo * 0.999 <= value <= hi * 1.001


async def test_log_scale_axis_is_labelled_in_ev_per_atom(hist):
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.show_run(FINISHED)
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "MAE (eV/atom, log scale)" in text and "log10" not in text
        ticks = [float(m) for m in re.findall(r"^\s*(-?[0-9.]+)┤", text, re.M)]
        assert len(ticks) >= 3, text
        vals = [v for ev in app.model.get(FINISHED).summary.history for v in (ev.val_mae, ev.train_mae) if v]
        assert all(min(vals) * 0.8 <= t <= max(vals) * 1.25 for t in ticks), ticks


# --------------------------------------------------------------------------- 13.11: columns that fit


def test_fit_columns_drops_low_priority_first_and_shortens_ids_in_the_middle():
    cols = [Col("id", "run", 100, "middle", min_width=12), Col("status", "status", 90), Col("note", "note", 10), Col("err", "error", 50, "end")]
    rows = [["demo_full-20250101-121500-c3d4", "interrupted", "some note", "optim.lr: expected a number in (0, 1]"]]
    wide = fit_columns(cols, rows, 200)
    assert wide == {"id": 30, "status": 11, "note": 9, "err": 37}
    mid = fit_columns(cols, rows, 70)
    assert mid["id"] == 30 and mid["status"] == 11 and "note" in mid and mid["err"] < 37
    narrow = fit_columns(cols, rows, 50)
    assert "note" not in narrow and narrow["status"] == 11 and narrow["id"] == 30
    tiny = fit_columns(cols, rows, 30)
    assert list(tiny) == ["id", "status"] and tiny["id"] < 30
    s = shorten("demo_full-20250101-121500-c3d4", 20, "middle")
    assert len(s) == 20 and s.startswith("demo_full-") and s.endswith("c3d4") and "…" in s
    assert short_id("demo_full-20250101-121500-c3d4", 20) == s


async def settled(pilot, table) -> None:
    """Wait until a table shown after a tab switch was fitted to its width."""
    await until(pilot, lambda: table.size.width and table._fitted_for == table.available(), f"{table.id} fitted", 10)
    await pilot.pause(0.1)


def fits(table) -> None:
    """No column runs past the table's edge (no horizontal scrolling hides one)."""
    assert table.scrollable_content_region.width > 0
    assert table.virtual_size.width <= table.scrollable_content_region.width, table.id


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_tables_keep_identifying_text_whole(hist, size):
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        app.presets_pane.select("demo_full.toml")
        await settled(pilot, app.presets_pane.table)
        text = screen_text(app)
        assert "demo@best" in text  # the init column
        for name in ("demo", "demo_full", "broken"):
            assert re.search(rf"│ {name}\s", text), name
        fits(app.presets_pane.table)

        app.action_show_tab("runs")
        await settled(pilot, app.runs_pane.table)
        text = screen_text(app)
        for run_id in ALL_RUNS:
            shown = short_id(run_id, len(run_id))
            assert shown in text or (run_id[:8] in text and run_id[-4:] in text), run_id
        for status in ("interrupted", "failed", "finished"):
            assert re.search(rf"\s{status}\s", text), status
        fits(app.runs_pane.table)

        app.action_show_tab("library")
        await settled(pilot, app.library_pane.table)
        text = screen_text(app)
        rows = [ln for ln in text.splitlines() if ("@best" in ln or "@last" in ln) and "·" not in ln and "←" not in ln and "children" not in ln]
        assert len(rows) == 5
        for ln in rows:
            assert re.search(r"\s(finished|interrupted)\s", ln), ln  # the status whole, never "f"/"r"
            assert re.search(r"(demo|demo_full)-\S*@(best|last)", ln)
        if size[0] >= 120:
            assert f"{FINISHED}@best" in text  # the parent column, whole
        fits(app.library_pane.table)


# --------------------------------------------------------------------------- 13.12: chart follows the selection


async def test_chart_returns_to_the_learning_curve_unless_chosen_for_that_run(hist):
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        tabs = app.runs_pane.query_one("#chart-tabs")
        app.show_run(FINISHED)
        await pilot.pause()
        assert tabs.active == "tab-curve"
        await pilot.press("v", "v")
        await pilot.pause()
        assert tabs.active == "tab-errors"
        app.show_run(CHILD)
        await pilot.pause()
        assert tabs.active == "tab-curve"  # another run: its learning curve
        app.show_run(FINISHED)
        await pilot.pause()
        assert tabs.active == "tab-errors"  # chosen for that run: kept
        # a new run starts (launched or found): the learning curve again
        new = "demo-20250101-140000-0000"
        app.post_message(RunEvents(new, [started_event(new, pid=0)]))
        await pilot.pause(0.3)
        app.show_run(new)
        await pilot.pause()
        assert app.runs_pane.selected_run == new and tabs.active == "tab-curve"


# --------------------------------------------------------------------------- 12.7: bad records while running


def bad_lines(run_id: str) -> list[str]:
    base = {"run_id": run_id, "time": T0}
    return [
        json.dumps({**base, "type": "epoch_end", "epoch": 1, "val_mae": "bad", "train_mae": 0.2, "lr": 1e-3, "seconds": 1.0, "best_val_mae": 0.5, "best_epoch": 0}),
        json.dumps({**base, "type": "message", "text": "x", "time": "abc"}),
        json.dumps({**base, "type": "run_started", "preset_name": None, "preset": {}, "device": "cpu", "pid": 1}),
    ]


async def test_bad_events_and_sidecars_written_while_running_are_reported_once_each(hist, monkeypatch):
    notes: list[tuple[str, str]] = []
    real_notify = TuiFtApp.notify

    def notify(self, message, *, title="", severity="information", **kw):
        notes.append((title, str(message)))
        return real_notify(self, message, title=title, severity=severity, **kw)

    monkeypatch.setattr(TuiFtApp, "notify", notify)
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        # 1) a live run (its pid is ours, alive) that the app follows: bad lines appended while it runs
        live = "demo-20250101-150000-1111"
        with EventWriter(hist / "logs" / live / "events.jsonl") as w:
            w.emit(started_event(live, pid=os.getpid()))
        await until(pilot, lambda: app.model.get(live) is not None and app.model.get(live).following, "the live run followed")
        with open(hist / "logs" / live / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write("\n".join(bad_lines(live)) + "\n")
        # 2) a new, ended run folder holding only bad lines (read by the scan)
        dead = "demo-20250101-160000-2222"
        (hist / "logs" / dead).mkdir(parents=True)
        (hist / "logs" / dead / "events.jsonl").write_text("\n".join(bad_lines(dead)) + "\n", encoding="utf-8")
        # 3) wrong-typed and garbage checkpoint sidecars
        for rid, body in (("demo-20250101-170000-3333", {"run_id": 5, "epoch": "x", "val_mae": "bad", "finished": "yes"}), ("demo-20250101-180000-4444", "not json {")):
            d = hist / "checkpoints" / rid
            d.mkdir(parents=True)
            # a tiny real checkpoint (the library lists what the .pt holds), then a bad sidecar beside it
            meta = {"run_id": rid, "preset_name": "demo", "kind": "best", "epoch": 1, "val_mae": 0.5,
                    "finished": True, "status": "finished", "time": 1735740000.0, "device": "cpu"}
            save_checkpoint(d / "best.pt", {"model_state": {"w": torch.zeros(1)}, "model_args": {}, "meta": meta})
            (d / "best.json").write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
        start = app.scans
        # several scans, forced ones too (they re-read the library)
        await until(pilot, lambda: app.scans >= start + 3, "three more scans", 30)
        for _ in range(3):
            app.request_scan(force=True)
            await pilot.pause(0.4)
        await until(pilot, lambda: app.scans >= start + 6, "the forced scans", 30)
        await pilot.pause(0.5)
        assert app.is_running and app.screen is app.screen_stack[0]  # no modal
        problems = [text for title, text in notes if title == "problem"]
        assert len(problems) == len(set(problems))  # each cause once
        assert problems == list(app.model.problems)
        live_bad = [p for p in problems if f"{live}/events.jsonl" in p]
        dead_bad = [p for p in problems if f"{dead}/events.jsonl" in p]
        sidecars = [p for p in problems if "best.json" in p]
        assert len(live_bad) == 3 and len(dead_bad) == 3, problems
        assert {Path(p.split(":")[0]).parent.name for p in sidecars} == {"demo-20250101-170000-3333", "demo-20250101-180000-4444"}
        # the good records still count: the live run is running, the other runs are listed
        assert app.model.get(live).status == "running"
        assert all(app.model.get(r) is not None for r in ALL_RUNS)
        # the problems stay listed for later
        app.action_show_problems()
        await pilot.pause()
        assert f"problems seen ({len(problems)})" in screen_text(app)


# --------------------------------------------------------------------------- 13.10: NO_COLOR


def relative_luminance(rgb) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def wcag_contrast(fg, bg) -> float:
    hi, lo = sorted((relative_luminance(fg), relative_luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def region_contrasts(app, region) -> list[tuple[float, str]]:
    """(contrast, text) of every visible text run in ``region``, with the
    colours as the terminal gets them (after the app's filters: NO_COLOR's
    monochrome one included)."""
    from textual.color import Color
    from textual.strip import Strip

    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    lines = list(update.strips)
    out = []
    for y in range(region.y, region.y + region.height):
        strip = Strip.join(list(lines[y])).crop(region.x, region.x + region.width)
        for f in app.get_line_filters():
            strip = strip.apply_filter(f, Color(0, 0, 0))
        for seg in strip:
            st = seg.style
            if not seg.text.strip() or st is None or st.color is None or st.bgcolor is None:
                continue
            out.append((wcag_contrast(st.color.get_truecolor(), st.bgcolor.get_truecolor()), seg.text.strip()))
    return out


COMMENTED = """\
# a preset with a comment, a string, numbers and a boolean
[run]
name = "commented"   # trailing comment
description = "colours under NO_COLOR"

[data]
source = "demo"
fraction = 0.5

[finetune]
mode = "head"
refit_atomref = true

[optim]
lr = 1e-3

[train]
epochs = 2
"""


async def test_toml_preview_is_readable_without_colour(hist, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    (hist / "presets" / "commented.toml").write_text(COMMENTED, encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        for name in ("commented.toml", "demo.toml", "broken.toml"):
            app.presets_pane.select(name)
            await pilot.pause(0.3)
            runs = region_contrasts(app, app.query_one("#preset-toml").region)
            assert len(runs) > 10, name
            worst = min(runs)
            assert worst[0] >= 4.5, f"{name}: {worst[1]!r} has contrast {worst[0]:.2f}:1"


def test_curves_differ_by_marker_not_only_by_colour():
    from tui_ft.tui.charts import RunSeries, learning_curves

    def series(rid: str) -> RunSeries:
        return RunSeries(rid, [0, 1, 2], [0.5, 0.4, 0.3], [1, 2], [0.3, 0.2])

    curves = learning_curves(series("a"), [series("b"), series("c"), series("d")])
    assert [c.label.split()[0] for c in curves] == ["val", "train", "val", "val", "val"]
    markers = [c.marker for c in curves]
    assert len(set(markers)) == len(markers), markers


# --------------------------------------------------------------------------- 13.15: the new-preset form


async def test_new_preset_form_fields_description_and_empty_values(hist):
    from textual.widgets import Input, Select

    from tui_ft.core.config.presets import load_preset
    from tui_ft.tui.form import PresetForm

    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.presets_pane.select("demo.toml")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause(0.3)
        form = app.screen
        assert isinstance(form, PresetForm)
        for fid in ("source", "target", "device", "patience"):
            assert isinstance(form.query_one(f"#f-{fid}"), Input), fid
        for fid in ("optimizer", "scheduler", "mode"):
            assert isinstance(form.query_one(f"#f-{fid}"), Select), fid
        desc = form.query_one("#f-description", Input)
        inherited = desc.value
        assert inherited.startswith("Smoke test")
        form.query_one("#f-epochs", Input).value = "10"
        await pilot.pause(0.2)
        assert desc.value == "from demo: epochs 6 → 10"  # no longer the inherited text
        form.query_one("#f-epochs", Input).value = "6"
        await pilot.pause(0.2)
        assert desc.value == inherited  # nothing changed: the base's description holds
        form.query_one("#f-lr", Input).value = ""
        await pilot.pause(0.2)
        assert str(form.query_one("#e-lr").render()).startswith("enter a value")
        assert "missing" not in str(form.query_one("#e-lr").render())
        form.query_one("#f-lr", Input).value = "1e-4"
        form.query_one("#f-patience", Input).value = "2"
        form.query_one("#f-scheduler", Select).value = "cosine"
        form.query_one("#f-name", Input).value = "demo_cosine"
        await pilot.pause(0.2)
        assert desc.value.startswith("from demo: ") and "scheduler none → cosine" in desc.value
        desc.value = "my own words"
        await pilot.pause(0.2)
        form.query_one("#f-epochs", Input).value = "7"
        await pilot.pause(0.2)
        assert desc.value == "my own words"  # written by the user: left alone
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
    path = hist / "presets" / "demo_cosine.toml"
    text = path.read_text(encoding="utf-8")
    assert "init" not in text  # an empty optional field is left out, not `init = ""`
    p = load_preset(path)
    assert (p.optim.scheduler, p.train.patience, p.train.epochs, p.optim.lr, p.run.description) == ("cosine", 2, 7, 1e-4, "my own words")


async def test_an_error_applying_what_a_scan_found_is_reported_once_and_the_app_keeps_running(hist, monkeypatch):
    from tui_ft.tui.model import Dashboard

    def broken(self, res):
        raise TypeError("unsupported format string passed to str.__format__")

    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        monkeypatch.setattr(Dashboard, "apply_scan", broken)
        for _ in range(3):
            app.request_scan(force=True)
            await pilot.pause(0.4)
        await until(pilot, lambda: app.model.problems, "the problem reported")
        assert list(app.model.problems) == ["on_scan_done: TypeError: unsupported format string passed to str.__format__"]
        assert app.is_running and app.screen is app.screen_stack[0]
    assert app.return_code in (0, None)


# --------------------------------------------------------------------------- issue 14: data missing, export, predict


async def test_preset_whose_data_is_missing_is_marked_and_not_launchable(hist, monkeypatch):
    """A preset whose data file is not there is listed with the reason and the fix, and not launched."""
    text = (hist / "presets" / "demo.toml").read_text(encoding="utf-8")
    (hist / "presets" / "nodata.toml").write_text(
        text.replace('name = "demo"', 'name = "nodata"').replace('source = "demo"', 'source = "data/mine.json.gz"'),
        encoding="utf-8",
    )
    launched = []
    monkeypatch.setattr(TuiFtApp, "launch", lambda self, target, select=True: launched.append(target))
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        entry = app.presets_pane.entries["nodata.toml"]
        assert not entry.ok and entry.preset is not None
        assert "data.source" in entry.error and "not found" in entry.error and "copy the file to" in entry.error
        assert app.presets_pane.entries["demo.toml"].ok  # the demo data is always there
        app.presets_pane.select("nodata.toml")
        await pilot.pause()
        assert "copy the file to" in screen_text(app)
        await pilot.press("l")
        await pilot.pause()
        assert launched == [] and isinstance(app.screen, ModalScreen)
        assert "nodata.toml cannot be launched" in screen_text(app)


async def test_library_exports_and_predicts_through_the_cli(hist, monkeypatch):
    """x runs `tui-ft export REF exports/RUN-KIND.pt`, f asks for an input and runs `tui-ft predict`;
    each outcome is one notification (a failure names its last stderr line, a partial predict the
    count its summary line gives). A second x never overwrites the first export (export refuses
    an existing file without --force, and the dashboard does not pass it): it gets RUN-KIND-2.pt."""
    calls, notes = [], []
    answers = iter([(0, "", ""),
                    (1, "", "[error] mp-1: unreadable structure\npredicted 3 of 4 structures -> out.csv (0.1s); 1 failed\n"),
                    (2, "", "x.pt: not a readable checkpoint\n")])

    def fake_run_cli(args, paths, **kw):
        calls.append(list(args))
        out = Path(args[-1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("id,prediction\n" if args[0] == "predict" else "model", encoding="utf-8")
        return next(answers)

    monkeypatch.setattr(launcher, "run_cli", fake_run_cli)
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        record = lambda msg, **kw: notes.append((kw.get("severity", "information"), msg))  # noqa: E731
        monkeypatch.setattr(app, "notify", record)
        monkeypatch.setattr(app.library_pane, "notify", record)
        app.action_show_tab("library")
        await pilot.pause()
        app.library_pane.select(f"{FINISHED}@best")
        app.library_pane.table.focus()
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: len(calls) == 1 and any("exported" in m for _, m in notes), "the export")
        assert calls[0] == ["export", f"{FINISHED}@best", str(hist / "exports" / f"{FINISHED}-best.pt")]
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, ModalScreen), "the path prompt")
        await pilot.press(*"demo", "enter")
        await until(pilot, lambda: len(calls) == 2 and any(s == "warning" for s, _ in notes), "the predict")
        out = hist / "predictions" / f"{FINISHED}-best-demo.csv"
        assert calls[1] == ["predict", f"{FINISHED}@best", "demo", "--out", str(out)]
        assert [m for s, m in notes if s == "warning"] == [
            f"demo predicted with {FINISHED}@best: {out} (1 structure(s) failed; see the CSV's input)"]
        await pilot.press("x")
        await until(pilot, lambda: any(s == "error" for s, _ in notes), "the failed export")
        assert calls[2] == ["export", f"{FINISHED}@best", str(hist / "exports" / f"{FINISHED}-best-2.pt")]
        assert (hist / "exports" / f"{FINISHED}-best.pt").read_text(encoding="utf-8") == "model"  # untouched
        assert [m for s, m in notes if s == "error"] == [f"export {FINISHED}@best failed: x.pt: not a readable checkpoint"]
        assert app.is_running
