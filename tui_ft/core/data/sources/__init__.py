"""Data sources: one loader interface over every input format.

``load_source(path, target)`` returns a :class:`tui_ft.core.data.dataset.Dataset`
(ids, structure dicts parsed lazily, targets, ``sha256``, ``bad_rows``), the
same shape as ``data.load_matbench``, whatever the format:

``matbench``  Matbench-layout JSON (``.json`` / ``.json.gz``), today's format.
``idprop``    a folder with ``id_prop.csv`` (``id,target``, no header) and one
              structure file per id (CGCNN / ALIGNN layout).
``ase``       an extxyz file or any multi-frame file ``ase.io.read(path, ":")``
              reads; the target from ``atoms.info[target]``.
``csv``       a CSV with a header, a structure-file column and a target column.
``structures`` (inputs to ``predict`` only) a single structure file or a folder
              of structure files without ``id_prop.csv``; no targets.

A format is one module with ``load(path, target, *, need_target=True) -> Dataset``.
Rows that cannot be used (an unreadable file, a duplicate id, an id without a
structure file, a structure without a target, a target that is not a number)
are kept in ``bad_rows`` (row -> reason naming the line or frame), reported
together by :func:`summary` and left out of every split, as for Matbench files.
A file that cannot be read at all raises ``DataError`` naming the file (and line).

``per_atom=True`` divides every target by its structure's number of sites
(for totals such as a total energy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from tui_ft.core.data.dataset import Dataset, DataError
from tui_ft.core.data.sources.common import (
    RowBuilder, divide_by_atoms, file_problem, hash_files, problems, read_structure, summary,
)
from tui_ft.core.data.sources.splits import (
    SPLITS, check_source_splits, concat_datasets, held_out_splits, make_source_splits, random_split,
)

FORMATS = ("matbench", "idprop", "ase", "csv", "structures")
# single files read as one structure (pymatgen's names); everything else that is not JSON/CSV goes to ase
STRUCTURE_SUFFIXES = (".cif", ".mcif", ".vasp", ".poscar", ".cssr", ".xsf", ".res", ".mcsqs")

__all__ = [
    "FORMATS", "SPLITS", "DataError", "Dataset", "check_source_splits", "concat_datasets", "detect_format", "held_out_splits",
    "load_source", "load_structures", "load_training_data", "make_source_splits", "problems", "random_split",
    "summary",
]


def _loader(fmt: str):
    if fmt == "matbench":
        from tui_ft.core.data.sources import matbench as mod
    elif fmt == "idprop":
        from tui_ft.core.data.sources import idprop as mod
    elif fmt == "ase":
        from tui_ft.core.data.sources import ase_frames as mod
    elif fmt == "csv":
        from tui_ft.core.data.sources import csv_files as mod
    else:
        raise DataError(f"unknown data format {fmt!r} (known: {', '.join(FORMATS)})")
    return mod.load


def detect_format(path: Path | str) -> str:
    """The format of ``path`` from what it is: folder with ``id_prop.csv`` -> ``idprop``; other folder
    -> ``structures``; ``*.json[.gz]`` -> ``matbench``; ``*.csv`` -> ``csv``; a single structure file
    (``*.cif``, ``*.vasp``, ``POSCAR*``, ...) -> ``structures``; anything else -> ``ase``."""
    p = Path(path)
    if p.is_dir():
        return "idprop" if (p / "id_prop.csv").exists() else "structures"  # a FIFO id_prop.csv: refused by idprop
    if not p.exists():
        raise DataError(f"{p}: no such data file or folder")
    name = p.name.lower()
    if name.endswith((".json", ".json.gz")):
        return "matbench"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(STRUCTURE_SUFFIXES) or "poscar" in name or "contcar" in name:
        return "structures"
    return "ase"


def load_source(
    path: Path | str, target: str, *, format: str | None = None, per_atom: bool = False, need_target: bool = True
) -> Dataset:
    """Read any supported source into a :class:`Dataset` (see the module docstring).

    ``format`` overrides :func:`detect_format`; ``need_target=False`` (prediction)
    does not mark rows without a target as bad.
    """
    p = Path(path)
    fmt = format or detect_format(p)
    if not p.is_dir():
        why = file_problem(p)
        if why:  # a FIFO would hang the reader, /dev/zero never ends
            raise DataError(f"{p}: {'no such data file or folder' if why == 'no such file' else why}")
    if fmt == "structures":
        ds = load_structures([p], target)
    else:
        ds = _loader(fmt)(p, target, need_target=need_target)
    if per_atom:
        divide_by_atoms(ds)
    return ds


def _structure_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def structure_ids(files: Sequence[Path]) -> list[str]:
    """The id of each structure file: its path relative to the folder all of them share, so that
    ids stay unique where names repeat (``r1/CONTCAR``, ``r2/CONTCAR``); a lone file or the files of
    one folder keep their names. The same file given twice gets one id twice (a duplicate)."""
    absolute = [Path(os.path.abspath(f)) for f in files]
    if not absolute:
        return []
    common = Path(os.path.commonpath([str(f.parent) for f in absolute]))
    return [f.relative_to(common).as_posix() for f in absolute]


def load_structures(paths: Iterable[Path | str], target: str = "") -> Dataset:
    """Structure files (and folders of them) without targets, for ``predict``; ids are the files'
    paths relative to the folder they share (:func:`structure_ids`)."""
    paths = [Path(p) for p in paths]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += _structure_files(p)
        elif p.is_file():
            files.append(p)
        else:
            why = file_problem(p)
            raise DataError(f"{p}: {'no such file or folder' if why == 'no such file' else why}")
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no structure files")
    ids = structure_ids(files)
    files = [f.resolve() for f in files]
    b = RowBuilder()
    for ident, f in zip(ids, files):
        try:
            b.add(ident, read_structure(f), None)
        except ValueError as exc:
            b.add(ident, None, None, str(exc))
    root = Path("/")
    base = paths[0] if len(paths) == 1 else Path.cwd()
    return b.build(base, target, hash_files(files, root), need_target=False)


def load_training_data(
    path: Path | str, target: str, *, format: str | None = None, per_atom: bool = False,
    test_path: Path | str | None = None, test_format: str | None = None,
) -> tuple[Dataset, int]:
    """A run's data: ``(dataset, n_held_out)``. With ``test_path`` (``data.test_source``) the
    test file's rows follow the training file's (:func:`concat_datasets`, ids checked disjoint)
    and ``n_held_out`` is their number; pass it to :func:`make_source_splits`."""
    ds = _load_labelled(path, target, format, per_atom, "data.source")
    if not test_path:
        return ds, 0
    test = _load_labelled(test_path, target, test_format, per_atom, "data.test_source")
    clash = set(ds.ids) & set(test.ids)
    if clash and all(_AUTO_ID.fullmatch(i) for i in clash):  # frame-K of two extxyz files: name them by file
        name = Path(test_path).name
        test.ids = [f"{name}:{i}" for i in test.ids]
    both = concat_datasets(ds, test)
    mark_leaks(both, len(ds), test.path)
    return both, len(test)


_AUTO_ID = re.compile(r"frame-\d+")


def _load_labelled(path: Path | str, target: str, format: str | None, per_atom: bool, field: str) -> Dataset:
    """A source with targets: a folder of structure files without ``id_prop.csv`` (or one structure
    file) has none, and is refused rather than read as rows whose every target is missing."""
    p = Path(path)
    fmt = format or detect_format(p)
    if fmt == "structures":
        what = "folder has no id_prop.csv" if p.is_dir() else "is a single structure file"
        raise DataError(f"{p}: {field}: this {what}, so it has no {target!r} targets; give a folder with "
                        "id_prop.csv (id,target rows), a CSV with a target column, an extxyz file or Matbench JSON")
    return load_source(p, target, format=fmt, per_atom=per_atom)


def mark_leaks(ds: Dataset, n_train: int, test_path: Path | str = "data.test_source") -> dict[int, int]:
    """Mark each held-out row (rows ``n_train..``) whose structure is a training row's under
    another id (:func:`tui_ft.core.data.leaks.find_leaks`) as a bad row naming that id, so that the
    pre-run check refuses it (or, with ``skip_bad_rows``, the run leaves it out and says so).
    Returns ``{row: training row}``."""
    from tui_ft.core.data.leaks import find_leaks, leak_message

    entries = list(getattr(ds.structures, "_dicts", None) or ds.structures)
    bad = ds.bad_rows
    train = [None if r in bad else entries[r] for r in range(n_train)]
    test = [None if r in bad else entries[r] for r in range(n_train, len(ds))]
    found = find_leaks(train, test, matcher=True)
    out = {}
    for j, i in found.items():
        row = n_train + j
        ds.bad_targets[row] = f"test row from {test_path}: {leak_message(ds.ids[row], ds.ids[i])}"
        out[row] = i
    return out
