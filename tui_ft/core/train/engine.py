"""The training engine: the one file where an epoch happens.

``run_training(preset, ...)`` loads the data and the model (the pretrained
CHGNet bundled with chgnet, or a library checkpoint), refits the AtomRef
composition model on the training targets, logs epoch 0 (validation MAE
before any update), trains, keeps ``best.pt``/``last.pt`` in the library and
ends with the test MAE of the best-validation weights. Everything it has to
say goes out as typed events through ``emit``.

Two modes:

* ``head``: the backbone is frozen, so its output (the per-atom features that
  enter the readout) is computed once per structure, cached on disk, and only
  the readout head (readout norm + MLP) and AtomRef are trained on it.
* ``full``: everything trains; the backbone may have its own learning rate
  and layer groups (embedding, interaction, readout) their own lr factors,
  with optional progressive unfreezing from the top.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

# OpenMP worker threads that spin while they wait for work make CPU training several
# times slower as soon as another process shares the cores (bench/bench_throughput.py,
# BENCHMARKS.md); waiting passively costs nothing measurable. libgomp reads this when
# torch is first imported, so it only applies if that is still to come: it stands
# before the imports below, which load torch.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch and chgnet are imported here, at the top: nothing that must start fast
# imports this module (``tui-ft --help`` and the dashboard never do; the CLI imports
# it only to run or evaluate, and plans only to run).
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tui_ft.core.common.atomic import atomic_write_text, deferred_signals  # noqa: E402
from tui_ft.core.common.events import (  # noqa: E402
    CheckpointSaved,
    EpochEnd,
    Event,
    EventWriter,
    Message,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunPruned,
    RunStarted,
    event_from_dict,
    read_events,
)
from tui_ft.core.common.locks import LockHeld, RunLock  # noqa: E402
from tui_ft.core.common.paths import Paths  # noqa: E402
from tui_ft.core.common.units import default_unit  # noqa: E402
from tui_ft.core.config.dump import dump_preset
from tui_ft.core.config.presets import Preset, load_preset  # noqa: E402
from tui_ft.core.data.graphcache import GraphCache  # noqa: E402
from tui_ft.core.data.sources import make_source_splits  # noqa: E402
from tui_ft.core.library.ckptfile import CheckpointMeta, CheckpointWriteError, load_checkpoint, package_versions, read_checkpoint_meta, save_checkpoint
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.task import task_for  # noqa: E402
from tui_ft.core.train.distributed import LOCAL, Dist, RankEmit  # noqa: E402
from tui_ft.core.train.parallel import CpuDataParallel  # noqa: E402
from tui_ft.core.train.precision import FP32, Precision, is_cuda  # noqa: E402
from tui_ft.core.train.recipe import Recipe, cpu_state  # noqa: E402

# chgnet 0.4.2 builds a tensor from requires_grad volumes in BatchedGraph.from_graphs;
# harmless for energy-only training, and it would print on every run.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
from tui_ft.core.common.progress import ProgressReporter  # noqa: E402
from tui_ft.core.train.errors import Interrupted, Pruned, RunRefused, TrainingFailed  # noqa: E402
from tui_ft.core.train.forward import FullForward, HeadForward  # noqa: E402
from tui_ft.core.train.setup import (  # noqa: E402
    GROUPS,
    CpuThreads,
    configure_cpu,
    group_params,
    load_pretrained,
    model_from_payload,
    pick_device,
    seed_everything,
)


@dataclass
class RunResult:
    run_id: str
    status: str  # finished | failed | interrupted | pruned
    test_mae: float | None = None
    best_val_mae: float | None = None
    best_epoch: int | None = None
    history: list[EpochEnd] = field(default_factory=list)
    message: str = ""


# ---------------------------------------------------------------- the run


@dataclass
class RunContext:
    preset: Preset
    run_id: str
    paths: Paths
    emit: Callable[[Event], None]
    plan: str | None = None
    stage: int | None = None
    resume: bool = False
    init_override: str | None = None  # a resolved reference that replaces preset.model.init (plans)
    on_batch: Callable[[int, int, int], None] | None = None  # (epoch, structures done, total): live display only
    dist: Dist = LOCAL  # DDP: this process's rank (tui_ft.core.train.distributed); one process: LOCAL
    # called after each epoch's epoch_end with (epoch, val_mae); a returned reason stops the
    # run as pruned. None: a sweep trial's TrialReporter (from its sweep.json), if any
    on_epoch: Callable[[int, float], str | None] | None = None


class Trainer:
    """One run of one preset. ``run()`` never raises for training problems: it emits
    ``run_failed`` / ``run_interrupted`` and returns the status."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.p = ctx.preset
        self.paths = ctx.paths
        self.lib = Library(ctx.paths)
        self.ckpt_dir = ctx.paths.run_ckpt_dir(ctx.run_id)
        self.log_dir = ctx.paths.run_log_dir(ctx.run_id)
        self.history: list[EpochEnd] = []
        self.best_val = math.inf
        self.best_epoch = -1
        self.epoch = 0
        self.parent: str | None = None
        self.device = "?"
        self.model = None
        self.optimizer = None
        self.scheduler = None
        self.recipe: Recipe | None = None  # warm-up, clipping, EMA / SWA weights (tui_ft.core.train.recipe)
        self.data_sha = ""
        self._last_saved_epoch = -1
        self._recorded_epochs: set[int] = set()  # epoch_end lines already in events.jsonl (resume)
        self._finished: RunResult | None = None  # set once run_finished is written
        self.forward: HeadForward | FullForward | None = None
        self.on_epoch: Callable[[int, float], str | None] | None = None
        self.dp: CpuDataParallel | None = None  # full mode on the CPU: batches split across threads
        self.cpu_workers = 1
        self.cpu = CpuThreads(1)  # torch's CPU threads for the load on the cores (configure_cpu)
        self.dist = ctx.dist
        self.precision = FP32
        self.task = task_for(self.p)  # what the model is trained to predict (tui_ft.core.task)
        d = self.p.data
        self.unit = d.unit if d.unit is not None else default_unit(d.target, d.source)
        self.n_held_out = 0  # rows at the end of self.ds from data.test_source
        self.source_skipped: list[str] = []  # ids the data source could not use (sources.summary)
        self.loggers = None
        if self.p.log.tensorboard or self.p.log.mlflow or self.p.log.wandb:
            from tui_ft.core.train.loggers import (
                RunLoggers,  # imported only when a logger is on
            )

            self.loggers = RunLoggers(self.p.log, ctx.run_id, ctx.paths, preset=self.p, say=self.say)

    # -- events
    def emit(self, ev: Event) -> None:
        """Every event of the run goes out here: stamped with the target's unit (and, for
        ``run_started``, the ids the data source left out), then to the run's sinks: the
        event writer (and display) and the optional loggers of ``[log]``."""
        if hasattr(ev, "unit") and ev.unit is None:
            ev.unit = self.unit  # type: ignore[attr-defined]
        if isinstance(ev, RunStarted) and self.source_skipped:
            ev.skipped = list(self.source_skipped) + [i for i in ev.skipped if i not in self.source_skipped]
        self.ctx.emit(ev)
        if self.p.log.notify and ev.type in ("run_finished", "run_failed", "run_interrupted", "run_pruned") \
                and getattr(self.dist, "writer", True):
            from tui_ft.core.train.notify import notify

            problem = notify(self.p.log.notify, ev, cwd=self.ctx.paths.root)
            if problem:
                self.ctx.emit(Message(self.ctx.run_id, text=problem, level="warning", pid=os.getpid()))
        if self.loggers is not None:
            from tui_ft.core.train.loggers import LoggerError

            try:
                self.loggers.handle(ev)
            except LoggerError as exc:  # a logger that cannot start fails the run before its first epoch
                loggers, self.loggers = self.loggers, None
                loggers.close("failed")
                raise TrainingFailed(str(exc)) from None

    def say(self, text: str, level: str = "info") -> None:
        self.emit(Message(self.ctx.run_id, text=text, level=level, pid=os.getpid()))

    def progress(self, stage: str) -> ProgressReporter:
        """A throttled reporter of ``stage``'s progress events (graphs, features, predict)."""
        return ProgressReporter(self.emit, self.ctx.run_id, stage)

    # -- entry point
    def run(self) -> RunResult:
        rid = self.ctx.run_id
        t0 = time.time()
        try:
            return self._run(t0)
        except Pruned as exc:
            self.emit(RunInterrupted(rid, epoch=self.epoch, message=f"stopped by the sweep's pruner; {self._last_on_disk()}"))
            self.emit(RunPruned(rid, epoch=self.epoch, reason=exc.reason))
            return RunResult(rid, "pruned", None, self._best_or_none(), self.best_epoch, self.history, exc.reason)
        except (KeyboardInterrupt, Interrupted):
            if self._finished is not None:  # the signal came after run_finished was written: the run is done
                return self._finished
            self._save_last_on_interrupt()
            self.emit(RunInterrupted(rid, epoch=self.epoch, message=f"interrupted by the user; {self._last_on_disk()}"))
            return RunResult(rid, "interrupted", None, self._best_or_none(), self.best_epoch, self.history)
        except TrainingFailed as exc:
            self.emit(RunFailed(rid, message=str(exc), epoch=self.epoch))
            return RunResult(rid, "failed", None, self._best_or_none(), self.best_epoch, self.history, str(exc))
        except Exception as exc:  # noqa: BLE001 - any crash becomes a run_failed event
            msg = f"{type(exc).__name__}: {exc}"
            self.emit(RunFailed(rid, message=msg, epoch=self.epoch))
            raise
        finally:
            if self.dp is not None:
                self.dp.close()
                self.dp = None
            torch.set_flush_denormal(False)
            self.cpu.close()

    def _best_or_none(self) -> float | None:
        return self.best_val if math.isfinite(self.best_val) else None

    def _run(self, t0: float) -> RunResult:
        """The run in its steps; each step leaves its results on ``self``."""
        self._setup_process()
        self._load_data()
        self._remove_stale_temp_files()
        resume_payload = self._load_model()
        failed = self.dist.rank0_first(self._build_graphs)  # DDP: rank 0 fills the graph cache
        self._announce(failed)
        self.forward = self._make_forward()
        self._setup_trainable()
        start_epoch = self._resume(resume_payload) if resume_payload is not None else self._start()
        stopped_early = self._train_epochs(start_epoch)
        return self._finish(t0, stopped_early)

    # -- the steps of a run, in order
    def _setup_process(self) -> None:
        self._setup_pruning()
        seed_everything(self.p.train.seed)
        self.device = self.dist.device or pick_device(self.p.train.device)
        self.cpu = configure_cpu(self.device, ddp=self.dist.active)  # .tick() once a batch
        if is_cuda(self.device):
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            self.precision = Precision(self.p.train.precision, self.device)
        except ValueError as exc:
            raise TrainingFailed(str(exc)) from None

    def _setup_pruning(self) -> None:
        """A sweep trial asks its study after each epoch whether to go on (tui_ft.core.orchestrate.sweep)."""
        self.on_epoch = self.ctx.on_epoch
        if self.on_epoch is None and not self.dist.active:
            from tui_ft.core.orchestrate.sweep import SweepError, trial_reporter

            try:
                self.on_epoch = trial_reporter(self.log_dir, say=self.say)
            except SweepError as exc:
                raise TrainingFailed(str(exc)) from None

    def _make_splits(self, exclude: Sequence[int] = ()):
        """The run's splits (sources.make_source_splits): Matbench folds, a seeded random split
        or a separate test file; rows the source could not use and ``exclude`` left out."""
        d = self.p.data
        bad = sorted(set(self.ds.bad_rows) | {int(r) for r in exclude})
        return make_source_splits(
            len(self.ds), n_held_out=self.n_held_out, split=d.split, fold=d.fold, fraction=d.fraction,
            val_fraction=d.val_fraction, seed=d.seed, test_limit=d.test_limit, test_fraction=d.test_fraction,
            exclude=bad,
        )

    def _load_data(self) -> None:
        """The data and its splits (the task's reader; rows it cannot use are reported once)."""
        self.task.load_data(self)

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a process killed mid-write (only this run writes here)."""
        for stale in self.ckpt_dir.glob(".*.tmp") if self.ckpt_dir.is_dir() else ():
            stale.unlink(missing_ok=True)

    def _load_model(self) -> dict[str, Any] | None:
        """The starting model: this run's last.pt (resume), a library checkpoint or the
        pretrained CHGNet. Returns the resume payload, if resuming."""
        p = self.p
        resume_payload = None
        if self.ctx.resume:
            resume_payload = load_checkpoint(self.ckpt_dir / "last.pt")
            model = model_from_payload(resume_payload, str(self.ckpt_dir / "last.pt"))
            self._recover_epoch_end(resume_payload)
            self.parent = (CheckpointMeta.from_dict(resume_payload["meta"]) or CheckpointMeta()).parent
        else:
            init = self.ctx.init_override or p.model.init
            if init:
                info = self.lib.resolve_ref(init)
                model = model_from_payload(load_checkpoint(info.path))
                self.parent = info.ref
                self.say(f"starting from checkpoint {info.ref} (epoch {info.epoch}, val MAE {'n/a' if info.val_mae is None else f'{info.val_mae:.4f}'})")
            else:
                model = load_pretrained(p.model.pretrained)
                self.say(f"starting from pretrained CHGNet {p.model.pretrained}")
        self.model = model.to(self.device)
        return resume_payload

    def _build_graphs(self) -> dict[int, str]:
        """Crystal graphs (cached); failures are reported by id and left out of every split.
        Returns the failures (row -> reason)."""
        ds, splits = self.ds, self.splits
        cache = GraphCache(ds, self.model.graph_converter, self.paths)
        self.rows = np.concatenate([splits.train, splits.val, splits.test])
        report = self.progress("graphs")
        report(0, len(self.rows))
        graphs, failed = cache.get(self.rows, progress=report)
        self.say(f"graphs: {cache.hits} from cache, {cache.built} built")
        for r, why in sorted(failed.items()):
            self.say(f"structure {ds.ids[r]} (row {r}) left out of every split: {why}", "warning")
        if failed:
            self.splits = splits = self.task.resplit(self, failed)
        if len(splits.train) == 0 or len(splits.val) == 0:
            raise TrainingFailed("no training or validation structures left after graph conversion")
        self.graphs = graphs
        self.task.labels(self)
        return failed

    def _announce(self, failed: dict[int, str]) -> None:
        p, s = self.p, self.splits
        self.emit(
            RunStarted(
                self.ctx.run_id, preset_name=p.name, preset=p.to_dict(), device=self.device, n_train=len(s.train),
                n_val=len(s.val), n_test=len(s.test), parent=self.parent, pid=os.getpid(),
                plan=self.ctx.plan, stage=self.ctx.stage, epochs=p.train.epochs,
                skipped=[self.ds.ids[r] for r in sorted(failed)],
                data_sha256=getattr(self.ds, "sha256", None), split_sha256=split_sha256(self.ds.ids, s),
            )
        )

    def _make_forward(self):
        """The task's forward object (head on cached features, or the model on graphs)."""
        return self.task.make_forward(self)


    def _resume(self, payload: dict[str, Any]) -> int:
        """Training state, optimizer and schedule from last.pt; returns the first epoch to train."""
        ts = payload.get("train_state", {})
        meta = CheckpointMeta.from_dict(payload["meta"]) or CheckpointMeta()
        self.best_val = float(ts.get("best_val", math.inf))
        self.best_epoch = int(ts.get("best_epoch", -1))
        self.epoch = meta.epoch if meta.epoch is not None else 0
        self.history = []
        self._build_optimizer(self.epoch)
        if payload.get("optimizer_state") is not None:
            self.optimizer.load_state_dict(payload["optimizer_state"])
        if self.scheduler is not None and payload.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(payload["scheduler_state"])
        self.recipe.load_state_dict(payload.get("recipe_state"))  # the raw weights under an EMA, the averages
        self._bad_epochs = int(ts.get("bad_epochs", 0))
        # epochs after last.pt's that events.jsonl already records (a kill between the best
        # and the last save): they are trained again, but their epoch_end is not repeated
        self._recorded_epochs = {e for e in self._logged_epochs() if e > self.epoch}
        self.say(f"resuming after epoch {self.epoch} (best val MAE {self.best_val:.4f} at epoch {self.best_epoch})")
        return self.epoch + 1

    def _logged_epochs(self) -> set[int]:
        return {
            ev.epoch for ev in read_events(self.log_dir / "events.jsonl")
            if isinstance(ev, EpochEnd) and isinstance(ev.epoch, int)
        }

    def _recover_epoch_end(self, payload: dict[str, Any]) -> None:
        """A process killed after last.pt was saved but before the epoch's epoch_end line:
        write the line kept in last.pt, as the last event of that process (before this
        run_started), so every epoch is logged exactly once."""
        ts = payload.get("train_state")
        lost = ts.get("epoch_end") if isinstance(ts, dict) else None
        if not isinstance(lost, dict):
            return
        try:
            ev = event_from_dict(lost)
        except (ValueError, TypeError):
            return
        if isinstance(ev, EpochEnd) and ev.epoch not in self._logged_epochs():
            self.emit(ev)

    def _start(self) -> int:
        """AtomRef refit, optimizer, and epoch 0 (validation before any update); returns 1."""
        if self.p.finetune.refit_atomref:
            self._refit_atomref()
        self._build_optimizer(0)
        self._bad_epochs = 0
        t = time.time()
        with self.recipe.evaluated():
            val0 = self._evaluate("val")
            self._end_epoch(0, {}, val0, time.time() - t, 0)
        if self.on_epoch is not None:
            self.on_epoch(0, val0[self.task.selection])  # the pruners' starting point; nothing is pruned before an update
        return 1

    def _train_epochs(self, start_epoch: int) -> bool:
        """Epochs ``start_epoch..train.epochs``; returns whether early stopping ended them."""
        p = self.p
        for epoch in range(start_epoch, p.train.epochs + 1):
            self.epoch = epoch
            self._apply_unfreeze(epoch)
            t = time.time()
            train_m, n = self._train_epoch(epoch)
            train_m = {**train_m, **self.recipe.train_metrics()}
            self.recipe.end_epoch(epoch)
            with self.recipe.evaluated():  # the EMA's weights, when train.ema is on: evaluated and saved
                val_m = self._evaluate("val")
                if self.scheduler is not None:
                    self.scheduler.step()
                stop = self._end_epoch(epoch, train_m, val_m, time.time() - t, n)
            reason = self.on_epoch(epoch, val_m[self.task.selection]) if self.on_epoch is not None else None
            if reason is not None:
                raise Pruned(reason)
            if stop:
                self.say(f"early stopping: no improvement for {p.train.patience} epochs")
                break
        return self.epoch < p.train.epochs

    def _finish(self, t0: float, stopped_early: bool) -> RunResult:
        """The task's test metrics of the best weights and its predictions file; both checkpoints marked finished."""
        self.dist.barrier()  # DDP: rank 0 has written best.pt
        best_payload = load_checkpoint(self.ckpt_dir / "best.pt")
        self.model.load_state_dict(best_payload["model_state"])
        res = self.task.test(self)
        test_mae = res.value
        swa_metrics = self._swa_finish()
        if swa_metrics:
            res.metrics = {**(res.metrics or {}), **swa_metrics}
        if not self.dist.writer:  # DDP: rank 0 writes the predictions and marks the checkpoints
            return RunResult(self.ctx.run_id, "finished", test_mae, self.best_val, self.best_epoch, self.history)
        last_payload = load_checkpoint(self.ckpt_dir / "last.pt") if (self.ckpt_dir / "last.pt").is_file() else None
        result = RunResult(self.ctx.run_id, "finished", test_mae, self.best_val, self.best_epoch, self.history)
        # marking both checkpoints finished and writing run_finished is one step: a
        # Ctrl-C / SIGTERM during it is held until run_finished is written, and then
        # the run has finished (run() returns it as such)
        with deferred_signals():
            for kind, pl in (("best", best_payload), ("last", last_payload)):
                if pl is not None:
                    meta = CheckpointMeta.from_dict(pl["meta"]) or CheckpointMeta()
                    pl["meta"] = replace(meta, test_mae=test_mae, finished=True, status="finished").to_dict()
                    self._write_checkpoint(self.ckpt_dir / f"{kind}.pt", pl)
            self.emit(
                RunFinished(
                    self.ctx.run_id, test_mae=test_mae, best_epoch=self.best_epoch, best_val_mae=self.best_val,
                    seconds=time.time() - t0, n_test=res.n_test, predictions=res.predictions,
                    test_metrics=res.metrics,
                    stopped_early=stopped_early, peak_gpu_mem_mb=self._peak_gpu_mem_mb(),
                )
            )
            self._finished = result
        return result

    def _swa_finish(self) -> dict[str, float]:
        """The SWA weights (train.swa_start) on the validation and test splits, saved as swa.pt;
        their metrics named ``swa_<metric>`` (empty without SWA)."""
        r = self.recipe
        if r is None or not r.swa_ready:
            return {}
        with r.weights(r.swa):
            val_m = self._evaluate("val")
            test_m = self._evaluate("test") if len(self.splits.test) else {}
            val = val_m[self.task.selection]
            if self.dist.writer:
                meta = replace(self._meta("swa", self.epoch, val), test_mae=self.task.test_value(test_m),
                               finished=True, status="finished")
                self._write_weights("swa", cpu_state(self.model.state_dict()), meta, self.epoch, val)
        n = int(r.swa.n_averaged)
        self.say(f"SWA of {n} epochs ({self.p.train.swa_start}..{self.epoch}): val {self.task.selection} {val:.4f}; saved swa.pt")
        return {f"swa_{k}": v for k, v in {**val_m, **test_m}.items()}

    def _peak_gpu_mem_mb(self) -> float | None:
        """Peak memory torch allocated on this run's GPU (None off CUDA)."""
        if not is_cuda(self.device):
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def _refit_atomref(self) -> None:
        """AtomRef refit by least squares on the training labels (the task knows which)."""
        self.task.refit_atomref(self)

    # -- parameters, optimizer, schedule
    def _setup_trainable(self) -> None:
        ft = self.p.finetune
        groups = group_params(self.model)
        for prm in self.model.parameters():
            prm.requires_grad = False
        if ft.mode == "head":
            self.active = ["readout"]
        elif ft.unfreeze_every:
            self.active = ["readout"]
        else:
            self.active = list(GROUPS)
        self.groups = groups
        for g in self.active:
            for prm in groups[g]:
                prm.requires_grad = True

    def _apply_unfreeze(self, epoch: int) -> None:
        ft = self.p.finetune
        if ft.mode != "full" or not ft.unfreeze_every:
            return
        n_open = min(len(GROUPS), 1 + (epoch - 1) // ft.unfreeze_every)
        want = list(reversed(GROUPS))[:n_open]  # readout, interaction, embedding
        if set(want) != set(self.active):
            newly = [g for g in want if g not in self.active]
            self.active = want
            for g in newly:
                for prm in self.groups[g]:
                    prm.requires_grad = True
            self.say(f"epoch {epoch}: unfroze {', '.join(newly)}")

    def _group_lr(self, g: str) -> float:
        ft, lr = self.p.finetune, self.p.optim.lr
        base = lr if g == "readout" or ft.backbone_lr is None else ft.backbone_lr
        return base * float(ft.lr_factors.get(g, 1.0))

    def _build_optimizer(self, epoch: int) -> None:
        o = self.p.optim
        # every group that may ever train gets its param group now (frozen ones get no grads),
        # so the optimizer state survives progressive unfreezing and resume.
        possible = ["readout"] if self.p.finetune.mode == "head" else list(GROUPS)
        param_groups = [
            {"params": self.groups[g], "lr": self._group_lr(g), "name": g} for g in possible if self.groups[g]
        ]
        if o.optimizer == "adam":
            opt = torch.optim.Adam(param_groups, lr=o.lr, weight_decay=o.weight_decay)
        elif o.optimizer == "adamw":
            opt = torch.optim.AdamW(param_groups, lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(param_groups, lr=o.lr, weight_decay=o.weight_decay, momentum=0.9)
        self.optimizer = opt
        self.recipe = Recipe(self.p, self.model, opt, self.precision)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.p.train.epochs))
            if o.scheduler == "cosine" and not self.recipe.owns_schedule  # warm-up / SWA: the recipe sets each step's lr
            else None
        )

    # -- passes
    def _predict_batch_size(self) -> int:
        return max(self.p.train.batch_size, 32)

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        """One pass over the training split: (the task's training metrics, structures seen)."""
        return self.task.train_epoch(self, epoch)

    def _predict(self, part: str, progress=None):
        """The task's predictions for a split, in split order."""
        return self.task.predict(self, part, progress=progress)

    def _evaluate(self, part: str) -> dict[str, float]:
        """The task's metrics on a split (a non-finite one fails the run as diverged)."""
        return self.task.evaluate(self, part)

    # -- bookkeeping
    def _end_epoch(self, epoch: int, train_m: dict[str, float], val_m: dict[str, float], seconds: float,
                   n: int) -> bool:
        """Best/last checkpoints and the epoch's event: ``val_mae`` holds the task's selection
        metric (for a property, the MAE), ``metrics`` every named metric of the epoch."""
        val = val_m[self.task.selection]
        train_mae = self.task.train_value(train_m) if train_m else None
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_epoch = val, epoch
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
        lr = float(self.optimizer.param_groups[-1]["lr"]) if self.optimizer else self.p.optim.lr
        ev = EpochEnd(
            self.ctx.run_id, epoch=epoch, train_mae=train_mae, val_mae=val, lr=lr, seconds=seconds,
            best_val_mae=self.best_val, best_epoch=self.best_epoch, n_structures=n, metrics={**train_m, **val_m},
        )
        self.history.append(ev)
        # epoch_end is written once both checkpoints of the epoch are: an epoch in events.jsonl
        # always has its last.pt, so a resume never trains (and logs) an epoch_end twice
        with deferred_signals():  # Ctrl-C / SIGTERM wait for the epoch's line
            if improved:
                self._save("best", epoch, val)
            self._save("last", epoch, val, epoch_end=ev)
            if epoch in self._recorded_epochs:  # already in events.jsonl from before a kill (resume)
                self._recorded_epochs.discard(epoch)
            else:
                self.emit(ev)
        pat = self.p.train.patience
        return bool(pat) and epoch > 0 and self._bad_epochs >= pat

    def _meta(self, kind: str, epoch: int, val: float) -> CheckpointMeta:
        return CheckpointMeta(
            run_id=self.ctx.run_id,
            kind=kind,
            preset_name=self.p.name,
            preset=self.p.to_dict(),
            parent=self.parent,
            epoch=epoch,
            val_mae=val,
            best_val_mae=self.best_val if math.isfinite(self.best_val) else None,
            test_mae=None,
            data_sha256=self.data_sha,
            data_source=self.p.data.source,
            mode=self.p.finetune.mode,
            versions=package_versions(),
            time=time.time(),
            device=self.device,
            cpu_workers=self.cpu_workers,
            finished=False,
            status="running",
            plan=self.ctx.plan,
            stage=self.ctx.stage,
        )

    def _save(self, kind: str, epoch: int, val: float, epoch_end: EpochEnd | None = None) -> None:
        if not self.dist.writer:  # DDP: only rank 0 writes checkpoints
            return
        # the weights evaluated: the EMA's when train.ema is on (what best.pt, export and a next stage get)
        state = self.recipe.saved_state() if self.recipe is not None else cpu_state(self.model.state_dict())
        extra: dict[str, Any] = {}
        if kind == "last":
            extra["optimizer_state"] = self.optimizer.state_dict() if self.optimizer else None
            extra["scheduler_state"] = self.scheduler.state_dict() if self.scheduler else None
            extra["recipe_state"] = self.recipe.state_dict() if self.recipe is not None else {}
            extra["train_state"] = {
                "best_val": self.best_val,
                "best_epoch": self.best_epoch,
                "bad_epochs": self._bad_epochs,
                "epoch_end": epoch_end.to_dict() if epoch_end is not None else None,  # re-emitted by a resume if lost
            }
            self._last_saved_epoch = epoch
        self._write_weights(kind, state, self._meta(kind, epoch, val), epoch, val, extra)

    def _write_weights(self, kind: str, state: dict[str, Any], meta: CheckpointMeta, epoch: int, val: float,
                       extra: dict[str, Any] | None = None) -> None:
        """``checkpoints/<run>/<kind>.pt`` with these weights and meta (and ``extra`` keys), and its event."""
        payload: dict[str, Any] = {"model_state": state, "model_args": dict(self.model.model_args),
                                   "meta": meta.to_dict(), **(extra or {})}
        path = self.ckpt_dir / f"{kind}.pt"
        self._write_checkpoint(path, payload)
        self.emit(CheckpointSaved(self.ctx.run_id, kind=kind, path=str(path), epoch=epoch, val_mae=val))

    def _write_checkpoint(self, path: Path, payload: dict[str, Any]) -> None:
        """save_checkpoint; a failed write (disk full) ends the run with its one-line reason."""
        try:
            save_checkpoint(path, payload)
        except CheckpointWriteError as exc:
            raise TrainingFailed(str(exc)) from None

    def _kept(self) -> str:
        """What a failed run leaves to use, as it is on disk."""
        if self.best_epoch >= 0 and (self.ckpt_dir / "best.pt").is_file():
            return f"the best checkpoint (epoch {self.best_epoch}) is kept"
        return "no checkpoint was saved"

    def _last_on_disk(self) -> str:
        """What an interrupted run leaves to resume from, as it is on disk."""
        last = self.ckpt_dir / "last.pt"
        if not last.is_file():
            return "no checkpoint was saved (nothing to resume)"
        meta, _ = read_checkpoint_meta(last)
        epoch = meta.epoch if meta is not None else None
        return f"last.pt (epoch {epoch}) saved" if epoch is not None else "last.pt saved"

    def _save_last_on_interrupt(self) -> None:
        """Ctrl-C: last.pt already holds the last completed epoch; if none was saved yet,
        save the starting weights so the run can be resumed or inspected."""
        if self.model is None or self._last_saved_epoch >= 0:
            return
        try:
            self._save("last", 0, self.best_val if math.isfinite(self.best_val) else float("nan"))
        except Exception:  # noqa: BLE001 - interrupt path must not raise
            pass


