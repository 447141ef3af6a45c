"""The dashboard model without Textual: runs, queue, device-busy, curves,
predictions, and following a run's files (no Pilot, no training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui_ft.core.common.events import EpochEnd, EventWriter, RunFinished, RunStarted
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import RunSummary
from tui_ft.tui.launcher import LaunchedPlan, LaunchedRun
from tui_ft.tui.model import Dashboard, RunWatch
from tui_ft.tui.scanner import ScanResult, load_entry
from tui_ft.tui.state import RunState

ROOT = Path(__file__).resolve().parents[1]


def test_model_imports_no_textual():
    code = "import sys, tui_ft.tui.model; print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def paths(tmp_path) -> Paths:
    root = tmp_path / "project"
    (root / "presets").mkdir(parents=True)
    return Paths(root)


class FakeProc:
    def __init__(self, rc: int | None = None, pid: int = 4242):
        self.returncode = rc
        self.pid = pid

    def poll(self) -> int | None:
        return self.returncode


def launched_run(paths: Paths, run_id: str, rc: int | None = None) -> LaunchedRun:
    d = paths.run_log_dir(run_id)
    d.mkdir(parents=True, exist_ok=True)
    return LaunchedRun(run_id, "demo", d / "launch.toml", d / "stderr.log", FakeProc(rc))


def write_events(paths: Paths, run_id: str, vals: list[float], *, finished: bool = False, pid: int = 0, plan=None, stage=None, parent=None):
    d = paths.run_log_dir(run_id)
    with EventWriter(d / "events.jsonl") as w:
        w.emit(RunStarted(run_id, preset_name="demo", preset={}, device="cpu", n_train=8, n_val=2, n_test=2, pid=pid,
                          epochs=len(vals) - 1, plan=plan, stage=stage, parent=parent))
        for ep, v in enumerate(vals):
            w.emit(EpochEnd(run_id, epoch=ep, train_mae=None if ep == 0 else v / 2, val_mae=v, lr=1e-3, seconds=1.0,
                            best_val_mae=min(vals[: ep + 1]), best_epoch=ep))
        if finished:
            (d / "test_predictions.csv").write_text("id,true,pred\na,1.0,1.5\nb,2.0,1.0\n", encoding="utf-8")
            w.emit(RunFinished(run_id, test_mae=0.75, best_epoch=len(vals) - 1, best_val_mae=min(vals), seconds=3.0, n_test=2,
                               predictions=str(d / "test_predictions.csv")))


def folded(paths: Paths, run_id: str) -> RunState:
    from tui_ft.core.common.events import read_events

    st = RunState(RunSummary(run_id=run_id))
    st.apply(read_events(paths.run_log_dir(run_id) / "events.jsonl"))
    return st


# --------------------------------------------------------------------------- queue and device-busy


def test_queue_waits_while_the_device_is_busy_and_skips_a_broken_preset(paths):
    demo = (ROOT / "presets" / "demo.toml").read_text(encoding="utf-8")
    good = paths.presets / "demo.toml"
    good.write_text(demo, encoding="utf-8")
    broken = paths.presets / "broken.toml"
    broken.write_text(demo.replace("lr = ", 'lr = "fast" #'), encoding="utf-8")
    m = Dashboard(paths)
    m.preset_entries = [load_entry(good), load_entry(broken)]
    m.queue.add(broken, "broken")
    m.queue.add(good, "demo")

    m.launching = 1  # a launch on its way: the device is busy
    assert m.device_busy
    assert m.next_queued(lambda item, why: pytest.fail("nothing may start")) is None
    assert len(m.queue) == 2

    m.launch_done()
    assert not m.device_busy
    skipped = []
    target = m.next_queued(lambda item, why: skipped.append((item.name, why)))
    assert [name for name, _ in skipped] == ["broken"] and "optim.lr" in skipped[0][1]
    assert target is not None and target.name == "demo" and target.train.epochs > 0
    assert len(m.queue) == 0

    # our run still running keeps the device busy; its end frees it
    lr = launched_run(paths, "demo-1")
    st = m.add_launched(lr)
    assert st.launched is lr and m.device_busy
    lr.proc.returncode = 0
    assert not m.device_busy
    # a followed run that is still active (started elsewhere) is busy too
    st.following = True
    assert m.device_busy
    st.following = False

    # a plan of ours: busy until it ends, reported once
    plan = LaunchedPlan("tiny", paths.presets / "tiny.toml", paths.logs / "x.log", FakeProc())
    m.add_plan(plan)
    assert m.device_busy and m.training() == ["plan tiny"]
    assert m.ended_plans() == []
    plan.proc.returncode = 2
    assert m.ended_plans() == [(plan, 2)]
    assert m.ended_plans() == []
    assert not m.device_busy


def test_launch_counter_never_goes_negative(paths):
    m = Dashboard(paths)
    m.launch_done()
    assert m.launching == 0


# --------------------------------------------------------------------------- scans


def test_apply_scan_reads_finished_runs_follows_live_ones_and_drops_gone_ones(paths):
    from tui_ft.tui.scanner import scan

    write_events(paths, "done-1", [0.5, 0.4], finished=True)
    write_events(paths, "live-1", [0.5], pid=os.getpid())  # our own pid: alive
    write_events(paths, "dead-1", [0.5], pid=2**22 + 12345)  # nobody: it ended badly
    m = Dashboard(paths)
    res = scan(paths, frozenset(), None, None)
    changes = m.apply_scan(res)
    assert changes.runs_changed
    assert [st.run_id for st in changes.to_follow] == ["live-1"]
    assert m.runs["done-1"].status == "finished"
    assert m.runs["dead-1"].status in ("crashed", "failed") and not m.runs["dead-1"].active
    assert m.presets_sig == res.presets_sig

    again = m.apply_scan(ScanResult(new_runs=[], gone_runs=["done-1", "live-1"]))
    assert again.runs_changed and "done-1" not in m.runs
    assert "live-1" in m.runs  # still active: kept


# --------------------------------------------------------------------------- charts


def test_curve_joins_plan_stages_and_lists_overlays(paths):
    write_events(paths, "s1", [0.6, 0.5, 0.4], plan="p", stage=1)
    write_events(paths, "s2", [0.4, 0.3], plan="p", stage=2, parent="s1@best")
    write_events(paths, "other", [0.9, 0.8])
    m = Dashboard(paths)
    for rid in ("s1", "s2", "other"):
        m.runs[rid] = folded(paths, rid)
    assert [s.run_id for s in m.plan_chain(m.runs["s2"])] == ["s1", "s2"]
    m.runs["other"].overlay = True
    primary, overlays, bounds = m.curve("s2")
    assert primary is not None and list(primary.epochs) == [0, 1, 2, 2, 3]
    assert bounds == [2]
    assert [o.run_id for o in overlays] == ["other"]
    primary, overlays, bounds = m.curve(None)
    assert primary is None and bounds == [] and [o.run_id for o in overlays] == ["other"]


def test_predictions_are_read_once_and_explained_when_missing(paths):
    write_events(paths, "fin", [0.5, 0.4], finished=True)
    write_events(paths, "run", [0.5])
    m = Dashboard(paths)
    m.runs["fin"], m.runs["run"] = folded(paths, "fin"), folded(paths, "run")
    run_id, preds, note = m.predictions("fin")
    assert run_id == "fin" and len(preds) == 2 and note == ""
    (paths.run_log_dir("fin") / "test_predictions.csv").unlink()
    assert m.predictions("fin")[1] is preds  # cached
    assert m.predictions("run") == (None, None, "the parity plot and error histogram appear when the run finishes")
    m.runs["run"].summary.status = "failed"
    assert m.predictions("run") == (None, None, "no test predictions: the run failed")
    assert m.predictions(None)[1] is None


# --------------------------------------------------------------------------- following


def test_run_watch_reads_new_events_and_ends_with_our_process(paths):
    write_events(paths, "r1", [0.5])
    (paths.run_log_dir("r1") / "stderr.log").write_text("loading\n", encoding="utf-8")
    lr = launched_run(paths, "r1")
    warnings: list[str] = []
    watch = RunWatch(paths, "r1", launched=lambda: lr, warn=warnings.append)
    first = watch.step()
    assert [type(e).__name__ for e in first.events] == ["RunStarted", "EpochEnd"]
    assert first.lines == ["loading"] and not first.ended
    assert watch.step().events == []

    with open(paths.run_log_dir("r1") / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    lr.proc.returncode = 0
    (paths.run_log_dir("r1") / "stderr.log").write_text("loading\ndone\n", encoding="utf-8")
    last = watch.step()
    assert last.ended and last.returncode == 0 and last.lines == ["done"]
    assert last.stderr_tail == ["loading", "done"]
    assert warnings  # the garbled line was reported, not raised


def test_run_watch_of_a_run_started_elsewhere_ends_at_its_final_event(paths):
    write_events(paths, "r2", [0.5, 0.4], finished=True, pid=os.getpid())
    watch = RunWatch(paths, "r2", launched=lambda: None, warn=lambda msg: None)
    step = watch.step()
    assert step.ended and step.returncode is None and any(isinstance(e, RunFinished) for e in step.events)


def test_run_watch_looks_once_more_after_the_process_died(paths):
    write_events(paths, "r3", [0.5], pid=2**22 + 12345)
    watch = RunWatch(paths, "r3", launched=lambda: None, warn=lambda msg: None)
    first = watch.step()
    assert first.events and not first.ended  # one more look: the last lines may be on their way
    second = watch.step()
    assert second.ended and second.returncode is None


# --------------------------------------------------------------------------- issue 13


def test_continued_run_is_drawn_after_its_parent_when_asked(paths):
    """13.14: a run continued from a checkpoint (not a plan) starts at its own
    epoch 0 by default; with ``after_parent`` it follows its parent's last epoch."""
    write_events(paths, "parent", [0.6, 0.5, 0.4, 0.35])
    write_events(paths, "child", [0.35, 0.3], parent="parent@best")
    m = Dashboard(paths)
    for rid in ("parent", "child"):
        m.runs[rid] = folded(paths, rid)
    primary, _, bounds = m.curve("child")
    assert list(primary.epochs) == [0, 1] and bounds == []
    m.after_parent = True
    primary, _, bounds = m.curve("child")
    assert list(primary.epochs) == [0, 1, 2, 3, 3, 4] and bounds == [3]
    assert primary.val[-2:] == [0.35, 0.3]


