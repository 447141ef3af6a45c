"""The recipe around the optimizer step: learning-rate warm-up, gradient clipping, and the
averaged weights (an exponential moving average, EMA, and stochastic weight averaging, SWA).

Preset fields (``tui_ft.core.config.presets``):

``optim.warmup_epochs = W``
    The learning rate of every parameter group rises linearly, step by step, over the first
    ``W`` epochs: at the ``k``-th of ``n`` optimizer steps of epoch ``e`` (1-based) it is the
    group's lr times ``((e - 1) + k / n) / W``, so it reaches the full lr at the last step of
    epoch ``W``. Then the chosen ``optim.scheduler``: ``none`` keeps the lr, ``cosine`` decays
    it over the epochs after the warm-up, ``0.5 (1 + cos(pi (e - W - 1) / (E - W)))`` in epoch
    ``e`` of ``E`` (with ``W = 0`` that is torch's ``CosineAnnealingLR`` stepped once an epoch,
    which a run without warm-up and SWA still uses).
``optim.clip_grad_norm = c``
    ``torch.nn.utils.clip_grad_norm_`` before each step (after unscaling under fp16): the
    total L2 norm of the gradient of the trained parameters is at most ``c``. Each epoch's
    largest norm before clipping is logged as ``train_grad_norm``.
``train.ema = d``
    ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(d)``, updated after
    every optimizer step (buffers too). The EMA weights are the ones evaluated each epoch,
    chosen as ``best``, saved in ``best.pt`` and ``last.pt`` (what ``export`` writes and what a
    next stage starts from); ``last.pt`` keeps the raw weights and the average's state as well,
    so a resume continues both exactly.
``train.swa_start = s``, ``train.swa_lr = r``
    From epoch ``s`` on, the weights after each epoch are averaged with equal weights
    (``AveragedModel``, buffers averaged too: CHGNet has no batch norm to recompute) and the lr
    is the constant ``r`` (when given). At the end of the run the averaged weights are
    evaluated on the validation and test splits and saved as their own checkpoint,
    ``checkpoints/<run>/swa.pt`` (``RUN@swa``).

The lr of a step is a pure function of (epoch, step, steps in the epoch), so a resumed run
sets exactly the lr the uninterrupted run had. No Textual here.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as a checkpoint holds it: detached tensors on the CPU."""
    return {k: v.detach().cpu() for k, v in state.items()}


def lr_factor(epoch: int, step: int, steps: int, *, epochs: int, warmup: int, cosine: bool) -> float:
    """The multiplier of each group's lr at ``step`` (0-based) of ``steps`` in ``epoch`` (1-based)."""
    if warmup and epoch <= warmup:
        return ((epoch - 1) + (step + 1) / max(steps, 1)) / warmup
    if not cosine:
        return 1.0
    span = max(1, epochs - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup - 1) / span))


class Recipe:
    """One run's warm-up, clipping and averaged weights (see the module's docstring).

    ``step_lr`` before each optimizer step sets the lr (when the recipe owns the schedule);
    ``step`` clips and steps; ``after_step`` / ``end_epoch`` update the averages;
    ``evaluated()`` puts the weights that are evaluated and saved into the model for a while."""

    def __init__(self, preset, model, optimizer, precision):
        o, tr = preset.optim, preset.train
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.epochs, self.warmup = tr.epochs, o.warmup_epochs
        self.cosine = o.scheduler == "cosine"
        self.clip = o.clip_grad_norm
        self.swa_start, self.swa_lr = tr.swa_start, tr.swa_lr
        # with warm-up or SWA the lr is set here, step by step; else torch's per-epoch scheduler (engine)
        self.owns_schedule = bool(self.warmup or self.swa_start)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tr.ema), use_buffers=True) if tr.ema else None
        )
        self.swa = AveragedModel(model, use_buffers=True) if tr.swa_start else None
        self.max_grad_norm = 0.0  # this epoch's largest norm before clipping
        self._raw: dict[str, torch.Tensor] | None = None  # the trained weights while weights() swapped them out

    # -- the step
    def step_lr(self, epoch: int, step: int, steps: int) -> None:
        if not self.owns_schedule:
            return
        if self.swa_start and epoch >= self.swa_start and self.swa_lr is not None:
            lrs = [self.swa_lr] * len(self.base_lrs)
        else:
            f = lr_factor(epoch, step, steps, epochs=self.epochs, warmup=self.warmup, cosine=self.cosine)
            lrs = [b * f for b in self.base_lrs]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr

    def step(self) -> None:
        """Clip (when asked) and take the optimizer step, then update the EMA."""
        if self.clip:
            scaler = self.precision.scaler
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            params = [q for g in self.optimizer.param_groups for q in g["params"] if q.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip))
            if math.isfinite(norm):
                self.max_grad_norm = max(self.max_grad_norm, norm)
        self.precision.step(self.optimizer)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def train_metrics(self) -> dict[str, float]:
        """What the recipe adds to the epoch's training metrics (and resets for the next epoch)."""
        out = {"train_grad_norm": self.max_grad_norm} if self.clip else {}
        self.max_grad_norm = 0.0
        return out

    def end_epoch(self, epoch: int) -> None:
        if self.swa is not None and epoch >= self.swa_start:
            self.swa.update_parameters(self.model)

    # -- which weights
    @contextlib.contextmanager
    def weights(self, which: AveragedModel | None):
        """The model holds ``which``'s weights inside the block (the raw ones again after it)."""
        if which is None:
            yield
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        outer, self._raw = self._raw, raw if self._raw is None else self._raw
        self.model.load_state_dict(which.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(raw)
            self._raw = outer

    def evaluated(self):
        """The weights evaluated and saved each epoch: the EMA's, when it is on."""
        return self.weights(self.ema)

    @property
    def swa_ready(self) -> bool:
        return self.swa is not None and int(self.swa.n_averaged) > 0

    def saved_state(self) -> dict[str, torch.Tensor]:
        """The model state that best.pt / last.pt hold: the EMA weights, or the model's."""
        module = self.ema.module if self.ema is not None else self.model
        return cpu_state(module.state_dict())

    # -- resume
    def state_dict(self) -> dict[str, Any]:
        """For last.pt: the raw weights (when they differ from the saved ones) and the averages."""
        out: dict[str, Any] = {}
        if self.ema is not None:
            raw = self._raw if self._raw is not None else self.model.state_dict()
            out["raw_model_state"] = cpu_state(raw)
            out["ema"] = cpu_state(self.ema.state_dict())
        if self.swa is not None:
            out["swa"] = cpu_state(self.swa.state_dict())
        return out

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore what :meth:`state_dict` saved (a last.pt from a run without the averages: start them)."""
        state = state or {}
        if self.ema is not None and state.get("raw_model_state") is not None:
            self.model.load_state_dict(state["raw_model_state"])
        for name in ("ema", "swa"):
            avg = getattr(self, name)
            if avg is not None and state.get(name) is not None:
                avg.load_state_dict(state[name])
