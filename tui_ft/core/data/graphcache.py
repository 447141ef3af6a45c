"""The on-disk cache of CHGNet crystal graphs of a dataset (packed chunks read memory-mapped),
filled by parallel conversion (tui_ft.core.data.graphstore)."""

from __future__ import annotations

import collections.abc
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tui_ft.core.common.atomic import atomic_write
from tui_ft.core.data.dataset import Dataset, DataError  # noqa: E402
from tui_ft.core.common.paths import Paths

CHUNK = 256  # rows per cache chunk


def converter_key(converter) -> str:
    return (
        f"ag{converter.atom_graph_cutoff}-bg{converter.bond_graph_cutoff}-"
        f"{getattr(converter, 'algorithm', 'fast')}"
    )


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

    rows = sorted(chunk["graphs"], key=int)  # row order, whatever order the rows were built in
    chunk = {
        "graphs": {r: chunk["graphs"][r] for r in rows},
        "failed": chunk["failed"],
    }
    graphs = chunk["graphs"]
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
        "plain": {r: {sys.intern(k): _canonical(v) for k, v in graphs[r].items() if k not in fields} for r in rows},
        "graphs": {},  # an older tui-ft reading this file sees no graphs and rebuilds them
        "failed": chunk["failed"],
    }


def _canonical(v: Any) -> Any:
    """``v`` as an object shared the same way whichever process built it: pickle writes a
    shared object once, so without this the chunk's bytes would depend on which graphs
    came from one worker's reply (strings interned, floats fresh)."""
    if isinstance(v, str):
        return sys.intern(v)
    if isinstance(v, float):
        return float.fromhex(v.hex())
    return v


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


def _with_rate(progress: Callable[..., None] | None) -> Callable[[int, int, float], None] | None:
    """``progress`` called as ``(done, total, rate)`` if it takes three arguments, else ``(done, total)``."""
    if progress is None:
        return None
    try:
        inspect.signature(progress).bind(0, 0, 0.0)
        return progress
    except TypeError:
        return lambda done, total, rate: progress(done, total)
    except ValueError:  # no signature (a builtin): the documented two arguments
        return lambda done, total, rate: progress(done, total)


LEGACY_TARGET_REASON = "bad target ("  # older caches recorded target problems as failures; ignored


def _packed_ok(obj: dict[str, Any]) -> bool:
    """A packed chunk whose sizes agree with its rows and tensors (else it is rebuilt)."""
    try:
        n = len(obj["rows"])
        for k, t in obj["packed"].items():
            sz = obj["sizes"][k]
            if len(sz) != n or int(sz.sum()) != int(t.shape[0]):
                return False
        return all(str(r) in obj["plain"] for r in obj["rows"])
    except Exception:  # noqa: BLE001 - any malformed chunk is rebuilt
        return False


def load_cache_file(path: Path) -> Any | None:
    """A cache file (``torch.save``, tensors and plain values) read memory-mapped, so its tensors are
    file-backed pages that concurrent runs share; a plain read if it cannot be mapped; ``None`` when
    it is missing or unreadable (a corrupt cache file is rebuilt by its caller)."""
    import torch

    if not path.is_file():
        return None
    for mmap in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - corrupt or not a zip file: try the plain read, then give up
            continue
    return None


