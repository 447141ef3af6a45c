"""The offline demo dataset: small crystals with SYNTHETIC formation-energy labels.

The demo data lets the workbench run end to end without a network: the same
Matbench layout (pandas "split" JSON, columns ``structure`` and ``e_form``) as
``matbench_mp_e_form``, but about 240 small crystals built here from common
prototypes and labels computed by a simple formula. **The labels are not DFT
data** and carry no scientific meaning; see ``docs/DEMO_DATA.md``.

Structures
    Prototypes (fcc, bcc, hcp, diamond, rocksalt, CsCl, zincblende, wurtzite,
    fluorite, antifluorite, rutile, CdI2, cubic perovskite, L1_2, Heusler) in
    primitive cells of 1..6 sites, with elements from fixed lists. The nearest
    bond length is ``r_A + r_B`` (pymatgen's ``Element.atomic_radius``), scaled
    by a strain factor cycling through 0.95 .. 1.05 with the entry number.

Labels (eV/atom, rounded to 4 decimals)
    For each site *i*, its neighbours N(i) are the atoms within
    ``1.15 * d_min(i)`` (``d_min(i)``: the shortest distance from *i*), CN_i = |N(i)|::

        e_i    = -C * (1 + BETA * (CN_i - 6) / 6) * mean_{j in N(i)} (chi_i - chi_j)**2
                 + K * mean_{j in N(i)} (d_ij / (r_i + r_j) - 1)**2
        e_form = mean_i e_i

    chi is Pauling electronegativity (``Element.X``), r the atomic radius.
    The first term is a Pauling-style ionic bond-energy estimate, the second a
    strain penalty for bonds longer or shorter than the radius sum.
"""

from __future__ import annotations

import gzip
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from tui_ft.core.common.atomic import atomic_write
from tui_ft.core.common.paths import Paths

DEMO_VERSION = 1
DEMO_FILENAME = "demo_e_form.json.gz"
TARGET = "e_form"

# label formula constants (documented in docs/DEMO_DATA.md)
C_IONIC = 0.4  # eV per (Pauling unit)^2
BETA_CN = 0.1  # coordination modulation of the ionic term
K_STRAIN = 20.0  # eV per (relative bond strain)^2
SHELL = 1.15  # neighbour shell: within SHELL * shortest distance
CUTOFF = 6.0  # neighbour search radius (Angstrom); every atom must have a neighbour inside
STRAINS = (1.0, 0.95, 1.025, 0.975, 1.05)  # cycled by entry number

FORMULA = (
    "e_form = mean_i e_i; e_i = -0.4 * (1 + 0.1*(CN_i - 6)/6) * mean_{j in N(i)} (X_i - X_j)^2 "
    "+ 20 * mean_{j in N(i)} (d_ij/(r_i + r_j) - 1)^2; N(i) = atoms within 1.15 x the shortest "
    "distance from site i, CN_i = |N(i)|, X = pymatgen Element.X (Pauling), r = Element.atomic_radius; "
    "rounded to 4 decimals, eV/atom"
)

# ---------------------------------------------------------------- prototypes
# Each prototype: (lattice(a) -> 3x3 rows, [(species slot, frac coords)], bond(a) -> nearest A-B distance
# as a multiple of a). Slots are indices into the element tuple of an entry.

_R2, _R3 = math.sqrt(2.0), math.sqrt(3.0)


def _fcc(a: float) -> list[list[float]]:
    h = a / 2
    return [[0, h, h], [h, 0, h], [h, h, 0]]


def _bcc(a: float) -> list[list[float]]:
    h = a / 2
    return [[-h, h, h], [h, -h, h], [h, h, -h]]


def _cubic(a: float) -> list[list[float]]:
    return [[a, 0, 0], [0, a, 0], [0, 0, a]]


def _hex(c_over_a: float) -> Callable[[float], list[list[float]]]:
    def lat(a: float) -> list[list[float]]:
        return [[a, 0, 0], [-a / 2, a * _R3 / 2, 0], [0, 0, a * c_over_a]]

    return lat


