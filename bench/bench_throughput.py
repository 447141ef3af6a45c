"""Epoch throughput: tui-ft's engine against chgnet's own ``Trainer`` on the same structures.

    nice python bench/bench_throughput.py                  # head and full mode, N=400, 3 rounds
    nice python bench/bench_throughput.py --modes full --n 96 --rounds 2
    nice python bench/bench_throughput.py --modes full --chgnet-threads match   # same process settings on both sides
    git archive OLD tui_ft | tar -x -C /tmp/old && \
      nice python bench/bench_throughput.py --modes full --compare-src /tmp/old   # before/after of an engine change

What runs (each side in its own process, so thread settings do not leak from one
to the other; the parent alternates them A/B/C, A/B/C, ... one at a time, the
waiting side blocked on a pipe):

A  tui-ft: the real engine (``run_training``) with a preset built from
   ``presets/head_finetune_freeze.toml`` / ``presets/full_finetune.toml``:
   dev file, fold 0, ``fraction`` chosen so training has exactly N rows,
   validation = the preset's 10% of the training part (400 rows), batch 8,
   device cpu, seed 0, lr 1e-3 (head) / 1e-4 (full), no AtomRef refit (it
   changes weights, not work), ``test_limit`` 8. ``Trainer._train_epoch`` and
   ``Trainer._evaluate`` are wrapped with timers: *train* is one pass over the N
   training rows (forward, loss, backward, optimizer step), *val* one
   prediction pass over the validation rows. Checkpoint writes, events and
   the one-off setup (data, graph cache, frozen features) are outside both.
   The engine pauses inside its ``epoch_end`` event while the others run.
B  chgnet: what a notebook user writes: ``CHGNet.load()``, ``StructureData``
   (structures, e_form as energy per atom, zero forces) for the same training
   and validation rows, ``DataLoader(..., batch_size=8, shuffle=True,
   collate_fn=collate_graphs)``, ``Trainer(model, targets="e", optimizer="Adam",
   learning_rate=..., use_device="cpu", torch_seed=0)``; *train* is
   ``trainer._train(loader, epoch)``, *val* ``trainer._validate(val_loader)``.
   Head mode: every parameter frozen except ``readout_norm``, ``mlp`` and
   ``composition_model``; full mode: all parameters train (as in tui-ft's
   full mode, where AtomRef trains too). StructureData converts each structure
   to a graph on first access and caches it in memory (``functools.cache``), so
   chgnet's first epoch includes graph conversion: it runs before round 1 and
   is reported separately, not in the medians.
C  (full mode) the pure model: forward + backward of the same CHGNet on the
   same N rows in batches of 8, no optimizer step, no loss bookkeeping,
   in the tui-ft process's thread settings: (1) ``model(graphs, task="e")`` on
   graphs already converted (what the engine does per batch), (2)
   ``model._compute(batched_graph)`` on ``BatchedGraph`` objects built once
   beforehand (the basis expansion is then outside the timed region and the
   learnable basis frequencies get no gradient, so this is a lower bound).

The chgnet process runs with torch's defaults, as a notebook does; the tui-ft
process with the engine's settings (``OMP_WAIT_POLICY=PASSIVE`` unless set, denormal
floats flushed on the CPU). ``--chgnet-threads match`` gives the chgnet process the
same settings, so that only the two pipelines differ.

Reported: structures per second for train, val and the whole epoch
(N / (train + val)), the median over rounds, and tui-ft / chgnet ratios. On a
shared machine other processes come and go within seconds: read the per-round
numbers too.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    command_line,
    count_rows,
    dev_preset,
    fmt_s,
    fraction_for_n,
    git_dirty,
    git_head,
    loadavg,
    machine_line,
    markdown_table,
    median,
    require_dev_data,
    setup_env,
    warn_if_not_niced,
)

LR = {"head": 1e-3, "full": 1e-4}
# A and B on a GPU (bench/gpu_check.sh): TUI_FT_BENCH_DEVICE=cuda:0 (use --no-model: C stays on the CPU)
DEVICE = os.environ.get("TUI_FT_BENCH_DEVICE", "cpu")
HEAD_MODULES = ("readout_norm", "mlp", "composition_model")


def _splits(data: Path, n: int, vf: float):
    from tui_ft.core.data.dataset import make_splits

    rows = count_rows(data)
    frac = fraction_for_n(rows, n, val_fraction=vf)
    return frac, make_splits(rows, fold=0, fraction=frac, val_fraction=vf, seed=0)


def _threads_info() -> str:
    import torch

    flushed = bool((torch.tensor([1e-39]) * 1.0 == 0).item())  # subnormal flushed to zero on this thread?
    info = (f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
            f"flush denormal {'on' if flushed else 'off'}")
    trainer = _LIVE.get("trainer")
    dp = getattr(trainer, "dp", None)
    if dp is not None:
        info += f", cpu workers {dp.workers} x {dp.threads} thread(s)"
    return info


_LIVE: dict = {}  # the engine's Trainer of this process, for _threads_info


# ---------------------------------------------------------------- A: tui-ft engine


def tuift_worker(conn, mode: str, n: int, rounds: int, data: str, cache: str, vf: float, src: str | None,
                 workers: str | None = None) -> None:
    setup_env(cache)
    if workers:  # TUI_FT_CPU_WORKERS for this side (tui_ft.core.train.parallel)
        os.environ["TUI_FT_CPU_WORKERS"] = workers
    if src:  # another source tree of tui-ft (e.g. the commit before a speed-up), ahead of the editable install
        sys.path.insert(0, str(Path(src).resolve()))
    from tui_ft.core.train import engine

    if src and not Path(engine.__file__).resolve().is_relative_to(Path(src).resolve()):
        raise SystemExit(f"--compare-src {src}: imported {engine.__file__} instead")
    from tui_ft.core.common.events import EpochEnd, RunFailed, RunFinished
    from tui_ft.core.common.paths import Paths

    frac, _ = _splits(Path(data), n, vf)
    times: dict[str, float] = {}
    orig_train, orig_eval = engine.Trainer._train_epoch, engine.Trainer._evaluate

    def timed_train(self, epoch):
        t = time.perf_counter()
        try:
            return orig_train(self, epoch)
        finally:
            times["train"] = time.perf_counter() - t

    def timed_eval(self, part):
        t = time.perf_counter()
        try:
            return orig_eval(self, part)
        finally:
            if part == "val":
                times["val"] = time.perf_counter() - t

    orig_init = engine.Trainer.__init__

    def init(self, ctx):
        orig_init(self, ctx)
        _LIVE["trainer"] = self

    engine.Trainer.__init__ = init
    engine.Trainer._train_epoch = timed_train
    engine.Trainer._evaluate = timed_eval
    base = "head_finetune_freeze" if mode == "head" else "full_finetune"
    preset = dev_preset(
        base,
        {
            "run.name": f"bench_{mode}",
            "data.fraction": frac,
            "data.val_fraction": vf,
            "data.test_limit": 8,
            "finetune.refit_atomref": False,
            "optim.lr": LR[mode],
            "train.epochs": rounds,
            "train.batch_size": 8,
            "train.device": DEVICE,
            "train.seed": 0,
        },
        Path(data),
    )
    t0 = time.perf_counter()
    first = {"setup": None}

    def emit(ev):
        if isinstance(ev, EpochEnd):
            if first["setup"] is None:
                first["setup"] = time.perf_counter() - t0 - times.get("val", 0.0)
            conn.send(
                {
                    "epoch": ev.epoch,
                    "train": times.pop("train", None) if ev.epoch else None,
                    "val": times.pop("val", None),
                    "n": ev.n_structures,
                    "val_mae": ev.val_mae,
                    "setup": first["setup"],
                    "threads": _threads_info(),
                }
            )
            conn.recv()  # wait for our turn
        elif isinstance(ev, (RunFinished, RunFailed)):
            conn.send({"end": type(ev).__name__, "info": getattr(ev, "message", "") or getattr(ev, "test_mae", "")})

    engine.run_training(preset, run_id=f"bench-{mode}-{os.getpid()}", paths=Paths.default(), emit=emit)
    conn.close()


# ---------------------------------------------------------------- B: chgnet's Trainer


def chgnet_worker(conn, mode: str, n: int, rounds: int, data: str, vf: float, match_env: dict) -> None:
    os.environ.update(match_env)
    import contextlib

    import numpy as np
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader

    from tui_ft.core.data.dataset import load_matbench

    if match_env.get("TUI_FT_BENCH_THREADS"):
        torch.set_num_threads(int(match_env["TUI_FT_BENCH_THREADS"]))
    if match_env.get("TUI_FT_BENCH_FLUSH_DENORMAL"):
        torch.set_flush_denormal(True)
    _, sp = _splits(Path(data), n, vf)
    ds = load_matbench(data)
    quiet = contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 - chgnet prints a lot
    with quiet:
        model = CHGNet.load(model_name="0.3.0", use_device=DEVICE, verbose=False)

        def make(rows):
            return StructureData(
                structures=[ds.structures[r] for r in rows],
                energies=[float(ds.targets[r]) for r in rows],
                forces=[np.zeros((len(ds.structures[r]), 3)) for r in rows],
                structure_ids=[ds.ids[r] for r in rows],
                graph_converter=model.graph_converter,
            )

        train_ds, val_ds = make(sp.train), make(sp.val)
        train_loader = DataLoader(train_ds, batch_size=8, shuffle=True, collate_fn=collate_graphs)
        val_loader = DataLoader(val_ds, batch_size=8, shuffle=False, collate_fn=collate_graphs)
        trainer = Trainer(
            model, targets="e", optimizer="Adam", scheduler="CosLR", criterion="MSE", epochs=rounds + 1,
            learning_rate=LR[mode], use_device=DEVICE, torch_seed=0, print_freq=10**9,
        )
        for name, prm in model.named_parameters():
            prm.requires_grad = mode == "full" or name.split(".")[0] in HEAD_MODULES
    epoch = 0
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        with quiet:
            t = time.perf_counter()
            tr = trainer._train(train_loader, epoch)
            t_train = time.perf_counter() - t
            t = time.perf_counter()
            va = trainer._validate(val_loader)
            t_val = time.perf_counter() - t
        conn.send({"epoch": epoch, "train": t_train, "val": t_val, "n": len(sp.train), "val_mae": va["e"],
                   "train_mae": tr["e"], "threads": _threads_info()})
        epoch += 1
    conn.close()


# ---------------------------------------------------------------- C: the model alone


def model_worker(conn, n: int, data: str, cache: str, vf: float) -> None:
    setup_env(cache)
    import torch

    from tui_ft.core.train import engine  # same process-wide settings as the engine
    from tui_ft.core.data.graphcache import GraphCache
    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.common.paths import Paths

    if hasattr(engine, "configure_cpu"):
        engine.configure_cpu("cpu")
    _, sp = _splits(Path(data), n, vf)
    ds = load_matbench(data)
    model = engine.load_pretrained("0.3.0")
    graphs, _ = GraphCache(ds, model.graph_converter, Paths.default()).get(sp.train)
    gen = torch.Generator().manual_seed(0)
    order = [int(sp.train[i]) for i in torch.randperm(len(sp.train), generator=gen)]
    batches = [[graphs[r] for r in order[i : i + 8]] for i in range(0, len(order), 8)]
    with torch.no_grad():
        from chgnet.model.model import BatchedGraph

        built = [
            BatchedGraph.from_graphs(b, model.bond_basis_expansion, model.angle_basis_expansion) for b in batches
        ]
    model.train()
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        t = time.perf_counter()
        for b in batches:
            model.zero_grad(set_to_none=True)
            model(b, task="e")["e"].sum().backward()
        t_graphs = time.perf_counter() - t
        t = time.perf_counter()
        for bg in built:
            model.zero_grad(set_to_none=True)
            model._compute(bg)["e"].sum().backward()
        t_built = time.perf_counter() - t
        conn.send({"graphs": t_graphs, "built": t_built, "n": len(order), "threads": _threads_info()})
    conn.close()


# ---------------------------------------------------------------- driver


def run_mode(mode: str, args) -> dict:
    """Start the workers one at a time (their set-up must not overlap timed work), then rounds of
    A (tui-ft, then each --compare-src tree), B (chgnet), C (pure model), one at a time."""
    ctx = mp.get_context("spawn")
    data, cache, vf = str(args.data), str(args.cache), args.val_fraction
    sides = [("tui-ft", None, None)]
    if mode == "full":
        sides = [("tui-ft" if w is None else f"tui-ft workers={w}", None, w) for w in args.workers] or sides
    sides += [(f"tui-ft@{Path(s).name}", s, None) for s in args.compare_src]
    res: dict = {"A": {label: [] for label, _, _ in sides}, "A0": {}, "B": [], "C": []}
    procs, pipes = [], {}
    for label, src, workers in sides:
        pa, ca = ctx.Pipe()
        procs.append(ctx.Process(target=tuift_worker,
                                 args=(ca, mode, args.n, args.rounds, data, cache, vf, src, workers)))
        procs[-1].start()
        a0 = pa.recv()  # set-up and epoch 0 (validation only) done; the engine now waits in its epoch_end event
        if "end" in a0:
            raise SystemExit(f"{label}: run ended before epoch 0: {a0}")
        res["A0"][label], pipes[label] = a0, pa
        print(f"[{mode}] {label} set-up {fmt_s(a0['setup'])}, epoch-0 validation {fmt_s(a0['val'])}; "
              f"{a0['threads']}", file=sys.stderr, flush=True)
    match_env = _env_of(res["A0"]["tui-ft"]["threads"]) if args.chgnet_threads == "match" else {}
    pb, cb = ctx.Pipe()
    procs.append(ctx.Process(target=chgnet_worker, args=(cb, mode, args.n, args.rounds, data, vf, match_env)))
    procs[-1].start()
    pb.send("go")  # chgnet's first epoch: graph conversion + training, reported apart
    res["B0"] = pb.recv()
    print(f"[{mode}] chgnet first epoch (with graph conversion) train {fmt_s(res['B0']['train'])}, "
          f"val {fmt_s(res['B0']['val'])}; {res['B0']['threads']}", file=sys.stderr, flush=True)
    pc = None
    if mode == "full" and not args.no_model:
        pc, cc = ctx.Pipe()
        procs.append(ctx.Process(target=model_worker, args=(cc, args.n, data, cache, vf)))
        procs[-1].start()
        pc.send("go")  # warm-up pass
        pc.recv()
    for r in range(args.rounds):
        parts = []
        for label, _, _ in sides:
            pipes[label].send("go")
            a = pipes[label].recv()
            if "end" in a:
                raise SystemExit(f"{label}: run ended early: {a}")
            res["A"][label].append(a)
            parts.append(f"{label} train {fmt_s(a['train'])} val {fmt_s(a['val'])}")
        pb.send("go")
        b = pb.recv()
        res["B"].append(b)
        parts.append(f"chgnet train {fmt_s(b['train'])} val {fmt_s(b['val'])}")
        if pc is not None:
            pc.send("go")
            c = pc.recv()
            res["C"].append(c)
            parts.append(f"model fwd+bwd {fmt_s(c['graphs'])} (prebuilt batches {fmt_s(c['built'])})")
        print(f"[{mode}] round {r + 1}: " + " | ".join(parts) + f"  load {loadavg()}", file=sys.stderr, flush=True)
    for label, _, _ in sides:
        pipes[label].send("go")
        res.setdefault("end", {})[label] = pipes[label].recv()
    pb.send("stop")
    if pc is not None:
        pc.send("stop")
    for p in procs:
        p.join(timeout=120)
    return res


def _env_of(threads: str) -> dict:
    """'torch threads N, OMP_WAIT_POLICY=X, flush denormal on|off' (the tui-ft process) -> the chgnet process."""
    first, second, third = (x.strip() for x in threads.split(",")[:3])
    env = {"TUI_FT_BENCH_THREADS": first.split()[-1]}
    if "cpu workers" in threads:  # data-parallel tui-ft: chgnet gets as many threads as tui-ft has in all
        w, t = threads.split("cpu workers", 1)[1].split("thread")[0].split("x")
        env["TUI_FT_BENCH_THREADS"] = str(int(w) * int(t))
    pol = second.split("=", 1)[1]
    if pol != "(unset)":
        env["OMP_WAIT_POLICY"] = pol
    if third.endswith("on"):
        env["TUI_FT_BENCH_FLUSH_DENORMAL"] = "1"
    return env


def summarize(mode: str, res: dict, n: int, n_val: int) -> str:
    B, C = res["B"], res["C"]
    b_tr, b_va = median(x["train"] for x in B), median(x["val"] for x in B)
    b_ep = median(x["train"] + x["val"] for x in B)
    rows = []
    for label, A in res["A"].items():
        a_tr, a_va = median(x["train"] for x in A), median(x["val"] for x in A)
        a_ep = median(x["train"] + x["val"] for x in A)
        rows.append([label, f"{n / a_tr:.2f}", f"{n_val / a_va:.1f}", f"{n / a_ep:.2f}", fmt_s(a_tr), fmt_s(a_va),
                     f"**{b_tr / a_tr:.2f}x**", f"**{b_va / a_va:.2f}x**", f"**{b_ep / a_ep:.2f}x**"])
    rows.append(["chgnet Trainer", f"{n / b_tr:.2f}", f"{n_val / b_va:.1f}", f"{n / b_ep:.2f}", fmt_s(b_tr),
                 fmt_s(b_va), "1.00x", "1.00x", "1.00x"])
    rounds = len(B)
    out = [f"### {mode} mode: N={n} training / {n_val} validation structures, batch 8, cpu, {rounds} rounds (medians)",
           ""]
    out.append(markdown_table(
        ["side", "train structures/s", "val structures/s", "epoch (train+val) train-structures/s", "train time",
         "val time", "train speed vs chgnet", "val speed vs chgnet", "epoch speed vs chgnet"], rows))
    out.append("")
    b0 = res["B0"]
    out.append(f"- chgnet first epoch (includes converting {n} + {n_val} structures to graphs): "
               f"train {fmt_s(b0['train'])}, val {fmt_s(b0['val'])} (not in the medians)")
    for label, a0 in res["A0"].items():
        out.append(f"- {label}: one-off set-up before epoch 0 (data, model, graph cache"
                   f"{', frozen features' if mode == 'head' else ''}) {fmt_s(a0['setup'])}; {a0['threads']}")
    out.append(f"- chgnet: {B[0]['threads']}")
    for label, A in res["A"].items():
        out.append(f"- per round train seconds, {label}: {[round(x['train'], 2) for x in A]}")
    out.append(f"- per round train seconds, chgnet: {[round(x['train'], 2) for x in B]}")
    if C:
        g, bt = median(x["graphs"] for x in C), median(x["built"] for x in C)
        a_tr = median(x["train"] for x in res["A"]["tui-ft"])
        out.append(f"- pure model forward+backward on the N structures (no optimizer step; tui-ft's settings): "
                   f"converted graphs {fmt_s(g)} ({n / g:.2f} structures/s), prebuilt BatchedGraphs {fmt_s(bt)} "
                   f"({n / bt:.2f} structures/s); tui-ft train pass / pure model(graphs) = {a_tr / g:.2f}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="training structures (fold-0 training part), default 400")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (epochs per side after warm-up), default 3")
    ap.add_argument("--modes", default="head,full", help="comma list of head, full (default both)")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="validation share of the training part (default 0.1: 400 structures on the dev file)")
    ap.add_argument("--data", type=Path, default=None, help="Matbench-layout dev file (default ../shared/data/...)")
    ap.add_argument("--cache", type=Path, default=None, help="persistent TUI_FT_CACHE (default /tmp/tui-ft-bench-cache)")
    ap.add_argument("--chgnet-threads", choices=["default", "match"], default="default",
                    help="chgnet process: torch defaults as in a notebook (default), or the tui-ft process's "
                         "settings (threads, OMP_WAIT_POLICY, denormal flushing) so only the pipelines differ")
    ap.add_argument("--compare-src", action="append", default=[], metavar="DIR",
                    help="also time the engine of another tui-ft source tree (e.g. `git archive` of an older "
                         "commit), alternated with the others; repeatable")
    ap.add_argument("--no-model", action="store_true", help="skip the pure-model pass (C)")
    ap.add_argument("--workers", default="",
                    help="full mode: comma list of TUI_FT_CPU_WORKERS values, one tui-ft side each, alternated "
                         "(e.g. 'auto,1': the default data-parallel engine and the engine without the split); "
                         "'auto' leaves the variable unset")
    args = ap.parse_args(argv)
    args.workers = list(dict.fromkeys(None if w.strip() == "auto" else w.strip() for w in args.workers.split(",") if w.strip()))
    args.data = require_dev_data(args.data)
    _, args.cache = setup_env(args.cache)
    warn_if_not_niced()
    print(f"$ {command_line()}  (commit {git_head()}{', with uncommitted changes' if git_dirty() else ''})")
    print(machine_line())
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in LR:
            ap.error(f"unknown mode {mode!r}")
        res = run_mode(mode, args)
        _, sp = _splits(args.data, args.n, args.val_fraction)
        print()
        print(summarize(mode, res, args.n, len(sp.val)))
        print(f"- load average after: {loadavg()}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