def test_checkpoint_status_comes_from_the_run_events_not_the_sidecar(paths):
    """13.3: one source of truth for a run's status (the events summary)."""
    from tui_ft.core.library.checkpoints import CheckpointInfo
    from tui_ft.core.library.ckptfile import CheckpointMeta

    write_events(paths, "r1", [0.5, 0.4], pid=2**22 + 12345)  # its process is gone, no final event
    m = Dashboard(paths)
    st = folded(paths, "r1")
    st.summary.check_alive()
    m.runs["r1"] = st
    meta = CheckpointMeta.from_dict({"run_id": "r1", "kind": "last", "status": "running", "finished": False})
    ckpt = CheckpointInfo(run_id="r1", kind="last", path=paths.checkpoints / "r1" / "last.pt", meta=meta)
    assert m.checkpoint_status(ckpt) == st.status != "running"
    gone = CheckpointInfo(run_id="gone", kind="last", path=paths.checkpoints / "gone" / "last.pt", meta=meta)
    assert m.checkpoint_status(gone) == "no log"


def test_each_problem_is_new_once(paths):
    m = Dashboard(paths)
    assert m.new_problem("logs/x/events.jsonl:3: skipped unreadable event line")
    assert not m.new_problem("logs/x/events.jsonl:3: skipped unreadable event line")
    assert m.new_problem("logs/x/events.jsonl:4: skipped unreadable event line")
    assert list(m.problems) == ["logs/x/events.jsonl:3: skipped unreadable event line", "logs/x/events.jsonl:4: skipped unreadable event line"]