def _tet(c_over_a: float) -> Callable[[float], list[list[float]]]:
    def lat(a: float) -> list[list[float]]:
        return [[a, 0, 0], [0, a, 0], [0, 0, a * c_over_a]]

    return lat


_IDEAL = math.sqrt(8.0 / 3.0)  # ideal hcp / wurtzite c/a
_U_RUT, _CA_RUT = 0.305, 0.64
# rutile: nearest A-X distance is the shorter of the apical (u*sqrt2*a) and equatorial bonds
_RUTILE_BOND = min(_U_RUT * _R2, math.sqrt(2 * (0.5 - _U_RUT) ** 2 + (_CA_RUT / 2) ** 2))

PROTOTYPES: dict[str, tuple[Callable, list[tuple[int, tuple[float, float, float]]], float]] = {
    "fcc": (_fcc, [(0, (0, 0, 0))], 1 / _R2),
    "bcc": (_bcc, [(0, (0, 0, 0))], _R3 / 2),
    "hcp": (_hex(_IDEAL), [(0, (1 / 3, 2 / 3, 0.25)), (0, (2 / 3, 1 / 3, 0.75))], 1.0),
    "diamond": (_fcc, [(0, (0, 0, 0)), (0, (0.25, 0.25, 0.25))], _R3 / 4),
    "rocksalt": (_fcc, [(0, (0, 0, 0)), (1, (0.5, 0.5, 0.5))], 0.5),
    "cscl": (_cubic, [(0, (0, 0, 0)), (1, (0.5, 0.5, 0.5))], _R3 / 2),
    "zincblende": (_fcc, [(0, (0, 0, 0)), (1, (0.25, 0.25, 0.25))], _R3 / 4),
    "wurtzite": (
        _hex(_IDEAL),
        [(0, (1 / 3, 2 / 3, 0)), (0, (2 / 3, 1 / 3, 0.5)), (1, (1 / 3, 2 / 3, 0.375)), (1, (2 / 3, 1 / 3, 0.875))],
        0.375 * _IDEAL,
    ),
    "fluorite": (_fcc, [(0, (0, 0, 0)), (1, (0.25, 0.25, 0.25)), (1, (0.75, 0.75, 0.75))], _R3 / 4),
    "rutile": (
        _tet(_CA_RUT),
        [
            (0, (0, 0, 0)),
            (0, (0.5, 0.5, 0.5)),
            (1, (_U_RUT, _U_RUT, 0)),
            (1, (1 - _U_RUT, 1 - _U_RUT, 0)),
            (1, (0.5 + _U_RUT, 0.5 - _U_RUT, 0.5)),
            (1, (0.5 - _U_RUT, 0.5 + _U_RUT, 0.5)),
        ],
        _RUTILE_BOND,
    ),
    "cdi2": (_hex(_IDEAL), [(0, (0, 0, 0)), (1, (1 / 3, 2 / 3, 0.25)), (1, (2 / 3, 1 / 3, 0.75))], 1 / _R2),
    # cubic perovskite A B X3: bond = B-X = a/2
    "perovskite": (
        _cubic,
        [(0, (0.5, 0.5, 0.5)), (1, (0, 0, 0)), (2, (0.5, 0, 0)), (2, (0, 0.5, 0)), (2, (0, 0, 0.5))],
        0.5,
    ),
    # L1_2 A3 B
    "l12": (_cubic, [(1, (0, 0, 0)), (0, (0, 0.5, 0.5)), (0, (0.5, 0, 0.5)), (0, (0.5, 0.5, 0))], 1 / _R2),
    # full Heusler X2 Y Z (fcc primitive cell): bond = X-Y = a*sqrt3/4
    "heusler": (
        _fcc,
        [(2, (0, 0, 0)), (1, (0.5, 0.5, 0.5)), (0, (0.25, 0.25, 0.25)), (0, (0.75, 0.75, 0.75))],
        _R3 / 4,
    ),
}

