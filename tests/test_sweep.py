"""Hyperparameter sweeps (tui_ft.core.orchestrate.sweep): the [sweep] table, Optuna studies, trials as runs.

Fast tests: the schema and its errors, seeded sampling, the rows a sweep view
shows, the message when Optuna is missing. Slow tests run real sweeps on the
demo data through the CLI (each trial is a ``python -m tui_ft`` process):
6 trials 2 at a time; a trial pruned by ``prune_above``; a sweep killed during
a trial and rerun.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.config.fields import PresetError
from tui_ft.core.config.dump import dump_preset
from tui_ft.core.config.presets import load_preset, parse_preset
from tui_ft.core.orchestrate.sweep import (
    SweepError,
    best_row,
    make_sampler,
    param_points,
    suggest,
    summary_lines,
    trial_preset,
    trial_rows,
)
from conftest import demo_preset_text

optuna = pytest.importorskip("optuna")

SPACE = """
[sweep.space]
"optim.lr" = { log_uniform = [1e-4, 1e-2] }
"train.batch_size" = { choice = [8, 16] }
"""


def sweep_text(name: str, *, trials: int = 6, epochs: int = 1, extra: str = "", space: str = SPACE) -> str:
    return demo_preset_text(name, epochs=epochs) + f"\n[sweep]\ntrials = {trials}\nseed = 7\n{extra}\n" + space


def write(project: Path, name: str, text: str) -> Path:
    path = project / "presets" / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def studied(project: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project / 'logs' / '.sweeps' / name / 'study.db'}")


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


# --------------------------------------------------------------------------- schema


def test_sweep_table_loads_round_trips_and_makes_trial_presets():
    p = parse_preset(sweep_text("s1", extra='pruner = "hyperband"\nprune_above = 2.5'), "s1.toml")
    assert p.sweep is not None and p.sweep.trials == 6 and p.sweep.pruner == "hyperband" and p.sweep.prune_above == 2.5
    assert [(d.key, d.kind, d.values) for d in p.sweep.dims] == [
        ("optim.lr", "log_uniform", (1e-4, 1e-2)),
        ("train.batch_size", "choice", (8, 16)),
    ]
    assert p.line_of('sweep.space.optim.lr') == p.lines["sweep.space"] + 1
    again = parse_preset(dump_preset(p), "again.toml")  # strict round trip, [sweep.space] one line per key
    assert again == p and again.sweep == p.sweep
    t = trial_preset(p, {"optim.lr": 3e-3, "train.batch_size": 16}, "s1", 4)
    assert t.sweep is None and t.name == "s1-t4" and t.optim.lr == 3e-3 and t.train.batch_size == 16
    assert "sweep s1 trial 4" in t.run.description
    assert parse_preset(dump_preset(t)) == t and "[sweep" not in dump_preset(t)
    assert t.data == p.data and t.finetune == p.finetune  # everything else is the base preset's


@pytest.mark.parametrize(
    "line, field, words",
    [
        ('"optim.lr" = { log_uniform = [1e-2, 1e-5] }', 'sweep.space."optim.lr".log_uniform', "empty range"),
        ('"optim.lr" = { uniform = [0.5, 0.5] }', 'sweep.space."optim.lr".uniform', "empty range"),
        ('"optim.lr" = { log_uniform = [-1e-3, 1e-2] }', 'sweep.space."optim.lr".log_uniform', "LOW > 0"),
        ('"optim.lr" = { log_uniform = [1e-4, 5.0] }', 'sweep.space."optim.lr".log_uniform', "5.0 is not a valid optim.lr"),
        ('"train.batch_size" = { choice = [8, 16.5] }', 'sweep.space."train.batch_size".choice', "16.5 is not a valid"),
        ('"train.batch_size" = { log_uniform = [8, 64] }', 'sweep.space."train.batch_size".log_uniform', "int = [LOW, HIGH]"),
        ('"optim.optimizer" = { int = [0, 2] }', 'sweep.space."optim.optimizer".int', "choice"),
        ('"train.epochs" = { int = [1.0, 4] }', 'sweep.space."train.epochs".int', "two integers"),
        ('"optim.lr" = { range = [1e-4, 1e-2] }', 'sweep.space."optim.lr"', "log_uniform"),
        ('"optim.nope" = { uniform = [0.1, 0.2] }', 'sweep.space."optim.nope"', "unknown preset key"),
        ('"run.name" = { choice = ["a", "b"] }', 'sweep.space."run.name"', "unknown preset key"),
        ('"train.batch_size" = { choice = [] }', 'sweep.space."train.batch_size".choice', "non-empty"),
    ],
)
def test_bad_space_is_a_preset_error_at_its_line(line, field, words):
    text = sweep_text("bad", space=f'\n[sweep.space]\n"train.seed" = {{ int = [0, 3] }}\n{line}\n')
    want_line = text.splitlines().index(line) + 1
    with pytest.raises(PresetError) as e:
        parse_preset(text, "bad.toml")
    assert e.value.errors[0].field == field and e.value.line == want_line, str(e.value)
    assert str(e.value).startswith(f"bad.toml:{want_line}: {field}: ") and words in str(e.value)


def test_grid_sampler_needs_discrete_space_and_enough_points():
    text = sweep_text("g", trials=5, extra='sampler = "grid"', space='\n[sweep.space]\n"train.batch_size" = { choice = [8, 16] }\n"train.seed" = { int = [0, 1] }\n')
    with pytest.raises(PresetError) as e:
        parse_preset(text, "g.toml")
    assert e.value.field == "sweep.trials" and "4 points" in str(e.value)
    assert e.value.line == text.splitlines().index("trials = 5") + 1
    ok = parse_preset(text.replace("trials = 5", "trials = 4"), "g.toml")
    assert ok.sweep.sampler == "grid"


# --------------------------------------------------------------------------- sampling


def _asked(cfg, n: int) -> list[dict]:
    study = optuna.create_study(sampler=make_sampler(cfg), direction="minimize")
    out = []
    for i in range(n):
        t = study.ask()
        params = suggest(t, cfg.dims)
        out.append(params)
        study.tell(t, float(params["optim.lr"]) * (1 + i % 3))  # any deterministic objective
    return out


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_same_seed_same_sampled_values(sampler):
    p = parse_preset(sweep_text("s", extra=f'sampler = "{sampler}"'), "s.toml")
    first, second = _asked(p.sweep, 12), _asked(p.sweep, 12)
    assert first == second
    other = parse_preset(sweep_text("s", extra=f'sampler = "{sampler}"').replace("seed = 7", "seed = 8"), "s.toml")
    assert _asked(other.sweep, 12) != first
    assert all(1e-4 <= v["optim.lr"] <= 1e-2 and v["train.batch_size"] in (8, 16) for v in first)


# --------------------------------------------------------------------------- rows for a sweep view


def _trials():
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    ct = optuna.trial.create_trial
    S = optuna.trial.TrialState
    return [
        ct(state=S.COMPLETE, value=0.30, params={"optim.lr": 1e-3}, distributions=dist, intermediate_values={0: 0.5, 1: 0.3}, user_attrs={"run_id": "a"}),
        ct(state=S.COMPLETE, value=0.20, params={"optim.lr": 3e-3}, distributions=dist, intermediate_values={0: 0.5, 1: 0.2}, user_attrs={"run_id": "b"}),
        ct(state=S.PRUNED, params={"optim.lr": 1e-4}, distributions=dist, intermediate_values={0: 0.5, 1: 0.45}, user_attrs={"run_id": "c"}),
        ct(state=S.FAIL, params={"optim.lr": 5e-3}, distributions=dist, user_attrs={"run_id": "d"}),
    ]


def test_view_rows_best_and_scatter_points():
    trials = _trials()
    for i, t in enumerate(trials):
        t.number = i
    rows = trial_rows(trials)
    assert [(r.number, r.state, r.value) for r in rows] == [(1, "finished", 0.20), (0, "finished", 0.30), (2, "pruned", 0.45), (3, "failed", None)]
    assert rows[2].epoch == 1 and rows[0].run_id == "b" and rows[0].params == {"optim.lr": 3e-3}
    best = best_row(trials)
    assert best.number == 1 and best.value == 0.20
    assert param_points(trials, "optim.lr") == [(3e-3, 0.20), (1e-3, 0.30)]
    lines = summary_lines(trials)
    assert lines[0] == "trials: 2 finished, 1 pruned, 1 failed"
    assert lines[2].split()[:3] == ["1", "1", "0.2000"]
    assert best_row(trials[2:]) is None


def test_missing_optuna_is_one_clear_message(project, monkeypatch, capsys):
    path = write(project, "nooptuna", sweep_text("nooptuna"))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    assert cli.main(["--preset", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tui-ft[sweep]" in err[0] and "Optuna" in err[0]
    assert not (project / "logs").exists() or not any(p for p in (project / "logs").iterdir() if not p.name.startswith("."))
    (project / "logs" / ".sweeps" / "x").mkdir(parents=True)
    assert cli.main(["sweeps"]) == 2 and "tui-ft[sweep]" in capsys.readouterr().err


def test_unknown_sweep_is_a_usage_error(project, capsys):
    assert cli.main(["sweep", "nope", "--best"]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err
    assert cli.main(["sweep", "../x"]) == 2
    assert "sweep name" in capsys.readouterr().err


# --------------------------------------------------------------------------- real sweeps (slow)


def _cli(*args, timeout=600):
    """A sweep through the real CLI in a subprocess (its trials are subprocesses of it)."""
    return subprocess.run([sys.executable, "-m", "tui_ft", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _main(capsys, *args) -> tuple[int, str]:
    """A listing command in-process (no second interpreter start on a busy machine)."""
    capsys.readouterr()
    rc = cli.main([*map(str, args)])
    return rc, capsys.readouterr().out


@pytest.mark.slow
def test_small_sweep_two_at_a_time(project, capsys):
    path = write(project, "small", sweep_text("small", trials=6, epochs=1))
    out = _cli("--preset", path, "--jobs", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    study = studied(project, "small")
    assert states(study) == {"COMPLETE": 6}
    lines = out.stdout.splitlines()
    assert sum(1 for ln in lines if ln.startswith("trial ")) == 6
    # the same seed samples the same values as a fresh study asked in order
    p = load_preset(path)
    want = _asked_untold(p.sweep, 6)
    got = [t.params for t in sorted(study.get_trials(), key=lambda t: t.number)]
    assert got == want
    # trials are ordinary runs: sweep.json names their sweep, `tui-ft runs` lists them
    runs = _main(capsys, "runs")[1]
    for t in study.get_trials():
        rid = t.user_attrs["run_id"]
        meta = json.loads((project / "logs" / rid / "sweep.json").read_text())
        assert meta["sweep"] == "small" and meta["trial"] == t.number and meta["params"] == t.params
        assert rid in runs and (project / "checkpoints" / rid / "best.pt").is_file()
        row = next(ln for ln in runs.splitlines() if ln.startswith(rid))
        assert f"{t.value:.4f}" in row and "finished" in row
    # the final table: best trial first with its value
    best = min(study.get_trials(), key=lambda t: t.value)
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("rank"))) + 1]
    assert table.split()[1] == str(best.number) and table.split()[2] == f"{best.value:.4f}"
    # `tui-ft sweeps` and the best preset, which loads strictly and has the best values
    listed = _main(capsys, "sweeps")[1]
    assert "small" in listed and "6/6" in listed and f"{best.value:.4f}" in listed
    rc, text = _main(capsys, "sweep", "small", "--best")
    assert rc == 0
    (project / "best.toml").write_text(text)
    loaded = load_preset(project / "best.toml")
    assert loaded.sweep is None and loaded.name == "small-best"
    assert loaded.optim.lr == best.params["optim.lr"] and loaded.train.batch_size == best.params["train.batch_size"]


def _asked_untold(cfg, n):
    """What the sampler gives trial 0..n-1 when asked in order (TPE's first trials are seeded random ones)."""
    study = optuna.create_study(sampler=make_sampler(cfg), direction="minimize")
    return [suggest(study.ask(), cfg.dims) for _ in range(n)]


@pytest.mark.slow
def test_pruned_trial_is_pruned_everywhere(project, capsys):
    # prune_above: stop any trial whose validation MAE after an epoch of training is above it.
    # The demo data's val MAE is far above 1e-6, so the trial is pruned after epoch 1, deterministically.
    path = write(project, "prune", sweep_text("prune", trials=1, epochs=4, extra='pruner = "none"\nprune_above = 1e-6'))
    out = _cli("--preset", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pruned    at epoch 1" in out.stdout
    study = studied(project, "prune")
    assert states(study) == {"PRUNED": 1}
    t = study.get_trials()[0]
    rid = t.user_attrs["run_id"]
    events = [json.loads(ln) for ln in (project / "logs" / rid / "events.jsonl").read_text().splitlines() if ln.strip()]
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["run_interrupted", "run_pruned"] and events[-1]["epoch"] == 1
    assert max(e["epoch"] for e in events if e["type"] == "epoch_end") < 4  # stopped before the last epoch
    assert (project / "checkpoints" / rid / "last.pt").is_file() and (project / "checkpoints" / rid / "best.pt").is_file()
    row = next(ln for ln in _main(capsys, "runs")[1].splitlines() if ln.startswith(rid))
    assert row.split()[2] == "pruned"
    assert "1/1" in _main(capsys, "sweeps")[1]
    rows = _main(capsys, "sweep", "prune")[1].splitlines()
    assert rows[1].split()[:2] == ["0", "pruned"]


@pytest.mark.slow
def test_killed_sweep_continues_to_exactly_the_requested_trials(project, capsys):
    path = write(project, "killed", sweep_text("killed", trials=2, epochs=1))
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "tui_ft", "--preset", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until trial 0's run has started training, then kill the sweep process hard
    deadline = time.time() + 300
    run_dir = None
    while time.time() < deadline and proc.poll() is None:
        dirs = [d for d in (project / "logs").glob("killed-t0-*") if (d / "events.jsonl").is_file()]
        if dirs and '"run_started"' in (dirs[0] / "events.jsonl").read_text():
            run_dir = dirs[0]
            break
        time.sleep(0.1)
    assert run_dir is not None and proc.poll() is None, "trial 0 did not start"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    study = studied(project, "killed")
    assert states(study) == {"RUNNING": 1}
    first_params = study.get_trials()[0].params
    out = _cli("--preset", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "left running by an interrupted sweep" in out.stderr
    study = studied(project, "killed")
    st = states(study)
    assert st.get("COMPLETE", 0) + st.get("PRUNED", 0) == 2 and st["FAIL"] == 1, st
    retried = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == 0]
    assert len(retried) == 1 and retried[0].params == first_params
    fresh = [t for t in study.get_trials() if t.number not in (0, retried[0].number)]
    assert len(fresh) == 1 and fresh[0].params != first_params  # the continued sampler does not repeat the first draws
    # the killed trial's run stopped (it got SIGINT when the sweep died, or on rerun) and is not running
    status = next(ln for ln in _main(capsys, "runs")[1].splitlines() if ln.startswith(run_dir.name)).split()[2]
    assert status in ("interrupted", "crashed", "finished")
    # a third run has nothing left to do
    again = _cli("--preset", path)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert states(studied(project, "killed")) == st


def test_run_pruned_event_gives_status_pruned(tmp_path):
    from tui_ft.core.common.events import EpochEnd, EventWriter, RunInterrupted, RunPruned, RunStarted
    from tui_ft.core.library.runs import summarize

    d = tmp_path / "r1"
    with EventWriter(d / "events.jsonl") as w:
        w.emit(RunStarted("r1", preset_name="p", preset={}, device="cpu", n_train=3, n_val=1, n_test=1, pid=os.getpid()))
        w.emit(EpochEnd("r1", epoch=1, train_mae=0.3, val_mae=0.4, lr=1e-3, seconds=0.1, best_val_mae=0.4, best_epoch=1))
        w.emit(RunInterrupted("r1", epoch=1))
    assert summarize(d).status == "interrupted"
    with EventWriter(d / "events.jsonl") as w:
        w.emit(RunPruned("r1", epoch=1, reason="median pruner: val_mae 0.4000 at epoch 1"))
    s = summarize(d)
    assert s.status == "pruned" and s.message.startswith("median pruner") and s.best_val_mae == 0.4


@pytest.mark.parametrize(
    "extra, prunes",
    [('pruner = "median"', True), ('pruner = "none"', False), ('pruner = "none"\nprune_above = 1.0', True)],
)
def test_pruners_judge_a_bad_epoch(extra, prunes):
    from tui_ft.core.orchestrate.sweep import make_pruner

    p = parse_preset(sweep_text("pr", epochs=4, extra=extra), "pr.toml")
    study = optuna.create_study(sampler=make_sampler(p.sweep), pruner=make_pruner(p), direction="minimize")
    for i in range(6):  # six finished trials with val_mae 0.5 -> 0.3
        t = study.ask()
        suggest(t, p.sweep.dims)
        for epoch, v in enumerate([0.6, 0.5, 0.4, 0.3]):
            t.report(v + i * 0.01, epoch)
        study.tell(t, 0.3 + i * 0.01)
    t = study.ask()
    suggest(t, p.sweep.dims)
    t.report(0.6, 0)
    assert not t.should_prune()  # epoch 0 (before any update) is never pruned on
    t.report(5.0, 1)  # far worse than every other trial at epoch 1
    assert bool(t.should_prune()) is prunes


def test_hyperband_resource_is_the_largest_epoch_count():
    from tui_ft.core.orchestrate.sweep import _max_epochs, make_pruner

    p = parse_preset(sweep_text("hb", epochs=4, extra='pruner = "hyperband"'), "hb.toml")
    assert isinstance(make_pruner(p), optuna.pruners.HyperbandPruner) and _max_epochs(p) == 4
    q = parse_preset(sweep_text("hb", epochs=4, extra='pruner = "hyperband"',
                                space='\n[sweep.space]\n"train.epochs" = { int = [2, 9] }\n'), "hb.toml")
    assert _max_epochs(q) == 9


@pytest.mark.slow
def test_sweep_through_submitit_local_prunes_through_the_handle(project, capsys):
    # two trials as submitit jobs (submitit's local executor, the slurm code path), both at once;
    # prune_above prunes each after epoch 1: the sweep stops it through its handle (the job is
    # cancelled, the job's process stops the run), which records run_interrupted, then run_pruned
    pytest.importorskip("submitit")
    path = write(project, "subm", sweep_text("subm", trials=2, epochs=20, extra='pruner = "none"\nprune_above = 1e-6'))
    out = subprocess.run([sys.executable, "-m", "tui_ft", "--preset", str(path), "--jobs", "2", "--executor", "slurm"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TUI_FT_SUBMITIT_CLUSTER": "local"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "slurm" in out.stdout.splitlines()[0] and out.stdout.count("pruned    at epoch") == 2
    study = studied(project, "subm")
    assert states(study) == {"PRUNED": 2}
    for t in study.get_trials():
        assert t.user_attrs.get("job_id") and "pid" not in t.user_attrs
        rid = t.user_attrs["run_id"]
        events = [json.loads(ln) for ln in (project / "logs" / rid / "events.jsonl").read_text().splitlines() if ln.strip()]
        kinds = [e["type"] for e in events]
        assert kinds[-2:] == ["run_interrupted", "run_pruned"], kinds
        assert max(e["epoch"] for e in events if e["type"] == "epoch_end") < 20
        assert (project / "checkpoints" / rid / "last.pt").is_file()
    assert sorted((project / "logs" / ".sweeps" / "subm" / "submitit").glob("*_submitted.pkl"))  # submitit's job files
