"""``tui-ft predict`` and ``tui-ft eval`` on a potential's checkpoint (energies, forces, stresses),
the training-time structure checks in predict (property and potential alike), and
``--batch-size`` refused below 1.

One tiny potential run (1 epoch, a tenth of the EMT demo frames) is trained once for the module."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tui_ft import cli
from tui_ft.core.common.events import RunFinished, read_events

ROOT = Path(__file__).resolve().parents[1]

PRESET = """
[run]
name = "pp"
[data]
source = "demo_potential"
split = "random"
fraction = 0.1
test_limit = 8
[task]
kind = "potential"
[finetune]
mode = "full"
[optim]
lr = 3e-4
[train]
epochs = 1
batch_size = 8
device = "cpu"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, graph_cache_dir):
    """``(project root, run id, exported .pt)`` of one tiny potential run."""
    root = tmp_path_factory.mktemp("pp") / "project"
    shutil.copytree(ROOT / "presets", root / "presets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUI_FT_HOME", str(root))
        mp.setenv("TUI_FT_CACHE", str(graph_cache_dir))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("NO_COLOR", raising=False)
        mp.chdir(root)
        preset = root / "presets" / "pp.toml"
        preset.write_text(PRESET)
        assert cli.main(["--preset", str(preset), "--plain"]) == 0
        (run_dir,) = [d for d in (root / "logs").iterdir() if (d / "events.jsonl").is_file()]
        out = root / "export" / "potential.pt"
        assert cli.main(["export", f"{run_dir.name}@best", str(out)]) == 0
        yield root, run_dir.name, out


def cu_frames(path: Path, n: int = 6, *, extra: list | None = None) -> Path:
    """``n`` rattled, strained 4-atom Cu cells labelled by EMT (eV, eV/Å, eV/Å³) as extxyz, then ``extra`` Atoms."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(3)
    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61 * (1 + 0.01 * (k - n // 2)), cubic=True)
        a.positions += rng.normal(0, 0.06, a.positions.shape)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        a.info["id"] = f"cu-{k}"
        frames.append(a)
    ase.io.write(path, frames + list(extra or []), format="extxyz")
    return path


def bad_atoms():
    """Two structures training refuses: overlapping atoms (0.04 Å) and americium (Z 95, no CHGNet embedding)."""
    from ase.build import bulk

    close = bulk("Cu", "fcc", a=3.61, cubic=True)
    close.positions[1] = close.positions[0] + [0.04, 0.0, 0.0]
    close.info["id"] = "overlap"
    am = bulk("Cu", "fcc", a=3.61, cubic=True)
    am.numbers[2] = 95
    am.info["id"] = "americium"
    return [close, am]


@pytest.mark.slow
def test_predict_forces_and_stresses_equal_chgnets_calculator_on_the_export(run, tmp_path, capsys, monkeypatch):
    import ase.io
    from chgnet.model import CHGNet, CHGNetCalculator

    root, run_id, exported = run
    monkeypatch.chdir(root)
    frames = cu_frames(tmp_path / "cu.extxyz")
    csv_out, xyz_out = tmp_path / "preds.csv", tmp_path / "preds.extxyz"
    rc = cli.main(["predict", f"{run_id}@best", str(frames), "--out", str(csv_out), "--forces", "--stress",
                   "--batch-size", "4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert xyz_out.is_file() and "predicted 6 of 6" in err and "Traceback" not in err
    lines = [ln for ln in csv_out.read_text().splitlines() if not ln.startswith("#")]
    assert lines[0].startswith("id,n_atoms,energy_eV_per_atom,energy_eV") and len(lines) == 7
    ours = ase.io.read(xyz_out, ":")
    assert [a.info["id"] for a in ours] == [f"cu-{k}" for k in range(6)]
    model = CHGNet.from_file(str(exported))
    calc = CHGNetCalculator(model=model, use_device="cpu")
    for a, row in zip(ours, lines[1:]):
        ref = a.copy()
        ref.calc = calc
        assert np.allclose(a.get_forces(), ref.get_forces(), atol=1e-5)  # eV/Å
        assert np.allclose(a.get_stress(), ref.get_stress(), atol=1e-5)  # eV/Å³, ASE sign and Voigt order
        assert math.isclose(a.get_potential_energy(), ref.get_potential_energy(), abs_tol=1e-5)  # eV, total
        cols = row.split(",")
        assert math.isclose(float(cols[3]), ref.get_potential_energy(), abs_tol=1e-5)
        assert math.isclose(float(cols[2]) * len(a), float(cols[3]), rel_tol=1e-12)


def _direct_maes(exported: Path, frames: Path) -> dict[str, float]:
    """Energy (meV/atom), force (meV/Å) and stress (GPa) MAE of the exported model by chgnet's predict_structure."""
    import ase.io
    from ase.units import GPa
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    model = CHGNet.from_file(str(exported))
    e, f, s = [], [], []
    for a in ase.io.read(frames, ":"):
        p = model.predict_structure(AseAtomsAdaptor.get_structure(a), task="efs")
        e.append(abs(float(p["e"]) - a.get_potential_energy() / len(a)))
        f.append(np.abs(p["f"] - a.get_forces()).ravel())
        s.append(np.abs(p["s"] - a.get_stress(voigt=False) / GPa).ravel())
    return {"energy": 1000 * float(np.mean(e)), "force": 1000 * float(np.concatenate(f).mean()),
            "stress": float(np.concatenate(s).mean())}


