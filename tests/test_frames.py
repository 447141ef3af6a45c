"""DFT frame readers (tui_ft.core.data.frames): one frame per format against numbers written out by hand,
stress unit / sign / order conversions, bad frames, the pretrained CHGNet's stress against real VASP
outputs, and the mlearn files in ../shared (skipped when absent; ``TUI_FT_SHARED`` names another folder).

The VASP files are the real outputs ase ships in its wheel (``ase/test/testdata/vasp``): a Ni18
OUTCAR (VASP 5, ISPIN=2) and two vasprun.xml (NaCl DFPT, diamond with PSTRESS).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tui_ft.core.data.frames import (
    ASE_ORDER, VASP_ORDER, FrameError, check_frames, detect_format, ev_a3_to_gpa, load_frames, need_labels,
    vasp_kbar_to_gpa, voigt_to_matrix,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUI_FT_SHARED", ROOT.parent / "shared"))
MLEARN = SHARED / "data" / "mlearn"
EV_A3 = 160.21766208  # GPa per eV/A^3


def _ase_testdata() -> Path:
    import ase

    d = Path(ase.__file__).parent / "test" / "testdata" / "vasp"
    if not (d / "OUTCAR_example_1").is_file() or not (d / "vasprun_pstress.xml").is_file():
        pytest.skip(f"ase's wheel ships no VASP test files here ({d})")
    return d


def _si_dict() -> dict:
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(5.43), ["Si"] * 8, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                                    [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    return s.as_dict()


# ---------------------------------------------------------------- conversions


def test_conversions_units_signs_orders():
    # VASP kbar, positive = compressive -> GPa, ASE sign (positive = tensile)
    np.testing.assert_allclose(vasp_kbar_to_gpa([[10.0, 0, 0], [0, -20.0, 0], [0, 0, 5.0]]),
                               [[-1.0, 0, 0], [0, 2.0, 0], [0, 0, -0.5]])
    # eV/A^3 -> GPa (ase.units.GPa)
    np.testing.assert_allclose(ev_a3_to_gpa(0.01), 1.6021766208, rtol=1e-6)
    # Voigt orders: ASE xx yy zz yz xz xy, VASP xx yy zz xy yz zx
    m = voigt_to_matrix([1, 2, 3, 4, 5, 6], ASE_ORDER)
    np.testing.assert_array_equal(m, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
    m = voigt_to_matrix([1, 2, 3, 4, 5, 6], VASP_ORDER)
    np.testing.assert_array_equal(m, [[1, 4, 6], [4, 2, 5], [6, 5, 3]])
    np.testing.assert_array_equal(voigt_to_matrix([1, 2, 3, 4, 5, 6], "xx yy zz xy yz zx"), m)
    with pytest.raises(ValueError, match="does not name all six"):
        voigt_to_matrix([1, 2, 3, 4, 5, 6], "xx yy zz xy xy zx")
    assert need_labels("efs") == {"energy", "forces", "stress"}
    assert need_labels({"energy", "m"}) == {"energy", "magmom"}
    with pytest.raises(ValueError, match="unknown label 'charge'"):
        need_labels({"charge"})


def test_ase_reader_stress_matches_ase_get_stress(tmp_path):
    """The ase reader's stress is ase's own ``get_stress(voigt=False)`` in GPa (no sign flip)."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.emt import EMT

    a = bulk("Cu", "fcc", a=3.5, cubic=True)  # compressed: EMT's equilibrium is ~3.59 A
    a.rattle(0.05, seed=1)
    a.calc = EMT()
    want = a.get_stress(voigt=False) * EV_A3
    assert (np.diag(want) < 0).all()  # compressed cell: negative (compressive) stress in the ASE sign
    p = tmp_path / "cu.xyz"
    ase.io.write(p, a, format="extxyz")
    f = load_frames(p).frames[0]
    np.testing.assert_allclose(f.stress, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(f.forces, a.get_forces(), atol=1e-8)


# ---------------------------------------------------------------- one frame per reader

XYZ = """\
2
Lattice="0 2.715 2.715 2.715 0 2.715 2.715 2.715 0" Properties=species:S:1:pos:R:3:forces:R:3:magmoms:R:1 \
energy=-10.5 stress="0.01 0.004 0.005 0.004 0.02 0.006 0.005 0.006 0.03" config_type=bulk id=si-a pbc="T T T"
Si 0 0 0 0.1 -0.2 0.3 0.5
Si 1.3575 1.3575 1.3575 -0.1 0.2 -0.3 -0.5
2
Lattice="0 2.8 2.8 2.8 0 2.8 2.8 2.8 0" Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-9.75 \
REF_stress="0.01 0.02 0.03 0.004 0.005 0.006" pbc="T T T"
Si 0 0 0 1.5 0 0
Si 1.4 1.4 1.4 -1.5 0 0
"""


def test_ase_extxyz_frame(tmp_path):
    p = tmp_path / "si.xyz"
    p.write_text(XYZ)
    fs = load_frames(p)
    assert fs.fmt == "ase" and len(fs) == 2 and fs.bad == {}
    f = fs.frames[0]
    assert (f.id, f.group, f.where) == ("si-a", "bulk", f"{p} frame 0")
    assert f.energy == -10.5 and f.energy_per_atom == -5.25
    np.testing.assert_allclose(f.forces, [[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]])
    np.testing.assert_allclose(f.magmom, [0.5, -0.5])
    np.testing.assert_allclose(f.stress, np.array([[.01, .004, .005], [.004, .02, .006], [.005, .006, .03]]) * EV_A3)
    assert fs.labels() == {"energy": 1, "forces": 1, "stress": 1, "magmom": 1}  # frame 1 has REF_ keys only
    # MACE-like keys: six Voigt components in ASE order, eV/A^3
    g = load_frames(p, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress").frames[1]
    assert (g.id, g.group) == ("frame-1", "si.xyz")
    assert g.energy == -9.75 and g.magmom is None
    np.testing.assert_allclose(g.forces, [[1.5, 0, 0], [-1.5, 0, 0]])
    np.testing.assert_allclose(g.stress, np.array([[.01, .006, .005], [.006, .02, .004], [.005, .004, .03]]) * EV_A3)
    assert len(fs.sha256) == 64


def test_vasp_outcar_frame():
    """OUTCAR_example_1: ``in kB  -4.29429 -4.58894 -4.50342 0.50047 -0.94049 0.36481`` (xx yy zz xy yz zx,
    positive = compressive), energy(sigma->0) = -68.23102426, first force 0.030415 -0.114705 -0.460114."""
    p = _ase_testdata() / "OUTCAR_example_1"
    fs = load_frames(p)
    assert fs.fmt == "vasp" and len(fs) == 1
    f = fs.frames[0]
    assert (f.id, f.where) == ("OUTCAR_example_1#0", f"{p} ionic step 0")
    assert len(f.structure) == 18 and f.structure.composition.reduced_formula == "Ni"
    assert f.energy == pytest.approx(-68.23102426)
    np.testing.assert_allclose(f.forces[0], [0.030415, -0.114705, -0.460114])
    np.testing.assert_allclose(f.forces[1], [-0.455659, 1.097145, 0.261504])
    xx, yy, zz, xy, yz, zx = -0.1 * np.array([-4.29429, -4.58894, -4.50342, 0.50047, -0.94049, 0.36481])
    np.testing.assert_allclose(f.stress, [[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]], atol=1e-9)
    assert f.stress[0, 0] == pytest.approx(0.429429) and f.stress[1, 2] == pytest.approx(0.094049)


def _multi_step_vasprun(src: Path, dst: Path, n: int = 3) -> None:
    """vasprun_pstress.xml with its one ionic step repeated ``n`` times; step j has the calculation's
    e_fr_energy -20.23985977 - 0.01 j (ase's energy: that + the last SCF step's e_0 - e_fr, -0.00024158)
    and diagonal stress -165.99562580 + 10 j kbar. PSTRESS is set to 0: with PSTRESS = 1 kbar ase
    subtracts p*V (0.0071 eV here) from the energy."""
    text = src.read_text()
    text = text.replace('<i name="PSTRESS">      1.00000000</i>', '<i name="PSTRESS">      0.00000000</i>')
    a, b = text.index("<calculation>"), text.index("</calculation>") + len("</calculation>")
    block = text[a:b]
    steps = [block.replace("-20.23985977", f"{-20.23985977 - 0.01 * j:.8f}")
                  .replace("-165.99562580", f"{-165.99562580 + 10 * j:.8f}") for j in range(n)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text[:a] + "\n".join(steps) + text[b:])


def test_vasp_vasprun_steps_and_tree(tmp_path):
    d = _ase_testdata()
    root = tmp_path / "calcs"
    _multi_step_vasprun(d / "vasprun_pstress.xml", root / "relax" / "vasprun.xml")
    (root / "ni" / "sp").mkdir(parents=True)
    shutil.copy(d / "OUTCAR_example_1", root / "ni" / "sp" / "OUTCAR")
    one = load_frames(root / "relax" / "vasprun.xml")
    assert [f.id for f in one] == ["vasprun.xml#0", "vasprun.xml#1", "vasprun.xml#2"]
    f = one.frames[2]
    assert f.energy == pytest.approx(-20.26010135) and f.group == "relax"
    assert f.where == f"{root / 'relax' / 'vasprun.xml'} ionic step 2"
    np.testing.assert_allclose(f.stress, np.eye(3) * -0.1 * (-165.99562580 + 20), atol=1e-7)  # 14.599 GPa
    np.testing.assert_allclose(f.forces, 0.0, atol=1e-12)
    assert f.structure.composition.reduced_formula == "C" and len(f.structure) == 2
    assert [f.id for f in load_frames(root / "relax" / "vasprun.xml", vasp_steps="last")] == ["vasprun.xml#2"]
    assert [f.id for f in load_frames(root / "relax" / "vasprun.xml", vasp_steps=2)] == ["vasprun.xml#0", "vasprun.xml#2"]
    tree = load_frames(root)
    assert tree.fmt == "vasp" and [(f.id, f.group) for f in tree] == [
        ("ni/sp/OUTCAR#0", "ni/sp"), ("relax/vasprun.xml#0", "relax"), ("relax/vasprun.xml#1", "relax"),
        ("relax/vasprun.xml#2", "relax")]
    assert tree.labels() == {"energy": 4, "forces": 4, "stress": 4, "magmom": 0}
    assert tree.sha256 != one.sha256 and len(tree.sha256) == 64
    with pytest.raises(FrameError, match="vasp_steps: expected 'all', 'last' or a whole number >= 1, got 0"):
        load_frames(root, vasp_steps=0)
    (root / "broken").mkdir()
    (root / "broken" / "vasprun.xml").write_text("<modeling><generator>")
    with pytest.raises(FrameError, match=r"broken/vasprun.xml: not readable as a VASP output"):
        load_frames(root)


def test_mptrj_frame(tmp_path):
    s = _si_dict()
    forces = [[0.01 * i, -0.02 * i, 0.0] for i in range(8)]
    entry = {"structure": s, "uncorrected_total_energy": -43.0, "corrected_total_energy": -43.4,
             "energy_per_atom": -5.425, "force": forces, "stress": [[10.0, 1.0, 2.0], [1.0, -20.0, 3.0], [2.0, 3.0, 5.0]],
             "magmom": [0.1, -0.2, 0, 0, 0, 0, 0, 0.3], "mp_id": "mp-149"}
    no_stress = {**entry, "stress": None, "magmom": None, "corrected_total_energy": None}
    p = tmp_path / "mptrj.json"
    p.write_text(json.dumps({"mp-149": {"mp-149-0-0": entry, "mp-149-0-1": no_stress}}))
    fs = load_frames(p)
    assert fs.fmt == "mptrj" and len(fs) == 2
    f = fs.frames[0]
    assert (f.id, f.group, f.where) == ("mp-149-0-0", "mp-149", f"{p} frame 0 (mp-149/mp-149-0-0)")
    assert f.energy == -43.4
    np.testing.assert_allclose(f.forces, forces)
    np.testing.assert_allclose(f.stress, [[-1.0, -0.1, -0.2], [-0.1, 2.0, -0.3], [-0.2, -0.3, -0.5]])
    np.testing.assert_allclose(f.magmom, [0.1, -0.2, 0, 0, 0, 0, 0, 0.3])
    g = fs.frames[1]
    assert g.energy == pytest.approx(-5.425 * 8) and g.stress is None and g.magmom is None  # from energy_per_atom
    assert load_frames(p, energy_kind="uncorrected").frames[0].energy == -43.0


def test_mlearn_frame_and_shear_order(tmp_path):
    s = _si_dict()
    rows = [{"structure": s, "group": "AIMD-NVT", "description": "Snapshot 3 of 32 of AIMD NVT simulation at 300 K",
             "outputs": {"energy": -43.21, "forces": [[0.5, 0, -0.5]] * 8, "virial_stress": [10, 20, 30, 4, 5, 6]}}]
    p = tmp_path / "Si_tiny.json.gz"
    with gzip.open(p, "wt") as fh:
        json.dump(rows, fh)
    fs = load_frames(p)
    assert fs.fmt == "mlearn"
    f = fs.frames[0]
    assert (f.id, f.group, f.energy) == ("frame-0", "AIMD-NVT", -43.21)
    assert f.energy_per_atom == pytest.approx(-43.21 / 8)
    np.testing.assert_allclose(f.forces, [[0.5, 0, -0.5]] * 8)
    # no sheared cell tells the file's shear order: VASP's xy yz zx; x -0.1 (kbar, VASP sign -> GPa, ASE sign)
    np.testing.assert_allclose(f.stress, [[-1.0, -0.4, -0.6], [-0.4, -2.0, -0.5], [-0.6, -0.5, -3.0]])
    assert fs.read_with == {"shear_order": "xy yz zx"} and "VASP's order" in fs.notes[0]
    g = load_frames(p, shear_order="yz xz xy", group_by="trajectory").frames[0]
    np.testing.assert_allclose(g.stress, [[-1.0, -0.6, -0.5], [-0.6, -2.0, -0.4], [-0.5, -0.4, -3.0]])
    assert g.group == "AIMD NVT simulation at 300 K"
    with pytest.raises(FrameError, match="shear_order"):
        load_frames(p, shear_order="xx yy zz")


def _sheared_si(plane: str, eps: float, shear_kbar: float, at: int, a: float = 5.43) -> dict:
    """A cubic Si cell sheared in one plane (lattice row i gets component j: tensor shear strain
    eps), with its stress (kbar, VASP sign) in shear position ``at`` (0-2); xx yy zz 1, 2, 3 kbar."""
    d = _si_dict()
    i, j = {"xy": (1, 0), "yz": (2, 1), "xz": (2, 0)}[plane]
    m = [[a, 0.0, 0.0], [0.0, a, 0.0], [0.0, 0.0, a]]
    m[i][j] = 2 * eps * a
    d["lattice"]["matrix"] = m
    shear = [0.0, 0.0, 0.0]
    shear[at] = shear_kbar
    return {"structure": d, "group": "Elastic",
            "outputs": {"energy": -43.0, "forces": [[0.0, 0.0, 0.0]] * 8, "virial_stress": [1, 2, 3, *shear]}}


def _write_rows(path: Path, rows: list) -> Path:
    with gzip.open(path, "wt") as fh:
        json.dump(rows, fh)
    return path


@pytest.mark.parametrize("order", ["xy yz zx", "xy zx yz", "yz xz xy"])
def test_mlearn_shear_order_is_told_by_singly_sheared_cells(tmp_path, order):
    """mlearn's Si files keep VASP's shear order, its Mo files xy xz yz: the reader tells a file's
    order from its cells sheared in one plane (a strain eps < 0 answered by -0.1 x kbar < 0 GPa,
    ~100 GPa per unit of strain), reads every frame with it and says so; a slab (its cell sheared,
    its small surface stress anywhere) does not vote."""
    names = order.split()
    plane_of = {"xy": "xy", "yz": "yz", "zx": "xz", "xz": "xz"}
    rows = [_sheared_si(plane_of[n], -0.02, 40.0, k) for k, n in enumerate(names)]  # 40 kbar = -4 GPa at eps -0.02
    slab = _sheared_si("xy", -0.1, 3.0, names.index("xy") - 1 if names.index("xy") else 2)  # G 1.5 GPa: no vote
    p = _write_rows(tmp_path / "m.json.gz", [slab] + rows)
    fs = load_frames(p)
    assert fs.read_with == {"shear_order": order.replace("zx", "xz")} or \
        fs.read_with == {"shear_order": " ".join(plane_of[n] for n in names)}
    assert "told by 3 singly sheared cells" in fs.notes[0]
    for k, n in enumerate(names, start=1):  # each cell's stress lands in its own plane: -4 GPa there
        i, j = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2)}[plane_of[n]]
        st = fs.frames[k].stress
        assert st[i, j] == st[j, i] == pytest.approx(-4.0)
        assert np.count_nonzero(st - np.diag(np.diag(st))) == 2
    # one cell's plane tells one position; the other two follow VASP's relative order
    one = load_frames(_write_rows(tmp_path / "one.json.gz", [rows[0]]))
    assert "the two positions no cell speaks for" in one.notes[0]


