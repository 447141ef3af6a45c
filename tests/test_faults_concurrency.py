"""Runs started at the same moment do not collide.

Two headless runs of the same preset are started together as two real
processes with an empty cache, so they also build the graph cache and the
feature cache at the same time.
Both must exit 0 under distinct run ids, with intact, loadable checkpoints
and the same numbers. Many threads asking ``runs.new_run_id`` for the same
preset at once get distinct ids.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from tui_ft.core.data.demo import build_demo_dataset
from tui_ft.core.common.events import RunFinished, RunStarted, read_events
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.library.ckptfile import load_checkpoint
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import new_run_id, summarize


def test_two_runs_of_one_preset_started_together(project, demo_preset, tmp_path, fault_report):
    # 60 demo structures in a file of their own and an empty cache: both processes
    # build the graph and feature caches for it at the same time
    demo = build_demo_dataset()
    data = project / "twin.json"
    data.write_text(json.dumps({"index": demo["index"][:60], "columns": demo["columns"], "data": demo["data"][:60]}))
    preset = demo_preset("twin", source=str(data), epochs=2, batch_size=8)
    env = {**os.environ, "TUI_FT_CACHE": str(tmp_path / "fresh-cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tui_ft", "--preset", str(preset), "--plain"],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rc, out, err in results:
        assert rc == 0, (out, err)
        assert "Traceback" not in out + err
    ids = [re.search(r"^run (\S+):", out, re.MULTILINE).group(1) for _, out, _ in results]
    assert len(set(ids)) == 2, ids
    paths = Paths(project)
    assert sorted(p.name for p in paths.logs.iterdir()) == sorted(ids)

    finals = []
    for rid in ids:
        events = read_events(paths.run_log_dir(rid) / "events.jsonl")
        assert all(e.run_id == rid for e in events)  # no event went to the other run's log
        assert sum(isinstance(e, RunStarted) for e in events) == 1
        assert isinstance(events[-1], RunFinished)
        finals.append(events[-1])
        assert summarize(paths.run_log_dir(rid)).status == "finished"
        d = paths.run_ckpt_dir(rid)
        assert sorted(p.name for p in d.iterdir()) == ["best.json", "best.pt", "last.json", "last.pt"]
        for kind in ("best", "last"):
            meta = load_checkpoint(d / f"{kind}.pt")["meta"]
            assert meta["run_id"] == rid and meta["finished"] is True
    listed = Library(paths).list()
    assert sorted((c.run_id, c.kind) for c in listed) == sorted((r, k) for r in ids for k in ("best", "last"))
    # same preset, same seed: the same numbers even when built and trained side by side
    assert abs(finals[0].test_mae - finals[1].test_mae) < 1e-6
    fault_report["concurrency: simultaneous runs finished"] += 2
    fault_report["checkpoints verified (load_checkpoint, weights_only)"] += 4


def test_new_run_id_from_many_threads_at_once(tmp_path):
    paths = Paths(tmp_path)
    n_threads, per_thread = 32, 8
    barrier = threading.Barrier(n_threads)

    def allocate() -> list[str]:
        barrier.wait()
        return [new_run_id("same preset", paths) for _ in range(per_thread)]

    with ThreadPoolExecutor(n_threads) as pool:
        futures = [pool.submit(allocate) for _ in range(n_threads)]
        ids = [rid for f in futures for rid in f.result()]
    assert len(ids) == len(set(ids)) == n_threads * per_thread
    assert sorted(p.name for p in paths.logs.iterdir()) == sorted(ids)
    assert all(rid.startswith("same_preset-") for rid in ids)
