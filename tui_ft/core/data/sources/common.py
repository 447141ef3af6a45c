"""Pieces shared by the source formats: reading one structure file, hashing, building a Dataset.

Structure files are read with pymatgen's ``Structure.from_file`` (CIF, POSCAR /
CONTCAR / ``*.vasp``, pymatgen JSON, XSF, ...); a file pymatgen does not
recognise by its name is read with ``ase.io.read`` and converted with
pymatgen's ``AseAtomsAdaptor``. Nothing here parses a file format by hand.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tui_ft.core.data.dataset import MAX_ABS_TARGET, Dataset, DataError, LazyStructures


def reason_of(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def atoms_to_structure(atoms) -> Any:
    """An ase ``Atoms`` as a pymatgen ``Structure``; ``ValueError`` when it is not a periodic crystal."""
    from pymatgen.io.ase import AseAtomsAdaptor

    if not all(atoms.pbc) or atoms.cell.volume <= 1e-8:
        raise ValueError(
            f"not a periodic crystal (pbc={list(map(bool, atoms.pbc))}, cell volume {atoms.cell.volume:.3g} A^3); "
            "CHGNet needs a lattice"
        )
    return AseAtomsAdaptor.get_structure(atoms)


def read_structure(path: Path | str) -> Any:
    """One structure file as a pymatgen ``Structure`` (pymatgen's reader first, then ase's).

    Raises ``ValueError`` naming the file when neither reader can use it.
    """
    path = Path(path)
    why = file_problem(path)
    if why:
        raise ValueError(f"{path.name}: {why}")
    with warnings.catch_warnings():  # pymatgen's and ase's parser warnings: the reason goes into one line instead
        warnings.simplefilter("ignore")
        s = _read_structure(path)
    if _is_poscar_name(path.name):
        _check_poscar_counts(path, len(s))
    if not s.is_ordered:
        k, site = next((k, site) for k, site in enumerate(s) if not site.is_ordered)
        occ = " ".join(f"{sp}:{x:g}" for sp, x in site.species.items())
        raise ValueError(
            f"{path.name}: partial occupancy (disorder) at site {k} ({occ}); CHGNet needs an ordered structure "
            "(one element per site, occupancy 1): order it first, e.g. with pymatgen's "
            "OrderDisorderedStructureTransformation"
        )
    return s


def file_problem(path: Path | str) -> str | None:
    """Why ``path`` is not a regular file that can be read to its end, or None: missing, a folder,
    a pipe (FIFO, reading it would wait for a writer), a device (``/dev/zero`` never ends), a socket.
    Checked with ``stat`` so that nothing is opened."""
    import os

    from tui_ft.core.common.files import entry_kind

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    kind = entry_kind(st.st_mode)
    if kind is None:
        return None
    return "is a folder, not a file" if kind == "a folder" else f"is {kind}, not a regular file"


def _is_poscar_name(name: str) -> bool:
    low = name.lower()  # the names pymatgen's Structure.from_file reads as VASP POSCAR
    return "poscar" in low or "contcar" in low or low.endswith(".vasp")


def _check_poscar_counts(path: Path, n_read: int) -> None:
    """``ValueError`` when a POSCAR has more coordinate lines than its counts line says: pymatgen (and
    ase) read only as many lines as the counts add up to, so the rest of the atoms would be lost
    silently. The line after the ``n_read`` coordinates must be blank (velocities follow) or the end."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    if len(lines) < 8:
        return

    def ints(line: str) -> bool:
        toks = line.split()
        return bool(toks) and all(t.isdigit() for t in toks)

    i = 5 if ints(lines[5]) else 6  # the counts line (line 6 names the elements in VASP 5)
    if i >= len(lines) or not ints(lines[i]):
        return
    counts_line = i + 1
    i += 1
    if i < len(lines) and lines[i].strip()[:1] in ("s", "S"):  # Selective dynamics
        i += 1
    first = i + 1  # after the Direct / Cartesian line
    after = first + n_read
    if after < len(lines) and lines[after].strip():
        toks = lines[after].split()
        try:
            [float(x) for x in toks[:3]]
        except ValueError:
            return
        if len(toks) >= 3:
            extra = 0
            for line in lines[after:]:
                if not line.strip():
                    break
                extra += 1
            raise ValueError(
                f"{path.name}, line {after + 1}: the counts line (line {counts_line}) adds up to {n_read} atoms but "
                f"{n_read + extra} coordinate lines follow; fix the counts (reading {n_read} would drop atoms)"
            )


def _read_structure(path: Path) -> Any:
    from pymatgen.core import Structure

    try:
        s = Structure.from_file(path)
    except Exception as exc:  # noqa: BLE001 - fall back to ase, then report
        first = exc
        try:
            import ase.io

            frames = ase.io.read(path, index=":")
            if len(frames) != 1:
                raise ValueError(f"{len(frames)} frames in one structure file") from None
            s = atoms_to_structure(frames[0])
        except Exception as exc2:  # noqa: BLE001
            if "Unrecognized" in str(first) or "not supported" in str(first).lower():
                raise ValueError(f"{path.name}: unreadable structure ({reason_of(exc2)})") from None
            raise ValueError(f"{path.name}: unreadable structure ({reason_of(first)})") from None
    if len(s) == 0:
        raise ValueError(f"{path.name}: structure has no sites")
    return s


