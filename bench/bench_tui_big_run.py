"""The dashboard with one very long run: load time, key latency and peak memory.

Writes a temporary project with one run of ``--epochs`` epochs (1,000,000 by default:
an ``events.jsonl`` of about 290 MB, as a run with a tiny dataset and no patience
writes in a long night) and ``--small`` short finished runs beside it, then starts the
app headless (Textual's pilot) and measures:

  load         : seconds from the app's start until the long run's row shows its last
                 epoch (the scan read it in a worker, or its follower did, ``--live``)
  key -> idle  : per key press, from pilot.press() until pilot.pause() returns (every
                 message handled, the screen refreshed): the median, 95th percentile
                 and maximum, over keys a user presses on that run (move in the runs
                 table, select the long run, change the chart, log scale, switch tabs)
  peak RSS     : the process's high-water mark (``VmHWM``), after the file was written
                 (it is reset before the app starts) and at the end

``--live``: the long run is still running (its pid is a sleeping child of this
script), so the dashboard follows it rather than reading it in its scan.

    python bench/bench_tui_big_run.py                       # 1,000,000 epochs, finished
    python bench/bench_tui_big_run.py --live                # the same run, followed live
    python bench/bench_tui_big_run.py --epochs 20000 --presses 30   # a quick check of the script

Not a test: numbers depend on the machine (and on what else runs on it). Each run of
the script is one process, so its peak memory is this case's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = {
    "run": {"name": "long", "description": ""},
    "data": {"source": "demo", "target": "e_form", "fold": 0, "fraction": 1.0, "val_fraction": 0.1, "seed": 0, "test_limit": 0},
    "model": {"pretrained": "0.3.0", "init": ""},
    "finetune": {"mode": "head", "refit_atomref": True, "lr_factors": {}, "unfreeze_every": 0},
    "optim": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
    "train": {"epochs": 1000000, "batch_size": 8, "patience": 0, "device": "cpu", "seed": 0, "loss": "mse"},
}

DEMO = '[run]\nname = "demo"\n\n[data]\nsource = "demo"\n\n[finetune]\nmode = "head"\n\n[optim]\nlr = 1e-3\n\n[train]\nepochs = 3\n'


def vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def write_run(root: Path, run_id: str, epochs: int, t0: float, pid: int, finished: bool) -> int:
    """One run's events.jsonl (the events as the trainer writes them); returns its size in bytes."""
    from tui_ft.core.common.events import EpochEnd, Message, RunFinished, RunStarted

    path = root / "logs" / run_id / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    best, best_ep = math.inf, 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(RunStarted(run_id, preset_name="long", preset=PRESET, device="cpu", n_train=173, n_val=19, n_test=48,
                            pid=pid, epochs=epochs, time=t0).to_json() + "\n")
        for ep in range(epochs + 1):
            v = 0.3 + 0.3 * math.exp(-ep / 2000) + 0.01 * math.sin(ep / 7)
            if v < best:
                best, best_ep = v, ep
            fh.write(EpochEnd(run_id, epoch=ep, train_mae=None if ep == 0 else v * 0.6, val_mae=v, lr=1e-3,
                              seconds=0.05, best_val_mae=best, best_epoch=best_ep, n_structures=173, unit="eV/atom",
                              time=t0 + 0.05 * ep).to_json() + "\n")
            if ep and ep % 1000 == 0:
                fh.write(Message(run_id, text=f"checkpoint saved at epoch {ep}", time=t0 + 0.05 * ep).to_json() + "\n")
        if finished:
            fh.write(RunFinished(run_id, test_mae=0.31, best_epoch=best_ep, best_val_mae=best, seconds=0.05 * epochs,
                                 n_test=48, time=t0 + 0.05 * epochs + 1).to_json() + "\n")
    return path.stat().st_size


def write_small(root: Path, run_id: str, t0: float) -> None:
    write_run(root, run_id, 30, t0, 0, True)


