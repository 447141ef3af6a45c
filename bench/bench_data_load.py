"""Start-up steps of a run, timed alone: ``load_matbench`` of the dev file and ``GraphCache.get`` warm.

    nice python bench/bench_data_load.py                                    # this tree, 4 runs
    nice python bench/bench_data_load.py --compare-src /tmp/tuift-src/head --compare-src /tmp/tuift-src/lazy

Prints the ``load_matbench`` and ``GraphCache.get`` columns of BENCHMARKS.md's
"Start-up speed-ups made" table (the "time to epoch 0" column of that table is
``bench_startup.py --compare-src ...``). Each measurement is a fresh Python
process (interpreter and imports not timed), one per tree, alternated:

- ``load_matbench``: ``tui_ft.core.data.dataset.load_matbench(dev file, "e_form")``.
- ``GraphCache.get``: the rows of ``presets/head_finetune_freeze.toml``
  (fold 0, fraction 0.1: 360 train + 400 val + 1,000 test = 1,760 rows, the
  engine's order) from a warm graph cache (filled once per tree before timing,
  not timed); the pretrained CHGNet 0.3.0's converter.

Each tree is checked to be the one imported (as ``bench_throughput.py`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEV_DATA,
    command_line,
    git_dirty,
    git_head,
    machine_line,
    markdown_table,
    require_dev_data,
    warn_if_not_niced,
)

CHILD = r"""
import json, sys, time
from pathlib import Path
src, data, cache, what = sys.argv[1:5]
if src:
    sys.path.insert(0, src)
import numpy as np
from tui_ft.core.data import dataset as D
from tui_ft.core.data.graphcache import GraphCache
if src and not Path(D.__file__).resolve().is_relative_to(Path(src).resolve()):
    raise SystemExit(f"--compare-src {src}: imported {D.__file__} instead")
from tui_ft.core.common.paths import Paths
out = {"module": D.__file__}
if what == "load":
    t = time.perf_counter(); ds = D.load_matbench(data, "e_form"); out["seconds"] = time.perf_counter() - t
    out["rows"] = len(ds)
else:
    from tui_ft.core.train.setup import load_pretrained
    ds = D.load_matbench(data, "e_form")
    sp = D.make_splits(len(ds), fold=0, fraction=0.1, val_fraction=0.1, seed=0)
    rows = np.concatenate([sp.train, sp.val, sp.test])
    model = load_pretrained("0.3.0")
    cache = GraphCache(ds, model.graph_converter, Paths.default())
    t = time.perf_counter(); graphs, failed = cache.get(rows); out["seconds"] = time.perf_counter() - t
    out.update(rows=len(rows), hits=cache.hits, built=cache.built)
print(json.dumps(out))
"""


def child(src: str, what: str, cache: Path, home: Path, data: Path) -> dict:
    env = dict(os.environ, TUI_FT_CACHE=str(cache), TUI_FT_HOME=str(home))
    r = subprocess.run([sys.executable, "-c", CHILD, src, str(data), str(cache), what], env=env, cwd=home,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{what} ({src or 'this tree'}) failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs per tree and step (default 4)")
    ap.add_argument("--compare-src", action="append", default=[], metavar="DIR",
                    help="another tui-ft source tree (e.g. `git archive` of an older commit); repeatable")
    ap.add_argument("--data", type=Path, default=DEV_DATA, help="the dev file (default ../shared/data/...)")
    args = ap.parse_args(argv)
    require_dev_data(args.data)
    warn_if_not_niced()
    print(f"$ {command_line()}  (commit {git_head()}{', with uncommitted changes' if git_dirty() else ''})")
    print(machine_line())
    work = Path(tempfile.mkdtemp(prefix="tui-ft-bench-data-"))
    sides = [("this tree", "")] + [(Path(s).name, str(Path(s).resolve())) for s in args.compare_src]
    caches = {}
    for label, src in sides:  # one warm graph cache per tree (its own format), filled before timing
        caches[label] = work / f"cache-{len(caches)}"
        (work / "home").mkdir(exist_ok=True)
        first = child(src, "graphs", caches[label], work / "home", args.data)
        print(f"{label}: imports {first['module']}; cache filled ({first['built']} graphs built)", file=sys.stderr)
    times = {label: {"load": [], "graphs": []} for label, _ in sides}
    for i in range(args.runs):
        for what in ("load", "graphs"):
            for label, src in sides:
                r = child(src, what, caches[label], work / "home", args.data)
                if what == "graphs" and r["built"]:
                    raise SystemExit(f"{label}: the graph cache was not warm ({r['built']} built)")
                times[label][what].append(r["seconds"])
        print(f"run {i + 1}: " + "; ".join(f"{k} load {v['load'][-1]:.2f}s graphs {v['graphs'][-1]:.3f}s"
                                          for k, v in times.items()), file=sys.stderr, flush=True)

    def span(xs: list[float], digits: int) -> str:
        return f"{min(xs):.{digits}f}–{max(xs):.{digits}f} s"

    rows = [[label, span(times[label]["load"], 2), span(times[label]["graphs"], 3)] for label, _ in sides]
    print()
    print(markdown_table(["engine", "`load_matbench` (dev file)", "`GraphCache.get`, 1,760 rows, warm"], rows))
    print(f"\n({args.runs} runs per tree in separate processes; range min–max)")
    print(f"machine after: {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