@pytest.mark.slow
def test_eval_prints_each_targets_mae_as_a_direct_computation_gives_it(run, tmp_path, capsys, monkeypatch):
    root, run_id, exported = run
    monkeypatch.chdir(root)
    frames = cu_frames(tmp_path / "cu.extxyz")
    assert cli.main(["eval", f"{run_id}@best", "--data", str(frames), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = _direct_maes(exported, frames)
    assert set(got["mae"]) == {"energy", "force", "stress"} and got["rows"] == "all" and got["n_structures"] == 6
    for t, v in want.items():
        assert math.isclose(got["mae"][t]["value"], v, rel_tol=1e-4, abs_tol=1e-6), (t, got["mae"][t], v)
    assert {t: m["unit"] for t, m in got["mae"].items()} == {"energy": "meV/atom", "force": "meV/Å", "stress": "GPa"}
    assert got["mae"]["force"]["n"] == 6 * 4 * 3 and got["mae"]["stress"]["n"] == 6 * 9
    assert cli.main(["eval", f"{run_id}@best", "--data", str(frames)]) == 0
    table = capsys.readouterr().out
    assert f"{got['mae']['force']['value']:.4f}" in table and "meV/Å" in table and "meV/atom" in table


@pytest.mark.slow
def test_eval_without_data_scores_the_runs_own_test_frames_as_the_run_did(run, capsys, monkeypatch):
    root, run_id, _ = run
    monkeypatch.chdir(root)
    fin = [e for e in read_events(root / "logs" / run_id / "events.jsonl") if isinstance(e, RunFinished)][-1]
    assert cli.main(["eval", f"{run_id}@best", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["rows"] == "test" and got["n_structures"] == fin.n_test == 8
    for t in ("energy", "force", "stress"):
        assert math.isclose(got["mae"][t]["value"], fin.test_metrics[f"test_{t}_mae"], rel_tol=1e-3), t


@pytest.mark.slow
def test_eval_without_data_leaves_out_the_frames_the_run_left_out(project, capsys):
    """A training frame whose graph the run refuses (overlapping atoms) makes the engine re-split
    without it, by the task's own rule (frames: a seeded random split, as at first; Task.resplit);
    eval's own test frames are the split the run tested."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    good = ase.io.read(cu_frames(project / "tmp.extxyz", n=24), ":")
    close = bad_atoms()[0]
    close.calc = SinglePointCalculator(close, **{k: good[0].calc.results[k] for k in ("energy", "forces", "stress")})
    ase.io.write(project / "train.extxyz", good[:3] + [close] + good[3:], format="extxyz")
    preset = project / "presets" / "skip.toml"
    preset.write_text(PRESET.replace('source = "demo_potential"', f'source = "{project / "train.extxyz"}"')
                      .replace('split = "random"\n', "").replace("fraction = 0.1", "fraction = 1.0")
                      .replace("test_limit = 8", "test_limit = 0"))
    assert cli.main(["--preset", str(preset), "--plain"]) == 0
    (run_dir,) = [d for d in (project / "logs").iterdir() if (d / "events.jsonl").is_file()]
    events = read_events(run_dir / "events.jsonl")
    assert [e for e in events if type(e).__name__ == "RunStarted"][-1].skipped == ["overlap"]
    fin = [e for e in events if isinstance(e, RunFinished)][-1]
    capsys.readouterr()
    assert cli.main(["eval", f"{run_dir.name}@best", "--format", "json"]) == 0
    got = capsys.readouterr()
    res = json.loads(got.out)
    assert res["n_structures"] == fin.n_test and "may not be the run's" not in got.err and "overlap" not in got.err
    for t in ("energy", "force", "stress"):
        assert math.isclose(res["mae"][t]["value"], fin.test_metrics[f"test_{t}_mae"], rel_tol=1e-3), t


@pytest.mark.slow
def test_predict_lists_overlapping_and_unknown_element_structures_by_id_and_writes_the_rest(
        run, tmp_path, capsys, monkeypatch):
    import ase.io

    root, run_id, _ = run
    monkeypatch.chdir(root)
    frames = cu_frames(tmp_path / "mixed.extxyz", n=3, extra=bad_atoms())
    out = tmp_path / "p.csv"
    rc = cli.main(["predict", f"{run_id}@best", str(frames), "--out", str(out), "--forces"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "[error] overlap: overlapping atoms" in err and "0.04 A apart" in err
    assert "[error] americium: element Am (Z=95) is not one CHGNet knows" in err
    ids = [ln.split(",")[0] for ln in out.read_text().splitlines()[2:]]
    assert ids == ["cu-0", "cu-1", "cu-2"]
    assert [a.info["id"] for a in ase.io.read(tmp_path / "p.extxyz", ":")] == ids


def test_property_predict_applies_the_same_checks_and_refuses_forces(tmp_path, capsys, monkeypatch):
    from ase.build import bulk
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    from tui_ft.core.library.ckptfile import save_checkpoint

    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    base = CHGNet.load(verbose=False)
    ckpt = tmp_path / "ck" / "best.pt"
    save_checkpoint(ckpt, {"model_state": base.state_dict(), "model_args": dict(base.model_args),
                           "meta": {"run_id": "x", "preset": {"data": {"target": "e_form"}}}})
    folder = tmp_path / "cifs"
    folder.mkdir()
    og = bulk("Cu", "fcc", a=3.61, cubic=True)
    og.numbers[0] = 118
    for name, atoms in [("good", bulk("Al", "fcc", a=4.05, cubic=True)), *((a.info["id"], a) for a in bad_atoms()),
                        ("oganesson", og)]:
        AseAtomsAdaptor.get_structure(atoms).to(filename=str(folder / f"{name}.cif"))
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(ckpt), str(folder), "--out", str(out), "--batch-size", "8"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "predicted 1 of 4" in err
    assert "[error] overlap.cif: overlapping atoms" in err
    assert "[error] americium.cif: element Am (Z=95)" in err and "[error] oganesson.cif: element Og (Z=118)" in err
    assert [ln.split(",")[0] for ln in out.read_text().splitlines()[2:]] == ["good.cif"]
    assert cli.main(["predict", str(ckpt), str(folder / "good.cif"), "--out", str(tmp_path / "f.csv"),
                     "--forces"]) == 2
    err = capsys.readouterr().err
    assert "meaningless" in err and "potential" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.csv").exists() and not (tmp_path / "f.extxyz").exists()


@pytest.mark.parametrize("value", ["0", "-3", "two"])
@pytest.mark.parametrize("command", [["predict", "x@best", "in.extxyz"], ["eval", "x@best", "--data", "in.extxyz"]])
def test_batch_size_below_one_is_a_usage_error(command, value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--batch-size", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert "--batch-size" in line and "at least 1" in line and "Traceback" not in err


@pytest.mark.slow
def test_a_refused_frame_with_a_test_limit_re_splits_by_the_tasks_rule(project, capsys):
    """With data.test_limit set, the re-split after a refused graph keeps to frames whose graphs were
    built (it used to pull in a test frame never built: KeyError), and splits frames at random as the
    first split did (it used to fall back to data.split's Matbench folds)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    good = ase.io.read(cu_frames(project / "tmp.extxyz", n=24), ":")
    close = bad_atoms()[0]
    close.calc = SinglePointCalculator(close, **{k: good[0].calc.results[k] for k in ("energy", "forces", "stress")})
    ase.io.write(project / "train.extxyz", good[:3] + [close] + good[3:], format="extxyz")
    preset = project / "presets" / "limit.toml"
    preset.write_text(PRESET.replace('source = "demo_potential"', f'source = "{project / "train.extxyz"}"')
                      .replace("fraction = 0.1", "fraction = 1.0").replace("test_limit = 8", "test_limit = 3"))
    assert cli.main(["--preset", str(preset), "--plain"]) == 0, capsys.readouterr().err
    (run_dir,) = [d for d in (project / "logs").iterdir() if (d / "events.jsonl").is_file()]
    events = read_events(run_dir / "events.jsonl")
    started = [e for e in events if type(e).__name__ == "RunStarted"][-1]
    assert started.skipped == ["overlap"] and started.n_test == 3
    fin = [e for e in events if isinstance(e, RunFinished)][-1]
    assert fin.n_test == 3 and math.isfinite(fin.test_metrics["test_force_mae"])
