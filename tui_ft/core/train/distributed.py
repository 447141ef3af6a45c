"""One run across several processes (GPUs, or CPU processes with gloo): DDP.

``torchrun --nproc_per_node N -m tui_ft --preset X`` starts N copies of the CLI;
``setup(preset)`` sees torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) and, unless the preset says ``train.ddp = "off"``, joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU). The engine then asks the
returned ``Dist`` object at a few points:

* the training batches: every rank walks the same global batch order and takes
  every ``world_size``-th structure of each global batch (``shard``); the loss of
  a rank is its share of the *global* batch mean (``sum / global batch size``),
  and ``reduce_grads`` sums the gradients over the ranks in one collective, so
  the step equals that of one process with the same global batch;
* validation and test: each rank predicts every ``world_size``-th structure and
  ``gather_predictions`` puts the whole split back in order on every rank, so the
  MAE is over the whole set;
* files: only rank 0 writes events, checkpoints and predictions (``writer``);
  graphs and frozen features are built by rank 0 first, then read from the cache
  by the others (``rank0_first``);
* failure: a rank that fails writes its message into the process group's store
  and exits; torchrun stops the others; rank 0 turns its own interruption (or the
  broken collective) into one ``run_failed`` event that names the failing rank.

One process (no torchrun, or ``train.ddp = "off"``) gets ``LOCAL``, whose methods
do nothing: the engine's single-process path is unchanged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.distributed as tdist

FAILURE_KEY = "tui_ft/failure"


def launched_by_torchrun() -> bool:
    """``WORLD_SIZE`` > 1 in the environment (torchrun, or the same variables set by hand)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@dataclass(eq=False)
