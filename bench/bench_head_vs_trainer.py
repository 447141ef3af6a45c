"""Head-stage epoch throughput: tui-ft's engine vs chgnet's own Trainer.

Both train only the readout head (readout_norm, mlp, composition_model) of the
pretrained CHGNet 0.3.0 with a frozen backbone, on the same structures (the
first N of tui-ft's fold-0 training rows of the dev file, and the same V
validation rows), batch size 8, Adam lr 1e-3, MSE, CPU, same seed. The two
are run alternately in one process (tui-ft, chgnet, tui-ft, chgnet), 2 epochs
each, so machine load hits both alike.

* tui-ft (``tui_ft.core.train.engine.run_training``, head mode): the frozen backbone
  runs once per structure and its per-atom output is cached; epochs train the
  head on those features. Reported twice: the epoch alone, and the epoch plus
  the one-time feature extraction spread over 10 epochs. The feature cache is
  deleted before each tui-ft round so every round pays for its extraction.
* chgnet (``chgnet.trainer.Trainer(targets="e")``, as a notebook user would
  write it: ``StructureData`` + ``get_train_val_test_loader``): every batch
  runs the whole (frozen) network forward, then back-propagates into the head.

Epoch time = wall time from the end of one epoch to the end of the next:
training, the validation pass and the per-epoch checkpoint writes, for both.
Throughput = training structures / epoch time (median over the timed
epochs; the fastest epoch is shown too, as the least disturbed by other
load on the machine). Crystal graphs are built once
before timing for both (tui-ft's disk graph cache; chgnet's StructureData
caches graphs in memory on first access) and reported separately.

    python bench/bench_head_vs_trainer.py [--n 400] [--val 40] [--data FILE]

Exits 0 with a message when the dev data file is not there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "mp_e_form_dev.json.gz"
BATCH = 8
LR = 1e-3
EPOCHS = 2
AMORTISE_EPOCHS = 10
HEAD_MODULES = ("readout_norm", "mlp", "composition_model")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_rows(n_rows: int, n_train: int, n_val: int, seed: int):
    """The data.fraction / data.val_fraction that give exactly n_train / n_val rows, and the splits."""
    from tui_ft.core.data.dataset import make_splits, matbench_folds

    train_part = len(matbench_folds(n_rows)[0][0])
    val_fraction = n_val / train_part
    fraction = n_train / (train_part - n_val)
    if not (0 < val_fraction <= 0.5 and 0 < fraction <= 1):
        raise SystemExit(f"--n {n_train} / --val {n_val} do not fit the {train_part} fold-0 training rows")
    splits = make_splits(n_rows, fold=0, fraction=fraction, val_fraction=val_fraction, seed=seed, test_limit=1)
    if (len(splits.train), len(splits.val)) != (n_train, n_val):
        raise SystemExit(f"could not select {n_train}/{n_val} rows (got {len(splits.train)}/{len(splits.val)})")
    return fraction, val_fraction, splits


# --------------------------------------------------------------------------- tui-ft


def run_tuift(data: Path, fraction: float, val_fraction: float, seed: int, paths, tag: str) -> dict:
    from tui_ft.core.train.engine import run_training
    from tui_ft.core.config.presets import preset_from_dict
    from tui_ft.core.library.runs import new_run_id

    shutil.rmtree(paths.cache / "features", ignore_errors=True)  # pay for the extraction every round
    preset = preset_from_dict(
        {
            "run": {"name": f"bench_head_{tag}"},
            "data": {"source": str(data), "fold": 0, "fraction": fraction, "val_fraction": val_fraction,
                     "seed": seed, "test_limit": 1},
            "finetune": {"mode": "head", "refit_atomref": False},  # start from the same AtomRef as chgnet
            "optim": {"optimizer": "adam", "lr": LR},
            "train": {"epochs": EPOCHS, "batch_size": BATCH, "device": "cpu", "seed": seed, "loss": "mse"},
        }
    )
    events: list = []
    seed_all(seed)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_training(preset, run_id=new_run_id(preset.name, paths), paths=paths, emit=events.append)
    if result.status != "finished":
        raise SystemExit(f"tui-ft run {result.status}: {result.message}")
    ends = [e for e in events if e.type == "epoch_end"]
    epoch_s = [b.time - a.time for a, b in zip(ends, ends[1:])]  # epochs 1..EPOCHS
    started = next(e for e in events if e.type == "run_started")
    extract = None
    for e in events:
        if e.type == "message" and "frozen backbone features" in e.text:
            m = re.search(r"computed the rest in ([0-9.]+)s", e.text)
            extract = float(m.group(1)) if m else e.time - started.time
    if extract is None:
        raise SystemExit("tui-ft did not report a feature extraction (is head mode on cached features?)")
    return {"epoch_s": epoch_s, "extract_s": extract, "n_train": started.n_train, "n_val": started.n_val,
            "n_extracted": started.n_train + started.n_val + started.n_test, "val_mae": [e.val_mae for e in ends]}


# --------------------------------------------------------------------------- chgnet Trainer


def make_chgnet_loaders(ds, splits, seed: int):
    """StructureData + get_train_val_test_loader over exactly tui-ft's train and val rows."""
    import numpy as np
    from chgnet.data.dataset import StructureData, get_train_val_test_loader

    rows = [int(r) for r in splits.train] + [int(r) for r in splits.val]
    structures = [ds.structures[r] for r in rows]
    energies = [float(ds.targets[r]) for r in rows]  # formation energy per atom (CHGNet is intensive)
    # StructureData.__getitem__ always builds a force tensor, even for targets="e": zero placeholders
    forces = [np.zeros((len(s), 3)).tolist() for s in structures]
    random.seed(seed)
    with contextlib.redirect_stdout(sys.stderr):
        data = StructureData(structures=structures, energies=energies, forces=forces,
                             structure_ids=[ds.ids[r] for r in rows])
    n, v = len(splits.train), len(splits.val)
    t = time.perf_counter()
    for i in range(len(data)):  # build (and cache) every graph before timing
        data[i]
    graphs_s = time.perf_counter() - t
    if data.failed_idx:
        log(f"chgnet StructureData: {len(data.failed_idx)} structures failed graph conversion")
    seed_all(seed)
    train_loader, val_loader = get_train_val_test_loader(
        data, batch_size=BATCH, train_ratio=(n + 0.5) / (n + v), val_ratio=(v + 0.5) / (n + v),
        return_test=False, pin_memory=False,
    )
    assert len(train_loader.sampler) == n and len(val_loader.sampler) == v, (len(train_loader.sampler), n)
    return train_loader, val_loader, graphs_s


