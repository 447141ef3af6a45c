"""A folder with ``id_prop.csv`` and one structure file per id (the CGCNN / ALIGNN layout).

``id_prop.csv`` has ``id,target`` rows and no header. The structure of id ``X``
is the folder's file named ``X`` exactly (ALIGNN lists file names such as
``POSCAR-JVASP-1002.vasp``) or, failing that, the one file whose name without
its extension is ``X`` (``X.cif``, ``X.vasp``, ``X.json``, ...). Files are read
with pymatgen's ``Structure.from_file`` (ase's reader as a fallback).

Per-row problems (no structure file, a file that does not parse, several
files for one id, a target that is not a number, a duplicate id) are recorded
in the dataset's ``bad_rows`` with the line number (all of a row's problems, e.g.
no structure file and a target that is not a number) and left out of every split;
a line without exactly two fields stops the load with a :class:`DataError`
naming the file and line. A first line whose second field is a word (not a
number, ``nan``, ``inf`` or empty) and whose id has no structure file is taken for
a header (``id,target``) and skipped; ``mp-1,`` or ``mp-1,nan`` is a row with a bad
target. ``POSCAR-<id>`` / ``CONTCAR-<id>`` (optionally ``.vasp``) name id's file too.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tui_ft.core.data.dataset import Dataset, DataError
from tui_ft.core.data.sources.common import RowBuilder, file_problem, hash_files, parse_number, read_structure

ID_PROP = "id_prop.csv"
_VASP_PREFIX = re.compile(r"(POSCAR|CONTCAR)[-_.]", re.IGNORECASE)
# a first line is a header when its second field is a word (a column name such as "target" or
# "e_form"), never a number, "nan"/"inf" or empty: those are data rows with a bad target
_HEADER_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_ ()/.\-]*")


def _index(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    by_name: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if not p.is_file() or p.name == ID_PROP or p.name.startswith("."):
            continue
        by_name[p.name] = p
        stem = p.name
        for suf in reversed(p.suffixes):  # x.cif.gz -> x, x.cif -> x
            if stem.endswith(suf):
                stem = stem[: -len(suf)]
        by_stem.setdefault(stem, []).append(p)
        if p.stem != stem:
            by_stem.setdefault(p.stem, []).append(p)
        m = _VASP_PREFIX.match(stem)
        if m and m.end() < len(stem):  # POSCAR-<id>, CONTCAR_<id>, POSCAR-<id>.vasp
            by_stem.setdefault(stem[m.end():], []).append(p)
    return by_name, by_stem


def _rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{csv_path}: no such file (a structure folder needs {ID_PROP} with id,target rows)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: unreadable ({exc})") from None
    out = []
    try:
        reader = csv.reader(text.splitlines())
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != 2:
                raise DataError(
                    f"{csv_path}, line {line}: expected 2 fields (id,target), got {len(fields)}: {','.join(fields)[:80]!r}"
                )
            out.append((line, [f.strip() for f in fields]))
    except csv.Error as exc:
        raise DataError(f"{csv_path}, line {reader.line_num}: malformed CSV ({exc})") from None
    return out


def _find(ident: str, by_name: dict[str, Path], by_stem: dict[str, list[Path]]) -> tuple[Path | None, str | None]:
    if ident in by_name:
        return by_name[ident], None
    cands = sorted(set(by_stem.get(ident, [])))
    if not cands:
        return None, "no structure file (expected a file named after the id, e.g. " f"{ident}.cif)"
    if len(cands) > 1:
        return None, "several structure files: " + ", ".join(p.name for p in cands)
    return cands[0], None


def _is_header_word(value: str) -> bool:
    if not _HEADER_WORD.fullmatch(value):
        return False
    try:
        float(value)  # "nan", "inf", "Infinity": a number (not finite), so a data row
    except ValueError:
        return True
    return False


def load(path: Path | str, target: str = "target", *, need_target: bool = True) -> Dataset:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    csv_path = folder / ID_PROP
    why = file_problem(csv_path)
    if why and why != "no such file":  # a FIFO would hang the read
        raise DataError(f"{csv_path}: {why}")
    rows = _rows(csv_path)
    if not rows:
        raise DataError(f"{csv_path}: empty (no id,target rows)")
    by_name, by_stem = _index(folder)
    b = RowBuilder()
    used: set[Path] = {csv_path}
    for k, (line, (ident, value)) in enumerate(rows):
        where = f"line {line}"
        if not ident:
            raise DataError(f"{csv_path}, line {line}: empty id")
        file, problem = _find(ident, by_name, by_stem)
        try:
            y = parse_number(value)
        except ValueError as exc:
            if k == 0 and file is None and _is_header_word(value):
                continue  # a header line such as "id,target"
            y = None
            if need_target:  # both problems of a row are said: the file and the target
                problem = f"{problem}; {exc}" if problem else str(exc)
        structure = None
        if file is not None:
            used.add(file)
            try:
                structure = read_structure(file)
            except ValueError as exc:
                problem = f"{exc}; {problem}" if problem else str(exc)
        b.add(ident, structure, y, problem, where)
    return b.build(folder, target, hash_files(used, folder), need_target=need_target)
