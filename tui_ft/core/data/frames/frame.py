"""``Frame``, ``FrameSet``, ``FrameError``, ``check_frames`` and the stress unit/sign/order conversions.

Every stress inside a :class:`Frame` is a 3x3 matrix in GPa with the ASE/pymatgen
sign (positive = tensile), the sign and unit of CHGNet's own ``"s"`` output. The
readers convert on the way in with the functions here.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

LABELS = ("energy", "forces", "stress", "magmom")
LETTERS = {"e": "energy", "f": "forces", "s": "stress", "m": "magmom"}  # chgnet's Trainer(targets="efsm")

# Voigt orders (six components of a symmetric 3x3)
ASE_ORDER = ("xx", "yy", "zz", "yz", "xz", "xy")  # ase's Atoms.get_stress(), extxyz, ase.db
VASP_ORDER = ("xx", "yy", "zz", "xy", "yz", "zx")  # VASP's OUTCAR "in kB" line
KBAR_TO_GPA = 0.1
_AXIS = {"x": 0, "y": 1, "z": 2}


class FrameError(ValueError):
    """A frame file that cannot be used, or frames that lack what is needed: one line naming the file."""


def voigt_to_matrix(values: Any, order: Iterable[str] = ASE_ORDER) -> np.ndarray:
    """Six stress components in the given order (``("xx", "yy", "zz", "yz", "xz", "xy")``) as a symmetric 3x3."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    order = tuple(order.split()) if isinstance(order, str) else tuple(order)
    if v.size != 6 or len(order) != 6:
        raise ValueError(f"expected 6 Voigt components in a 6-name order, got {v.size} values, order {order}")
    m = np.full((3, 3), np.nan)
    for x, name in zip(v, order):
        i, j = _AXIS[name[0]], _AXIS[name[1]]
        m[i, j] = m[j, i] = x
    if np.isnan(m).any() and not np.isnan(v).any():
        raise ValueError(f"order {order} does not name all six components of a symmetric 3x3")
    return m


def stress_matrix(values: Any, order: Iterable[str] = ASE_ORDER) -> np.ndarray:
    """A stress as a 3x3: six values in ``order``, or nine / 3x3 as they are; any other shape is returned
    unchanged, for :func:`check_frames` to report."""
    a = as_array(values, "stress")
    if a.size == 6 and a.ndim <= 2 and 6 in a.shape:
        return voigt_to_matrix(a, order)
    if a.size == 9:
        return a.reshape(3, 3)
    return a


def vasp_kbar_to_gpa(stress: Any) -> np.ndarray:
    """VASP stress (kbar, positive = compressive) -> GPa with the ASE sign (positive = tensile): x -0.1.

    This is the conversion chgnet's ``StructureData`` / ``StructureJsonData`` apply (``stress * -0.1``)."""
    return -KBAR_TO_GPA * np.asarray(stress, dtype=np.float64)


def ev_a3_to_gpa(stress: Any) -> np.ndarray:
    """ASE stress (eV/A^3, positive = tensile) -> GPa, same sign (``/ ase.units.GPa``, x 160.2177)."""
    from ase.units import GPa

    return np.asarray(stress, dtype=np.float64) / GPa


