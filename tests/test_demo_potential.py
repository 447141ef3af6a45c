"""The offline potential demo: EMT-labelled frames, deterministic extxyz, labels that EMT reproduces."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from tui_ft.core.data import demo_potential as dp
from tui_ft.core.common.paths import Paths

# the documented ranges (docs/DEMO_DATA.md, "The potential demo")
N_FRAMES = (100, 160)
N_ATOMS_PER_FRAME = (4, 8)


@pytest.fixture(scope="module")
def frames():
    return dp.build_frames()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return dp.ensure_demo_potential(Paths(tmp_path_factory.mktemp("demo_pot")))


def test_two_builds_give_the_same_bytes(frames, written):
    # ``written`` and ``frames`` are two independent builds
    assert written.name == "demo_potential.extxyz" and written.parent.name == "data"
    assert written.read_bytes() == dp.demo_potential_bytes(frames)
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temp files left
    # another seed (one metal, to stay fast): same frames and ids, other positions
    cu = [a for a in frames if a.get_chemical_symbols()[0] == "Cu"]
    other = dp._frames_for("Cu", 0, seed=1)
    assert [a.info["id"] for a in other] == [a.info["id"] for a in cu]
    assert all(a.info["seed"] == 1 for a in other)
    assert not np.array_equal(other[0].positions, cu[0].positions)


def test_counts_ids_groups(frames):
    assert N_FRAMES[0] <= len(frames) <= N_FRAMES[1]
    assert all(N_ATOMS_PER_FRAME[0] <= len(a) <= N_ATOMS_PER_FRAME[1] for a in frames)
    ids = [a.info["id"] for a in frames]
    assert len(set(ids)) == len(ids)
    kinds = collections.Counter(a.info["config_type"] for a in frames)
    assert set(kinds) == set(dp.CONFIG_TYPES)
    metals = {a.get_chemical_symbols()[0] for a in frames}
    assert metals == set(dp.METALS)
    for a in frames:
        sym = a.get_chemical_symbols()[0]
        assert set(a.get_chemical_symbols()) == {sym}
        assert a.info["id"].startswith(f"{sym}-{a.info['config_type']}-")
        assert a.info["labels"] == dp.LABELS and "not DFT" in a.info["labels"]
    # one MD trajectory per metal, all its snapshots in one group, and no other frame in it
    by_group = collections.defaultdict(list)
    for a in frames:
        by_group[a.info["group"]].append(a)
    for sym in dp.METALS:
        md = [a for a in frames if a.info["config_type"] == "md" and a.get_chemical_symbols()[0] == sym]
        assert len(md) == dp.MD_SNAPSHOTS
        assert {a.info["group"] for a in md} == {f"{sym}-md"}
        assert len(by_group[f"{sym}-md"]) == len(md)
    # rattle and strain frames are independent: each is its own group
    for a in frames:
        if a.info["config_type"] in ("rattle", "strain"):
            assert a.info["group"] == a.info["id"]


def test_every_frame_has_energy_forces_stress(frames):
    for a in frames:
        res = a.calc.results
        assert set(res) >= {"energy", "forces", "stress"}, a.info["id"]
        assert np.isfinite(res["energy"])
        assert res["forces"].shape == (len(a), 3) and np.isfinite(res["forces"]).all()
        assert res["stress"].shape == (6,) and np.isfinite(res["stress"]).all()
        assert "magmoms" not in res  # EMT gives none
    # strain frames are rattled, so no frame has all-zero forces; the strains show in the stress
    assert all(np.abs(a.get_forces()).max() > 1e-3 for a in frames)
    xy = {a.info["id"]: a.get_stress()[5] for a in frames if a.info["config_type"] == "strain"}
    assert xy["Cu-strain-005"] * xy["Cu-strain-006"] < 0  # e_xy = +2 % and -2 %: opposite shear stress


def _emt(atoms):
    b = atoms.copy()
    b.calc = EMT()
    return b.get_potential_energy(), b.get_forces(), b.get_stress(voigt=True)


def test_labels_are_emt(frames):
    picks = [frames[i] for i in range(0, len(frames), 11)]
    assert {a.info["config_type"] for a in picks} == set(dp.CONFIG_TYPES)
    for a in picks:
        e, f, s = _emt(a)
        assert a.get_potential_energy() == pytest.approx(e, abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), f, rtol=0, atol=1e-8)
        np.testing.assert_allclose(a.get_stress(), s, rtol=0, atol=1e-8)


def test_file_reads_back_with_the_same_numbers(frames, written):
    back = read(written, index=":", format="extxyz")
    assert len(back) == len(frames)
    for a, b in zip(frames, back):
        assert b.info["id"] == a.info["id"] and b.info["group"] == a.info["group"]
        assert b.info["config_type"] == a.info["config_type"] and b.info["desc"] == a.info["desc"]
        assert b.get_chemical_symbols() == a.get_chemical_symbols()
        np.testing.assert_array_equal(b.positions, a.positions)  # rounded to the 8 decimals extxyz keeps
        np.testing.assert_array_equal(np.array(b.cell), np.array(a.cell))
        assert b.get_potential_energy() == a.get_potential_energy()
        np.testing.assert_array_equal(b.get_stress(), a.get_stress())
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=0, atol=1e-8)  # 8 decimals in the file
    # and EMT run on what the file holds gives the file's labels
    for b in back[3::29]:
        e, f, s = _emt(b)
        assert b.get_potential_energy() == pytest.approx(e, abs=1e-8)
        np.testing.assert_allclose(b.get_forces(), f, rtol=0, atol=1e-8)
        np.testing.assert_allclose(b.get_stress(), s, rtol=0, atol=1e-8)


def test_ensure_reuses_current_and_rebuilds_other(frames, written, monkeypatch):
    good = written.read_bytes()
    paths = Paths(written.parent.parent)
    monkeypatch.setattr(dp, "build_frames", lambda seed=0: pytest.fail("rebuilt a current file"))
    assert dp.ensure_demo_potential(paths) == written
    # an old version (or garbage) is rebuilt; the rebuild reuses the fixture's build to stay fast
    monkeypatch.setattr(dp, "build_frames", lambda seed=0: frames)
    v = dp.DEMO_POTENTIAL_VERSION
    written.write_text(good.decode().replace(f"demo_version={v} ", f"demo_version={v - 1} ", 1))
    assert dp._file_stamp(written) == (v - 1, 0)
    dp.ensure_demo_potential(paths)
    assert written.read_bytes() == good
    written.write_bytes(b"not extxyz")
    dp.ensure_demo_potential(paths)
    assert written.read_bytes() == good
    assert [p.name for p in written.parent.iterdir()] == [written.name]
