"""Matbench file reading, folds, splits and the graph cache (real CHGNet converter)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tui_ft.core.data.dataset import DataError, load_matbench, make_splits, matbench_folds, read_columns
from tui_ft.core.data.graphcache import GraphCache
from tui_ft.core.data.demo import build_demo_dataset
from tui_ft.core.common.paths import Paths



def _write(path: Path, obj) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(obj, fh)
    else:
        path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo_obj():
    return build_demo_dataset()


def test_folds_follow_matbench_kfold():
    n = 103
    folds = matbench_folds(n)
    ref = list(KFold(n_splits=5, shuffle=True, random_state=18012019).split(np.arange(n)))
    assert len(folds) == 5
    for (tr, te), (rtr, rte) in zip(folds, ref):
        assert tr.tolist() == rtr.tolist() and te.tolist() == rte.tolist()
    all_test = np.concatenate([te for _, te in folds])
    assert sorted(all_test.tolist()) == list(range(n))


@pytest.mark.parametrize("fold", range(5))
@pytest.mark.parametrize("fraction", [1.0, 0.1])
def test_splits_disjoint_and_sized(fold, fraction):
    n = 500
    s = make_splits(n, fold=fold, fraction=fraction, val_fraction=0.1, seed=3)
    tr, va, te = set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())
    assert not (tr & va) and not (tr & te) and not (va & te)
    _, test_rows = matbench_folds(n)[fold]
    assert te == set(test_rows.tolist())
    assert len(va) == 40  # 10% of the 400-row training part
    assert len(tr) == round(fraction * 360)


def test_validation_set_does_not_depend_on_fraction():
    a = make_splits(1000, fold=0, fraction=1.0, seed=0)
    b = make_splits(1000, fold=0, fraction=0.1, seed=0)
    assert a.val.tolist() == b.val.tolist()
    assert set(b.train.tolist()) < set(a.train.tolist())


def test_seed_changes_subsample_and_excluded_rows_leave_every_split():
    a = make_splits(400, fold=1, fraction=0.5, seed=0)
    b = make_splits(400, fold=1, fraction=0.5, seed=1)
    assert a.train.tolist() != b.train.tolist()
    bad = [int(a.train[0]), int(a.val[0]), int(a.test[0])]
    c = make_splits(400, fold=1, fraction=0.5, seed=0, exclude=bad)
    for r in bad:
        assert r not in c.train and r not in c.val and r not in c.test
    assert len(c.test) == len(a.test) - 1


def test_test_limit_keeps_file_order_prefix():
    s = make_splits(300, fold=2, test_limit=7)
    full = make_splits(300, fold=2)
    assert s.test.tolist() == full.test.tolist()[:7]


def test_read_matbench_json_and_gz_any_target_name(tmp_path, demo_obj):
    obj = dict(demo_obj)
    obj["columns"] = ["structure", "my_prop"]
    obj.pop("about", None)
    for name in ("d.json", "d.json.gz"):
        p = _write(tmp_path / name, obj)
        assert read_columns(p) == ["structure", "my_prop"]
        ds = load_matbench(p, "my_prop")
        assert len(ds) == len(obj["data"])
        assert ds.ids[0] == obj["index"][0]
        assert ds.targets[0] == pytest.approx(obj["data"][0][1])
        assert not ds.bad_rows


def test_read_errors_are_clear(tmp_path, demo_obj):
    p = _write(tmp_path / "d.json", {k: demo_obj[k] for k in ("index", "columns", "data")})
    with pytest.raises(DataError, match="no column 'band_gap'"):
        load_matbench(p, "band_gap")
    empty = _write(tmp_path / "e.json", {"index": [], "columns": ["structure", "e_form"], "data": []})
    with pytest.raises(ValueError, match="empty dataset"):
        read_columns(empty)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not a readable"):
        load_matbench(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no such data file"):
        load_matbench(tmp_path / "missing.json")


def test_unparsable_rows_are_recorded_not_dropped(tmp_path, demo_obj):
    obj = {k: demo_obj[k] for k in ("index", "columns", "data")}
    obj = json.loads(json.dumps(obj))
    obj["data"][3][0] = {"not": "a structure"}
    obj["data"][5][1] = None
    ds = load_matbench(_write(tmp_path / "d.json", obj))
    assert set(ds.bad_rows) == {3, 5}
    assert len(ds) == len(obj["data"])


def test_graph_cache_builds_once_and_reports_failures(tmp_path, demo_obj):
    from chgnet.graph import CrystalGraphConverter
    from pymatgen.core import Lattice, Structure

    obj = {k: demo_obj[k] for k in ("index", "columns", "data")}
    obj = json.loads(json.dumps(obj))
    # an isolated atom (no neighbour within 6 A) cannot become a CHGNet graph
    lonely = Structure(Lattice.cubic(15.0), ["Na"], [[0, 0, 0]])
    obj["data"][2][0] = lonely.as_dict()
    ds = load_matbench(_write(tmp_path / "d.json", obj))
    conv = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)
    paths = Paths(tmp_path)
    rows = list(range(12))
    c1 = GraphCache(ds, conv, paths)
    g1, f1 = c1.get(rows)
    assert set(f1) == {2} and "graph conversion failed" in f1[2]
    assert set(g1) == set(rows) - {2}
    assert c1.built == 12 and c1.hits == 0
    c2 = GraphCache(ds, conv, paths)
    g2, f2 = c2.get(rows)
    assert c2.built == 0 and c2.hits == 12 and set(f2) == {2}
    for r in g1:
        assert g1[r].atomic_number.tolist() == g2[r].atomic_number.tolist()
        assert g1[r].atom_graph.tolist() == g2[r].atom_graph.tolist()
    # chunks load with weights_only=True (plain tensors, no pickled classes)
    import torch

    for chunk in c2.dir.glob("chunk-*.pt"):
        torch.load(chunk, weights_only=True)


def test_dev_file_reads_as_matbench(dev_data):
    ds = load_matbench(dev_data, "e_form")
    assert len(ds) == 5000 and not ds.bad_rows
    s = make_splits(len(ds), fold=0, fraction=1.0, val_fraction=0.1)
    assert (len(s.train), len(s.val), len(s.test)) == (3600, 400, 1000)


def test_graph_cache_packed_chunks_round_trip(tmp_path, demo_obj):
    """Chunks are written packed (a few big tensors); what comes back equals what was
    converted, also for a graph with an empty bond graph and after adding rows to a chunk."""
    import torch
    from chgnet.graph import CrystalGraphConverter
    from pymatgen.core import Lattice, Structure

    from tui_ft.core.data.graphcache import PACKED

    obj = {k: demo_obj[k] for k in ("index", "columns", "data")}
    obj = json.loads(json.dumps(obj))
    # bonds up to 6 A but none within the 3 A bond-graph cutoff: a 1-D empty bond_graph
    obj["data"][4][0] = Structure(Lattice.cubic(4.0), ["Na"], [[0, 0, 0]]).as_dict()
    ds = load_matbench(_write(tmp_path / "d.json", obj))
    conv = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)
    fresh = {r: conv(ds.structures[r], graph_id=str(r), mp_id=ds.ids[r]).to_dict() for r in range(10)}
    assert fresh[4]["bond_graph"].dim() == 1 and fresh[4]["bond_graph"].numel() == 0
    paths = Paths(tmp_path)
    GraphCache(ds, conv, paths).get(range(6))
    GraphCache(ds, conv, paths).get(range(10))  # a packed chunk read back, four rows added, packed again
    c = GraphCache(ds, conv, paths)
    graphs, failed = c.get(range(10))
    assert c.hits == 10 and not failed
    (chunk_file,) = c.dir.glob("chunk-*.pt")
    raw = torch.load(chunk_file, weights_only=True)
    assert raw["format"] == PACKED and raw["graphs"] == {} and len(raw["rows"]) == 10
    for r in range(10):
        got = graphs[r].to_dict()
        for k, v in fresh[r].items():
            if isinstance(v, torch.Tensor):
                assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v.detach()), (r, k)
            else:
                assert got[k] == v, (r, k)


@pytest.mark.parametrize("indent", [None, 2])
def test_row_by_row_reader_matches_json(tmp_path, demo_obj, indent):
    """The reader that holds structure dicts compactly gives what ``json.load`` gives,
    whatever the whitespace and key order; broken JSON is one clear DataError."""
    obj = {"data": demo_obj["data"][:7], "columns": ["structure", "e_form"], "index": demo_obj["index"][:7],
           "extra": {"a": [1, 2]}}
    obj = json.loads(json.dumps(obj))  # tuples (pbc) as JSON lists
    p = tmp_path / "d.json"
    p.write_text(json.dumps(obj, indent=indent), encoding="utf-8")
    ds = load_matbench(p)
    assert ds.ids == obj["index"] and ds.targets.tolist() == [r[1] for r in obj["data"]]
    for r in range(7):
        assert ds.structures.raw(r) == obj["data"][r][0]
    ds.structures.release(range(7))  # dropped once their graphs are cached, read again if asked for
    assert ds.structures.raw(5) == obj["data"][5][0]
    assert len(ds.structures[6]) == len(obj["data"][6][0]["sites"])
    text = p.read_text(encoding="utf-8")
    for broken in (text[:-1], text + "x", text.replace('"columns"', '"columns" "x"', 1)):
        (tmp_path / "b.json").write_text(broken, encoding="utf-8")
        with pytest.raises(DataError, match="not a readable Matbench JSON file"):
            load_matbench(tmp_path / "b.json")


# ---------------------------------------------------------------- bad data (issue 12, causes 9 and 10)


def _small(demo_obj, n=12):
    """The first ``n`` demo rows as a fresh copy (the tests edit it)."""
    return json.loads(json.dumps({"index": [f"r{i}" for i in range(n)], "columns": list(demo_obj["columns"]),
                                  "data": demo_obj["data"][:n]}))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o.update(index=5), "index: expected a list, got int"),
        (lambda o: o.update(columns="structure"), "columns: expected a list, got str"),
        (lambda o: o.update(data={"x": 1}), "data: expected a list, got dict"),
        (lambda o: o.update(columns=["structure", "structure"]), "column 'structure' appears more than once"),
        (lambda o: o["index"].__setitem__(2, [1]), "index[2]: expected an id"),
        (lambda o: o["data"].__setitem__(4, o["data"][4] + [1.0]), "data[4] (id 'r4'): row has 3 values but there are 2 columns"),
        (lambda o: o["data"].__setitem__(1, "row"), "data[1] (id 'r1'): expected a row"),
    ],
)
def test_table_shape_errors_are_one_data_error(demo_obj, tmp_path, edit, message):
    obj = _small(demo_obj)
    edit(obj)
    with pytest.raises(DataError) as ei:
        load_matbench(_write(tmp_path / "bad.json", obj))
    assert message in str(ei.value) and str(ei.value).startswith(str(tmp_path / "bad.json"))


def test_cell_problems_are_left_out_by_row(demo_obj, tmp_path):
    """What is inside a cell is a row problem: the row is left out with its reason, the rest is used."""
    from tui_ft.core.data.dataset import MAX_ABS_TARGET

    obj = _small(demo_obj)
    obj["data"][0][0] = None
    obj["data"][1][0] = 42
    obj["data"][2][1] = 1e300
    obj["data"][3][1] = -(MAX_ABS_TARGET * 2)
    obj["data"][4][1] = MAX_ABS_TARGET  # at the bound: usable
    obj["data"][5][0]["sites"][0]["species"] = [{"element": "Og", "occu": 1}]
    obj["index"][7] = obj["index"][6]  # r6 twice
    ds = load_matbench(_write(tmp_path / "cells.json", obj))
    bad = ds.bad_rows
    assert "no structure" in bad[0]
    assert "structure is a int" in bad[1]
    assert "beyond" in bad[2] and "beyond" in bad[3] and 4 not in bad
    assert "Og (Z=118)" in bad[5]
    assert bad[6] == "duplicate id 'r6' (also row 7)" and bad[7] == "duplicate id 'r6' (also row 6)"
    assert set(ds.bad_structures) == {0, 1, 5, 6, 7} and set(ds.bad_targets) == {2, 3}


def test_target_bound_and_parse_number():
    from tui_ft.core.data.dataset import MAX_ABS_TARGET, check_target
    from tui_ft.core.data.sources.common import parse_number

    assert check_target(-1.5) == -1.5 and check_target(MAX_ABS_TARGET) == MAX_ABS_TARGET
    for bad in (1e300, -1e7, float("nan"), float("inf"), None, "1.0", True, 10**400):
        with pytest.raises(ValueError):
            check_target(bad)
    assert parse_number(" 2.5 ") == 2.5
    with pytest.raises(ValueError, match="beyond"):
        parse_number("1e300")


def test_check_dataset_counts_usable_rows(demo_obj, tmp_path):
    from tui_ft.core.data.dataset import check_dataset

    obj = _small(demo_obj, 40)
    ds = load_matbench(_write(tmp_path / "ok.json", obj))
    s = check_dataset(ds, fold=0)
    assert len(s.train) >= 5 and len(s.val) and len(s.test)
    for r in obj["data"][6:]:
        r[1] = None
    with pytest.raises(DataError, match=r"only \d usable training rows in fold 0 .*r6: bad target"):
        check_dataset(load_matbench(_write(tmp_path / "few.json", obj)), fold=0)
    for r in obj["data"]:
        r[1] = "x"
    with pytest.raises(DataError, match="none of the 40 rows is usable"):
        check_dataset(load_matbench(_write(tmp_path / "none.json", obj)), fold=0)


def test_structure_checks_before_conversion():
    from pymatgen.core import Lattice, Structure

    from tui_ft.core.data.graphstore import MIN_DISTANCE, structure_problem

    ok = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert structure_problem(ok) is None
    pair = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    assert "overlapping atoms: sites 0 (Na) and 1 (Cl) are 0.2 A apart" in structure_problem(pair)
    same = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    assert "0 A apart" in structure_problem(same)
    image = Structure(Lattice([[MIN_DISTANCE / 2, 0, 0], [0, 8, 0], [0, 0, 8]]), ["H"], [[0, 0, 0]])
    assert "its periodic image" in structure_problem(image)
    am = Structure(Lattice.cubic(4.0), ["Am"], [[0, 0, 0]])
    assert "Am (Z=95)" in structure_problem(am)
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 1e-4]]), ["Na"], [[0, 0, 0]])
    assert "degenerate lattice" in structure_problem(flat)


def test_convert_items_and_cached_graphs_are_checked(demo_obj, tmp_path, monkeypatch):
    """convert_items leaves out a structure CHGNet cannot use, with its reason; a graph read from a
    cache chunk written before the checks (no "checks" marker) is checked when it is read."""
    import torch
    from chgnet.graph import CrystalGraphConverter

    from tui_ft.core.data.graphstore import convert_items, graph_problem

    conv = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)
    good = demo_obj["data"][0][0]
    am = json.loads(json.dumps(good))
    am["sites"][0]["species"] = [{"element": "Am", "occu": 1}]
    lap = json.loads(json.dumps(good))
    extra = dict(lap["sites"][0])
    extra["abc"] = [x + 0.01 for x in extra["abc"]]
    extra.pop("xyz", None)
    lap["sites"].append(extra)
    out = convert_items(conv, [(0, "a", good, None), (1, "b", am, None), (2, "c", lap, None)])
    assert out[0][1] is not None and out[0][2] is None
    assert out[1][1] is None and "Am (Z=95)" in out[1][2]
    assert out[2][1] is None and "overlapping atoms" in out[2][2]
    arrays = dict(out[0][1])
    assert graph_problem(arrays) is None
    assert "Z=118" in graph_problem({**arrays, "atomic_number": np.array([118], dtype=np.int32)})
    assert "not finite" in graph_problem({**arrays, "lattice": np.full((3, 3), np.nan, dtype=np.float32)})

    # an old cache: chunk 0 written without the marker and holding a graph with Z=118
    obj = _small(demo_obj, 8)
    path = _write(tmp_path / "old.json", obj)
    monkeypatch.delenv("TUI_FT_CACHE", raising=False)  # this test rewrites its cache: keep it private
    paths = Paths(tmp_path / "proj")
    ds = load_matbench(path)
    cache = GraphCache(ds, conv, paths)
    graphs, failed = cache.get(range(8))
    assert not failed and len(graphs) == 8
    (cfile,) = list(cache.dir.glob("chunk-*.pt"))
    c = torch.load(cfile, weights_only=True)
    assert c.pop("checks") == 1
    z = c["packed"]["atomic_number"]
    z[0] = 118  # row 0's first atom
    torch.save(c, cfile)
    graphs, failed = GraphCache(load_matbench(path), conv, paths).get(range(8))
    assert list(failed) == [0] and "Z=118" in failed[0] and 0 not in graphs and len(graphs) == 7


def test_old_chunk_extended_is_checked_before_it_gets_the_marker(demo_obj, tmp_path, monkeypatch):
    """A chunk written before the checks and then extended with new rows is rewritten with the
    "checks" marker: its old graphs are checked first, so a bad one is recorded as failed."""
    import torch
    from chgnet.graph import CrystalGraphConverter

    monkeypatch.delenv("TUI_FT_CACHE", raising=False)
    conv = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)
    path = _write(tmp_path / "ext.json", _small(demo_obj, 8))
    paths = Paths(tmp_path / "proj")
    cache = GraphCache(load_matbench(path), conv, paths)
    cache.get(range(4))
    (cfile,) = list(cache.dir.glob("chunk-*.pt"))
    c = torch.load(cfile, weights_only=True)
    del c["checks"]
    c["packed"]["atomic_number"][0] = 99  # row 0
    torch.save(c, cfile)
    graphs, failed = GraphCache(load_matbench(path), conv, paths).get(range(2, 8))  # builds rows 4..7
    assert not failed and len(graphs) == 6
    c = torch.load(cfile, weights_only=True)
    assert c["checks"] == 1 and "Z=99" in c["failed"]["0"] and "0" not in c["rows"] and "0" not in map(str, c["rows"])
    graphs, failed = GraphCache(load_matbench(path), conv, paths).get(range(8))
    assert list(failed) == [0] and len(graphs) == 7
