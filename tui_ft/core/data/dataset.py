"""Matbench-layout data: reading files, Matbench folds, splits, graph cache.

A Matbench file is (gzipped) JSON in pandas "split" orientation::

    {"index": [...ids...], "columns": ["structure", "<target>"], "data": [[structure_dict, value], ...]}

Folds follow Matbench exactly: ``KFold(n_splits=5, shuffle=True,
random_state=18012019)`` over the file's row order; fold k's test part is the
test set. The validation set is carved from the training part with a seeded
RNG, and ``fraction`` subsamples what remains for training, so the validation
set does not change with ``fraction`` and runs at different fractions compare.

Crystal graphs are built once with CHGNet's ``CrystalGraphConverter`` and
cached on disk (chunks of rows, keyed by the data file's hash and the
converter's settings). A structure that fails conversion is reported by its id
and left out of every split: never replaced by another one.
"""

from __future__ import annotations

import collections.abc
import gzip
import hashlib
import json
import math
import operator
import os
import pickle
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tui_ft.core.common.paths import DEMO_POTENTIAL_SOURCE, NAMED_SOURCES, Paths, data_source_path
from tui_ft.core.data.demo import ensure_demo_dataset

MATBENCH_SEED = 18012019
N_FOLDS = 5
KNOWN_SOURCES = NAMED_SOURCES  # "demo" and the Matbench tasks (tui_ft.core.common.paths)


class DataError(Exception):
    """A data file that cannot be used (with a message naming the file)."""


def resolve_data_source(source: str, paths: Paths | None = None, *, base: Path | None = None) -> Path:
    """Like :func:`data_source_path`, but the demo data is built (if needed) and its file returned."""
    paths = paths or Paths.default()
    path = data_source_path(source, paths, base=base)
    if path is None and source == DEMO_POTENTIAL_SOURCE:
        from tui_ft.core.data.demo_potential import ensure_demo_potential

        return ensure_demo_potential(paths)
    if path is None:
        return ensure_demo_dataset(paths)
    return path


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


_WS = re.compile(r"[ \t\n\r]*")


class _Compact:
    """A JSON object from a data row, held pickled (a fifth of the memory of the dicts)."""

    __slots__ = ("blob", "missing", "unknown_element")

    def __init__(self, value: dict[str, Any]):
        self.blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.missing = tuple(k for k in ("lattice", "sites") if k not in value)  # checked without unpickling
        self.unknown_element = _unknown_element(value)

    def value(self) -> Any:
        return pickle.loads(self.blob)  # our own bytes, made just above; never read from disk


_Z_OF: dict[str, int] = {}


def _unknown_element(sd: dict[str, Any]) -> str | None:
    """The first element of a structure dict that CHGNet does not know (Z above 94), as "Og (Z=118)",
    read from the dict without building a Structure (so a run's data check needs no parsing);
    ``None`` when all are known or the dict has another shape (parsing reports that)."""
    from tui_ft.core.data.graphstore import MAX_Z

    try:
        symbols = {sp["element"] for site in sd["sites"] for sp in site["species"]}
    except (KeyError, TypeError):
        return None
    for sym in sorted(s for s in symbols if isinstance(s, str)):
        z = _Z_OF.get(sym)
        if z is None:
            try:
                from pymatgen.core.periodic_table import Element

                z = Element(sym).Z
            except (ValueError, KeyError, AttributeError):
                z = 0  # not an element symbol: left to the parser to report
            _Z_OF[sym] = z
        if z > MAX_Z:
            return f"{sym} (Z={z})"
    return None


