"""CPU thread settings for a batch-1 potential epoch: alone on the machine and two runs side by side.

    python bench/bench_cpu_threads.py [--element Si] [--fraction 0.3] [--epochs 2]

Each setting runs ``presets/mlearn_<el>.toml`` (batch 1, full mode, energy + force + stress) on a
share of ``../shared/data/mlearn/<El>_training.json.gz`` (real DFT; not part of this project,
BSD-3, see its README) in fresh processes: once alone, then two identical processes at the same
time. Printed: seconds per epoch (training + validation pass, the mean over the training epochs;
epoch 0, the untrained validation pass, left out) and the ratio to the settings before
``CpuThreads`` (two threads waiting passively).

Settings:
    before     TUI_FT_THREADS=2 (pins 2 threads, so no spin and no CpuThreads: as before it)
    1 thread   TUI_FT_THREADS=1
    spin 2     TUI_FT_THREADS=2 GOMP_SPINCOUNT=3000 (the spin without CpuThreads)
    default    nothing set: GOMP_SPINCOUNT=3000 and CpuThreads
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MLEARN = (REPO.parent / "shared" / "data" / "mlearn").resolve()
SETTINGS = {
    "before": {"TUI_FT_THREADS": "2"},
    "1 thread": {"TUI_FT_THREADS": "1"},
    "spin 2": {"TUI_FT_THREADS": "2", "GOMP_SPINCOUNT": "3000"},
    "default": {},
}
CLEARED = ("TUI_FT_THREADS", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def child(args) -> None:
    """One run in this process; prints its epochs' seconds as JSON."""
    sys.path.insert(0, str(REPO))
    os.environ["TUI_FT_HOME"] = args.home
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.library.runs import new_run_id
    from tui_ft.core.train.engine import run_training

    el = args.element
    preset = REPO / "presets" / f"mlearn_{el.lower()}.toml"
    base = load_preset(preset if preset.is_file() else REPO / "presets" / "mlearn_si.toml")
    ch = {"train.epochs": args.epochs, "data.test_limit": 1, "run.name": "threads", "data.fraction": args.fraction,
          "data.source": str(MLEARN / f"{el}_training.json.gz"), "data.test_source": str(MLEARN / f"{el}_test.json.gz")}
    paths = Paths(Path(args.home))
    rid = new_run_id("threads", paths)
    events: list = []
    res = run_training(base.with_changes(ch), run_id=rid, paths=paths, emit=events.append)
    secs = [ev.seconds for ev in events if ev.type == "epoch_end"]
    print(json.dumps({"status": res.status, "seconds": secs[1:]}))  # epoch 0: the untrained validation pass


def launch(args, env_extra: dict[str, str], home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--child", "--home", str(home), "--element", args.element,
           "--fraction", str(args.fraction), "--epochs", str(args.epochs)]
    home.mkdir(parents=True, exist_ok=True)
    # stderr to a file, not a pipe: two runs side by side are read one after the other, and the
    # second's stderr must not fill a pipe (and stall that run) while the first is being waited on
    with open(home / "stderr.log", "w", encoding="utf-8") as err:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)


def epoch_seconds(proc: subprocess.Popen, home: Path) -> float:
    out, _ = proc.communicate()
    rows = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        err = (home / "stderr.log").read_text(encoding="utf-8", errors="replace")
        raise SystemExit(f"a run failed (exit {proc.returncode}): {(out + err)[-500:]}")
    return statistics.mean(json.loads(rows[-1])["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description="Seconds per batch-1 potential epoch under CPU thread settings, "
                                 "alone and two runs side by side.")
    ap.add_argument("--element", default="Si", help="reads ../shared/data/mlearn/<El>_training.json.gz")
    ap.add_argument("--fraction", type=float, default=0.3, help="share of the training frames")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per run")
    ap.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--home", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    if not (MLEARN / f"{args.element}_training.json.gz").is_file():
        print(f"{MLEARN / (args.element + '_training.json.gz')}: absent (../shared/data/mlearn is not part of "
              "this project)", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SETTINGS)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            home = Path(tmp) / f"{len(results)}a"
            alone = epoch_seconds(launch(args, SETTINGS[name], home), home)
            homes = [Path(tmp) / f"{len(results)}{k}" for k in "xy"]
            pair = [launch(args, SETTINGS[name], h) for h in homes]
            side = statistics.mean(epoch_seconds(p, h) for p, h in zip(pair, homes))
            results[name] = (alone, side)
            print(f"{name:10s} alone {alone:6.1f} s   two side by side {side:6.1f} s each", flush=True)
    print(f"\n{args.element}, {args.fraction:g} of the training frames, batch 1, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs; seconds per epoch (training + validation)")
    print(f"{'setting':10s} {'alone':>8s} {'ratio':>6s} {'2 at once':>10s} {'ratio':>6s}")
    ref = results.get("before")
    for name, (a, s) in results.items():
        ra = f"{ref[0] / a:6.2f}" if ref else "     -"
        rs = f"{ref[1] / s:6.2f}" if ref else "     -"
        print(f"{name:10s} {a:8.1f} {ra} {s:10.1f} {rs}")
    print("ratio: the 'before' setting's seconds over this one's (above 1 = faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
