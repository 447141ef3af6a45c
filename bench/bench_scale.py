"""Full-size data: time and peak memory of each stage of a run as the data grows (issue 15).

Builds Matbench-layout files of N rows from the dev structures
(``../shared/data/mp_e_form_dev.json.gz``): row i is dev row ``i % 5000`` with its
lattice strained (a random symmetric strain of up to 2% per component) and every
site moved by a random 0.02 A (normal, per axis), seeded by i, so graphs differ and
no cache entry is shared; its target is the dev target plus 0.01 eV/atom noise. The
files go into a temporary folder (``--workdir``), never into the repository.

For each N, each stage runs in a fresh ``python`` subprocess (so imports and
memory start from nothing); its peak RSS is the subprocess's ``VmHWM``, split into
peak anonymous and peak file-backed memory (``RssAnon``/``RssFile`` sampled every 50 ms:
the graph cache is memory-mapped, so the packed graphs a stage reads count as file-backed
pages, page cache the kernel can drop and concurrent runs share) and, for
its graph-conversion workers, ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (an upper bound:
Linux keeps the parent's RSS at fork time in a child's ``ru_maxrss``), its time the stage's wall
time measured inside it (imports and model loading excluded). Stages:

``load``        ``load_matbench`` of the N-row file
``convert1``    graph conversion into an empty cache, 1 worker process (``TUI_FT_GRAPH_WORKERS=1``)
``convertN``    the same with the usable cores as workers
``warm``        a warm start: ``load_matbench`` and the cached graphs of every row
``features``    head mode's frozen-backbone features of every row (the engine's ``FeatureCache``)
``head_epoch``  a head-mode run (engine, ``head_finetune_freeze`` on the whole training part of
                fold 0: 72% of the rows train, 8% validate, 20% test), set-up and one epoch;
                its time per structure is per row of the file
``full_epoch``  a full-mode run (``full_finetune``), one epoch over a fixed 400-row training
                subset (40 validation rows, 8 test rows), whatever N is

The table gives each stage's time, time per structure (a flat column across N
means linear growth) and peak RSS; then the projection to the full 132,752-row
file (per-structure cost at the largest N times 132,752; memory by a straight
line through the measured N).

Run (under ``nice``, on a quiet machine)::

    nice python bench/bench_scale.py                      # N = 5k, 20k, 50k
    nice python bench/bench_scale.py --full               # and 132,752
    python bench/bench_scale.py --sizes 500,1000          # a quick check of the script
    python bench/bench_scale.py --sizes 5000 --skip features,head_epoch,full_epoch
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, fmt_s, machine_line, markdown_table, require_dev_data  # noqa: E402

FULL_N = 132_752
STAGES = ("load", "convert1", "convertN", "warm", "features", "head_epoch", "full_epoch")
SUBSET = 400  # training rows of the full-mode epoch
SUBSET_VAL = 40


# ---------------------------------------------------------------- building the files


def _perturbed(sd: dict, rng) -> dict:
    import numpy as np

    m = np.array(sd["lattice"]["matrix"], dtype=float)
    e = rng.uniform(-0.02, 0.02, (3, 3))
    m2 = m @ (np.eye(3) + (e + e.T) / 2)
    inv = np.linalg.inv(m2)
    sites = []
    for site in sd["sites"]:
        abc = np.array(site["abc"], dtype=float) + rng.normal(0.0, 0.02, 3) @ inv
        s2 = dict(site)
        s2["abc"] = abc.tolist()
        s2["xyz"] = (abc @ m2).tolist()
        sites.append(s2)
    a, b, c = (float(np.linalg.norm(v)) for v in m2)
    ang = lambda u, v: float(np.degrees(np.arccos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))))  # noqa: E731
    lat = dict(sd["lattice"])
    lat.update(matrix=m2.tolist(), a=a, b=b, c=c, alpha=ang(m2[1], m2[2]), beta=ang(m2[0], m2[2]),
               gamma=ang(m2[0], m2[1]), volume=float(abs(np.linalg.det(m2))))
    out = dict(sd)
    out["lattice"] = lat
    out["sites"] = sites
    return out


def build_file(dev: dict, n: int, path: Path, seed: int = 0) -> None:
    """An ``n``-row Matbench-layout file of perturbed dev structures (written row by row)."""
    import numpy as np

    base = len(dev["data"])
    ids = [f"{dev['index'][i % base]}-p{i // base}" for i in range(n)]
    ti = dev["columns"].index("e_form")
    si = dev["columns"].index("structure")
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        fh.write('{"index": ' + json.dumps(ids) + ', "columns": ["structure", "e_form"], "data": [')
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            rec = dev["data"][i % base]
            row = [_perturbed(rec[si], rng), round(float(rec[ti]) + float(rng.normal(0.0, 0.01)), 6)]
            fh.write(("," if i else "") + json.dumps(row))
        fh.write("]}")


# ---------------------------------------------------------------- one stage (in its own process)


def _rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _hwm_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (``ru_maxrss`` would include the parent's RSS at
    fork time, which Linux keeps across ``exec``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return _rss_mb(resource.RUSAGE_SELF)


class RssSampler:
    """Peak anonymous and file-backed resident memory of this process (``RssAnon`` and
    ``RssFile`` of ``/proc/self/status``, sampled every 50 ms by a thread): the packed graph
    cache is memory-mapped, so its pages count in RSS as file-backed memory (page cache the
    kernel can drop and that concurrent runs share), not as the run's own anonymous memory."""

    def __init__(self, interval: float = 0.05):
        import threading

        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.anon = max(self.anon, int(line.split()[1]) / 1024)
                elif line.startswith("RssFile:"):
                    self.file = max(self.file, int(line.split()[1]) / 1024)
        except OSError:  # pragma: no cover - not Linux
            pass

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._read()

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        self._read()
        return self.anon, self.file


