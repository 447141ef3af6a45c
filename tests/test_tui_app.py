"""The dashboard driven with Textual's pilot against the real training engine.

Every run here is a real ``python -m tui_ft run`` process on the offline demo
data (head mode, a few seconds each once the graph cache is warm); those
tests are marked ``slow``. The
session-wide cache folder is shared with the other test files when their
``graph_cache_dir`` fixture exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Label

from tui_ft.core.common.events import EpochEnd, RunStarted, read_events
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import load_preset
from tui_ft.tui.app import TuiFtApp
from tui_ft.tui.form import PresetForm
from tui_ft.tui.messages import RunEvents
from tui_ft.tui.modals import ConfirmScreen, PresetPicker, TextScreen
from tui_ft.tui.panes import LibraryPane, PresetsPane, RunsPane

ROOT = Path(__file__).resolve().parents[1]
SIZE = (120, 40)
RUN_TIMEOUT = 240.0


def long_preset(name: str, epochs: int = 400) -> str:
    return f"""\
[run]
name = "{name}"
description = "a long head-mode run on the demo data (cancelled by the test)"

[data]
source = "demo"

[finetune]
mode = "head"

[optim]
lr = 1e-4

[train]
epochs = {epochs}
batch_size = 8
device = "cpu"
"""


@pytest.fixture(scope="module")
def cache_dir(request, tmp_path_factory) -> Path:
    try:
        return request.getfixturevalue("graph_cache_dir")
    except pytest.FixtureLookupError:
        return tmp_path_factory.mktemp("tui-ft-cache")


def make_root(root: Path, presets: tuple[str, ...] = ("demo.toml",)) -> Path:
    (root / "presets").mkdir(parents=True, exist_ok=True)
    for name in presets:
        shutil.copy(ROOT / "presets" / name, root / "presets" / name)
    return root


@pytest.fixture
def home(tmp_path, monkeypatch, cache_dir) -> Path:
    """A fresh project root with presets/demo.toml; TUI_FT_HOME and cwd point at it."""
    root = make_root(tmp_path / "project")
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(cache_dir))
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory, cache_dir) -> tuple[Path, str]:
    """A project root holding one finished demo run, made headless once per module."""
    root = make_root(tmp_path_factory.mktemp("finished") / "project")
    env = {**os.environ, "TUI_FT_HOME": str(root), "TUI_FT_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "tui_ft", "run", "presets/demo.toml", "--plain"],
        cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_id,) = [d.name for d in (root / "logs").iterdir()]
    return root, run_id


@pytest.fixture
def in_finished_home(finished_home, monkeypatch, cache_dir) -> tuple[Path, str]:
    root, run_id = finished_home
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(cache_dir))
    monkeypatch.chdir(root)
    return root, run_id


async def wait_for(pilot, cond, timeout: float = RUN_TIMEOUT, what: str = "condition", step: float = 0.5):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(step)


async def started(pilot) -> TuiFtApp:
    app = pilot.app
    await wait_for(pilot, lambda: app.scans >= 1, 20, "the first scan", 0.05)
    await pilot.pause()
    return app


async def close_with(pilot, *keys: str, timeout: float = 20.0) -> None:
    """Press keys that dismiss the modal on top, then wait for it to be gone.

    Not ``pilot.press``: it waits for every widget of the screen that was on
    top to answer, and a dismissed modal's widgets may be removed before they
    do (a 30 s WaitForScreenTimeout on a loaded machine)."""
    app = pilot.app
    modal = app.screen
    for key in keys:
        app.simulate_key(key)
    deadline = time.monotonic() + timeout
    while app.screen is modal:
        if time.monotonic() > deadline:
            raise AssertionError(f"{type(modal).__name__} did not close after {keys}")
        await asyncio.sleep(0.02)
    await pilot.pause()


def select_row(table: DataTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key), animate=False)


def the_new_run(app: TuiFtApp, before: set[str]) -> str | None:
    new = [r for r, st in app.model.runs.items() if r not in before and st.launched is not None]
    return new[0] if new else None


# --------------------------------------------------------------------------- launch


@pytest.mark.slow
async def test_launch_demo_from_ui_follows_it_live_and_lists_its_checkpoint(home):
    seen: list[RunEvents] = []

    def hook(msg):
        if isinstance(msg, RunEvents):
            seen.append(msg)

    app = TuiFtApp()
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await started(pilot)
        select_row(app.query_one("#presets-table", DataTable), "demo.toml")
        await pilot.press("l")
        await wait_for(pilot, lambda: the_new_run(app, set()) is not None, 30, "the launch")
        run_id = the_new_run(app, set())
        assert app.active_tab == "runs"
        assert app.runs_pane.selected_run == run_id
        st = app.model.runs[run_id]
        await wait_for(pilot, lambda: not st.active and st.returncode is not None, what="the demo run to end")
        assert st.status == "finished", st.summary.message
        assert st.returncode == 0
        epochs = load_preset(home / "presets" / "demo.toml").train.epochs

        # the chart got the epochs as they came: several RunEvents carried EpochEnd
        epoch_msgs = [m for m in seen if m.run_id == run_id and any(isinstance(e, EpochEnd) for e in m.events)]
        assert epoch_msgs, "no epoch events reached the app"
        data = app.curve.data[run_id]
        assert data["epochs"] == list(range(epochs + 1))  # epoch 0 = before any update
        assert data["train_epochs"] == list(range(1, epochs + 1))
        assert all(v > 0 for v in data["val"])

        # the runs table row (table updates are batched every 0.2 s)
        await pilot.pause(0.5)
        table = app.query_one("#runs-table", DataTable)
        row = table.get_row(run_id)
        assert "finished" in str(row[2]) and row[3] == f"{epochs}/{epochs}"

        # parity + histogram after the run finished
        await pilot.press("v")
        await pilot.pause()
        parity = app.query_one("#parity")
        assert parity.predictions is not None and len(parity.predictions) > 0
        assert app.query_one("#errors").predictions is parity.predictions

        # the log panel shows the epochs and the end
        assert any(ln.level == "epoch" for ln in st.log)
        assert any(ln.text.startswith("test_mae ") and ln.level == "done" for ln in st.log)

        # g toggles log10 without trouble
        await pilot.press("v", "v", "g")
        await pilot.pause()
        assert app.curve.log_scale is True
        await pilot.press("g")
        await pilot.pause()

        # its checkpoint is in the library tab
        await pilot.press("k")
        await wait_for(pilot, lambda: f"{run_id}@best" in app.library_pane.items, 20, "the checkpoint in the library")
        ckpt_table = app.query_one("#ckpt-table", DataTable)
        assert ckpt_table.get_row_index(f"{run_id}@best") >= 0
        assert app.is_running


# --------------------------------------------------------------------------- cancel


@pytest.mark.slow
async def test_cancel_running_run_saves_last_checkpoint(home):
    (home / "presets" / "long.toml").write_text(long_preset("long"), encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        select_row(app.query_one("#presets-table", DataTable), "long.toml")
        await pilot.press("l")
        await wait_for(pilot, lambda: the_new_run(app, set()) is not None, 30, "the launch")
        run_id = the_new_run(app, set())
        st = app.model.runs[run_id]
        await wait_for(pilot, lambda: st.summary.epoch is not None and st.summary.epoch >= 1, what="epoch 1")
        assert st.status == "running"
        assert app.runs_pane.selected_run == run_id
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen), (app.screen, st.status, app.runs_pane.selected_run)
        await close_with(pilot, "y")
        await wait_for(pilot, lambda: not st.active and st.returncode is not None, 120, "the run to stop")
        why = (st.status, st.returncode, st.summary.message, (home / "logs" / run_id / "stderr.log").read_text()[-1500:])
        assert st.status == "interrupted", why
        assert st.returncode == 130, why
        assert (home / "checkpoints" / run_id / "last.pt").is_file()
        assert st.summary.epoch < 400
        events = read_events(home / "logs" / run_id / "events.jsonl")
        assert events[-1].type == "run_interrupted"
        assert app.is_running


# --------------------------------------------------------------------------- attach


@pytest.mark.slow
async def test_attach_to_headless_run_and_cancel_it(home):
    (home / "presets" / "long.toml").write_text(long_preset("headless"), encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        # a run started in another terminal while the dashboard is open
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui_ft", "--preset", "presets/long.toml", "--plain"],
            cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            await wait_for(pilot, lambda: any(r.startswith("headless-") for r in app.model.runs), 30, "the headless run to be listed")
            run_id = next(r for r in app.model.runs if r.startswith("headless-"))
            st = app.model.runs[run_id]
            assert st.launched is None and st.following
            await wait_for(pilot, lambda: (st.summary.epoch or 0) >= 1, what="live epochs of the attached run")
            assert st.status == "running"
            app.show_run(run_id)
            await pilot.pause()
            assert app.curve.data[run_id]["epochs"][0] == 0
            await pilot.press("c")
            await pilot.pause()
            await close_with(pilot, "y")
            await wait_for(pilot, lambda: not st.active, 120, "the attached run to stop")
            assert st.status == "interrupted"
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- bad presets


async def test_bad_preset_shows_its_error_and_the_app_keeps_running(home):
    (home / "presets" / "broken.toml").write_text(long_preset("broken").replace("lr = 1e-4", 'lr = "fast"'), encoding="utf-8")
    (home / "presets" / "not_toml.toml").write_text("[run\nname = 1\n", encoding="utf-8")
    missing = long_preset("nodata").replace('source = "demo"', 'source = "nowhere/missing.json.gz"')
    (home / "presets" / "nodata.toml").write_text(missing, encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        table = app.query_one("#presets-table", DataTable)
        assert table.row_count == 4
        entries = {e.key: e for e in app.model.preset_entries}
        assert not entries["broken.toml"].ok and not entries["not_toml.toml"].ok

        select_row(table, "broken.toml")
        await pilot.pause()
        status = str(app.query_one("#preset-status").render())
        assert status.startswith("presets/broken.toml:12: optim.lr:") and "fast" in status
        assert "\n" not in entries["broken.toml"].error

        await pilot.press("l")  # launching it shows the errors instead
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        await close_with(pilot, "escape")
        await pilot.pause()

        select_row(table, "not_toml.toml")
        await pilot.pause()
        assert "toml" in str(app.query_one("#preset-status").render()).lower()

        # loads, but its data file is missing: refused before a process starts
        select_row(table, "nodata.toml")
        await pilot.pause()
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), 20, "the launch error")
        assert "not found" in app.screen.body
        await close_with(pilot, "escape")
        await pilot.pause()
        assert not any(st.launched for st in app.model.runs.values())
        assert app.is_running and app.return_code is None

        # a preset broken while the app runs is picked up by the rescan
        (home / "presets" / "demo.toml").write_text("[run]\nname = 'demo'\n", encoding="utf-8")
        await wait_for(pilot, lambda: not {e.key: e for e in app.model.preset_entries}["demo.toml"].ok, 10, "the rescan")
        assert app.is_running


# --------------------------------------------------------------------------- form


async def test_preset_form_rejects_bad_lr_at_the_field_and_saves_a_valid_preset(home):
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        select_row(app.query_one("#presets-table", DataTable), "demo.toml")
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, PresetForm)

        form.query_one("#f-name", Input).value = "demo_lr"
        form.query_one("#f-lr", Input).value = "-1e-3"
        await pilot.pause()
        err = form.query_one("#e-lr", Label)
        assert err.display and "-0.001" in str(err.render())
        assert form.query_one("#f-lr", Input).has_class("-invalid")
        assert not form.query_one("#e-name", Label).display
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form  # not saved
        assert not (home / "presets" / "demo_lr.toml").exists()

        form.query_one("#f-lr", Input).value = "not a number"
        await pilot.pause()
        assert "not a number" in str(form.query_one("#e-lr", Label).render())

        # backbone lr is a full-mode option: refused at its field in head mode
        form.query_one("#f-lr", Input).value = "2e-4"
        form.query_one("#f-backbone_lr", Input).value = "1e-5"
        await pilot.pause()
        assert form.query_one("#e-backbone_lr", Label).display
        assert not form.query_one("#e-lr", Label).display
        form.query_one("#f-backbone_lr", Input).value = ""
        form.query_one("#f-epochs", Input).value = "2"
        form.query_one("#f-fraction", Input).value = "0.5"
        await pilot.pause()
        assert not form.errors
        await close_with(pilot, "ctrl+s")
        await wait_for(pilot, lambda: app.screen is not form, 10, "the form to close")

        saved = home / "presets" / "demo_lr.toml"
        p = load_preset(saved)
        assert p.name == "demo_lr" and p.optim.lr == 2e-4 and p.train.epochs == 2 and p.data.fraction == 0.5
        await wait_for(pilot, lambda: "demo_lr.toml" in app.presets_pane.entries, 10, "the new preset listed")
        assert app.presets_pane.selected.key == "demo_lr.toml"

        # the name of an existing preset: asks before overwriting; "n" keeps the file
        before = (home / "presets" / "demo.toml").read_text(encoding="utf-8")
        select_row(app.query_one("#presets-table", DataTable), "demo.toml")
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#f-name", Input).value = "demo"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await close_with(pilot, "n")
        await pilot.pause()
        assert app.screen is form
        assert (home / "presets" / "demo.toml").read_text(encoding="utf-8") == before
        await close_with(pilot, "escape")
        await pilot.pause()
        assert app.is_running


# --------------------------------------------------------------------------- continue from a checkpoint


@pytest.mark.slow
async def test_continue_from_checkpoint_starts_a_child_run(in_finished_home):
    root, parent_run = in_finished_home
    ref = f"{parent_run}@best"
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        before = set(app.model.runs)
        await pilot.press("k")
        await pilot.pause()
        table = app.query_one("#ckpt-table", DataTable)
        select_row(table, ref)
        await pilot.pause()
        table.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PresetPicker)
        # pick the demo preset
        picker = app.screen.query_one("#picker")
        idx = next(i for i in range(picker.option_count) if picker.get_option_at_index(i).id.endswith("demo.toml"))
        picker.highlighted = idx
        await close_with(pilot, "enter")
        await wait_for(pilot, lambda: the_new_run(app, before) is not None, 30, "the launch")
        child = the_new_run(app, before)
        st = app.model.runs[child]
        await wait_for(pilot, lambda: not st.active and st.returncode is not None, what="the child run to end")
        assert st.status == "finished", st.summary.message
        assert st.summary.parent == ref

        started_ev = next(e for e in read_events(root / "logs" / child / "events.jsonl") if isinstance(e, RunStarted))
        assert started_ev.parent == ref
        assert started_ev.preset["model"]["init"] == ref
        meta = json.loads((root / "checkpoints" / child / "best.json").read_text(encoding="utf-8"))
        assert meta["parent"] == ref

        # the library shows the lineage both ways
        await pilot.press("k")
        await wait_for(pilot, lambda: f"{child}@best" in app.library_pane.items, 20, "the child checkpoint")
        lib = app.library_pane.library
        chain = [c.ref for c in lib.lineage(app.library_pane.items[f"{child}@best"])]
        assert chain[:2] == [f"{child}@best", ref]
        assert f"{child}@best" in [c.ref for c in lib.children(parent_run)]
        select_row(app.query_one("#ckpt-table", DataTable), f"{child}@best")
        await pilot.pause()
        detail = str(app.query_one("#ckpt-detail").render())
        assert ref in detail

        # p shows the preset stored in the checkpoint, with the init it used
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, TextScreen) and ref in app.screen.body
        await close_with(pilot, "escape")
        await pilot.pause()


@pytest.mark.slow
async def test_delete_checkpoint_asks_first(in_finished_home, tmp_path):
    root, run_id = in_finished_home
    # work on a copy so the shared finished run stays intact for other tests
    copy_id = run_id + "-copy"
    shutil.copytree(root / "checkpoints" / run_id, root / "checkpoints" / copy_id)
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("3")
        await pilot.pause()
        select_row(app.query_one("#ckpt-table", DataTable), f"{copy_id}@best")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await close_with(pilot, "n")
        await pilot.pause()
        assert (root / "checkpoints" / copy_id / "best.pt").exists()
        await pilot.press("d")
        await pilot.pause()
        await close_with(pilot, "y")
        await wait_for(pilot, lambda: f"{copy_id}@best" not in app.library_pane.items, 10, "the deleted checkpoint to vanish")
        assert not (root / "checkpoints" / copy_id).exists()
        assert Library(Paths(root)).get(run_id) is not None


# --------------------------------------------------------------------------- queue, help, palette


@pytest.mark.slow
async def test_queue_runs_presets_one_after_another(home):
    (home / "presets" / "q1.toml").write_text(long_preset("q1", epochs=1), encoding="utf-8")
    (home / "presets" / "q2.toml").write_text(long_preset("q2", epochs=1), encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        table = app.query_one("#presets-table", DataTable)
        select_row(table, "q1.toml")
        await pilot.press("e")
        select_row(table, "q2.toml")
        await pilot.press("e")
        await pilot.pause()
        assert [i.name for i in app.model.queue.items] == ["q2"]  # q1 started at once
        await wait_for(pilot, lambda: any(r.startswith("q1-") for r in app.model.runs), 30, "q1 to start")
        q1 = next(r for r in app.model.runs if r.startswith("q1-"))
        assert not any(r.startswith("q2-") for r in app.model.runs)
        await wait_for(pilot, lambda: any(r.startswith("q2-") for r in app.model.runs), what="q2 to start after q1")
        assert app.model.runs[q1].status == "finished"
        q2 = next(r for r in app.model.runs if r.startswith("q2-"))
        assert app.model.runs[q2].sort_key[0] >= app.model.runs[q1].summary.updated - 1
        await wait_for(pilot, lambda: not app.model.runs[q2].active and app.model.runs[q2].returncode is not None, what="q2 to end")
        assert app.model.runs[q2].status == "finished"
        assert len(app.model.queue) == 0


@pytest.mark.slow
async def test_help_and_palette_commands(in_finished_home):
    root, run_id = in_finished_home
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        text = str(app.screen.query_one("#help-text").render())
        for key in ("l", "e", "q", "c", "r", "g", "enter / n", "d"):
            assert key in text
        await close_with(pilot, "escape")
        await pilot.pause()

        from tui_ft.tui.commands import TuiFtCommands

        provider = TuiFtCommands(app.screen)
        await provider.startup()
        titles = [t for t, _, _ in provider.items]
        assert "Launch preset demo" in titles
        assert f"Show run {run_id}" in titles
        assert f"Continue from {run_id}@best" in titles
        hits = [h async for h in provider.search("show run")]
        assert hits
        # "Show run" switches to the run
        dict((t, cb) for t, _, cb in provider.items)[f"Show run {run_id}"]()
        await pilot.pause()
        assert app.active_tab == "runs" and app.runs_pane.selected_run == run_id
        assert app.curve.data[run_id]["epochs"][0] == 0


async def test_each_tab_has_its_own_keys_and_the_help_lists_them(home):
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)

        def active() -> set[str]:
            return {b.binding.action for b in app.screen.active_bindings.values()}

        assert {"launch", "enqueue", "new_preset"} <= active()
        assert not {"cancel_run", "toggle_overlay", "delete_ckpt"} & active()
        await pilot.press("2")
        await pilot.pause()
        assert {"cancel_run", "toggle_overlay", "toggle_log", "next_chart"} <= active()
        assert not {"launch", "delete_ckpt"} & active()
        assert app.screen.active_bindings["c"].enabled is False  # no running run selected: dimmed
        await pilot.press("k")
        await pilot.pause()
        assert {"continue_selected", "delete_ckpt"} <= active() and "launch" not in active()

        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("#help-text").render())
        for pane in (PresetsPane, RunsPane, LibraryPane):
            for binding in pane.BINDINGS:
                assert binding.tooltip and binding.tooltip in text
        assert "3 / k" in text and "quit (runs keep training in the background)" in text
        await close_with(pilot, "escape")


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
async def test_killed_run_shows_as_crashed_and_quit_asks_while_runs_train(home):
    import signal

    (home / "presets" / "long.toml").write_text(long_preset("long"), encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        select_row(app.query_one("#presets-table", DataTable), "long.toml")
        await pilot.press("l")
        await wait_for(pilot, lambda: the_new_run(app, set()) is not None, 30, "the launch")
        st = app.model.runs[the_new_run(app, set())]
        await wait_for(pilot, lambda: (st.summary.epoch or 0) >= 1, what="epoch 1")

        # ctrl+q while our run trains: asked first, "n" stays
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "keep running" in app.screen.question
        await close_with(pilot, "n")
        await pilot.pause()
        assert app.is_running

        os.killpg(st.pid, signal.SIGKILL)  # the OOM killer, say
        await wait_for(pilot, lambda: not st.active, 30, "the crash to be noticed")
        assert st.status == "crashed"
        assert "SIGKILL" in st.summary.message
        assert st.returncode == -signal.SIGKILL
        assert app.is_running


async def test_worker_error_opens_a_modal_and_the_app_keeps_running(home, monkeypatch):
    """A launch worker that raises opens a modal; the scan, which runs every two
    seconds, reports its error once (a notification, listed under "Problems")
    instead of a modal per scan (issue 12 item 7)."""
    import tui_ft.tui.app as app_mod

    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)

        def broken_scan(*args, **kwargs):
            raise OSError("disk on fire")

        original = app_mod.scan
        monkeypatch.setattr(app_mod, "scan", broken_scan)
        for _ in range(3):
            app.request_scan(force=True)
            await pilot.pause(0.3)
        await wait_for(pilot, lambda: any("disk on fire" in p for p in app.model.problems), 10, "the scan error reported")
        assert [p for p in app.model.problems if "disk on fire" in p] == ["scanning the project folders failed: OSError: disk on fire"]
        assert not isinstance(app.screen, TextScreen)
        monkeypatch.setattr(app_mod, "scan", original)
        app.request_scan(force=True)
        await pilot.pause(0.5)

        def broken_check(*args, **kwargs):
            raise RuntimeError("launcher bug")

        monkeypatch.setattr(app_mod, "check_target", broken_check)
        app.launch_entry(app.presets_pane.selected)
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), 10, "the error modal")
        assert "launcher bug" in app.screen.body
        await close_with(pilot, "escape")
        assert app.is_running and app.return_code is None
        assert app.model.launching == 0


@pytest.mark.slow
async def test_space_toggles_overlay(in_finished_home):
    root, run_id = in_finished_home
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("2")
        await pilot.pause()
        app.runs_pane.select(run_id)
        await pilot.press("space")
        await pilot.pause()
        assert app.model.runs[run_id].overlay
        await pilot.press("o")
        await pilot.pause()
        assert not app.model.runs[run_id].overlay


# --------------------------------------------------------------------------- plans

TINY_PLAN = """\
[plan]
name = "tiny"
description = "demo head-only, then one more epoch from its best checkpoint"

