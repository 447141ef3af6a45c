"""Issue 22 ("a new user's first hour, round three") in the dashboard.

Driven with Textual's pilot over the fake run history of the snapshot tests
(no training): a run resumed by another process after it looked ended is
followed again (22.2), keys 4 and 5 work from the Library tab (22.3), a run
continued from a checkpoint is not called a plan (22.11), the cancel question
closes when its run ends first (22.12), a preset whose data file is missing
names the file and its whole hint is on screen (22.13), and bracketed words
such as ``[sweep]`` are not eaten as markup (22.5).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_tui_snapshots import T0, write_history

from tui_ft.core.common.events import EpochEnd, EventWriter, RunFinished, RunStarted
from tui_ft.tui.app import TuiFtApp
from tui_ft.tui.modals import ConfirmScreen, TextScreen
from tui_ft.tui.screenshots import screen_text
from conftest import pilot_ready as ready  # noqa: E402
from conftest import pilot_until as until  # noqa: E402

FINISHED = "demo-20250101-120000-a1b2"
CHILD = "demo_full-20250101-121500-c3d4"
INTERRUPTED = "demo-20250101-124500-a7b8"
SIZES = [(120, 40), (80, 24)]


@pytest.fixture
def hist(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    write_history(root)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(root)
    return root


def row_of(app, run_id: str) -> str:
    return next(ln for ln in screen_text(app).splitlines() if run_id in ln and "│" in ln)


# a writer that is not the dashboard's child, as `tui-ft resume RUN` in another terminal:
# it starts the run again (run_started with its own pid), trains one epoch, then waits for
# the test to let it finish (a file appears) and writes the run's end
OTHER_WRITER = r"""
import os, sys, time
from pathlib import Path
from tui_ft.core.common.events import EventWriter, RunStarted, EpochEnd, RunFinished
events, go, run_id = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
end = sys.argv[4] if len(sys.argv) > 4 else "finish"
with EventWriter(events) as w:
    w.emit(RunStarted(run_id, preset_name="demo", preset={}, device="cpu", n_train=173, n_val=19, n_test=48,
                      pid=os.getpid(), epochs=4, time=time.time()))
    w.emit(EpochEnd(run_id, epoch=4, train_mae=0.23, val_mae=0.4871, lr=1e-3, seconds=1.0, best_val_mae=0.4871,
                    best_epoch=4, time=time.time()))
    deadline = time.time() + 120
    while not go.exists() and time.time() < deadline:
        time.sleep(0.05)
    if end == "finish":
        w.emit(RunFinished(run_id, test_mae=0.4303, best_epoch=4, best_val_mae=0.4871, seconds=9.0, n_test=48,
                           time=time.time()))
