"""Runs and checkpoints written by the previous version (commit ce99a9b, before the core
moved into rooms and runs got named metrics) still list, display and resume.

``tests/data/old_run_ce99a9b/`` holds a run of ``presets/demo.toml`` renamed ``oldfmt``,
made by that commit and killed with SIGKILL after its last epoch_end and before its
run_finished: its ``events.jsonl`` has no ``metrics`` on epoch_end, its checkpoints are
that version's files. The demo run of that commit ended with test MAE 0.4384293854236603
eV/atom (the same weights: epoch 3 of 3 is this run's best).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.common.events import EpochEnd, RunFinished, read_events
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.library.runs import list_runs, summarize

OLD = Path(__file__).parent / "data" / "old_run_ce99a9b"
RUN = "oldfmt-20261202-040517-d6e0"
OLD_TEST_MAE = 0.4384293854236603  # the same demo run, finished by commit ce99a9b


@pytest.fixture
def old(project) -> Path:
    for part in ("logs", "checkpoints"):
        shutil.copytree(OLD / part / RUN, project / part / RUN)
    return project


def test_an_old_run_lists_and_displays(old, capsys):
    paths = Paths(old)
    (s,) = [r for r in list_runs(paths) if r.run_id == RUN]
    assert s.status == "crashed" and s.epoch == 3 and s.best_epoch == 3
    assert s.best_val_mae == pytest.approx(0.4856, abs=1e-4)
    epochs = [e for e in read_events(paths.run_log_dir(RUN) / "events.jsonl") if isinstance(e, EpochEnd)]
    assert [e.metrics for e in epochs] == [None] * 4  # written before named metrics
    assert epochs[2].named() == {"val_mae": epochs[2].val_mae, "train_mae": epochs[2].train_mae}
    assert epochs[0].named() == {"val_mae": epochs[0].val_mae}  # epoch 0 has no training MAE
    assert cli.main(["runs"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(RUN))
    assert "crashed" in row and "0.4856" in row
    assert cli.main(["history", RUN, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 1 + 4 and lines[-1].split(",")[header.index("epoch")] == "3"
    assert "metrics" not in header  # named metrics are columns of their own (none beyond the MAEs here)
    info = Library(paths).resolve_ref(f"{RUN}@best")
    assert info.epoch == 3 and info.val_mae == pytest.approx(s.best_val_mae)


def test_the_dashboard_draws_an_old_run(old):
    """The learning curve of an old run, by the selection value and by the named metric."""
    from tui_ft.tui.charts import series_from_history

    history = summarize(Paths(old).run_log_dir(RUN)).history
    by_value = series_from_history(RUN, history)
    by_name = series_from_history(RUN, history, metric="mae")
    assert by_value.epochs == by_name.epochs == [0, 1, 2, 3] and by_value.val == by_name.val
    assert by_value.train_epochs == by_name.train_epochs == [1, 2, 3] and by_value.train == by_name.train
    assert by_value.unit == by_name.unit == "eV/atom"


@pytest.mark.slow
def test_an_old_run_resumes_to_the_old_versions_result(old, capsys):
    assert cli.main(["resume", RUN, "--plain"]) == 0
    events = read_events(Paths(old).run_log_dir(RUN) / "events.jsonl")
    (fin,) = [e for e in events if isinstance(e, RunFinished)]
    assert fin.test_mae == pytest.approx(OLD_TEST_MAE, abs=1e-6)
    assert summarize(Paths(old).run_log_dir(RUN)).status == "finished"


def test_elapsed_is_the_runs_total_across_a_resume():
    """Issue 22 item 15: 7 s before the interruption and 4 s after the resume show as 11 s, not 4 s
    (the hour between them is not counted)."""
    from tui_ft.core.common.events import EpochEnd, RunFinished, RunInterrupted, RunStarted, RunSummary

    s = RunSummary("r")
    t = 1_000_000.0
    for ev in (RunStarted("r", preset_name="p", preset={}, device="cpu", n_train=1, n_val=1, n_test=1, time=t),
               EpochEnd("r", epoch=0, train_mae=None, val_mae=1.0, lr=1e-3, seconds=1.0, best_val_mae=1.0,
                        best_epoch=0, time=t + 5),
               RunInterrupted("r", epoch=0, time=t + 7),
               RunStarted("r", preset_name="p", preset={}, device="cpu", n_train=1, n_val=1, n_test=1, time=t + 3600),
               RunFinished("r", test_mae=0.5, best_epoch=0, best_val_mae=1.0, seconds=4.0, time=t + 3604)):
        s.apply(ev)
    assert s.status == "finished" and s.elapsed == pytest.approx(11.0)
