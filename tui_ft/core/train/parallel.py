"""Data-parallel CPU training: each batch split across worker threads, one model replica each.

Why: on the CPU, CHGNet's forward and backward are long chains of small,
memory-bound operations (gathers, scatters, layer norms and activations over
~100k edges and angles per batch of 8) on which torch's intra-op threads scale
poorly, while independent workers with one intra-op thread each run side by side
almost undisturbed. So every batch is split into parts that run at the same time
in threads, each with its own replica of the model and 1 intra-op thread
(measurements: BENCHMARKS.md, section 1, speed-up 3 and run E).

What it computes is the same as one pass over the whole batch: CHGNet treats
every structure of a batch independently (layer norms are per row, no batch
norm, no dropout in the pretrained model), so the predictions are the same, and
with the loss summed per part and divided by the whole batch's size, the sum of
the parts' gradients is the whole batch's gradient. Only the order of float
additions differs (``tests/test_parallel.py`` checks every gradient to a relative 1e-4).
The parts and the order in which their gradients are added are fixed by the
batch, so a run is as reproducible as before for a given number of workers.

Worker count: ``TUI_FT_CPU_WORKERS`` (an integer; ``1`` turns this off), else
one worker per core the process may use, at most ``batch_size // 2`` (each part
gets at least two structures). Intra-op threads per worker: the cores divided
by the workers (``TUI_FT_THREADS``, else ``OMP_NUM_THREADS``, caps the cores counted). The
defaults were chosen on a 2-core machine; on bigger machines set the variables and compare with
``bench/bench_throughput.py``.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

ENV_WORKERS = "TUI_FT_CPU_WORKERS"


def usable_cores() -> int:
    """Cores a run may use: ``TUI_FT_THREADS``, else ``OMP_NUM_THREADS``, else the CPU affinity."""
    for var in ("TUI_FT_THREADS", "OMP_NUM_THREADS"):
        n = os.environ.get(var, "").strip()
        if n.isascii() and n.isdigit() and int(n) > 0:
            return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def plan_workers(batch_size: int, device: str) -> tuple[int, int]:
    """``(workers, intra-op threads per worker)`` for a run; ``workers == 1`` means no split."""
    cores = usable_cores()
    if device != "cpu":
        return 1, cores
    env = os.environ.get(ENV_WORKERS, "").strip()
    if env:
        if not (env.isascii() and env.isdigit()) or int(env) < 1:
            raise ValueError(f"{ENV_WORKERS}={env!r}: expected a whole number >= 1")
        workers = int(env)
    else:
        workers = min(cores, max(1, batch_size // 2))
    workers = max(1, min(workers, batch_size))
    return workers, max(1, cores // workers)


def graph_cost(g) -> int:
    """Work for one structure: directed atom-graph edges plus bond-graph angles."""
    bg = g.bond_graph
    return int(g.atom_graph.shape[0]) + (int(bg.shape[0]) if bg.dim() == 2 else 0) + int(g.atomic_number.shape[0])


def split_batch(graphs: Sequence[Any], parts: int) -> list[list[int]]:
    """Positions of ``graphs`` in ``parts`` groups of similar cost (greedy, largest first).

    Deterministic for a given batch; each group keeps the batch order; empty groups are dropped.
    """
    order = sorted(range(len(graphs)), key=lambda i: (-graph_cost(graphs[i]), i))
    groups: list[list[int]] = [[] for _ in range(max(1, parts))]
    load = [0] * len(groups)
    for i in order:
        k = min(range(len(groups)), key=lambda j: (load[j], j))
        groups[k].append(i)
        load[k] += graph_cost(graphs[i])
    return [sorted(g) for g in groups if g]


def _init_worker(threads: int, flush_denormal: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)


class CpuDataParallel:
    """Replicas of ``model`` driven by a thread pool; ``model`` itself is replica 0.

    Every pass (:meth:`map_parts`, and through it :meth:`train_step` and
    :meth:`predict`) first copies the master's weights, ``requires_grad`` flags,
    buffers and train/eval mode into the other replicas (:meth:`sync`, ~0.4M
    floats), so changes to the master (an optimizer step, a refit, a loaded
    state, unfreezing) are always seen.
    """

    def __init__(self, model, workers: int, threads: int, *, flush_denormal: bool = True):
        import torch

        if workers < 2:
            raise ValueError("CpuDataParallel needs at least 2 workers")
        self.model = model
        self.workers = workers
        self.threads = threads
        self._saved_threads = torch.get_num_threads()
        self.replicas = [model] + [copy.deepcopy(model) for _ in range(workers - 1)]
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="tui-ft-dp", initializer=_init_worker, initargs=(threads, flush_denormal)
        )

    # -- weights
    def sync(self) -> None:
        import torch

        master_p = list(self.model.parameters())
        master_b = list(self.model.buffers())
        with torch.no_grad():
            for rep in self.replicas[1:]:
                for src, dst in zip(master_p, rep.parameters(), strict=True):
                    dst.copy_(src)
                    dst.requires_grad_(src.requires_grad)
                for src, dst in zip(master_b, rep.buffers(), strict=True):
                    dst.copy_(src)
                rep.train(self.model.training)
                cm, rcm = getattr(self.model, "composition_model", None), getattr(rep, "composition_model", None)
                if cm is not None and rcm is not None and hasattr(cm, "fitted"):
                    rcm.fitted = cm.fitted

    # -- passes
    def train_step(self, graphs: Sequence[Any], target, loss_fn):
        """Forward and backward over ``graphs`` split across the replicas.

        ``loss_fn(pred, target, reduction=...)`` is one of torch's functional
        losses (the engine's ``_loss_fn``). Leaves the whole batch's gradient in
        the master's ``.grad`` (set, not accumulated) and returns
        ``(predictions in batch order, loss)``, both detached.
        """
        import torch

        n = len(graphs)
        groups = split_batch(graphs, self.workers)

        def work(rep, idx: list[int]):
            rep.zero_grad(set_to_none=True)
            pred = rep([graphs[i] for i in idx], task="e")["e"]
            loss = loss_fn(pred, target[idx], reduction="sum") / n
            loss.backward()
            return pred.detach(), loss.detach()

        results = self.map_parts(work, groups)
        # master (replica 0) holds its part's gradient; add the others' in a fixed order
        for k in range(1, len(groups)):
            for dst, src in zip(self.model.parameters(), self.replicas[k].parameters(), strict=True):
                if src.grad is None:
                    continue
                if dst.grad is None:
                    dst.grad = src.grad.clone()
                else:
                    dst.grad.add_(src.grad)
        pred = torch.empty(n, dtype=results[0][0].dtype)
        for idx, (p, _) in zip(groups, results):
            pred[idx] = p
        loss = sum((lv for _, lv in results[1:]), results[0][1])
        return pred, loss

    def predict(self, graphs: Sequence[Any]):
        """``model(graphs)["e"]`` without gradients, split across the replicas; batch order kept."""
        import torch

        groups = split_batch(graphs, self.workers)

        def work(rep, idx: list[int]):
            with torch.no_grad():  # grad mode is per thread: set here, in the worker
                return rep([graphs[i] for i in idx], task="e")["e"].detach()

        out = torch.empty(len(graphs))
        for idx, p in zip(groups, self.map_parts(work, groups)):
            out[idx] = p.to(out.dtype)
        return out

    def map_parts(self, fn, groups: Sequence[Sequence[int]]) -> list:
        """``[fn(replica_k, group_k) for k]`` run at the same time, one replica per group (synced first)."""
        if len(groups) > len(self.replicas):
            raise ValueError(f"{len(groups)} groups for {len(self.replicas)} replicas")
        self.sync()
        futures = [self.pool.submit(fn, self.replicas[k], g) for k, g in enumerate(groups)]
        return [f.result() for f in futures]

    def close(self) -> None:
        import torch

        self.pool.shutdown(wait=True)
        self.replicas = [self.model]
        torch.set_num_threads(self._saved_threads)