# slot pair whose radius sum sets the nearest bond length (default: 0 and 1, or 0 and 0 for elements)
_BOND_SLOTS = {"perovskite": (1, 2), "heusler": (0, 1)}


def _combos(a: str, b: str) -> list[tuple[str, str]]:
    return [(x, y) for x in a.split() for y in b.split()]


def _catalog() -> list[tuple[str, tuple[str, ...]]]:
    """The fixed list of (prototype, elements) entries, in file order."""
    out: list[tuple[str, tuple[str, ...]]] = []

    def add(proto: str, combos) -> None:
        out.extend((proto, tuple(c)) for c in combos)

    add("fcc", [(e,) for e in "Al Cu Ag Au Ni Pd Pt Pb Ca Sr Ir Rh".split()])
    add("bcc", [(e,) for e in "Li Na K V Cr Fe Mo W Nb Ta Ba".split()])
    add("hcp", [(e,) for e in "Mg Ti Zr Zn Cd Co Be Hf".split()])
    add("diamond", [(e,) for e in "C Si Ge Sn".split()])
    add("rocksalt", _combos("Li Na K Rb", "F Cl Br I"))
    add("rocksalt", _combos("Mg Ca Sr Ba", "O S Se Te"))
    add("rocksalt", _combos("Mn Fe Co Ni Cd", "O"))
    add("rocksalt", _combos("Ti Zr Hf Sc", "N C"))
    add("cscl", _combos("Cs Rb Tl", "Cl Br I"))
    add("cscl", _combos("Fe Co Ni Cu Pd", "Al Zn"))
    add("zincblende", _combos("B Al Ga In", "N P As Sb"))
    add("zincblende", _combos("Zn Cd Hg", "S Se Te"))
    add("zincblende", _combos("Cu Ag", "Cl Br I"))
    add("zincblende", [("Si", "C")])
    add("wurtzite", _combos("Al Ga In", "N"))
    add("wurtzite", _combos("Zn Cd", "O S Se"))
    add("wurtzite", _combos("Be Mg", "O"))
    add("wurtzite", [("Si", "C")])
    add("fluorite", _combos("Ca Sr Ba Pb", "F Cl"))
    add("fluorite", _combos("Zr Hf Ce Th U", "O"))
    add("fluorite", [(b, a) for a, b in _combos("Li Na K", "O S Se")])  # antifluorite A2X: slot0 = X
    add("rutile", _combos("Ti Sn Ge Mn Ru Ir Cr Pb", "O"))
    add("rutile", _combos("Mg Zn Ni Co Fe Mn", "F"))
    add("cdi2", _combos("Ti Zr Hf Sn", "S Se"))
    add("cdi2", _combos("Mg Cd Fe Ni", "I Br"))
    add("perovskite", [(a, b, "O") for a, b in _combos("Ca Sr Ba Pb", "Ti Zr Hf Sn")])
    add("perovskite", [(a, b, "F") for a, b in _combos("K Rb Cs", "Mg Zn Ni")])
    add("l12", _combos("Ni Cu Pt Pd", "Al Ti"))
    add("heusler", [(x, y, z) for x in ("Co", "Ni", "Cu") for y in ("Mn", "Ti") for z in ("Al", "Sn")])
    return out


def _structure(proto: str, elems: tuple[str, ...], strain: float):
    from pymatgen.core import Element, Lattice, Structure

    lat_fn, sites, bond = PROTOTYPES[proto]
    i, j = _BOND_SLOTS.get(proto, (0, 1 if len(elems) > 1 else 0))
    d = float(Element(elems[i]).atomic_radius) + float(Element(elems[j]).atomic_radius)
    a = d * strain / bond
    # round the lattice so the stored structure does not depend on float noise in its construction
    matrix = [[round(float(x), 8) for x in row] for row in lat_fn(a)]
    species = [elems[slot] for slot, _ in sites]
    coords = [list(fc) for _, fc in sites]
    return Structure(Lattice(matrix), species, coords)


