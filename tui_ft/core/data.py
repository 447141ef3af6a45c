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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tui_ft.core.atomic import atomic_write
from tui_ft.core.paths import NAMED_SOURCES, Paths, resolve_data_source

MATBENCH_SEED = 18012019
N_FOLDS = 5
CHUNK = 256
KNOWN_SOURCES = NAMED_SOURCES  # "demo" and the Matbench tasks (tui_ft.core.paths)


class DataError(Exception):
    """A data file that cannot be used (with a message naming the file)."""


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with _open_text(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable Matbench JSON file ({exc})") from None
    if not isinstance(obj, dict) or not {"index", "columns", "data"} <= obj.keys():
        raise DataError(f"{path}: expected pandas 'split' JSON with keys index, columns, data")
    if not isinstance(obj["columns"], list) or not isinstance(obj["data"], list):
        raise DataError(f"{path}: 'columns' and 'data' must be lists")
    if len(obj["index"]) != len(obj["data"]):
        raise DataError(f"{path}: index has {len(obj['index'])} entries but data has {len(obj['data'])}")
    return obj


def resolve_source(source: str, paths: Paths | None = None) -> Path:
    """Map a preset's ``data.source`` to a file path (building the demo data if needed);
    see :func:`tui_ft.core.paths.resolve_data_source`."""
    return resolve_data_source(source, paths)


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
    section 3), and a run whose crystal graphs are cached needs none of them. A dict that does not parse
    reads as ``None``; its reason goes into ``bad`` (the dataset's ``bad_rows``) then.
    """

    def __init__(self, dicts: list[Any], bad: dict[int, str]):
        self._dicts = dicts
        self._bad = bad
        self._parsed: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if i < 0:
            i += len(self._dicts)
        if not 0 <= i < len(self._dicts):
            raise IndexError(i)
        if i not in self._parsed:
            self._parsed[i] = self._parse(i)
        return self._parsed[i]

    def _parse(self, i: int) -> Any:
        from pymatgen.core import Structure

        sd = self._dicts[i]
        if not isinstance(sd, dict):
            return None  # recorded when the file was read
        try:
            return Structure.from_dict(sd)
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported by id
            self._bad[i] = f"unreadable structure ({type(exc).__name__}: {exc})"
            return None


@dataclass
class Dataset:
    """Rows of a Matbench file: ids, structures (pymatgen, parsed on first access), targets."""

    path: Path
    target: str
    ids: list[str]
    structures: Sequence[Any]
    targets: np.ndarray
    sha256: str
    bad_rows: dict[int, str] = field(default_factory=dict)  # row -> reason (unparsable structure or target)

    def __len__(self) -> int:
        return len(self.ids)


def load_matbench(path: Path | str, target: str = "e_form") -> Dataset:
    """Read a Matbench-layout file. Rows whose structure or target cannot be parsed are
    recorded in ``bad_rows`` by row (reported by id later), not silently dropped.

    Structures are parsed when first used (:class:`LazyStructures`); a structure entry
    that is not a dict with ``lattice`` and ``sites`` is recorded here, one that has
    them but does not parse when it is first used (before its graph is built)."""
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
    dicts: list[Any] = []
    targets = np.full(len(ids), np.nan, dtype=np.float64)
    bad: dict[int, str] = {}
    for row, rec in enumerate(obj["data"]):
        try:
            sd = rec[si]
        except (IndexError, KeyError, TypeError) as exc:
            sd = None
            bad[row] = f"unreadable structure ({type(exc).__name__}: {exc})"
        dicts.append(sd)
        if row not in bad:
            if not isinstance(sd, dict):
                bad[row] = "structure is not a pymatgen Structure dict"
            elif not {"lattice", "sites"} <= sd.keys():
                missing = sorted({"lattice", "sites"} - sd.keys())
                bad[row] = f"unreadable structure (no {' or '.join(map(repr, missing))} in the structure dict)"
        try:
            val = rec[ti]
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
                raise ValueError(f"target {val!r} is not a finite number")
            targets[row] = float(val)
        except (ValueError, IndexError, TypeError) as exc:
            bad.setdefault(row, f"bad target ({exc})")
    return Dataset(path, target, ids, LazyStructures(dicts, bad), targets, file_sha256(path), bad)


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


# ---------------------------------------------------------------- graph cache


def converter_key(converter) -> str:
    return (
        f"ag{converter.atom_graph_cutoff}-bg{converter.bond_graph_cutoff}-"
        f"{getattr(converter, 'algorithm', 'fast')}"
    )


def energy_only(graph):
    """Detach the lattice and coordinates that chgnet's converter marks ``requires_grad``.

    They only matter for forces and stress; for energy targets they make every
    backward pass also differentiate through the geometry. Predictions are
    identical and every training pass has less to do (BENCHMARKS.md, section 1,
    the speed-up list).
    """
    graph.lattice = graph.lattice.detach()
    graph.atom_frac_coord = graph.atom_frac_coord.detach()
    return graph


PACKED = 2  # chunk layout: each tensor field of all the chunk's graphs in one tensor


def pack_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """``{"graphs": {row: graph dict}, "failed": ...}`` -> the packed layout written to disk.

    Each tensor field of every graph goes into one concatenated tensor with the
    graphs' lengths beside it: ~10 tensors per chunk instead of ~2,000, which is
    what made reading a warm cache slow (``torch.load(weights_only=True)`` pays per
    tensor). An empty tensor of another shape (a structure without bonds in the
    bond graph has a 1-D ``bond_graph``) is kept by its shape. A chunk that does not
    fit this (mixed dtypes, tensor fields that differ) is written in the old
    one-dict-per-graph layout, which is still read.
    """
    import torch

    graphs = chunk["graphs"]
    rows = list(graphs)
    if not rows:
        return chunk
    fields = [k for k, v in graphs[rows[0]].items() if isinstance(v, torch.Tensor)]
    ref = {}
    for k in fields:
        t = next((graphs[r][k] for r in rows if isinstance(graphs[r].get(k), torch.Tensor) and graphs[r][k].numel()),
                 graphs[rows[0]][k])
        ref[k] = (t.dtype, t.shape[1:], t.dim())
    empty: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        g = graphs[r]
        if [k for k, v in g.items() if isinstance(v, torch.Tensor)] != fields:
            return chunk
        for k in fields:
            t = g[k]
            if t.dtype != ref[k][0] or ref[k][2] == 0:
                return chunk
            if t.dim() != ref[k][2] or t.shape[1:] != ref[k][1]:
                if t.numel():
                    return chunk
                empty.setdefault(r, {})[k] = list(t.shape)
    use = lambda r, k: k not in empty.get(r, ())  # noqa: E731
    return {
        "format": PACKED,
        "rows": rows,
        "packed": {
            k: torch.cat([graphs[r][k].detach() for r in rows if use(r, k)] or [graphs[rows[0]][k][:0].detach()])
            for k in fields
        },
        "sizes": {
            k: torch.tensor([int(graphs[r][k].shape[0]) if use(r, k) else 0 for r in rows], dtype=torch.int64)
            for k in fields
        },
        "empty": empty,
        "plain": {r: {k: v for k, v in graphs[r].items() if k not in fields} for r in rows},
        "graphs": {},  # an older tui-ft reading this file sees no graphs and rebuilds them
        "failed": chunk["failed"],
    }


def unpack_chunk(obj: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`pack_chunk` (graph tensors are views into the packed ones)."""
    import torch

    if obj.get("format") != PACKED:
        return obj
    rows = list(obj["rows"])
    parts = {k: torch.split(t, obj["sizes"][k].tolist()) for k, t in obj["packed"].items()}
    if any(len(p) != len(rows) for p in parts.values()):
        raise ValueError("packed chunk: sizes do not match its rows")
    empty = obj.get("empty", {})
    graphs = {}
    for i, r in enumerate(rows):
        d = dict(obj["plain"][r])
        for k, p in parts.items():
            d[k] = p[i]
        for k, shape in empty.get(r, {}).items():
            d[k] = torch.empty(shape, dtype=obj["packed"][k].dtype)
        graphs[r] = d
    return {"graphs": graphs, "failed": dict(obj["failed"]), "views": True}


class GraphCache:
    """On-disk cache of CHGNet crystal graphs for one data file and converter.

    Layout: ``<cache>/graphs/<sha256[:16]>-<converter key>/chunk-<k>.pt``; each
    chunk holds the graphs of up to 256 rows (packed, see :func:`pack_chunk`;
    tensors and plain values, so it loads with ``weights_only=True``) and
    row -> failure message.
    """

    def __init__(self, dataset: Dataset, converter, paths: Paths | None = None):
        self.dataset = dataset
        self.converter = converter
        paths = paths or Paths.default()
        self.dir = paths.cache / "graphs" / f"{dataset.sha256[:16]}-{converter_key(converter)}"
        self.hits = 0
        self.built = 0

    def _chunk_path(self, k: int) -> Path:
        return self.dir / f"chunk-{k:05d}.pt"

    def _load_chunk(self, k: int) -> dict[str, Any]:
        import torch

        p = self._chunk_path(k)
        if p.is_file():
            try:
                obj = torch.load(p, map_location="cpu", weights_only=True)
                if isinstance(obj, dict) and "graphs" in obj and "failed" in obj:
                    return unpack_chunk(obj)
            except Exception:  # noqa: BLE001 - a corrupt cache chunk is rebuilt
                pass
        return {"graphs": {}, "failed": {}}

    def get(
        self, rows: Sequence[int], *, progress: Callable[[int, int], None] | None = None
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """Graphs for ``rows`` (building and caching missing ones) and failures ``{row: reason}``."""
        import torch
        from chgnet.graph.crystalgraph import CrystalGraph

        by_chunk: dict[int, list[int]] = {}
        for r in sorted(set(int(r) for r in rows)):
            by_chunk.setdefault(r // CHUNK, []).append(r)
        graphs: dict[int, Any] = {}
        failed: dict[int, str] = {}
        done = 0
        total = sum(len(v) for v in by_chunk.values())
        for k, chunk_rows in by_chunk.items():
            chunk = self._load_chunk(k)
            changed = False
            for r in chunk_rows:
                key = str(r)
                if key in chunk["graphs"]:
                    d = chunk["graphs"][key]
                    if chunk.get("views"):  # own copies, so the chunk's big tensors are not all kept alive
                        d = {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in d.items()}
                    graphs[r] = energy_only(CrystalGraph.from_dict(d))
                    self.hits += 1
                elif key in chunk["failed"]:
                    failed[r] = chunk["failed"][key]
                    self.hits += 1
                else:
                    struct = self.dataset.structures[r]  # parsed now; a failure lands in bad_rows
                    reason = self.dataset.bad_rows.get(r)
                    g = None
                    if reason is None:
                        try:
                            g = self.converter(struct, graph_id=str(r), mp_id=self.dataset.ids[r])
                        except Exception as exc:  # noqa: BLE001 - reported by id
                            reason = f"graph conversion failed ({type(exc).__name__}: {exc})"
                    if g is None:
                        chunk["failed"][key] = reason
                        failed[r] = reason
                    else:
                        chunk["graphs"][key] = g.to_dict()
                        graphs[r] = energy_only(g)
                    self.built += 1
                    changed = True
                done += 1
                if progress is not None and (done % 50 == 0 or done == total):
                    progress(done, total)
            if changed:
                self.dir.mkdir(parents=True, exist_ok=True)
                chunk.pop("views", None)
                atomic_write(self._chunk_path(k), lambda fh, c=pack_chunk(chunk): torch.save(c, fh))
        return graphs, failed