def _decode_split_json(text: str) -> dict[str, Any]:
    """Parse a top-level JSON object with :mod:`json`, row by row inside ``"data"``.

    Each element of ``data`` that is a list has its JSON objects (the structure
    dicts) stored as :class:`_Compact`, so the whole file is never held as Python
    dicts at once: 5,000 dev rows take ~15 MB instead of ~94 MB. Values are
    decoded by ``json.JSONDecoder.raw_decode``; only the punctuation between
    them is read here. Anything else than an object at the top is returned as is.
    """
    dec = json.JSONDecoder()
    i = _WS.match(text, 0).end()
    if text[i : i + 1] != "{":
        obj, end = dec.raw_decode(text, i)
        if text[_WS.match(text, end).end():]:
            raise ValueError(f"extra data at char {end}")
        return obj
    out: dict[str, Any] = {}
    i = _WS.match(text, i + 1).end()
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            key, i = dec.raw_decode(text, i)
            if not isinstance(key, str):
                raise ValueError(f"expected a key string at char {i}")
            i = _WS.match(text, i).end()
            if text[i : i + 1] != ":":
                raise ValueError(f"expected ':' at char {i}")
            i = _WS.match(text, i + 1).end()
            if key == "data" and text[i : i + 1] == "[":
                rows: list[Any] = []
                i = _WS.match(text, i + 1).end()
                if text[i : i + 1] == "]":
                    i += 1
                else:
                    while True:
                        rec, i = dec.raw_decode(text, i)
                        if isinstance(rec, list):
                            rec = [_Compact(v) if isinstance(v, dict) else v for v in rec]
                        rows.append(rec)
                        i = _WS.match(text, i).end()
                        c = text[i : i + 1]
                        i = _WS.match(text, i + 1).end()
                        if c == "]":
                            break
                        if c != ",":
                            raise ValueError(f"expected ',' or ']' in data at char {i}")
                out[key] = rows
            else:
                out[key], i = dec.raw_decode(text, i)
            i = _WS.match(text, i).end()
            c = text[i : i + 1]
            i = _WS.match(text, i + 1).end()
            if c == "}":
                break
            if c != ",":
                raise ValueError(f"expected ',' or '}}' at char {i}")
    if i < len(text):
        raise ValueError(f"extra data at char {i}")
    return out


MAX_DATA_CHARS = 1 << 31  # 2 Gi characters of JSON text (the whole Matbench mp_e_form file is ~0.4 Gi)
# |target| above this is left out as a bad target: squared in a float32 MSE a value must stay far from
# float32's 3.4e38 (1e6**2 = 1e12), and no per-atom property in these units (eV, eV/atom, GPa, K, cm^-1)
# comes near it; 1e300 or 1e20 would make epoch 0 NaN or infinite.
MAX_ABS_TARGET = 1e6