def test_mlearn_shear_order_against_the_cells(tmp_path):
    """A given shear_order that the sheared cells contradict is refused with the frame, the plane and
    the order the cells tell; an order they agree with is read as given; cells that split their
    votes refuse "auto" (the order must be given then)."""
    rows = [_sheared_si("xy", -0.02, 40.0, 0), _sheared_si("xz", -0.02, 40.0, 1), _sheared_si("yz", -0.02, 40.0, 2)]
    p = _write_rows(tmp_path / "mo_like.json.gz", rows)
    with pytest.raises(FrameError) as e:
        load_frames(p, shear_order="xy yz zx")
    msg = str(e.value)
    assert f"{p} frame 1:" in msg and "sheared in the xz plane only" in msg and "shear position 2" in msg
    assert "'xy xz yz'" in msg
    ok = load_frames(p, shear_order="xy zx yz")
    assert "shear_order as given; 3 singly sheared cells agree" in ok.notes[0]
    split = _write_rows(tmp_path / "split.json.gz", [_sheared_si("xy", -0.02, 40.0, 0), _sheared_si("xy", -0.02, 40.0, 1)])
    with pytest.raises(FrameError, match="do not tell the order"):
        load_frames(split)


def test_mlearn_test_source_is_read_with_the_training_files_shear_order(tmp_path):
    """A test file whose cells tell only part of the order (mlearn's Mo_test: two xy-sheared cells)
    is read with the order the training file told, checked against its own cells."""
    from types import SimpleNamespace

    from tui_ft.core.task.potential import read_frames

    train = _write_rows(tmp_path / "train.json.gz",
                        [_sheared_si("xy", -0.02, 40.0, 0), _sheared_si("xz", -0.02, 40.0, 1), _sheared_si("yz", -0.02, 40.0, 2)])
    test = _write_rows(tmp_path / "test.json.gz", [_sheared_si("xy", -0.03, 60.0, 0)])
    cfg = SimpleNamespace(format="auto", energy_key="", forces_key="", stress_key="", magmom_key="",
                          vasp_steps="all", shear_order=None)
    fs = read_frames(train, cfg)
    assert fs.read_with == {"shear_order": "xy xz yz"}
    assert read_frames(test, cfg).read_with == {"shear_order": "xy yz xz"}  # alone: VASP's for the rest
    followed = read_frames(test, cfg, like=fs)
    assert followed.read_with == {"shear_order": "xy xz yz"}
    assert "(the order told for train.json.gz; 1 singly sheared cell agrees)" in followed.notes[0], followed.notes


