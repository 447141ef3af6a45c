"""Issue 26 (hostile inputs): readers that dropped, truncated or misnamed what they read.

Items 6 (rows dropped or truncated silently, POSCAR-<id> names, relative paths) and 14 (ids
that clash, messages that mislead), and the FIFO / no-targets part of item 3. Every input is
generated here; the FIFO runs in a subprocess under a timeout, so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from tui_ft.core.config.checks import load_and_check
from tui_ft.core.data.dataset import DataError
from tui_ft.core.data.sources import (
    load_source,
    load_structures,
    load_training_data,
    problems,
)
from tui_ft.core.data.sources.common import read_structure


def _nacl(a: float = 5.6) -> Structure:
    return Structure(Lattice.cubic(a), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                      [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])


def _structures(n: int) -> list[Structure]:
    """``n`` distinct ordered crystals (rock salt at different lattice constants)."""
    return [_nacl(5.0 + 0.1 * k) for k in range(n)]


def _idprop(folder: Path, rows: list[tuple[str, str]], *, names: dict[str, str] | None = None,
            structures: list[Structure] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    structures = structures or _structures(len(rows))
    for (ident, _), s in zip(rows, structures):
        name = (names or {}).get(ident, f"{ident}.cif")
        fmt = "poscar" if "POSCAR" in name or "CONTCAR" in name else "cif"
        (folder / name).write_text(s.to(fmt=fmt), encoding="utf-8")
    (folder / "id_prop.csv").write_text("".join(f"{i},{y}\n" for i, y in rows), encoding="utf-8")
    return folder


def _preset(project: Path, name: str, data: str) -> Path:
    p = project / "presets" / f"{name}.toml"
    p.write_text(f'[run]\nname = "{name}"\n\n[data]\n{data}\ntarget = "e_form"\n\n[finetune]\nmode = "head"\n\n'
                 '[train]\nepochs = 1\nbatch_size = 8\ndevice = "cpu"\n', encoding="utf-8")
    return p


def _check(path: Path) -> tuple[object, list[str]]:
    errs: list[str] = []
    return load_and_check(str(path), errs.append), errs


# ------------------------------------------------------------------ item 6: rows dropped or truncated


@pytest.mark.parametrize("value", ["", "nan", "NaN", "inf"])
def test_first_idprop_row_with_a_bad_target_is_reported_not_taken_for_a_header(tmp_path, value):
    rows = [("mp-0000", value)] + [(f"mp-{k:04d}", f"{-0.1 * k:.3f}") for k in range(1, 6)]
    folder = _idprop(tmp_path / "d", rows)
    # the file of mp-0000 is missing too, the case the old header rule skipped unreported
    (folder / "mp-0000.cif").unlink()
    ds = load_source(folder, "e_form")
    assert len(ds) == 6 and ds.ids[0] == "mp-0000"
    why = dict(problems(ds))["mp-0000"]
    assert "line 1" in why and ("not a" in why or "no 'e_form' target" in why)


def test_a_real_header_line_is_still_skipped(tmp_path):
    rows = [(f"mp-{k}", f"{-0.1 * k:.3f}") for k in range(5)]
    folder = _idprop(tmp_path / "d", rows)
    text = (folder / "id_prop.csv").read_text()
    (folder / "id_prop.csv").write_text("material_id,e_form\n" + text)
    ds = load_source(folder, "e_form")
    assert ds.ids == [r[0] for r in rows] and not ds.bad_rows


def test_poscar_with_more_coordinate_lines_than_its_counts_is_refused(tmp_path):
    lines = _nacl().to(fmt="poscar").splitlines()
    assert lines[6].split() == ["4", "4"]
    lines[6] = "1 1"  # 2 atoms counted, 8 coordinate lines
    bad = tmp_path / "POSCAR"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 11: the counts line \(line 7\) adds up to 2 atoms but 8"):
        read_structure(bad)
    # with velocities after a blank line (a CONTCAR) the right counts read fine
    good = tmp_path / "CONTCAR"
    ok = _nacl().to(fmt="poscar").splitlines()
    good.write_text("\n".join(ok + [""] + ["0.0 0.0 0.0"] * 8) + "\n")
    assert len(read_structure(good)) == 8
    # through a folder: the row is reported by id and line, not trained on as 2 atoms
    folder = _idprop(tmp_path / "d", [(f"s{k}", "-0.1") for k in range(5)])
    (folder / "s0.cif").unlink()
    (folder / "s0.vasp").write_text("\n".join(lines) + "\n")
    why = dict(problems(load_source(folder, "e_form")))["s0"]
    assert "adds up to 2 atoms" in why


def test_poscar_dash_id_names_are_recognised(tmp_path):
    rows = [(f"JVASP-{k}", f"{-0.1 * k:.3f}") for k in range(5)]
    names = {"JVASP-0": "POSCAR-JVASP-0", "JVASP-1": "POSCAR-JVASP-1.vasp", "JVASP-2": "CONTCAR_JVASP-2"}
    folder = _idprop(tmp_path / "d", rows, names=names)
    ds = load_source(folder, "e_form")
    assert not ds.bad_rows, problems(ds)
    assert [len(s) for s in ds.structures] == [8] * 5


def test_relative_sources_are_the_project_roots(project, tmp_path, monkeypatch):
    rows = [(f"r{k}", f"{-0.1 * k:.3f}") for k in range(12)]
    _idprop(project / "mydata", rows)
    preset = _preset(project, "rel", 'source = "mydata"\nsplit = "random"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the root: TUI_FT_HOME names it
    loaded, errs = _check(preset)
    assert errs == [] and loaded is not None
    from tui_ft.core.data.dataset import preset_source

    assert preset_source("mydata") == project / "mydata"
    # a missing relative test_source names the place it looked for: the project root's
    preset2 = _preset(project, "rel2", 'source = "mydata"\ntest_source = "nothere"')
    loaded, errs = _check(preset2)
    assert loaded is None and len(errs) == 1
    assert "data.test_source" in errs[0] and str(project / "nothere") in errs[0]


# ------------------------------------------------------------------ item 3: FIFO, a source without targets


def test_fifo_as_test_source_or_source_is_refused_without_hanging(project, tmp_path):
    rows = [(f"f{k}", f"{-0.1 * k:.3f}") for k in range(12)]
    _idprop(project / "data12", rows)
    fifo = tmp_path / "held.extxyz"
    os.mkfifo(fifo)
    inner = _idprop(tmp_path / "fifofolder", rows[:6])
    (inner / "id_prop.csv").unlink()
    os.mkfifo(inner / "id_prop.csv")
    cases = {
        "fifotest": f'source = "data12"\ntest_source = "{fifo}"',
        "fifosource": f'source = "{fifo}"',
        "fifoidprop": f'source = "{inner}"',
    }
    for name, data in cases.items():
        preset = _preset(project, name, data)
        try:
            out = subprocess.run([sys.executable, "-m", "tui_ft", "run", str(preset), "--plain"],
                                 capture_output=True, text=True, timeout=240, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name}: reading a FIFO hangs")
        assert out.returncode == 2, (name, out.stderr[-2000:])
        assert "a pipe (FIFO)" in out.stderr and "Traceback" not in out.stderr, (name, out.stderr[-2000:])
    assert not (project / "logs").exists() or not any((project / "logs").iterdir())


def test_folder_without_id_prop_as_test_source_is_refused(tmp_path):
    rows = [(f"t{k}", f"{-0.1 * k:.3f}") for k in range(8)]
    train = _idprop(tmp_path / "train", rows, structures=_structures(8))
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    for k, s in enumerate(_structures(12)[8:]):
        s.to(filename=str(cifs / f"x{k}.cif"))
    with pytest.raises(DataError, match="data.test_source: this folder has no id_prop.csv, so it has no 'e_form'"):
        load_training_data(train, "e_form", test_path=cifs)


# ------------------------------------------------------------------ item 14: ids and messages


def test_predict_ids_are_paths_under_the_common_folder(tmp_path):
    for run, a in (("r1", 5.5), ("r2", 5.7)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "CONTCAR").write_text(_nacl(a).to(fmt="poscar"))
    ds = load_structures([tmp_path / "r1" / "CONTCAR", tmp_path / "r2" / "CONTCAR"])
    assert ds.ids == ["r1/CONTCAR", "r2/CONTCAR"] and not ds.bad_rows
    # a lone file and the files of one folder keep their names
    assert load_structures([tmp_path / "r1" / "CONTCAR"]).ids == ["CONTCAR"]
    assert load_structures([tmp_path / "r1"]).ids == ["CONTCAR"]


def test_partial_occupancy_says_disorder(tmp_path):
    s = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    s.to(filename=str(tmp_path / "alloy.cif"))
    with pytest.raises(ValueError, match=r"partial occupancy \(disorder\) at site 0") as exc:
        read_structure(tmp_path / "alloy.cif")
    assert "specie" not in str(exc.value)
    # a Matbench entry with a disordered site: left out by id with the same word
    import json

    from tui_ft.core.data.dataset import load_matbench

    mb = tmp_path / "mb.json"
    rows = [s.as_dict()] + [x.as_dict() for x in _structures(5)]
    mb.write_text(json.dumps({"index": [f"m{k}" for k in range(6)], "columns": ["structure", "e_form"],
                              "data": [[d, -0.1] for d in rows]}))
    ds = load_matbench(mb, "e_form")
    assert ds.structures[0] is None and "partial occupancy (disorder)" in ds.bad_rows[0]


def test_devices_and_folders_in_a_csv_are_named_for_what_they_are(tmp_path):
    (tmp_path / "sub").mkdir()
    good = tmp_path / "good.cif"
    _nacl().to(filename=str(good))
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(f"id,structure_file,e_form\na,/dev/zero,0.1\nb,sub,0.2\nc,{good.name},0.3\nd,nope.cif,0.4\n")
    why = dict(problems(load_source(csv_path, "e_form")))
    assert "device, not a regular file" in why["a"]
    assert "is a folder, not a file" in why["b"]
    assert "c" not in why and "no such file" in why["d"]


def test_list_in_cluster_extra_is_one_line_in_toml_words(project):
    preset = project / "presets" / "cl.toml"
    preset.write_text('[run]\nname = "cl"\n[data]\nsource = "demo"\n[finetune]\nmode = "head"\n'
                      '[cluster]\nextra = { account = ["a", "b"] }\n')
    loaded, errs = _check(preset)
    assert loaded is None and len(errs) == 1, errs
    assert "cluster.extra.account: expected a string, an integer or true or false" in errs[0]
    assert ".str" not in errs[0] and ".int" not in errs[0]


def test_extxyz_source_and_test_source_without_ids_do_not_clash(tmp_path):
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    def write(path: Path, structures: list[Structure]) -> Path:
        frames = []
        for k, s in enumerate(structures):
            a = AseAtomsAdaptor.get_atoms(s)
            a.info = {"e_form": -0.1 * k}
            frames.append(a)
        ase.io.write(path, frames, format="extxyz")
        return path

    allx = _structures(12)
    train = write(tmp_path / "train.extxyz", allx[:8])
    test = write(tmp_path / "test.extxyz", allx[8:])
    ds, n = load_training_data(train, "e_form", test_path=test)
    assert n == 4 and ds.ids[:2] == ["frame-0", "frame-1"]
    assert ds.ids[8:] == [f"test.extxyz:frame-{k}" for k in range(4)]
    assert not ds.bad_rows
