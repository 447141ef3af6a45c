"""Kill the real training process at random moments; nothing may be lost.

A head-mode run on the demo data (6 epochs, no early stopping) is started as
``python -m tui_ft --preset FILE --plain`` and SIGKILLed at a seeded random
moment: a random delay (0-50 ms) after the n-th line of its events file, n
random (mostly within training, so kills land in epochs and in checkpoint
writes), or, every fourth trial, a random delay after start. After every kill:

* every checkpoint ``Library().list()`` lists loads with ``load_checkpoint``
  (``weights_only``) and is a ``best.pt`` / ``last.pt``, never a temp file;
* ``runs.summarize`` says ``crashed``, also when the process died loading the
  data or the model, before ``run_started`` (``pending`` only when it died
  before its first event; ``finished`` only when it finished before the kill);
* ``tui-ft runs`` still works;
* a trial whose kill proved nothing (the process had finished before the kill,
  or died before its run folder existed) is counted apart in the fault report
  ("kills that proved nothing"), never as "kills survived";
* ``tui-ft resume RUN_ID`` continues after the epoch in ``last.pt`` and exits
  0, and the resumed epochs give the same train/val MAE per epoch, and the same
  test MAE, as an uninterrupted run of the same preset and seed (to 1e-6): the
  weights, the optimizer state and the shuffling all continue exactly. With no
  ``last.pt`` yet, resume refuses with one line and exit 2.

``TUI_FT_KILL_TRIALS`` (default 4) sets the number of kills, ``TUI_FT_KILL_SEED``
the seed; ``TUI_FT_KILL_TRIALS=20`` is the by-hand soak.

A Ctrl-C (SIGINT) mid-training exits 130 with ``run_interrupted``, a loadable
``last.pt``, no temp file left, and resumes to the same numbers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tui_ft import cli
from tui_ft.core.common.events import CheckpointSaved, EpochEnd, RunFinished, RunInterrupted, RunStarted, read_events
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.library.ckptfile import load_checkpoint, save_checkpoint
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import summarize

N_TRIALS = int(os.environ.get("TUI_FT_KILL_TRIALS") or 4)
SEED = int(os.environ.get("TUI_FT_KILL_SEED") or 20261125)
EPOCHS = 6
TOL = 1e-6
PRESET = "killme"


# ---------------------------------------------------------------- helpers


class Project:
    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.paths = Paths(root)
        # one torch thread in every process, this one included during in-process resumes,
        # so that the uninterrupted and the resumed runs do the same arithmetic
        self.env = {**os.environ, "TUI_FT_HOME": str(root), "TUI_FT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
        self.preset = root / "presets" / f"{PRESET}.toml"
        self.baseline: dict = {}

    def start(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.root / f"{log}.out", "w")
        err = open(self.root / f"{log}.err", "w")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "tui_ft", *args], cwd=self.root, env=self.env, stdout=out, stderr=err
            )
        finally:
            out.close()
            err.close()

    def output(self, log: str) -> tuple[str, str]:
        return (self.root / f"{log}.out").read_text(), (self.root / f"{log}.err").read_text()

    def run(self, *args: str, log: str, timeout: float = 300) -> tuple[int, str, str]:
        p = self.start(*args, log=log)
        rc = p.wait(timeout=timeout)
        return (rc, *self.output(log))

    def run_ids(self) -> set[str]:
        d = self.paths.logs
        return {p.name for p in d.iterdir() if p.is_dir()} if d.is_dir() else set()

    def events(self, run_id: str) -> list:
        return read_events(self.paths.run_log_dir(run_id) / "events.jsonl")


def last_segment(events: list) -> list:
    """The events of the latest start of a run (a resumed run appends to the same file)."""
    starts = [i for i, e in enumerate(events) if isinstance(e, RunStarted)]
    return events[starts[-1]:] if starts else []


def epoch_table(events: list) -> dict[int, EpochEnd]:
    return {e.epoch: e for e in events if isinstance(e, EpochEnd)}


def verify_library(project: Project, report) -> int:
    """Every listed checkpoint is a best/last .pt that loads weights_only; returns how many."""
    n = 0
    for c in Library(project.paths).list():
        assert c.path.name == f"{c.kind}.pt" and not c.path.name.startswith("."), c.path
        assert c.path.parent == project.paths.run_ckpt_dir(c.run_id)
        payload = load_checkpoint(c.path)
        meta = payload["meta"]
        assert meta["run_id"] == c.run_id and meta["kind"] == c.kind
        assert payload["model_state"], c.path
        # the sidecar is written right after the .pt: at most one save behind it
        assert c.epoch is not None and meta["epoch"] >= c.epoch, (c.path, meta["epoch"], c.epoch)
        if meta["epoch"] != c.epoch:
            report["kill: sidecar one save behind its .pt (killed between the two renames)"] += 1
        n += 1
    report["checkpoints verified (load_checkpoint, weights_only)"] += n
    return n


def leftover_temp_files(project: Project, run_id: str) -> list[Path]:
    d = project.paths.run_ckpt_dir(run_id)
    return sorted(p for p in d.iterdir() if p.name.endswith(".tmp")) if d.is_dir() else []


def check_runs_command(project: Project, monkeypatch, capsys, run_id: str, status: str) -> None:
    monkeypatch.setenv("TUI_FT_HOME", str(project.root))
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    row = next(line for line in out.splitlines() if line.startswith(run_id))
    assert f" {status} " in row, row


def resume(project: Project, run_id: str, monkeypatch, capsys, subprocess_: bool) -> tuple[int, str, str]:
    """``tui-ft resume RUN_ID``: a real subprocess, or ``cli.main`` in this process
    (the same code without the ~3 s of imports)."""
    if subprocess_:
        return project.run("resume", run_id, "--plain", log=f"resume-{run_id}")
    monkeypatch.setenv("TUI_FT_HOME", str(project.root))
    monkeypatch.chdir(project.root)
    sigterm = signal.getsignal(signal.SIGTERM)
    threads = torch.get_num_threads()
    capsys.readouterr()
    torch.set_num_threads(1)
    try:
        rc = cli.main(["resume", run_id, "--plain"])
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, sigterm)
    return (rc, *capsys.readouterr())


def check_resumed(project: Project, run_id: str, report, monkeypatch, capsys, *, subprocess_: bool = False) -> None:
    """``tui-ft resume`` after a kill or Ctrl-C: same numbers as the uninterrupted run."""
    last = project.paths.run_ckpt_dir(run_id) / "last.pt"
    before = project.events(run_id)
    if not last.is_file():
        rc, out, err = resume(project, run_id, monkeypatch, capsys, subprocess_)
        assert rc == 2, (rc, out, err)
        assert len(err.splitlines()) == 1 and "nothing to resume" in err, err
        report["kill: no last.pt yet, resume refused with one line"] += 1
        return
    done = load_checkpoint(last)
    e0 = done["meta"]["epoch"]
    opt = done.get("optimizer_state")
    assert opt is not None and (e0 == 0 or opt["state"]), "last.pt lacks the optimizer state"
    rc, out, err = resume(project, run_id, monkeypatch, capsys, subprocess_)
    assert rc == 0, (rc, out, err)
    assert "Traceback" not in out + err
    assert f"resuming after epoch {e0}" in err, err
    events = project.events(run_id)
    assert events[: len(before)] == before, "resume must append to the events file, not rewrite it"
    seg = last_segment(events[len(before):])
    assert seg, "the resumed run wrote no run_started"
    resumed = [e for e in seg if isinstance(e, EpochEnd)]
    assert [e.epoch for e in resumed] == list(range(e0 + 1, EPOCHS + 1)), (e0, [e.epoch for e in resumed])
    base = project.baseline["epochs"]
    for e in resumed:
        b = base[e.epoch]
        assert abs(e.val_mae - b.val_mae) <= TOL, (e.epoch, e.val_mae, b.val_mae)
        assert abs(e.train_mae - b.train_mae) <= TOL, (e.epoch, e.train_mae, b.train_mae)
        assert e.best_epoch == b.best_epoch and abs(e.best_val_mae - b.best_val_mae) <= TOL
    # nothing lost: before the kill and after the resume, every epoch 0..EPOCHS was logged
    assert set(epoch_table(events)) == set(range(EPOCHS + 1))
    fin = seg[-1]
    assert isinstance(fin, RunFinished), fin
    assert abs(fin.test_mae - project.baseline["test_mae"]) <= TOL
    assert fin.best_epoch == project.baseline["best_epoch"]
    assert summarize(project.paths.run_log_dir(run_id)).status == "finished"
    for kind in ("best", "last"):
        meta = load_checkpoint(project.paths.run_ckpt_dir(run_id) / f"{kind}.pt")["meta"]
        assert meta["finished"] is True and abs(meta["test_mae"] - fin.test_mae) <= TOL
        assert json.loads((project.paths.run_ckpt_dir(run_id) / f"{kind}.json").read_text())["finished"] is True
    report["kill: resumed and matched the uninterrupted run"] += 1
    report["kill: epochs re-run after resume"] += len(resumed)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kill_project(tmp_path_factory, graph_cache_dir, preset_text) -> Project:
    root = tmp_path_factory.mktemp("kill-project")
    (root / "presets").mkdir()
    project = Project(root, graph_cache_dir)
    project.preset.write_text(preset_text(PRESET, epochs=EPOCHS, batch_size=4, patience=0, seed=7))
    t = time.monotonic()
    rc, out, err = project.run("--preset", str(project.preset), "--plain", log="baseline")
    seconds = time.monotonic() - t
    assert rc == 0, (out, err)
    (run_id,) = project.run_ids()
    events = project.events(run_id)
    table = epoch_table(events)
    assert sorted(table) == list(range(EPOCHS + 1))
    fin = events[-1]
    assert isinstance(fin, RunFinished)
    lines = (project.paths.run_log_dir(run_id) / "events.jsonl").read_text().count("\n")
    first_epoch_line = 1 + next(i for i, e in enumerate(events) if isinstance(e, EpochEnd))
    project.baseline = {
        "run_id": run_id, "epochs": table, "test_mae": fin.test_mae, "best_epoch": fin.best_epoch,
        "seconds": seconds, "lines": lines, "first_epoch_line": first_epoch_line,
    }
    return project


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("trial", range(N_TRIALS))
def test_sigkill_at_random_moment_then_resume(trial, kill_project, fault_report, monkeypatch, capsys):
    project = kill_project
    rng = random.Random(SEED * 1000 + trial)
    # kills keyed to the run's progress (the n-th line of its events file): in trials 0, 1
    # (mod 4) n falls in the training part, in trial 2 anywhere; trial 3 kills by wall clock
    by_events = trial % 4 != 3
    first = project.baseline["first_epoch_line"] if trial % 4 < 2 else 1
    target_lines = rng.randint(first, project.baseline["lines"] - 1)  # not after run_finished
    delay = rng.uniform(0.0, 0.05) if by_events else rng.uniform(0.0, project.baseline["seconds"])
    known = project.run_ids()
    proc = project.start("--preset", str(project.preset), "--plain", log=f"trial{trial}")
    run_id = None
    t0 = time.monotonic()
    try:
        if by_events:
            while proc.poll() is None and time.monotonic() - t0 < 120:
                new = project.run_ids() - known
                if new:
                    (run_id,) = new
                    f = project.paths.run_log_dir(run_id) / "events.jsonl"
                    if f.is_file() and f.read_bytes().count(b"\n") >= target_lines:
                        break
                time.sleep(0.002)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
    new = project.run_ids() - known
    run_id = next(iter(new)) if new else None
    how = f"after event line {target_lines} + {delay:.3f}s" if by_events else f"{delay:.3f}s after start"
    print(f"trial {trial}: kill {how}: run {run_id}, exit {rc}")

    assert verify_library(project, fault_report) >= 2  # the baseline's best and last at least
    if run_id is None:  # killed before the run folder existed: nothing of the run to survive
        assert rc == -signal.SIGKILL
        fault_report["kill: before the run folder existed"] += 1
        fault_report["kills that proved nothing (not counted as survived)"] += 1
        return
    assert "Traceback" not in project.output(f"trial{trial}")[1]
    for tmp in leftover_temp_files(project, run_id):
        assert not any(c.path == tmp for c in Library(project.paths).list())
        fault_report["kill: temp files left on disk by SIGKILL (never listed)"] += 1
    events = project.events(run_id)
    fault_report[f"kill: last event logged before the kill: {events[-1].type if events else 'none'}"] += 1
    status = summarize(project.paths.run_log_dir(run_id)).status
    if any(isinstance(e, RunFinished) for e in events):  # the kill came too late to test anything
        assert status == "finished"
        fault_report["kill: run had finished before the kill"] += 1
        fault_report["kills that proved nothing (not counted as survived)"] += 1
        check_runs_command(project, monkeypatch, capsys, run_id, status)
        return
    elif any(isinstance(e, RunStarted) for e in events):
        assert rc == -signal.SIGKILL
        assert status == "crashed", status
    elif events:  # died loading the data or the model: its messages name the process
        assert rc == -signal.SIGKILL
        assert status == "crashed", status
        fault_report["kill: before run_started"] += 1
    else:  # died between creating the run folder and its first event: nothing says it started
        assert rc == -signal.SIGKILL
        assert status == "pending", status
        fault_report["kill: before the first event"] += 1
    check_runs_command(project, monkeypatch, capsys, run_id, status)
    if status != "finished":
        check_resumed(project, run_id, fault_report, monkeypatch, capsys)
        verify_library(project, fault_report)
    fault_report["kills survived"] += 1


def test_ctrl_c_exits_130_and_resumes(kill_project, fault_report, monkeypatch, capsys):
    project = kill_project
    known = project.run_ids()
    proc = project.start("--preset", str(project.preset), "--plain", log="sigint")
    run_id = None
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < 120:
            new = project.run_ids() - known
            if new:
                (run_id,) = new
                saved = [e for e in project.events(run_id) if isinstance(e, CheckpointSaved) and e.kind == "last"]
                if saved and saved[-1].epoch >= 2:
                    break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = project.output("sigint")
    assert rc == 130, (rc, out, err)
    assert "Traceback" not in out + err
    assert "interrupted" in err
    events = project.events(run_id)
    assert isinstance(events[-1], RunInterrupted), events[-1]
    assert summarize(project.paths.run_log_dir(run_id)).status == "interrupted"
    last = project.paths.run_ckpt_dir(run_id) / "last.pt"
    assert last.is_file()
    assert load_checkpoint(last)["meta"]["epoch"] >= 2
    assert leftover_temp_files(project, run_id) == []  # Ctrl-C cleans its temp files
    verify_library(project, fault_report)
    check_runs_command(project, monkeypatch, capsys, run_id, "interrupted")

    # control: the same run resumed WITHOUT its optimizer state drifts off the uninterrupted
    # numbers, so matching them (below) really shows that the optimizer state was restored
    control = f"{run_id}-no-optimizer"
    shutil.copytree(project.paths.run_log_dir(run_id), project.paths.run_log_dir(control))
    shutil.copytree(project.paths.run_ckpt_dir(run_id), project.paths.run_ckpt_dir(control))
    payload = load_checkpoint(project.paths.run_ckpt_dir(control) / "last.pt")
    payload["optimizer_state"] = None
    save_checkpoint(project.paths.run_ckpt_dir(control) / "last.pt", payload)
    rc, out, err = resume(project, control, monkeypatch, capsys, subprocess_=False)
    assert rc == 0, err
    drift = [
        abs(e.val_mae - project.baseline["epochs"][e.epoch].val_mae)
        for e in last_segment(project.events(control))
        if isinstance(e, EpochEnd)
    ]
    assert drift and max(drift) > 100 * TOL, drift
    shutil.rmtree(project.paths.run_ckpt_dir(control))  # keep the library to real runs

    check_resumed(project, run_id, fault_report, monkeypatch, capsys, subprocess_=True)
    fault_report["ctrl-c: exit 130, resumed"] += 1


def test_run_dead_before_run_started_is_crashed(tmp_path):
    """Unit check of the rule above: messages carry the writer's pid."""
    from tui_ft.core.common.events import EventWriter, Message

    paths = Paths(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for run_id, pid, status in (("dead", gone.pid, "crashed"), ("alive", os.getpid(), "pending"), ("old", 0, "pending")):
        with EventWriter(paths.run_log_dir(run_id) / "events.jsonl") as w:
            w.emit(Message(run_id, text="reading data.json", pid=pid))
        s = summarize(paths.run_log_dir(run_id))
        assert s.status == status, (run_id, s.status)
    assert "without a final event" in summarize(paths.run_log_dir("dead")).message
