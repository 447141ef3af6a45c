"""Issue 22 (a new user's first hour, round three), the headless CLI items: listings read by
``| head`` (4), the resume hint on Ctrl-C (10), ``history`` as a table, by preset name and
with ISO 8601 times (9), file modes that follow the umask (14), ``predict`` on the training
data (16), sub-command help and id_prop rows with two problems (17)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import write_demo_forms

from tui_ft import cli
from tui_ft.core.common.events import EpochEnd, RunFinished, RunInterrupted, RunStarted

N_RUNS, N_EPOCHS, N_CKPTS = 200, 300, 60
BIG = "big-20260101-000000-0000"  # the run with N_EPOCHS epochs
T0 = 1_796_170_847.66  # 2026-12-01: the times of the made-up runs


# ---------------------------------------------------------------- a project with long listings


def _events(run_id: str, preset: str, started: float, epochs: int) -> str:
    evs = [RunStarted(run_id, preset_name=preset, preset={"finetune": {"mode": "head"}}, device="cpu",
                      n_train=8, n_val=2, n_test=2, epochs=epochs, unit="eV/atom", time=started)]
    for e in range(epochs):
        evs.append(EpochEnd(run_id, epoch=e, train_mae=0.5 / (e + 1), val_mae=0.4 / (e + 1), lr=1e-3, seconds=1.25,
                            best_val_mae=0.4 / (e + 1), best_epoch=e, n_structures=8, unit="eV/atom",
                            time=started + 2 * (e + 1)))
    evs.append(RunFinished(run_id, test_mae=0.3, best_epoch=epochs - 1, best_val_mae=0.4 / epochs, seconds=2.0 * epochs,
                           n_test=2, unit="eV/atom", time=started + 2 * epochs + 1))
    return "".join(ev.to_json() + "\n" for ev in evs)


@pytest.fixture(scope="module")
def listings(tmp_path_factory) -> Path:
    """A project root whose listings are longer than a pipe holds: N_RUNS runs (the newest,
    BIG, has N_EPOCHS epochs), N_CKPTS checkpoints and a sweep of a few trials."""
    import optuna

    from tui_ft.core.library.ckptfile import save_checkpoint

    root = tmp_path_factory.mktemp("listings")
    (root / "presets").mkdir()
    (root / ".tui-ft").write_text("", encoding="utf-8")
    logs = root / "logs"
    for i in range(N_RUNS):
        rid = BIG if i == N_RUNS - 1 else f"demo-20260101-{i:06d}-abcd"
        (logs / rid).mkdir(parents=True)
        (logs / rid / "events.jsonl").write_text(
            _events(rid, "big" if rid == BIG else "demo", T0 + 10 * i, N_EPOCHS if rid == BIG else 3), encoding="utf-8")
        if i < N_CKPTS:
            meta = {"run_id": rid, "kind": "best", "preset_name": "demo", "preset": {}, "epoch": 2, "val_mae": 0.13,
                    "test_mae": 0.3, "time": T0 + 10 * i, "finished": True, "status": "finished", "mode": "head"}
            save_checkpoint(root / "checkpoints" / rid / "best.pt", {"model_state": {}, "model_args": {}, "meta": meta})
    sweep = logs / ".sweeps" / "sw"
    sweep.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="sw", storage=f"sqlite:///{sweep / 'study.db'}", direction="minimize")
    study.set_user_attr("trials", 3)
    for k in range(3):
        study.add_trial(optuna.trial.create_trial(params={"optim.lr": 10.0 ** -(k + 2)},
                                                  distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)},
                                                  value=0.1 + k / 10, user_attrs={"run_id": f"sw-t{k}"}))
    return root


def _env(root: Path) -> dict:
    return {**os.environ, "TUI_FT_HOME": str(root), "OMP_NUM_THREADS": "1"}


LISTINGS = {
    "runs": ["runs"],
    "runs-json": ["runs", "--format", "json"],
    "history-csv": ["history", BIG, "--format", "csv"],
    "checkpoints": ["checkpoints"],
    "sweeps": ["sweeps"],
    "sweep": ["sweep", "sw"],
}
FIRST_LINE = {"runs": "run ", "runs-json": "[", "history-csv": "run_id,", "checkpoints": "checkpoint ",
              "sweeps": "sweep ", "sweep": "trial "}


def _no_traceback(stderr: str) -> None:
    for bad in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert bad not in stderr, stderr


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_listing_read_by_head_stops_quietly(listings, name):
    """``tui-ft LISTING | head -1`` (two processes and a pipe, no shell): exit 0, no traceback;
    then the same listing into a pipe whose reader has already gone (its first write fails)."""
    cmd = [sys.executable, "-m", "tui_ft", *LISTINGS[name]]
    # the pipe holds one page, so every listing here outruns what `head -1` reads
    lister = subprocess.Popen(cmd, cwd=listings, env=_env(listings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              pipesize=4096)
    head = subprocess.Popen(["head", "-1"], stdin=lister.stdout, stdout=subprocess.PIPE, text=True)
    lister.stdout.close()  # head holds the only read end: when it exits, the pipe is closed
    first, _ = head.communicate(timeout=120)
    err = lister.stderr.read().decode()
    lister.stderr.close()
    assert lister.wait(timeout=120) == 0, err
    _no_traceback(err)
    assert first.startswith(FIRST_LINE[name]) and first.count("\n") == 1, first

    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run(cmd, cwd=listings, env=_env(listings), stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=120)
    finally:
        os.close(w)
    assert res.returncode == 0, res.stderr
    _no_traceback(res.stderr)


def test_a_listing_that_is_read_to_the_end_is_whole(listings, monkeypatch, capsys):
    """The closed-pipe handling does not cut a listing that is read: every run, every epoch."""
    monkeypatch.setenv("TUI_FT_HOME", str(listings))
    monkeypatch.chdir(listings)
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == N_RUNS + 1
    assert cli.main(["history", BIG, "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == N_EPOCHS + 1


# ---------------------------------------------------------------- 9. history


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def test_history_by_preset_name_table_and_iso_times(listings, monkeypatch, capsys):
    monkeypatch.setenv("TUI_FT_HOME", str(listings))
    monkeypatch.chdir(listings)
    newest_demo = f"demo-20260101-{N_RUNS - 2:06d}-abcd"
    # a preset name: its newest run, said on stderr; a table when asked (the default on a terminal)
    assert cli.main(["history", "demo", "--format", "table"]) == 0
    out, err = capsys.readouterr()
    assert f"run {newest_demo}" in err and "newest of" in err
    lines = out.splitlines()
    assert lines[0].startswith(f"run {newest_demo} (preset demo, finished") and "eV/atom" in lines[0]
    assert lines[1].split() == ["epoch", "val_mae", "train_mae", "best", "at", "lr", "seconds", "time"]
    assert len(lines) == 2 + 3
    started = T0 + 10 * (N_RUNS - 2)
    assert lines[2].split() == ["0", "0.4000", "0.5000", "0.4000", "0", "1.00e-03", "1.2", _iso(started + 2)]
    # on a terminal the table is the default; through a pipe CSV is
    with monkeypatch.context() as m:
        m.setattr(sys.stdout, "isatty", lambda: True, raising=False)
        assert cli.main(["history", "demo"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "epoch"
    assert cli.main(["history", "demo"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    # CSV times are ISO 8601 (they read back as the same instant), not seconds since 1970
    assert [datetime.fromisoformat(r["time"]).timestamp() for r in rows] == [
        pytest.approx(int(started + 2 * (e + 1)), abs=1) for e in range(3)]
    # demo@best: the run of that checkpoint (the library's resolver), and the start of one run id
    assert cli.main(["history", "demo@best", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert f"run demo-20260101-{N_CKPTS - 1:06d}-abcd" in err
    js = json.loads(out)
    assert js[0]["time"] == pytest.approx(T0 + 10 * (N_CKPTS - 1) + 2) and js[0]["time_iso"] == _iso(js[0]["time"])
    assert cli.main(["history", "big-2026", "--format", "csv"]) == 0
    assert f"run {BIG}" in capsys.readouterr().err
    # nothing found / ambiguous: one line, exit 2
    assert cli.main(["history", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run or preset" in err[0]
    assert cli.main(["history", "demo-2026"]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_runs_csv_times_are_iso(listings, monkeypatch, capsys):
    monkeypatch.setenv("TUI_FT_HOME", str(listings))
    monkeypatch.chdir(listings)
    assert cli.main(["runs", "--format", "csv"]) == 0
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    big = rows[BIG]
    assert big["started"] == _iso(T0 + 10 * (N_RUNS - 1))
    assert datetime.fromisoformat(big["updated"]).timestamp() == pytest.approx(int(T0 + 10 * (N_RUNS - 1) + 2 * N_EPOCHS + 1), abs=1)
    assert float(big["elapsed"]) == pytest.approx(2 * N_EPOCHS + 1)  # a duration stays in seconds
    assert cli.main(["runs", "--format", "json"]) == 0
    js = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert js[BIG]["started"] == pytest.approx(T0 + 10 * (N_RUNS - 1)) and js[BIG]["started_iso"] == big["started"]


# ---------------------------------------------------------------- 10. Ctrl-C says how to continue


def test_interrupted_line_says_how_to_resume(capsys):
    printer = cli.Printer(plain=True)
    printer.show(RunInterrupted("demo-1", epoch=1, message="interrupted by the user; last.pt (epoch 1) saved"))
    printer.show(RunInterrupted("demo-2", message="interrupted by the user; no checkpoint was saved (nothing to resume)"))
    err = capsys.readouterr().err.splitlines()
    assert err == ["run demo-1 interrupted: interrupted by the user; last.pt (epoch 1) saved; "
                   "continue with: tui-ft resume demo-1",
                   "run demo-2 interrupted: interrupted by the user; no checkpoint was saved (nothing to resume)"]


# ---------------------------------------------------------------- 14. file modes follow the umask


@pytest.fixture
def umask():
    """Set the process umask for a test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    from tui_ft.core.common.atomic import atomic_write, atomic_write_text, file_mode
    from tui_ft.core.library.ckptfile import save_checkpoint

    umask(mask)
    assert file_mode() == mode
    atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"x"))
    atomic_write_text(tmp_path / "a.txt", "x")
    save_checkpoint(tmp_path / "ck" / "best.pt", {"model_state": {}, "model_args": {}, "meta": {"epoch": 0}})
    for f in ("a.bin", "a.txt", "ck/best.pt", "ck/best.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == mode, f
    assert os.umask(mask) == mask  # reading the umask left it as it was


@pytest.mark.slow
def test_export_and_predict_files_are_group_readable_under_umask_022(project, tmp_path, umask, tui_ft_cli):
    """Through the real CLI (a subprocess inherits the umask): the exported model and the
    predictions file are 0644, as `cp` or an editor would make them, not mkstemp's 0600."""
    from chgnet.model import CHGNet

    from tui_ft.core.library.ckptfile import save_checkpoint

    forms = write_demo_forms(tmp_path / "forms", 4)
    m = CHGNet.load(verbose=False)
    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, {"model_state": m.state_dict(), "model_args": dict(m.model_args), "meta": {}})
    umask(0o022)
    out, preds = tmp_path / "model.pt", tmp_path / "p.csv"
    res = tui_ft_cli("export", ck, out, timeout=600)
    assert res.returncode == 0, res.stderr
    res = tui_ft_cli("predict", ck, forms["cif"], "--out", preds, "--device", "cpu", timeout=600)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o644 and preds.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- 16. predict on the training data