def check_regular_file(path: Path) -> None:
    """``DataError`` unless ``path`` is a regular file (a FIFO, ``/dev/zero`` or a folder would hang or
    never end); checked with ``stat`` so that nothing is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the data file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else (
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise DataError(f"{path}: data file is {kind}; expected a regular .json or .json.gz file")


def _where(ids: list[Any] | None, row: int) -> str:
    return f"data[{row}] (id {ids[row]!r})" if ids is not None and row < len(ids) else f"data[{row}]"


def _load_json(path: Path) -> dict[str, Any]:
    """The file as pandas "split" JSON, its table shape checked: ``index`` a list of ids (strings or
    whole numbers), ``columns`` a list of distinct strings, ``data`` a list of rows, each a list with
    one value per column, as many rows as ids. Anything else is one ``DataError`` naming the file and
    the field (and the row); what is inside a cell (structure, target) is checked per row later."""
    path = Path(path)
    check_regular_file(path)
    try:
        with _open_text(path) as fh:
            text = fh.read(MAX_DATA_CHARS + 1)
        if len(text) > MAX_DATA_CHARS:
            raise DataError(f"{path}: data file is larger than {MAX_DATA_CHARS} characters of JSON")
        obj = _decode_split_json(text)
        del text
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except (OSError, ValueError, EOFError, RecursionError, MemoryError) as exc:
        raise DataError(f"{path}: not a readable Matbench JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or not {"index", "columns", "data"} <= obj.keys():
        raise DataError(f"{path}: expected pandas 'split' JSON with keys index, columns, data")
    for key in ("index", "columns", "data"):
        if not isinstance(obj[key], list):
            raise DataError(f"{path}: {key}: expected a list, got {type(obj[key]).__name__}")
    cols = obj["columns"]
    for i, c in enumerate(cols):
        if not isinstance(c, str):
            raise DataError(f"{path}: columns[{i}]: expected a column name (a string), got {c!r}")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{path}: columns: column {dup[0]!r} appears more than once")
    ids = obj["index"]
    for i, ident in enumerate(ids):
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise DataError(f"{path}: index[{i}]: expected an id (a string or whole number), got {ident!r}")
    if len(ids) != len(obj["data"]):
        raise DataError(f"{path}: index has {len(ids)} entries but data has {len(obj['data'])}")
    for row, rec in enumerate(obj["data"]):
        if not isinstance(rec, list):
            raise DataError(f"{path}: {_where(ids, row)}: expected a row (a list of {len(cols)} values), "
                            f"got {type(rec).__name__}")
        if len(rec) != len(cols):
            raise DataError(f"{path}: {_where(ids, row)}: row has {len(rec)} values but there are "
                            f"{len(cols)} columns ({', '.join(cols)})")
    return obj


def resolve_source(source: str, paths: Paths | None = None) -> Path:
    """Map a preset's ``data.source`` to a file path (building the demo data if needed);
    see :func:`resolve_data_source`."""
    return resolve_data_source(source, paths)


def preset_source(source: str, paths: Paths | None = None) -> Path:
    """A preset's ``data.source`` / ``data.test_source`` as a path: a relative path is taken against
    the project root (``paths.root``), as the README says, not against the current folder (which
    is where a relative path given on the command line, e.g. ``tui-ft eval --data``, is taken)."""
    paths = paths or Paths.default()
    return resolve_data_source(source, paths, base=paths.root)


def read_columns(path: Path | str) -> list[str]:
    """The file's column names; ``ValueError`` if unreadable or empty (used by preset checks)."""
    try:
        obj = _load_json(Path(path))
    except DataError as exc:
        raise ValueError(str(exc)) from None
    if not obj["data"]:
        raise ValueError(f"{path}: empty dataset (no rows)")
    return [str(c) for c in obj["columns"]]


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LazyStructures(collections.abc.Sequence):
    """A file's structures, parsed into pymatgen ``Structure`` objects on first access.

    Parsing every structure is most of the time it takes to read a file (BENCHMARKS.md,
    section 3), and a run whose crystal graphs are cached needs none of them. The entries are held
    compactly (:class:`_Compact`) until :meth:`release` drops them (their graphs
    are cached); a released entry is read from the file again if it is asked for.
    A dict that does not parse reads as ``None``; its reason goes into ``bad``
    (the dataset's ``bad_structures``) then.
    """

    def __init__(self, dicts: list[Any], bad: dict[int, str], path: Path | None = None, column: int = 0):
        self._dicts = dicts
        self._bad = bad
        self._path = path
        self._column = column
        self._parsed: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._dicts)

    def _index(self, i) -> int:
        i = operator.index(i)
        if i < 0:
            i += len(self._dicts)
        if not 0 <= i < len(self._dicts):
            raise IndexError(i)
        return i

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = self._index(i)
        if i not in self._parsed:
            self._parsed[i] = self._parse(i)
        return self._parsed[i]

    def raw(self, i: int) -> Any:
        """Entry ``i`` as read from the file (a structure dict if the file is right)."""
        i = self._index(i)
        sd = self._dicts[i]
        if sd is _RELEASED:
            obj = _load_json(self._path)  # type: ignore[arg-type]
            for j, d in enumerate(self._dicts):
                if d is _RELEASED:
                    self._dicts[j] = obj["data"][j][self._column]
            sd = self._dicts[i]
        return sd.value() if isinstance(sd, _Compact) else sd

    def release(self, rows) -> None:
        """Drop the entries of ``rows`` (their graphs are cached); they are reread if asked for."""
        if self._path is None:
            return
        for r in rows:
            r = int(r)
            if self._dicts[r] is not None and not isinstance(self._dicts[r], dict):
                self._dicts[r] = _RELEASED
            self._parsed.pop(r, None)

    def _parse(self, i: int) -> Any:
        from pymatgen.core import Structure

        sd = self.raw(i)
        if not isinstance(sd, dict):
            return None  # recorded when the file was read
        try:
            s = Structure.from_dict(sd)
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported by id
            msg = " ".join(str(exc).split())
            self._bad[i] = f"unreadable structure ({type(exc).__name__}: {msg[:160]})"
            return None
        if not s.is_ordered:
            self._bad[i] = ("partial occupancy (disorder): CHGNet needs an ordered structure (one element per "
                            "site, occupancy 1); order it first, e.g. with OrderDisorderedStructureTransformation")
            return None
        return s