def run_chgnet(train_loader, val_loader, seed: int, save_dir: Path) -> dict:
    from chgnet.trainer import Trainer

    from tui_ft.core.train.setup import load_pretrained

    seed_all(seed)
    model = load_pretrained("0.3.0")
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] in HEAD_MODULES
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(model=model, targets="e", optimizer="Adam", criterion="MSE", learning_rate=LR,
                          epochs=EPOCHS, print_freq=10**9, torch_seed=seed, data_seed=seed, use_device="cpu")
    marks: list[float] = []
    train_fn, save_fn = trainer._train, trainer.save_checkpoint

    def timed_train(*a, **k):
        if not marks:
            marks.append(time.perf_counter())
        return train_fn(*a, **k)

    def timed_save(*a, **k):
        out = save_fn(*a, **k)
        marks.append(time.perf_counter())
        return out

    trainer._train, trainer.save_checkpoint = timed_train, timed_save
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train(train_loader, val_loader, None, save_dir=str(save_dir), train_composition_model=True)
    return {"epoch_s": [b - a for a, b in zip(marks, marks[1:])], "trainable": trainable,
            "val_mae": trainer.training_history["e"]["val"]}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="training structures (default 400)")
    ap.add_argument("--val", type=int, default=40, help="validation structures (default 40)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Matbench-layout file (default: the dev file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (default 2: A B A B)")
    ap.add_argument("--workdir", help="keep runs and the graph cache here (default: a temp dir, removed)")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: dev data file {data} not found (pass --data FILE)")
        return 0

    import torch

    from tui_ft.core.data.graphcache import GraphCache
    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.train.setup import load_pretrained
    from tui_ft.core.common.paths import Paths

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tui-ft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TUI_FT_CACHE"] = str(work / "cache")  # never touch the user's cache
    paths = Paths(work / "home")
    try:
        ds = load_matbench(data, "e_form")
        fraction, val_fraction, splits = pick_rows(len(ds), args.n, args.val, args.seed)
        log(f"data {data}: {len(splits.train)} train + {len(splits.val)} val rows of fold 0's training part")

        t = time.perf_counter()
        rows = [int(r) for r in list(splits.train) + list(splits.val) + list(splits.test)]
        with contextlib.redirect_stdout(sys.stderr):
            graphs, failed = GraphCache(ds, load_pretrained("0.3.0").graph_converter, paths).get(rows)
        tui_graphs_s = time.perf_counter() - t
        if failed:
            raise SystemExit(f"{len(failed)} structures failed graph conversion; pick other rows")
        train_loader, val_loader, chg_graphs_s = make_chgnet_loaders(ds, splits, args.seed)

        tui, chg = [], []
        for k in range(1, args.rounds + 1):
            log(f"round {k}: A = tui-ft")
            tui.append(run_tuift(data, fraction, val_fraction, args.seed, paths, f"r{k}"))
            log(f"round {k}: B = chgnet Trainer")
            chg.append(run_chgnet(train_loader, val_loader, args.seed, work / f"chgnet_r{k}"))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    n = args.n
    tui_all = [s for r in tui for s in r["epoch_s"]]
    chg_all = [s for r in chg for s in r["epoch_s"]]
    tui_extract = statistics.median(r["extract_s"] for r in tui)

    print("head-stage throughput: tui-ft engine vs chgnet.trainer.Trainer(targets='e')")
    print(f"  data: {data.name}, fold 0 training part: {n} train + {args.val} val structures; batch {BATCH}; "
          f"cpu, {torch.get_num_threads()} torch threads; seed {args.seed}; {args.rounds} rounds A B, "
          f"{EPOCHS} epochs each")
    print(f"  trainable (head) parameters: {chg[0]['trainable']:,}; graphs built before timing: "
          f"tui-ft {tui_graphs_s:.1f}s, chgnet StructureData {chg_graphs_s:.1f}s")
    for k, (a, b) in enumerate(zip(tui, chg), 1):
        print(f"  round {k}: tui-ft epochs {', '.join(f'{s:.2f}s' for s in a['epoch_s'])} "
              f"(feature extraction {a['extract_s']:.1f}s for {a['n_extracted']} structures); "
              f"chgnet epochs {', '.join(f'{s:.2f}s' for s in b['epoch_s'])}")
    print("  epoch = train + validation pass + checkpoint writes; throughput = training structures / epoch time;")
    print("  median over all timed epochs (and, in brackets, the fastest epoch: least disturbed by other load)")

    def line(label: str, med: float, best: float) -> None:
        print(f"  {label:58} {n / med:8.1f} structures/s  ({med:.2f} s/epoch)   [{n / best:8.1f}/s]")

    tui_med, tui_best = statistics.median(tui_all), min(tui_all)
    chg_med, chg_best = statistics.median(chg_all), min(chg_all)
    am = tui_extract / AMORTISE_EPOCHS
    line("tui-ft, epoch alone (head on cached features)", tui_med, tui_best)
    line(f"tui-ft, epoch + one-time extraction spread over {AMORTISE_EPOCHS} epochs", tui_med + am, tui_best + am)
    line("chgnet Trainer, frozen backbone (full forward each batch)", chg_med, chg_best)
    print(f"  ratio tui-ft / chgnet (median): epoch alone {chg_med / tui_med:.1f}x, with extraction amortised "
          f"over {AMORTISE_EPOCHS} epochs {chg_med / (tui_med + am):.1f}x   "
          f"[fastest epochs: {chg_best / tui_best:.1f}x, {chg_best / (tui_best + am):.1f}x]")

    # the table as published in BENCHMARKS.md, section 4
    def row(label: str, med: float, best: float) -> str:
        return f"| {label} | {med:.2f} s | {n / med:.1f} | {best:.2f} s | {n / best:.1f} |"

    print()
    print(f"| {n} training structures / epoch | median epoch | structures/s | fastest epoch | structures/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(row("tui-ft, epoch alone (head on cached features)", tui_med, tui_best))
    print(row(f"tui-ft, epoch + extraction ({tui_extract:.2f} s median) / {AMORTISE_EPOCHS} epochs", tui_med + am,
              tui_best + am))
    print(row("chgnet Trainer, frozen backbone", chg_med, chg_best))
    print(f"| **ratio tui-ft / chgnet**, epoch alone | | **{chg_med / tui_med:.0f}x** | | {chg_best / tui_best:.0f}x |")
    print(f"| **ratio**, extraction amortised over {AMORTISE_EPOCHS} epochs | | **{chg_med / (tui_med + am):.0f}x** | | "
          f"{chg_best / (tui_best + am):.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
