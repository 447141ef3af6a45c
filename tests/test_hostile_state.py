"""Issue 26 items 2, 9, 12, 13: hostile state files, pids and start-up settings.

* 2: a pid read from study.db is signalled only if it is still the trial's process
  (``procs.is_our_run``: start time and command line); a RUNNING trial counts as what
  its run's events say.
* 9: every reader of logs/ and checkpoints/ opens regular files only (FIFOs made with
  ``os.mkfifo``; each read runs under a timeout so a regression fails instead of hanging).
* 12: study.json and study.db have one total reader each: exit 2 with one line naming
  the file and the field; nothing is overwritten, a read command never writes.
* 13: start-up errors (no Slurm, a [cluster] folder that cannot be made, a logger that
  cannot start, ``--gpus ²``) are one line, not tracebacks or failed runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tui_ft.core.common.paths import Paths

optuna = pytest.importorskip("optuna")


def no_hang(fn, timeout: float = 30.0):
    """``fn()`` in a thread; fail (instead of hanging the suite) if it has not returned in ``timeout`` s."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} blocked for {timeout}s (a FIFO opened for a blocking read?)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --------------------------------------------------------------------------- 9: FIFOs


def test_open_regular_refuses_fifos_devices_folders_and_big_files(tmp_path):
    from tui_ft.core.common.files import (
        FileTooLarge,
        NotRegularFile,
        open_regular,
        read_regular_bytes,
    )

    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    for p, what in ((fifo, "FIFO"), (os.devnull, "character device"), (tmp_path, "folder")):
        with pytest.raises(NotRegularFile, match=what):
            no_hang(lambda p=p: open_regular(p))
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(FileTooLarge):
        open_regular(big, 99)
    assert read_regular_bytes(big, 100) == b"x" * 100
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")


def test_fifo_events_file_does_not_hang_runs(project):
    """``tui-ft runs`` with a FIFO events.jsonl: in a subprocess with a timeout."""
    (project / "logs" / "r1").mkdir(parents=True)
    os.mkfifo(project / "logs" / "r1" / "events.jsonl")
    for args in (["runs"], ["runs", "--format", "json"]):
        res = subprocess.run([sys.executable, "-m", "tui_ft", *args], capture_output=True, text=True, timeout=60,
                             env=os.environ.copy())
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        assert "FIFO" in res.stderr  # said, not silently skipped


def test_every_reader_refuses_a_fifo(project):
    from tui_ft.core.common.events import EventFollower, EventWriter, read_events
    from tui_ft.core.common.files import NotRegularFile
    from tui_ft.core.common.locks import LockHeld, ProcessLock
    from tui_ft.core.common.tail import LineTail
    from tui_ft.core.library.checkpoints import Library
    from tui_ft.core.orchestrate.plan_runner import StateError, load_state, read_state
    from tui_ft.core.orchestrate.study import StudyError, read_study_file
    from tui_ft.tui.charts import PredictionsError, read_predictions
    from tui_ft.tui.launcher import tail_lines
    from tui_ft.tui.study_model import list_studies

    paths = Paths(project)
    run = project / "logs" / "r1"
    run.mkdir(parents=True)
    ev = run / "events.jsonl"
    os.mkfifo(ev)
    warned: list[str] = []
    assert no_hang(lambda: read_events(ev, warn=warned.append)) == [] and "FIFO" in warned[0]
    assert no_hang(lambda: LineTail(ev).poll()) == []
    assert no_hang(lambda: EventFollower(ev).poll()) == []
    assert no_hang(lambda: tail_lines(ev)) == []
    with pytest.raises(NotRegularFile):
        no_hang(lambda: EventWriter(ev))  # a run never blocks on (or writes into) a FIFO events file
    os.mkfifo(run / "test_predictions.csv")
    with pytest.raises(PredictionsError, match="FIFO"):
        no_hang(lambda: read_predictions(run / "test_predictions.csv"))

    studies = project / "logs" / ".studies" / "s1"
    studies.mkdir(parents=True)
    os.mkfifo(studies / "study.json")
    with pytest.raises(StudyError, match="FIFO"):
        no_hang(lambda: read_study_file(studies / "study.json"))
    rows = no_hang(lambda: list_studies(paths))
    assert [r.name for r in rows] == ["s1"] and "FIFO" in rows[0].problem

    plan = paths.plan_dir("p1")
    plan.mkdir(parents=True)
    os.mkfifo(plan / "state.json")
    with pytest.raises(StateError, match="FIFO"):
        no_hang(lambda: load_state("p1", paths))
    assert no_hang(lambda: read_state("p1", paths, on_error=lambda m: None)) is None
    lock = project / "logs" / "r2" / "lock"
    lock.parent.mkdir(parents=True)
    os.mkfifo(lock)
    with pytest.raises(LockHeld, match="FIFO"):
        no_hang(lambda: ProcessLock(lock).acquire())

    ck = project / "checkpoints" / "r1"
    ck.mkdir(parents=True)
    os.mkfifo(ck / "best.pt")
    os.mkfifo(ck / "last.pt.json")
    (ck / "last.pt").write_bytes(b"garbage")
    lib = Library(paths)
    no_hang(lib.list)  # listed or reported, never blocked