# --------------------------------------------------------------------------- issue 22


def test_run_watch_follows_a_resume_after_the_final_event(paths):
    """22.2: a run_started after run_interrupted (a resume) is a new attempt: the watch goes on."""
    from tui_ft.core.common.events import RunInterrupted

    write_events(paths, "r4", [0.5, 0.4], pid=2**22 + 12345)
    events = paths.run_log_dir("r4") / "events.jsonl"
    with EventWriter(events) as w:
        w.emit(RunInterrupted("r4", epoch=1, message="interrupted by the user; last.pt saved"))
        w.emit(RunStarted("r4", preset_name="demo", preset={}, device="cpu", n_train=8, n_val=2, n_test=2, pid=os.getpid(), epochs=3))
    watch = RunWatch(paths, "r4", launched=lambda: None, warn=lambda msg: None)
    first = watch.step()
    assert not first.ended and watch.pid == os.getpid() and first.events_sig
    with EventWriter(events) as w:
        w.emit(RunFinished("r4", test_mae=0.3, best_epoch=2, best_val_mae=0.35, seconds=3.0, n_test=2))
    last = watch.step()
    assert last.ended and any(isinstance(e, RunFinished) for e in last.events)
    assert last.events_sig != first.events_sig  # taken before the final line was read: the scan looks again


