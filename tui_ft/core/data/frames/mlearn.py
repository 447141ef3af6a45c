"""The mlearn / maml JSON layout (plain or gzipped): a list of calculations.

``[{"structure": <pymatgen dict>, "group": "Elastic", "description": "...",
"outputs": {"energy": total eV, "forces": [[eV/A]*3]*n, "virial_stress": 6 numbers}}]``

``virial_stress`` is kbar with VASP's sign (positive = compressive); it becomes
GPa, ASE sign, by x -0.1 (checked on Si_test with the pretrained CHGNet:
MAE 0.57 GPa against 1.66 GPa for +0.1; /work/shared/data/mlearn/README.md).
The order of its three shear components is not stated by the source: it is the
option ``shear_order``, by default ``"yz xz xy"`` (the full order
``xx yy zz yz xz xy``, ASE's Voigt order), which fits the pretrained CHGNet
slightly better than VASP's ``"xy yz zx"`` (0.567 against 0.604 GPa): an
uncertain, explicit choice. No magnetic moments.

id: ``frame-K`` (K from 0); group (``group_by``): ``"group"`` = the entry's
``group`` (Elastic, Surface, Vacancy, AIMD-NVT, ...), or ``"trajectory"`` = its
``description`` without the leading ``Snapshot i of N of`` (one MD run).
"""

from __future__ import annotations

import re
from pathlib import Path

from tui_ft.core.data.frames.frame import (
    Collector, Frame, FrameError, FrameSet, as_array, as_energy, hash_files, read_json, stress_matrix,
    structure_from_dict, vasp_kbar_to_gpa,
)

SNAPSHOT = re.compile(r"^\s*Snapshot\s+\d+\s+of\s+\d+\s+of\s+", re.IGNORECASE)


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


def read(path: Path, *, shear_order: str = "yz xz xy", group_by: str = "group") -> FrameSet:
    shear = tuple(shear_order.split())
    if sorted("".join(sorted(x)) for x in shear) != ["xy", "xz", "yz"]:
        raise FrameError(f"shear_order: expected the three shear components, e.g. 'yz xz xy', got {shear_order!r}")
    if group_by not in ("group", "trajectory"):
        raise FrameError(f"group_by: expected 'group' or 'trajectory', got {group_by!r}")
    data = read_json(path)
    if not isinstance(data, list):
        raise FrameError(f"{path}: not the mlearn layout (a list of {{structure, outputs, group}})")
    out = Collector(path, "mlearn")
    order = ("xx", "yy", "zz") + shear
    for k, entry in enumerate(data):
        where = f"{path} frame {k}"
        out.add(lambda: _frame(entry, f"frame-{k}", where, order, group_by, path.name), where, f"frame-{k}")
    return out.build(hash_files([path], path.parent))
