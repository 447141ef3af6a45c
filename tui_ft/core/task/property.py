"""The property task: one scalar per structure (a formation energy, a band gap, ...).

CHGNet's energy head predicts the target per atom (``energy_without_atomref`` plus
the AtomRef offsets); the loss is ``train.loss`` (mae / mse / huber) between that and
the target; each epoch's metrics are ``train_mae`` and ``val_mae`` in the target's
unit, "best" is the lowest ``val_mae``, and the test predictions are
``logs/<run>/test_predictions.csv`` with ``id,true,pred``. Head mode trains the
readout on cached frozen-backbone features (:class:`HeadForward`), full mode the
whole model on graphs (:class:`FullForward`).
"""

from __future__ import annotations

import csv
import math
import time

import torch

from tui_ft.core.data.dataset import preset_source
from tui_ft.core.data.sources import load_training_data
from tui_ft.core.data.sources import summary as source_summary
from tui_ft.core.task.base import Task, TestResult
from tui_ft.core.train.errors import TrainingFailed
from tui_ft.core.train.forward import (
    FeatureCache,
    FeatureSet,
    FullForward,
    HeadForward,
    _loss_fn,
    atomic_numbers,
    composition_rows,
    supports_feature_head,
)
from tui_ft.core.train.parallel import CpuDataParallel, plan_workers
from tui_ft.core.train.precision import to_device
from tui_ft.core.train.setup import _Numbers, backbone_hash


