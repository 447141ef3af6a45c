"""Full-size data (issue 15): parallel graph conversion, progress, bounded memory,
and target validity decided per run (issue 12, item 2)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tui_ft.core.data.dataset import DataError, load_matbench, make_splits, matbench_folds
from tui_ft.core.data import graphcache
from tui_ft.core.data.graphcache import GraphCache
from tui_ft.core.data.demo import build_demo_dataset, ensure_demo_dataset
from tui_ft.core.common.paths import Paths


@pytest.fixture
def no_env_cache(monkeypatch):
    monkeypatch.delenv("TUI_FT_CACHE", raising=False)
    monkeypatch.delenv("TUI_FT_GRAPH_WORKERS", raising=False)


@pytest.fixture(scope="module")
def converter():
    from chgnet.graph import CrystalGraphConverter

    return CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    return ensure_demo_dataset(Paths(tmp_path_factory.mktemp("demo")))


def _chunk_bytes(cache: GraphCache) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.dir.glob("chunk-*.pt"))}


def test_cache_bytes_do_not_depend_on_workers(tmp_path, no_env_cache, converter, demo_file, monkeypatch):
    monkeypatch.setattr(graphcache, "CHUNK", 64)  # several chunks from the ~240 demo rows
    ds = load_matbench(demo_file)
    rows = list(range(len(ds)))
    caches = {}
    for w in (1, 2):
        c = GraphCache(load_matbench(demo_file), converter, Paths(tmp_path / f"w{w}"))
        graphs, failed = c.get(rows, workers=w)
        assert c.built == len(rows) and c.workers_used == w
        assert not failed and len(graphs) == len(rows)
        caches[w] = (c, graphs)
    b1, b2 = _chunk_bytes(caches[1][0]), _chunk_bytes(caches[2][0])
    assert len(b1) == 4 and b1 == b2
    # and what comes back equals a fresh in-process conversion
    for r in (0, 77, len(rows) - 1):
        fresh = converter(ds.structures[r], graph_id=str(r), mp_id=ds.ids[r])
        for g in (caches[1][1][r], caches[2][1][r]):
            assert g.atom_graph.tolist() == fresh.atom_graph.tolist()
            assert g.bond_graph.tolist() == fresh.bond_graph.tolist()
            assert g.mp_id == ds.ids[r]


def test_bad_worker_setting_is_one_clear_error(tmp_path, no_env_cache, converter, demo_file, monkeypatch):
    monkeypatch.setenv("TUI_FT_GRAPH_WORKERS", "two")
    with pytest.raises(DataError, match=r"TUI_FT_GRAPH_WORKERS='two': expected a whole number >= 1"):
        GraphCache(load_matbench(demo_file), converter, Paths(tmp_path)).get(range(3))


def test_progress_in_order_and_ends_at_total(tmp_path, no_env_cache, converter, demo_file):
    rows = list(range(0, 200, 2))
    for _ in range(2):  # cold, then warm
        calls, calls3 = [], []
        GraphCache(load_matbench(demo_file), converter, Paths(tmp_path)).get(rows, progress=lambda d, t: calls.append((d, t)), workers=1)
        GraphCache(load_matbench(demo_file), converter, Paths(tmp_path)).get(
            rows, progress=lambda d, t, rate: calls3.append((d, t, rate)), workers=1)
        for seq in (calls, calls3):
            assert seq and seq[-1][:2] == (len(rows), len(rows))
            done = [c[0] for c in seq]
            assert done == sorted(done) and len(set(done)) == len(done)
            assert all(c[1] == len(rows) for c in seq)
        assert all(c[2] > 0 for c in calls3)


def _batch_peak(graphs, rows, batch=8) -> int:
    """Peak traced Python memory while a pass reads ``graphs`` batch by batch."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    n_atoms = 0
    for i in range(0, len(rows), batch):
        b = [graphs[r] for r in rows[i : i + batch]]
        n_atoms += sum(int(g.atomic_number.shape[0]) for g in b)
        del b
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert n_atoms > 0
    return peak


