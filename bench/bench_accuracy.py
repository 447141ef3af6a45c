"""Accuracy table on the dev protocol, through the real engine.

    nice python bench/bench_accuracy.py --fractions 0.1                 # every row at fraction 0.1
    nice python bench/bench_accuracy.py --fractions 1.0 --rows lpft     # the LP-FT row on the whole training part

Protocol: the dev file ``../shared/data/mp_e_form_dev.json.gz`` (5,000 MP
entries), Matbench fold 0 (``KFold(5, shuffle=True, random_state=18012019)``)
is the test set (1,000 rows), 10% of the training part (400 rows, seed 0) is
the validation set, ``fraction`` of the remaining 3,600 rows trains. Every
run's test MAE is that of its best-validation checkpoint (the engine's rule).

Rows (each a preset built with ``Preset.with_changes`` from a shipped preset;
the resolved presets are written to ``--out`` as TOML, so any row reruns with
``tui-ft --preset FILE``):

- ``zero-shot``: pretrained CHGNet 0.3.0 as it is: no AtomRef refit, one epoch of
  SGD at lr 1e-30 (the schema wants >= 1 epoch and lr > 0; the weights do not
  change), head mode so the backbone runs once. Test MAE of the untouched model.
- ``atomref``: the same, with the AtomRef refit (least squares on target minus
  the rest of the model) before epoch 0: the refit alone.
- ``head``: head only, lr 1e-3, batch 8, ``--head-epochs`` (30) epochs.
- ``full``: all layers from the pretrained model, lr 1e-4, batch 16,
  ``--full-epochs`` (2) epochs, AtomRef refit first.
- ``lpft``: the ``head`` run, then full mode from its best checkpoint
  (``model.init = RUN@best``, AtomRef kept), lr 1e-4, batch 16, ``--full-epochs``
  epochs. Reuses the ``head`` row's run when both are asked for.
- ``seed-head``, ``seed-head-norefit``, ``seed-full``, ``seed-full-norefit``: the
  seed plan's settings, i.e. ``presets/head_finetune_freeze.toml`` (head, lr 1e-3)
  and ``presets/full_finetune.toml`` (full, lr 1e-4), 3 epochs, batch 8, with and
  without the AtomRef refit.

Runs happen in a temporary ``TUI_FT_HOME`` with a persistent ``TUI_FT_CACHE``
(graphs and frozen features are reused by later rows and later invocations).
Wall time is the engine's own ``run_finished.seconds`` (data, model, graph and
feature caches, refit, every epoch, checkpoints, test), summed over stages; CPU
time is this process's user + system time over the same runs (all threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    command_line,
    dev_preset,
    fmt_s,
    git_dirty,
    git_head,
    machine_line,
    markdown_table,
    require_dev_data,
    setup_env,
    warn_if_not_niced,
)

# Import the engine before anything imports torch, as the CLI does: the engine then sets
# OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads (see BENCHMARKS.md).
import tui_ft.core.train.engine  # noqa: E402,F401

ROW_NAMES = (
    "zero-shot",
    "atomref",
    "head",
    "full",
    "lpft",
    "seed-head",
    "seed-head-norefit",
    "seed-full",
    "seed-full-norefit",
)
UNTOUCHED = {"optim.optimizer": "sgd", "optim.lr": 1e-30, "train.epochs": 1}


def stages_for(row: str, args) -> list[tuple[str, dict[str, Any]]]:
    head = ("head_finetune_freeze", {"train.epochs": args.head_epochs, "optim.lr": 1e-3, "train.batch_size": 8})
    full = {"train.epochs": args.full_epochs, "optim.lr": 1e-4, "train.batch_size": 16}
    return {
        "zero-shot": [("head_finetune_freeze", {**UNTOUCHED, "finetune.refit_atomref": False})],
        "atomref": [("head_finetune_freeze", {**UNTOUCHED, "finetune.refit_atomref": True})],
        "head": [head],
        "full": [("full_finetune", dict(full, **{"finetune.refit_atomref": True}))],
        "lpft": [head, ("full_finetune", dict(full, **{"model.init": "{previous}@best"}))],
        "seed-head": [("head_finetune_freeze", {})],
        "seed-head-norefit": [("head_finetune_freeze", {"finetune.refit_atomref": False})],
        "seed-full": [("full_finetune", {})],
        "seed-full-norefit": [("full_finetune", {"finetune.refit_atomref": False})],
    }[row]


@dataclass
class StageResult:
    run_id: str
    base: str
    changes: dict[str, Any]
    preset_file: Path
    status: str = "?"
    device: str = "?"
    test_mae: float | None = None
    best_val_mae: float | None = None
    best_epoch: int | None = None
    epoch0_val_mae: float | None = None
    epochs: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    n_train: int = 0
    message: str = ""
    reused: bool = False


@dataclass
class RowResult:
    row: str
    fraction: float
    stages: list[StageResult] = field(default_factory=list)


def run_stage(base: str, changes: dict[str, Any], out: Path, name: str) -> StageResult:
    from tui_ft.core.train.engine import run_training
    from tui_ft.core.common.events import EpochEnd, RunFailed, RunFinished, RunStarted
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.dump import dump_preset
    from tui_ft.core.library.runs import new_run_id

    preset = dev_preset(base, {"run.name": name, **changes})
    paths = Paths.default()
    run_id = new_run_id(preset.name, paths)
    pfile = out / f"{run_id}.toml"
    pfile.write_text(dump_preset(preset), encoding="utf-8")
    res = StageResult(run_id, base, changes, pfile)

    def emit(ev) -> None:
        if isinstance(ev, RunStarted):
            res.device, res.n_train = ev.device, ev.n_train
        elif isinstance(ev, EpochEnd):
            if ev.epoch == 0:
                res.epoch0_val_mae = ev.val_mae
            res.epochs = max(res.epochs, ev.epoch)
            print(f"  {run_id} epoch {ev.epoch:3d} val_mae {ev.val_mae:.4f} ({ev.seconds:.1f}s)",
                  file=sys.stderr, flush=True)
        elif isinstance(ev, RunFinished):
            res.test_mae, res.best_val_mae, res.best_epoch, res.seconds = (
                ev.test_mae, ev.best_val_mae, ev.best_epoch, ev.seconds)
        elif isinstance(ev, RunFailed):
            res.message = ev.message

    t, c = time.perf_counter(), time.process_time()
    result = run_training(preset, run_id=run_id, paths=paths, emit=emit)
    res.cpu_seconds = time.process_time() - c
    res.status = result.status
    if not res.seconds:
        res.seconds = time.perf_counter() - t
    return res


def run_row(row: str, fraction: float, args, done: dict) -> RowResult:
    rr = RowResult(row, fraction)
    previous = None
    for i, (base, changes) in enumerate(stages_for(row, args)):
        changes = dict(changes)
        if "model.init" in changes:
            changes["model.init"] = changes["model.init"].format(previous=previous)
        key = (base, json.dumps(changes, sort_keys=True, default=str), fraction)
        if key in done:  # e.g. the lpft row's head stage is the head row's run
            st = done[key]
            st = StageResult(**{**st.__dict__, "reused": True})
        else:
            ch = {"data.fraction": fraction, "train.device": args.device, **changes}
            name = f"acc_{row}_f{fraction:g}" + (f"_s{i + 1}" if len(stages_for(row, args)) > 1 else "")
            print(f"[{row} @ fraction {fraction:g}] stage {i + 1}: {base} + {changes}", file=sys.stderr, flush=True)
            st = run_stage(base, ch, args.out, name)
            st.changes = ch
            done[key] = st
        rr.stages.append(st)
        previous = st.run_id
        if st.status != "finished":
            break
    return rr


def table(results: list[RowResult]) -> str:
    rows = []
    for r in results:
        last = r.stages[-1]
        ok = all(s.status == "finished" for s in r.stages)
        mae = f"{last.test_mae:.4f}" if ok and last.test_mae is not None else f"{last.status}: {last.message[:60]}"
        epochs = " + ".join(str(s.epochs) for s in r.stages)
        wall = sum(s.seconds for s in r.stages)
        cpu = sum(s.cpu_seconds for s in r.stages)
        presets = "; ".join(
            f"`{s.base}.toml` + `{_short(s.changes)}`" + (" (reused run)" if s.reused else "") for s in r.stages
        )
        e0 = r.stages[0].epoch0_val_mae
        rows.append([
            r.row, f"{r.fraction:g}", mae,
            "-" if last.best_val_mae is None else f"{last.best_val_mae:.4f} @ {last.best_epoch}",
            "-" if e0 is None else f"{e0:.4f}",
            epochs, fmt_s(wall), fmt_s(cpu), last.device, presets,
        ])
    return markdown_table(
        ["row", "fraction", "test MAE (eV/atom)", "best val MAE @ epoch", "epoch-0 val MAE", "epochs", "wall time",
         "CPU time", "device", "preset (changes to the shipped file)"], rows)


def _short(ch: dict) -> str:
    skip = {"data.source", "run.name"}
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in ch.items() if k not in skip)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fractions", default="1.0,0.1", help="comma list of data.fraction values (default 1.0,0.1)")
    ap.add_argument("--rows", default=",".join(ROW_NAMES), help=f"comma list of rows (default all: {', '.join(ROW_NAMES)})")
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--full-epochs", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--cache", type=Path, default=None, help="persistent TUI_FT_CACHE (default /tmp/tui-ft-bench-cache)")
    ap.add_argument("--home", type=Path, default=None, help="TUI_FT_HOME for the runs (default: a new temp folder)")
    ap.add_argument("--out", type=Path, default=None, help="folder for presets + results.json (default: HOME/bench)")
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    data = require_dev_data(args.data)
    if args.data:
        import common

        common.DEV_DATA = data
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROW_NAMES]
    if bad:
        ap.error(f"unknown rows {bad}; choose from {', '.join(ROW_NAMES)}")
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    home, cache = setup_env(args.cache, args.home)
    args.out = (args.out or home / "bench").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    warn_if_not_niced()
    print(f"$ {command_line()}  (commit {git_head()}{', with uncommitted changes' if git_dirty() else ''})")
    print(machine_line())
    print(f"TUI_FT_HOME={home} TUI_FT_CACHE={cache}; resolved presets and results.json in {args.out}")
    done: dict = {}
    results: list[RowResult] = []
    for frac in fractions:
        for row in rows:
            results.append(run_row(row, frac, args, done))
            (args.out / "results.json").write_text(
                json.dumps([{"row": r.row, "fraction": r.fraction, "stages": [
                    {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()} for s in r.stages]}
                    for r in results], indent=1, default=str), encoding="utf-8")
            print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print()
    print(table(results))
    print()
    print(f"machine after: {machine_line()}")
    return 0 if all(s.status == "finished" for r in results for s in r.stages) else 1


if __name__ == "__main__":
    raise SystemExit(main())