def as_array(value: Any, field: str) -> np.ndarray:
    """``value`` as a float array; ``ValueError("field F: ...")`` when it is not numbers."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field {field}: not an array of numbers ({' '.join(str(exc).split())[:80]})") from None
    return a


def as_energy(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"field energy: {value!r} is not a number")
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError):
        raise ValueError(f"field energy: {value!r} is not a number") from None


@dataclasses.dataclass
class Frame:
    """One labelled structure. Units: energy eV (total, whole cell), forces eV/A (n, 3), stress GPa (3, 3)
    ASE sign (positive = tensile), magmom muB (n,). ``None``: the label is not in the source."""

    id: str
    group: str
    structure: Any  # pymatgen Structure; site order = row order of forces / magmom
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    magmom: np.ndarray | None = None
    where: str = ""

    @property
    def energy_per_atom(self) -> float | None:
        """``energy / number of sites`` (eV/atom), or None without an energy."""
        return None if self.energy is None else self.energy / len(self.structure)

    def has(self, label: str) -> bool:
        """Whether the frame carries ``label`` (``energy`` / ``forces`` / ``stress`` / ``magmom`` or e/f/s/m)."""
        return getattr(self, _label(label)) is not None


def _label(label: str) -> str:
    name = LETTERS.get(label, label)
    if name not in LABELS:
        raise ValueError(f"unknown label {label!r} (known: {', '.join(LABELS)} or {''.join(LETTERS)})")
    return name


def need_labels(need: Iterable[str] | str) -> set[str]:
    """``{"energy", "forces"}`` from ``"ef"``, ``{"e", "forces"}``, ...; ``ValueError`` for an unknown label."""
    if isinstance(need, str):
        need = list(need) if need and all(c in LETTERS for c in need) else [need]
    return {_label(x) for x in need}


@dataclasses.dataclass
class FrameSet:
    """Frames read from one source. ``bad``: frames left out (frame id, or its position when there is no id,
    -> ``"WHERE: reason"``); ``sha256``: of the source bytes (for a folder: its files' names and bytes)."""

    source: Path
    fmt: str
    frames: list[Frame]
    bad: dict[int | str, str]
    sha256: str
    notes: list[str] = dataclasses.field(default_factory=list)  # what the reader chose and why, said once by the run
    read_with: dict[str, str] = dataclasses.field(default_factory=dict)  # options the reader chose ({"shear_order": ...})

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def labels(self) -> dict[str, int]:
        """Number of frames that carry each label: ``{"energy": 25, "forces": 25, "stress": 25, "magmom": 0}``."""
        return {name: sum(getattr(f, name) is not None for f in self.frames) for name in LABELS}

    def n_atoms(self) -> int:
        return sum(len(f.structure) for f in self.frames)

    def summary(self, *, limit: int | None = 20) -> str:
        """A header line and one line per frame left out (``""`` when none)."""
        if not self.bad:
            return ""
        items = list(self.bad.items())
        shown = items if limit is None else items[:limit]
        lines = [f"{self.source}: {len(items)} frames left out:"] + [f"  {why}" for _, why in shown]
        if len(shown) < len(items):
            lines.append(f"  ... and {len(items) - len(shown)} more")
        return "\n".join(lines)


def frame_problem(frame: Frame, need: Iterable[str]) -> str | None:
    """The first problem of ``frame`` with the labels in ``need`` (``"field forces: expected shape (8, 3),
    got (7, 3)"``), or None."""
    n = len(frame.structure)
    shapes = {"forces": (n, 3), "stress": (3, 3), "magmom": (n,)}
    for name in [x for x in LABELS if x in need_labels(need)]:
        value = getattr(frame, name)
        if value is None:
            return f"field {name}: missing"
        if name == "energy":
            if not math.isfinite(value):
                return f"field energy: not a finite number ({value!r})"
            continue
        arr = np.asarray(value)
        if arr.shape != shapes[name]:
            return f"field {name}: expected shape {shapes[name]}, got {arr.shape}"
        if not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            return f"field {name}: not finite at {bad} ({float(arr[bad])!r})"
    return None


def check_frames(frames: FrameSet, need: Iterable[str] | str, *, skip_bad: bool = False) -> FrameSet:
    """Check every frame for the labels in ``need`` (a missing label, a wrong shape -- also an atom count
    that does not match the structure --, NaN or inf).

    Without ``skip_bad`` the first bad frame raises :class:`FrameError` with one line
    ``"FILE frame K: field forces: expected shape (8, 3), got (7, 3)"``. With ``skip_bad`` the bad frames are
    left out and added to ``bad`` (``FrameSet.summary()`` lists them once); the set returned is a new one.
    """
    need = need_labels(need)
    good: list[Frame] = []
    bad = dict(frames.bad)
    first = None
    for k, frame in enumerate(frames.frames):
        problem = frame_problem(frame, need)
        if problem is None:
            good.append(frame)
            continue
        line = f"{frame.where or f'{frames.source} frame {k}'}: {problem}"
        first = first or line
        bad[frame.id] = line
    n_bad = len(frames.frames) - len(good)
    if n_bad and not skip_bad:
        more = f" (and {n_bad - 1} more bad frames; skip_bad leaves them out)" if n_bad > 1 else ""
        raise FrameError(first + more)
    if not good:
        raise FrameError(f"{frames.source}: no frame has {', '.join(sorted(need))} ({len(bad)} left out)")
    return dataclasses.replace(frames, frames=good, bad=bad)


class Collector:
    """Frames and bad frames of one source; every id seen twice marks all its frames bad."""

    def __init__(self, source: Path, fmt: str) -> None:
        self.source, self.fmt = source, fmt
        self.frames: list[Frame] = []
        self.bad: dict[int | str, str] = {}
        self._n = 0

    def add(self, make, where: str, ident: str | None = None) -> None:
        """``make()`` returns a Frame; a ValueError it raises records the frame as bad, named ``where``."""
        self._n += 1
        try:
            self.frames.append(make())
        except ValueError as exc:
            self.bad[ident if ident is not None else self._n - 1] = f"{where}: {exc}"

    def build(self, sha256: str, notes: Iterable[str] = (), read_with: dict[str, str] | None = None) -> FrameSet:
        if not self.frames and not self.bad:
            raise FrameError(f"{self.source}: no frames")
        seen: dict[str, Frame] = {}
        dup: set[str] = set()
        for f in self.frames:
            if f.id in seen:
                dup.add(f.id)
                self.bad[f.id] = f"{f.where}: duplicate id {f.id!r} (also {seen[f.id].where})"
            seen.setdefault(f.id, f)
        frames = [f for f in self.frames if f.id not in dup]
        return FrameSet(self.source, self.fmt, frames, self.bad, sha256, list(notes), dict(read_with or {}))


def atoms_to_structure(atoms) -> Any:
    """An ase ``Atoms`` as a pymatgen ``Structure`` (positions, cell, species only; site order kept);
    ``ValueError`` when it is not a periodic crystal (CHGNet needs a lattice)."""
    from ase import Atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    if len(atoms) == 0:
        raise ValueError("no atoms")
    if not all(atoms.pbc) or atoms.cell.volume <= 1e-8:
        raise ValueError(f"not a periodic crystal (pbc={list(map(bool, atoms.pbc))}, "
                         f"cell volume {atoms.cell.volume:.3g} A^3); CHGNet needs a lattice")
    bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    return AseAtomsAdaptor.get_structure(bare)


def structure_from_dict(d: Any) -> Any:
    from pymatgen.core import Structure

    if not isinstance(d, dict):
        raise ValueError(f"field structure: expected a pymatgen Structure dict, got {type(d).__name__}")
    try:
        s = Structure.from_dict(d)
    except Exception as exc:  # noqa: BLE001 - any failure is one reason for this frame
        raise ValueError(f"field structure: not a pymatgen Structure ({type(exc).__name__}: {exc})"[:200]) from None
    if len(s) == 0:
        raise ValueError("field structure: no sites")
    return s


def hash_files(files: Iterable[Path], root: Path) -> str:
    """SHA-256 of one file's bytes, or for several: of their names (relative to ``root``, sorted) and bytes."""
    files = sorted(set(files), key=lambda p: p.relative_to(root).as_posix())
    h = hashlib.sha256()
    for p in files:
        if len(files) > 1:
            name = p.relative_to(root).as_posix().encode()
            h.update(len(name).to_bytes(8, "little") + name + p.stat().st_size.to_bytes(8, "little"))
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> Any:
    """A JSON or gzipped JSON file; FrameError naming the file when it is not JSON."""
    import json

    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"{path}: not a JSON file ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
