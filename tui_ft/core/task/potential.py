"""The potential task: CHGNet fine-tuned on energies, forces, stresses and magnetic moments.

Data: frames read by :mod:`tui_ft.core.data.frames` (extxyz / anything ASE reads, VASP,
chgnet's MPtrj JSON, mlearn JSON, an ASE db), held in the engine's ``Dataset`` shape (ids,
structures, ``targets`` = energy per atom) so the graph cache and the splits work as for
properties; the other labels are kept here per row.

Model and loss: the whole CHGNet runs on each batch with ``task`` = the letters of the
weighted labels (``e``, ``f``, ``s``, ``m``; forces and stresses are the autograd derivatives
of CHGNet's energy, both from one pass: ``train.forward.potential_forward``), and the loss is ``sum_k w_k * L(pred_k, label_k)`` over energy (eV/atom),
force components (eV/Å), stress components (GPa, ASE sign) and magmoms (μB, |m| as chgnet
trains them), with ``L`` = ``task.loss`` (mse / huber with ``task.huber_delta`` / l1), as
chgnet's ``Trainer`` forms it. Head mode freezes the backbone but still runs it on every
batch: the cached-feature shortcut of properties cannot give forces.

Metrics each epoch (train and val): ``*_loss`` and, for each weighted label,
``*_energy_mae`` (meV/atom), ``*_force_mae`` (meV/Å, per component), ``*_stress_mae``
(GPa, per component), ``*_magmom_mae`` (μB). "Best" is the lowest ``task.selection``
(default ``val_loss``). Test predictions: ``test_predictions.csv`` (one row per frame:
energies per atom in eV/atom, the frame's force and stress MAE) and ``test_forces.csv``
(one row per atom: DFT and predicted force components, eV/Å).
"""

from __future__ import annotations

import csv
import math
import resource
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tui_ft.core.common.metrics import METRICS
from tui_ft.core.data.dataset import DataError, Dataset, preset_source
from tui_ft.core.data.frames import FrameError, FrameSet, check_frames, load_frames
from tui_ft.core.data.sources import make_source_splits
from tui_ft.core.task.base import Task, TestResult
from tui_ft.core.train.errors import TrainingFailed
from tui_ft.core.train.forward import potential_forward
from tui_ft.core.train.precision import graph_to_device
from tui_ft.core.train.setup import _Numbers

TARGETS = ("energy", "force", "stress", "magmom")
FRAME_LABEL = {"energy": "energy", "force": "forces", "stress": "stress", "magmom": "magmom"}
LETTER = {"energy": "e", "force": "f", "stress": "s", "magmom": "m"}
DEFAULT_WEIGHTS = {"energy": 1.0, "force": 1.0, "stress": 0.1, "magmom": 0.1}  # chgnet's Trainer
SCALE = {"energy": 1000.0, "force": 1000.0, "stress": 1.0, "magmom": 1.0}  # eV -> meV for the shown MAEs


def reader_options(cfg) -> dict[str, Any]:
    """The frame reader's options of a ``[task]`` table (only those set)."""
    opts: dict[str, Any] = {}
    for key in ("energy_key", "forces_key", "stress_key", "magmom_key"):
        if getattr(cfg, key):
            opts[key] = getattr(cfg, key)
    return opts


def read_frames(path, cfg, *, like: FrameSet | None = None) -> FrameSet:
    """The frames of one source, with the ``[task]`` reader options; raises DataError naming the file.
    ``like``: the training frames, whose reader's own choices (mlearn's shear order, told from the
    training file when the preset leaves it unset) a test file of the same format is read with."""
    fmt = None if cfg.format == "auto" else cfg.format
    opts = reader_options(cfg)
    if not Path(path).is_dir():
        from tui_ft.core.data.sources.common import file_problem

        why = file_problem(path)
        if why and why != "no such file":  # a FIFO would hang the reader, /dev/zero never ends
            raise DataError(f"{path}: {why}")
    try:
        from tui_ft.core.data.frames import detect_format

        kind = fmt or detect_format(path)
        if kind in ("ase", "asedb"):
            return load_frames(path, fmt=kind, **opts)
        if kind == "vasp":
            return load_frames(path, fmt=kind, vasp_steps=cfg.vasp_steps)
        if kind == "mlearn":
            told = like.read_with.get("shear_order") if like is not None and like.fmt == "mlearn" else None
            if not cfg.shear_order and told:
                return load_frames(path, fmt=kind, shear_order=told, given_by=f"the order told for {like.source.name}")
            return load_frames(path, fmt=kind, shear_order=cfg.shear_order or "auto")
        return load_frames(path, fmt=kind)
    except FrameError as exc:
        raise DataError(str(exc)) from None


