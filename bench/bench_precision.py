"""fp32 against bf16 (and fp16 on CUDA): epoch time, MAE and peak GPU memory of the real engine.

    python bench/bench_precision.py --device cuda:0                 # head and full, fp32/bf16/fp16, N=2000
    python bench/bench_precision.py --device cpu --n 96 --epochs 2  # fp32/bf16 on the CPU (slow)

Each row is one ``run_training`` of ``presets/head_finetune_freeze.toml`` /
``presets/full_finetune.toml`` on the dev file, fold 0, ``fraction`` chosen so
that training has exactly N rows, batch ``--batch-size``, seed 0, lr 1e-3 (head) /
1e-4 (full), ``test_limit`` 500. Reported: the median epoch time (train + val
pass, epochs 1..E), structures per second over training, the last val MAE, the
test MAE of the best epoch, and ``peak_gpu_mem_mb`` from ``run_finished``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    command_line, count_rows, dev_preset, fraction_for_n, git_head, machine_line, markdown_table, median,
    require_dev_data, setup_env,
)

LR = {"head": 1e-3, "full": 1e-4}
BASE = {"head": "head_finetune_freeze", "full": "full_finetune"}


def one(mode: str, precision: str, args) -> list:
    from tui_ft.core.train import engine
    from tui_ft.core.common.events import EpochEnd, RunFinished
    from tui_ft.core.common.paths import Paths

    preset = dev_preset(BASE[mode], {
        "run.name": f"prec_{mode}_{precision}",
        "data.fraction": fraction_for_n(count_rows(args.data), args.n),
        "data.test_limit": 500,
        "optim.lr": LR[mode],
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.device": args.device,
        "train.precision": precision,
        "train.seed": 0,
    }, args.data)
    evs: list = []
    t = time.perf_counter()
    res = engine.run_training(preset, run_id=f"prec-{mode}-{precision}-{int(t)}", paths=Paths.default(),
                              emit=evs.append)
    if res.status != "finished":
        return [mode, precision, res.status, res.message[:60], "", "", ""]
    eps = [e for e in evs if isinstance(e, EpochEnd) and e.epoch > 0]
    fin = next(e for e in evs if isinstance(e, RunFinished))
    sec = median(e.seconds for e in eps)
    mem = "-" if fin.peak_gpu_mem_mb is None else f"{fin.peak_gpu_mem_mb:.0f}"
    return [mode, precision, f"{sec:.2f}", f"{args.n / sec:.1f}", f"{eps[-1].val_mae:.4f}", f"{fin.test_mae:.4f}", mem]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--n", type=int, default=2000, help="training structures (default 2000)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--modes", default="head,full")
    ap.add_argument("--precisions", default="", help="default: fp32,bf16,fp16 on CUDA, fp32,bf16 on the CPU")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    args.data = require_dev_data(args.data)
    setup_env(args.cache)
    precs = args.precisions or ("fp32,bf16,fp16" if args.device.startswith("cuda") else "fp32,bf16")
    print(f"$ {command_line()}  (commit {git_head()})")
    print(machine_line())
    rows = [one(m.strip(), p.strip(), args) for m in args.modes.split(",") for p in precs.split(",")]
    print(markdown_table(["mode", "precision", "s/epoch", "structures/s", "val MAE", "test MAE", "peak GPU MiB"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
