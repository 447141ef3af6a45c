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

import contextlib
import csv
import hashlib
import math
import os
import random
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
import torch.nn.functional as F  # noqa: E402
from chgnet.model import CHGNet  # noqa: E402

from tui_ft.core.atomic import atomic_write, atomic_write_text  # noqa: E402
from tui_ft.core.data import GraphCache, load_matbench, make_splits, resolve_source  # noqa: E402
from tui_ft.core.events import (  # noqa: E402
    CheckpointSaved,
    EpochEnd,
    Event,
    EventWriter,
    Message,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from tui_ft.core.library import (  # noqa: E402
    CheckpointMeta,
    Library,
    load_checkpoint,
    package_versions,
    save_checkpoint,
)
from tui_ft.core.parallel import CpuDataParallel, plan_workers, split_batch  # noqa: E402
from tui_ft.core.paths import Paths  # noqa: E402
from tui_ft.core.presets import Preset, dump_preset, load_preset  # noqa: E402

# chgnet 0.4.2 builds a tensor from requires_grad volumes in BatchedGraph.from_graphs;
# harmless for energy-only training, and it would print on every run.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")

GROUPS = ("embedding", "interaction", "readout")
_GROUP_MODULES = {
    "embedding": (
        "atom_embedding",
        "bond_basis_expansion",
        "bond_embedding",
        "bond_weights_ag",
        "bond_weights_bg",
        "angle_basis_expansion",
        "angle_embedding",
    ),
    "interaction": ("atom_conv_layers", "bond_conv_layers", "angle_layers"),
    "readout": ("readout_norm", "mlp", "composition_model"),
}


class TrainingFailed(Exception):
    """The run cannot go on (divergence, bad data); the message is for the user."""


class Interrupted(Exception):
    pass


@dataclass
class RunResult:
    run_id: str
    status: str  # finished | failed | interrupted
    test_mae: float | None = None
    best_val_mae: float | None = None
    best_epoch: int | None = None
    history: list[EpochEnd] = field(default_factory=list)
    message: str = ""


# ---------------------------------------------------------------- small helpers


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingFailed("train.device = 'cuda' but no CUDA device is available")
    return name


def configure_cpu(device: str) -> None:
    """Process-wide CPU settings for a run.

    ``TUI_FT_THREADS=N`` sets torch's intra-op threads (default: torch's choice).
    Denormal floats are flushed to zero: CHGNet's backward pass produces subnormal
    values, whose arithmetic is slow on x86 CPUs; flushing them speeds up full-mode
    training and leaves the predictions unchanged (BENCHMARKS.md, section 1,
    speed-up 2). The setting is
    per thread: torch's worker threads inherit it when they start after this call,
    which in ``tui-ft`` runs and the dashboard's training processes they do (no
    parallel work happens before it); threads started earlier keep theirs. ``run()``
    turns it off again on the calling thread (torch's default) when the run ends.
    """
    n = os.environ.get("TUI_FT_THREADS", "").strip()
    if n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))
    if device == "cpu":
        torch.set_flush_denormal(True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def _quiet_stdout():
    """chgnet prints banners on stdout; stdout is for data, so send them to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def load_pretrained(version: str):
    with _quiet_stdout():
        return CHGNet.load(model_name=version, use_device="cpu", verbose=False)


def model_from_payload(payload: dict[str, Any]):
    with _quiet_stdout():
        model = CHGNet(**payload["model_args"])
    model.load_state_dict(payload["model_state"])
    return model


def backbone_hash(model) -> str:
    """Hash of every weight outside the readout: the key of the frozen-feature cache."""
    h = hashlib.sha256()
    readout = set(_GROUP_MODULES["readout"])
    for name, t in sorted(model.state_dict().items()):
        if name.split(".")[0] in readout:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def group_params(model) -> dict[str, list]:
    out: dict[str, list] = {g: [] for g in GROUPS}
    for g, names in _GROUP_MODULES.items():
        for n in names:
            mod = getattr(model, n, None)
            if mod is None or not hasattr(mod, "parameters"):
                continue
            out[g].extend(mod.parameters())
    return out


def _loss_fn(name: str):
    return {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}[name]


# ---------------------------------------------------------------- head on cached features


class FeatureSet:
    """Frozen backbone output for a list of structures, ready for the readout head.

    ``feats[i]`` is the per-atom feature matrix that enters ``readout_norm``;
    ``comp[i]`` the composition vector AtomRef reads.
    """

    def __init__(self, feats: list, comp, n_atoms):
        self.feats = feats
        self.comp = comp
        self.n_atoms = n_atoms

    def batch(self, idx: Sequence[int], device: str):
        xs = [self.feats[i] for i in idx]
        owners = torch.repeat_interleave(torch.arange(len(xs)), torch.tensor([x.shape[0] for x in xs]))
        return (
            torch.cat(xs).to(device),
            owners.to(device),
            self.n_atoms[list(idx)].to(device),
            self.comp[list(idx)].to(device),
        )


def supports_feature_head(model) -> bool:
    return bool(getattr(model, "mlp_first", False)) and model.is_intensive


def head_forward(model, x, owners, n_atoms, comp, *, with_comp: bool = True):
    """The readout of CHGNet (mlp_first, intensive) applied to cached atom features."""
    if model.readout_norm is not None:
        x = model.readout_norm(x)
    site = model.mlp(x).view(-1)
    e = torch.zeros(n_atoms.shape[0], dtype=site.dtype, device=site.device).index_add(0, owners, site)
    e = e / n_atoms
    if with_comp and model.composition_model is not None:
        e = e + model.composition_model._get_energy(comp)
    return e


def composition_matrix(graphs: Sequence[Any], n_elements: int = 94):
    rows = []
    for g in graphs:
        c = torch.bincount(g.atomic_number.long() - 1, minlength=n_elements).float()
        rows.append(c / g.atomic_number.shape[0])
    return torch.stack(rows)


def extract_features(model, graphs: Sequence[Any], batch_size: int, device: str, workers: int = 1,
                     threads: int = 1) -> list:
    """Run the frozen backbone once; capture the per-atom input of the readout.

    With ``workers > 1`` on the CPU the structures are split into groups of similar
    cost that run at the same time on replicas of the model (tui_ft.core.parallel);
    a structure's features do not depend on the other structures of its batch.
    """
    if workers > 1 and device == "cpu" and len(graphs) > 1:
        dp = CpuDataParallel(model, workers, threads)
        try:
            groups = split_batch(graphs, workers)
            parts = dp.map_parts(
                lambda rep, idx: _extract_serial(rep, [graphs[i] for i in idx], batch_size, device), groups
            )
        finally:
            dp.close()
        out: list = [None] * len(graphs)
        for idx, feats in zip(groups, parts):
            for i, f in zip(idx, feats):
                out[i] = f
        return out
    return _extract_serial(model, graphs, batch_size, device)


def _extract_serial(model, graphs: Sequence[Any], batch_size: int, device: str) -> list:
    captured: list = []
    target = model.readout_norm if model.readout_norm is not None else model.mlp

    def hook(_mod, inputs):
        captured.append(inputs[0].detach().to("cpu"))

    handle = target.register_forward_pre_hook(hook)
    out: list = []
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, len(graphs), batch_size):
                chunk = [g.to(device) for g in graphs[i : i + batch_size]]
                captured.clear()
                model(chunk, task="e")
                sizes = [int(g.atomic_number.shape[0]) for g in chunk]
                out.extend(torch.split(captured[0], sizes))
    finally:
        handle.remove()
    return [t.clone() for t in out]


class FeatureCache:
    """Frozen-backbone features on disk, keyed by backbone weights, data file and row."""

    def __init__(self, paths: Paths, bb_hash: str, data_sha: str):
        self.path = paths.cache / "features" / f"{bb_hash[:16]}-{data_sha[:16]}.pt"
        self.hits = 0

    def get(self, model, rows: Sequence[int], graphs: dict[int, Any], batch_size: int, device: str,
            workers: int = 1, threads: int = 1) -> dict[int, Any]:
        store: dict[str, Any] = {}
        if self.path.is_file():
            try:
                store = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - corrupt cache is rebuilt
                store = {}
        missing = [r for r in rows if str(r) not in store]
        self.hits = len(rows) - len(missing)
        if missing:
            feats = extract_features(model, [graphs[r] for r in missing], max(batch_size, 32), device, workers, threads)
            for r, f in zip(missing, feats):
                store[str(r)] = f
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda fh: torch.save(store, fh))
        return {r: store[str(r)] for r in rows}


# ---------------------------------------------------------------- one forward object per mode


class HeadForward:
    """Head mode on cached frozen features: the readout head (and AtomRef) on ``fsets``.

    ``fsets[part]`` holds the features of the split ``part`` in split order, so a
    batch is addressed by positions in the split.
    """

    def __init__(self, model, fsets: dict[str, FeatureSet], device: str):
        self.model, self.fsets, self.device = model, fsets, device

    def train_step(self, positions: list[int], rows: list[int], target, loss_fn, optimizer):
        """Forward and backward of one training batch; returns ``(pred, loss)``."""
        pred = head_forward(self.model, *self.fsets["train"].batch(positions, self.device))
        loss = loss_fn(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return pred, loss

    def predict(self, part: str, rows: Sequence[int], batch_size: int):
        """Predictions (on the CPU) for the split ``part``, in split order; call under no_grad."""
        fs = self.fsets[part]
        return [
            head_forward(self.model, *fs.batch(list(range(i, min(i + batch_size, len(rows)))), self.device)).cpu()
            for i in range(0, len(rows), batch_size)
        ]

    def energy_without_atomref(self, rows: Sequence[int], batch_size: int):
        """Every training structure's energy less its AtomRef term (the refit's residual base)."""
        x, o, n, c = self.fsets["train"].batch(range(len(rows)), self.device)
        return head_forward(self.model, x, o, n, c, with_comp=False).cpu()


class FullForward:
    """The whole model on crystal graphs; with ``dp`` each batch is split across
    CPU worker threads (tui_ft.core.parallel), which also does the backward pass."""

    def __init__(self, model, graphs: dict[int, Any], device: str, dp: CpuDataParallel | None = None):
        self.model, self.graphs, self.device, self.dp = model, graphs, device, dp

    def train_step(self, positions: list[int], rows: list[int], target, loss_fn, optimizer):
        """Forward and backward of one training batch; returns ``(pred, loss)``."""
        if self.dp is not None:  # the batch's gradient ends on the master model
            return self.dp.train_step([self.graphs[r] for r in rows], target, loss_fn)
        pred = self.model([self.graphs[r].to(self.device) for r in rows], task="e")["e"]
        loss = loss_fn(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return pred, loss

    def predict(self, part: str, rows: Sequence[int], batch_size: int):
        """Predictions (on the CPU) for ``rows``, in order; call under no_grad."""
        out = []
        for i in range(0, len(rows), batch_size):
            chunk = [self.graphs[int(r)] for r in rows[i : i + batch_size]]
            if self.dp is not None:
                out.append(self.dp.predict(chunk))
            else:
                out.append(self.model([g.to(self.device) for g in chunk], task="e")["e"].detach().cpu())
        return out

    def energy_without_atomref(self, rows: Sequence[int], batch_size: int):
        """Every training structure's energy less its AtomRef term (the refit's residual base)."""
        self.model.eval()
        total = torch.cat(self.predict("train", rows, batch_size))
        comp = composition_matrix([self.graphs[int(r)] for r in rows]).to(self.device)
        return total - self.model.composition_model._get_energy(comp).cpu()


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
        self.data_sha = ""
        self._last_saved_epoch = -1
        self.forward: HeadForward | FullForward | None = None
        self.dp: CpuDataParallel | None = None  # full mode on the CPU: batches split across threads
        self.cpu_workers = 1

    # -- events
    def emit(self, ev: Event) -> None:
        self.ctx.emit(ev)

    def say(self, text: str, level: str = "info") -> None:
        self.emit(Message(self.ctx.run_id, text=text, level=level, pid=os.getpid()))

    # -- entry point
    def run(self) -> RunResult:
        rid = self.ctx.run_id
        t0 = time.time()
        try:
            return self._run(t0)
        except (KeyboardInterrupt, Interrupted):
            self._save_last_on_interrupt()
            self.emit(RunInterrupted(rid, epoch=self.epoch, message="interrupted by the user; last.pt saved"))
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

    def _best_or_none(self) -> float | None:
        return self.best_val if math.isfinite(self.best_val) else None

    def _run(self, t0: float) -> RunResult:
        """The run in its steps; each step leaves its results on ``self``."""
        self._setup_process()
        self._load_data()
        self._remove_stale_temp_files()
        resume_payload = self._load_model()
        failed = self._build_graphs()
        self._announce(failed)
        self.forward = self._make_forward()
        self._setup_trainable()
        start_epoch = self._resume(resume_payload) if resume_payload is not None else self._start()
        stopped_early = self._train_epochs(start_epoch)
        return self._finish(t0, stopped_early)

    # -- the steps of a run, in order
    def _setup_process(self) -> None:
        seed_everything(self.p.train.seed)
        self.device = pick_device(self.p.train.device)
        configure_cpu(self.device)

    def _make_splits(self, exclude: Sequence[int] = ()):
        d = self.p.data
        return make_splits(
            len(self.ds), fold=d.fold, fraction=d.fraction, val_fraction=d.val_fraction,
            seed=d.seed, test_limit=d.test_limit, **({"exclude": list(exclude)} if exclude else {}),
        )

    def _load_data(self) -> None:
        """The data file and its splits (before any structure is left out)."""
        path = resolve_source(self.p.data.source, self.paths)
        self.say(f"reading {path}")
        self.ds = load_matbench(path, self.p.data.target)
        self.data_sha = self.ds.sha256
        self.splits = self._make_splits()

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
            model = model_from_payload(resume_payload)
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
        graphs, failed = cache.get(self.rows)
        self.say(f"graphs: {cache.hits} from cache, {cache.built} built")
        for r, why in sorted(failed.items()):
            self.say(f"structure {ds.ids[r]} (row {r}) left out of every split: {why}", "warning")
        if failed:
            self.splits = splits = self._make_splits(exclude=failed)
        if len(splits.train) == 0 or len(splits.val) == 0:
            raise TrainingFailed("no training or validation structures left after graph conversion")
        self.graphs = graphs
        self.y = torch.tensor(ds.targets, dtype=torch.float32)
        return failed

    def _announce(self, failed: dict[int, str]) -> None:
        p, s = self.p, self.splits
        self.emit(
            RunStarted(
                self.ctx.run_id, preset_name=p.name, preset=p.to_dict(), device=self.device, n_train=len(s.train),
                n_val=len(s.val), n_test=len(s.test), parent=self.parent, pid=os.getpid(),
                plan=self.ctx.plan, stage=self.ctx.stage, epochs=p.train.epochs,
                skipped=[self.ds.ids[r] for r in sorted(failed)],
            )
        )

    def _make_forward(self) -> HeadForward | FullForward:
        """Head mode on cached frozen features where the model allows it, else the whole
        model on graphs, with each batch split across CPU worker threads (tui_ft.core.parallel)."""
        p, device = self.p, self.device
        try:
            workers, threads = plan_workers(p.train.batch_size, device)
        except ValueError as exc:
            raise TrainingFailed(str(exc)) from None
        if p.finetune.mode == "head" and supports_feature_head(self.model):
            return HeadForward(self.model, self._feature_sets(), device)
        if workers > 1:
            self.dp = CpuDataParallel(self.model, workers, threads, flush_denormal=device == "cpu")
            self.cpu_workers = workers
            self.say(f"CPU: each batch split across {workers} worker threads ({threads} torch thread(s) each)")
        return FullForward(self.model, self.graphs, device, self.dp)

    def _feature_sets(self) -> dict[str, FeatureSet]:
        """The frozen backbone's features of every split, from the cache or computed now."""
        p, device, graphs, splits = self.p, self.device, self.graphs, self.splits
        fc = FeatureCache(self.paths, backbone_hash(self.model), self.ds.sha256)
        t = time.time()
        fw, ft = plan_workers(max(p.train.batch_size, 32), device)  # same env, already validated
        wanted = [int(r) for r in self.rows if int(r) in graphs]
        feats = fc.get(self.model, wanted, graphs, p.train.batch_size, device, fw, ft)
        computed = f"computed the rest in {time.time() - t:.1f}s"
        if fw > 1 and fc.hits < len(wanted):
            computed += f" on {fw} worker threads"
        self.say(f"frozen backbone features: {fc.hits} from cache, {computed}")
        fsets = {}
        for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
            gl = [graphs[int(r)] for r in part]
            fsets[name] = FeatureSet(
                [feats[int(r)] for r in part],
                composition_matrix(gl),
                torch.tensor([float(g.atomic_number.shape[0]) for g in gl]),
            )
        return fsets

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
        self._bad_epochs = int(ts.get("bad_epochs", 0))
        self.say(f"resuming after epoch {self.epoch} (best val MAE {self.best_val:.4f} at epoch {self.best_epoch})")
        return self.epoch + 1

    def _start(self) -> int:
        """AtomRef refit, optimizer, and epoch 0 (validation before any update); returns 1."""
        if self.p.finetune.refit_atomref:
            self._refit_atomref()
        self._build_optimizer(0)
        self._bad_epochs = 0
        t = time.time()
        val0 = self._evaluate("val")
        self._end_epoch(0, None, val0, time.time() - t, 0)
        return 1

    def _train_epochs(self, start_epoch: int) -> bool:
        """Epochs ``start_epoch..train.epochs``; returns whether early stopping ended them."""
        p = self.p
        for epoch in range(start_epoch, p.train.epochs + 1):
            self.epoch = epoch
            self._apply_unfreeze(epoch)
            t = time.time()
            train_mae, n = self._train_epoch(epoch)
            val = self._evaluate("val")
            if self.scheduler is not None:
                self.scheduler.step()
            if self._end_epoch(epoch, train_mae, val, time.time() - t, n):
                self.say(f"early stopping: no improvement for {p.train.patience} epochs")
                break
        return self.epoch < p.train.epochs

    def _finish(self, t0: float, stopped_early: bool) -> RunResult:
        """Test MAE of the best weights, test_predictions.csv, both checkpoints marked finished."""
        best_payload = load_checkpoint(self.ckpt_dir / "best.pt")
        self.model.load_state_dict(best_payload["model_state"])
        preds = self._predict("test")
        test_idx = self.splits.test
        test_mae = float((preds - self.y[test_idx]).abs().mean()) if len(test_idx) else None
        pred_path = self.log_dir / "test_predictions.csv"
        with open(pred_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "true", "pred"])
            for r, pv in zip(test_idx.tolist(), preds.tolist()):
                w.writerow([self.ds.ids[r], f"{float(self.ds.targets[r]):.6f}", f"{pv:.6f}"])
        for kind in ("best", "last"):
            f = self.ckpt_dir / f"{kind}.pt"
            if f.is_file():
                pl = best_payload if kind == "best" else load_checkpoint(f)
                meta = CheckpointMeta.from_dict(pl["meta"]) or CheckpointMeta()
                pl["meta"] = replace(meta, test_mae=test_mae, finished=True, status="finished").to_dict()
                save_checkpoint(f, pl)
        self.emit(
            RunFinished(
                self.ctx.run_id, test_mae=test_mae, best_epoch=self.best_epoch, best_val_mae=self.best_val,
                seconds=time.time() - t0, n_test=len(test_idx), predictions=str(pred_path),
                stopped_early=stopped_early,
            )
        )
        return RunResult(self.ctx.run_id, "finished", test_mae, self.best_val, self.best_epoch, self.history)

    # -- AtomRef
    def _refit_atomref(self) -> None:
        """Least-squares fit of the per-element offsets to (target - rest of the model)."""
        comp_model = self.model.composition_model
        if comp_model is None:
            self.say("model has no AtomRef composition model; refit skipped", "warning")
            return
        tr = self.splits.train
        with torch.no_grad():
            rest = self.forward.energy_without_atomref(tr, self._predict_batch_size())
        resid = (self.y[tr] - rest).tolist()
        graphs = [self.graphs[int(r)] for r in tr]
        comp_model.fit(graphs, resid)
        comp_model.to(self.device)
        self.say(f"AtomRef refit by least squares on {len(tr)} training targets")

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
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.p.train.epochs))
            if o.scheduler == "cosine"
            else None
        )

    # -- passes
    def _predict_batch_size(self) -> int:
        return max(self.p.train.batch_size, 32)

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        p = self.p
        loss_fn = _loss_fn(p.train.loss)
        tr = self.splits.train
        gen = torch.Generator().manual_seed(p.train.seed * 100003 + epoch)
        order = torch.randperm(len(tr), generator=gen).tolist()
        bs = p.train.batch_size
        self.model.train()
        abs_err, n = 0.0, 0
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            target = self.y[tr[idx]].to(self.device)
            pred, loss = self.forward.train_step(idx, [int(tr[j]) for j in idx], target, loss_fn, self.optimizer)
            if not torch.isfinite(loss):  # checked before the step: the weights stay those of the last good batch
                raise TrainingFailed(
                    f"loss became {loss.item()} at epoch {epoch}, batch {i // bs + 1}: training diverged "
                    f"(try a smaller optim.lr); the best checkpoint (epoch {self.best_epoch}) is kept"
                )
            self.optimizer.step()
            abs_err += float((pred.detach() - target).abs().sum())
            n += len(idx)
            if self.ctx.on_batch is not None:
                self.ctx.on_batch(epoch, n, len(order))
        return abs_err / max(n, 1), n

    def _predict(self, part: str):
        """Predictions for a split, in split order, none dropped."""
        rows = getattr(self.splits, part)
        self.model.eval()
        with torch.no_grad():
            out = self.forward.predict(part, rows, self._predict_batch_size())
        return torch.cat(out) if out else torch.zeros(0)

    def _evaluate(self, part: str) -> float:
        preds = self._predict(part)
        mae = float((preds - self.y[getattr(self.splits, part)]).abs().mean())
        if not math.isfinite(mae):
            raise TrainingFailed(
                f"{part} MAE became {mae} at epoch {self.epoch}: training diverged; "
                f"the best checkpoint (epoch {self.best_epoch}) is kept"
            )
        return mae

    # -- bookkeeping
    def _end_epoch(self, epoch: int, train_mae: float | None, val: float, seconds: float, n: int) -> bool:
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_epoch = val, epoch
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
        lr = float(self.optimizer.param_groups[-1]["lr"]) if self.optimizer else self.p.optim.lr
        ev = EpochEnd(
            self.ctx.run_id, epoch=epoch, train_mae=train_mae, val_mae=val, lr=lr, seconds=seconds,
            best_val_mae=self.best_val, best_epoch=self.best_epoch, n_structures=n,
        )
        self.history.append(ev)
        self.emit(ev)
        if improved:
            self._save("best", epoch, val)
        self._save("last", epoch, val)
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

    def _save(self, kind: str, epoch: int, val: float) -> None:
        payload: dict[str, Any] = {
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_args": dict(self.model.model_args),
            "meta": self._meta(kind, epoch, val).to_dict(),
        }
        if kind == "last":
            payload["optimizer_state"] = self.optimizer.state_dict() if self.optimizer else None
            payload["scheduler_state"] = self.scheduler.state_dict() if self.scheduler else None
            payload["train_state"] = {
                "best_val": self.best_val,
                "best_epoch": self.best_epoch,
                "bad_epochs": self._bad_epochs,
            }
            self._last_saved_epoch = epoch
        path = self.ckpt_dir / f"{kind}.pt"
        save_checkpoint(path, payload)
        self.emit(CheckpointSaved(self.ctx.run_id, kind=kind, path=str(path), epoch=epoch, val_mae=val))

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
) -> RunResult:
    """Run one preset. Every event is appended to ``logs/<run_id>/events.jsonl`` and,
    if given, passed to ``emit`` (the front end's display)."""
    paths = paths or Paths.default()
    if not resume:
        write_run_files(paths, run_id, preset)
    with EventWriter(paths.run_log_dir(run_id) / "events.jsonl", echo=emit) as writer:
        ctx = RunContext(
            preset, run_id, paths, writer.emit, plan=plan, stage=stage, resume=resume,
            init_override=init_override, on_batch=on_batch,
        )
        return Trainer(ctx).run()


def load_run_preset(paths: Paths, run_id: str) -> Preset:
    return load_preset(paths.run_log_dir(run_id) / "preset.toml")


def evaluate_checkpoint(ckpt_path: Path | str, data_path: Path | str, target: str = "e_form", *, batch_size: int = 32, device: str = "auto", paths: Paths | None = None, progress=None) -> tuple[float, int, list[str]]:
    """MAE of a checkpoint on every row of a Matbench-layout file: (mae, n, skipped ids)."""
    paths = paths or Paths.default()
    payload = load_checkpoint(ckpt_path)
    dev = pick_device(device)
    model = model_from_payload(payload).to(dev)
    ds = load_matbench(data_path, target)
    graphs, failed = GraphCache(ds, model.graph_converter, paths).get(range(len(ds)), progress=progress)
    rows = [r for r in range(len(ds)) if r in graphs]
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = [graphs[r].to(dev) for r in rows[i : i + batch_size]]
            preds.append(model(batch, task="e")["e"].cpu())
    p = torch.cat(preds) if preds else torch.zeros(0)
    y = torch.tensor(ds.targets[rows], dtype=torch.float32)
    return float((p - y).abs().mean()), len(rows), [ds.ids[r] for r in sorted(failed)]
