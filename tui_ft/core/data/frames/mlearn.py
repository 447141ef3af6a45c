"""The mlearn / maml JSON layout (plain or gzipped): a list of calculations.

``[{"structure": <pymatgen dict>, "group": "Elastic", "description": "...",
"outputs": {"energy": total eV, "forces": [[eV/A]*3]*n, "virial_stress": 6 numbers}}]``

``virial_stress`` is kbar with VASP's sign (positive = compressive); it becomes
GPa, ASE sign, by x -0.1 (checked on Si_test with the pretrained CHGNet 0.3.0,
session 13: MAE of the diagonal 0.64 GPa with x -0.1 against 3.82 GPa with +0.1).

The order of its three shear components is not stated by the source, and the
files differ: in mlearn's Si files it is VASP's ``xy yz zx``, in its Mo files
``xy xz yz`` (LAMMPS's order). The data says so without any model: a cell that
is an orthogonal cell sheared in one plane only (one off-diagonal entry in its
lattice matrix; mlearn's ``Elastic`` frames) has its shear stress in that one
component, far above the other two. So the option ``shear_order``:

- ``"auto"`` (the default): told from the file's singly sheared cells (every
  such cell votes for the position its one large shear value takes, when that
  value has the strain's sign and at least 5 GPa per unit of it: a slab's surface
  stress is no answer to its cell's shear; a position goes to the plane of at
  least 3/4 of its votes); a position no cell speaks for is filled in VASP's order; a
  file without such cells is read in VASP's order (the data is VASP's). Votes
  without such a majority are a :class:`FrameError` that names the cells: set
  the order by hand then.
- three names (``"xy yz zx"``, ``"yz xz xy"``, ...): that order; cells of the
  file that contradict it are a :class:`FrameError` naming the first ones.

What was chosen, and from how many cells, is one line of ``FrameSet.notes``
(a training run says it). No magnetic moments.

id: ``frame-K`` (K from 0); group (``group_by``): ``"group"`` = the entry's
``group`` (Elastic, Surface, Vacancy, AIMD-NVT, ...), or ``"trajectory"`` = its
``description`` without the leading ``Snapshot i of N of`` (one MD run).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tui_ft.core.common.units import SHEAR_PLANE, shear_order_names
from tui_ft.core.data.frames.frame import (
    Collector, Frame, FrameError, FrameSet, as_array, as_energy, hash_files, read_json, stress_matrix,
    structure_from_dict, vasp_kbar_to_gpa,
)

SNAPSHOT = re.compile(r"^\s*Snapshot\s+\d+\s+of\s+\d+\s+of\s+", re.IGNORECASE)
VASP_SHEAR = ("xy", "yz", "zx")
SHEAR_CELL_TOL = 1e-3  # an off-diagonal lattice entry above this share of the cell's shortest axis is a shear
SHEAR_DOMINANCE = 10.0  # a cell's one shear value is this many times the other two, and at least 1 kbar
MAJORITY = 0.75  # the share of a position's cells that must name the same plane
# a strained bulk cell answers a shear strain eps with sigma = 2 G eps, G the shear modulus (Si, Mo: ~100
# GPa in mlearn's Elastic cells; Li's C44, among the softest elements mlearn has, ~10 GPa); a slab's
# stress is its surface's, spread over the vacuum of its cell (mlearn's Si and Mo slabs: |G| 1-4 GPa)
MIN_SHEAR_MODULUS = 5.0


def parse_shear_order(text: str) -> tuple[str, str, str] | None:
    """``"auto"`` -> None; three shear names (``"xy yz zx"``) -> them; anything else -> FrameError."""
    try:
        return shear_order_names(text)
    except ValueError as exc:
        raise FrameError(f"shear_order: {exc}") from None


def cell_shear_strain(lattice: Any) -> tuple[str, float] | None:
    """The plane (``"xy"``, ``"yz"``, ``"xz"``) and tensor shear strain (``off / (2 * axis)``) of a cell
    that is an orthogonal cell sheared in that one plane: exactly one off-diagonal entry of its lattice
    matrix (rows a, b, c) is not ~0; else None."""
    try:
        m = np.asarray(lattice, dtype=np.float64)
    except (TypeError, ValueError):  # a bad structure: its frame's own reading reports it
        return None
    if m.shape != (3, 3) or not np.isfinite(m).all() or np.abs(np.diag(m)).min() <= 0:
        return None
    off = m - np.diag(np.diag(m))
    big = np.argwhere(np.abs(off) > SHEAR_CELL_TOL * np.abs(np.diag(m)).min())
    if len(big) != 1:
        return None
    i, j = (int(x) for x in big[0])
    a, b = sorted((i, j))
    return SHEAR_PLANE["xyz"[a] + "xyz"[b]], float(off[i, j] / (2.0 * m[i, i]))


def stress_shear_position(virial: Any, strain: float) -> int | None:
    """Which of the three shear values (positions 0-2 after xx yy zz; kbar, VASP sign) answers a shear
    strain ``strain``: one that stands out from the other two, with the strain's sign (GPa, ASE sign)
    and at least MIN_SHEAR_MODULUS GPa per unit of it; None when none does."""
    try:
        v = np.asarray(virial, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if v.size != 6 or not np.isfinite(v).all() or strain == 0:
        return None
    shear = np.abs(v[3:])
    k = int(np.argmax(shear))
    rest = np.delete(shear, k)
    sigma = float(vasp_kbar_to_gpa(v[3 + k]))  # GPa, ASE sign (positive = tensile)
    if shear[k] < 1.0 or shear[k] < SHEAR_DOMINANCE * rest.max() or sigma / (2.0 * strain) < MIN_SHEAR_MODULUS:
        return None
    return k


def told_shear_order(data: list, path: Path, given: tuple[str, str, str] | None,
                     given_by: str = "shear_order as given") -> tuple[tuple[str, ...], str]:
    """The shear order to read ``data`` with, and the note that says why (see the module docstring)."""
    votes: dict[int, Counter] = {0: Counter(), 1: Counter(), 2: Counter()}
    where: dict[tuple[int, str], list[int]] = {}
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("structure"), dict):
            continue
        lattice, outputs = entry["structure"].get("lattice"), entry.get("outputs")
        sheared = cell_shear_strain(lattice.get("matrix")) if isinstance(lattice, dict) else None
        if sheared is None or not isinstance(outputs, dict):
            continue  # a frame that cannot be read says so when it is read
        plane, strain = sheared
        pos = stress_shear_position(outputs.get("virial_stress"), strain)
        if pos is not None:
            votes[pos][plane] += 1
            where.setdefault((pos, plane), []).append(k)
    n = sum(sum(c.values()) for c in votes.values())
    # a position is told by a clear majority of its cells (a slab's own surface stress can fall
    # anywhere: mlearn's Si has one (3 2 2) surface cell among 29 sheared bulk cells)
    told = {pos: c.most_common(1)[0][0] for pos, c in votes.items()
            if c and c.most_common(1)[0][1] >= MAJORITY * sum(c.values())}
    unclear = [pos for pos, c in votes.items() if c and pos not in told]
    if unclear or len(set(told.values())) < len(told):
        cases = "; ".join(f"{len(where[(p, pl)])} cells sheared in {pl} (frame {where[(p, pl)][0]} first) have their "
                          f"stress at shear position {p + 1}" for p in range(3) for pl in votes[p])
        raise FrameError(f"{path}: the sheared cells do not tell the order of virial_stress's shear components "
                         f"({cases}); set [task] shear_order to the file's order")
    dissent = sum(sum(c.values()) - c[told[pos]] for pos, c in votes.items() if pos in told)
    agree = f"{n - dissent} of {n} singly sheared cells" if dissent else f"{n} singly sheared cell{'' if n == 1 else 's'}"
    if given is not None:
        wrong = [(p, pl) for p, pl in told.items() if SHEAR_PLANE[given[p]] != pl]
        if wrong:
            p, pl = wrong[0]
            frames = where[(p, pl)]
            implied = _complete(told)
            raise FrameError(
                f"{path} frame {frames[0]}: the cell is sheared in the {pl} plane only, and its stress is at "
                f"shear position {p + 1}, which shear_order {' '.join(given)!r} reads as {given[p]} "
                f"({len(frames)} such frames); the file's sheared cells say {' '.join(implied)!r}")
        return given, f"{path}: virial_stress read as xx yy zz {' '.join(given)} ({given_by}" + (
            f"; {agree} agree{'s' if n == 1 else ''})" if n else "; no singly sheared cell to check it)")
    if not told:
        return VASP_SHEAR, (f"{path}: virial_stress read as xx yy zz {' '.join(VASP_SHEAR)} (VASP's order: no "
                            "singly sheared cell tells the file's own; set [task] shear_order if it differs)")
    order = _complete(told)
    guessed = "" if len(told) >= 2 else "; the two positions no cell speaks for in VASP's relative order"
    return order, f"{path}: virial_stress read as xx yy zz {' '.join(order)} (told by {agree}{guessed})"


def _complete(told: dict[int, str]) -> tuple[str, str, str]:
    """A whole shear order from the positions the cells tell; the rest in VASP's relative order."""
    rest = [SHEAR_PLANE[x] for x in VASP_SHEAR if SHEAR_PLANE[x] not in told.values()]
    return tuple(told[p] if p in told else rest.pop(0) for p in range(3))  # type: ignore[return-value]


