"""DFT frames (energies, forces, stresses, magnetic moments) for fine-tuning a potential.

``load_frames(path, *, fmt=None, **opts) -> FrameSet`` reads one source; the
format is picked by name / suffix / content, or given with ``fmt``:

``ase``     extxyz or anything ``ase.io.read(path, ":")`` reads (module ``ase_files``)
``vasp``    ``vasprun.xml`` / ``OUTCAR``, or a folder tree of calculations (``vasp``)
``mptrj``   chgnet's MPtrj JSON ``{mp_id: {frame_id: {...}}}`` (``mptrj``)
``mlearn``  the mlearn / maml JSON list (``mlearn``)
``asedb``   an ASE database ``.db`` (``asedb``)

Each module's docstring gives the units, sign and component order of its
source and its options. Internal convention, whatever the source -- a
:class:`Frame` holds:

- ``id`` (unique in a set), ``group`` (the trajectory / calculation / file it came
  from, for grouped splits), ``where`` (``"path/file.xyz frame 3"``,
  ``"calc/vasprun.xml ionic step 7"``), ``structure`` (a pymatgen ``Structure``);
- ``energy``: TOTAL energy of the cell, eV (``energy_per_atom``: eV/atom);
- ``forces``: (n, 3), eV/A, in site order;
- ``stress``: (3, 3), **GPa, ASE/pymatgen sign (positive = tensile)** -- the unit
  and sign of CHGNet's own ``predict_structure(...)["s"]``. VASP's kbar
  (positive = compressive) is x -0.1; ASE's eV/A^3 is / ``ase.units.GPa``.
  Note: chgnet's ``StructureData`` expects VASP kbar and multiplies by -0.1
  itself: hand it ``-10 * frame.stress``, not ``frame.stress``;
- ``magmom``: (n,), muB, sign as in the source (chgnet trains on ``|m|``);
- a label the source lacks is ``None`` (``frame.has("stress")``).

A frame that cannot be read (no periodic cell, a structure that is not one,
labels that are not numbers, a duplicate id) is left out and kept in
``FrameSet.bad`` with its reason; a file that cannot be read at all raises
:class:`FrameError` (a ``ValueError``) naming the file. :func:`check_frames`
checks the labels a training needs (present, shape, atom count, finite).
"""

from __future__ import annotations

import gzip
import inspect
from pathlib import Path
from typing import Any

from tui_ft.core.data.frames.frame import (
    ASE_ORDER, LABELS, VASP_ORDER, Frame, FrameError, FrameSet, check_frames, ev_a3_to_gpa, frame_problem,
    need_labels, stress_matrix, vasp_kbar_to_gpa, voigt_to_matrix,
)

FORMATS = ("ase", "vasp", "mptrj", "mlearn", "asedb")

__all__ = [
    "ASE_ORDER", "FORMATS", "LABELS", "VASP_ORDER", "Frame", "FrameError", "FrameSet", "check_frames",
    "detect_format", "ev_a3_to_gpa", "frame_problem", "load_frames", "need_labels", "stress_matrix",
    "vasp_kbar_to_gpa", "voigt_to_matrix",
]


def _reader(fmt: str):
    if fmt == "ase":
        from tui_ft.core.data.frames import ase_files as mod
    elif fmt == "vasp":
        from tui_ft.core.data.frames import vasp as mod
    elif fmt == "mptrj":
        from tui_ft.core.data.frames import mptrj as mod
    elif fmt == "mlearn":
        from tui_ft.core.data.frames import mlearn as mod
    elif fmt == "asedb":
        from tui_ft.core.data.frames import asedb as mod
    else:
        raise FrameError(f"unknown frame format {fmt!r} (known: {', '.join(FORMATS)})")
    return mod.read


def _first_char(path: Path) -> str:
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as fh:
            return fh.read(4096).lstrip()[:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise FrameError(f"{path}: not readable ({type(exc).__name__}: {exc})") from None


def detect_format(path: Path | str) -> str:
    """The format of ``path``: a folder or a ``vasprun*`` / ``OUTCAR*`` file -> vasp, ``.db`` -> asedb,
    JSON whose top level is a list -> mlearn, an object -> mptrj, anything else -> ase."""
    path = Path(path)
    if not path.exists():
        raise FrameError(f"{path}: no such file or folder")
    name = path.name.lower()
    if path.is_dir() or name.startswith(("vasprun", "outcar")):
        return "vasp"
    if name.endswith(".db"):
        return "asedb"
    if name.endswith((".json", ".json.gz")):
        return {"[": "mlearn", "{": "mptrj"}.get(_first_char(path)) or "ase"
    return "ase"


def load_frames(path: Path | str, *, fmt: str | None = None, **opts: Any) -> FrameSet:
    """The frames in ``path`` (see the module docstring); ``opts`` go to the format's reader."""
    path = Path(path)
    if not path.exists():
        raise FrameError(f"{path}: no such file or folder")
    fmt = fmt or detect_format(path)
    read = _reader(fmt)
    known = [p for p in inspect.signature(read).parameters if p != "path"]
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise FrameError(f"{path}: the {fmt} reader has no option {', '.join(unknown)} (options: {', '.join(known)})")
    return read(path, **opts)