# ---------------------------------------------------------------- entry points


def write_run_files(paths: Paths, run_id: str, preset: Preset) -> None:
    d = paths.run_log_dir(run_id)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "preset.toml", dump_preset(preset))


def run_training(
    preset: Preset,
    *,
    run_id: str,
    paths: Paths | None = None,
    emit: Callable[[Event], None] | None = None,
    plan: str | None = None,
    stage: int | None = None,
    init_override: str | None = None,
    resume: bool = False,
    on_batch: Callable[[int, int, int], None] | None = None,
    dist: Dist | None = None,
) -> RunResult:
    """Run one preset. Every event is appended to ``logs/<run_id>/events.jsonl`` and,
    if given, passed to ``emit`` (the front end's display). Under DDP (``dist`` from
    ``tui_ft.core.train.distributed.setup``) only rank 0 writes files and events."""
    paths = paths or Paths.default()
    dist = dist or LOCAL
    if not dist.writer:  # DDP: ranks other than 0 write nothing (no lock, no files, no events)
        ctx = RunContext(
            preset, run_id, paths, RankEmit(dist, None), plan=plan, stage=stage, resume=resume,
            init_override=init_override, dist=dist,
        )
        return Trainer(ctx).run()
    lock = RunLock(run_id, paths)  # raises UnsafeName for a run id that is not one safe path component
    try:
        lock.acquire()
    except LockHeld as exc:
        raise RunRefused(f"run {run_id}: {exc}; not started") from None
    try:
        if resume:
            check_resumable(paths, run_id)
        else:
            write_run_files(paths, run_id, preset)
        with EventWriter(paths.run_log_dir(run_id) / "events.jsonl", echo=emit) as writer:
            ctx = RunContext(
                preset, run_id, paths, RankEmit(dist, writer.emit) if dist.active else writer.emit, plan=plan,
                stage=stage, resume=resume, init_override=init_override, on_batch=on_batch, dist=dist,
            )
            return Trainer(ctx).run()
    finally:
        lock.release()