def stage_main(stage: str, file: Path) -> dict:
    sampler = RssSampler()
    from common import fraction_for_n
    from tui_ft.core.data.graphcache import GraphCache
    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.common.paths import Paths

    if stage != "load":
        from tui_ft.core.train.setup import load_pretrained

    out: dict = {}
    if stage == "load":
        t = time.perf_counter()
        ds = load_matbench(file)
        out["s"] = time.perf_counter() - t
        out["n"] = len(ds)
    elif stage in ("convert1", "convertN", "warm"):
        conv = load_pretrained("0.3.0").graph_converter
        t = time.perf_counter()
        ds = load_matbench(file)
        cache = GraphCache(ds, conv, Paths.default())
        graphs, failed = cache.get(range(len(ds)))
        out["s"] = time.perf_counter() - t
        out.update(n=len(ds), built=cache.built, hits=cache.hits, failed=len(failed), workers=cache.workers_used,
                   packed_mb=graphs.nbytes() / 2**20)
    elif stage == "features":
        from tui_ft.core.train.forward import FeatureCache
        from tui_ft.core.train.setup import backbone_hash
        from tui_ft.core.train.parallel import plan_workers

        model = load_pretrained("0.3.0")
        ds = load_matbench(file)
        graphs, _ = GraphCache(ds, model.graph_converter, Paths.default()).get(range(len(ds)))
        fw, ft = plan_workers(32, "cpu")
        t = time.perf_counter()
        fc = FeatureCache(Paths.default(), backbone_hash(model), ds.sha256)
        rows = list(graphs)
        fc.get(model, rows, graphs, 32, "cpu", fw, ft)
        out["s"] = time.perf_counter() - t
        out.update(n=len(rows), hits=fc.hits, workers=fw)
    elif stage in ("head_epoch", "full_epoch"):
        from common import dev_preset
        from tui_ft.core.train import engine
        from tui_ft.core.data.dataset import matbench_folds
        from tui_ft.core.common.events import EpochEnd, RunFailed

        n_rows = len(load_matbench(file).ids)
        subset = SUBSET
        marks: dict = {}
        t0 = time.perf_counter()

        def emit(ev):
            if isinstance(ev, EpochEnd):
                marks[ev.epoch] = time.perf_counter() - t0
            elif isinstance(ev, RunFailed):
                marks["failed"] = ev.message

        if stage == "head_epoch":
            ch = {"run.name": "scale_head", "train.epochs": 1, "train.device": "cpu", "train.seed": 0,
                  "data.fraction": 1.0}  # the whole training part: every row's features are loaded
            preset = dev_preset("head_finetune_freeze", ch, file)
        else:
            train_part = len(matbench_folds(n_rows)[0][0])
            vf = max(SUBSET_VAL / train_part, 1e-6)
            ch = {"run.name": "scale_full", "train.epochs": 1, "train.device": "cpu", "train.seed": 0,
                  "data.val_fraction": vf, "data.test_limit": 8, "train.batch_size": 8}
            rest = train_part - max(1, int(round(vf * train_part)))
            subset = min(SUBSET, rest)  # small files (a quick check) have fewer rows
            ch["data.fraction"] = fraction_for_n(n_rows, subset, val_fraction=vf)
            preset = dev_preset("full_finetune", ch, file)
        engine.run_training(preset, run_id=f"scale-{stage}-{os.getpid()}", paths=Paths.default(), emit=emit)
        if "failed" in marks:
            raise SystemExit(f"run failed: {marks['failed']}")
        out["setup_s"] = marks.get(0)
        out["s"] = marks[1] - marks[0] if 1 in marks and 0 in marks else None
        out["n"] = subset if stage == "full_epoch" else n_rows
    else:
        raise SystemExit(f"unknown stage {stage}")
    out["rss_mb"] = _hwm_mb()
    out["anon_mb"], out["file_mb"] = sampler.stop()
    out["rss_workers_mb"] = _rss_mb(resource.RUSAGE_CHILDREN)
    return out


