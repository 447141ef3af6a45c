"""Potential fine-tuning on the mlearn benchmark (real DFT, ../shared/data/mlearn/): fine-tune
CHGNet on ``<El>_training`` with a preset (default ``presets/mlearn_<el>.toml``, or for an
element without one ``presets/mlearn_si.toml``'s recipe with the element's files swapped in and
the shear order told by the file), test once on ``<El>_test``, and print energy / force / stress
MAE beside the pretrained model's on the same test frames and the published test errors on this
split.

    nice python bench/bench_mlearn.py --element Si [--epochs 8] [--workdir /tmp/mlearn]

Any element whose ``<El>_training.json.gz`` and ``<El>_test.json.gz`` lie in the data folder
runs (``--data-dir`` for another folder). Published (Zuo et al., J. Phys. Chem. A 124, 731
(2020), as listed in ACEpotentials.jl's examples/zuobench; JARVIS leaderboard for CHGNet):
meV/atom and eV/Å on the test split. The data is never copied into the project; the run lives
in ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import re
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
    "Ni": {"GAP": (0.42, 0.02), "MTP": (0.48, 0.01)},
    "Cu": {"GAP": (0.46, 0.01), "MTP": (0.41, 0.01)},
    "Li": {"GAP": (0.49, 0.01), "MTP": (0.49, 0.01)},
    "Mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06), "CHGNet (JARVIS)": (33.2, 0.136)},
    "Ge": {"GAP": (2.06, 0.05), "MTP": (1.79, 0.05)},
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
    ap = argparse.ArgumentParser(description="Fine-tune CHGNet on an mlearn element's training file, test once "
                                 "on its test file, print the errors beside the pretrained and published ones.")
    ap.add_argument("--element", default="Si", help="chemical symbol: reads <El>_training / <El>_test.json.gz "
                    f"(published errors known for {', '.join(PUBLISHED)})")
    ap.add_argument("--data-dir", default=str(MLEARN), help="folder of the mlearn files (default ../shared/data/mlearn)")
    ap.add_argument("--preset", default=None, help="the recipe (default presets/mlearn_<el>.toml, else mlearn_si.toml's "
                    "recipe with the shear order told by the file)")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's train.epochs")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the training frames (smoke tests)")
    ap.add_argument("--workdir", default="/tmp/tui-ft-mlearn")
    args = ap.parse_args()
    el = args.element
    if not re.fullmatch(r"[A-Z][a-z]?", el):
        print(f"error: --element {el!r}: expected a chemical symbol such as Si or Mo", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir)
    train, test = data_dir / f"{el}_training.json.gz", data_dir / f"{el}_test.json.gz"
    if not train.is_file() or not test.is_file():
        print(f"error: {train} / {test} not found (the mlearn data lies in ../shared/data/mlearn/)", file=sys.stderr)
        return 2
    own = REPO / "presets" / f"mlearn_{el.lower()}.toml"
    preset_file = Path(args.preset) if args.preset else own if own.is_file() else REPO / "presets" / "mlearn_si.toml"
    work = Path(args.workdir)
    (work / "presets").mkdir(parents=True, exist_ok=True)
    os.environ["TUI_FT_HOME"] = str(work)
    from tui_ft.core.common.events import RunFinished, read_events
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.library.runs import new_run_id
    from tui_ft.core.train.engine import run_training

    base = load_preset(preset_file)
    changes = {"data.source": str(train), "data.test_source": str(test), "data.fraction": args.fraction,
               "run.name": f"mlearn_{el.lower()}"}
    if Path(base.data.source).name != train.name:
        # the preset was written for another element's file: its stated shear order says nothing
        # of this file's (Si's and Mo's differ), so the reader tells it from the file's sheared cells
        changes["task.shear_order"] = None
    print(f"preset {preset_file}" + (" (shear order told by the file)" if "task.shear_order" in changes else ""))
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
    print(f"\nmlearn {el}, test split ({test.name}); run {run_id}, {t_train / 60:.1f} min of training "
          f"({preset.train.epochs} epochs, load {os.getloadavg()[0]:.1f}); zero-shot in {t_zs:.0f} s")
    print(f"{'model':28} {'energy meV/atom':>16} {'force eV/Å':>11} {'stress GPa':>11}")
    print(f"{'CHGNet 0.3.0 pretrained':28} {zs['energy_mae']:>16.2f} {zs['force_mae'] / 1000:>11.3f} {zs['stress_mae']:>11.3f}")
    print(f"{'tui-ft fine-tuned':28} {m.get('test_energy_mae', float('nan')):>16.2f} "
          f"{m.get('test_force_mae', float('nan')) / 1000:>11.3f} {m.get('test_stress_mae', float('nan')):>11.3f}")
    for name, (e, f) in PUBLISHED.get(el, {}).items():
        print(f"{name + ' (published)':28} {e:>16.2f} {f:>11.3f} {'-':>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