@pytest.mark.slow
def test_predict_on_the_training_data_warns_like_eval(project, tmp_path, capsys):
    forms = write_demo_forms(tmp_path / "forms", 40)
    preset = project / "presets" / "own.toml"
    preset.write_text(f'[run]\nname = "own"\n[data]\nsource = "{forms["cif"]}"\n[finetune]\nmode = "head"\n'
                      '[train]\nepochs = 1\nbatch_size = 8\ndevice = "cpu"\n', encoding="utf-8")
    assert cli.main(["run", str(preset), "--plain"]) == 0  # [optim] left out: lr from the mode (item 7)
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert cli.main(["predict", "own@best", str(forms["cif"]), "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if ln.startswith("[warning]")]
    assert len(warn) == 1 and "training data" in warn[0] and "not a test MAE" in warn[0] and "8 test rows" in warn[0]
    assert "on the 40 with targets (training rows included: not a test MAE)" in err
    # other data (the same structures as an extxyz file: other content): no warning
    assert cli.main(["predict", "own@best", str(forms["xyz"]), "--out", str(out), "--device", "cpu", "--force"]) == 0  # replaces the first CSV
    err = capsys.readouterr().err
    assert "[warning]" not in err and "on the 40 with targets" in err and "training rows" not in err


# ---------------------------------------------------------------- 17. help and id_prop rows


def _actions(parser):
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from ((f"{name} {x}", act) for x, act in _actions(sub))
        elif not isinstance(a, argparse._HelpAction):
            yield (a.dest, a)


def test_every_argument_has_a_description(capsys):
    missing = [name for name, a in _actions(cli.build_parser()) if not a.help]
    assert missing == []
    with pytest.raises(SystemExit):
        cli.main(["resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "run_id" in text and "the run to continue" in text and "no live progress bar" in text


def test_id_prop_row_without_file_and_with_a_bad_target_says_both(tmp_path):
    from tui_ft.core.data.sources import load_source, problems

    forms = write_demo_forms(tmp_path / "forms", 4)
    idprop = forms["cif"] / "id_prop.csv"
    idprop.write_text(idprop.read_text() + "demo-9999,abc\n")
    ds = load_source(forms["cif"], "e_form")
    (why,) = [w for ident, w in problems(ds) if ident == "demo-9999"]
    assert why.startswith("line 5: no structure file") and "target 'abc' is not a number" in why