def test_scan_reads_again_a_settled_run_whose_events_changed(paths):
    """22.2: a run that looked ended and got new events is read again in full; one that
    did not change, or that is followed again already, is left alone."""
    from tui_ft.tui.scanner import events_signature, scan

    write_events(paths, "done", [0.5, 0.4], finished=True)
    write_events(paths, "same", [0.5, 0.4], finished=True)
    m = Dashboard(paths)
    m.apply_scan(scan(paths))
    assert m.runs["done"].status == "finished" and m.settled() == {
        "done": events_signature(paths.run_log_dir("done")), "same": events_signature(paths.run_log_dir("same"))
    }
    kept = m.runs["same"]
    m.runs["done"].overlay = True
    with EventWriter(paths.run_log_dir("done") / "events.jsonl") as w:  # a resume that has already ended
        w.emit(RunStarted("done", preset_name="demo", preset={}, device="cpu", n_train=8, n_val=2, n_test=2, pid=2**22 + 1, epochs=3))
        w.emit(EpochEnd("done", epoch=3, train_mae=0.1, val_mae=0.3, lr=1e-3, seconds=1.0, best_val_mae=0.3, best_epoch=3))
    res = scan(paths, frozenset(m.runs), settled=m.settled())
    assert [f.run_id for f in res.changed_runs] == ["done"] and res.new_runs == []
    changes = m.apply_scan(res)
    assert changes.replaced == ["done"] and changes.runs_changed and changes.to_follow == []
    st = m.runs["done"]
    assert st.status == "crashed" and st.summary.epoch == 3 and st.overlay  # its pid is gone: no final event
    assert m.runs["same"] is kept
    # followed again meanwhile (resumed from the dashboard): its follower reads the file, not the scan
    with EventWriter(paths.run_log_dir("same") / "events.jsonl") as w:
        w.emit(RunStarted("same", preset_name="demo", preset={}, device="cpu", n_train=8, n_val=2, n_test=2, pid=os.getpid(), epochs=3))
    res = scan(paths, frozenset(m.runs), settled=m.settled())
    assert [f.run_id for f in res.changed_runs] == ["same"]
    kept.following = True
    assert m.apply_scan(res).replaced == [] and m.runs["same"] is kept


def test_chain_note_tells_a_plan_from_a_continued_run(paths):
    """22.11: "plan: N stages" only for a plan's stages; a continued run is "after its parent"."""
    write_events(paths, "s1", [0.6, 0.5], plan="p", stage=1)
    write_events(paths, "s2", [0.5, 0.4], plan="p", stage=2, parent="s1@best")
    write_events(paths, "parent", [0.6, 0.5])
    write_events(paths, "child", [0.5, 0.4], parent="parent@best")
    write_events(paths, "grandchild", [0.4, 0.3], parent="child@best")
    m = Dashboard(paths)
    for rid in ("s1", "s2", "parent", "child", "grandchild"):
        m.runs[rid] = folded(paths, rid)
    assert m.curve_note("s2") == "plan: 2 stages"
    assert m.curve_note("child") == "" and m.curve("child")[2] == []  # drawn from its own epoch 0
    m.after_parent = True
    assert m.curve_note("child") == "after its parent" and m.curve("child")[2] == [1]
    assert m.curve_note("grandchild") == "after 2 earlier runs"
    assert m.curve_note("s2") == "plan: 2 stages" and m.curve_note("parent") == "" and m.curve_note(None) == ""