time.sleep(0 if end == "finish" else 120)
"""


def other_writer(hist: Path, run_id: str, end: str = "finish") -> tuple[subprocess.Popen, Path]:
    go = hist / f"go-{run_id}"
    events = hist / "logs" / run_id / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", OTHER_WRITER, str(events), str(go), run_id, end])
    return proc, go


# --------------------------------------------------------------------------- 22.2: resumed elsewhere


async def test_a_run_resumed_by_another_process_is_followed_again(hist):
    """The Runs tab showed a run as interrupted; `tui-ft resume` in another terminal
    appends to its events: the row follows it (running, then finished with its test MAE)."""
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.show_run(INTERRUPTED)
        await pilot.pause()
        assert app.model.get(INTERRUPTED).status == "interrupted" and not app.model.get(INTERRUPTED).following
        assert re.search(r"\sinterrupted\s", row_of(app, INTERRUPTED))
        proc, go = other_writer(hist, INTERRUPTED)
        try:
            await until(pilot, lambda: app.model.get(INTERRUPTED).status == "running", "the resumed run to be seen running")
            assert app.model.get(INTERRUPTED).following
            await until(pilot, lambda: app.model.get(INTERRUPTED).summary.epoch == 4, "its new epoch")
            go.touch()
            await until(pilot, lambda: app.model.get(INTERRUPTED).status == "finished", "the resumed run to finish")
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
        await until(pilot, lambda: not app.model.get(INTERRUPTED).following, "its follower to end")
        await pilot.pause(0.4)
        row = row_of(app, INTERRUPTED)
        assert re.search(r"\sfinished\s", row) and "4/4" in row and "0.4303" in row, row
        assert "interrupted" not in row
        # the selected run's log was read again: the earlier attempt and the resumed one
        texts = [ln.text for ln in app.model.get(INTERRUPTED).log]
        assert any("interrupted" in t for t in texts) and any(t.startswith("test_mae 0.4303") for t in texts), texts
        # the Library's status column comes from the same events
        assert app.model.run_status(INTERRUPTED) == "finished"
        # once ended it is watched again from where its follower stopped: nothing new, no re-read
        sig = app.model.get(INTERRUPTED).events_sig
        assert sig and app.model.settled()[INTERRUPTED] == sig
        state = app.model.get(INTERRUPTED)
        for _ in range(2):
            app.request_scan()
            await pilot.pause(0.3)
        assert app.model.get(INTERRUPTED) is state


async def test_events_appended_by_a_process_already_gone_are_read_on_the_next_scan(hist):
    """A resume that ran and ended between two scans: nothing live to follow, the run is
    read again in full."""
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        dead_pid = 2**22 + 4321
        with EventWriter(hist / "logs" / INTERRUPTED / "events.jsonl") as w:
            w.emit(RunStarted(INTERRUPTED, preset_name="demo", preset={}, device="cpu", n_train=173, n_val=19, n_test=48,
                              pid=dead_pid, epochs=4, time=T0 + 9000))
            w.emit(EpochEnd(INTERRUPTED, epoch=4, train_mae=0.23, val_mae=0.4871, lr=1e-3, seconds=1.0,
                            best_val_mae=0.4871, best_epoch=4, time=T0 + 9001))
            w.emit(RunFinished(INTERRUPTED, test_mae=0.4303, best_epoch=4, best_val_mae=0.4871, seconds=9.0, n_test=48,
                               time=T0 + 9002))
        app.request_scan()
        await until(pilot, lambda: app.model.get(INTERRUPTED).status == "finished", "the run read again")
        app.action_show_tab("runs")
        await pilot.pause(0.4)
        row = row_of(app, INTERRUPTED)
        assert re.search(r"\sfinished\s", row) and "0.4303" in row, row


# --------------------------------------------------------------------------- 22.3: 4 and 5 everywhere


@pytest.mark.parametrize("size", SIZES)
async def test_tab_keys_work_from_every_tab_the_library_included(hist, size):
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        tabs = {"1": "presets", "2": "runs", "3": "library", "4": "studies", "5": "sweeps"}
        keys = "154535251434241323121"  # every key pressed once from every other tab
        assert {(a, b) for a, b in zip(keys, keys[1:])} == {(a, b) for a in tabs for b in tabs if a != b}
        for before, key in zip(keys, keys[1:]):
            await pilot.press(key)
            await pilot.pause()
            assert app.active_tab == tabs[key], f"{key} from the {tabs[before]} tab at {size}"
        # the lineage box focused (tab into it), then 4: the Studies tab too
        await pilot.press("3")
        await pilot.pause()
        app.query_one("#ckpt-detail-box").focus()
        await pilot.pause()
        await pilot.press("4")
        await pilot.pause()
        assert app.active_tab == "studies"
        assert app.focused is not None and app.focused.id == "studies-table"


# --------------------------------------------------------------------------- 22.11: not a plan


async def test_a_run_continued_from_a_checkpoint_is_not_labelled_a_plan(hist):
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.show_run(CHILD)
        await pilot.pause()
        await pilot.press("t")  # drawn after its parent's last epoch
        await pilot.pause(0.3)
        curve = app.curve
        assert curve.boundaries and curve.note == "after its parent"
        text = screen_text(app)
        assert "(after its parent)" in text and "plan" not in text.split("Learning curve")[1]
        await pilot.press("t")
        await pilot.pause(0.3)
        assert not app.curve.boundaries and "(after its parent)" not in screen_text(app)


# --------------------------------------------------------------------------- 22.12: the cancel question


async def test_the_cancel_question_closes_when_its_run_ends_first(hist):
    run_id = "demo-20250101-130000-c0c0"
    (hist / "logs" / run_id).mkdir(parents=True)
    proc, go = other_writer(hist, run_id)  # a live run started elsewhere
    app = TuiFtApp()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await until(pilot, lambda: app.model.get(run_id) is not None and app.model.get(run_id).status == "running",
                        "the live run to be followed")
            app.show_run(run_id)
            await pilot.pause()
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the cancel question")
            assert f"Cancel {run_id}?" in app.screen.question
            go.touch()  # the run finishes while the question is open
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "the question to close")
            assert app.model.get(run_id).status == "finished"
            await until(pilot, lambda: any(f"{run_id} finished meanwhile: nothing left to cancel" in n.message
                                           for n in app._notifications), "the notification")
            await pilot.press("y")  # a late answer has nothing to act on
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            assert proc.wait(timeout=30) == 0  # never signalled: it ended on its own
            assert not app.model.get(run_id).cancel_requested
    finally:
        proc.kill()


async def test_a_cancel_answered_after_the_run_ended_under_another_screen_does_nothing(hist, monkeypatch):
    run_id = "demo-20250101-130500-c1c1"
    (hist / "logs" / run_id).mkdir(parents=True)
    proc, go = other_writer(hist, run_id)
    signalled = []
    monkeypatch.setattr("tui_ft.tui.panes.interrupt", lambda pid: signalled.append(pid))
    app = TuiFtApp()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await until(pilot, lambda: app.model.get(run_id) is not None and app.model.get(run_id).status == "running",
                        "the live run to be followed")
            app.show_run(run_id)
            await pilot.pause()
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the cancel question")
            question = app.screen
            app.push_screen(TextScreen("cannot launch x", "an error shown meanwhile", error=True))  # on top of it
            await until(pilot, lambda: app.screen is not question, "the other screen")
            go.touch()
            await until(pilot, lambda: app.model.get(run_id).status == "finished", "the run to finish")
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is question, "back to the question")
            await pilot.press("y")
            await until(pilot, lambda: app.screen is not question, "the question answered")
            assert signalled == [] and not app.model.get(run_id).cancel_requested
            await until(pilot, lambda: any(f"{run_id} finished meanwhile" in n.message for n in app._notifications), "the notification")
    finally:
        proc.kill()


# --------------------------------------------------------------------------- 22.13: missing data


def status_text(app) -> str:
    """The text inside the hint under the presets table, as on screen (its rows and columns only)."""
    w = app.query_one("#preset-status")
    r = w.region
    lines = screen_text(app).splitlines()
    return " ".join(lines[y][r.x : r.x + r.width] if y < len(lines) else "" for y in range(r.y, r.y + r.height))


@pytest.mark.parametrize("size", SIZES)
async def test_a_preset_with_missing_data_names_its_file_and_its_whole_hint_shows(hist, size):
    text = (hist / "presets" / "demo.toml").read_text(encoding="utf-8")
    (hist / "presets" / "nodata.toml").write_text(
        text.replace('name = "demo"', 'name = "nodata"').replace('source = "demo"', 'source = "../elsewhere/data/mp_e_form_dev.json.gz"'),
        encoding="utf-8",
    )
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        pane = app.presets_pane
        pane.select("nodata.toml")
        await pilot.pause(0.3)
        entry = pane.entries["nodata.toml"]
        assert not entry.ok and entry.missing_data == ["../elsewhere/data/mp_e_form_dev.json.gz"]
        row = next(ln for ln in screen_text(app).splitlines() if "│ nodata" in ln)
        assert "missing mp_e_form_dev" in row and "1e-03" in row, row  # the file by name; the rest of the preset too
        shown = re.sub(r"\s+", "", status_text(app))
        want = pane.short_paths(entry.error)
        assert "copy the file to" in want and str(hist) not in want
        assert shown == re.sub(r"\s+", "", want), (shown, want)  # whole, not cut at "...or copy the file"
        assert want.endswith("copy the file to ../elsewhere/data/mp_e_form_dev.json.gz")


# --------------------------------------------------------------------------- 22.5: [sweep] is text


@pytest.mark.parametrize("size", SIZES)
async def test_bracketed_words_are_shown_not_eaten_as_markup(hist, size):
    (hist / "presets" / "odd[sweep].toml").write_text(
        (hist / "presets" / "demo.toml").read_text(encoding="utf-8").replace('name = "demo"', 'name = "odd"'), encoding="utf-8"
    )
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        app.presets_pane.select("odd[sweep].toml")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "│ odd[sweep]" in text and "presets/odd[sweep].toml" in text
        await pilot.press("5")
        await until(pilot, lambda: app.active_tab == "sweeps", "the Sweeps tab")
        await pilot.pause(0.5)
        text = re.sub(r"\s+", " ", screen_text(app))
        assert "run a preset with a [sweep] table" in text and "with a  table" not in text
        app.notify("a [sweep] table")
        await until(pilot, lambda: any(n.message == "a [sweep] table" for n in app._notifications), "the notification")
        assert not any(n.markup for n in app._notifications)  # every notification is plain text
