"""Key-to-frame latency of the dashboard while runs stream events.

Starts the app headless (Textual's pilot) in a temporary project with
finished runs and --live fake live runs, whose events another process
appends quickly (an epoch every --epoch-every seconds per run, like a very
fast trainer; the dashboard follows them as it follows a headless run).
Then it presses the dashboard's keys and measures, per key press:

  key -> frame : from pilot.press() to the next frame the app composes
                 (App._display called with an update)
  key -> idle  : from pilot.press() until pilot.pause() returns (all
                 messages handled, the screen refreshed); this includes
                 Textual's animations, which keep the app busy drawing: a
                 tab switch slides the tabs' underline for 0.3 s. Run with
                 TEXTUAL_ANIMATIONS=none (Textual's own setting, which the
                 dashboard honours) to measure key -> idle without them

and prints the median and 95th percentile of each, in milliseconds.

Frames caused by the key are told apart from frames caused by the streamed
events: the app's handler of followed events (``on_run_events``) is timed, and
a key press whose first frame came before any streamed event was applied is a
*key frame* ("key -> frame (key alone)"); when a streamed event was applied
between the key and that frame, the frame may be the event's, and those presses
are reported apart ("key -> frame (streamed event in between)"). Frames composed
outside every key press's window (press to idle) are counted as frames of the
streamed events alone, with their rate.

    python bench/bench_tui_latency.py [--presses 200] [--epoch-every 0.01]
    python bench/bench_tui_latency.py --finished 3000 --finished-epochs 20 --filter "finetune.mode = head and optim.lr < 1e-3"

``--filter``: the Runs tab's filter line in force during the key presses (issue 28: keys
stay under 100 ms with 3,000 runs and a filter); the finished runs alternate between two
learning rates, so the filter keeps half of them.

Not a test: numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import multiprocessing as mp
import time
from pathlib import Path

from tui_ft.core.common.events import EpochEnd, EventWriter, Message, RunFinished, RunStarted

DEMO = """\
[run]
name = "demo"

[data]
source = "demo"

[finetune]
mode = "head"

[optim]
lr = 1e-3

