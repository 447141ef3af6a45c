"""extxyz, and any multi-frame file ``ase.io.read(path, ":")`` reads.

Labels come from ``atoms.info`` / ``atoms.arrays`` under the keys named by the
options (``energy_key="energy"``, ``forces_key="forces"``, ``stress_key="stress"``,
``magmom_key="magmoms"``, like MACE's ``REF_energy`` ...), else from
``atoms.calc.results`` under the same key (ase moves the standard names of an
extxyz file to a SinglePointCalculator). ASE's conventions: energy eV (total),
forces eV/A, stress eV/A^3 with the ASE sign (positive = tensile) as six Voigt
components ``xx yy zz yz xz xy`` or nine / 3x3; it becomes GPa (``/ ase.units.GPa``).
Magnetic moments: per-atom muB (``magmoms``; the total ``magmom`` is not used).

id: ``info["id"]`` (or ``name`` / ``material_id`` / ``mp_id``), else ``frame-K``
(K from 0, as ase's index); group: ``info["group"]`` (or ``config_type`` /
``system_name`` / ``trajectory``), else the file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tui_ft.core.data.frames.frame import (
    Collector, Frame, FrameError, FrameSet, as_array, as_energy, atoms_to_structure, ev_a3_to_gpa, hash_files,
    stress_matrix,
)

ID_KEYS = ("id", "name", "material_id", "mp_id")
GROUP_KEYS = ("group", "config_type", "system_name", "trajectory")


def first_key(d: Mapping[str, Any], keys, default: str) -> str:
    return next((str(d[k]) for k in keys if d.get(k) not in (None, "")), default)


def frame_from_atoms(atoms, ident: str, group: str, where: str, *, extra: Mapping[str, Any] | None = None,
                     energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
                     magmom_key: str = "magmoms") -> Frame:
    """A Frame from an ase ``Atoms`` with labels in ASE units (see the module docstring); ``extra``: more
    keys to look in first (an ase.db row's key-value pairs and data)."""
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    places = [extra or {}, atoms.info, atoms.arrays, results]

    def get(key: str):
        return next((p[key] for p in places if key in p and p[key] is not None), None)

    structure = atoms_to_structure(atoms)
    forces, stress, magmom = get(forces_key), get(stress_key), get(magmom_key)
    if magmom is not None:
        magmom = as_array(magmom, "magmom")
        magmom = magmom.reshape(-1) if magmom.ndim == 2 and magmom.shape[1] == 1 else magmom
    return Frame(
        id=ident, group=group, structure=structure, where=where,
        energy=as_energy(get(energy_key)),
        forces=None if forces is None else as_array(forces, "forces"),
        stress=None if stress is None else ev_a3_to_gpa(stress_matrix(stress)),
        magmom=magmom,
    )


def read(path: Path, *, index: str = ":", format: str | None = None, energy_key: str = "energy",
         forces_key: str = "forces", stress_key: str = "stress", magmom_key: str = "magmoms") -> FrameSet:
    import ase.io

    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one message naming the file
        raise FrameError(f"{path}: not readable by ase.io.read ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})") from None
    images = images if isinstance(images, list) else [images]
    keys = dict(energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, magmom_key=magmom_key)
    out = Collector(path, "ase")
    for k, atoms in enumerate(images):
        ident = first_key(atoms.info, ID_KEYS, f"frame-{k}")
        where = f"{path} frame {k}"
        group = first_key(atoms.info, GROUP_KEYS, path.name)
        out.add(lambda: frame_from_atoms(atoms, ident, group, where, **keys), where, ident)
    return out.build(hash_files([path], path.parent))