class Dist:
    """Where this process stands in a run: rank, world size, and the collectives the engine needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, nothing to do
    device: str | None = None  # the device this rank must use (DDP on CUDA: cuda:LOCAL_RANK)
    _store: Any = field(default=None, repr=False)

    # -- who does what
    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def writer(self) -> bool:
        """Whether this process writes files and events (rank 0, or the only process)."""
        return self.rank == 0

    def describe(self) -> str:
        return f"DDP: {self.world_size} processes ({self.backend}), this is rank {self.rank}"

    # -- collectives (no-ops for one process)
    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def rank0_first(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, then on the other ranks (which then find rank 0's caches)."""
        if not self.active:
            return fn()
        if self.writer:
            out = fn()
            tdist.barrier()
            return out
        tdist.barrier()
        return fn()

    def shard(self, idx: Sequence[int]) -> list[int]:
        """This rank's part of a global batch: every ``world_size``-th entry."""
        return list(idx[self.rank :: self.world_size]) if self.active else list(idx)

    def batch_loss(self, loss_fn: Callable, global_n: int) -> Callable:
        """The loss of this rank's share: its summed loss over the global batch size, so
        that the sum over ranks is the global batch mean (one process: ``loss_fn`` itself)."""
        if not self.active:
            return loss_fn

        def share(pred, target):
            return loss_fn(pred, target, reduction="sum") / global_n

        return share

    def reduce_grads(self, params: Sequence[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum every trainable parameter's gradient over the ranks (one collective) and
        return the global loss. A parameter no rank gave a gradient keeps ``grad = None``
        (as in one process: the optimizer skips it)."""
        if not self.active:
            return loss
        params = [p for p in params if p.requires_grad]
        dev = loss.device
        parts, has = [], []
        for p in params:
            has.append(0.0 if p.grad is None else 1.0)
            parts.append(torch.zeros(p.numel(), device=dev) if p.grad is None else p.grad.detach().reshape(-1).float())
        flat = torch.cat([loss.detach().reshape(1).float(), torch.tensor(has, device=dev), *parts])
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        total_loss, mask = flat[0], flat[1 : 1 + len(params)]
        off = 1 + len(params)
        for p, m in zip(params, mask.tolist()):
            n = p.numel()
            if m > 0:
                p.grad = flat[off : off + n].view_as(p).to(p.dtype).clone()
            off += n
        return total_loss

    def sum_floats(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            t = t.to(self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t.cpu().tolist()

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank (one process: ``[obj]``)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def positions(self, n: int) -> list[int]:
        """This rank's positions of a split of ``n`` structures (every ``world_size``-th)."""
        return list(range(self.rank, n, self.world_size)) if self.active else list(range(n))

    def gather_predictions(self, positions: Sequence[int], preds: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's predictions, put back in split order (length ``n``) on every rank."""
        if not self.active:
            return preds
        parts: list[Any] = [None] * self.world_size
        tdist.all_gather_object(parts, (list(positions), preds.detach().cpu()))
        out = torch.empty(n, dtype=preds.dtype)
        seen = 0
        for pos, pr in parts:
            out[torch.tensor(pos, dtype=torch.long)] = pr
            seen += len(pos)
        if seen != n:  # pragma: no cover - the positions partition the split by construction
            raise RuntimeError(f"gathered {seen} predictions for a split of {n}")
        return out

    # -- failure
    def note_failure(self, message: str) -> str | None:
        """Record this rank's failure unless another was recorded first; returns the
        recorded one (the first failure of the run, which the others follow from)."""
        if not self.active or self._store is None:
            return None
        try:
            got = self._store.compare_set(FAILURE_KEY, "", f"rank {self.rank}: {message}")
            return got.decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the store may be gone already
            return None

    def failure_elsewhere(self, wait_s: float = 2.0) -> str | None:
        """The first failure of any rank, if one was recorded (waits up to ``wait_s``)."""
        if not self.active or self._store is None:
            return None
        import datetime

        try:
            self._store.wait([FAILURE_KEY], datetime.timedelta(seconds=wait_s))
            return self._store.get(FAILURE_KEY).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - no key within the wait: nobody else failed
            return None

    def close(self, *, together: bool = False) -> None:
        """Leave the process group. ``together``: the run ended normally on this rank, so first wait
        (at most ``CLOSE_WAIT_S``) for the other ranks to get here too: no rank tears its
        connections down while another is still in its last collective."""
        if self.active and tdist.is_initialized():
            if together:
                import datetime

                try:
                    if self.backend == "gloo":
                        tdist.monitored_barrier(timeout=datetime.timedelta(seconds=CLOSE_WAIT_S))
                    else:
                        tdist.barrier()
                except Exception:  # noqa: BLE001 - a rank that is gone: leave anyway
                    pass
            try:
                tdist.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        self._store = None


LOCAL = Dist()
CLOSE_WAIT_S = 60.0  # how long a rank that finished waits for the others before it leaves the group
_JOINED = False  # this process joined a process group (setup): it ends through exit_process


def exit_process(code: int) -> int:
    """The end of ``python -m tui_ft``: a process that joined a process group leaves through
    ``os._exit`` once its output is flushed, so the C++ runtime's static destructors (gloo's and
    c10d's threads among them) never run at interpreter exit, where a thread still joinable
    aborts the process ("terminate called without an active exception", SIGABRT) after the
    run's results are written. Every file the run writes is closed by then (events are
    synced line by line, checkpoints renamed into place). Any other process returns ``code``."""
    if not _JOINED:
        return code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
            pass
    os._exit(code)


def resolve_device(train_device: str, local_rank: int) -> str:
    """The device of one DDP rank: its own GPU (``cuda:LOCAL_RANK``) unless the preset asks
    for the CPU; an explicit ``cuda:N`` is replaced (torchrun assigns one GPU per process)."""
    if train_device == "cpu":
        return "cpu"
    if train_device == "auto" and not torch.cuda.is_available():
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"train.device = {train_device!r} but no CUDA device is available")
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise ValueError(f"LOCAL_RANK {local_rank} but only {n} CUDA device(s): start at most {n} processes per node")
    return f"cuda:{local_rank}"


def setup(preset) -> Dist:
    """Join the process group when launched by torchrun (and ``train.ddp`` is not "off");
    ``LOCAL`` otherwise. Raises ValueError with a message for the user."""
    mode = getattr(preset.train, "ddp", "auto")
    if mode == "off" or not launched_by_torchrun():
        return LOCAL
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preset.train.device, local_rank)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    global _JOINED
    _JOINED = True
    store = None
    try:  # the store the process group was built on (torchrun's): where failures are left
        store = tdist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - older/newer torch: failures then read as interruptions
        store = None
    return Dist(rank, world, local_rank, backend, device, store)


class RankEmit:
    """The event sink of one DDP rank. Rank 0 passes events on, replacing an
    interruption (or a crash in a collective) caused by another rank's failure with
    one ``run_failed`` that names it; other ranks write nothing and leave a failure's
    message in the store for rank 0."""

    def __init__(self, dist: Dist, emit: Callable[[Any], None] | None):
        self.dist, self._emit = dist, emit

    def __call__(self, ev: Any) -> None:
        from tui_ft.core.common.events import RunFailed, RunInterrupted

        if not self.dist.writer:
            if isinstance(ev, RunFailed):
                self.dist.note_failure(ev.message)
            return
        if self.dist.active and isinstance(ev, (RunInterrupted, RunFailed)):
            if isinstance(ev, RunFailed):
                first = self.dist.note_failure(ev.message)
            else:  # torchrun stopped rank 0 because another rank exited
                first = self.dist.failure_elsewhere()
            if first is not None and not first.startswith("rank 0: "):
                ev = RunFailed(ev.run_id, message=f"DDP run failed on {first}", epoch=getattr(ev, "epoch", None))
        if self._emit is not None:
            self._emit(ev)
