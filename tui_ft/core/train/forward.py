"""The forward modes of a run: HeadForward trains the readout on cached frozen-backbone features
(extracted once, FeatureCache), FullForward runs CHGNet on crystal graphs (split across CPU threads)."""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable, Sequence

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tui_ft.core.common.atomic import atomic_write  # noqa: E402
from tui_ft.core.common.paths import Paths  # noqa: E402
from tui_ft.core.data.graphcache import load_cache_file  # noqa: E402
from tui_ft.core.train.parallel import CpuDataParallel, split_batch  # noqa: E402
from tui_ft.core.train.precision import FP32, Precision, graph_to_device, to_device  # noqa: E402

# chgnet 0.4.2 builds a tensor from requires_grad volumes in BatchedGraph.from_graphs;
# harmless for energy-only training, and it would print on every run.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
from tui_ft.core.train.setup import feature_batch_size  # noqa: E402


def _loss_fn(name: str):
    return {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}[name]


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
            to_device(torch.cat(xs), device),
            to_device(owners, device),
            to_device(self.n_atoms[list(idx)], device),
            to_device(self.comp[list(idx)], device),
        )


def supports_feature_head(model) -> bool:
    return bool(getattr(model, "mlp_first", False)) and model.is_intensive


def head_forward(model, x, owners, n_atoms, comp, *, with_comp: bool = True):
    """The readout of CHGNet (mlp_first, intensive) applied to cached atom features."""
    if model.readout_norm is not None:
        x = model.readout_norm(x)
    site = model.mlp(x).view(-1).float()  # per-structure sums in float32 (also under autocast)
    e = torch.zeros(n_atoms.shape[0], dtype=site.dtype, device=site.device).index_add(0, owners, site)
    e = e / n_atoms
    if with_comp and model.composition_model is not None:
        e = e + model.composition_model._get_energy(comp)
    return e


FEATURE_BLOCK = 2048  # rows whose graphs are built at once for frozen-feature extraction


def atomic_numbers(graphs: Any, row: int):
    """A row's atomic numbers: read from the packed store where it can (no CrystalGraph built)."""
    field_of = getattr(graphs, "field", None)
    return field_of(row, "atomic_number") if field_of is not None else graphs[row].atomic_number


def composition_of(numbers, n_elements: int = 94):
    """The composition vector AtomRef reads (element fractions) from atomic numbers."""
    c = torch.bincount(numbers.long() - 1, minlength=n_elements).float()
    return c / numbers.shape[0]


def composition_matrix(graphs: Sequence[Any], n_elements: int = 94):
    return torch.stack([composition_of(g.atomic_number, n_elements) for g in graphs])


def composition_rows(graphs: Any, rows: Sequence[int], n_elements: int = 94):
    """``composition_matrix`` of ``rows`` of a graph store, without building the graphs."""
    if len(rows) == 0:
        return torch.zeros(0, n_elements)
    return torch.stack([composition_of(atomic_numbers(graphs, int(r)), n_elements) for r in rows])


def extract_features(model, graphs: Sequence[Any], batch_size: int, device: str, workers: int = 1,
                     threads: int = 1, progress: Callable[[int], None] | None = None) -> list:
    """Run the frozen backbone once; capture the per-atom input of the readout.

    With ``workers > 1`` on the CPU the structures are split into groups of similar
    cost that run at the same time on replicas of the model (tui_ft.core.train.parallel);
    a structure's features do not depend on the other structures of its batch.
    ``progress(n)`` is called with the number of structures each batch finished
    (from the worker threads when there are several).
    """
    if workers > 1 and device == "cpu" and len(graphs) > 1:
        dp = CpuDataParallel(model, workers, threads)
        try:
            groups = split_batch(graphs, workers)
            parts = dp.map_parts(
                lambda rep, idx: _extract_serial(rep, [graphs[i] for i in idx], batch_size, device, progress), groups
            )
        finally:
            dp.close()
        out: list = [None] * len(graphs)
        for idx, feats in zip(groups, parts):
            for i, f in zip(idx, feats):
                out[i] = f
        return out
    return _extract_serial(model, graphs, batch_size, device, progress)


def _extract_serial(model, graphs: Sequence[Any], batch_size: int, device: str,
                    progress: Callable[[int], None] | None = None) -> list:
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
                chunk = [graph_to_device(g, device) for g in graphs[i : i + batch_size]]
                captured.clear()
                model(chunk, task="e")
                sizes = [int(g.atomic_number.shape[0]) for g in chunk]
                out.extend(torch.split(captured[0], sizes))
                if progress is not None:
                    progress(len(chunk))
    finally:
        handle.remove()
    return [t.clone() for t in out]