_RELEASED = object()


@dataclass
class Dataset:
    """Rows of a Matbench file: ids, structures (pymatgen, parsed on first access), targets.

    ``bad_structures`` depend on the structure alone (the graph cache records
    them); ``bad_targets`` on the target column of this run (never cached).
    """

    path: Path
    target: str
    ids: list[str]
    structures: Sequence[Any]
    targets: np.ndarray
    sha256: str
    bad_structures: dict[int, str] = field(default_factory=dict)  # row -> reason (unusable structure entry)
    bad_targets: dict[int, str] = field(default_factory=dict)  # row -> reason (target missing or not finite)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def bad_rows(self) -> dict[int, str]:
        """Every unusable row of this run -> reason (a structure reason wins over a target one)."""
        out = dict(self.bad_targets)
        out.update(self.bad_structures)
        return dict(sorted(out.items()))


def check_target(val: Any) -> float:
    """A usable target as a float; ``ValueError`` saying why not: not a number, not finite, or
    ``|value|`` above :data:`MAX_ABS_TARGET`."""
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise ValueError(f"target {val!r} is not a number")
    try:
        v = float(val)
    except OverflowError:  # an integer too large for a float
        raise ValueError(f"target {val!r} is not a finite number") from None
    if not math.isfinite(v):
        raise ValueError(f"target {val!r} is not a finite number")
    if abs(v) > MAX_ABS_TARGET:
        raise ValueError(f"target {val!r} is beyond +-{MAX_ABS_TARGET:g} (squared in the loss it would overflow)")
    return v


def load_matbench(path: Path | str, target: str = "e_form") -> Dataset:
    """Read a Matbench-layout file. Rows whose structure or target cannot be used are
    recorded by row (reported by id later), not silently dropped: structure problems
    in ``bad_structures``, target problems (for this ``target`` column) in ``bad_targets``.

    Structures are parsed when first used (:class:`LazyStructures`); a structure entry
    that is not a dict with ``lattice`` and ``sites`` is recorded here, one that has
    them but does not parse when it is first used (before its graph is built). Only
    ids, targets and the (compacted) structure entries are kept."""
    path = Path(path)
    obj = _load_json(path)
    cols = [str(c) for c in obj["columns"]]
    if target not in cols:
        raise DataError(f"{path}: no column {target!r} (columns: {', '.join(cols)})")
    if not obj["data"]:
        raise DataError(f"{path}: empty dataset (no rows)")
    s_col = "structure" if "structure" in cols else None
    if s_col is None:
        raise DataError(f"{path}: no 'structure' column (columns: {', '.join(cols)})")
    si, ti = cols.index(s_col), cols.index(target)
    ids = [str(i) for i in obj["index"]]
    data = obj.pop("data")
    del obj
    dicts: list[Any] = []
    targets = np.full(len(ids), np.nan, dtype=np.float64)
    bad: dict[int, str] = {}
    bad_t: dict[int, str] = {}
    for row, rec in enumerate(data):  # _load_json checked that every row is a list of len(cols) values
        sd = rec[si]
        if sd is None:
            bad[row] = "no structure (null)"
        else:
            if isinstance(sd, _Compact):
                missing = list(sd.missing)
            elif isinstance(sd, dict):
                missing = sorted({"lattice", "sites"} - sd.keys())
            else:
                missing = None
            if missing is None:
                bad[row] = f"structure is a {type(sd).__name__}, not a pymatgen Structure dict"
                sd = None
            elif missing:
                bad[row] = f"unreadable structure (no {' or '.join(map(repr, missing))} in the structure dict)"
                sd = None
            else:
                unknown = sd.unknown_element if isinstance(sd, _Compact) else _unknown_element(sd)
                if unknown is not None:  # CHGNet has no embedding for it (graphstore.structure_problem)
                    bad[row] = f"element {unknown} is not one CHGNet knows (Z 1..94); CHGNet has no embedding for it"
                    sd = None
        dicts.append(sd)
        try:
            targets[row] = check_target(rec[ti].value() if isinstance(rec[ti], _Compact) else rec[ti])
        except ValueError as exc:
            bad_t[row] = f"bad target ({exc})"
        data[row] = None
    # an id given more than once: which row is meant cannot be known, so every copy is left out
    # (the same rule as the sources package's RowBuilder); a property of the file, like a structure
    first: dict[str, int] = {}
    for row, ident in enumerate(ids):
        if ident in first:
            other = first[ident]
            bad[row] = f"duplicate id {ident!r} (also row {other})"
            if not bad.get(other, "").startswith("duplicate id"):
                bad[other] = f"duplicate id {ident!r} (also row {row})"
        else:
            first[ident] = row
    structures = LazyStructures(dicts, bad, path, si)
    return Dataset(path, target, ids, structures, targets, file_sha256(path), bad, bad_t)


