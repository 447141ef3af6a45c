"""Crystal graphs at scale: parallel conversion and a packed, build-on-access graph store.

Conversion
    :func:`convert_items` turns ``(row, id, structure dict | None, reason)`` items into
    ``(row, {field: numpy array | plain value} | None, reason)``. It runs in the
    calling process or, for many rows, in worker processes started with the
    ``spawn`` context (torch and ``fork`` do not mix): each worker gets structure
    dicts and the converter's settings (:func:`converter_settings`), rebuilds a
    ``CrystalGraphConverter`` once and sends graphs back as NumPy arrays (plain
    pickles, no shared-memory tensors). The parent assembles each cache chunk in
    row order, so the cache's bytes do not depend on the number of workers.
    ``TUI_FT_GRAPH_WORKERS`` sets the number of workers (default: usable cores,
    :func:`tui_ft.core.train.parallel.usable_cores`).

Store
    :class:`PackedGraphs` is a ``Mapping[int, CrystalGraph]`` over the cache's packed
    chunk tensors (memory-mapped from the cache files): a ``CrystalGraph`` is
    built when a row is read and dropped with the batch that used it, so a run's
    memory grows with the batch, not with the number of rows, beyond the packed
    data (which is file-backed).
"""

from __future__ import annotations

import collections.abc
import os
from typing import Any, Iterator, Sequence

ENV_GRAPH_WORKERS = "TUI_FT_GRAPH_WORKERS"
# What CHGNet can use (checked before and after conversion; a structure that fails is left out by id):
MAX_Z = 94  # CHGNet's atom embedding has one row per element H (1) .. Pu (94); Am (95) and up index past it
# Two sites closer than this (or a site and its own periodic image) are overlapping atoms. The shortest
# bond in any material, H-H in H2, is 0.74 A; CHGNet was trained on relaxed MPtrj structures whose closest
# pairs are far above 0.5 A, and at near-zero distances its smooth radial basis has never seen data, so such
# a structure gives huge energies and gradients (NaN at epoch 0) instead of a label one could learn from.
MIN_DISTANCE = 0.5  # Angstrom
MIN_VOLUME_PER_SITE = 0.1  # A^3: below this the cell is degenerate (the densest solids have ~5 A^3 per atom)
MIN_ROWS_PER_WORKER = 32  # below this many rows to convert per worker, workers cost more than they save
TASK_ROWS = 32  # rows per task sent to a worker


def graph_workers() -> int:
    """Worker processes for graph conversion: ``TUI_FT_GRAPH_WORKERS`` or the usable cores."""
    from tui_ft.core.train.parallel import usable_cores

    env = os.environ.get(ENV_GRAPH_WORKERS, "").strip()
    if env:
        if not (env.isascii() and env.isdigit()) or int(env) < 1:
            raise ValueError(f"{ENV_GRAPH_WORKERS}={env!r}: expected a whole number >= 1")
        return int(env)
    return usable_cores()


def converter_settings(converter) -> dict[str, Any] | None:
    """What rebuilds ``converter`` in another process, or ``None`` if it is not chgnet's converter."""
    try:
        from chgnet.graph import CrystalGraphConverter
    except ImportError:  # pragma: no cover
        return None
    if type(converter) is not CrystalGraphConverter:
        return None
    return {
        "atom_graph_cutoff": converter.atom_graph_cutoff,
        "bond_graph_cutoff": converter.bond_graph_cutoff,
        "algorithm": getattr(converter, "algorithm", "fast"),
        "on_isolated_atoms": getattr(converter, "on_isolated_atoms", "error"),
    }


def build_converter(settings: dict[str, Any]):
    from chgnet.graph import CrystalGraphConverter

    return CrystalGraphConverter(**settings)


def graph_arrays(graph) -> dict[str, Any]:
    """A CrystalGraph's fields with tensors as NumPy arrays (detached; plain values kept)."""
    import torch

    return {k: v.detach().numpy() if isinstance(v, torch.Tensor) else v for k, v in graph.to_dict().items()}


