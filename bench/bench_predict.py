"""Prediction throughput: ``tui_ft.core.library.predict.predict`` against chgnet's ``CHGNet.predict_structure``.

    nice python bench/bench_predict.py                 # 1,000 dev structures, batch 16, pretrained CHGNet 0.3.0
    nice python bench/bench_predict.py --n 200 --ckpt checkpoints/RUN/best.pt --repeat 2

Both sides get the same first N structures of the dev file, already parsed into
pymatgen ``Structure`` objects (parsing is not timed), the same model and the
same batch size, in one process, alternating (chgnet first). Each timing is
wall clock from structures to predictions, graph conversion included:

- chgnet: ``model.predict_structure(structures, task="e", batch_size=B)``
  (graphs converted one by one, one forward per batch, autograd on).
- tui-ft: ``predict(model, dataset, rows=..., batch_size=B)``: graphs through
  ``predict.convert_graphs``, forward passes without autograd, each batch split
  across CPU worker threads (``TUI_FT_CPU_WORKERS``, default one per core).

Prints both times, structures per second, the ratio (chgnet time / tui-ft time;
above 1 means tui-ft is faster) and the largest difference between the two
sides' predictions. Numbers depend on the load of the machine: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEV_DATA, machine_line, require_dev_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="structures (first N rows of the dev file; default 1000)")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size for both sides (default 16, chgnet's)")
    ap.add_argument("--data", type=Path, default=None, help=f"Matbench-layout file (default {DEV_DATA})")
    ap.add_argument("--ckpt", type=Path, default=None, help="tui-ft checkpoint (default: pretrained CHGNet 0.3.0)")
    ap.add_argument("--repeat", type=int, default=1, help="alternating repetitions (default 1)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.train.setup import configure_cpu, load_pretrained
    from tui_ft.core.train.parallel import plan_workers
    from tui_ft.core.library.predict import load_model, predict

    data = require_dev_data(args.data)
    configure_cpu("cpu")
    ds = load_matbench(data, "e_form")
    n = min(args.n, len(ds))
    rows = list(range(n))
    structures = [ds.structures[r] for r in rows]  # parsed once, for both sides
    if any(s is None for s in structures):
        print("error: some of the first N structures do not parse", file=sys.stderr)
        return 2
    model = load_model(args.ckpt)[0] if args.ckpt else load_pretrained("0.3.0")
    model.eval()
    workers, threads = plan_workers(args.batch_size, "cpu")
    print(machine_line())
    print(f"data {data.name}: {n} structures, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"tui-ft CPU workers {workers} x {threads} thread(s); model {'pretrained 0.3.0' if not args.ckpt else args.ckpt}")
    t_ref, t_ours = [], []
    for rep in range(args.repeat):
        t0 = time.perf_counter()
        ref = model.predict_structure(structures, task="e", batch_size=args.batch_size)
        t_ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = predict(model, ds, rows=rows, batch_size=args.batch_size, device="cpu")
        t_ours.append(time.perf_counter() - t0)
        ref = ref if isinstance(ref, list) else [ref]
        a = np.array([float(p["e"]) for p in ref])
        b = np.array([r.prediction for r in res.rows])
        ok = len(res.rows) == n and not res.failures
        diff = float(np.abs(a - b).max()) if ok else float("nan")
        print(f"  rep {rep + 1}: chgnet predict_structure {t_ref[-1]:7.1f} s ({n / t_ref[-1]:6.1f}/s)   "
              f"tui-ft predict {t_ours[-1]:7.1f} s ({n / t_ours[-1]:6.1f}/s)   ratio {t_ref[-1] / t_ours[-1]:.2f}x   "
              f"max |diff| {diff:.2e}" + ("" if ok else f"   ({len(res.failures)} failed)"))
    best_ref, best_ours = min(t_ref), min(t_ours)
    print(f"predict throughput ratio (tui-ft / chgnet predict_structure, best of {args.repeat}): "
          f"{best_ref / best_ours:.2f}x  ({n / best_ours:.1f} vs {n / best_ref:.1f} structures/s)")
    print(f"after: {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