# ---------------------------------------------------------------- folds and splits


def matbench_folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Matbench's 5 folds over row order: ``[(train_rows, test_rows), ...]``."""
    from sklearn.model_selection import KFold

    if n < N_FOLDS:
        raise DataError(f"need at least {N_FOLDS} rows for {N_FOLDS} folds, got {n}")
    kf = KFold(n_splits=N_FOLDS, shuffle=True, random_state=MATBENCH_SEED)
    return [(np.asarray(tr), np.asarray(te)) for tr, te in kf.split(np.arange(n))]


@dataclass(frozen=True)
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    excluded: tuple[int, ...] = ()

    def check_disjoint(self) -> None:
        a, b, c = set(self.train.tolist()), set(self.val.tolist()), set(self.test.tolist())
        if a & b or a & c or b & c:
            raise AssertionError("train, validation and test rows overlap")


def make_splits(
    n: int,
    *,
    fold: int,
    fraction: float = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_limit: int = 0,
    exclude: Sequence[int] = (),
) -> Splits:
    """Train/val/test rows for one Matbench fold.

    The validation rows are ``round(val_fraction * len(train part))`` rows drawn
    with ``seed``; ``fraction`` then keeps that share of the remaining training
    rows (at least one). ``exclude`` rows (failed graph conversion) are removed
    from every part after the folds are made, so the folds stay Matbench's.
    """
    if not 0 <= fold < N_FOLDS:
        raise ValueError(f"fold must be 0..{N_FOLDS - 1}")
    train_part, test = matbench_folds(n)[fold]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train_part)
    n_val = max(1, int(round(val_fraction * len(perm))))
    val, rest = perm[:n_val], perm[n_val:]
    n_train = max(1, int(round(fraction * len(rest))))
    train = rest[:n_train]
    bad = set(int(i) for i in exclude)
    keep = lambda rows: np.array([int(r) for r in rows if int(r) not in bad], dtype=np.int64)  # noqa: E731
    test = np.sort(test)
    if test_limit:
        test = test[:test_limit]
    s = Splits(np.sort(keep(train)), np.sort(keep(val)), keep(test), tuple(sorted(bad)))
    s.check_disjoint()
    return s


MIN_TRAIN_ROWS = 5  # fewer usable training rows than this is a data error (exit 2), not a run


def _examples(ds: Dataset, rows: Sequence[int], k: int = 3) -> str:
    bad = ds.bad_rows
    shown = [f"{ds.ids[r]}: {' '.join(str(bad[r]).split())}" for r in list(rows)[:k]]
    more = f"; ... and {len(rows) - k} more" if len(rows) > k else ""
    return "; ".join(shown) + more


