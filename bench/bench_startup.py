"""Start-up times: ``tui-ft --help``, a run's start with a cold and a warm cache, the dashboard's first frame.

    nice python bench/bench_startup.py                 # everything, 3 repetitions (1 for the cold dev-data start)
    nice python bench/bench_startup.py --skip-dev      # without the dev-data preset
    nice python bench/bench_startup.py --compare-src /tmp/old   # warm starts against another source tree

What each number includes (wall clock from spawning a fresh ``python`` process,
so interpreter start and every import are in):

- ``tui-ft --help``: the console script until it exits (it must not import torch;
  checked separately in-process).
- time to epoch 0: ``python -m tui_ft --preset FILE --plain`` in a fresh
  ``TUI_FT_HOME`` until its stdout shows the ``epoch   0`` line (validation MAE
  before any update); the run is then stopped with SIGTERM. The engine's own
  messages give the time until the graphs and (head mode) features are ready. *cold*: an empty
  ``TUI_FT_CACHE`` (crystal graphs and, in head mode, frozen-backbone features
  are built; for ``demo`` also the demo data file); *warm*: a cache that already
  holds them (and the demo file already built). Cold and warm alternate.
  Presets: ``presets/demo.toml`` (240 synthetic structures) and
  ``presets/head_finetune_freeze.toml`` reading the dev file (1,760 structures:
  360 train, 400 val, 1,000 test; device cpu).
- dashboard: ``TuiFtApp`` in a fresh process under ``App.run_test()`` (a headless
  terminal, 120x40) in a project root holding the shipped presets: time until
  ``run_test`` hands over (the app is mounted, first frame composed), and until
  its first scan of presets/runs/checkpoints has been shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEV_DATA,
    PRESETS,
    REPO,
    command_line,
    dev_preset,
    fmt_s,
    git_dirty,
    git_head,
    machine_line,
    markdown_table,
    median,
    require_dev_data,
    warn_if_not_niced,
)

# (name, text in the CLI's output): the engine's messages on stderr, the epoch line on stdout
MARKERS = (("graphs ready", "graphs:"), ("features ready", "frozen backbone features:"), ("epoch 0", "epoch   0"))


def time_help(reps: int) -> list[float]:
    exe = shutil.which("tui-ft") or ""
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "tui_ft", "--help"]
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t)
    return out


def help_imports_torch() -> bool:
    code = "import sys; from tui_ft.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return r.stdout.strip() == "True"


def _src_env(src: str | None, **extra: str) -> dict:
    env = dict(os.environ, **extra)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve())] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def check_imported_tree(src: str | None, cwd: Path) -> str:
    """The tui_ft a side's ``python -m tui_ft`` imports (same interpreter, environment and folder);
    with ``--compare-src`` it must come from that tree, as in ``bench_throughput.py``."""
    cwd.mkdir(parents=True, exist_ok=True)
    code = "import tui_ft.core.train.engine as e; print(e.__file__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_src_env(src), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"cannot import tui_ft{f' from {src}' if src else ''}:\n{r.stderr[-2000:]}")
    path = Path(r.stdout.strip().splitlines()[-1]).resolve()
    if src and not path.is_relative_to(Path(src).resolve()):
        raise SystemExit(f"--compare-src {src}: imported {path} instead")
    return str(path)


def time_to_epoch0(preset_file: Path, home: Path, cache: Path, timeout: float = 1800, src: str | None = None) -> dict:
    """Spawn the CLI, return {marker: seconds} until the epoch-0 line, then stop the run.
    ``src``: another tui-ft source tree, put first on PYTHONPATH (ahead of the editable install)."""
    env = _src_env(src, TUI_FT_HOME=str(home), TUI_FT_CACHE=str(cache), NO_COLOR="1")
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_ft", "--preset", str(preset_file), "--plain"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
    )
    seen: dict[str, float] = {}
    done = threading.Event()
    lines: list[str] = []

    def reader(stream) -> None:
        for line in stream:
            now = time.perf_counter() - t0
            lines.append(line.rstrip())
            for name, needle in MARKERS:
                if needle in line and name not in seen:
                    seen[name] = now
            if "epoch 0" in seen:
                done.set()
        if stream is proc.stdout:  # the process ended
            done.set()

    threads = [threading.Thread(target=reader, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
    for th in threads:
        th.start()
    done.wait(timeout)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if "epoch 0" not in seen:
        raise RuntimeError(f"{preset_file}: no epoch-0 line; output:\n" + "\n".join(lines[-20:]))
    return seen


DASH_CODE = textwrap.dedent(
    """
    import asyncio, json, sys, time
    t0 = time.perf_counter()
    try:
        from tui_ft.tui.app import TuiFtApp
    except ImportError as exc:
        print(json.dumps({"missing": str(exc)})); sys.exit(0)
    t_import = time.perf_counter() - t0

    async def main():
        app = TuiFtApp()
        async with app.run_test(size=(120, 40)) as pilot:
            t_mount = time.perf_counter() - t0
            while getattr(app, "scans", 1) < 1 and time.perf_counter() - t0 < 60:
                await pilot.pause(0.01)
            t_scan = time.perf_counter() - t0
        return t_mount, t_scan

    t_mount, t_scan = asyncio.run(main())
    print(json.dumps({"import": t_import, "mounted": t_mount, "first_scan": t_scan}))
    """
)


def time_dashboard(home: Path) -> dict:
    import json

    env = dict(os.environ, TUI_FT_HOME=str(home))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", DASH_CODE], cwd=home, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"dashboard timing failed:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process"] = wall
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--dev-cold-reps", type=int, default=1, help="cold starts of the dev-data preset (default 1)")
    ap.add_argument("--skip-dev", action="store_true", help="skip the dev-data preset")
    ap.add_argument("--skip-dashboard", action="store_true")
    ap.add_argument("--skip-help", action="store_true")
    ap.add_argument("--compare-src", action="append", default=[], metavar="DIR",
                    help="also time warm starts with another tui-ft source tree (e.g. `git archive` of an older "
                         "commit), alternated with this one; repeatable")
    args = ap.parse_args(argv)
    warn_if_not_niced()
    work = Path(tempfile.mkdtemp(prefix="tui-ft-bench-startup-"))
    print(f"$ {command_line()}  (commit {git_head()}{', with uncommitted changes' if git_dirty() else ''})")
    print(machine_line())
    print(f"scratch folder {work}")
    rows = []

    if not args.skip_help:
        h = time_help(args.reps)
        rows.append(["`tui-ft --help`", "-", fmt_s(median(h)), str([round(x, 2) for x in h]),
                     f"imports torch: {'yes' if help_imports_torch() else 'no'}"])

    presets = [("demo", PRESETS / "demo.toml", args.reps, args.reps)]
    if not args.skip_dev:
        require_dev_data()
        from tui_ft.core.config.dump import dump_preset

        p = dev_preset("head_finetune_freeze", {"train.device": "cpu"}, DEV_DATA)
        f = work / "head_finetune_freeze_dev.toml"
        f.write_text(dump_preset(p), encoding="utf-8")
        presets.append(("head_finetune_freeze (dev data)", f, args.dev_cold_reps, args.reps))
    sides = [("", None)] + [(f" @ {Path(s).name}", s) for s in args.compare_src]
    for tag, src in sides:  # which source tree each side imports, checked before any timing
        print(f"side{tag or ' (this tree)'}: imports {check_imported_tree(src, work / 'import-check')}")
    for label, pfile, n_cold, n_warm in presets:
        homes = {}
        for tag, src in sides:  # fill each side's warm cache (not timed)
            homes[tag] = (work / f"{pfile.stem}-warm{len(homes)}-home", work / f"{pfile.stem}-warm{len(homes)}-cache")
            time_to_epoch0(pfile, *homes[tag], src=src)
        cold, warm = [], {tag: [] for tag, _ in sides}
        short = lambda d: {k: round(v, 2) for k, v in d.items()}  # noqa: E731
        for i in range(max(n_cold, n_warm)):
            if i < n_cold:
                cold.append(time_to_epoch0(pfile, work / f"{pfile.stem}-cold{i}-home", work / f"{pfile.stem}-cold{i}-cache"))
            if i < n_warm:
                for tag, src in sides:
                    warm[tag].append(time_to_epoch0(pfile, *homes[tag], src=src))
            print(f"[{label}] rep {i + 1}: cold {short(cold[-1]) if i < n_cold else '-'} "
                  + " ".join(f"warm{tag} {short(w[-1])}" for tag, w in warm.items() if w), file=sys.stderr, flush=True)
        for kind, runs in [("cold cache", cold)] + [(f"warm cache{tag}", warm[tag]) for tag, _ in sides]:
            if not runs:
                continue
            e0 = [r["epoch 0"] for r in runs]
            phases = ", ".join(
                f"{name} {fmt_s(median(r[name] for r in runs if name in r))}"
                for name, _ in MARKERS[:-1] if any(name in r for r in runs)
            )
            rows.append([f"time to epoch 0: {label}", kind, fmt_s(median(e0)), str([round(x, 1) for x in e0]),
                         phases])
    if not args.skip_dashboard:
        dash_home = work / "dash-home"
        shutil.copytree(REPO / "presets", dash_home / "presets")
        d = [time_dashboard(dash_home) for _ in range(args.reps)]
        if "missing" in d[0]:
            rows.append(["dashboard first frame", "-", "skipped", "-", f"tui_ft.tui.app missing: {d[0]['missing']}"])
        else:
            rows.append(["dashboard: mounted (first frame)", "-", fmt_s(median(x["mounted"] for x in d)),
                         str([round(x["mounted"], 2) for x in d]),
                         f"of which importing the app {fmt_s(median(x['import'] for x in d))}"])
            rows.append(["dashboard: first scan shown", "-", fmt_s(median(x["first_scan"] for x in d)),
                         str([round(x["first_scan"], 2) for x in d]),
                         f"whole process incl. interpreter start and exit {fmt_s(median(x['process'] for x in d))}"])
    print()
    print(markdown_table(["what", "cache", "median", "each repetition (s)", "notes"], rows))
    print()
    print(f"machine after: {machine_line()}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
