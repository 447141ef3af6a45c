"""A very long run and a bad entry in ``logs/`` (issue 26, item 10).

The dashboard keeps a thinned history of each run (``EpochHistory`` with a limit), reads a
run's events one line at a time in its scan, follows a long live file in steps, and skips
a ``logs/`` entry it cannot look at (a symlink to itself), saying so once. The timing and
memory of a 1,000,000-epoch run are measured by ``bench/bench_tui_big_run.py``, not here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tui_ft.core.common.events import (
    EpochEnd,
    EpochHistory,
    EventWriter,
    Message,
    RunFinished,
    RunStarted,
    RunSummary,
    iter_events,
    read_events,
)
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import list_runs, summarize
from tui_ft.tui.model import Dashboard, RunWatch
from tui_ft.tui.scanner import scan
from tui_ft.tui.state import CHART_EPOCHS, MAX_LOG, RunState


def _epoch(rid: str, ep: int, best_epoch: int | None = None) -> EpochEnd:
    v = 0.5 + 0.1 * math.cos(ep)
    return EpochEnd(rid, epoch=ep, train_mae=None if ep == 0 else v, val_mae=v, lr=1e-3, seconds=0.1,
                    best_val_mae=v, best_epoch=ep if best_epoch is None else best_epoch)


def _write_run(root: Path, rid: str, epochs: int, *, best: int = 3, finished: bool = True) -> Path:
    path = root / "logs" / rid / "events.jsonl"
    with EventWriter(path) as w:
        w.emit(RunStarted(rid, preset_name="long", preset={"finetune": {"mode": "head"}}, device="cpu",
                          n_train=3, n_val=1, n_test=1, epochs=epochs))
    # the epochs written in one go (EventWriter syncs each line: slow for thousands)
    with open(path, "a", encoding="utf-8") as fh:
        for ep in range(epochs + 1):
            fh.write(_epoch(rid, ep, best_epoch=min(ep, best)).to_json() + "\n")
            if ep % 10 == 0:
                fh.write(Message(rid, text=f"note {ep}").to_json() + "\n")
        if finished:
            fh.write(RunFinished(rid, test_mae=0.4, best_epoch=best, best_val_mae=0.4, seconds=1.0, n_test=1).to_json() + "\n")
    return path


def test_epoch_history_without_limit_keeps_every_epoch():
    h = EpochHistory()
    for ep in range(5000):
        h.append(_epoch("r", ep))
    assert [e.epoch for e in h] == list(range(5000)) and h.seen == 5000


def test_epoch_history_with_limit_is_bounded_and_keeps_the_latest_and_the_best():
    h = EpochHistory(limit=64)
    for ep in range(100_000):
        h.append(_epoch("r", ep, best_epoch=min(ep, 777)))
        assert len(h) < 2 * 64
    epochs = [e.epoch for e in h]
    assert h.seen == 100_000
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 99_999  # first and latest stay
    assert 777 in epochs and h.best is not None and h.best.epoch == 777  # the best epoch's event stays
    # thinned evenly: the older part's epochs are spread over the whole run, not bunched at its end
    assert len(epochs) >= 64 and max(b - a for a, b in zip(epochs, epochs[1:])) <= 100_000 / 16


def test_iter_events_reads_line_by_line_what_read_events_reads(tmp_path):
    path = _write_run(tmp_path, "r1", 300)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
        fh.write(Message("r1", text="a line with \u2028 inside").to_json() + "\n")
    warned: list[str] = []
    got = list(iter_events(path, warn=warned.append))
    assert [e.to_dict() for e in got] == [e.to_dict() for e in read_events(path, warn=lambda m: None)]
    n_lines = len(path.read_text(encoding="utf-8").split("\n")) - 1
    assert len(got) == n_lines - 1  # every line but the garbled one; U+2028 does not split a line
    assert len(warned) == 1 and f"{path}:{n_lines - 1}:" in warned[0] and "skipped unreadable event line" in warned[0]
    assert got[-1].text == "a line with \u2028 inside"


def test_summary_with_history_max_is_the_same_summary_with_fewer_epochs(tmp_path):
    _write_run(tmp_path, "r1", 2000, best=1500)
    full = summarize(tmp_path / "logs" / "r1")
    thin = summarize(tmp_path / "logs" / "r1", history_max=50)
    assert len(full.history) == 2001 and len(thin.history) < 100 and thin.history.seen == 2001
    for key in ("status", "epoch", "best_val_mae", "best_epoch", "test_mae", "started", "updated"):
        assert getattr(thin, key) == getattr(full, key), key
    assert thin.history[-1].epoch == 2000 and any(e.epoch == 1500 for e in thin.history)


def test_dashboard_state_of_a_long_run_is_bounded_and_its_log_ends_as_the_file_does(tmp_path):
    n = max(3 * CHART_EPOCHS, 2 * MAX_LOG) + 17  # more epochs than the history keeps, more lines than the log
    path = _write_run(tmp_path, "r1", n)
    st = RunState(RunSummary(run_id="r1"))
    added = st.apply(iter_events(path))
    assert st.status == "finished" and st.summary.epoch == n
    assert len(st.summary.history) < 2 * CHART_EPOCHS and st.summary.history.seen == n + 1
    assert len(st.log) == len(added) == MAX_LOG
    # the log holds the file's last MAX_LOG lines, as if every event had been applied one by one
    ref = RunState(RunSummary(run_id="r1"))
    for ev in read_events(path):
        ref.apply([ev])
    assert [ln.text for ln in st.log] == [ln.text for ln in ref.log]


def test_scan_reads_a_long_finished_run_into_a_bounded_state(tmp_path):
    _write_run(tmp_path, "long-1", 5 * CHART_EPOCHS)
    res = scan(Paths(tmp_path))
    (found,) = res.new_runs
    assert found.state is not None and not found.live
    assert found.summary.status == "finished" and found.summary.epoch == 5 * CHART_EPOCHS
    assert len(found.summary.history) < 2 * CHART_EPOCHS
    model = Dashboard(Paths(tmp_path))
    model.apply_scan(res)
    primary, _, _ = model.curve("long-1")
    assert primary is not None and primary.epochs[-1] == 5 * CHART_EPOCHS and len(primary.epochs) < 2 * CHART_EPOCHS


def test_a_long_live_file_is_followed_in_steps_and_not_ended_before_its_last_line(tmp_path):
    rid = "live-1"
    path = _write_run(tmp_path, rid, 4000, finished=True)
    total = len(read_events(path))
    watch = RunWatch(Paths(tmp_path), rid, launched=lambda: None, warn=lambda m: None)
    watch.events._tail.chunk_max = 20_000  # a few dozen lines a step
    got, steps = [], 0
    while True:
        step = watch.step()
        steps += 1
        got += step.events
        if step.ended:
            break
        assert steps < 10_000
    assert len(got) == total and got[-1].type == "run_finished" and steps > 10
    assert os.path.getsize(path) > 20 * 20_000


def test_a_symlink_to_itself_in_logs_is_skipped_and_reported_the_other_runs_listed(tmp_path):
    _write_run(tmp_path, "good-1", 3)
    (tmp_path / "logs" / "loop").symlink_to("loop")
    warned: list[str] = []
    runs = list_runs(Paths(tmp_path), warn=warned.append)
    assert [s.run_id for s in runs] == ["good-1"]
    assert len(warned) == 1 and "loop" in warned[0] and "skipped" in warned[0]
    res = scan(Paths(tmp_path))
    assert [f.run_id for f in res.new_runs] == ["good-1"]
    assert [w for w in res.warnings if "loop" in w] == [warned[0]]
    model = Dashboard(Paths(tmp_path))
    model.apply_scan(res)
    again = scan(Paths(tmp_path), frozenset(model.runs)).warnings
    assert [w for w in again if "loop" in w] == [warned[0]]  # every scan sees it ...
    assert [w for w in res.warnings + again if model.new_problem(w)] == [warned[0]]  # ... the app shows it once