def test_asedb_frame(tmp_path):
    import ase.db
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    a = bulk("Si", "diamond", 5.43)
    a.calc = SinglePointCalculator(a, energy=-10.8, forces=[[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]],
                                   stress=[0.001, 0.002, 0.003, 0.0004, 0.0005, 0.0006], magmoms=[0.0, 0.0])
    p = tmp_path / "si.db"
    with ase.db.connect(p) as db:
        db.write(a, name="si-0", config_type="md-300K", data={"REF_energy": -10.9})
        db.write(a)
    fs = load_frames(p)
    assert fs.fmt == "asedb" and len(fs) == 2
    f = fs.frames[0]
    assert (f.id, f.group, f.where) == ("si-0", "md-300K", f"{p} row 1")
    assert f.energy == -10.8
    np.testing.assert_allclose(f.forces, [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    np.testing.assert_allclose(f.stress, np.array([[1, .6, .5], [.6, 2, .4], [.5, .4, 3]]) * 1e-3 * EV_A3, rtol=1e-9)
    np.testing.assert_allclose(f.magmom, [0, 0])
    assert (fs.frames[1].id, fs.frames[1].group) == ("row-2", "si.db")
    assert load_frames(p, energy_key="REF_energy").frames[0].energy == -10.9


def test_detect_format_and_options(tmp_path):
    (tmp_path / "a.json").write_text(" [ ]")
    (tmp_path / "b.json").write_text('{"mp-1": {}}')
    (tmp_path / "c.extxyz").write_text(XYZ)
    assert detect_format(tmp_path / "a.json") == "mlearn"
    assert detect_format(tmp_path / "b.json") == "mptrj"
    assert detect_format(tmp_path / "c.extxyz") == "ase"
    assert detect_format(tmp_path) == "vasp"
    (tmp_path / "vasprun.xml.relax1").write_text("")
    assert detect_format(tmp_path / "vasprun.xml.relax1") == "vasp"
    (tmp_path / "train.db").write_text("")
    assert detect_format(tmp_path / "train.db") == "asedb"
    with pytest.raises(FrameError, match="no such file or folder"):
        load_frames(tmp_path / "nope.xyz")
    with pytest.raises(FrameError, match="the ase reader has no option vasp_steps"):
        load_frames(tmp_path / "c.extxyz", vasp_steps="last")
    with pytest.raises(FrameError, match="unknown frame format 'cif'"):
        load_frames(tmp_path / "c.extxyz", fmt="cif")
    with pytest.raises(FrameError, match=r"a.json: no frames"):
        load_frames(tmp_path / "a.json")


# ---------------------------------------------------------------- bad frames


def test_bad_frames_one_line_each(tmp_path):
    s = _si_dict()
    good = {"energy": -43.0, "forces": [[0, 0, 0]] * 8, "virial_stress": [1, 2, 3, 0, 0, 0]}
    rows = [
        {"structure": s, "group": "g", "outputs": good},
        {"structure": s, "group": "g", "outputs": {**good, "forces": [[0, 0, 0]] * 7}},  # atom count
        {"structure": s, "group": "g", "outputs": {**good, "energy": float("nan")}},  # NaN
        {"structure": s, "group": "g", "outputs": {k: v for k, v in good.items() if k != "virial_stress"}},  # missing
        {"structure": s, "group": "g", "outputs": {**good, "virial_stress": [1, 2, 3, 4, 5]}},  # shape
        {"structure": s, "group": "g", "outputs": {**good, "forces": [[0, 0, float("inf")]] * 8}},  # inf
        {"structure": {"sites": "no"}, "group": "g", "outputs": good},  # unreadable structure: left out on reading
    ]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(rows))
    fs = load_frames(p)
    assert len(fs) == 6 and list(fs.bad) == ["frame-6"]
    assert fs.bad["frame-6"].startswith(f"{p} frame 6: field structure: not a pymatgen Structure")
    want = {
        1: "field forces: expected shape (8, 3), got (7, 3)",
        2: "field energy: not a finite number (nan)",
        3: "field stress: missing",
        4: "field stress: expected shape (3, 3), got (5,)",
        5: "field forces: not finite at (0, 2) (inf)",
    }
    for k, msg in want.items():
        one = dataclass_subset(fs, [0, k])
        with pytest.raises(FrameError) as err:
            check_frames(one, "efs")
        assert str(err.value) == f"{p} frame {k}: {msg}"
        assert "\n" not in str(err.value)
    with pytest.raises(FrameError, match=rf"^{p} frame 1: field forces: .* \(and 4 more bad frames; skip_bad"):
        check_frames(fs, "efs")
    kept = check_frames(fs, "efs", skip_bad=True)
    assert [f.id for f in kept] == ["frame-0"]
    assert sorted(kept.bad) == ["frame-1", "frame-2", "frame-3", "frame-4", "frame-5", "frame-6"]
    lines = kept.summary().splitlines()
    assert lines[0] == f"{p}: 6 frames left out:" and len(lines) == 7
    assert f"  {p} frame 1: field forces: expected shape (8, 3), got (7, 3)" in lines
    # only what is needed is checked: energy alone leaves out the NaN energy only
    assert [f.id for f in check_frames(fs, {"energy"}, skip_bad=True)] == ["frame-0", "frame-1", "frame-3",
                                                                          "frame-4", "frame-5"]
    with pytest.raises(FrameError, match=r"no frame has energy, magmom"):
        check_frames(fs, "em", skip_bad=True)


def dataclass_subset(fs, keep):
    import dataclasses

    return dataclasses.replace(fs, frames=[fs.frames[i] for i in keep])


def test_bad_frames_on_reading(tmp_path):
    """Left out on reading, with the reason: a duplicate id (both frames), a molecule without a cell."""
    frame_a = "\n".join(XYZ.splitlines()[:4]).replace("id=si-a", "id=dup") + "\n"
    molecule = '2\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"\nH 0 0 0\nH 0 0 0.74\n'
    p = tmp_path / "mixed.xyz"
    p.write_text(frame_a + XYZ.split("\n", 4)[4] + frame_a + molecule)  # frames: dup, frame-1, dup, H2
    fs = load_frames(p)
    assert [f.id for f in fs] == ["frame-1"]
    assert fs.bad["dup"] == f"{p} frame 2: duplicate id 'dup' (also {p} frame 0)"
    assert fs.bad["frame-3"] == (f"{p} frame 3: not a periodic crystal (pbc=[False, False, False], "
                                 "cell volume 0 A^3); CHGNet needs a lattice")
    # files that cannot be read at all: one FrameError naming the file
    broken = tmp_path / "broken.json"
    broken.write_text('[{"structure": ')
    with pytest.raises(FrameError, match=r"broken.json: not a JSON file \(JSONDecodeError"):
        load_frames(broken)
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not\na frame file\n")
    with pytest.raises(FrameError, match=r"junk.xyz: not readable by ase.io.read"):
        load_frames(junk)
    flat = tmp_path / "flat.json"
    flat.write_text('{"a": 1}')
    with pytest.raises(FrameError, match=r"flat.json: not the MPtrj layout"):
        load_frames(flat)


# ---------------------------------------------------------------- the pretrained CHGNet on real VASP stress


def test_pretrained_chgnet_stress_sign_and_order():
    """CHGNet's ``s`` (GPa, ASE sign) against the frames' stress on ase's real VASP outputs: same sign on the
    diagonal (Ni18 OUTCAR, NaCl vasprun), and the Ni18 shear components (the only file with shear) closer in
    the order the reader gives than with VASP's order taken as ASE's (the mistake to rule out)."""
    d = _ase_testdata()
    if not (d / "vasprun_dfpt.xml").is_file():
        pytest.skip(f"no vasprun_dfpt.xml in {d}")
    from chgnet.model import CHGNet

    model = CHGNet.load(verbose=False)
    for name in ("OUTCAR_example_1", "vasprun_dfpt.xml"):
        f = load_frames(d / name).frames[0]
        pred = np.asarray(model.predict_structure(f.structure)["s"], dtype=np.float64)
        assert (np.sign(np.diag(pred)) == np.sign(np.diag(f.stress))).all(), (name, np.diag(pred), np.diag(f.stress))
        # predicted and DFT diagonal within 30 % of each other (0.41-0.51 against 0.43-0.46 GPa; -4.2 against -3.6)
        np.testing.assert_allclose(np.diag(pred), np.diag(f.stress), rtol=0.3)
        if name == "OUTCAR_example_1":
            iu = [(1, 2), (0, 2), (0, 1)]  # yz xz xy
            right = np.array([f.stress[i] for i in iu])
            # VASP's xy yz zx read as if they were ASE's yz xz xy
            wrong = -0.1 * np.array([0.50047, -0.94049, 0.36481])
            got = np.array([pred[i] for i in iu])
            assert np.abs(got - right).sum() < 0.5 * np.abs(got - wrong).sum(), (got, right, wrong)


# ---------------------------------------------------------------- the mlearn files in ../shared


@pytest.mark.skipif(not (MLEARN / "Mo_training.json.gz").is_file(), reason=f"mlearn data {MLEARN} is absent (a fresh clone has none)")
def test_mlearn_training_files_tell_their_shear_orders():
    """mlearn's two files keep different shear orders, which their Elastic cells tell: Si VASP's
    (xy yz zx), Mo xy xz yz (every Mo cell sheared in xz has its stress at shear position 2)."""
    si = load_frames(MLEARN / "Si_training.json.gz")
    assert si.read_with == {"shear_order": "xy yz xz"} and "told by 27 singly sheared cells" in si.notes[0]
    mo = load_frames(MLEARN / "Mo_training.json.gz")
    assert mo.read_with == {"shear_order": "xy xz yz"} and "told by 28 singly sheared cells" in mo.notes[0]
    with pytest.raises(FrameError, match="sheared in the xz plane only"):
        load_frames(MLEARN / "Mo_training.json.gz", shear_order="xy yz zx")


@pytest.mark.skipif(not (MLEARN / "Si_test.json.gz").is_file(), reason=f"mlearn data {MLEARN} is absent (a fresh clone has none)")
def test_mlearn_si_test_file():
    p = MLEARN / "Si_test.json.gz"
    fs = load_frames(p)
    assert fs.fmt == "mlearn" and len(fs) == 25 and fs.n_atoms() == 1525 and fs.bad == {}
    assert fs.sha256 == "997bebfb07ec71e8f03620eea081da395840ac7393b60e1361d54b3a49f5cf29"
    assert fs.labels() == {"energy": 25, "forces": 25, "stress": 25, "magmom": 0}
    assert check_frames(fs, "efs").frames == fs.frames
    with gzip.open(p, "rt") as fh:
        raw = json.load(fh)
    for f, r in zip(fs, raw):
        n = len(r["structure"]["sites"])
        assert len(f.structure) == n == r["num_atoms"]
        assert f.energy == r["outputs"]["energy"] and f.energy_per_atom == pytest.approx(r["outputs"]["energy"] / n)
        xx, yy, zz, xy, yz, xz = (-0.1 * np.array(r["outputs"]["virial_stress"])).tolist()  # VASP's order here
        np.testing.assert_allclose(f.stress, [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        np.testing.assert_allclose(f.forces, r["outputs"]["forces"])
    assert {f.group for f in fs} == {r["group"] for r in raw}
    assert fs.read_with == {"shear_order": "xy yz xz"} and "told by 3 singly sheared cells" in fs.notes[0]
    # total energies: about -5.4 eV/atom for Si, not per atom already
    assert all(-6 < f.energy_per_atom < -4 for f in fs) and all(f.energy < -100 for f in fs)
