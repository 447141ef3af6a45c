"""The offline demo dataset: deterministic, Matbench layout, CHGNet-convertible."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from tui_ft.core.data import demo
from tui_ft.core.data.dataset import N_FOLDS, load_matbench, make_splits
from tui_ft.core.common.paths import Paths


@pytest.fixture(scope="module")
def built():
    return demo.build_demo_dataset()


def test_build_is_deterministic(built, tmp_path):
    assert demo.build_demo_dataset() == built
    a = demo.ensure_demo_dataset(Paths(tmp_path / "a"))
    b = demo.ensure_demo_dataset(Paths(tmp_path / "b"))
    assert a.name == "demo_e_form.json.gz" and a.parent == tmp_path / "a" / "data"
    assert a.read_bytes() == b.read_bytes() == demo.demo_bytes(built)


def test_entries(built):
    assert built["columns"] == ["structure", "e_form"]
    assert 220 <= len(built["index"]) <= 260
    assert len(set(built["index"])) == len(built["index"])
    assert all(i.startswith("demo-") for i in built["index"])
    ys = [row[1] for row in built["data"]]
    assert all(isinstance(y, float) and math.isfinite(y) for y in ys)
    assert -5.0 < min(ys) and max(ys) < 1.5
    assert all(1 <= len(row[0]["sites"]) <= 8 for row in built["data"])
    about = built["about"]
    assert about["version"] == demo.DEMO_VERSION and about["synthetic"] is True
    assert "NOT DFT" in about["warning"]


def test_labels_follow_formula():
    from pymatgen.core import Lattice, Structure

    # rocksalt NaCl at the radius sum: every bond Na-Cl, CN 6, no strain
    a = 2 * (1.8 + 1.0)
    s = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Na", "Cl"],
                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert demo.demo_label(s) == pytest.approx(round(-0.4 * (3.16 - 0.93) ** 2, 4), abs=1e-4)
    # an element: no ionic part, only strain
    fcc = Structure(Lattice.cubic(4.0), ["Cu"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    d = 4.0 / math.sqrt(2)
    assert demo.demo_label(fcc) == pytest.approx(round(20 * (d / 2.7 - 1) ** 2, 4), abs=1e-4)


def test_isolated_atom_rejected():
    from pymatgen.core import Lattice, Structure

    with pytest.raises(ValueError, match="no neighbour"):
        demo.demo_label(Structure(Lattice.cubic(7.0), ["Na"], [[0, 0, 0]]))


def test_every_structure_converts_with_chgnet():
    from chgnet.model import CHGNet

    conv = CHGNet.load(verbose=False).graph_converter
    for ident, s, _proto in demo.demo_structures():
        g = conv(s, graph_id=ident)
        assert g.atom_frac_coord.shape[0] == len(s), ident


def test_file_loads_and_folds(tmp_path):
    paths = Paths(tmp_path)
    path = demo.ensure_demo_dataset(paths)
    ds = load_matbench(path, "e_form")
    assert len(ds) == len(demo.build_demo_dataset()["index"])
    assert not ds.bad_rows
    assert np.isfinite(ds.targets).all()
    seen_test: list[int] = []
    for fold in range(N_FOLDS):
        sp = make_splits(len(ds), fold=fold, fraction=0.5, seed=1)
        assert len(sp.train) and len(sp.val) and len(sp.test)
        seen_test.extend(sp.test.tolist())
    assert sorted(seen_test) == list(range(len(ds)))


def test_ensure_rebuilds_other_version_and_keeps_current(tmp_path, monkeypatch):
    paths = Paths(tmp_path)
    path = demo.ensure_demo_dataset(paths)
    good = path.read_bytes()
    # a current file is reused without rebuilding
    monkeypatch.setattr(demo, "demo_bytes", lambda obj=None: pytest.fail("rebuilt a current file"))
    assert demo.ensure_demo_dataset(paths) == path
    monkeypatch.undo()
    # an old version (or garbage) is rebuilt
    obj = json.loads(gzip.decompress(good))
    obj["about"]["version"] = demo.DEMO_VERSION - 1
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    demo.ensure_demo_dataset(paths)
    assert path.read_bytes() == good
    path.write_bytes(b"not gzip")
    demo.ensure_demo_dataset(paths)
    assert path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