def check_resumable(paths: Paths, run_id: str) -> None:
    """Raise :class:`RunRefused` unless run ``run_id`` can be resumed: its last.pt exists
    and the run has not finished (no run_finished event, last.pt not marked finished)."""
    last = paths.run_ckpt_dir(run_id) / "last.pt"
    if not last.is_file():
        raise RunRefused(f"{last}: no last checkpoint for run {run_id!r}; nothing to resume")
    meta, _ = read_checkpoint_meta(last)
    done = meta is not None and (meta.finished is True or meta.status == "finished")
    if not done:
        events = read_events(paths.run_log_dir(run_id) / "events.jsonl")
        done = any(isinstance(ev, RunFinished) for ev in events)
    if done:
        raise RunRefused(f"run {run_id} has already finished; nothing to resume (start a new run from {run_id}@best)")


def load_run_preset(paths: Paths, run_id: str) -> Preset:
    return load_preset(paths.run_log_dir(run_id) / "preset.toml", regular_only=True)  # a FIFO there never blocks


def split_sha256(ids, splits) -> str:
    """SHA-256 of the ids in each split (train, val, test, in order): two runs with the same
    value trained, selected and were tested on the same structures (``tui-ft compare``)."""
    import hashlib

    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        h.update(name.encode() + b"\0")
        for r in getattr(splits, name):
            h.update(str(ids[int(r)]).encode("utf-8", "replace") + b"\n")
    return h.hexdigest()