# --------------------------------------------------------------------------- 12: study.json

FP = "f" * 64


def _state(**changes) -> dict:
    d = {"format": "tui-ft-study/1", "study": "s", "fingerprint": FP, "status": "finished", "pid": 1,
         "folds": {"0": {"fold": 0, "kind": "preset", "run_id": "s-f0-20260101-000000", "status": "finished"}}}
    d.update(changes)
    return d


@pytest.mark.parametrize("obj, field", [
    (_state(folds={"0": {"fold": 0, "kind": "preset", "run_id": "../.."}}), "folds.0.run_id"),
    (_state(folds={"0": {"fold": 0, "kind": "preset", "run_id": 12345}}), "folds.0.run_id"),
    (_state(folds=[{"fold": 0}]), "folds"),
    (_state(folds={"0": {"fold": "zero", "kind": "preset"}}), "folds.0.fold"),
    (_state(pid="abc"), "pid"),
    (_state(folds={"0": {"fold": 0, "kind": "plan", "plan": "../x"}}), "folds.0.plan"),
    (_state(folds={"7": {"fold": 7}}), "folds"),
    (_state(format="something-else/1"), "format"),
    ([1, 2], "(top level)"),
])
def test_study_json_wrong_types_are_one_line(tmp_path, obj, field):
    from tui_ft.core.orchestrate.study import StudyError, read_study_file

    p = tmp_path / "study.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(StudyError) as ei:
        read_study_file(p)
    msg = one_line(str(ei.value))
    want = "format 'something-else/1', expected 'tui-ft-study/1'" if field == "format" else f"field '{field}':"
    assert str(p) in msg and want in msg


def test_truncated_or_foreign_study_json_stops_matbench_and_is_kept(project, capsys):
    from tui_ft.core.orchestrate import study

    d = study.study_dir("s", Paths(project))
    d.mkdir(parents=True)
    for text in ('{"format": "tui-ft-study/1", "folds": {"0": {"fo', '{"name": "another tool"}', ""):
        (d / "study.json").write_text(text, encoding="utf-8")
        assert study.run(str(project / "presets" / "demo.toml"), folds="0", name="s") == study.EXIT_USAGE
        err = capsys.readouterr().err
        assert "study.json" in err.strip().splitlines()[-1] and "Traceback" not in err
        assert (d / "study.json").read_text(encoding="utf-8") == text  # never overwritten
        assert not (d / "fold0.toml").exists()  # nothing prepared, nothing trained


# --------------------------------------------------------------------------- 12: study.db


def _sweep_folder(project: Path, name: str) -> Path:
    d = project / "logs" / ".sweeps" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _make_optuna_db(db: Path, name: str) -> None:
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name=name, direction="minimize")
    t = study.ask()
    t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    t.set_user_attr("run_id", f"{name}-t0")
    study.tell(t, 0.5)
    study.set_user_attr("trials", 1)


@pytest.mark.parametrize("kind", ["garbage", "empty", "foreign", "other_study", "fifo"])
def test_broken_study_db_is_one_line_and_not_written(project, kind, capsys):
    from tui_ft.core.orchestrate.sweep import SweepError, cmd_sweeps, load_study

    db = _sweep_folder(project, "sw") / "study.db"
    if kind == "garbage":
        db.write_bytes(b"this is not a database at all" * 10)
    elif kind == "empty":
        db.write_bytes(b"")
    elif kind == "foreign":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (x TEXT)")
        con.commit()
        con.close()
    elif kind == "other_study":
        _make_optuna_db(db, "someone_else")
    else:
        os.mkfifo(db)
    before = db.read_bytes() if kind != "fifo" else None
    for best in (False, True):
        assert no_hang(lambda best=best: cmd_sweeps("sw", best=best, err=lambda m: print(m, file=sys.stderr))) == 2
        line = one_line(capsys.readouterr().err)
        assert str(db) in line
    assert no_hang(lambda: cmd_sweeps(None, best=False, err=lambda m: print(m, file=sys.stderr))) == 2
    captured = capsys.readouterr()
    assert str(db) in one_line(captured.err)  # a broken database is said, not silently omitted
    if kind != "fifo":
        assert db.read_bytes() == before  # a read command never writes (no schema into the 0-byte file)
    if kind != "empty":  # an empty file is a new database for the sweep itself
        from tui_ft.core.config.presets import load_preset

        preset = load_preset(project / "presets" / "sweep_demo.toml").with_changes({"sweep.name": "sw"})
        with pytest.raises(SweepError) as ei:
            no_hang(lambda: load_study(Paths(project), "sw", preset=preset))
        assert str(db) in one_line(str(ei.value))
        if kind != "fifo":
            assert db.read_bytes() == before


