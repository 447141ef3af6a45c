"""A potential preset's data passes the checks made before a run (``config.checks.load_and_check``,
what ``tui-ft --preset`` / ``run`` / ``ensemble`` / ``matbench`` call) whatever the frame format:
an mlearn or MPtrj JSON is not read as a property table (which refused it: "expected pandas
'split' JSON"), a folder tree of VASP runs is not asked for an ``id_prop.csv``. A missing source is
still refused at its line. Generated inputs; the VASP files are ase's test outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_frames import _ase_testdata, _multi_step_vasprun, _sheared_si, _write_rows

from tui_ft.core.config.checks import load_and_check
from tui_ft.core.config.presets import Preset


def _preset(root: Path, source: str, extra: str = "") -> Path:
    p = root / "pot.toml"
    p.write_text(f'[run]\nname = "pot"\n[data]\nsource = "{source}"\n{extra}[task]\nkind = "potential"\n'
                 'energy_weight = 1.0\nforce_weight = 1.0\nstress_weight = 0.1\n[finetune]\nmode = "full"\n'
                 '[train]\nepochs = 1\ndevice = "cpu"\n', encoding="utf-8")
    return p


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(path: Path) -> tuple[object, list[str]]:
    errs: list[str] = []
    return load_and_check(str(path), errs.append), errs


def test_mlearn_json_gz_training_and_test_files_pass(root):
    rows = [_sheared_si(plane, -0.005 * (1 + k), 20.0 + k, at)  # 15 distinct cells
            for k, (plane, at) in enumerate([("xy", 0), ("yz", 1), ("xz", 2)] * 5)]
    _write_rows(root / "train.json.gz", rows[:12])
    _write_rows(root / "test.json.gz", rows[12:])
    loaded, errs = _check(_preset(root, "train.json.gz", 'test_source = "test.json.gz"\n'))
    assert errs == [] and isinstance(loaded, Preset), errs


def test_mptrj_json_passes(root):
    import json

    from pymatgen.core import Structure

    s = Structure.from_dict(_sheared_si("xy", -0.01, 20.0, 0)["structure"])
    data = {"mp-1": {f"mp-1-{k}": {"structure": s.as_dict(), "uncorrected_total_energy": -43.0 - 0.01 * k,
                                   "corrected_total_energy": -43.0 - 0.01 * k, "energy_per_atom": (-43.0 - 0.01 * k) / 8,
                                   "ef_per_atom": 0.0, "force": [[0.01 * k, 0.0, 0.0]] * 8,
                                   "stress": [[1.0 * k, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], "magmom": None,
                                   "mp_id": "mp-1"} for k in range(12)}}
    (root / "mptrj.json").write_text(json.dumps(data), encoding="utf-8")
    loaded, errs = _check(_preset(root, "mptrj.json"))
    assert errs == [] and isinstance(loaded, Preset), errs


def test_a_folder_tree_of_vasp_runs_passes(root):
    d = _ase_testdata()
    for name in ("a", "b", "c"):
        _multi_step_vasprun(d / "vasprun_pstress.xml", root / "calcs" / name / "vasprun.xml", n=4)
    loaded, errs = _check(_preset(root, "calcs"))
    assert errs == [] and isinstance(loaded, Preset), errs


def test_a_missing_potential_source_is_refused_at_its_line(root):
    loaded, errs = _check(_preset(root, "nowhere.json.gz"))
    assert loaded is None and len(errs) == 1, errs
    assert "pot.toml:4: data.source" in errs[0] and "nowhere.json.gz" in errs[0] and "not found" in errs[0], errs
