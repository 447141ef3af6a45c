"""Mixed precision for a run (``train.precision``) and moving tensors to the device.

* ``fp32`` (default): nothing changes.
* ``bf16``: the forward passes run under ``torch.autocast`` with bfloat16 (CPU or
  CUDA); losses, per-structure sums and predictions stay float32.
* ``fp16``: autocast with float16, CUDA only, with a ``GradScaler`` so small
  gradients do not underflow.

``to_device`` moves a CPU tensor to the run's device: on CUDA through pinned
memory with ``non_blocking=True`` (the copy overlaps the GPU's work), elsewhere a
plain ``.to``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def to_device(t: torch.Tensor, device: str) -> torch.Tensor:
    if is_cuda(device) and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def graph_to_device(g: Any, device: str) -> Any:
    """A chgnet CrystalGraph on ``device`` (pinned, non-blocking copies on CUDA)."""
    if not is_cuda(device):
        return g.to(device)
    return type(g)(**{k: to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in g.to_dict().items()})


class Precision:
    """Autocast and loss scaling for one run. Raises ValueError for fp16 off CUDA."""

    def __init__(self, name: str = "fp32", device: str = "cpu"):
        if name not in ("fp32", *DTYPES):
            raise ValueError(f'train.precision = {name!r}: expected "fp32", "bf16" or "fp16"')
        if name == "fp16" and not is_cuda(device):
            raise ValueError(
                f"train.precision = 'fp16' needs a CUDA device (this run is on {device!r}); use 'bf16' on the CPU"
            )
        self.name = name
        self.device_type = "cuda" if is_cuda(device) else "cpu"
        self.dtype = DTYPES.get(name)
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    @property
    def mixed(self) -> bool:
        return self.dtype is not None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()


FP32 = Precision()
