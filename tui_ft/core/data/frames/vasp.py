"""VASP outputs: ``vasprun.xml`` and ``OUTCAR``, one file or a folder tree of calculations.

Read with ase (``ase.io.read(file, ":", format="vasp-xml" / "vasp-out")``),
one frame per ionic step, counted from 0. What ase's readers return, checked on
the OUTCAR ase ships (``ase/test/testdata/vasp/OUTCAR_example_1``): VASP writes
stress in kbar, positive = compressive, order ``xx yy zz xy yz zx``; ase returns
eV/A^3, ASE sign (positive = tensile), ASE Voigt order ``xx yy zz yz xz xy``
(``in kB  -4.29 -4.59 -4.50 0.50 -0.94 0.36`` becomes ``0.429 0.459 0.450
0.094 -0.036 -0.050`` GPa); it is converted to GPa here like any ase stress.
Energy: ase's ``energy``, VASP's energy(sigma->0) (OUTCAR ``energy(sigma->0)``;
vasprun: the step's ``e_fr_energy`` less the ``PSTRESS`` p*V term, plus the last
SCF step's ``e_0 - e_fr``), eV, total; forces eV/A; magmoms (OUTCAR
``magnetization (x)``, muB) when present.

``vasp_steps``: ``"all"`` ionic steps, ``"last"``, or an int N: steps 0, N, 2N, ...

A folder is walked: every folder holding ``vasprun*.xml[.gz]`` files (else
``OUTCAR*`` files) is one calculation and one ``group`` (its path relative to
the folder given); ids are ``<file relative to the folder given>#<step>``.
Electronic convergence is not checked (ase's readers do not report it).
"""

from __future__ import annotations

import os
from pathlib import Path

from tui_ft.core.data.frames.ase_files import frame_from_atoms
from tui_ft.core.data.frames.frame import Collector, FrameError, FrameSet, hash_files


def _kind(name: str) -> str | None:
    low = name.lower()
    if low.startswith("vasprun") and (".xml" in low):
        return "vasp-xml"
    if low.startswith("outcar"):
        return "vasp-out"
    return None


def calculation_files(root: Path) -> list[Path]:
    """The VASP output files under ``root``: per folder its vasprun files, or else its OUTCAR files."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        names = sorted(n for n in names if _kind(n))
        xml = [n for n in names if _kind(n) == "vasp-xml"]
        found += [Path(folder) / n for n in (xml or names)]
    return found


def _steps(n: int, vasp_steps) -> range | list[int]:
    if vasp_steps == "all":
        return range(n)
    if vasp_steps == "last":
        return [n - 1] if n else []
    if isinstance(vasp_steps, int) and not isinstance(vasp_steps, bool) and vasp_steps >= 1:
        return range(0, n, vasp_steps)
    raise FrameError(f"vasp_steps: expected 'all', 'last' or a whole number >= 1, got {vasp_steps!r}")


def read(path: Path, *, vasp_steps: str | int = "all") -> FrameSet:
    import ase.io

    _steps(0, vasp_steps)  # a bad option fails before any file is read
    if path.is_dir():
        root, files = path, calculation_files(path)
        if not files:
            raise FrameError(f"{path}: no vasprun.xml or OUTCAR files in this folder or below")
    else:
        root, files = path.parent, [path]
    out = Collector(path, "vasp")
    for file in files:
        rel = file.relative_to(root)
        group = rel.parent.as_posix() if rel.parent != Path(".") else (root.resolve().name or str(root))
        try:
            images = ase.io.read(file, index=":", format=_kind(file.name) or "vasp-xml")
        except Exception as exc:  # noqa: BLE001 - any reader failure is one message naming the file
            raise FrameError(f"{file}: not readable as a VASP output ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
        if not images:
            raise FrameError(f"{file}: no ionic steps")
        for k in _steps(len(images), vasp_steps):
            ident, where = f"{rel.as_posix()}#{k}", f"{file} ionic step {k}"
            out.add(lambda: frame_from_atoms(images[k], ident, group, where), where, ident)
    return out.build(hash_files(files, root))