[[stage]]
preset = "presets/demo.toml"

[[stage]]
preset = "presets/demo.toml"
init = "previous@best"
[stage.set]
"train.epochs" = 1
"""


@pytest.mark.slow
async def test_launch_plan_follows_each_stage(home):
    (home / "presets" / "tiny.toml").write_text(TINY_PLAN, encoding="utf-8")
    (home / "presets" / "bad_plan.toml").write_text(TINY_PLAN.replace("presets/demo.toml", "presets/nope.toml"), encoding="utf-8")
    app = TuiFtApp()
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        entries = {e.key: e for e in app.model.preset_entries}
        assert entries["tiny.toml"].is_plan and entries["tiny.toml"].ok
        assert entries["bad_plan.toml"].is_plan and not entries["bad_plan.toml"].ok
        assert "nope.toml" in entries["bad_plan.toml"].error

        select_row(app.query_one("#presets-table", DataTable), "tiny.toml")
        await pilot.press("l")
        await wait_for(pilot, lambda: len(app.model.plans) == 1, 30, "the plan to start")
        assert app.active_tab == "runs"
        plan = app.model.plans[0]
        await wait_for(pilot, lambda: plan.poll() is not None, what="the plan to end")
        assert plan.poll() == 0, (plan.stderr_path.read_text(encoding="utf-8"))[-2000:]
        await wait_for(pilot, lambda: len(app.model.runs) == 2 and not any(st.active for st in app.model.runs.values()), 30, "both stages")
        stages = sorted(app.model.runs.values(), key=lambda st: st.summary.stage or 0)
        assert [st.summary.stage for st in stages] == [1, 2]
        assert all(st.status == "finished" and st.summary.plan == "tiny" for st in stages)
        assert stages[1].summary.parent == f"{stages[0].run_id}@best"
        assert len(stages[1].summary.history) == 2  # epochs 0 and 1
        # the plan is drawn as one continuous curve with the stage boundary marked
        app.show_run(stages[1].run_id)
        await pilot.pause()
        curve = app.curve
        assert curve.boundaries == [3]
        (joined,) = curve.data.values()
        assert joined["epochs"] == [0, 1, 2, 3, 3, 4]