async def bench(big: str, epochs: int, presses: int, size: tuple[int, int], load_timeout: float) -> dict:
    from tui_ft.tui.app import TuiFtApp

    css = TuiFtApp.CSS_PATH  # relative paths resolve against the defining module's folder: make it absolute
    if isinstance(css, (str, Path)) and not Path(css).is_absolute():
        import inspect

        css = str(Path(inspect.getfile(TuiFtApp)).parent / css)

    class BenchApp(TuiFtApp):
        CSS_PATH = css

    app = BenchApp()
    t_start = time.perf_counter()
    out: dict = {"load_s": None, "key_idle": [], "per_key": {}}
    async with app.run_test(size=size) as pilot:
        while time.perf_counter() - t_start < load_timeout:
            st = app.model.runs.get(big)
            if st is not None and st.summary.epoch == epochs:
                out["load_s"] = time.perf_counter() - t_start
                break
            await pilot.pause(0.05)
        out["rss_loaded"] = vm_hwm_mib()
        if out["load_s"] is None:
            return out
        app.show_run(big)
        await pilot.pause(0.5)
        cycle = ["down", "up", "g", "v", "g", "m", "v", "v", "1", "2", "down", "up", "o", "o"]
        for i in range(presses):
            key = cycle[i % len(cycle)]
            t0 = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            ms = (time.perf_counter() - t0) * 1000
            out["key_idle"].append(ms)
            out["per_key"].setdefault(key, []).append(ms)
            await asyncio.sleep(0.02)
        st = app.model.runs[big]
        out["history_kept"] = len(st.summary.history)
        out["status"] = st.status
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=20, help="short finished runs beside the long one")
    ap.add_argument("--presses", type=int, default=52)
    ap.add_argument("--live", action="store_true", help="the long run is still running: followed, not scanned")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--load-timeout", type=float, default=600.0, help="give up waiting for the run to load (s)")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))

    sleeper = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        (root / "presets").mkdir(parents=True)
        (root / "presets" / "demo.toml").write_text(DEMO, encoding="utf-8")
        t0 = time.time() - 86400
        for i in range(args.small):
            write_small(root, f"small-{i:03d}", t0 - 3600 + i * 60)
        pid = 0
        if args.live:
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            pid = sleeper.pid
        big = "long-20261202-000000-beef"
        t_w = time.perf_counter()
        nbytes = write_run(root, big, args.epochs, t0, pid, finished=not args.live)
        t_w = time.perf_counter() - t_w
        os.environ["TUI_FT_HOME"] = str(root)
        os.chdir(root)
        import gc

        gc.collect()
        reset_hwm()
        rss0 = vm_hwm_mib()
        try:
            res = asyncio.run(bench(big, args.epochs, args.presses, (w, h), args.load_timeout))
        finally:
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait()
        rss_end = vm_hwm_mib()

    print(f"tui-ft dashboard with one long run ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {w}x{h})")
    print(f"  run: {args.epochs:,} epochs, events.jsonl {nbytes / 2**20:.0f} MiB (written in {t_w:.0f} s), "
          f"{'live (followed)' if args.live else 'finished (scanned)'}; {args.small} short runs beside it")
    if res["load_s"] is None:
        print(f"  load: not loaded within {args.load_timeout:.0f} s; peak RSS {res.get('rss_loaded', float('nan')):.0f} MiB")
        return 1
    ki = res["key_idle"]
    print(f"  load: {res['load_s']:.1f} s until its row shows epoch {args.epochs:,}")
    print(f"  key -> idle: median {statistics.median(ki):.1f} ms   p95 {pct(ki, 0.95):.1f} ms   max {max(ki):.1f} ms   (n={len(ki)})")
    print("  key -> idle by key (median ms): " + "  ".join(f"{k} {statistics.median(v):.0f}" for k, v in sorted(res["per_key"].items())))
    print(f"  peak RSS: {rss0:.0f} MiB before the app, {res['rss_loaded']:.0f} MiB once loaded, {rss_end:.0f} MiB at the end")
    print(f"  epochs kept for the charts: {res['history_kept']:,} of {args.epochs + 1:,}; status {res['status']}")
    print()
    print("| run | load | key → idle median | p95 | max | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {args.epochs:,} epochs, {nbytes / 2**20:.0f} MiB, {'live' if args.live else 'finished'} | {res['load_s']:.1f} s | "
          f"{statistics.median(ki):.0f} ms | {pct(ki, 0.95):.0f} ms | {max(ki):.0f} ms | {rss_end:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
