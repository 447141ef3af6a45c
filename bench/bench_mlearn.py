"""Potential fine-tuning on the mlearn benchmark (real DFT, ../shared/data/mlearn/): fine-tune
CHGNet on ``<El>_training`` with a preset (default ``presets/mlearn_si.toml`` with the element
swapped in), test once on ``<El>_test``, and print energy / force / stress MAE beside the
pretrained model's on the same test frames and the published test errors on this split.

    nice python bench/bench_mlearn.py --element Si [--epochs 8] [--workdir /tmp/mlearn]

Published (Zuo et al., J. Phys. Chem. A 124, 731 (2020), as listed in ACEpotentials.jl's
examples/zuobench; JARVIS leaderboard for CHGNet): meV/atom and eV/Å on the test split.
The data is never copied into the project; the run lives in ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# as the engine does (tui_ft.core.train.engine): OpenMP threads that spin make training several times
# slower when anything else shares the cores; libgomp reads this when torch is first imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MLEARN = (REPO.parent / "shared" / "data" / "mlearn").resolve()
PUBLISHED = {  # element: {potential: (energy meV/atom, force eV/Å)}
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06), "CHGNet (JARVIS)": (33.2, 0.136)},
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
}


def zero_shot(test_file: Path) -> dict[str, float]:
    """The pretrained CHGNet 0.3.0 on the test frames, as it is (no AtomRef refit)."""
    import numpy as np
    from chgnet.model import CHGNet

    from tui_ft.core.data.frames import load_frames

    model = CHGNet.load(verbose=False)
    fs = load_frames(test_file)
    e, f, s = [], [], []
    for fr in fs.frames:
        p = model.predict_structure(fr.structure)
        e.append(abs(float(p["e"]) - fr.energy_per_atom))
        f.append(np.abs(p["f"] - fr.forces).ravel())
        if fr.stress is not None:
            s.append(np.abs(p["s"] - fr.stress).ravel())
    return {"energy_mae": 1000 * float(np.mean(e)), "force_mae": 1000 * float(np.mean(np.concatenate(f))),
            "stress_mae": float(np.mean(np.concatenate(s))) if s else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--element", default="Si", choices=sorted(PUBLISHED))
    ap.add_argument("--preset", default=str(REPO / "presets" / "mlearn_si.toml"))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the training frames (smoke tests)")
    ap.add_argument("--workdir", default="/tmp/tui-ft-mlearn")
    args = ap.parse_args()
    train, test = MLEARN / f"{args.element}_training.json.gz", MLEARN / f"{args.element}_test.json.gz"
    if not train.is_file() or not test.is_file():
        print(f"error: {train} / {test} not found (the mlearn data lies in ../shared/data/mlearn/)", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    (work / "presets").mkdir(parents=True, exist_ok=True)
    os.environ["TUI_FT_HOME"] = str(work)
    from tui_ft.core.common.events import RunFinished, read_events
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.library.runs import new_run_id
    from tui_ft.core.train.engine import run_training

    base = load_preset(args.preset)
    changes = {"data.source": str(train), "data.test_source": str(test), "data.fraction": args.fraction,
               "run.name": f"mlearn_{args.element.lower()}"}
    if args.epochs:
        changes["train.epochs"] = args.epochs
    preset = base.with_changes(changes)
    paths = Paths(work)
    t0 = time.perf_counter()
    zs = zero_shot(test)
    t_zs = time.perf_counter() - t0
    run_id = new_run_id(preset.name, paths)
    t0 = time.perf_counter()
    res = run_training(preset, run_id=run_id, paths=paths, emit=lambda ev: print(ev.describe(), flush=True)
                       if hasattr(ev, "describe") and ev.describe() else None)
    t_train = time.perf_counter() - t0
    fin = [e for e in read_events(paths.run_log_dir(run_id) / "events.jsonl") if isinstance(e, RunFinished)]
    if res.status != "finished" or not fin:
        print(f"run {run_id}: {res.status} {res.message}", file=sys.stderr)
        return 1
    m = fin[-1].test_metrics or {}
    print(f"\nmlearn {args.element}, test split ({test.name}); run {run_id}, {t_train / 60:.1f} min of training "
          f"({preset.train.epochs} epochs, load {os.getloadavg()[0]:.1f}); zero-shot in {t_zs:.0f} s")
    print(f"{'model':28} {'energy meV/atom':>16} {'force eV/Å':>11} {'stress GPa':>11}")
    print(f"{'CHGNet 0.3.0 pretrained':28} {zs['energy_mae']:>16.2f} {zs['force_mae'] / 1000:>11.3f} {zs['stress_mae']:>11.3f}")
    print(f"{'tui-ft fine-tuned':28} {m.get('test_energy_mae', float('nan')):>16.2f} "
          f"{m.get('test_force_mae', float('nan')) / 1000:>11.3f} {m.get('test_stress_mae', float('nan')):>11.3f}")
    for name, (e, f) in PUBLISHED[args.element].items():
        print(f"{name + ' (published)':28} {e:>16.2f} {f:>11.3f} {'-':>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
