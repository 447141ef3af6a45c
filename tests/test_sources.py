"""Data sources: CIF/POSCAR folders with id_prop.csv, extxyz, CSV; splits; units; malformed inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_demo_forms

from tui_ft.core.data.dataset import DataError, load_matbench, make_splits
from tui_ft.core.data.sources import (
    concat_datasets, detect_format, held_out_splits, load_source, load_structures, problems, random_split, summary,
)
from tui_ft.core.common.units import default_unit

N = 40  # demo rows used (fast to write and read)


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    """The first N demo rows in three forms: Matbench JSON, a CIF folder with id_prop.csv, an extxyz file."""
    return write_demo_forms(tmp_path_factory.mktemp("sources"), N)


def _same_structure(a, b) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False).fit(a, b)


def test_detect_format(demo_rows):
    assert detect_format(demo_rows["matbench"]) == "matbench"
    assert detect_format(demo_rows["cif"]) == "idprop"
    assert detect_format(demo_rows["xyz"]) == "ase"
    with pytest.raises(DataError, match="no such"):
        detect_format(demo_rows["root"] / "nope.xyz")


@pytest.mark.parametrize("form", ["cif", "xyz"])
def test_forms_load_same_rows_as_matbench(demo_rows, form):
    ref = load_source(demo_rows["matbench"], "e_form")
    ds = load_source(demo_rows[form], "e_form")
    assert ds.ids == ref.ids
    np.testing.assert_array_equal(ds.targets, ref.targets)
    assert ds.bad_rows == {}
    assert len(ds.sha256) == 64 and ds.sha256 != ref.sha256
    for i in range(len(ds)):
        got, want = ds.structures[i], ref.structures[i]
        assert got.composition == want.composition
        assert _same_structure(got, want), ds.ids[i]
        np.testing.assert_allclose(got.lattice.abc, want.lattice.abc, atol=1e-4)
    # the same splits, by id, for every fold
    for fold in range(5):
        a = make_splits(len(ref), fold=fold, exclude=sorted(ref.bad_rows))
        b = make_splits(len(ds), fold=fold, exclude=sorted(ds.bad_rows))
        for part in ("train", "val", "test"):
            assert [ref.ids[r] for r in getattr(a, part)] == [ds.ids[r] for r in getattr(b, part)]


def test_matbench_source_is_load_matbench(demo_rows):
    ds, ref = load_source(demo_rows["matbench"], "e_form"), load_matbench(demo_rows["matbench"], "e_form")
    assert ds.ids == ref.ids and ds.sha256 == ref.sha256
    np.testing.assert_array_equal(ds.targets, ref.targets)


def test_folder_hash_follows_content(demo_rows, tmp_path):
    import shutil

    a = load_source(demo_rows["cif"], "e_form")
    copy = tmp_path / "copy"
    shutil.copytree(demo_rows["cif"], copy)
    assert load_source(copy, "e_form").sha256 == a.sha256  # names and bytes, not the folder's path
    first = a.ids[0]
    (copy / f"{first}.cif").write_text((copy / f"{first}.cif").read_text() + "\n")
    assert load_source(copy, "e_form").sha256 != a.sha256


def test_poscar_and_vasp_files_and_alignn_names(demo_rows, tmp_path):
    from pymatgen.io.vasp import Poscar

    rows = demo_rows["rows"][:6]
    d = tmp_path / "vasp"
    d.mkdir()
    lines = []
    for k, (ident, s, y) in enumerate(rows):
        if k % 2:
            Poscar(s).write_file(d / f"{ident}.vasp")
            lines.append(f"{ident},{y}")
        else:  # ALIGNN lists the file name itself
            name = f"POSCAR-{ident}.vasp"
            Poscar(s).write_file(d / name)
            lines.append(f"{name},{y}")
    (d / "id_prop.csv").write_text("\n".join(lines) + "\n")
    ds = load_source(d, "e_form")
    assert ds.bad_rows == {}
    assert [ds.targets[i] for i in range(6)] == [y for _, _, y in rows]
    for i, (_, s, _) in enumerate(rows):
        assert _same_structure(ds.structures[i], s)


def test_csv_with_structure_column(demo_rows, tmp_path):
    rows = demo_rows["rows"][:5]
    lines = ["material_id,cif,e_form"] + [f"{i},{demo_rows['cif'] / (i + '.cif')},{y}" for i, _, y in rows]
    p = tmp_path / "table.csv"
    p.write_text("\n".join(lines) + "\n")
    ds = load_source(p, "e_form")
    assert detect_format(p) == "csv"
    assert ds.ids == [r[0] for r in rows] and ds.bad_rows == {}
    np.testing.assert_array_equal(ds.targets, [r[2] for r in rows])


def test_per_atom_divides_totals(demo_rows, tmp_path):
    import ase.io

    frames = ase.io.read(demo_rows["xyz"], index=":")
    for a in frames:
        a.info["total"] = a.info["e_form"] * len(a)
    p = tmp_path / "tot.extxyz"
    ase.io.write(p, frames, format="extxyz")
    ds = load_source(p, "total", per_atom=True)
    ref = load_source(demo_rows["xyz"], "e_form")
    np.testing.assert_allclose(ds.targets, ref.targets, atol=1e-12)
    raw = load_source(p, "total")
    assert np.any(np.abs(raw.targets - ref.targets) > 1e-6)  # some cells have more than one site


# ---------------------------------------------------------------- malformed inputs, reported by id


def _bad_folder(demo_rows, tmp_path, name="bad"):
    import shutil

    d = tmp_path / name
    shutil.copytree(demo_rows["cif"], d)
    return d


def _one_problem(ds, ident):
    probs = problems(ds)
    hits = [why for i, why in probs if i == ident]
    assert len(hits) >= 1, probs
    text = summary(ds)
    assert text.count("\n") == len(probs)  # a header line, then one line per left-out row
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(ident + ":"))
    return hits[0], line


def test_missing_cif(demo_rows, tmp_path):
    d = _bad_folder(demo_rows, tmp_path)
    victim = demo_rows["rows"][3][0]
    (d / f"{victim}.cif").unlink()
    ds = load_source(d, "e_form")
    why, line = _one_problem(ds, victim)
    assert "no structure file" in why and "line 4" in why
    assert list(ds.bad_rows) == [3]
    s = make_splits(len(ds), fold=0, exclude=sorted(ds.bad_rows))
    assert 3 not in set(s.train) | set(s.val) | set(s.test)


def test_cif_that_does_not_parse(demo_rows, tmp_path):
    d = _bad_folder(demo_rows, tmp_path)
    victim = demo_rows["rows"][5][0]
    (d / f"{victim}.cif").write_text("data_broken\n_cell_length_a oops\nthis is not a cif\n")
    ds = load_source(d, "e_form")
    why, _ = _one_problem(ds, victim)
    assert f"{victim}.cif" in why and "unreadable structure" in why
    assert list(ds.bad_rows) == [5]


def test_bad_number_and_missing_target_in_id_prop(demo_rows, tmp_path):
    d = _bad_folder(demo_rows, tmp_path)
    lines = (d / "id_prop.csv").read_text().splitlines()
    ids = [ln.split(",")[0] for ln in lines]
    lines[2] = f"{ids[2]},abc"
    lines[7] = f"{ids[7]},"
    (d / "id_prop.csv").write_text("\n".join(lines) + "\n")
    ds = load_source(d, "e_form")
    assert sorted(ds.bad_rows) == [2, 7]
    why, _ = _one_problem(ds, ids[2])
    assert "line 3" in why and "'abc' is not a number" in why
    why, _ = _one_problem(ds, ids[7])
    assert "line 8" in why


def test_malformed_csv_line_names_file_and_line(demo_rows, tmp_path):
    d = _bad_folder(demo_rows, tmp_path)
    lines = (d / "id_prop.csv").read_text().splitlines()
    lines[4] = lines[4] + ",extra"
    (d / "id_prop.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as ei:
        load_source(d, "e_form")
    msg = str(ei.value)
    assert "id_prop.csv, line 5" in msg and "expected 2 fields" in msg and "\n" not in msg


def test_duplicate_ids(demo_rows, tmp_path):
    d = _bad_folder(demo_rows, tmp_path)
    lines = (d / "id_prop.csv").read_text().splitlines()
    dup = lines[1].split(",")[0]
    lines.append(f"{dup},0.5")
    (d / "id_prop.csv").write_text("\n".join(lines) + "\n")
    ds = load_source(d, "e_form")
    assert sorted(ds.bad_rows) == [1, len(lines) - 1]
    why, _ = _one_problem(ds, dup)
    assert "duplicate id" in why and f"line {len(lines)}" in why


def test_extxyz_frame_without_target(demo_rows, tmp_path):
    import ase.io

    frames = ase.io.read(demo_rows["xyz"], index=":")
    del frames[4].info["e_form"]
    frames[6].info["e_form"] = "n/a"
    p = tmp_path / "bad.extxyz"
    ase.io.write(p, frames, format="extxyz")
    ds = load_source(p, "e_form")
    assert sorted(ds.bad_rows) == [4, 6]
    why, line = _one_problem(ds, frames[4].info["id"])
    assert "frame 4" in why and "no 'e_form' in atoms.info" in why
    why, _ = _one_problem(ds, frames[6].info["id"])
    assert "frame 6" in why and "not a number" in why


def test_unreadable_files_are_one_error(tmp_path):
    p = tmp_path / "junk.extxyz"
    p.write_text("3\nnot a header\nH 0 0\n")
    with pytest.raises(DataError, match=r"junk\.extxyz: not readable by ase\.io\.read"):
        load_source(p, "e_form")
    d = tmp_path / "empty"
    d.mkdir()
    (d / "id_prop.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_source(d, "e_form")


def test_structure_files_without_targets(demo_rows):
    files = sorted(demo_rows["cif"].glob("*.cif"))[:3]
    ds = load_structures(files)
    assert ds.ids == [f.name for f in files] and ds.bad_rows == {}
    assert np.isnan(ds.targets).all()
    folder = load_source(demo_rows["cif"].parent / "cif", "e_form", format=None)
    assert len(folder) == N


# ---------------------------------------------------------------- splits


def test_random_split_seeded_and_disjoint():
    a = random_split(100, 0.2, seed=3)
    b = random_split(100, 0.2, seed=3)
    c = random_split(100, 0.2, seed=4)
    assert all(np.array_equal(getattr(a, p), getattr(b, p)) for p in ("train", "val", "test"))
    assert not np.array_equal(a.test, c.test)
    assert len(a.test) == 20 and len(a.val) == 8 and len(a.train) == 72
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(100))
    d = random_split(100, 0.2, seed=3, exclude=[int(a.test[0]), int(a.train[0])])
    assert int(a.test[0]) not in d.test and int(a.train[0]) not in d.train
    with pytest.raises(ValueError):
        random_split(100, 1.5)


def test_separate_test_file(demo_rows, tmp_path):
    rows = demo_rows["rows"]
    full = load_source(demo_rows["matbench"], "e_form")
    test_part = tmp_path / "test.json"
    test_part.write_text(json.dumps({"index": [r[0] for r in rows[30:]], "columns": ["structure", "e_form"],
                                     "data": [[s.as_dict(), y] for _, s, y in rows[30:]]}))
    train_part = tmp_path / "train.extxyz"
    import ase.io

    ase.io.write(train_part, ase.io.read(demo_rows["xyz"], index=":30"), format="extxyz")
    tr, te = load_source(train_part, "e_form"), load_source(test_part, "e_form")
    ds = concat_datasets(tr, te)
    assert ds.ids == full.ids
    np.testing.assert_array_equal(ds.targets, full.targets)
    s = held_out_splits(len(tr), len(te), seed=1)
    assert [ds.ids[r] for r in s.test] == [r[0] for r in rows[30:]]
    assert set(s.train) | set(s.val) == set(range(30)) and len(s.val) == 3
    assert _same_structure(ds.structures[35], rows[35][1]) and _same_structure(ds.structures[2], rows[2][1])
    with pytest.raises(DataError, match="ids also in the training data") as ei:
        concat_datasets(full, te)
    assert rows[30][0] in str(ei.value)


def test_default_units():
    assert default_unit("e_form", "demo") == "eV/atom"
    assert default_unit("e_form", "matbench_mp_e_form") == "eV/atom"
    assert default_unit("e_form", "data/matbench_perovskites.json.gz") == "eV/unit cell"
    assert default_unit("gap pbe", "matbench_mp_gap") == "eV"
    assert default_unit("log10(K_VRH)", "matbench_log_kvrh") == "log10(GPa)"
    assert default_unit("exfoliation_en", "matbench_jdft2d") == "meV/atom"
    assert default_unit("last phdos peak", "matbench_phonons") == "cm^-1"
    assert default_unit("n", "matbench_dielectric") == ""
    assert default_unit("my_property", "mine.extxyz") == ""


def test_make_source_splits_entry_point(demo_rows, tmp_path):
    from tui_ft.core.data.sources import load_training_data, make_source_splits

    ds, held = load_training_data(demo_rows["matbench"], "e_form")
    assert held == 0
    a = make_source_splits(len(ds), fold=2, exclude=[0])
    b = make_splits(len(ds), fold=2, exclude=[0])
    assert all(np.array_equal(getattr(a, p), getattr(b, p)) for p in ("train", "val", "test"))
    r = make_source_splits(len(ds), split="random", test_fraction=0.25, seed=5, test_limit=4)
    assert np.array_equal(r.test, random_split(len(ds), 0.25, 5).test[:4])
    import ase.io

    test_file = tmp_path / "held.extxyz"
    frames = ase.io.read(demo_rows["xyz"], index=":")
    ase.io.write(test_file, frames[:5], format="extxyz")
    ase.io.write(tmp_path / "train.extxyz", frames[5:], format="extxyz")
    ds, held = load_training_data(tmp_path / "train.extxyz", "e_form", test_path=test_file)
    assert held == 5
    s = make_source_splits(len(ds), n_held_out=held, split="random")
    assert [ds.ids[i] for i in s.test] == [f.info["id"] for f in frames[:5]]
    with pytest.raises(ValueError, match="unknown split"):
        make_source_splits(len(ds), split="kfold")


def test_graph_cache_reads_folder_and_concatenated_datasets(demo_rows, tmp_path):
    """The engine's GraphCache works on these datasets: bad rows come back as failures with their reason."""
    import shutil

    from chgnet.graph import CrystalGraphConverter

    from tui_ft.core.data.graphcache import GraphCache
    from tui_ft.core.common.paths import Paths

    d = tmp_path / "f"
    shutil.copytree(demo_rows["cif"], d)
    victim = demo_rows["rows"][2][0]
    (d / f"{victim}.cif").unlink()
    conv = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3, verbose=False)
    paths = Paths(tmp_path / "proj")
    folder = load_source(d, "e_form")
    graphs, failed = GraphCache(folder, conv, paths).get(range(6))
    assert sorted(graphs) == [0, 1, 3, 4, 5] and list(failed) == [2] and "no structure file" in failed[2]
    mb = load_source(demo_rows["matbench"], "e_form")
    both = concat_datasets(folder, dataclasses.replace(mb, ids=[f"t{i}" for i in range(N)]))
    graphs, failed = GraphCache(both, conv, paths).get([1, 2, N + 1])
    assert sorted(graphs) == [1, N + 1] and list(failed) == [2]
    assert int(graphs[N + 1].atomic_number.shape[0]) == len(demo_rows["rows"][1][1])
