"""A run's set-up: the device, CPU threads and seeds; the pretrained or checkpointed CHGNet and its
layer groups (embedding, interaction, readout)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from typing import Any

import numpy as np  # noqa: E402
import torch  # noqa: E402
from chgnet.model import CHGNet  # noqa: E402

from tui_ft.core.library.ckptfile import build_model
from tui_ft.core.train.errors import TrainingFailed  # noqa: E402
from tui_ft.core.train.precision import is_cuda  # noqa: E402

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


def pick_device(name: str) -> str:
    """``train.device`` checked against this machine: "auto", "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingFailed(f"train.device = {name!r} but no CUDA device is available")
        _, _, index = name.partition(":")
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise TrainingFailed(
                f"train.device = {name!r} but this machine has {n} CUDA device(s): cuda:0 .. cuda:{n - 1}"
            )
    return name


def feature_batch_size(batch_size: int, device: str) -> int:
    """Structures per forward pass of the frozen-feature extraction (no gradients: larger on a GPU)."""
    return max(batch_size, 256 if is_cuda(device) else 32)


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
    if n.isascii() and n.isdigit() and int(n) > 0:
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


def model_from_payload(payload: dict[str, Any], where: str = "checkpoint"):
    """The model of a loaded checkpoint, its model_args and weights checked first
    (:func:`tui_ft.core.library.checkpoints.build_model`; raises CheckpointError)."""
    return build_model(payload, where)


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


class _Numbers:
    """What AtomRef.fit reads of a graph: its atomic numbers."""

    __slots__ = ("atomic_number",)

    def __init__(self, atomic_number):
        self.atomic_number = atomic_number