class FeatureCache:
    """Frozen-backbone features on disk, keyed by backbone weights, data file and row.

    Read memory-mapped: the features of a warm cache are file-backed pages that concurrent
    runs (the folds of a study, sweep trials) share instead of each holding a copy."""

    def __init__(self, paths: Paths, bb_hash: str, data_sha: str):
        self.path = paths.cache / "features" / f"{bb_hash[:16]}-{data_sha[:16]}.pt"
        self.hits = 0

    def get(self, model, rows: Sequence[int], graphs: Any, batch_size: int, device: str,
            workers: int = 1, threads: int = 1, progress: Callable[[int, int], None] | None = None) -> dict[int, Any]:
        """Features of ``rows``; the missing ones are computed ``FEATURE_BLOCK`` rows at a time
        (only one block's graphs are built at once) and the cache file rewritten once.
        ``progress(done, total)`` counts the rows computed, from ``(0, total)`` to ``(total, total)``."""
        store = load_cache_file(self.path)
        if not isinstance(store, dict):  # missing or corrupt: rebuilt
            store = {}
        missing = [r for r in rows if str(r) not in store]
        self.hits = len(rows) - len(missing)
        if missing:
            total, done, lock = len(missing), 0, threading.Lock()

            def tick(n: int) -> None:
                nonlocal done
                with lock:
                    done += n
                    if progress is not None:
                        progress(done, total)

            tick(0)
            for i in range(0, total, FEATURE_BLOCK):
                block = missing[i : i + FEATURE_BLOCK]
                feats = extract_features(
                    model, [graphs[r] for r in block], feature_batch_size(batch_size, device), device, workers, threads, tick
                )
                for r, f in zip(block, feats):
                    store[str(r)] = f
                del feats
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda fh: torch.save(store, fh))
        return {r: store[str(r)] for r in rows}


def _backward(loss, optimizer, precision) -> None:
    """The backward pass of one batch's loss (the optimizer step itself comes after the NaN check)."""
    optimizer.zero_grad(set_to_none=True)
    precision.backward(loss)


class HeadForward:
    """Head mode on cached frozen features: the readout head (and AtomRef) on ``fsets``.

    ``fsets[part]`` holds the features of the split ``part`` in split order, so a
    batch is addressed by positions in the split.
    """

    precision: Precision = FP32  # the run's autocast (train.precision)

    def __init__(self, model, fsets: dict[str, FeatureSet], device: str):
        self.model, self.fsets, self.device = model, fsets, device

    def train_step(self, positions: list[int], rows: list[int], target, loss_fn, optimizer):
        """Forward and backward of one training batch; returns ``(pred, loss)``."""
        with self.precision.autocast():
            pred = head_forward(self.model, *self.fsets["train"].batch(positions, self.device))
            loss = loss_fn(pred, target)
        _backward(loss, optimizer, self.precision)
        return pred, loss

    def predict(self, part: str, rows: Sequence[int], batch_size: int, positions: Sequence[int] | None = None,
                progress=None):
        """Predictions (on the CPU) for the split ``part`` (or its ``positions``), in order; call under
        no_grad. ``progress(done, total)`` after each batch."""
        fs = self.fsets[part]
        pos = list(range(len(rows))) if positions is None else list(positions)
        out = []
        with self.precision.autocast():
            for i in range(0, len(pos), batch_size):
                out.append(head_forward(self.model, *fs.batch(pos[i : i + batch_size], self.device)).cpu())
                if progress is not None:
                    progress(min(i + batch_size, len(pos)), len(pos))
        return out

    def energy_without_atomref(self, rows: Sequence[int], batch_size: int):
        """Every training structure's energy less its AtomRef term (the refit's residual base)."""
        x, o, n, c = self.fsets["train"].batch(range(len(rows)), self.device)
        return head_forward(self.model, x, o, n, c, with_comp=False).cpu()


def model_energy(model, graphs: Sequence[Any], precision: Precision = FP32):
    """``model(graphs, task="e")["e"]``; under mixed precision the graph geometry (bond
    vectors and lengths, basis expansions, AtomRef) stays in float32 and only the
    network runs under autocast: bf16 coordinates put atoms on top of each other and
    the run diverges at once. Follows chgnet 0.4's ``CHGNet.forward`` for task "e"."""
    if not precision.mixed:
        return model(graphs, task="e")["e"]
    from chgnet.model.model import BatchedGraph

    comp = 0 if model.composition_model is None else model.composition_model(graphs)
    batched = BatchedGraph.from_graphs(
        graphs, bond_basis_expansion=model.bond_basis_expansion,
        angle_basis_expansion=model.angle_basis_expansion, compute_stress=False,
    )
    with precision.autocast():
        out = model._compute(batched, compute_force=False, compute_stress=False, compute_magmom=False)
    return out["e"].float() + comp