def hash_files(files: Iterable[Path], root: Path) -> str:
    """SHA-256 over the files' names (relative to ``root``, sorted) and bytes."""
    h = hashlib.sha256()
    for p in sorted(set(files), key=lambda p: p.relative_to(root).as_posix()):
        name = p.relative_to(root).as_posix().encode()
        h.update(len(name).to_bytes(8, "little"))
        h.update(name)
        data = p.read_bytes()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def parse_number(text: Any) -> float:
    """A finite float with ``|value| <= MAX_ABS_TARGET`` from a cell / info value; ``ValueError``
    saying what was found otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"target {text!r} is not a number")
    if isinstance(text, np.ndarray) and text.size == 1:
        text = text.item()
    try:
        v = float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise ValueError(f"target {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"target {text!r} is not a finite number")
    if abs(v) > MAX_ABS_TARGET:  # see data.MAX_ABS_TARGET: squared in the loss it would overflow
        raise ValueError(f"target {text!r} is beyond +-{MAX_ABS_TARGET:g} (squared in the loss it would overflow)")
    return v


class RowBuilder:
    """Collects rows (id, structure dict or None, target or NaN, problem) into a :class:`Dataset`.

    Every id that occurs more than once is marked bad in all its rows: which of
    the targets is right cannot be known, so none of them is used.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.dicts: list[Any] = []
        self.targets: list[float] = []
        self.bad: dict[int, str] = {}
        self.where: list[str] = []  # "line 3", "frame 7": where each row came from

    def add(self, ident: str, structure: Any, target: float | None, problem: str | None = None, where: str = "") -> None:
        row = len(self.ids)
        self.ids.append(str(ident))
        self.dicts.append(structure.as_dict() if structure is not None and not isinstance(structure, dict) else structure)
        self.targets.append(float("nan") if target is None else float(target))
        self.where.append(where)
        if problem:
            self.bad[row] = problem
        elif structure is None:
            self.bad[row] = "no structure"

    def build(self, path: Path, target: str, sha256: str, *, need_target: bool = True) -> Dataset:
        if not self.ids:
            raise DataError(f"{path}: empty dataset (no rows)")
        first: dict[str, int] = {}
        for row, ident in enumerate(self.ids):
            if ident in first:
                other = first[ident]
                w0, w1 = self.where[other], self.where[row]
                self.bad[row] = f"duplicate id (also {w0})" if w0 else "duplicate id"
                self.bad[other] = f"duplicate id (also {w1})" if w1 else "duplicate id"
            else:
                first[ident] = row
        targets = np.asarray(self.targets, dtype=np.float64)
        if need_target:
            for row in np.flatnonzero(~np.isfinite(targets)).tolist():
                self.bad.setdefault(int(row), f"no {target!r} target")
        for row in np.flatnonzero(np.isfinite(targets) & (np.abs(targets) > MAX_ABS_TARGET)).tolist():
            self.bad.setdefault(int(row), f"target {targets[row]!r} is beyond +-{MAX_ABS_TARGET:g}")
        for row, w in enumerate(self.where):
            if w and row in self.bad and not self.bad[row].startswith(w):
                self.bad[row] = f"{w}: {self.bad[row]}"
        # a row whose structure was read has a problem with its target (or its id) only: that is
        # decided per run and must not reach the graph cache, which records structure failures only
        bad_structures = {r: why for r, why in self.bad.items() if self.dicts[r] is None or "duplicate id" in why}
        bad_targets = {r: why for r, why in self.bad.items() if r not in bad_structures}
        return Dataset(path, target, self.ids, LazyStructures(self.dicts, bad_structures), targets, sha256,
                       bad_structures=bad_structures, bad_targets=bad_targets)


def problems(ds: Dataset) -> list[tuple[str, str]]:
    """``[(id, reason), ...]`` for every row left out, in row order."""
    return [(ds.ids[r], ds.bad_rows[r]) for r in sorted(ds.bad_rows)]


def summary(ds: Dataset, *, limit: int | None = 20) -> str:
    """One summary of the rows left out: a header line, then one line per id ('' when none)."""
    probs = problems(ds)
    if not probs:
        return ""
    lines = [f"{ds.path}: {len(probs)} of {len(ds)} rows left out of every split:"]
    shown = probs if limit is None else probs[:limit]
    lines += [f"  {ident}: {why}" for ident, why in shown]
    if len(shown) < len(probs):
        lines.append(f"  ... and {len(probs) - len(shown)} more")
    return "\n".join(lines)


def divide_by_atoms(ds: Dataset) -> None:
    """Targets that are totals -> per atom (the number of sites is read from the structure dicts)."""
    dicts: Sequence[Any] = getattr(ds.structures, "_dicts", None) or [None] * len(ds)
    for row in range(len(ds)):
        d = dicts[row]
        n = len(d["sites"]) if isinstance(d, dict) and isinstance(d.get("sites"), list) else 0
        if n:
            ds.targets[row] = ds.targets[row] / n
        elif row not in ds.bad_rows:
            s = ds.structures[row]
            if s is not None:
                ds.targets[row] = ds.targets[row] / len(s)