[train]
epochs = 3
"""

PRESET = {
    "run": {"name": "bench", "description": ""},
    "data": {"source": "demo", "target": "e_form", "fold": 0, "fraction": 1.0, "val_fraction": 0.1, "seed": 0, "test_limit": 0},
    "model": {"pretrained": "0.3.0", "init": ""},
    "finetune": {"mode": "head", "refit_atomref": True, "lr_factors": {}, "unfreeze_every": 0},
    "optim": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"},
    "train": {"epochs": 100000, "batch_size": 8, "patience": 0, "device": "cpu", "seed": 0, "loss": "mse"},
}


def write_finished(root: Path, run_id: str, epochs: int, t0: float, lr: float = 1e-3) -> None:
    preset = {**PRESET, "optim": {**PRESET["optim"], "lr": lr}}
    path = root / "logs" / run_id / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:  # in one go (EventWriter syncs each line: slow for 3,000 runs)
        fh.write(RunStarted(run_id, preset_name="bench", preset=preset, device="cpu", n_train=173, n_val=19, n_test=48, pid=0, epochs=epochs, time=t0).to_json() + "\n")
        for ep in range(epochs + 1):
            v = 0.3 + 0.3 * math.exp(-ep / 20)
            fh.write(EpochEnd(run_id, epoch=ep, train_mae=None if ep == 0 else v * 0.6, val_mae=v, lr=lr, seconds=1.0, best_val_mae=v, best_epoch=ep, time=t0 + ep).to_json() + "\n")
        fh.write(RunFinished(run_id, test_mae=0.31, best_epoch=epochs, best_val_mae=0.3, seconds=epochs, n_test=48, time=t0 + epochs + 1).to_json() + "\n")


def stream(root: Path, run_ids: list[str], every: float, stop, epochs) -> None:
    """Append epoch events to the live runs until ``stop`` is set (in its own
    process, so its CPU time does not count as the dashboard's)."""
    writers = []
    for rid in run_ids:
        w = EventWriter(root / "logs" / rid / "events.jsonl")
        w.emit(RunStarted(rid, preset_name="bench", preset=PRESET, device="cpu", n_train=173, n_val=19, n_test=48, pid=os.getpid(), epochs=100000))
        writers.append(w)
    ep = 0
    while not stop.is_set():
        for rid, w in zip(run_ids, writers):
            v = 0.3 + 0.3 * math.exp(-ep / 200) + 0.01 * math.sin(ep)
            w.emit(EpochEnd(rid, epoch=ep, train_mae=None if ep == 0 else v * 0.6, val_mae=v, lr=1e-3, seconds=every, best_val_mae=v, best_epoch=ep))
            if ep % 25 == 0:
                w.emit(Message(rid, text=f"checkpoint at epoch {ep}"))
        ep += 1
        epochs.value = ep
        time.sleep(every)
    for w in writers:
        w.close()


class Streamer:
    def __init__(self, root: Path, run_ids: list[str], every: float):
        self.stop = mp.Event()
        self._epochs = mp.Value("i", 0)
        self.proc = mp.Process(target=stream, args=(root, run_ids, every, self.stop, self._epochs), daemon=True)

    def start(self) -> None:
        self.proc.start()

    @property
    def epochs(self) -> int:
        return self._epochs.value

    def finish(self) -> None:
        self.stop.set()
        self.proc.join(10)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def bench(root: Path, presses: int, live: list[str], streamer: Streamer, size: tuple[int, int],
                n_runs: int = 0, filter_text: str = "") -> dict:
    from tui_ft.tui.app import TuiFtApp

    stream_applied: list[float] = []

    css = TuiFtApp.CSS_PATH  # relative paths resolve against the defining module's folder: make it absolute
    if isinstance(css, (str, Path)) and not Path(css).is_absolute():
        import inspect

        css = str(Path(inspect.getfile(TuiFtApp)).parent / css)

    class TimedApp(TuiFtApp):
        CSS_PATH = css

        def on_run_events(self, message) -> None:  # noqa: ARG002
            # Textual calls each class's handler along the MRO: this one records the time,
            # TuiFtApp's own handler then applies the events as usual
            stream_applied.append(time.perf_counter())

    app = TimedApp()
    # the collector's pauses (gc.callbacks): (start, ms, generation)
    gc_pauses: list[tuple[float, float, int]] = []
    gc_cpu: list[float] = []  # the collecting thread's CPU time per gen-2 pass (ms)
    gc_start: list[float] = [0.0, 0.0]

    def on_gc(phase, info) -> None:
        if phase == "start":
            gc_start[:] = [time.perf_counter(), time.thread_time()]
        else:
            gc_pauses.append((gc_start[0], (time.perf_counter() - gc_start[0]) * 1000, info["generation"]))
            if info["generation"] == 2:
                gc_cpu.append((time.thread_time() - gc_start[1]) * 1000)

    gc.callbacks.append(on_gc)
    frames: list[float] = []
    original = app._display

    def display(screen, renderable):
        if renderable is not None:
            frames.append(time.perf_counter())
        return original(screen, renderable)

    app._display = display  # type: ignore[method-assign]
    key_frame: list[float] = []
    key_frame_mixed: list[float] = []
    windows: list[tuple[float, float]] = []
    frame_windows: list[tuple[float, float]] = []  # press -> its first frame
    key_idle: list[float] = []
    per_key: dict[str, list[float]] = {}
    per_key_idle: dict[str, list[float]] = {}
    async with app.run_test(size=size) as pilot:
        while app.scans < 1 or len(app.model.runs) < n_runs:
            await pilot.pause(0.05)
        if filter_text:
            assert app.runs_pane.apply_filter(filter_text), filter_text
        streamer.start()
        await pilot.pause(1.0)
        app.show_run(live[0] if live else sorted(app.runs)[0])  # a live run's chart redraws on each batch
        await pilot.pause(0.5)
        t_keys = time.perf_counter()
        # keys a user presses while watching: move in the runs table, overlay,
        # log scale, next chart, switch tabs and back
        cycle = ["down", "o", "up", "g", "v", "g", "v", "v", "down", "o", "up", "1", "2", "3", "2"]
        for i in range(presses):
            key = cycle[i % len(cycle)]
            n_frames = len(frames)
            t0 = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            t1 = time.perf_counter()
            key_idle.append((t1 - t0) * 1000)
            per_key_idle.setdefault(key, []).append(key_idle[-1])
            # the first frame composed after the key press
            after = [f for f in frames[n_frames:] if f >= t0]
            while not after and time.perf_counter() - t0 < 1.0:
                await asyncio.sleep(0.001)
                after = [f for f in frames[n_frames:] if f >= t0]
            windows.append((t0, max(t1, after[0] if after else t1)))
            if after:
                frame_windows.append((t0, after[0]))
                ms = (after[0] - t0) * 1000
                if any(t0 <= t <= after[0] for t in stream_applied):
                    key_frame_mixed.append(ms)  # a streamed event was applied first: the frame may be its
                else:
                    key_frame.append(ms)
                    per_key.setdefault(key, []).append(ms)
            await asyncio.sleep(0.02)  # a human does not press 1000 keys a second
        t_end = time.perf_counter()
        tracked, frozen = len(gc.get_objects()), gc.get_freeze_count()  # while the app runs (it unfreezes at exit)
        streamer.finish()
        in_window = lambda f: any(a <= f <= b for a, b in windows)  # noqa: E731
        stream_frames = [f for f in frames if t_keys <= f <= t_end and not in_window(f)]
        outside = (t_end - t_keys) - sum(b - a for a, b in windows)
        epochs_seen = max((len(app.runs[r].summary.history) for r in live), default=0)
    gc.callbacks.remove(on_gc)
    pauses = [(t, ms, g) for t, ms, g in gc_pauses if t_keys <= t <= t_end]
    return {
        "gc": {g: [ms for _, ms, gg in pauses if gg == g] for g in (0, 1, 2)},
        "gc_objects": (tracked, frozen),
        "gc_cpu": gc_cpu,
        "gc_in_slow_keys": sum(1 for a, b in frame_windows if b - a > 0.1 and any(a <= t <= b and ms > 20 for t, ms, _ in pauses)),
        "slow_keys": sum(1 for a, b in frame_windows if b - a > 0.1),
        "key_frame": key_frame,
        "key_frame_mixed": key_frame_mixed,
        "stream_frames": len(stream_frames),
        "stream_seconds": outside,
        "stream_applied": sum(1 for t in stream_applied if t_keys <= t <= t_end),
        "key_idle": key_idle,
        "per_key": per_key,
        "per_key_idle": per_key_idle,
        "epochs_written": streamer.epochs,
        "epochs_seen": epochs_seen,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--epoch-every", type=float, default=0.01, help="seconds between epochs of each live run")
    ap.add_argument("--live", type=int, default=2, help="live runs streaming at once")
    ap.add_argument("--finished", type=int, default=20, help="finished runs in the history (--finished-epochs each)")
    ap.add_argument("--finished-epochs", type=int, default=500, help="epochs of each finished run")
    ap.add_argument("--filter", default="", help="a filter in force in the Runs tab while the keys are pressed")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--gc-default", action="store_true",
                    help="the comparison: the dashboard as before tui_ft.tui.gcpolicy (no gc.freeze of the runs read, "
                         "Python's own full passes whenever they fall due)")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    if args.gc_default:
        from tui_ft.tui.gcpolicy import IdleCollector

        IdleCollector.start = IdleCollector.freeze = lambda self: None  # the collector left as Python sets it

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        (root / "presets").mkdir(parents=True)
        (root / "presets" / "demo.toml").write_text(DEMO, encoding="utf-8")
        t0 = time.time() - 86400
        for i in range(args.finished):
            write_finished(root, f"bench-finished-{i:04d}", args.finished_epochs, t0 + i * 60, lr=1e-3 if i % 2 else 1e-4)
        live = [f"bench-live-{i}" for i in range(args.live)]
        os.environ["TUI_FT_HOME"] = str(root)
        os.chdir(root)
        streamer = Streamer(root, live, args.epoch_every)
        res = asyncio.run(bench(root, args.presses, live, streamer, (w, h), args.finished, args.filter))

    print(f"tui-ft key-to-frame latency ({platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {w}x{h})")
    print(
        f"  {args.live} live runs, an epoch every {args.epoch_every * 1000:.0f} ms each "
        f"({res['epochs_written']} epochs written per run, {res['epochs_seen']} followed), "
        f"{args.finished} finished runs of {args.finished_epochs} epochs"
        + (f"; filter in force: {args.filter!r}" if args.filter else "")
        + ("; Python's own garbage collection (--gc-default)" if args.gc_default else "")
        + f"; TEXTUAL_ANIMATIONS={os.environ.get('TEXTUAL_ANIMATIONS', '(unset: full)')}"
    )
    for name, label in (("key_frame", "key -> frame (key alone)"),
                        ("key_frame_mixed", "key -> frame (streamed event in between)"),
                        ("key_idle", "key -> idle")):
        xs = res[name]
        if not xs:
            print(f"  {label}: no samples")
            continue
        print(f"  {label}: median {statistics.median(xs):6.1f} ms   p95 {pct(xs, 0.95):6.1f} ms   max {max(xs):6.1f} ms   (n={len(xs)})")
    print(f"  frames of the streamed events alone (outside every key's window): {res['stream_frames']} in "
          f"{res['stream_seconds']:.1f} s ({res['stream_frames'] / max(res['stream_seconds'], 1e-9):.1f}/s); "
          f"streamed-event batches applied while pressing keys: {res['stream_applied']}")
    for name, label in (("per_key", "frame (key alone)"), ("per_key_idle", "idle")):
        print(f"  key -> {label} by key (median ms): " + "  ".join(
            f"{k} {statistics.median(v):.0f}" for k, v in sorted(res[name].items())
        ))
    print("  garbage collector while pressing keys: " + "; ".join(
        f"gen {g}: {len(v)} pauses, max {max(v):.1f} ms" if v else f"gen {g}: none" for g, v in res["gc"].items()
    ) + (f" (its CPU time: max {max(res['gc_cpu']):.1f} ms)" if res["gc_cpu"] else "") + f"; objects tracked {res['gc_objects'][0]:,}, frozen {res['gc_objects'][1]:,}" + f"; presses whose first frame took over 100 ms with a collection over 20 ms before it: {res['gc_in_slow_keys']} of {res['slow_keys']}")
    # one row of BENCHMARKS.md's table (section 5); key -> frame: the key's own frames
    kf, ki = res["key_frame"], res["key_idle"]
    every = f"{args.epoch_every * 1000:.0f} ms" if args.epoch_every < 1 else f"{args.epoch_every:g} s"
    cells = [f"{statistics.median(kf):.1f} ms", f"{pct(kf, 0.95):.1f} ms", f"{max(kf):.1f} ms"] if kf else ["-"] * 3
    print()
    print("| live runs stream | epochs followed | key → frame median | p95 | max | key → idle median | p95 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| an epoch every {every} each | {res['epochs_seen']} of {res['epochs_written']} per run | "
          + " | ".join(cells) + f" | {statistics.median(ki):.1f} ms | {pct(ki, 0.95):.1f} ms |")
    print(f"(key → frame: the {len(kf)} presses whose first frame came before any streamed event was applied; "
          f"{len(res['key_frame_mixed'])} presses with a streamed event in between are reported above, apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