EV_A3_TO_GPA = 160.21766208  # chgnet's factor: stress in eV/Å^3 -> GPa


def potential_forward(model, graphs: Sequence[Any], task: str, *, create_graph: bool) -> dict[str, Any]:
    """CHGNet's ``model(graphs, task=task)`` for a potential ("e", "ef", "efs", "efsm", ...), with
    the same outputs (energy per atom with AtomRef in eV/atom, forces in eV/Å, stresses in GPa
    with ASE's sign, magmoms in μB) in less time: forces and stresses come from ONE autograd pass
    over the energy (chgnet 0.4 makes two, one per derivative), and that pass builds its own graph
    only when ``create_graph`` (training, where the loss on forces is differentiated again);
    validation and test passes skip it. ``tests/test_potential.py`` checks the outputs against
    chgnet's to 1e-5. The graphs' fractional coordinates are made to require grad (forces are
    d(energy)/d(positions), as chgnet's converter sets them)."""
    from chgnet.model.model import BatchedGraph

    want_f, want_s, want_m = "f" in task, "s" in task, "m" in task
    if want_f:
        for g in graphs:
            if not g.atom_frac_coord.requires_grad:
                g.atom_frac_coord.requires_grad_(True)
    comp = 0 if model.composition_model is None else model.composition_model(graphs)
    batched = BatchedGraph.from_graphs(
        graphs, bond_basis_expansion=model.bond_basis_expansion,
        angle_basis_expansion=model.angle_basis_expansion, compute_stress=want_s,
    )
    out = model._compute(batched, compute_force=False, compute_stress=False, compute_magmom=want_m)
    energy = out["e"]  # per atom when the model is intensive (CHGNet's pretrained one is)
    if want_f or want_s:
        n_atoms = torch.as_tensor([len(g.atomic_number) for g in graphs], dtype=energy.dtype, device=energy.device)
        total = (energy * n_atoms).sum() if model.is_intensive else energy.sum()
        wrt = (list(batched.atom_positions) if want_f else []) + (list(batched.strains) if want_s else [])
        grads = torch.autograd.grad(total, wrt, create_graph=create_graph, retain_graph=create_graph)
        k = len(graphs) if want_f else 0
        if want_f:
            out["f"] = [-g for g in grads[:k]]
        if want_s:
            out["s"] = [g * (EV_A3_TO_GPA / v) for g, v in zip(grads[k:], batched.volumes)]
    out["e"] = energy + comp
    return out


class FullForward:
    """The whole model on crystal graphs; with ``dp`` each batch is split across
    CPU worker threads (tui_ft.core.train.parallel), which also does the backward pass."""

    precision: Precision = FP32  # the run's autocast (train.precision); CPU threads (dp) only with fp32

    def __init__(self, model, graphs: dict[int, Any], device: str, dp: CpuDataParallel | None = None):
        self.model, self.graphs, self.device, self.dp = model, graphs, device, dp

    def train_step(self, positions: list[int], rows: list[int], target, loss_fn, optimizer):
        """Forward and backward of one training batch; returns ``(pred, loss)``."""
        if self.dp is not None:  # the batch's gradient ends on the master model
            return self.dp.train_step([self.graphs[r] for r in rows], target, loss_fn)
        pred = model_energy(self.model, [graph_to_device(self.graphs[r], self.device) for r in rows], self.precision)
        loss = loss_fn(pred, target)
        _backward(loss, optimizer, self.precision)
        return pred, loss

    def predict(self, part: str, rows: Sequence[int], batch_size: int, positions: Sequence[int] | None = None,
                progress=None):
        """Predictions (on the CPU) for ``rows`` (or ``rows[positions]``), in order; call under no_grad.
        ``progress(done, total)`` after each batch."""
        if positions is not None:
            rows = [rows[i] for i in positions]
        out = []
        for i in range(0, len(rows), batch_size):
            chunk = [self.graphs[int(r)] for r in rows[i : i + batch_size]]
            if self.dp is not None:
                out.append(self.dp.predict(chunk))
            else:
                pred = model_energy(self.model, [graph_to_device(g, self.device) for g in chunk], self.precision)
                out.append(pred.detach().cpu())
            if progress is not None:
                progress(min(i + batch_size, len(rows)), len(rows))
        return out

    def energy_without_atomref(self, rows: Sequence[int], batch_size: int):
        """Every training structure's energy less its AtomRef term (the refit's residual base)."""
        self.model.eval()
        total = torch.cat(self.predict("train", rows, batch_size))
        comp = composition_rows(self.graphs, rows).to(self.device)
        return total - self.model.composition_model._get_energy(comp).cpu()
