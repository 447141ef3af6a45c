"""Frozen-backbone feature extraction (head mode's one-off cost on a cold cache): one thread pool vs the split.

    nice python bench/bench_features.py                # 400 dev structures, 3 rounds
    nice python bench/bench_features.py --n 200 --rounds 5

Times ``tui_ft.core.train.engine.extract_features`` (what ``FeatureCache`` runs for the
rows it does not hold) on the same N structures of the dev file (the first N
rows of fold 0's training part; graphs built beforehand, not timed), in one
process, alternating per round: *plain* = one model, torch's intra-op threads
(what every run did before the split); *split* = the structures split into
groups of similar cost that run at the same time on replicas of the model, as
the engine plans it (``plan_workers``; ``TUI_FT_CPU_WORKERS`` /
``TUI_FT_THREADS`` apply). Batches of 32, as ``FeatureCache`` uses. Prints the
medians, the ratio, and the largest difference between the two sides' features.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, loadavg, machine_line, median, require_dev_data, setup_env, warn_if_not_niced  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="structures (default 400)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations (default 3)")
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    data = require_dev_data(args.data)
    setup_env()
    warn_if_not_niced()

    from tui_ft.core.train import engine
    from tui_ft.core.train import forward
    from tui_ft.core.data.dataset import load_matbench, matbench_folds
    from tui_ft.core.data.graphstore import energy_only
    from tui_ft.core.train.parallel import plan_workers

    engine.configure_cpu("cpu")
    import torch

    ds = load_matbench(data)
    train_rows = matbench_folds(len(ds.ids))[0][0][: args.n]
    model = engine.load_pretrained("0.3.0")
    graphs = [energy_only(model.graph_converter(ds.structures[int(r)], graph_id=str(r))) for r in train_rows]
    workers, threads = plan_workers(32, "cpu")
    print(f"$ {command_line()}")
    print(machine_line())
    print(f"N={len(graphs)} structures, batches of 32; plain: torch threads {torch.get_num_threads()}; "
          f"split: {workers} worker(s) x {threads} thread(s)")
    times: dict[str, list[float]] = {"plain": [], "split": []}
    out: dict[str, list] = {}
    for r in range(args.rounds):
        for side, w in (("plain", 1), ("split", workers)):
            t = time.perf_counter()
            out[side] = forward.extract_features(model, graphs, 32, "cpu", w, threads)
            times[side].append(time.perf_counter() - t)
        print(f"round {r + 1}: plain {times['plain'][-1]:.2f} s, split {times['split'][-1]:.2f} s  load {loadavg()}",
              file=sys.stderr, flush=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(out["plain"], out["split"]))
    mp, ms = median(times["plain"]), median(times["split"])
    print(f"plain: median {mp:.2f} s ({len(graphs) / mp:.1f} structures/s), rounds {[round(x, 2) for x in times['plain']]}")
    print(f"split: median {ms:.2f} s ({len(graphs) / ms:.1f} structures/s), rounds {[round(x, 2) for x in times['split']]}")
    print(f"split speed vs plain: {mp / ms:.2f}x; largest feature difference {diff:.2e}; load after {loadavg()}")
    print()  # the table as published in BENCHMARKS.md, section 3
    print("| extraction | median | rounds (s) | structures/s |")
    print("| --- | --- | --- | --- |")
    for label, side, med in ((f"plain (one model, {torch.get_num_threads()} intra-op threads)", "plain", mp),
                             (f"split ({workers} workers x {threads} thread)", "split", ms)):
        print(f"| {label} | {med:.2f} s | {', '.join(f'{x:.2f}' for x in times[side])} | {len(graphs) / med:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
