"""presets/sweep_demo.toml, the offline sweep the README's "Sweeps" section runs.

It loads strictly (a [sweep] table on the built-in demo data), and runs
through the real CLI with its trial count and epochs cut down (2 trials of
1 epoch), then ``tui-ft sweeps`` and ``tui-ft sweep NAME --best`` read it back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.config.presets import load_preset

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "presets" / "sweep_demo.toml"


def test_sweep_demo_preset_is_an_offline_sweep():
    p = load_preset(SHIPPED)
    assert p.data.source == "demo" and p.finetune.mode == "head" and p.train.device == "cpu"
    assert p.sweep is not None and p.sweep.trials == 6 and p.sweep.pruner == "median"
    dims = {d.key: (d.kind, d.values) for d in p.sweep.dims}
    assert dims["optim.lr"][0] == "log_uniform" and "train.batch_size" in dims


def cut_down(text: str) -> str:
    """The shipped preset with 2 trials of 1 epoch (each replaced line must be there)."""
    for old, new in (("trials = 6 ", "trials = 2 "), ("epochs = 3\n", "epochs = 1\n")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_sweep_demo_runs_offline_and_gives_a_best_preset(project, capsys):
    path = project / "presets" / "sweep_demo.toml"  # the fixture copied presets/
    path.write_text(cut_down(path.read_text(encoding="utf-8")), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "tui_ft", "--preset", str(path), "--jobs", "2"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="sweep_demo", storage=f"sqlite:///{project / 'logs' / '.sweeps' / 'sweep_demo' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert "tui-ft sweep sweep_demo --best" in out.stdout

    capsys.readouterr()
    assert cli.main(["sweeps"]) == 0
    listed = capsys.readouterr().out
    row = next(ln for ln in listed.splitlines() if ln.startswith("sweep_demo "))
    assert row.split()[1] == "2/2"
    assert cli.main(["sweep", "sweep_demo", "--best"]) == 0
    (project / "best.toml").write_text(capsys.readouterr().out, encoding="utf-8")
    best = load_preset(project / "best.toml")
    winner = min(trials, key=lambda t: t.value)
    assert best.sweep is None and best.name == "sweep_demo-best" and best.data.source == "demo"
    assert best.optim.lr == winner.params["optim.lr"] and best.train.batch_size == winner.params["train.batch_size"]


@pytest.mark.slow
def test_a_grid_sweep_runs_every_point_of_its_grid(project, demo_preset):
    """Optuna's GridSampler asks the study to stop once it counts its grid as done, which raises
    RuntimeError in ask-and-tell (optuna #5141); the sweep runs its whole grid and exits 0."""
    path = demo_preset("grid", epochs=1)
    path.write_text(path.read_text(encoding="utf-8") + '\n[sweep]\ntrials = 3\nsampler = "grid"\npruner = "none"\n'
                    '\n[sweep.space]\n"train.batch_size" = { choice = [8, 16, 32] }\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "tui_ft", "--preset", str(path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{project / 'logs' / '.sweeps' / 'grid' / 'study.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert sorted(t.params["train.batch_size"] for t in trials) == [8, 16, 32]
    assert "Traceback" not in out.stderr