@lru_cache(maxsize=None)
def _props(symbol: str) -> tuple[float, float]:
    from pymatgen.core import Element

    el = Element(symbol)
    return float(el.X), float(el.atomic_radius)


def demo_label(structure) -> float:
    """The synthetic ``e_form`` of a structure (eV/atom, 4 decimals); see the module docstring.

    Raises ``ValueError`` if an atom has no neighbour within ``CUTOFF`` angstrom.
    """
    import numpy as np

    n = len(structure)
    centers, neighbors, _images, dists = structure.get_neighbor_list(r=CUTOFF)
    symbols = [site.specie.symbol for site in structure]
    props = [_props(s) for s in symbols]
    total = 0.0
    for i in range(n):
        mask = centers == i
        if not mask.any():
            raise ValueError(f"site {i} ({symbols[i]}) has no neighbour within {CUTOFF} A")
        d_i = dists[mask]
        nb_i = neighbors[mask]
        shell = d_i <= SHELL * float(d_i.min())
        chi_i, r_i = props[i]
        ionic, strain = [], []
        for j, d in zip(nb_i[shell], d_i[shell]):
            chi_j, r_j = props[int(j)]
            ionic.append((chi_i - chi_j) ** 2)
            strain.append((float(d) / (r_i + r_j) - 1.0) ** 2)
        cn = len(ionic)
        e_i = -C_IONIC * (1.0 + BETA_CN * (cn - 6) / 6.0) * float(np.mean(ionic)) + K_STRAIN * float(np.mean(strain))
        total += e_i
    return round(total / n, 4)


def demo_structures() -> list[tuple[str, Any, str]]:
    """``[(id, structure, prototype), ...]`` for every demo entry, in file order."""
    out = []
    for k, (proto, elems) in enumerate(_catalog()):
        s = _structure(proto, elems, STRAINS[k % len(STRAINS)])
        out.append((f"demo-{k + 1:04d}", s, proto))
    return out


def build_demo_dataset() -> dict[str, Any]:
    """The demo data as a pandas-"split" dict (plus an ``about`` key describing it)."""
    index, data = [], []
    protos: dict[str, int] = {}
    for ident, s, proto in demo_structures():
        index.append(ident)
        data.append([s.as_dict(), demo_label(s)])
        protos[proto] = protos.get(proto, 0) + 1
    return {
        "index": index,
        "columns": ["structure", TARGET],
        "data": data,
        "about": {
            "name": "tui-ft demo formation-energy data",
            "version": DEMO_VERSION,
            "synthetic": True,
            "warning": (
                "SYNTHETIC labels computed by a simple formula, NOT DFT data; "
                "for trying the workbench only, not for scientific conclusions"
            ),
            "label_formula": FORMULA,
            "n_entries": len(index),
            "prototypes": protos,
            "doc": "docs/DEMO_DATA.md",
        },
    }


def demo_bytes(obj: dict[str, Any] | None = None) -> bytes:
    """The file's bytes: sorted-key compact JSON, gzip with mtime 0 and no file name."""
    obj = build_demo_dataset() if obj is None else obj
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def _file_version(path: Path) -> int | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            obj = json.load(fh)
        return int(obj["about"]["version"])
    except Exception:  # noqa: BLE001 - anything unreadable is rebuilt
        return None


def ensure_demo_dataset(paths: Paths | None = None) -> Path:
    """``<data>/demo_e_form.json.gz``, (re)built if missing, unreadable or of another version."""
    paths = paths or Paths.default()
    path = paths.data / DEMO_FILENAME
    if path.is_file() and _file_version(path) == DEMO_VERSION:
        return path
    blob = demo_bytes()
    atomic_write(path, lambda fh: fh.write(blob))
    return path