class PropertyTask(Task):
    """A scalar target per structure (see the module docstring)."""

    name = "property"
    selection = "val_mae"

    def __init__(self) -> None:
        self.y: torch.Tensor | None = None  # every row's target, in the dataset's row order

    def labels(self, t) -> None:
        """The targets of every row, once the graphs are built."""
        self.y = torch.tensor(t.ds.targets, dtype=torch.float32)

    def load_data(self, t) -> None:
        """The data (any format of tui_ft.core.data.sources) and its splits; the rows the source
        could not use are reported once, by id, and left out of every split."""
        d = t.p.data
        path = preset_source(d.source, t.paths)
        test_path = preset_source(d.test_source, t.paths) if d.test_source else None
        t.say(f"reading {path}" + (f" (test rows from {test_path})" if test_path else ""))
        fmt = None if d.format == "auto" else d.format
        t.ds, t.n_held_out = load_training_data(
            path, d.target, format=fmt, per_atom=d.per_atom, test_path=test_path
        )
        t.data_sha = t.ds.sha256
        report = source_summary(t.ds)
        if report:
            t.say(report, "warning")
            t.source_skipped = [t.ds.ids[r] for r in sorted(t.ds.bad_rows)]
        t.splits = t._make_splits()

    def make_forward(self, t) -> HeadForward | FullForward:
        """Head mode on cached frozen features where the model allows it, else the whole
        model on graphs, with each batch split across CPU worker threads (tui_ft.core.train.parallel)."""
        p, device = t.p, t.device
        try:
            workers, threads = plan_workers(p.train.batch_size, device)
        except ValueError as exc:
            raise TrainingFailed(str(exc)) from None
        if t.dist.active:
            t.say(t.dist.describe())
        if p.finetune.mode == "head" and supports_feature_head(t.model):
            fwd = HeadForward(t.model, t.dist.rank0_first(lambda: self._feature_sets(t)), device)
            fwd.precision = t.precision
            return fwd
        if t.dist.active or t.precision.mixed:
            workers = 1  # one thread per DDP process; autocast does not reach CpuDataParallel's threads
        if workers > 1:
            t.dp = CpuDataParallel(t.model, workers, threads, flush_denormal=device == "cpu")
            t.cpu_workers = workers
            t.say(f"CPU: each batch split across {workers} worker threads ({threads} torch thread(s) each)")
        fwd = FullForward(t.model, t.graphs, device, t.dp)
        fwd.precision = t.precision
        return fwd

    def _feature_sets(self, t) -> dict[str, FeatureSet]:
        """The frozen backbone's features of every split, from the cache or computed now."""
        p, device, graphs, splits = t.p, t.device, t.graphs, t.splits
        fc = FeatureCache(t.paths, backbone_hash(t.model), t.ds.sha256)
        t0 = time.time()
        fw, ft = plan_workers(max(p.train.batch_size, 32), device)  # same env, already validated
        if t.dist.active or t.precision.mixed:
            fw, ft = 1, ft
        wanted = [int(r) for r in t.rows if int(r) in graphs]
        feats = fc.get(t.model, wanted, graphs, p.train.batch_size, device, fw, ft, progress=t.progress("features"))
        computed = f"computed the rest in {time.time() - t0:.1f}s"
        if fw > 1 and fc.hits < len(wanted):
            computed += f" on {fw} worker threads"
        t.say(f"frozen backbone features: {fc.hits} from cache, {computed}")
        fsets = {}
        for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
            fsets[name] = FeatureSet(
                [feats[int(r)] for r in part],
                composition_rows(graphs, part),
                torch.tensor([float(atomic_numbers(graphs, int(r)).shape[0]) for r in part]),
            )
        return fsets

    def refit_atomref(self, t) -> None:
        """Least-squares fit of the per-element offsets to (target - rest of the model)."""
        comp_model = t.model.composition_model
        if comp_model is None:
            t.say("model has no AtomRef composition model; refit skipped", "warning")
            return
        tr = t.splits.train
        with torch.no_grad():
            rest = t.forward.energy_without_atomref(tr, t._predict_batch_size())
        resid = (self.y[tr] - rest).tolist()
        # AtomRef.fit reads each item's atomic_number: read them from the packed store, one at a time
        numbers = (_Numbers(atomic_numbers(t.graphs, int(r))) for r in tr)
        comp_model.fit(numbers, resid)
        comp_model.to(t.device)
        t.say(f"AtomRef refit by least squares on {len(tr)} training targets")

    def train_epoch(self, t, epoch: int) -> tuple[dict[str, float], int]:
        """One pass in a seeded order; the training MAE is that of the predictions made during it."""
        p = t.p
        loss_fn = _loss_fn(p.train.loss)
        tr = t.splits.train
        gen = torch.Generator().manual_seed(p.train.seed * 100003 + epoch)
        order = torch.randperm(len(tr), generator=gen).tolist()
        bs = p.train.batch_size
        t.model.train()
        abs_err, n = 0.0, 0
        dist = t.dist
        steps = -(-len(order) // bs)
        for i in range(0, len(order), bs):
            t.recipe.step_lr(epoch, i // bs, steps)  # warm-up / SWA lr of this step (when the recipe sets it)
            idx = dist.shard(order[i : i + bs])  # DDP: this rank's share of the global batch
            target = to_device(self.y[tr[idx]], t.device)
            if idx:
                step_loss = dist.batch_loss(loss_fn, len(order[i : i + bs]))
                pred, loss = t.forward.train_step(idx, [int(tr[j]) for j in idx], target, step_loss, t.optimizer)
            else:  # DDP: a last global batch smaller than the world leaves this rank nothing
                t.optimizer.zero_grad(set_to_none=True)
                pred, loss = target, torch.zeros((), device=t.device)
            loss = dist.reduce_grads([q for g in t.groups.values() for q in g], loss)  # DDP: summed over ranks
            if not torch.isfinite(loss):  # checked before the step: the weights stay those of the last good batch
                raise TrainingFailed(
                    f"loss became {loss.item()} at epoch {epoch}, batch {i // bs + 1}: training diverged "
                    f"(try a smaller optim.lr); {t._kept()}"
                )
            t.recipe.step()  # clipping, the optimizer step, the EMA
            t.cpu.tick()  # CPU threads for the load on the cores
            abs_err += float((pred.detach() - target).abs().sum())
            n += len(idx)
            if t.ctx.on_batch is not None:
                t.ctx.on_batch(epoch, n * dist.world_size, len(order))
        if dist.active:
            abs_err, n = dist.sum_floats(abs_err, n)
            n = int(n)
        return {"train_mae": abs_err / max(n, 1)}, n

    def predict(self, t, part: str, progress=None):
        """Predictions for a split, in split order, none dropped; ``progress(done, total)`` per batch."""
        rows = getattr(t.splits, part)
        t.model.eval()
        if t.dist.active:  # DDP: each rank predicts its positions; gathered in split order on every rank
            pos = t.dist.positions(len(rows))
            with torch.no_grad():
                out = t.forward.predict(part, rows, t._predict_batch_size(), positions=pos)
            mine = torch.cat(out) if out else torch.zeros(0)
            return t.dist.gather_predictions(pos, mine, len(rows))
        with torch.no_grad():
            if progress is not None:
                progress(0, len(rows))
            out = t.forward.predict(part, rows, t._predict_batch_size(), progress=progress)
        return torch.cat(out) if out else torch.zeros(0)

    def evaluate(self, t, part: str) -> dict[str, float]:
        preds = t._predict(part)
        mae = float((preds - self.y[getattr(t.splits, part)]).abs().mean())
        if not math.isfinite(mae):
            raise TrainingFailed(
                f"{part} MAE became {mae} at epoch {t.epoch}: training diverged; {t._kept()}"
            )
        return {f"{part}_mae": mae}


    def test(self, t) -> TestResult:
        """The best weights on the test split: their MAE, and the predictions written by rank 0."""
        preds = t._predict("test", progress=t.progress("predict"))
        test_idx = t.splits.test
        test_mae = float((preds - self.y[test_idx]).abs().mean()) if len(test_idx) else None
        if not t.dist.writer:  # DDP: rank 0 writes the predictions
            return TestResult(test_mae, {"test_mae": test_mae}, None, len(test_idx))
        pred_path = t.log_dir / "test_predictions.csv"
        with open(pred_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "true", "pred"])
            for r, pv in zip(test_idx.tolist(), preds.tolist()):
                w.writerow([t.ds.ids[r], f"{float(t.ds.targets[r]):.6f}", f"{pv:.6f}"])
        return TestResult(test_mae, {"test_mae": test_mae}, str(pred_path), len(test_idx))