def test_good_study_db_is_read_read_only(project, capsys):
    from tui_ft.core.orchestrate.sweep import cmd_sweeps

    db = _sweep_folder(project, "good") / "study.db"
    _make_optuna_db(db, "good")
    before, mtime = db.read_bytes(), db.stat().st_mtime_ns
    assert cmd_sweeps("good", best=False, err=lambda m: print(m, file=sys.stderr)) == 0
    assert cmd_sweeps(None, best=False, err=lambda m: print(m, file=sys.stderr)) == 0
    out = capsys.readouterr().out
    assert "good" in out and "good-t0" in out
    assert db.read_bytes() == before and db.stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------- 2: pids from study.db


def _running_trial(study, run_id: str, **attrs):
    t = study.ask()
    t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    t.set_user_attr("run_id", run_id)
    for k, v in attrs.items():
        t.set_user_attr(k, v)
    return t


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_recover_never_signals_a_process_that_is_not_the_trial(project, sleeper):
    from tui_ft.core.common.procs import start_ticks
    from tui_ft.core.orchestrate.sweep import _recover

    study = optuna.create_study(storage=f"sqlite:///{project / 'r.db'}", study_name="r")
    # the recorded start time matches, but the command line is not a tui-ft run of that id
    a = _running_trial(study, "r-t0", pid=sleeper.pid, pid_start=start_ticks(sleeper.pid))
    # an old trial: no start time recorded (and its run has no events)
    b = _running_trial(study, "r-t1", pid=sleeper.pid)
    # a hand-edited pid
    c = _running_trial(study, "r-t2", pid="abc", pid_start="x")
    said: list[str] = []
    _recover(study, said.append, Paths(project))
    assert sleeper.poll() is None, "an unrelated process was signalled"
    states = {t.number: t.state for t in study.get_trials()}
    assert all(states[t.number] == optuna.trial.TrialState.FAIL for t in (a, b, c))
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 3  # their parameters queued again
    assert sum("not signalled" in m for m in said) == 2


def _write_events(project: Path, run_id: str, *events) -> None:
    from tui_ft.core.common.events import EventWriter

    with EventWriter(project / "logs" / run_id / "events.jsonl") as w:
        for ev in events:
            w.emit(ev)


def test_recover_counts_a_trial_as_its_events_say(project):
    from tui_ft.core.common.events import (
        EpochEnd,
        RunFinished,
        RunInterrupted,
        RunPruned,
        RunStarted,
    )
    from tui_ft.core.orchestrate.sweep import _recover

    def started(rid):
        return RunStarted(rid, preset_name="r", preset={}, device="cpu", n_train=1, n_val=1, n_test=1, pid=1)

    _write_events(project, "r-t0", started("r-t0"),
                  EpochEnd("r-t0", epoch=1, train_mae=0.2, val_mae=0.123, lr=1e-3, seconds=1.0, best_val_mae=0.123,
                           best_epoch=1),
                  RunFinished("r-t0", test_mae=0.13, best_epoch=1, best_val_mae=0.123, seconds=2.0))
    _write_events(project, "r-t1", started("r-t1"), RunInterrupted("r-t1", epoch=1), RunPruned("r-t1", epoch=1, reason="x"))
    _write_events(project, "r-t2", started("r-t2"), RunInterrupted("r-t2", epoch=1))
    study = optuna.create_study(storage=f"sqlite:///{project / 'r.db'}", study_name="r")
    for i in range(3):
        _running_trial(study, f"r-t{i}", pid=999999999)
    said: list[str] = []
    _recover(study, said.append, Paths(project))
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    S = optuna.trial.TrialState
    assert trials[0].state == S.COMPLETE and trials[0].value == pytest.approx(0.123)
    assert trials[1].state == S.PRUNED
    assert trials[2].state == S.FAIL
    assert [t.state for t in trials[3:]] == [S.WAITING]  # only the failed one is trained again
    assert "counted as finished" in said[0]


