"""Potential fine-tuning on the built-in EMT frames (ASE's EMT labels, not DFT): the
preset checks before a run, the learning direction of the force loss, and the exported
model in chgnet's calculator, relaxation and MD."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tui_ft import cli
from tui_ft.core.common.events import EpochEnd, RunFinished, read_events

SMALL = """
[run]
name = "{name}"
[data]
source = "{source}"
split = "random"
fraction = {fraction}
test_limit = 8
[task]
kind = "potential"
{task}
[finetune]
mode = "full"
[optim]
lr = {lr}
[train]
epochs = {epochs}
batch_size = 8
device = "cpu"
"""


def small(project: Path, name: str, *, source: str = "demo_potential", task: str = "", fraction: float = 0.3,
          epochs: int = 2, lr: float = 3e-4) -> Path:
    path = project / "presets" / f"{name}.toml"
    path.write_text(SMALL.format(name=name, source=source, task=task, fraction=fraction, epochs=epochs, lr=lr))
    return path


def write_frames(path: Path, *, nan_force_in: int | None = None, stress: bool = True) -> Path:
    """Twelve rattled 4-atom Cu cells labelled by EMT (eV, eV/Å, eV/Å³), as extxyz."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    rng = np.random.default_rng(0)
    for k in range(12):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        s = a.get_stress() if stress else None
        if k == nan_force_in:
            f = f.copy()
            f[1, 2] = math.nan
        a.calc = SinglePointCalculator(a, energy=e, forces=f, **({"stress": s} if stress else {}))
        a.info["id"] = f"cu-{k:02d}"
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_a_weight_on_a_label_the_data_lacks_is_refused_at_its_line(project, capsys):
    data = write_frames(project / "nostress.extxyz", stress=False)
    path = small(project, "nostress", source=str(data), task="stress_weight = 0.1")
    assert cli.main(["--preset", str(path), "--plain"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith("stress_weight"))
    assert f"{path}:{line}: task.stress_weight:" in err and "0 of 12 frames" in err and "Traceback" not in err
    assert not (project / "logs").exists() or not any((project / "logs").iterdir())


def test_a_frame_with_a_nan_force_is_refused_naming_file_frame_and_field(project, capsys):
    data = write_frames(project / "nan.extxyz", nan_force_in=5)
    path = small(project, "nanforce", source=str(data))
    assert cli.main(["--preset", str(path), "--plain"]) == 2
    err = capsys.readouterr().err
    assert "nan.extxyz frame 5" in err and "forces" in err and "skip_bad_rows" in err and "Traceback" not in err
    assert not (project / "logs").exists() or not any((project / "logs").iterdir())


def test_weights_default_to_chgnets_where_the_data_has_the_label():
    from tui_ft.core.config.presets import TaskCfg
    from tui_ft.core.task.potential import resolve_weights

    w = resolve_weights(TaskCfg(kind="potential"), {"energy": 10, "forces": 10, "stress": 10, "magmom": 0}, 10)
    assert w == {"energy": 1.0, "force": 1.0, "stress": 0.1, "magmom": 0.0}
    w = resolve_weights(TaskCfg(kind="potential", force_weight=0.0), {"energy": 10, "forces": 10}, 10)
    assert w["force"] == 0.0 and w["stress"] == 0.0


def _val_force(project: Path) -> list[float]:
    (run_dir,) = [d for d in (project / "logs").iterdir() if (d / "events.jsonl").is_file()]
    return [e.metrics["val_force_mae"] for e in read_events(run_dir / "events.jsonl") if isinstance(e, EpochEnd)]


@pytest.mark.slow
def test_training_lowers_the_validation_force_error(project, capsys):
    path = small(project, "learn", epochs=2, lr=3e-4, task="stress_weight = 0.0")
    assert cli.main(["--preset", str(path), "--plain"]) == 0, capsys.readouterr().err
    f = _val_force(project)
    assert len(f) == 3 and f[0] > f[1] > f[2] and f[-1] < 0.9 * f[0], f  # meV/Å, epochs 0..2
    out = capsys.readouterr().out
    assert "F " in out and "meV/Å" in out


@pytest.mark.slow
def test_the_force_loss_with_its_sign_flipped_does_not_learn(project, capsys, monkeypatch):
    """The same run with the force term subtracted from the loss: the force error grows."""
    from tui_ft.core.task.potential import PotentialTask

    real = PotentialTask._accumulate

    def flipped(self, terms, loss_fn, sums, counts, **kw):
        loss = real(self, terms, loss_fn, sums, counts, **kw)
        if "force" in terms:
            p, y = terms["force"]
            loss = loss - 2 * self.weights["force"] * loss_fn(p, y)
        return loss

    monkeypatch.setattr(PotentialTask, "_accumulate", flipped)
    path = small(project, "flipped", epochs=2, lr=3e-4, task="stress_weight = 0.0")
    assert cli.main(["--preset", str(path), "--plain"]) == 0, capsys.readouterr().err
    f = _val_force(project)
    assert f[-1] > f[0], f


@pytest.mark.slow
def test_the_exported_potential_runs_in_chgnets_calculator_relaxation_and_md(project, capsys, tmp_path):
    from chgnet.model import CHGNet, CHGNetCalculator, StructOptimizer
    from chgnet.model.dynamics import MolecularDynamics
    from pymatgen.io.ase import AseAtomsAdaptor

    path = small(project, "export", epochs=1)
    assert cli.main(["--preset", str(path), "--plain"]) == 0
    (run_dir,) = [d for d in (project / "logs").iterdir() if (d / "events.jsonl").is_file()]
    fin = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, RunFinished)][-1]
    assert {"test_energy_mae", "test_force_mae", "test_stress_mae", "test_loss"} <= set(fin.test_metrics)
    assert (run_dir / "test_forces.csv").is_file()
    out = tmp_path / "potential.pt"
    assert cli.main(["export", f"{run_dir.name}@best", str(out)]) == 0
    capsys.readouterr()
    # predict / eval read a potential's checkpoint: energies per structure, each target's MAE
    # (tests/test_potential_predict.py checks their numbers against chgnet's)
    frames = write_frames(tmp_path / "cu.extxyz")
    assert cli.main(["predict", f"{run_dir.name}@best", str(frames)]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines()[1].startswith("id,n_atoms,energy_eV_per_atom,energy_eV") and "Traceback" not in got.err
    assert len(got.out.splitlines()) == 2 + 12
    assert cli.main(["eval", f"{run_dir.name}@best", "--data", str(frames)]) == 0
    got = capsys.readouterr()
    assert "meV/atom" in got.out and "meV/Å" in got.out and "GPa" in got.out and "Traceback" not in got.err
    model = CHGNet.from_file(str(out))
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    structure = AseAtomsAdaptor.get_structure(atoms)
    pred = model.predict_structure(structure)
    atoms.calc = CHGNetCalculator(model=model)
    assert np.allclose(atoms.get_forces(), pred["f"], atol=1e-5)
    relaxed = StructOptimizer(model=model).relax(structure, steps=20, verbose=False)
    assert len(relaxed["trajectory"].energies) >= 2
    md = MolecularDynamics(atoms=structure, model=model, ensemble="nvt", temperature=300, timestep=1,
                           trajectory=str(tmp_path / "md.traj"), logfile=str(tmp_path / "md.log"), loginterval=5)
    md.run(20)
    assert np.isfinite(md.atoms.get_potential_energy())
    # the AtomRef refit (on by default from pretrained weights) moves only the elements of the
    # data; every other element keeps the pretrained offset (chgnet's min-norm fit would zero them)
    import ase.io

    from tui_ft.core.common.paths import Paths

    demo = Paths(project).data / "demo_potential.extxyz"
    data_z = {int(z) for a in ase.io.read(demo, index=":") for z in a.numbers}
    w = model.composition_model.fc.weight.detach()[0].tolist()
    w0 = CHGNet.load(verbose=False).composition_model.fc.weight.detach()[0].tolist()
    assert 0 < len(data_z) < 94
    assert all(w[z - 1] == w0[z - 1] for z in range(1, 95) if z not in data_z)
    assert all(w[z - 1] != w0[z - 1] for z in data_z), sorted(data_z)



def test_the_one_pass_forward_gives_chgnets_energies_forces_stresses_and_magmoms(tmp_path):
    """``potential_forward`` (one autograd pass for forces and stresses) against chgnet's own
    ``model(graphs, task="efsm")`` on rattled, strained cells, with and without the graph of the
    gradient: energies (eV/atom), forces (eV/Å) and magmoms (μB) equal to 1e-5; stresses (GPa)
    to 1e-5 GPa + 1e-4 relative. A stress is a float32 sum over every bond and angle of the cell
    times 160.2/V, and the two passes add its terms in a different order: on these ~2 GPa
    stresses they differ by up to 2e-5 GPa (seen with pymatgen 2026.10 and torch 2.13), which
    is rounding, 1/20,000 of chgnet's own stress error; a wrong sign, unit or component order
    differs by O(1 GPa)."""
    import torch
    from ase.build import bulk
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    from tui_ft.core.train.forward import potential_forward

    model = CHGNet.load(verbose=False)
    structures = []
    for k, (el, a) in enumerate((("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52))):
        atoms = bulk(el, "fcc", a=a, cubic=True) * (1, 1, 2)
        atoms.rattle(0.08, seed=k)
        atoms.set_cell(atoms.cell * (1 + 0.02 * (k - 1)), scale_atoms=True)
        structures.append(AseAtomsAdaptor.get_structure(atoms))
    graphs = [model.graph_converter(s) for s in structures]
    ref = model(graphs, task="efsm")
    for create in (True, False):
        ours = potential_forward(model, graphs, "efsm", create_graph=create)
        assert torch.allclose(ours["e"], ref["e"], atol=1e-5)
        for key in ("f", "s", "m"):
            assert len(ours[key]) == len(ref[key]) == 3
            rtol = 1e-4 if key == "s" else 0.0
            for a, b in zip(ours[key], ref[key]):
                assert a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=1e-5), key
        assert ours["f"][0].requires_grad is create  # the training pass keeps the gradient's graph
    e_only = potential_forward(model, graphs, "e", create_graph=False)
    assert torch.allclose(e_only["e"], ref["e"], atol=1e-5) and "f" not in e_only


def test_the_group_split_keeps_each_trajectory_in_one_split_and_leaves_out_excluded_frames():
    """``data.split = "group"``: the frames of one group (an AIMD run, a VASP calculation) land in one
    split only, every split gets some, the seed decides which, and excluded rows are in none."""
    from types import SimpleNamespace

    from tui_ft.core.task.potential import PotentialTask

    frames = [SimpleNamespace(id=f"f{k}", group=f"traj-{k % 9}") for k in range(90)]
    data = SimpleNamespace(seed=0, test_fraction=0.2, val_fraction=0.1, fraction=1.0, test_limit=0)
    t = SimpleNamespace(p=SimpleNamespace(data=data))
    task = PotentialTask.__new__(PotentialTask)
    task.frames = frames
    s = task._group_split(t, exclude=[0, 1])
    parts = {name: {frames[int(r)].group for r in getattr(s, name)} for name in ("train", "val", "test")}
    assert all(parts.values())
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    rows = [int(r) for name in ("train", "val", "test") for r in getattr(s, name)]
    assert sorted(rows) == list(range(2, 90))
    data.seed = 1
    other = task._group_split(t)
    assert {frames[int(r)].group for r in other.test} != parts["test"] or \
        {frames[int(r)].group for r in other.val} != parts["val"]


@pytest.mark.slow
def test_magmoms_are_trained_when_weighted(project, capsys, tmp_path):
    """Frames with magnetic moments (synthetic 1.5 μB per Ni atom on EMT cells: a label for the test,
    not physics): ``magmom_weight`` > 0 trains them, the epochs report ``val_magmom_mae`` (μB) and it
    falls epoch by epoch; the test metrics include it."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(3)
    frames = []
    for k in range(24):
        a = bulk("Ni", "fcc", a=3.52, cubic=True)
        a.positions += rng.normal(0, 0.04, a.positions.shape)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s, magmoms=np.full(len(a), 1.5))
        a.info["id"] = f"ni-{k:02d}"
        frames.append(a)
    src = tmp_path / "ni.extxyz"
    ase.io.write(src, frames, format="extxyz")
    path = small(project, "mag", source=str(src), fraction=1.0, epochs=2, lr=1e-3,
                 task="stress_weight = 0.0\nmagmom_weight = 1.0")
    assert cli.main(["--preset", str(path), "--plain"]) == 0, capsys.readouterr().err
    (run_dir,) = [d for d in (project / "logs").iterdir() if (d / "events.jsonl").is_file()]
    epochs = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, EpochEnd)]
    m = [e.metrics["val_magmom_mae"] for e in epochs]
    assert len(m) == 3 and m[0] > m[1] > m[2] and m[2] < 0.97 * m[0], m  # μB, epochs 0..2 (Huber: slow, steady)
    assert "train_magmom_mae" in epochs[-1].metrics
    fin = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, RunFinished)][-1]
    assert "test_magmom_mae" in fin.test_metrics