def frame_leaks(train_frames, test_frames) -> dict[int, str]:
    """``{test frame index: message}`` for each test frame that is a training frame (the same
    cell, species and positions, exactly: :func:`tui_ft.core.data.leaks.find_leaks` without the
    matcher, since frames of one trajectory are alike by nature)."""
    from tui_ft.core.data.leaks import find_leaks, leak_message

    found = find_leaks([f.structure for f in train_frames], [f.structure for f in test_frames], matcher=False)
    return {j: f"{test_frames[j].where or f'frame {j}'} (id {test_frames[j].id}): "
               f"{leak_message(test_frames[j].id, train_frames[i].id)}" for j, i in found.items()}


def resolve_weights(cfg, counts: dict[str, int], n: int) -> dict[str, float]:
    """The weight of each target: the preset's, or chgnet's default where every frame has
    the label and 0 where not. (A weight set > 0 on a missing label is refused before the run.)"""
    out = {}
    for t in TARGETS:
        w = getattr(cfg, f"{t}_weight")
        if w is None:
            w = DEFAULT_WEIGHTS[t] if n and counts.get(FRAME_LABEL[t], 0) == n else 0.0
        out[t] = float(w)
    return out


def weight_problems(cfg, frames: FrameSet) -> list[tuple[str, str]]:
    """(field, message) for each weight > 0 on a label that not every frame has."""
    counts, n = frames.labels(), len(frames)
    out = []
    for t in TARGETS:
        w = getattr(cfg, f"{t}_weight")
        have = counts.get(FRAME_LABEL[t], 0)
        if w is not None and w > 0 and have < n:
            out.append((f"task.{t}_weight", f"is {w:g}, but only {have} of {n} frames of {frames.source} have "
                                            f"{FRAME_LABEL[t]} labels; set it to 0 or give the labels"))
    return out


def _loss(kind: str, delta: float):
    """``fn(pred, label, reduction="mean")`` of ``task.loss``."""
    if kind == "l1":
        return F.l1_loss
    if kind == "huber":
        return lambda a, b, reduction="mean": F.huber_loss(a, b, delta=delta, reduction=reduction)
    return F.mse_loss


