"""Matbench file reading, folds, splits and the graph cache (real CHGNet converter)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import KFold

from tui_ft.core.data import (
    DataError,
    GraphCache,
    load_matbench,
    make_splits,
    matbench_folds,
    read_columns,
)
from tui_ft.core.demo import build_demo_dataset
from tui_ft.core.paths import Paths



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

    from tui_ft.core.data import PACKED

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