def test_graph_memory_does_not_grow_with_rows(tmp_path, no_env_cache, converter, demo_file):
    import torch

    ds = load_matbench(demo_file)
    n = len(ds)
    GraphCache(ds, converter, Paths(tmp_path)).get(range(n), workers=1)  # build the cache
    small_rows, big_rows = list(range(40)), list(range(n))
    small, _ = GraphCache(load_matbench(demo_file), converter, Paths(tmp_path)).get(small_rows)
    big, _ = GraphCache(load_matbench(demo_file), converter, Paths(tmp_path)).get(big_rows)
    # the store holds the packed cache tensors only: no per-graph tensors or CrystalGraphs
    (chunk_file,) = GraphCache(ds, converter, Paths(tmp_path)).dir.glob("chunk-*.pt")
    raw = torch.load(chunk_file, weights_only=True)
    packed_bytes = sum(t.numel() * t.element_size() for t in raw["packed"].values())
    assert big.nbytes() == packed_bytes
    # the packed data is the graphs' tensor data, once (each graph built and dropped in turn)
    each = sum(v.numel() * v.element_size() for r in big_rows for v in big[r].to_dict().values()
               if isinstance(v, torch.Tensor))
    assert packed_bytes == each
    for r in (0, n // 2, n - 1):  # a field read without building the graph
        assert big.field(r, "atomic_number").tolist() == big[r].atomic_number.tolist()
    peak_small = _batch_peak(small, small_rows)
    peak_big = _batch_peak(big, big_rows)
    # a pass over 6x the rows peaks like one over the few: memory follows the batch
    assert peak_big < 2 * peak_small + 200_000, (peak_small, peak_big)
    # while a dict of every graph (what a run held before) grows with the rows
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    held = {r: big[r] for r in big_rows}
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(held) == n and grown > 3 * peak_big, (grown, peak_big)


def _two_column_file(tmp_path: Path) -> tuple[Path, set[int], set[int]]:
    obj = build_demo_dataset()
    obj = {k: obj[k] for k in ("index", "columns", "data")}
    obj["columns"] = ["structure", "col_a", "col_b"]
    null_a = {3, 11, 29, 50, 77, 120, 150, 199, 230}
    null_b = {5, 18, 64, 101, 140, 181, 222}
    assert len(obj["data"]) > 230
    data = []
    for i, (s, y) in enumerate(obj["data"]):
        data.append([s, None if i in null_a else y, None if i in null_b else 2 * y])
    obj["data"] = data
    p = tmp_path / "two.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    return p, null_a, null_b


@pytest.mark.parametrize("order", [("col_a", "col_b"), ("col_b", "col_a")])
def test_target_validity_is_per_run_not_cached(tmp_path, no_env_cache, converter, order):
    path, null_a, null_b = _two_column_file(tmp_path)
    nulls = {"col_a": null_a, "col_b": null_b}
    paths = Paths(tmp_path / "proj")
    for target in order + order:  # each column twice, the cache warm after the first run
        ds = load_matbench(path, target)
        assert set(ds.bad_targets) == nulls[target] and not ds.bad_structures
        # what the engine does: splits, graphs for their rows, splits again without the failed rows
        splits = make_splits(len(ds), fold=0, seed=0)
        rows = np.concatenate([splits.train, splits.val, splits.test])
        cache = GraphCache(ds, converter, paths)
        graphs, failed = cache.get(rows, workers=1)
        assert set(failed) == nulls[target] & set(rows.tolist())
        assert all("bad target" in failed[r] for r in failed)
        assert not set(graphs) & nulls[target]
        assert all(np.isfinite(ds.targets[r]) for r in graphs)
        splits = make_splits(len(ds), fold=0, seed=0, exclude=list(failed))
        _, fold_test = matbench_folds(len(ds))[0]
        assert len(splits.test) == len(fold_test) - len(nulls[target] & set(fold_test.tolist()))
        assert set(splits.test.tolist()) == set(fold_test.tolist()) - nulls[target]
    # the cache holds no target failure: every structure of the file has its graph
    full, failed = GraphCache(load_matbench(path, order[0]), converter, paths).get(range(len(ds)))
    assert set(failed) == nulls[order[0]] and len(full) == len(ds) - len(nulls[order[0]])
    import torch

    for chunk in GraphCache(ds, converter, paths).dir.glob("chunk-*.pt"):
        assert torch.load(chunk, weights_only=True)["failed"] == {}


def test_old_cache_target_failures_are_rebuilt(tmp_path, no_env_cache, converter):
    """A cache written before this change recorded null targets as failed rows: those
    entries are ignored and the rows' graphs built, so another column keeps them."""
    import torch

    path, null_a, null_b = _two_column_file(tmp_path)
    paths = Paths(tmp_path / "proj")
    c = GraphCache(load_matbench(path, "col_a"), converter, paths)
    c.get(range(40), workers=1)
    (chunk_file,) = c.dir.glob("chunk-*.pt")
    stale = sorted(r for r in null_a if r < 40)
    assert stale
    full = graphcache.unpack_chunk(torch.load(chunk_file, weights_only=True))
    old = {
        "graphs": {k: v for k, v in full["graphs"].items() if int(k) not in stale},
        "failed": {str(r): "bad target (target None is not a finite number)" for r in stale},
    }
    graphcache.atomic_write(chunk_file, lambda fh: torch.save(graphcache.pack_chunk(old), fh))
    c2 = GraphCache(load_matbench(path, "col_b"), converter, paths)
    graphs, failed = c2.get(range(40), workers=1)
    b_bad = {r for r in null_b if r < 40}
    assert set(failed) == b_bad and set(graphs) == set(range(40)) - b_bad and c2.built == len(stale)
    assert torch.load(chunk_file, weights_only=True)["failed"] == {}
