"""A run's set-up: the device, CPU threads and seeds; the pretrained or checkpointed CHGNet and its
layer groups (embedding, interaction, readout)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
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


def configure_cpu(device: str, *, ddp: bool = False) -> "CpuThreads":
    """Process-wide CPU settings for a run; returns its :class:`CpuThreads`, to ``tick()`` once a
    batch and ``close()`` at the end (inert unless it may change the thread count).

    ``TUI_FT_THREADS=N`` sets torch's intra-op threads (default: torch's choice, then
    :class:`CpuThreads` adjusts them to the load on the cores).
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
    if device == "cpu" and not ddp and threads_are_free() and torch.get_num_threads() > 1:
        try:
            return CpuThreads(torch.get_num_threads())
        except (OSError, ValueError):  # no readable /proc/stat (not Linux): threads stay as they are
            pass
    return CpuThreads(1)


THREAD_VARS = ("TUI_FT_THREADS", "OMP_NUM_THREADS")


def threads_are_free() -> bool:
    """Whether the thread count is left to tui-ft: neither ``TUI_FT_THREADS`` nor ``OMP_NUM_THREADS``
    is set (either pins it), on Linux (where the load on the cores can be read)."""
    return sys.platform.startswith("linux") and not any(os.environ.get(v, "").strip() for v in THREAD_VARS)


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def busy_cpu_seconds(cpus: Sequence[int], stat: str = "/proc/stat") -> float:
    """Seconds the given CPUs have spent busy since boot (user, nice, system, irq, softirq and steal
    time from ``/proc/stat``; steal is time the hypervisor gave to someone else, so it counts as taken)."""
    want = {f"cpu{c}" for c in cpus}
    ticks = 0
    with open(stat, encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition(" ")
            if name in want:
                f = [int(x) for x in rest.split()]
                ticks += f[0] + f[1] + f[2] + sum(f[5:8])  # user nice system (idle iowait) irq softirq steal
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all its threads."""
    t = os.times()
    return t.user + t.system


class CpuThreads:
    """torch's intra-op threads on the CPU, adjusted to what the cores have free.

    Why: at batch 1 a potential's forward and double backward are thousands of small operations,
    and OpenMP's worker threads either sleep between them (``OMP_WAIT_POLICY=PASSIVE``, set by this
    package: waking them costs more than they save, worst on a virtual machine whose idle cores
    halt) or spin for a while (faster when the run has the cores to itself, several times slower
    as soon as another process wants them). So ``tui_ft.core.train`` lets them spin briefly
    (``GOMP_SPINCOUNT``, when neither it nor a thread variable is set) and this class watches the
    cores: every ``interval`` seconds it reads how busy the run's CPUs were apart from this process,
    and uses the cores the others leave free (at least 1 thread; with 1 thread nothing waits).
    Measured in BENCHMARKS.md, section 10e. The thread count changes the order of float additions,
    so a run on a busy machine is reproducible to rounding, not bit for bit; ``TUI_FT_THREADS=N``
    pins N threads (and turns this off) where that matters.
    """

    def __init__(self, cores: int, *, interval: float = 2.0, cpus: Sequence[int] | None = None,
                 busy: Callable[[Sequence[int]], float] = busy_cpu_seconds,
                 own: Callable[[], float] = own_cpu_seconds, clock: Callable[[], float] = time.monotonic):
        self.cores = self.threads = max(1, int(cores))
        self.active = self.cores > 1
        self.interval = interval
        self._cpus = list(cpus) if cpus is not None else _affinity()
        self._busy, self._own, self._clock = busy, own, clock
        self.changes = 0
        if self.active:
            self._t, self._b, self._o = clock(), busy(self._cpus), own()  # OSError where unreadable

    def tick(self) -> None:
        """Cheap unless ``interval`` has passed: then re-read the load and set the thread count."""
        if not self.active:
            return
        now = self._clock()
        if now - self._t < self.interval:
            return
        b, o = self._busy(self._cpus), self._own()
        others = max(0.0, (b - self._b) - (o - self._o)) / max(now - self._t, 1e-9)  # cores others used
        self._t, self._b, self._o = now, b, o
        want = max(1, min(self.cores, int(self.cores - others + 0.5)))  # others at half a core or more take one
        if want != self.threads:
            torch.set_num_threads(want)
            self.threads = want
            self.changes += 1

    def close(self) -> None:
        """The thread count the run started with."""
        if self.active and self.threads != self.cores:
            torch.set_num_threads(self.cores)
            self.threads = self.cores


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