class GraphCache:
    """On-disk cache of CHGNet crystal graphs for one data file and converter.

    Layout: ``<cache>/graphs/<sha256[:16]>-<converter key>/chunk-<k>.pt``; each
    chunk holds the graphs of up to 256 rows (packed, see :func:`pack_chunk`;
    tensors and plain values, so it loads with ``weights_only=True``) and
    row -> failure message. Only what depends on the structure is stored: a row
    whose target is unusable still gets its graph cached (another target column
    of the same file may use it) and is left out per run by :meth:`get`.

    Missing graphs are built in worker processes (:mod:`tui_ft.core.data.graphstore`,
    ``TUI_FT_GRAPH_WORKERS``); each chunk is assembled in row order, so its bytes
    do not depend on the number of workers. Chunks are read memory-mapped and
    :meth:`get` returns a :class:`~tui_ft.core.data.graphstore.PackedGraphs`, which
    builds each ``CrystalGraph`` when it is read.
    """

    def __init__(self, dataset: Dataset, converter, paths: Paths | None = None):
        self.dataset = dataset
        self.converter = converter
        paths = paths or Paths.default()
        self.dir = paths.cache / "graphs" / f"{dataset.sha256[:16]}-{converter_key(converter)}"
        self.hits = 0
        self.built = 0
        self.workers_used = 1

    def _chunk_path(self, k: int) -> Path:
        return self.dir / f"chunk-{k:05d}.pt"

    def _load_chunk(self, k: int) -> dict[str, Any] | None:
        """The chunk as stored (packed tensors memory-mapped from the file), or ``None``."""
        obj = load_cache_file(self._chunk_path(k))
        if isinstance(obj, dict) and "graphs" in obj and "failed" in obj:
            if obj.get("format") == PACKED and not _packed_ok(obj):
                return None
            return obj
        return None

    def get(
        self, rows: Sequence[int], *, progress: Callable[..., None] | None = None, workers: int | None = None
    ) -> tuple[collections.abc.Mapping, dict[int, str]]:
        """Graphs for the usable ``rows`` (building and caching missing ones) and ``{row: reason}``
        for the others: structures that failed (cached) and, for this run's target column,
        rows whose target is unusable (decided here, never cached).

        The graphs come as a ``Mapping[int, CrystalGraph]`` that builds each graph when it
        is read. ``progress(done, total)`` or ``progress(done, total, rate)`` (rows per
        second since the call began) is called as rows are found or built, in order,
        last with ``done == total``. ``workers`` overrides ``TUI_FT_GRAPH_WORKERS``.
        """
        from tui_ft.core.data.graphstore import (
            CHECKS_VERSION, GRAPH_FIELDS_CHECKED, PackedGraphs, _Chunk, graph_problem, graph_workers,
        )

        if workers is None:
            try:
                workers = graph_workers()
            except ValueError as exc:
                raise DataError(str(exc)) from None
        report = _with_rate(progress)
        t0 = time.perf_counter()
        wanted = sorted(set(int(r) for r in rows))
        by_chunk: dict[int, list[int]] = {}
        for r in wanted:
            by_chunk.setdefault(r // CHUNK, []).append(r)
        total = len(wanted)
        done = 0
        last = -1

        def tick(n: int) -> None:
            nonlocal done, last
            done += n
            if report is not None and total and done != last and (done == total or n):
                last = done
                report(done, total, done / max(time.perf_counter() - t0, 1e-9))

        store = PackedGraphs()
        failed: dict[int, str] = {}
        todo: dict[int, tuple[dict[str, Any] | None, list[int]]] = {}
        for k, chunk_rows in by_chunk.items():
            obj = self._load_chunk(k)
            if obj is None:
                todo[k] = (None, chunk_rows)
                continue
            c_failed = {key: why for key, why in obj["failed"].items() if not str(why).startswith(LEGACY_TARGET_REASON)}
            if obj.get("format") == PACKED:
                c_store: Any = _Chunk(obj)
                have = c_store.index
            else:
                c_store = obj["graphs"]
                have = c_store
            found, missing = [], []
            for r in chunk_rows:
                key = str(r)
                if key in have:
                    found.append(r)
                elif key in c_failed:
                    failed[r] = c_failed[key]
                    found.append(r)
                else:
                    missing.append(r)
            if obj.get("checks") != CHECKS_VERSION:  # written before the structure checks: check its graphs now
                for r in found:
                    if r not in failed:
                        why = graph_problem({f: _chunk_field(c_store, str(r), f) for f in GRAPH_FIELDS_CHECKED})
                        if why is not None:
                            failed[r] = why
            store.add_chunk(c_store, [r for r in found if r not in failed])
            self.hits += len(found)
            if missing:
                todo[k] = (obj, missing)
            tick(len(found))

        if todo:
            self._build(todo, store, failed, workers, tick)
        for r in wanted:  # this run's target column: decided per run, never stored
            why = self.dataset.bad_targets.get(r)
            if why is not None and r not in failed:
                failed[r] = why
        store.discard(failed)
        release = getattr(self.dataset.structures, "release", None)
        if release is not None:
            release(wanted)
        tick(0)
        return store, dict(sorted(failed.items()))

    def _build(self, todo, store, failed, workers: int, tick) -> None:
        import torch

        from tui_ft.core.data.graphstore import (
            CHECKS_VERSION, GRAPH_FIELDS_CHECKED, MIN_ROWS_PER_WORKER, TASK_ROWS, _Chunk, can_spawn, convert_items,
            converter_settings, graph_problem, make_pool,
        )

        def item(r: int):
            reason = self.dataset.bad_structures.get(r)
            structures = self.dataset.structures
            if reason is not None:
                sd = None
            elif hasattr(structures, "raw"):
                sd = structures.raw(r)
            else:  # a plain sequence of pymatgen Structures
                sd = structures[r].as_dict() if structures[r] is not None else None
                reason = None if sd is not None else "structure is not a pymatgen Structure dict"
            return (r, self.dataset.ids[r], sd, reason)

        n_missing = sum(len(m) for _, m in todo.values())
        settings = converter_settings(self.converter)
        n_workers = min(workers, n_missing // MIN_ROWS_PER_WORKER) if settings is not None and can_spawn() else 1
        self.workers_used = max(1, n_workers)
        results: dict[int, list] = {k: [] for k in todo}
        pending = {k: 0 for k in todo}

        def finish(k: int) -> None:
            obj, _ = todo[k]
            graphs: dict[str, Any] = {}
            c_failed: dict[str, str] = {}
            if obj is not None:
                old = unpack_chunk(obj)
                c_failed = {key: why for key, why in old["failed"].items()
                            if not str(why).startswith(LEGACY_TARGET_REASON)}
                graphs = dict(old["graphs"])
                if obj.get("checks") != CHECKS_VERSION:  # the chunk is rewritten with the marker: check its graphs
                    for key in list(graphs):
                        g = graphs[key]
                        why = graph_problem({f: g[f].numpy() if hasattr(g.get(f), "numpy") else g.get(f)
                                             for f in GRAPH_FIELDS_CHECKED})
                        if why is not None:
                            del graphs[key]
                            c_failed[key] = why
            for r, arrays, reason in sorted(results.pop(k), key=lambda x: x[0]):
                if arrays is None:
                    c_failed[str(r)] = reason
                    failed[r] = reason
                    if reason.startswith("unreadable structure"):
                        self.dataset.bad_structures.setdefault(r, reason)
                else:
                    graphs[str(r)] = {n: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                      for n, v in arrays.items()}
            self.dir.mkdir(parents=True, exist_ok=True)
            packed = pack_chunk({"graphs": graphs, "failed": c_failed})
            packed["checks"] = CHECKS_VERSION
            atomic_write(self._chunk_path(k), lambda fh, c=packed: torch.save(c, fh))
            del graphs, packed
            reread = self._load_chunk(k)  # memory-mapped: the store holds file-backed tensors
            rows_ok = [r for r in todo[k][1] if r not in failed]
            if reread is not None and reread.get("format") == PACKED:
                store.add_chunk(_Chunk(reread), rows_ok)
            elif reread is not None:
                store.add_chunk(reread["graphs"], rows_ok)

        tasks: list[tuple[int, list]] = []
        for k, (_, missing) in todo.items():
            for i in range(0, len(missing), TASK_ROWS):
                tasks.append((k, missing[i : i + TASK_ROWS]))
                pending[k] += 1

        if n_workers <= 1:
            for k, part in tasks:
                results[k].extend(convert_items(self.converter, [item(r) for r in part]))
                self.built += len(part)
                pending[k] -= 1
                if pending[k] == 0:
                    finish(k)
                tick(len(part))
            return

        from concurrent.futures import FIRST_COMPLETED, wait

        with make_pool(n_workers, settings) as pool:
            queue = iter(tasks)
            inflight: dict[Any, tuple[int, int]] = {}

            def submit() -> bool:
                try:
                    k, part = next(queue)
                except StopIteration:
                    return False
                inflight[pool.submit(_convert_in_worker, [item(r) for r in part])] = (k, len(part))
                return True

            for _ in range(4 * n_workers):
                if not submit():
                    break
            while inflight:
                ready, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in sorted(ready, key=lambda f: inflight[f]):
                    k, n = inflight.pop(fut)
                    results[k].extend(fut.result())
                    self.built += n
                    pending[k] -= 1
                    if pending[k] == 0:
                        finish(k)
                    tick(n)
                    submit()


def _chunk_field(chunk, key: str, name: str):
    """One field of one graph of a cache chunk (packed :class:`_Chunk` or ``{key: graph dict}``)."""
    from tui_ft.core.data.graphstore import _Chunk

    if isinstance(chunk, _Chunk):
        i = chunk.index[key]
        t = chunk.packed.get(name)
        if t is None or name in chunk.empty.get(key, {}):
            return chunk.plain[key].get(name)
        return t.narrow(0, chunk.offsets[name][i], chunk.sizes[name][i]).numpy()
    v = chunk[key].get(name)
    return v.numpy() if hasattr(v, "numpy") else v


def _convert_in_worker(items):
    from tui_ft.core.data.graphstore import _worker_convert

    return _worker_convert(items)
