"""Issue 26 (hostile inputs): splits, held-out leaks and sweep identity, checked before a run.

Items 3 (a test_source holding the training structures under new ids, for properties and
potential frames), 4 (a sweep name rerun with another preset) and 7 (own-data splits
checked only after the run folder exists). Every refusal is exit 2 with nothing written
under logs/; the inputs are generated here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from tui_ft import cli
from tui_ft.core.data.sources import check_source_splits, load_training_data, problems


def _crystals(n: int) -> list[Structure]:
    """``n`` distinct ordered crystals: rock salt and CsCl cells at different lattice constants."""
    out = []
    for k in range(n):
        a = 5.0 + 0.07 * k
        if k % 2:
            out.append(Structure(Lattice.cubic(a * 0.7), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
        else:
            out.append(Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4,
                                 [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                  [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]))
    return out


def _idprop(folder: Path, structures: list[Structure], prefix: str = "mp", *, bad: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, s in enumerate(structures):
        ident = f"{prefix}-{k}"
        s.to(filename=str(folder / f"{ident}.cif"))
        lines.append(f"{ident},{'oops' if bad else f'{-0.01 * k:.4f}'}")
    (folder / "id_prop.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _preset(project: Path, name: str, data: str) -> Path:
    p = project / "presets" / f"{name}.toml"
    p.write_text(f'[run]\nname = "{name}"\n\n[data]\n{data}\ntarget = "e_form"\n\n[finetune]\nmode = "head"\n\n'
                 '[train]\nepochs = 1\nbatch_size = 8\ndevice = "cpu"\n', encoding="utf-8")
    return p


def _refused(project: Path, preset: Path, capsys) -> str:
    """``tui-ft run PRESET`` exits 2 with no traceback and nothing under logs/; returns stderr."""
    capsys.readouterr()
    rc = cli.main(["run", str(preset), "--plain"])
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    logs = project / "logs"
    assert not logs.exists() or not [p for p in logs.iterdir() if not p.name.startswith(".")], list(logs.iterdir())
    return err


# ------------------------------------------------------------------ item 7: splits before the run folder


@pytest.mark.parametrize("rows, split", [(3, ""), (3, 'split = "random"'), (6, 'split = "random"'),
                                         (4, 'split = "random"\nfraction = 1.0')])
def test_too_few_own_rows_are_refused_before_the_run_folder(project, capsys, rows, split):
    _idprop(project / f"d{rows}", _crystals(rows))
    err = _refused(project, _preset(project, "few", f'source = "d{rows}"\n{split}'), capsys)
    assert f"d{rows}" in err and ("need at least" in err or "usable training rows" in err), err


def test_every_row_bad_with_skip_bad_rows_is_refused_before_the_run_folder(project, capsys):
    _idprop(project / "allbad", _crystals(12), bad=True)
    err = _refused(project, _preset(project, "allbad", 'source = "allbad"\nskip_bad_rows = true'), capsys)
    assert "none of the 12 rows is usable" in err and "not a number" in err


def test_matbench_file_whose_structures_are_all_unreadable_is_refused(project, capsys):
    entries = [{"lattice": {"matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 4]]}, "sites": [k, k + 1]} for k in range(10)]
    entries += [{"lattice": {"matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 4]]}, "sites": [{"species": 3}]}] * 2
    mb = project / "bad.json"
    mb.write_text(json.dumps({"index": [f"b{k}" for k in range(12)], "columns": ["structure", "e_form"],
                              "data": [[e, -0.1] for e in entries]}))
    err = _refused(project, _preset(project, "mbbad", 'source = "bad.json"'), capsys)
    assert "none of the 12 rows is usable" in err and "unreadable structure" in err
    assert len(err.strip().splitlines()) == 1, err  # one line, naming the file and the ids
    # the same file with a random split and with a test_source: checked too (not only the default fold)
    err = _refused(project, _preset(project, "mbbad2", 'source = "bad.json"\nsplit = "random"'), capsys)
    assert "none of the 12 rows is usable" in err


def test_enough_rows_pass_and_the_check_gives_the_runs_splits(tmp_path):
    ds, _ = load_training_data(_idprop(tmp_path / "ok", _crystals(20)), "e_form")
    s = check_source_splits(ds, split="random", test_fraction=0.2, seed=3)
    assert len(s.train) >= 5 and len(s.val) >= 1 and len(s.test) == 4
    assert not set(s.train.tolist()) & set(s.test.tolist())


# ------------------------------------------------------------------ item 3: held-out rows that are training rows


def test_test_source_with_the_training_structures_under_new_ids_is_refused(project, capsys):
    structures = _crystals(16)
    _idprop(project / "train", structures)
    # copies of four training structures under new ids, one shifted in origin and reordered (StructureMatcher)
    shifted = structures[2].copy()
    shifted.translate_sites(list(range(len(shifted))), [0.11, 0.23, 0.05])
    shifted = Structure.from_sites(list(reversed(shifted.sites)))
    leaked = [structures[0], structures[1], shifted, structures[3]]
    _idprop(project / "held", leaked, prefix="new")
    err = _refused(project, _preset(project, "leak", 'source = "train"\ntest_source = "held"'), capsys)
    for k in range(4):
        assert f"new-{k}: test row from" in err and f"training id 'mp-{k}'" in err, err
    # with skip_bad_rows the leaked rows are left out (and said), never scored as unseen
    ds, n = load_training_data(project / "train", "e_form", test_path=project / "held")
    assert n == 4 and sorted(ds.ids[r] for r in ds.bad_rows) == [f"new-{k}" for k in range(4)]
    # honest held-out structures are not flagged
    other = _crystals(22)[16:]
    shutil.rmtree(project / "held")
    _idprop(project / "held", other, prefix="new")
    ds, n = load_training_data(project / "train", "e_form", test_path=project / "held")
    assert n == 6 and not ds.bad_rows, problems(ds)


def _frames(path: Path, structures: list[Structure], prefix: str) -> Path:
    import ase.io
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for k, s in enumerate(structures):
        a = AseAtomsAdaptor.get_atoms(s)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.info["id"] = f"{prefix}{k}"
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_potential_test_frames_that_are_training_frames_are_refused(project, capsys):
    import numpy as np

    base = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    rng = np.random.default_rng(0)
    cells = []
    for _ in range(10):
        s = base.copy()
        s.perturb(0.05 + 0.05 * rng.random())
        cells.append(s)
    _frames(project / "train.extxyz", cells[:8], "t")
    _frames(project / "test.extxyz", [cells[1], cells[8], cells[2]], "h")  # two of them are training frames
    p = project / "presets" / "pot.toml"
    p.write_text('[run]\nname = "pot"\n[data]\nsource = "train.extxyz"\ntest_source = "test.extxyz"\n'
                 '[task]\nkind = "potential"\nenergy_weight = 1.0\nforce_weight = 1.0\nstress_weight = 0.0\n'
                 '[finetune]\nmode = "full"\n[train]\nepochs = 1\ndevice = "cpu"\n', encoding="utf-8")
    err = _refused(project, p, capsys)
    assert "(id h0): the same structure as training id 't1'" in err, err
    assert "(id h2): the same structure as training id 't2'" in err
    assert "h1" not in err.replace("(id h0)", "").replace("(id h2)", "")
    # the shared function: exact frames only (a rattled neighbour of a trajectory is not a copy)
    from tui_ft.core.data.leaks import find_leaks

    assert find_leaks(cells[:8], [cells[1], cells[8]], matcher=False) == {0: 1}


# ------------------------------------------------------------------ item 4: a sweep has an identity


optuna = pytest.importorskip("optuna")


def _sweep_preset(project: Path, name: str, space: str) -> Path:
    from conftest import demo_preset_text

    p = project / "presets" / f"{name}.toml"
    p.write_text(demo_preset_text("sw", epochs=1) + f'\n[sweep]\nname = "sw"\ntrials = 1\nseed = 1\n\n[sweep.space]\n{space}\n',
                 encoding="utf-8")
    return p


def test_a_sweep_name_rerun_with_another_space_is_refused(project):
    # a trial whose preset the pre-run check refuses (2 training rows left by fraction = 0.01)
    first = _sweep_preset(project, "sw_a", '"data.fraction" = { choice = [0.01] }')
    out = subprocess.run([sys.executable, "-m", "tui_ft", "--preset", str(first)], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("trial "))
    assert " refused " in line and "usable training rows" in line and "pending" not in line, line
    # the same sweep name with another space: refused before any trial, the study untouched
    second = _sweep_preset(project, "sw_b", '"data.fraction" = { choice = [0.02] }')
    out = subprocess.run([sys.executable, "-m", "tui_ft", "--preset", str(second)], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "was run with another preset" in out.stderr and "sweep.space" in out.stderr, out.stderr
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{project / 'logs' / '.sweeps' / 'sw' / 'study.db'}")
    assert len(study.get_trials()) == 1
    assert study.user_attrs["preset"]["sweep"]["space"] == {"data.fraction": {"choice": [0.01]}}
