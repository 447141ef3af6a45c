"""An extxyz file, or any multi-frame file ``ase.io.read(path, index=":")`` reads.

The target of frame *k* is ``atoms.info[target]`` (or, for keys ase moves to the
calculator such as ``energy``, ``atoms.calc.results[target]``); the id is
``atoms.info["id"]`` (or ``material_id`` / ``mp_id`` / ``name``), else
``frame-<k>`` counting from 0 as ase's ``index`` does. Frames are converted to
pymatgen with ``AseAtomsAdaptor``. A frame without the target, with a target
that is not a number, or without a periodic cell is recorded by id and frame
number and left out of every split; a file ase cannot read stops the load with
a :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from tui_ft.core.data.dataset import Dataset, DataError, file_sha256
from tui_ft.core.data.sources.common import RowBuilder, atoms_to_structure, parse_number, reason_of

ID_KEYS = ("id", "material_id", "mp_id", "name")


def _target_of(atoms, target: str):
    if target in atoms.info:
        return atoms.info[target]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    if target in results:
        return results[target]
    raise KeyError(target)


def load(path: Path | str, target: str = "energy", *, need_target: bool = True) -> Dataset:
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # noqa: BLE001 - any reader failure is one message naming the file
        raise DataError(f"{path}: not readable by ase.io.read ({reason_of(exc)})") from None
    if not isinstance(frames, list):
        frames = [frames]
    b = RowBuilder()
    for k, atoms in enumerate(frames):
        ident = next((str(atoms.info[key]) for key in ID_KEYS if key in atoms.info), f"frame-{k}")
        where = f"frame {k}"
        problem = None
        structure = None
        y = None
        try:
            structure = atoms_to_structure(atoms)
        except Exception as exc:  # noqa: BLE001 - reported by frame
            problem = str(exc) if isinstance(exc, ValueError) else reason_of(exc)
        try:
            y = parse_number(_target_of(atoms, target))
        except KeyError:
            if need_target:
                keys = ", ".join(sorted(map(str, atoms.info))) or "none"
                problem = problem or f"no {target!r} in atoms.info (keys: {keys})"
        except ValueError as exc:
            if need_target:
                problem = problem or str(exc)
        b.add(ident, structure, y, problem, where)
    return b.build(path, target, file_sha256(path), need_target=need_target)