def run_stage(stage: str, file: Path, cache: Path, home: Path, workers: int | None, timeout: float) -> dict:
    env = dict(os.environ, TUI_FT_CACHE=str(cache), TUI_FT_HOME=str(home), PYTHONPATH=str(REPO))
    if workers is not None:
        env["TUI_FT_GRAPH_WORKERS"] = str(workers)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--file", str(file)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall": wall}
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall"] = wall
    return res


# ---------------------------------------------------------------- the driver


def _per(res: dict) -> str:
    s, n = res.get("s"), res.get("n")
    return f"{s / n * 1000:.2f}" if s is not None and n else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000,50000", help="row counts, comma-separated (default 5000,20000,50000)")
    ap.add_argument("--full", action="store_true", help=f"also N = {FULL_N:,} (the full matbench_mp_e_form size)")
    ap.add_argument("--skip", default="", help=f"stages to leave out, comma-separated ({', '.join(STAGES)})")
    ap.add_argument("--workdir", type=Path, default=None, help="where the files and caches go (default: a new temp dir, removed at the end)")
    ap.add_argument("--data", type=Path, default=None, help="the dev file (default ../shared/data/mp_e_form_dev.json.gz)")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per stage before it is stopped")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stage:
        res = stage_main(args.stage, args.file)
        with open(args.file.parent / "stages.jsonl", "a", encoding="utf-8") as fh:  # every stage's full result
            fh.write(json.dumps({"file": args.file.name, "stage": args.stage, **res}) + "\n")
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        if not sizes or min(sizes) < 50:
            raise ValueError
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: expected whole numbers >= 50, comma-separated")
    if args.full and FULL_N not in sizes:
        sizes.append(FULL_N)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(STAGES):
        ap.error(f"--skip: unknown stage(s) {', '.join(sorted(skip - set(STAGES)))}; stages: {', '.join(STAGES)}")
    stages = [s for s in STAGES if s not in skip]
    dev_path = require_dev_data(args.data)
    from tui_ft.core.train.parallel import usable_cores

    cores = usable_cores()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temp folder is removed
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tui-ft-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    print(f"work folder: {work}; stages: {', '.join(stages)}; graph workers for convertN: {cores}")
    with gzip.open(dev_path, "rt", encoding="utf-8") as fh:
        dev = json.load(fh)
    results: dict[int, dict[str, dict]] = {}
    try:
        for n in sizes:
            f = work / f"scale-{n}.json.gz"
            t = time.perf_counter()
            if not f.is_file():
                build_file(dev, n, f)
            print(f"N={n}: file {f.name} ({f.stat().st_size / 2**20:.0f} MiB) ready in {time.perf_counter() - t:.0f} s", flush=True)
            cache, home = work / f"cache-{n}", work / f"home-{n}"
            home.mkdir(exist_ok=True)
            results[n] = {}
            for stage in stages:
                if stage in ("convert1", "convertN"):
                    shutil.rmtree(cache / "graphs", ignore_errors=True)
                workers = 1 if stage == "convert1" else (cores if stage == "convertN" else None)
                res = run_stage(stage, f, cache, home, workers, args.timeout)
                results[n][stage] = res
                if "error" in res:
                    print(f"  {stage}: FAILED ({res['error']})", flush=True)
                else:
                    extra = f", set-up {fmt_s(res['setup_s'])}" if res.get("setup_s") is not None else ""
                    print(f"  {stage}: {fmt_s(res.get('s'))}{extra}, peak RSS {res['rss_mb']:.0f} MiB"
                          f" (anonymous {res.get('anon_mb', 0):.0f}, file-backed {res.get('file_mb', 0):.0f};"
                          f" workers {res['rss_workers_mb']:.0f} MiB)", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    # ---- table
    rows = []
    for n, per_stage in results.items():
        for stage, res in per_stage.items():
            if "error" in res:
                rows.append([f"{n:,}", stage, "failed", "-", "-", "-", res["error"][:60]])
                continue
            note = []
            if res.get("setup_s") is not None:
                note.append(f"set-up {fmt_s(res['setup_s'])}")
            if "workers" in res:
                note.append(f"{res['workers']} worker(s)")
            if "built" in res:
                note.append(f"built {res['built']}, cached {res['hits']}, failed {res['failed']}, packed {res['packed_mb']:.0f} MiB")
            rows.append([f"{n:,}", stage, fmt_s(res.get("s")), _per(res), f"{res['rss_mb']:.0f}",
                         f"{res.get('anon_mb', 0):.0f}", f"{res.get('file_mb', 0):.0f}",
                         f"{res['rss_workers_mb']:.0f}", "; ".join(note)])
    print()
    print(markdown_table(["N", "stage", "time", "ms / structure", "peak RSS MiB", "peak anonymous MiB",
                          "peak file-backed MiB", "workers' peak RSS MiB", "notes"], rows))

    # ---- per-structure cost by N (flat = linear) and projection to the full file
    print()
    ns = list(results)
    hdr = ["stage"] + [f"ms/structure at {n:,}" for n in ns] + [f"ratio {ns[-1]:,} / {ns[0]:,}", f"projected time at {FULL_N:,}", f"projected peak RSS at {FULL_N:,}"]
    prow = []
    for stage in stages:
        per = [results[n].get(stage, {}) for n in ns]
        vals = [r["s"] / r["n"] if r.get("s") is not None and r.get("n") else None for r in per]
        ratio = f"{vals[-1] / vals[0]:.2f}" if vals[0] and vals[-1] else "-"
        proj_t = "-"
        if vals[-1] is not None:
            proj_t = fmt_s(vals[-1] * (SUBSET if stage == "full_epoch" else FULL_N))
        mem = [(n, r["rss_mb"]) for n, r in zip(ns, per) if "rss_mb" in r]
        proj_m = "-"
        if len(mem) >= 2:
            (n0, m0), (n1, m1) = mem[0], mem[-1]
            slope = (m1 - m0) / (n1 - n0) if n1 != n0 else 0.0
            proj_m = f"{(m1 + slope * (FULL_N - n1)) / 1024:.2f} GiB"
        elif mem:
            proj_m = f"{mem[0][1] / 1024:.2f} GiB (one N)"
        prow.append([stage] + [f"{v * 1000:.2f}" if v is not None else "-" for v in vals] + [ratio, proj_t, proj_m])
    print(markdown_table(hdr, prow))
    c1 = [results[n].get("convert1", {}) for n in ns]
    cn = [results[n].get("convertN", {}) for n in ns]
    for n, a, b, w in zip(ns, c1, cn, (results[n].get("warm", {}) for n in ns)):
        bits = []
        if a.get("s") and b.get("s"):
            bits.append(f"convert speed-up {cores} workers / 1: {a['s'] / b['s']:.2f}x")
        if w.get("s") and (b.get("s") or a.get("s")):
            bits.append(f"warm start / cold conversion: {w['s'] / (b.get('s') or a['s']):.1%}")
        if bits:
            print(f"N={n:,}: " + "; ".join(bits))
    if c1 and c1[-1].get("s"):
        print(f"projection to {FULL_N:,} rows: cold conversion {fmt_s(c1[-1]['s'] / c1[-1]['n'] * FULL_N)} per core "
              f"(1 worker), {fmt_s(cn[-1]['s'] / cn[-1]['n'] * FULL_N) if cn[-1].get('s') else '-'} with {cores} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
