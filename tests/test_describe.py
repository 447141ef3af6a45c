"""One text per event: the headless output and the dashboard log agree line for line."""

from __future__ import annotations

import pytest

from tui_ft import cli
from tui_ft.core.common.events import (
    EVENT_TYPES,
    CheckpointSaved,
    EpochEnd,
    Message,
    Progress,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunPruned,
    RunStarted,
    describe,
)
from tui_ft.core.library.runs import RunSummary
from tui_ft.tui.state import RunState, event_line


def one_of_each(rid: str = "r1") -> list:
    return [
        RunStarted(rid, preset_name="p", preset={"finetune": {"mode": "head"}}, device="cpu", n_train=3, n_val=1,
                   n_test=2, parent="a@best", pid=0, stage=2, epochs=4),
        Message(rid, text="loading data"),
        Message(rid, text="AtomRef refit skipped", level="warning"),
        Message(rid, text="graph conversion failed for mp-1", level="error"),
        EpochEnd(rid, epoch=0, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5, best_epoch=0),
        EpochEnd(rid, epoch=1, train_mae=0.25, val_mae=0.4, lr=3e-4, seconds=12.5, best_val_mae=0.4, best_epoch=1),
        CheckpointSaved(rid, kind="best", path="x/best.pt", epoch=1, val_mae=0.4),
        RunFinished(rid, test_mae=0.3, best_epoch=1, best_val_mae=0.4, seconds=20.0, n_test=2),
        RunFinished(rid, test_mae=None, best_epoch=1, best_val_mae=0.4, seconds=20.0),
        RunFailed(rid, message="diverged at epoch 2", epoch=2),
        RunInterrupted(rid, epoch=1),
        RunPruned(rid, epoch=1, reason="val_mae 0.4 above the median at epoch 1"),
        Progress(rid, stage="graphs", done=1200, total=5000, rate=410.4),
    ]


def test_samples_cover_every_event_type():
    assert {type(e) for e in one_of_each()} == set(EVENT_TYPES.values())


def test_headless_lines_equal_dashboard_log_lines(capsys):
    """Feed every event to the CLI's printer and to the dashboard's log: same text, same order."""
    printer = cli.Printer(plain=True)
    state = RunState(RunSummary(run_id="r1"))
    capsys.readouterr()
    for ev in one_of_each():
        printer.show(ev)
        out, err = capsys.readouterr()
        headless = (out + err).splitlines()
        dashboard = [ln.text for ln in state.apply([ev])]
        assert headless == dashboard, type(ev).__name__
        assert dashboard == ([] if describe(ev) is None else [describe(ev)])
        # problems and progress on stderr, results on stdout
        assert (err != "") == (ev.to_stderr and describe(ev) is not None)
    assert printer.failed_shown


def test_headless_lines_keep_their_documented_shape():
    started, _, warn, _, ep0, ep1, ckpt, done, done_na, failed, interrupted, pruned, progress = one_of_each()
    assert describe(started) == (
        "run r1 stage 2: preset p, head mode, device cpu, train 3 / val 1 / test 2, from a@best"
    )
    assert describe(warn) == "[warning] AtomRef refit skipped"
    assert describe(ep0).split()[:4] == ["epoch", "0", "val_mae", "0.5000"]
    assert describe(ep1) == "epoch   1  val_mae 0.4000  train_mae 0.2500  lr 3.00e-04    12.5s  best 0.4000@1"
    assert describe(ckpt) is None
    assert describe(done).startswith("test_mae 0.3000  (best epoch 1, val_mae 0.4000, 2 test structures")
    assert describe(done_na).startswith("test_mae n/a")
    assert describe(failed) == "run r1 failed: diverged at epoch 2"
    assert describe(interrupted) == "run r1 interrupted: interrupted"
    assert describe(pruned) == "run r1 pruned at epoch 1: val_mae 0.4 above the median at epoch 1"
    assert describe(progress) == "graphs 1200/5000 (410/s)" and progress.label() == "graphs 24%"


@pytest.mark.parametrize("preset", [{}, {"finetune": "x"}, {"finetune": {}}])
def test_run_started_with_an_odd_preset_still_reads(preset):
    ev = RunStarted("r", preset_name="p", preset=preset, device="cpu", n_train=1, n_val=1, n_test=1)
    assert "? mode" in describe(ev)


def test_dashboard_log_styles_by_tone_and_drops_stderr_echoes():
    evs = one_of_each()
    assert [event_line(e).level if event_line(e) else None for e in evs] == [
        "done", "info", "warning", "error", "epoch", "epoch", None, "done", "done", "error", "warning", "warning", "info",
    ]
    state = RunState(RunSummary(run_id="r1"))
    state.apply(evs)
    # the run's stderr.log repeats each stderr line of the headless output: not shown twice
    echoes = [describe(e) for e in evs if e.to_stderr and describe(e)]
    assert state.add_stderr(echoes + ["Traceback (most recent call last):"]) == [
        state.log[-1]
    ] and state.log[-1].text.startswith("Traceback")


def test_summary_folds_each_event_once():
    s = RunSummary(run_id="r1")
    for ev in one_of_each()[:8]:
        s.apply(ev)
    assert (s.status, s.preset_name, s.device, s.parent, s.stage, s.epochs) == ("finished", "p", "cpu", "a@best", 2, 4)
    assert (s.epoch, s.best_epoch, s.best_val_mae, s.test_mae) == (1, 1, 0.4, 0.3)
    assert [e.epoch for e in s.history] == [0, 1]
    assert s.message == "graph conversion failed for mp-1"