def _frame(entry, ident: str, where: str, order: tuple[str, ...], group_by: str, default_group: str) -> Frame:
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object with structure and outputs, got {type(entry).__name__}")
    s = structure_from_dict(entry.get("structure"))
    outputs = entry.get("outputs")
    if not isinstance(outputs, dict):
        raise ValueError("field outputs: missing (expected {energy, forces, virial_stress})")
    group = str(entry.get("group") or default_group)
    if group_by == "trajectory" and entry.get("description"):
        group = SNAPSHOT.sub("", str(entry["description"])).strip()
    f, st = outputs.get("forces"), outputs.get("virial_stress")
    return Frame(id=ident, group=group, structure=s, energy=as_energy(outputs.get("energy")), where=where,
                 forces=None if f is None else as_array(f, "forces"),
                 stress=None if st is None else vasp_kbar_to_gpa(stress_matrix(st, order)))


def read(path: Path, *, shear_order: str = "auto", group_by: str = "group",
         given_by: str = "shear_order as given") -> FrameSet:
    """``given_by``: where a given ``shear_order`` came from, for the note (a test file read
    with its training file's order says so)."""
    given = parse_shear_order(shear_order)
    if group_by not in ("group", "trajectory"):
        raise FrameError(f"group_by: expected 'group' or 'trajectory', got {group_by!r}")
    data = read_json(path)
    if not isinstance(data, list):
        raise FrameError(f"{path}: not the mlearn layout (a list of {{structure, outputs, group}})")
    shear, note = told_shear_order(data, path, given, given_by)
    out = Collector(path, "mlearn")
    order = ("xx", "yy", "zz") + tuple(shear)
    for k, entry in enumerate(data):
        where = f"{path} frame {k}"
        out.add(lambda: _frame(entry, f"frame-{k}", where, order, group_by, path.name), where, f"frame-{k}")
    return out.build(hash_files([path], path.parent), [note], {"shear_order": " ".join(shear)})
