"""Readers of events.jsonl are total: a wrong-typed line is skipped and reported
once, summaries and listings never crash, a reused pid is not a live run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.common.events import EpochEnd, EventFollower, EventWriter, Message, RunStarted, read_events
from tui_ft.core.common.paths import Paths
from tui_ft.core.common.procs import own_start
from tui_ft.core.library.runs import list_runs, summarize
from tui_ft.core.common.tail import LineTail
from tui_ft.tui.scanner import scan


def _started(rid, **kw):
    base = dict(preset_name="p", preset={"finetune": {"mode": "head"}}, device="cpu", n_train=3, n_val=1, n_test=1,
                epochs=2)
    base.update(kw)
    return RunStarted(rid, **base)


def _epoch(rid, e=0):
    return EpochEnd(rid, epoch=e, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5, best_epoch=e)


# (line, what the warning must name)
BAD = [
    ({"type": "epoch_end", "run_id": "r", "epoch": 1, "train_mae": None, "val_mae": "bad", "lr": 1e-3, "seconds": 1.0,
      "best_val_mae": 0.5, "best_epoch": 0}, "val_mae"),
    ({"type": "message", "run_id": "r", "text": "x", "time": "abc"}, "time"),
    ({"type": "run_started", "run_id": "r", "preset_name": None, "preset": {}, "device": "cpu", "n_train": 1,
      "n_val": 1, "n_test": 1}, "preset_name"),
    ({"type": "run_started", "run_id": "r", "preset_name": "p", "preset": [], "device": "cpu", "n_train": 1,
      "n_val": 1, "n_test": 1}, "preset"),
    ({"type": "epoch_end", "run_id": "r", "epoch": True, "train_mae": None, "val_mae": 0.5, "lr": 1e-3,
      "seconds": 1.0, "best_val_mae": 0.5, "best_epoch": 0}, "epoch"),
    ({"type": "run_finished", "run_id": "r", "test_mae": "0.3", "best_epoch": 1, "best_val_mae": 0.4,
      "seconds": 1.0}, "test_mae"),
    ({"type": "run_failed", "run_id": 7, "message": "boom"}, "run_id"),
    ({"type": "no_such_event", "run_id": "r"}, "no_such_event"),
    ({"type": ["epoch_end"], "run_id": "r"}, "unknown event type"),
    ("[1, 2]", "expected a JSON object"),
    ('"text"', "expected a JSON object"),
]


def _write_bad_run(run_dir: Path) -> list:
    run_dir.mkdir(parents=True, exist_ok=True)
    good = [_started(run_dir.name), _epoch(run_dir.name)]
    lines = [good[0].to_json()]
    lines += [b if isinstance(b, str) else json.dumps(b) for b, _ in BAD]
    lines.append(good[1].to_json())
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return good


def test_wrong_typed_lines_are_skipped_and_named(tmp_path):
    f = tmp_path / "r" / "events.jsonl"
    good = _write_bad_run(f.parent)
    warned: list[str] = []
    assert read_events(f, warn=warned.append) == good
    assert len(warned) == len(BAD)
    for n, (w, (_, field)) in enumerate(zip(warned, BAD), start=2):
        assert f"{f}:{n}:" in w and field in w, w

    followed: list[str] = []
    assert EventFollower(f, warn=followed.append).poll() == good
    assert followed == warned


def test_summaries_listings_and_scan_survive_bad_lines(tmp_path, monkeypatch, capsys):
    paths = Paths(tmp_path)
    _write_bad_run(paths.logs / "bad-run")
    warned: list[str] = []
    s = summarize(paths.logs / "bad-run", warn=warned.append)
    assert s.preset_name == "p" and s.epoch == 0 and len(warned) == len(BAD)
    assert [r.run_id for r in list_runs(paths, warn=lambda m: None)] == ["bad-run"]
    res = scan(paths)
    assert [r.run_id for r in res.new_runs] == ["bad-run"] and len(res.warnings) == len(BAD)
    found = res.new_runs[0]  # the two good events folded in: its start and its one epoch
    assert found.summary.epoch == 0 and found.summary.preset_name == "p" and len(found.summary.history) == 1

    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "bad-run" in out and "Traceback" not in err
    assert err.count("skipped unreadable event line") == len(BAD)


def test_unreadable_events_path_is_reported_not_raised(tmp_path):
    (tmp_path / "r" / "events.jsonl").mkdir(parents=True)
    warned: list[str] = []
    assert read_events(tmp_path / "r" / "events.jsonl", warn=warned.append) == []
    assert len(warned) == 1 and "cannot read events" in warned[0]
    assert summarize(tmp_path / "r", warn=lambda m: None).status == "pending"


@pytest.mark.skipif(not Path("/proc/1/cmdline").exists(), reason="needs /proc")
def test_a_live_pid_that_is_not_the_run_is_crashed(tmp_path):
    paths = Paths(tmp_path)
    # pid 1 is alive (and may be ours to signal or not) but it is no tui-ft run
    with EventWriter(paths.logs / "pid1" / "events.jsonl") as w:
        w.emit(_started("pid1", pid=1))
    s = summarize(paths.logs / "pid1")
    assert s.status == "crashed" and "without a final event" in s.message

    # our own pid, written by us: the start time is recorded and matches
    with EventWriter(paths.logs / "ours" / "events.jsonl") as w:
        ev = _started("ours", pid=os.getpid())
        w.emit(ev)
    assert ev.pid_start == own_start() is not None
    assert read_events(paths.logs / "ours" / "events.jsonl")[0].pid_start == own_start()
    assert summarize(paths.logs / "ours").status == "running"

    # the same pid with another start time: the pid was reused
    with EventWriter(paths.logs / "reused" / "events.jsonl") as w:
        w.emit(_started("reused", pid=os.getpid(), pid_start=own_start() + 1))
        w.emit(_epoch("reused"))
    assert summarize(paths.logs / "reused").status == "crashed"

    # a message before run_started carries the start time too
    with EventWriter(paths.logs / "early" / "events.jsonl") as w:
        w.emit(Message("early", text="reading data", pid=1))
    assert summarize(paths.logs / "early").status == "crashed"


@pytest.mark.skipif(not Path("/proc/1/cmdline").exists(), reason="needs /proc")
def test_old_run_without_start_time_is_judged_by_its_command_line(tmp_path):
    paths = Paths(tmp_path)
    # the child says when it runs: until its exec is done, /proc/PID/cmdline is still this
    # process's (pytest), which names no tui_ft (under load that window is long enough to hit)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", "tui_ft"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline().strip() == "up"
        for rid, pid in (("named", sleeper.pid), ("other", 1)):
            d = paths.logs / rid
            d.mkdir(parents=True)
            line = json.loads(_started(rid, pid=pid).to_json())
            line.pop("pid_start")  # written before start times were recorded
            (d / "events.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
        assert summarize(paths.logs / "named").status == "running"
        assert summarize(paths.logs / "other").status == "crashed"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_line_tail_partial_lines_truncation_and_big_files(tmp_path):
    p = tmp_path / "x.log"
    t = LineTail(p)
    assert t.poll() == []
    p.write_bytes(b"one\r\ntw")
    assert t.poll() == ["one"] and t.lineno == 1
    with open(p, "ab") as fh:
        fh.write(b"o\nthree\n")
    assert t.poll() == ["two", "three"] and t.lineno == 3
    assert t.poll() == []
    p.write_bytes(b"new\n")  # replaced by a shorter file: read again from the start
    assert t.poll() == ["new"] and t.lineno == 1

    big = tmp_path / "big.log"
    big.write_bytes(b"".join(b"line %d\n" % i for i in range(10000)))
    tail = LineTail(big, max_first=1024).poll()
    assert tail[-1] == "line 9999" and len(tail) < 200
    assert LineTail(big, start_at_end=True).poll() == []


def test_dashboard_launch_writes_one_preset_file(tmp_path):
    from tui_ft.core.config.presets import load_preset
    from tui_ft.tui.launcher import launch

    src = Path(__file__).resolve().parents[1] / "presets"
    shutil.copytree(src, tmp_path / "presets")
    preset = load_preset(sorted((tmp_path / "presets").glob("*.toml"))[0])
    paths = Paths(tmp_path)
    run = launch(preset, paths, python=shutil.which("true"))  # start nothing real
    run.proc.wait()
    files = sorted(p.name for p in paths.run_log_dir(run.run_id).iterdir())
    assert files == ["preset.toml", "stderr.log"]
    assert run.preset_file == paths.run_log_dir(run.run_id) / "preset.toml"
    assert load_preset(run.preset_file) == preset
