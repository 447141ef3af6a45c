"""chgnet's MPtrj JSON layout (what ``chgnet.data.dataset.StructureJsonData`` reads), plain or gzipped.

``{mp_id: {frame_id: {"structure": <pymatgen dict>, "uncorrected_total_energy": eV,
"corrected_total_energy": eV, "energy_per_atom": eV/atom, "force": [[eV/A]*3]*n,
"stress": 3x3 kbar, VASP sign (positive = compressive), "magmom": [muB]*n or None}}}``

Stress: chgnet multiplies it by -0.1 (``targets["s"] = stress * -0.1``), so it is
VASP's kbar; here it becomes GPa, ASE sign, the same way. Energy
(``energy_kind``): ``"corrected"`` (default) = ``corrected_total_energy``, or
``energy_per_atom`` x sites when that is absent (chgnet trains on
``energy_per_atom``, MPtrj's MP2020-corrected energy per atom); ``"uncorrected"``
= ``uncorrected_total_energy`` (VASP's energy(sigma->0)). Magmoms are kept with
their sign (chgnet trains on their absolute value). id: the frame id; group: the mp_id.
"""

from __future__ import annotations

from pathlib import Path

from tui_ft.core.data.frames.frame import (
    Collector, Frame, FrameError, FrameSet, as_array, as_energy, hash_files, read_json, stress_matrix,
    structure_from_dict, vasp_kbar_to_gpa, VASP_ORDER,
)


def _frame(entry, ident: str, group: str, where: str, energy_kind: str) -> Frame:
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object with structure and labels, got {type(entry).__name__}")
    s = structure_from_dict(entry.get("structure"))
    if energy_kind == "corrected":
        e = as_energy(entry.get("corrected_total_energy"))
        if e is None and entry.get("energy_per_atom") is not None:
            e = as_energy(entry["energy_per_atom"]) * len(s)
    else:
        e = as_energy(entry.get("uncorrected_total_energy"))
    f, st, m = entry.get("force"), entry.get("stress"), entry.get("magmom")
    if m is not None:
        m = as_array(m, "magmom")
        m = m.reshape(-1) if m.ndim == 2 and m.shape[1] == 1 else m
    return Frame(id=ident, group=group, structure=s, energy=e, where=where,
                 forces=None if f is None else as_array(f, "forces"),
                 stress=None if st in (None, []) else vasp_kbar_to_gpa(stress_matrix(st, VASP_ORDER)),
                 magmom=m)


def read(path: Path, *, energy_kind: str = "corrected") -> FrameSet:
    if energy_kind not in ("corrected", "uncorrected"):
        raise FrameError(f"energy_kind: expected 'corrected' or 'uncorrected', got {energy_kind!r}")
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise FrameError(f"{path}: not the MPtrj layout ({{mp_id: {{frame_id: {{structure, force, ...}}}}}})")
    out = Collector(path, "mptrj")
    k = 0
    for mp_id, frames in data.items():
        for frame_id, entry in frames.items():
            where = f"{path} frame {k} ({mp_id}/{frame_id})"
            out.add(lambda: _frame(entry, str(frame_id), str(mp_id), where, energy_kind), where, str(frame_id))
            k += 1
    return out.build(hash_files([path], path.parent))