def test_is_our_run_needs_start_time_and_command_line():
    from tui_ft.core.common.procs import is_our_run, start_ticks

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tui_ft", "RUNX-1"])
    try:
        from tui_ft.core.common.procs import cmdline

        for _ in range(200):  # until it has exec'd (its command line is the parent's before)
            if "RUNX-1" in (cmdline(proc.pid) or ""):
                break
            time.sleep(0.05)
        start = start_ticks(proc.pid)
        assert is_our_run(proc.pid, start, "RUNX-1")
        assert not is_our_run(proc.pid, start + 1, "RUNX-1")  # a reused pid: another start time
        assert not is_our_run(proc.pid, None, "RUNX-1")  # nothing recorded: never signalled
        assert not is_our_run(proc.pid, start, "RUNX-2")  # another run's process
        assert not is_our_run("abc", start, "RUNX-1")
        assert not is_our_run(os.getpid(), start_ticks(os.getpid()), "RUNX-1")  # pytest is no tui-ft run
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- 13: start-up errors


@pytest.mark.parametrize("text", ["²", "0,¹", "٣", "0,0", "a"])
def test_gpus_are_ascii_device_numbers(text):
    from tui_ft.core.orchestrate.executors import ExecutorError, parse_gpus
    from tui_ft.core.orchestrate.study import StudyError
    from tui_ft.core.orchestrate.study import parse_gpus as study_gpus

    with pytest.raises(ExecutorError, match="--gpus"):
        parse_gpus(text)
    with pytest.raises(StudyError, match="--gpus"):
        study_gpus(text)
    assert parse_gpus("0, 1") == ["0", "1"] == study_gpus("0,1")


def test_sweep_gpus_superscript_is_exit_2(project, capsys):
    from tui_ft import cli

    assert cli.main(["--preset", str(project / "presets" / "sweep_demo.toml"), "--gpus", "²"]) == 2
    assert "--gpus" in one_line(capsys.readouterr().err.split("error:", 1)[-1])


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="Slurm is installed here")
def test_slurm_without_slurm_is_one_line_and_leaves_nothing_running(project, capsys):
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.orchestrate import study
    from tui_ft.core.orchestrate.sweep import cmd_sweep_run

    assert study.run(str(project / "presets" / "demo.toml"), folds="0", name="sl", executor="slurm") == study.EXIT_USAGE
    err = capsys.readouterr().err
    assert "sbatch" in err.strip().splitlines()[-1] and "Traceback" not in err
    state = study_json = project / "logs" / ".studies" / "sl" / "study.json"
    assert not study_json.exists() or json.loads(state.read_text())["status"] != "running"

    preset = load_preset(project / "presets" / "sweep_demo.toml")
    errs: list[str] = []
    assert cmd_sweep_run(preset, jobs=1, err=errs.append, executor="slurm") == 2
    assert len(errs) == 1 and "sbatch" in errs[0]
    db = project / "logs" / ".sweeps" / "sweep_demo" / "study.db"
    if db.exists():
        s = optuna.load_study(study_name="sweep_demo", storage=f"sqlite:///{db}")
        assert not [t for t in s.get_trials() if t.state == optuna.trial.TrialState.RUNNING]


def test_cluster_folder_that_cannot_be_made_is_one_line(project, monkeypatch):
    pytest.importorskip("submitit")
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.orchestrate.executors import ExecutorError, make_executor

    monkeypatch.setenv("TUI_FT_SUBMITIT_CLUSTER", "local")
    blocker = project / "a_file"
    blocker.write_text("x", encoding="utf-8")
    cfg = load_preset(project / "presets" / "demo.toml").cluster
    for folder in (blocker, blocker / "sub"):
        with pytest.raises(ExecutorError) as ei:
            make_executor("slurm", jobs=1, cluster_cfg=cfg, folder=folder, name="x")
        assert "[cluster] folder" in one_line(str(ei.value))


def test_logger_that_cannot_start_is_switched_off(monkeypatch):
    from types import SimpleNamespace

    from tui_ft.core.common.events import RunStarted
    from tui_ft.core.train import loggers

    class Broken:
        def __init__(self, *a, **k):
            raise FileExistsError(17, "File exists", "/tmp/tensorboard_dir_is_a_file")

    class Missing:
        def __init__(self, *a, **k):
            raise loggers.LoggerMissing(loggers.missing_message("tensorboard"))

    cfg = SimpleNamespace(tensorboard=True, mlflow=False, wandb=False)
    said: list[tuple[str, str]] = []
    monkeypatch.setitem(loggers._CLASSES, "tensorboard", Broken)
    lg = loggers.RunLoggers(cfg, "r", None, preset=None, say=lambda t, level="info": said.append((t, level)))
    lg.handle(RunStarted("r", preset_name="r", preset={}, device="cpu", n_train=1, n_val=1, n_test=1))
    assert not lg.active and said and said[0][1] == "warning" and "switched off" in said[0][0]
    monkeypatch.setitem(loggers._CLASSES, "tensorboard", Missing)
    lg = loggers.RunLoggers(cfg, "r", None, preset=None, say=lambda t, level="info": None)
    with pytest.raises(loggers.LoggerMissing):
        lg.start()
