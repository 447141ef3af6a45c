"""A CSV with a header, a structure-file column and a target column.

The structure column is the first of ``structure_file``, ``structure``, ``file``,
``path``, ``filename``, ``cif`` found in the header; the id column the first of
``id``, ``material_id``, ``mp_id``, ``name`` (else the structure file's name).
Relative paths are relative to the CSV's folder. Structure files are read with
pymatgen (ase as a fallback). Per-row problems are recorded with the line
number; a header without the needed columns stops the load with a
:class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tui_ft.core.data.dataset import Dataset, DataError
from tui_ft.core.data.sources.common import RowBuilder, hash_files, parse_number, read_structure

FILE_COLUMNS = ("structure_file", "structure", "file", "path", "filename", "cif")
ID_COLUMNS = ("id", "material_id", "mp_id", "name")


def load(path: Path | str, target: str, *, need_target: bool = True) -> Dataset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DataError(f"{path}: empty CSV (expected a header line)")
    reader.fieldnames = header
    lower = {h.lower(): h for h in header}
    fcol = next((lower[c] for c in FILE_COLUMNS if c in lower), None)
    if fcol is None:
        raise DataError(f"{path}, line 1: no structure-file column (expected one of {', '.join(FILE_COLUMNS)}; got {', '.join(header)})")
    if need_target and target not in header:
        raise DataError(f"{path}, line 1: no column {target!r} (columns: {', '.join(header)})")
    icol = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    base = path.parent
    b = RowBuilder()
    used = {path.resolve()}
    try:
        for rec in reader:
            line = reader.line_num
            if None in rec:
                raise DataError(f"{path}, line {line}: more fields than the header's {len(header)}")
            fname = (rec.get(fcol) or "").strip()
            ident = (rec.get(icol) or "").strip() if icol else Path(fname).name
            if not ident and not fname:
                continue
            problem = None
            y = None
            if target in rec:
                try:
                    y = parse_number(rec[target] if rec[target] is not None else "")
                except ValueError as exc:
                    if need_target:
                        problem = str(exc)
            structure = None
            fp = (base / fname) if fname else None
            if fp is None:
                problem = problem or "empty structure-file cell"
            else:
                if fp.is_file():
                    used.add(fp.resolve())
                try:
                    structure = read_structure(fp)
                except ValueError as exc:
                    problem = problem or str(exc)
            b.add(ident or fname, structure, y, problem, f"line {line}")
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    root = Path(*_common_root(used))
    return b.build(path, target, hash_files(used, root), need_target=need_target)


def _common_root(files: set[Path]) -> tuple[str, ...]:
    parts = [p.resolve().parent.parts for p in files]
    out: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return tuple(out) or ("/",)