def structure_problem(struct) -> str | None:
    """Why CHGNet cannot use ``struct`` (a pymatgen Structure), or ``None``: no sites, an element
    outside Z 1..94, a lattice or coordinates that are not finite, a degenerate cell, or two sites
    (or a site and its periodic image) closer than :data:`MIN_DISTANCE`."""
    import numpy as np

    n = len(struct)
    if n == 0:
        return "structure has no sites"
    for site in struct:
        for sp in site.species:
            z = getattr(sp, "Z", 0)
            if not 1 <= z <= MAX_Z:
                return (f"element {sp} (Z={z}) is not one CHGNet knows (Z 1..{MAX_Z}); "
                        "CHGNet has no embedding for it")
    matrix = np.asarray(struct.lattice.matrix, dtype=float)
    if not np.isfinite(matrix).all():
        return "lattice is not finite (NaN or infinite entries)"
    if not np.isfinite(np.asarray(struct.frac_coords, dtype=float)).all():
        return "site coordinates are not finite (NaN or infinite)"
    volume = abs(float(np.linalg.det(matrix)))
    if not volume >= MIN_VOLUME_PER_SITE * n:
        return f"degenerate lattice (cell volume {volume:.3g} A^3 for {n} sites; at least {MIN_VOLUME_PER_SITE} A^3 per site)"
    centers, points, _, dists = struct.get_neighbor_list(MIN_DISTANCE)
    if len(dists):
        k = int(np.argmin(dists))
        i, j = int(centers[k]), int(points[k])
        what = f"site {i} ({struct[i].species_string}) and its periodic image" if i == j else (
            f"sites {min(i, j)} ({struct[min(i, j)].species_string}) and {max(i, j)} ({struct[max(i, j)].species_string})")
        return f"overlapping atoms: {what} are {float(dists[k]):.3g} A apart (minimum {MIN_DISTANCE} A)"
    return None


def graph_problem(fields: dict[str, Any]) -> str | None:
    """Why a converted graph (``{field: array or tensor}``) cannot be used, or ``None``: no atoms,
    atomic numbers outside 1..94, a lattice or coordinates that are not finite. Also run on graphs read
    from a cache written before these checks existed."""
    import numpy as np

    z = np.asarray(fields.get("atomic_number", ()))
    if z.size == 0:
        return "graph has no atoms"
    if int(z.min()) < 1 or int(z.max()) > MAX_Z:
        bad = int(z.max()) if int(z.max()) > MAX_Z else int(z.min())
        return f"element Z={bad} is not one CHGNet knows (Z 1..{MAX_Z}); CHGNet has no embedding for it"
    for name in ("lattice", "atom_frac_coord"):
        v = fields.get(name)
        if v is not None and not np.isfinite(np.asarray(v, dtype=float)).all():
            return f"graph {name} is not finite"
    f, lat, pairs, img = (fields.get(k) for k in ("atom_frac_coord", "lattice", "atom_graph", "neighbor_image"))
    if f is not None and lat is not None and pairs is not None and img is not None and np.asarray(pairs).size:
        f, lat = np.asarray(f, dtype=float), np.asarray(lat, dtype=float)
        pairs, img = np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(img, dtype=float).reshape(-1, 3)
        d = np.linalg.norm((f[pairs[:, 1]] + img - f[pairs[:, 0]]) @ lat, axis=1)
        if d.size and float(d.min()) < MIN_DISTANCE:
            return f"overlapping atoms: two sites {float(d.min()):.3g} A apart (minimum {MIN_DISTANCE} A)"
    return None


GRAPH_FIELDS_CHECKED = ("atomic_number", "lattice", "atom_frac_coord", "atom_graph", "neighbor_image")
CHECKS_VERSION = 1  # cache chunks written with structure_problem / graph_problem applied carry "checks": 1


def convert_items(converter, items: Sequence[tuple[int, str, Any, str | None]]) -> list[tuple[int, Any, str | None]]:
    """Convert ``(row, id, structure dict, reason)`` items: ``(row, graph arrays or None, reason)``.

    ``reason`` given in an item (a structure entry already known to be unusable)
    is passed through. A structure that does not parse, fails :func:`structure_problem`,
    does not convert or gives a graph that fails :func:`graph_problem` gets its reason.
    """
    from pymatgen.core import Structure

    out: list[tuple[int, Any, str | None]] = []
    for row, ident, sd, reason in items:
        if reason is not None:
            out.append((row, None, reason))
            continue
        try:
            struct = Structure.from_dict(sd)
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported by id
            out.append((row, None, f"unreadable structure ({type(exc).__name__}: {exc})"))
            continue
        try:
            why = structure_problem(struct)
        except Exception as exc:  # noqa: BLE001 - a structure the checks cannot even measure
            why = f"unusable structure ({type(exc).__name__}: {exc})"
        if why is not None:
            out.append((row, None, why))
            continue
        try:
            g = converter(struct, graph_id=str(row), mp_id=ident)
        except Exception as exc:  # noqa: BLE001 - reported by id
            out.append((row, None, f"graph conversion failed ({type(exc).__name__}: {exc})"))
            continue
        arrays = graph_arrays(g)
        why = graph_problem(arrays)
        out.append((row, None, why) if why is not None else (row, arrays, None))
    return out


