"""Dashboard first frame: median of 5 fresh processes per source tree (shipped presets).

Usage: python bench/bench_first_frame.py SRC_TREE   (run it for an older worktree and for ., alternated)
Prints, per tree, the import time of tui_ft.tui.app and the time from App() to the first mounted screen.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, textwrap
from pathlib import Path
SRC = Path(sys.argv[1])
CODE = textwrap.dedent("""
    import asyncio, json, time
    t0 = time.perf_counter()
    from tui_ft.tui.app import TuiFtApp
    t_import = time.perf_counter() - t0
    async def main():
        app = TuiFtApp()
        t1 = time.perf_counter(); c1 = time.process_time()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            t_mount = time.perf_counter() - t1; c_mount = time.process_time() - c1
            while app.scans < 1:
                await pilot.pause(0.01)
            t_scan = time.perf_counter() - t1
        return t_mount, t_scan, c_mount
    m, s, c = asyncio.run(main())
    print(json.dumps({"import": t_import, "mounted": m, "scan": s, "cpu": c, "cpu_total": time.process_time()}))
""")
home = Path(tempfile.mkdtemp()) / "project"
shutil.copytree(SRC / "presets", home / "presets")
env = dict(os.environ, TUI_FT_HOME=str(home), PYTHONPATH=str(SRC))
rows = []
for _ in range(5):
    r = subprocess.run([sys.executable, "-c", CODE], cwd=home, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
for k in ("import", "mounted", "cpu", "cpu_total"):
    v = [x[k] for x in rows]
    print(f"{k:8s} median {statistics.median(v):.3f}s  {[round(x, 3) for x in v]}")