def parse_enough(ds: Dataset, splits: Splits) -> bool:
    """Parse structures of each part until :data:`MIN_TRAIN_ROWS` training rows and one validation
    and one test row are known to parse (all of a part when fewer do); a structure that does not
    parse lands in ``ds.bad_structures``. Cheap when the data is good (a few structures), thorough
    when it is not. True when some structure was found unreadable."""
    before = set(ds.bad_rows)
    for part, least in ((splits.train, MIN_TRAIN_ROWS), (splits.val, 1), (splits.test, 1)):
        ok = 0
        for r in part:
            if ok >= least:
                break
            if ds.structures[int(r)] is not None:
                ok += 1
    return bool(set(ds.bad_rows) - before)


def check_dataset(
    ds: Dataset, *, fold: int = 0, fraction: float = 1.0, val_fraction: float = 0.1, seed: int = 0,
    test_limit: int = 0,
) -> Splits:
    """The run's splits with every known bad row left out; ``DataError`` (one line naming the file and
    the ids) when no row is usable, when the file has fewer than 5 rows (Matbench's 5 folds), when
    fewer than :data:`MIN_TRAIN_ROWS` usable training rows remain, or when the validation or test
    part is empty. Only what is known without graphs counts (shapes, targets, ids, structure entries):
    structures that fail graph conversion are left out later, by the run."""
    n = len(ds)
    bad = sorted(ds.bad_rows)
    if n and len(bad) == n:
        raise DataError(f"{ds.path}: none of the {n} rows is usable ({_examples(ds, bad)})")
    try:
        splits = make_splits(n, fold=fold, fraction=fraction, val_fraction=val_fraction, seed=seed,
                             test_limit=test_limit, exclude=bad)
    except DataError as exc:
        raise DataError(f"{ds.path}: {exc}") from None
    if parse_enough(ds, splits):  # structure dicts that do not parse: refused here, not after the run folder exists
        bad = sorted(ds.bad_rows)
        if len(bad) == n:
            raise DataError(f"{ds.path}: none of the {n} rows is usable ({_examples(ds, bad)})")
        splits = make_splits(n, fold=fold, fraction=fraction, val_fraction=val_fraction, seed=seed,
                             test_limit=test_limit, exclude=bad)
    left = f"; {len(bad)} of {n} rows left out ({_examples(ds, bad)})" if bad else f" of {n} rows"
    if len(splits.train) < MIN_TRAIN_ROWS:
        raise DataError(f"{ds.path}: only {len(splits.train)} usable training rows in fold {fold} "
                        f"(at least {MIN_TRAIN_ROWS} are needed){left}")
    for name, part in (("validation", splits.val), ("test", splits.test)):
        if len(part) == 0:
            raise DataError(f"{ds.path}: no usable {name} rows in fold {fold}{left}")
    return splits


def check_data(preset, paths: Paths | None = None) -> Splits | None:
    """Check a preset's data before a run folder exists: read the file (ids, targets, table shape;
    no graphs are built) and make its splits (:func:`check_dataset`). A problem is raised as the
    preset's error on ``data.source`` (``preset.error``), one line naming the data file and the ids,
    so the CLI reports it like any other preset problem (exit 2)."""
    d = preset.data
    if getattr(getattr(preset, "task", None), "kind", "property") == "potential":
        return None  # frames: checked by config.checks.preflight through the frame readers
    if getattr(d, "format", "auto") not in ("auto", "matbench") or getattr(d, "split", "matbench") != "matbench" \
            or getattr(d, "test_source", ""):
        return None  # other formats and splits: checked by commands_io.preflight through the sources package
    try:
        path = preset_source(d.source, paths)
        if path.is_dir() or not path.name.lower().endswith((".json", ".json.gz")):
            return None  # a folder, a CSV or an ase file: see above
        ds = load_matbench(path, d.target)
        return check_dataset(ds, fold=d.fold, fraction=d.fraction, val_fraction=d.val_fraction, seed=d.seed,
                             test_limit=d.test_limit)
    except DataError as exc:
        raise preset.error("data.source", " ".join(str(exc).split())) from None


# ---------------------------------------------------------------- graph cache
