_WORKER_CONVERTER = None


def _worker_init(settings: dict[str, Any]) -> None:
    global _WORKER_CONVERTER
    import torch

    torch.set_num_threads(1)
    _WORKER_CONVERTER = build_converter(settings)


def _worker_convert(items):
    return convert_items(_WORKER_CONVERTER, items)


def can_spawn() -> bool:
    """Whether ``spawn`` workers can start: they re-import the main script, so it must be a
    file (``python -m ...``, pytest and scripts are; ``python - < file`` is not).
    Like any ``multiprocessing`` user, a script calling this must guard its entry point
    with ``if __name__ == "__main__":``."""
    import sys

    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def make_pool(workers: int, settings: dict[str, Any]):
    """A process pool of ``workers`` converters (``spawn`` context)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(settings,),
    )


# ---------------------------------------------------------------- packed store


class _Chunk:
    """One packed cache chunk: per field a tensor of all its graphs and the graphs' offsets."""

    __slots__ = ("packed", "offsets", "sizes", "empty", "plain", "index")

    def __init__(self, obj: dict[str, Any]):
        self.packed = obj["packed"]
        self.sizes = {k: v.tolist() for k, v in obj["sizes"].items()}
        self.offsets = {}
        for k, sz in self.sizes.items():
            off, acc = [], 0
            for s in sz:
                off.append(acc)
                acc += s
            self.offsets[k] = off
        self.empty = obj.get("empty", {})
        self.plain = obj["plain"]
        self.index = {str(r): i for i, r in enumerate(obj["rows"])}

    def graph_dict(self, key: str) -> dict[str, Any]:
        import torch

        i = self.index[key]
        d = dict(self.plain[key])
        empty = self.empty.get(key, {})
        for k, t in self.packed.items():
            if k in empty:
                d[k] = torch.empty(empty[k], dtype=t.dtype)
            else:
                d[k] = t.narrow(0, self.offsets[k][i], self.sizes[k][i]).clone()
        return d

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.packed.values())


class PackedGraphs(collections.abc.Mapping):
    """``{row: CrystalGraph}`` over packed cache chunks; each graph is built when read.

    The graphs' tensors are copies of slices of the chunk tensors (so nothing a
    model does to a graph reaches the store), made per access; keep the graphs
    of a batch, not of the dataset. ``graph_dicts`` of chunks in the old
    one-dict-per-graph layout are held as they are.
    """

    def __init__(self) -> None:
        self._where: dict[int, tuple[Any, str]] = {}
        self._chunks: list[Any] = []

    def add_chunk(self, chunk: _Chunk | dict[str, dict[str, Any]], rows: Sequence[int]) -> None:
        """Serve ``rows`` from ``chunk`` (a :class:`_Chunk` or ``{str(row): graph dict}``)."""
        self._chunks.append(chunk)
        for r in rows:
            self._where[int(r)] = (chunk, str(int(r)))

    def discard(self, rows) -> None:
        for r in rows:
            self._where.pop(int(r), None)

    def __getitem__(self, row: int):
        from chgnet.graph.crystalgraph import CrystalGraph

        chunk, key = self._where[int(row)]
        if isinstance(chunk, _Chunk):
            d = chunk.graph_dict(key)
        else:
            d = {n: v.clone() if hasattr(v, "clone") else v for n, v in chunk[key].items()}
        return energy_only(CrystalGraph.from_dict(d))

    def field(self, row: int, name: str):
        """One tensor field of a row's graph (e.g. ``"atomic_number"``) without building the graph:
        a read-only view into the packed data (do not modify it)."""
        import torch

        chunk, key = self._where[int(row)]
        if not isinstance(chunk, _Chunk):
            return chunk[key][name]
        i = chunk.index[key]
        t = chunk.packed[name]
        shape = chunk.empty.get(key, {}).get(name)
        if shape is not None:
            return torch.empty(shape, dtype=t.dtype)
        return t.narrow(0, chunk.offsets[name][i], chunk.sizes[name][i])

    def __contains__(self, row: object) -> bool:
        try:
            return int(row) in self._where  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._where))

    def __len__(self) -> int:
        return len(self._where)

    def nbytes(self) -> int:
        """Bytes of tensor data the store holds (packed chunks; memory-mapped where read from the cache)."""
        total = 0
        for c in self._chunks:
            if isinstance(c, _Chunk):
                total += c.nbytes()
            else:
                total += sum(v.numel() * v.element_size() for g in c.values() for v in g.values() if hasattr(v, "numel"))
        return total


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