class PotentialTask(Task):
    """Energies, forces, stresses and magmoms of frames (see the module docstring)."""

    name = "potential"

    def __init__(self, preset) -> None:
        self.cfg = preset.task
        self.selection = self.cfg.selection
        self.weights: dict[str, float] = {}
        self.frames: list = []  # row -> Frame

    # -- data
    def load_data(self, t) -> None:
        d, cfg = t.p.data, self.cfg
        if t.dist.active:
            t.say(t.dist.describe())
        path = preset_source(d.source, t.paths)
        test_path = preset_source(d.test_source, t.paths) if d.test_source else None
        t.say(f"reading frames from {path}" + (f" (test frames from {test_path})" if test_path else ""))
        try:
            fs = read_frames(path, cfg)
            test = read_frames(test_path, cfg, like=fs) if test_path else None
        except DataError as exc:
            raise TrainingFailed(str(exc)) from None
        for note in fs.notes + (test.notes if test is not None else []):
            t.say(note)
        self.weights = resolve_weights(cfg, fs.labels(), len(fs))
        need = {FRAME_LABEL[k] for k, w in self.weights.items() if w > 0}
        if not need:
            raise TrainingFailed("every target weight is 0: nothing to train")
        try:
            fs = check_frames(fs, need, skip_bad=d.skip_bad_rows)
            test = check_frames(test, need, skip_bad=d.skip_bad_rows) if test is not None else None
        except FrameError as exc:
            raise TrainingFailed(str(exc)) from None
        test_frames = list(test.frames) if test is not None else []
        leaks = frame_leaks(list(fs.frames), test_frames) if test_frames else {}
        if leaks and not d.skip_bad_rows:
            raise TrainingFailed(f"{test_path}: {next(iter(leaks.values()))} ({len(leaks)} such frames)")
        if leaks:
            for msg in leaks.values():
                t.say(f"{test_path}: {msg}; left out of the test set", "warning")
            test_frames = [f for j, f in enumerate(test_frames) if j not in leaks]
            if not test_frames:
                raise TrainingFailed(f"{test_path}: every test frame is a training frame; nothing left to test on")
        train_ids = {f.id for f in fs.frames}
        if any(f.id in train_ids for f in test_frames):  # e.g. frame-K in both files: name them by their file
            from dataclasses import replace

            test_frames = [replace(f, id=f"{Path(test_path).name}:{f.id}") for f in test_frames]
            t.say(f"frame ids of {test_path} also name training frames: they are read as "
                  f"{Path(test_path).name}:<id>")
        frames = list(fs.frames) + test_frames
        ids = [f.id for f in frames]
        self.frames = frames
        sha = fs.sha256 + (test.sha256 if test is not None else "")
        t.ds = Dataset(path=path, target="energy", ids=ids, structures=[f.structure for f in frames],
                       targets=np.array([f.energy_per_atom for f in frames], dtype=np.float64),
                       sha256=sha[:64] if test is None else _sha(sha))
        t.n_held_out = len(test_frames) if test is not None else 0
        t.data_sha = t.ds.sha256
        shown = ", ".join(f"{k} {w:g}" for k, w in self.weights.items())
        t.say(f"{len(fs)} frames ({fs.n_atoms()} atoms) with labels {fs.labels()}; weights: {shown}")
        t.unit = "" if self.selection == "val_loss" else METRICS[self.selection.removeprefix("val_")][1]
        t.splits = self._splits(t)

    def make_splits(self, t, exclude=()):
        return self._splits(t, exclude=exclude, quiet=True)

    def _splits(self, t, exclude=(), quiet: bool = False):
        d = t.p.data
        split = d.split
        if split == "matbench" and not d.test_source:
            if not quiet:
                t.say("data.split: Matbench folds do not apply to frames; using a seeded random split")
            split = "random"
        if split == "group":
            return self._group_split(t, exclude=exclude)
        return make_source_splits(
            len(t.ds), n_held_out=t.n_held_out, split=split, fold=d.fold, fraction=d.fraction,
            val_fraction=d.val_fraction, seed=d.seed, test_limit=d.test_limit, test_fraction=d.test_fraction,
            exclude=exclude,
        )

    def _group_split(self, t, exclude=()):
        """Whole groups (a trajectory, a calculation) to test, validation and training, seeded."""
        from tui_ft.core.data.dataset import Splits

        d = t.p.data
        out = {int(r) for r in exclude}
        groups: dict[str, list[int]] = {}
        for r, f in enumerate(self.frames):
            if r not in out:
                groups.setdefault(f.group or f.id, []).append(r)
        names = sorted(groups)
        rng = np.random.default_rng(d.seed)
        rng.shuffle(names)
        n = len(self.frames)
        test, val, train = [], [], []
        for g in names:
            rows = groups[g]
            if len(test) < d.test_fraction * n:
                test += rows
            elif len(val) < d.val_fraction * (n - len(test)):
                val += rows
            else:
                train += rows
        if not train or not val or not test:
            raise TrainingFailed(f"data.split = \"group\": {len(names)} groups are too few for train, validation "
                                 "and test; use split = \"random\" or more groups")
        keep = max(1, int(round(len(train) * d.fraction)))
        arr = lambda rows: np.array(sorted(rows), dtype=np.int64)  # noqa: E731
        return Splits(train=arr(train[:keep]), val=arr(val), test=arr(test[: d.test_limit] if d.test_limit else test))

    def labels(self, t) -> None:
        """Each row's labels as tensors (energy per atom, forces, stress, |magmom|)."""
        self.e = torch.tensor([f.energy_per_atom for f in self.frames], dtype=torch.float32)
        self.f = [None if f.forces is None else torch.tensor(f.forces, dtype=torch.float32) for f in self.frames]
        self.s = [None if f.stress is None else torch.tensor(f.stress, dtype=torch.float32) for f in self.frames]
        self.m = [None if f.magmom is None else torch.tensor(np.abs(f.magmom), dtype=torch.float32) for f in self.frames]
        self.n_atoms = [len(f.structure) for f in self.frames]

    # -- model
    def make_forward(self, t):
        self.letters = "".join(LETTER[k] for k in TARGETS if self.weights.get(k, 0) > 0 or k == "energy")
        if t.p.finetune.mode == "head":
            t.say("head mode for a potential: the backbone is frozen but runs on every batch (forces need it)")
        return None

    def _batches(self, t, rows: list[int]) -> list[list[int]]:
        """Consecutive rows in batches of at most train.batch_size frames and task.max_atoms_per_batch atoms."""
        bs, cap = t.p.train.batch_size, self.cfg.max_atoms_per_batch
        out, cur, atoms = [], [], 0
        for r in rows:
            n = self.n_atoms[r]
            if cur and (len(cur) >= bs or (cap and atoms + n > cap)):
                out.append(cur)
                cur, atoms = [], 0
            cur.append(r)
            atoms += n
        if cur:
            out.append(cur)
        return out

    def _forward(self, t, rows: list[int], *, training: bool) -> dict[str, Any]:
        graphs = [graph_to_device(t.graphs[int(r)], t.device) for r in rows]
        return potential_forward(t.model, graphs, self.letters, create_graph=training)

    def _terms(self, pred: dict[str, Any], rows: list[int], device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(prediction, label) per weighted target, flattened over the batch."""
        out = {"energy": (pred["e"].view(-1), self.e[rows].to(device))}
        if "f" in self.letters and self.weights["force"] > 0:
            out["force"] = (torch.cat(pred["f"]).view(-1), torch.cat([self.f[r] for r in rows]).to(device).view(-1))
        if "s" in self.letters and self.weights["stress"] > 0:
            out["stress"] = (torch.stack(pred["s"]).view(-1), torch.stack([self.s[r] for r in rows]).to(device).view(-1))
        if "m" in self.letters and self.weights["magmom"] > 0:
            out["magmom"] = (torch.cat(pred["m"]).view(-1), torch.cat([self.m[r] for r in rows]).to(device).view(-1))
        return out

    def refit_atomref(self, t) -> None:
        """AtomRef refit by least squares to (energy per atom - the rest of the model's energy)."""
        comp = t.model.composition_model
        if comp is None:
            t.say("model has no AtomRef composition model; refit skipped", "warning")
            return
        tr = [int(r) for r in t.splits.train]
        rest = []
        with torch.no_grad():
            for batch in self._batches(t, tr):
                graphs = [graph_to_device(t.graphs[r], t.device) for r in batch]
                e = t.model(graphs, task="e")["e"].view(-1)
                rest.append(e - comp(graphs).view(-1))
        resid = (self.e[tr] - torch.cat(rest).cpu()).tolist()
        from tui_ft.core.train.forward import atomic_numbers

        numbers = [_Numbers(atomic_numbers(t.graphs, r)) for r in tr]
        before = comp.fc.weight.detach().clone().cpu()
        comp.fit(numbers, resid)
        # chgnet's fit is a minimum-norm least squares over all 94 elements: an element absent from
        # the training frames would get offset 0 (several eV/atom off for every structure holding
        # it). Those keep the offsets the model had; only the elements the data has are refit.
        present = torch.zeros(before.shape[-1], dtype=torch.bool)
        for n in numbers:
            present[n.atomic_number.long() - 1] = True
        with torch.no_grad():
            comp.fc.weight[:, ~present] = before[:, ~present].to(comp.fc.weight.dtype)
        comp.to(t.device)
        t.say(f"AtomRef refit by least squares on the energies of {len(tr)} training frames "
              f"({int(present.sum())} element(s); the other elements' offsets kept)")

    # -- passes
    def _denoms(self, rows: list[int]) -> dict[str, int]:
        """How many numbers each target has in a (global) batch: frames, force components, stress
        components (3x3), magmoms. Under DDP each rank's summed loss is divided by these, so that the
        ranks' losses add up to the loss of the whole batch in one process."""
        atoms = sum(self.n_atoms[r] for r in rows)
        return {"energy": len(rows), "force": 3 * atoms, "stress": 9 * len(rows), "magmom": atoms}

    def _accumulate(self, terms, loss_fn, sums, counts, *, denom: dict[str, int] | None = None,
                    lsums: dict[str, float] | None = None) -> torch.Tensor:
        """The weighted loss of a batch (each target's mean, or its sum over ``denom``); adds each
        target's absolute error and count to ``sums``/``counts`` and its summed loss to ``lsums``."""
        loss = 0.0
        for k, (p, y) in terms.items():
            term = loss_fn(p, y) if denom is None else loss_fn(p, y, reduction="sum") / denom[k]
            loss = loss + self.weights[k] * term
            sums[k] = sums.get(k, 0.0) + float((p.detach() - y).abs().sum())
            counts[k] = counts.get(k, 0) + y.numel()
            if lsums is not None:
                lsums[k] = lsums.get(k, 0.0) + float(loss_fn(p.detach(), y, reduction="sum"))
        return loss

    def _summed(self, t, *tables: dict[str, float]) -> list[dict[str, float]]:
        """Each per-target table summed over the DDP ranks (one process: as it is)."""
        if not t.dist.active:
            return list(tables)
        flat = t.dist.sum_floats(*(tab.get(k, 0.0) for tab in tables for k in TARGETS))
        out = []
        for i in range(len(tables)):
            vals = flat[i * len(TARGETS):(i + 1) * len(TARGETS)]
            out.append({k: v for k, v in zip(TARGETS, vals) if v or k in tables[i]})
        return out

    def train_epoch(self, t, epoch: int) -> tuple[dict[str, float], int]:
        p, dist = t.p, t.dist
        loss_fn = _loss(self.cfg.loss, self.cfg.huber_delta)
        tr = t.splits.train
        gen = torch.Generator().manual_seed(p.train.seed * 100003 + epoch)
        order = [int(tr[i]) for i in torch.randperm(len(tr), generator=gen).tolist()]
        t.model.train()
        params = [q for q in t.model.parameters() if q.requires_grad]
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        total, n = 0.0, 0
        batches = self._batches(t, order)
        for b, rows in enumerate(batches):  # the same global batches on every rank
            t.recipe.step_lr(epoch, b, len(batches))  # warm-up / SWA lr of this step (when the recipe sets it)
            mine = dist.shard(rows)  # DDP: this rank's share of the batch
            t.optimizer.zero_grad(set_to_none=True)
            if mine:
                terms = self._terms(self._forward(t, mine, training=True), mine, t.device)
                loss = self._accumulate(terms, loss_fn, sums, counts, denom=self._denoms(rows) if dist.active else None)
                loss.backward()
            else:  # DDP: a last batch smaller than the world leaves this rank nothing
                loss = torch.zeros((), device=t.device)
            loss = dist.reduce_grads(params, loss)  # DDP: gradients and loss summed over the ranks
            if not torch.isfinite(loss):  # before the step: the weights stay those of the last good batch
                raise TrainingFailed(f"loss became {loss.item()} at epoch {epoch}, batch {b + 1}: training diverged "
                                     f"(try a smaller optim.lr); {t._kept()}")
            t.recipe.step()  # clipping, the optimizer step, the EMA
            t.cpu.tick()  # CPU threads for the load on the cores
            total += float(loss.detach()) * len(rows)
            n += len(rows)
            if t.ctx.on_batch is not None:
                t.ctx.on_batch(epoch, n, len(order))
        sums, counts = self._summed(t, sums, counts)
        out = {"train_loss": total / max(n, 1)}
        out.update({f"train_{k}_mae": SCALE[k] * sums[k] / max(counts[k], 1) for k in TARGETS if counts.get(k)})
        return out, n

    def _pass(self, t, part: str, *, keep: bool = False, progress=None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """One forward pass over a split (forces need the gradient: no torch.no_grad here): its
        metrics and, with ``keep``, each row's predicted energy per atom, forces, stress, magmoms.
        The loss is each target's mean over the whole split, weighted (independent of the batches,
        so DDP's ranks, each passing every ``world_size``-th row, sum to one process's numbers)."""
        rows = [int(r) for r in getattr(t.splits, part)]
        positions = t.dist.positions(len(rows))
        mine = [rows[i] for i in positions]
        loss_fn = _loss(self.cfg.loss, self.cfg.huber_delta)
        t.model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        lsums: dict[str, float] = {}
        kept: list[dict[str, Any]] = []
        if progress is not None:
            progress(0, len(mine))
        done = 0
        for batch in self._batches(t, mine):
            pred = self._forward(t, batch, training=False)
            if keep:
                for i in range(len(batch)):
                    kept.append({k: v[i].detach().cpu().numpy() for k, v in pred.items() if k in ("e", "f", "s", "m")})
            self._accumulate(self._terms(pred, batch, t.device), loss_fn, sums, counts, lsums=lsums)
            done += len(batch)
            t.cpu.tick()
            if progress is not None:
                progress(done, len(mine))
        sums, counts, lsums = self._summed(t, sums, counts, lsums)
        m = {f"{part}_loss": sum(self.weights[k] * lsums[k] / counts[k] for k in lsums if counts.get(k))}
        m.update({f"{part}_{k}_mae": SCALE[k] * sums[k] / max(counts[k], 1) for k in TARGETS if counts.get(k)})
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        if bad:
            raise TrainingFailed(f"{part} {bad[0]} became {m[bad[0]]} at epoch {t.epoch}: training diverged; {t._kept()}")
        if keep and t.dist.active:  # DDP: every rank's rows, back in split order
            merged: list[Any] = [None] * len(rows)
            for pos, preds in t.dist.gather_objects((positions, kept)):
                for i, pr in zip(pos, preds):
                    merged[i] = pr
            kept = merged
        return m, kept

    def predict(self, t, part: str, progress=None) -> list[dict[str, Any]]:
        """Per row of the split: predicted energy per atom, forces, stress, magmoms (numpy)."""
        return self._pass(t, part, keep=True, progress=progress)[1]

    def evaluate(self, t, part: str) -> dict[str, float]:
        return self._pass(t, part)[0]

    def test(self, t) -> TestResult:
        rows = [int(r) for r in t.splits.test]
        if not rows:
            return TestResult(None, {}, None, 0)
        m, preds = self._pass(t, "test", keep=True, progress=t.progress("predict"))  # one pass: metrics and rows
        value = m.get(self.selection.replace("val_", "test_", 1))
        if not t.dist.writer:  # DDP: rank 0 writes the predictions
            return TestResult(value, m, None, len(rows))
        pred_path = t.log_dir / "test_predictions.csv"
        with open(pred_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "n_atoms", "energy_true_eV_per_atom", "energy_pred_eV_per_atom",
                        "force_mae_eV_per_A", "stress_mae_GPa"])
            for r, pr in zip(rows, preds):
                fm = "" if self.f[r] is None or "f" not in pr else f"{float(np.abs(pr['f'] - self.f[r].numpy()).mean()):.6f}"
                sm = "" if self.s[r] is None or "s" not in pr else f"{float(np.abs(pr['s'] - self.s[r].numpy()).mean()):.6f}"
                w.writerow([t.ds.ids[r], self.n_atoms[r], f"{float(self.e[r]):.6f}", f"{float(pr['e']):.6f}", fm, sm])
        if any(self.f[r] is not None and "f" in pr for r, pr in zip(rows, preds)):
            with open(t.log_dir / "test_forces.csv", "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", "atom", "fx_true", "fy_true", "fz_true", "fx_pred", "fy_pred", "fz_pred"])  # eV/Å
                for r, pr in zip(rows, preds):
                    if self.f[r] is None or "f" not in pr:
                        continue
                    for a, (ft, fp) in enumerate(zip(self.f[r].numpy(), pr["f"])):
                        w.writerow([t.ds.ids[r], a, *(f"{x:.6f}" for x in ft), *(f"{x:.6f}" for x in fp)])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t.say(f"peak memory of the training process: {peak:.0f} MiB (RSS)")
        return TestResult(value, m, str(pred_path), len(rows))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()

