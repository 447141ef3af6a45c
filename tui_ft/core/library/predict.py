"""Predictions of a checkpoint (or a CHGNet model) on any data source or structure files.

``predict(ckpt_or_model, source_or_paths)`` reads the input through
:mod:`tui_ft.core.data.sources` (a data source of any format, a single structure
file, a folder of structure files, or several of these), converts structures to
crystal graphs (:func:`convert_graphs`; one function so a parallel converter
can replace it), and runs the model in batches: on the GPU when there is one,
else each batch split across CPU worker threads as in training
(:class:`tui_ft.core.train.parallel.CpuDataParallel`). The prediction for a
structure is CHGNet's energy output ``e`` (per atom), i.e. what the engine
predicts and trains.

Structures that cannot be read or converted are returned in ``failures`` by id
with the reason; none is silently dropped. Nothing is written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_ft.core.data.dataset import DataError, Dataset
from tui_ft.core.data.graphstore import energy_only


@dataclass(frozen=True)
class PredictionRow:
    id: str
    prediction: float
    target: float | None = None

    @property
    def error(self) -> float | None:
        return None if self.target is None else self.prediction - self.target


@dataclass
class PredictResult:
    rows: list[PredictionRow]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    target: str = ""
    unit: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # e.g. the input is the checkpoint's training data

    @property
    def has_targets(self) -> bool:
        return any(r.target is not None for r in self.rows)

    @property
    def mae(self) -> float | None:
        errs = [abs(r.error) for r in self.rows if r.error is not None]
        return sum(errs) / len(errs) if errs else None


def convert_graphs(
    structures: Sequence[Any], converter, *, ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[int, Any], dict[int, str]]:
    """Crystal graphs ``{position: graph}`` for ``structures`` (``None`` entries skipped) and
    failures ``{position: reason}``. Serial for now; the one place a parallel converter plugs in."""
    graphs: dict[int, Any] = {}
    failed: dict[int, str] = {}
    total = len(structures)
    for i, s in enumerate(structures):
        if s is None:
            continue
        g, why = checked_graph(converter, s, i, ids[i] if ids else None)
        if g is not None:
            graphs[i] = energy_only(g)
        else:
            failed[i] = why
        if progress is not None and ((i + 1) % 50 == 0 or i + 1 == total):
            progress(i + 1, total)
    return graphs, failed


def checked_graph(converter, structure, position: int, ident: str | None) -> tuple[Any, str | None]:
    """``(graph, None)`` or ``(None, reason)``: the checks training makes before and after
    conversion (:func:`tui_ft.core.data.graphstore.structure_problem`: no sites, an element
    CHGNet has no embedding for, a lattice or coordinates that are not finite, a degenerate
    cell, overlapping atoms; :func:`~tui_ft.core.data.graphstore.graph_problem` on the graph),
    so one bad structure is reported by its id instead of failing its whole batch."""
    from tui_ft.core.data.graphstore import (
        GRAPH_FIELDS_CHECKED,
        graph_problem,
        structure_problem,
    )

    try:
        why = structure_problem(structure)
    except Exception as exc:  # noqa: BLE001 - a structure the checks cannot even measure
        why = f"unusable structure ({type(exc).__name__}: {exc})"
    if why is not None:
        return None, why
    try:
        g = converter(structure, graph_id=str(position), mp_id=ident)
    except Exception as exc:  # noqa: BLE001 - reported by id
        return None, f"graph conversion failed ({type(exc).__name__}: {exc})"
    fields = {}
    for k in GRAPH_FIELDS_CHECKED:
        v = getattr(g, k, None)
        fields[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else v
    why = graph_problem(fields)
    return (None, why) if why is not None else (g, None)


def load_model(ckpt_or_model) -> tuple[Any, dict[str, Any]]:
    """``(model, meta)`` from a checkpoint path (tui-ft's, read with ``weights_only=True``) or a model."""
    if hasattr(ckpt_or_model, "graph_converter"):
        return ckpt_or_model, {}
    from tui_ft.core.library.ckptfile import load_checkpoint
    from tui_ft.core.train.setup import _quiet_stdout, model_from_payload

    payload = ckpt_or_model if isinstance(ckpt_or_model, dict) else load_checkpoint(ckpt_or_model)
    with _quiet_stdout():  # chgnet prints "CHGNet initialized ..." on stdout, where predictions may go
        model = model_from_payload(payload)
    return model, dict(payload.get("meta") or {})


def read_inputs(source_or_paths, target: str, *, format: str | None = None, per_atom: bool = False) -> Dataset:
    """The input as one :class:`Dataset`: a Dataset as is; one path through ``load_source``
    (targets read when present, not required; ``per_atom`` divides them by the number of
    atoms, as the checkpoint's training data was); several paths as structure files."""
    from tui_ft.core.data.sources import load_source, load_structures

    if isinstance(source_or_paths, Dataset):
        return source_or_paths
    if isinstance(source_or_paths, (str, Path)):
        source_or_paths = [source_or_paths]
    paths = [Path(p) for p in source_or_paths]
    if len(paths) == 1:
        return load_source(paths[0], target, format=format, per_atom=per_atom, need_target=False)
    from tui_ft.core.data.sources import concat_datasets, detect_format

    if format in (None, "structures") and all(detect_format(p) == "structures" for p in paths):
        return load_structures(paths, target)
    ds = None  # several data sources (or a mix): one after the other; an id in two of them is an error
    for p in paths:
        part = load_source(p, target, format=format, per_atom=per_atom, need_target=False)
        if ds is not None:
            both = sorted(set(ds.ids) & set(part.ids))
            if both:
                raise DataError(f"{p}: ids also in an earlier input: {', '.join(both[:5])}"
                                + (f" ... ({len(both)} in all)" if len(both) > 5 else ""))
        ds = part if ds is None else concat_datasets(ds, part)
    return ds


def _target_of(meta: dict[str, Any]) -> str:
    data = (meta.get("preset") or {}).get("data") or {}
    return str(data.get("target") or "e_form")


def predict(
    ckpt_or_model,
    source_or_paths: Dataset | str | Path | Iterable[str | Path],
    *,
    target: str | None = None,
    format: str | None = None,
    rows: Sequence[int] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> PredictResult:
    """Predict every structure of the input (or only ``rows`` of it).

    ``progress(stage, done, total)`` is called with stage ``"graphs"`` while
    converting and ``"predict"`` per batch. Raises ``DataError`` for an input
    that cannot be read at all and ``CheckpointError`` for a bad checkpoint.
    """
    import time

    import torch

    from tui_ft.core.common.units import default_unit
    from tui_ft.core.train.parallel import CpuDataParallel, plan_workers
    from tui_ft.core.train.setup import pick_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    model, meta = load_model(ckpt_or_model)
    target = target or _target_of(meta)
    per_atom = bool(((meta.get("preset") or {}).get("data") or {}).get("per_atom", False))
    ds = read_inputs(source_or_paths, target, format=format, per_atom=per_atom)
    want = list(range(len(ds))) if rows is None else [int(r) for r in rows]
    warnings = [] if rows is not None else training_data_warnings(meta, ds, target)
    dev = pick_device(device)
    model = model.to(dev).eval()

    structures = [None if r in ds.bad_rows else ds.structures[r] for r in want]
    ids = [ds.ids[r] for r in want]
    gprog = (lambda d, t: progress("graphs", d, t)) if progress else None
    graphs, failed = convert_graphs(structures, model.graph_converter, ids=ids, progress=gprog)
    failures: dict[int, str] = {}
    for i, r in enumerate(want):
        if r in ds.bad_rows:
            failures[i] = ds.bad_rows[r]
        elif i in failed:
            failures[i] = failed[i]
        elif i not in graphs:
            failures[i] = ds.bad_rows.get(r, "unreadable structure")
    ok = [i for i in range(len(want)) if i in graphs]

    workers, threads = plan_workers(batch_size, dev)
    dp = CpuDataParallel(model, workers, threads) if workers > 1 else None
    preds: list[float] = []
    try:
        with torch.no_grad():
            for k in range(0, len(ok), batch_size):
                batch = [graphs[i] for i in ok[k : k + batch_size]]
                if dp is not None:
                    out = dp.predict(batch)
                else:
                    out = model([g.to(dev) for g in batch], task="e")["e"].detach().cpu()
                preds.extend(float(v) for v in out.reshape(-1).tolist())
                if progress is not None:
                    progress("predict", min(k + batch_size, len(ok)), len(ok))
    finally:
        if dp is not None:
            dp.close()

    out_rows = []
    for i, p in zip(ok, preds):
        y = float(ds.targets[want[i]]) if len(ds.targets) else float("nan")
        out_rows.append(PredictionRow(ids[i], p, y if math.isfinite(y) else None))
    unit = (meta.get("preset") or {}).get("data", {}).get("unit")
    if not isinstance(unit, str):
        unit = default_unit(target, meta.get("data_source"))
    return PredictResult(
        out_rows, [(ids[i], failures[i]) for i in sorted(failures)], target, unit, time.perf_counter() - t0, warnings
    )


def training_data_warnings(meta: dict[str, Any], ds: Dataset, target: str) -> list[str]:
    """``[warning]`` when ``ds`` is the data the checkpoint was trained on (as ``eval`` tells it:
    :func:`own_test_rows`), so an MAE over all its rows includes training and validation rows."""
    d = (meta.get("preset") or {}).get("data") or {}
    if target != d.get("target", target):
        return []
    test_rows = own_test_rows(meta, ds)
    if test_rows is None:
        return []
    return [(f"{ds.path} is the checkpoint's training data: its training and validation rows are among these "
             f"predictions, so an MAE over them is not a test MAE (eval scores only its {len(test_rows)} test "
             "rows by default)")]


EVAL_ROWS = ("auto", "all", "test", "val")  # ``eval --rows``


def own_test_rows(meta: dict[str, Any], ds: Dataset, *, n_held_out: int = 0, part: str = "test") -> list[int] | None:
    """The checkpoint's own test rows in ``ds`` (for ``eval``'s default; ``part="val"``: its
    validation rows), or ``None`` when ``ds`` is not the data the checkpoint was trained on (its
    ``data_sha256`` differs). With a separate test file, ``ds`` and ``n_held_out`` are what
    ``sources.load_training_data`` returned.

    The split is recomputed from the preset stored in the checkpoint's meta, with the
    dataset's bad rows excluded (rows whose graphs failed are reported by ``predict``).
    """
    from tui_ft.core.data.sources import make_source_splits

    if not meta.get("data_sha256") or meta.get("data_sha256") != ds.sha256:
        return None
    d = (meta.get("preset") or {}).get("data") or {}
    s = make_source_splits(
        len(ds), n_held_out=n_held_out, split=str(d.get("split") or "matbench"), fold=int(d.get("fold", 0)),
        fraction=float(d.get("fraction", 1.0)), val_fraction=float(d.get("val_fraction", 0.1)),
        seed=int(d.get("seed", 0)), test_limit=int(d.get("test_limit", 0)),
        test_fraction=float(d.get("test_fraction", 0.2)), exclude=sorted(ds.bad_rows),
    )
    return [int(r) for r in (s.val if part == "val" else s.test)]


def write_csv(result: PredictResult, path: Path | str) -> Path:
    """``id,prediction[,target,error]`` with the unit in a ``# unit: ...`` comment line, written atomically."""
    from tui_ft.core.common.atomic import atomic_write_text

    atomic_write_text(path, format_csv(result))
    return Path(path)


def format_csv(result: PredictResult) -> str:
    """The CSV text :func:`write_csv` writes."""
    import csv
    import io

    buf = io.StringIO()
    buf.write(f"# target: {result.target}; unit: {result.unit or '(none)'}\n")
    w = csv.writer(buf, lineterminator="\n")
    with_t = result.has_targets
    w.writerow(["id", "prediction", "target", "error"] if with_t else ["id", "prediction"])
    for r in result.rows:
        if with_t:
            w.writerow([r.id, repr(r.prediction), "" if r.target is None else repr(r.target),
                        "" if r.error is None else repr(r.error)])
        else:
            w.writerow([r.id, repr(r.prediction)])
    return buf.getvalue()


@dataclass
class Evaluation:
    """``evaluate``'s answer: the predictions, which rows were scored and why."""

    result: PredictResult
    path: Path
    rows: str  # "test": the checkpoint's own test rows; "val": its validation rows; "all": every row of the file
    own_data: bool  # the file is the data the checkpoint was trained on
    n_rows: int  # rows asked for (scored + failed)
    warnings: list[str] = field(default_factory=list)

    @property
    def mae(self) -> float | None:
        return self.result.mae


def evaluate(
    ckpt_or_payload, data: str | Path, target: str | None = None, *, rows: str = "auto", batch_size: int = 32,
    device: str = "auto", progress: Callable[[str, int, int], None] | None = None,
) -> Evaluation:
    """A checkpoint's MAE on a data source of any format (``tui-ft eval``).

    ``target`` defaults to the checkpoint's own. ``rows``: ``"auto"`` scores the
    checkpoint's own test rows when ``data`` is the data it was trained on (same
    content hash; read with the checkpoint's ``format``/``per_atom``/``test_source``),
    else every row; ``"test"`` insists on the own test rows (``DataError`` otherwise),
    ``"val"`` on the own validation rows (the rows the best epoch was chosen on: what an
    ensemble's std is scaled on); ``"all"`` scores every row, with a warning when training rows
    are among them.
    """
    from tui_ft.core.data.dataset import preset_source, resolve_source
    from tui_ft.core.data.sources import load_source, load_training_data
    from tui_ft.core.library.ckptfile import load_checkpoint

    if rows not in EVAL_ROWS:
        raise ValueError(f"rows must be one of {', '.join(EVAL_ROWS)}, got {rows!r}")
    payload = ckpt_or_payload if isinstance(ckpt_or_payload, dict) else load_checkpoint(ckpt_or_payload)
    meta = dict(payload.get("meta") or {})
    d = (meta.get("preset") or {}).get("data") or {}
    target = target or str(d.get("target") or "e_form")
    path = resolve_source(str(data))
    fmt = d.get("format") if d.get("format") not in (None, "auto") else None
    per_atom = bool(d.get("per_atom", False))
    src = meta.get("data_source")
    # ``data`` as given on the command line (the current folder's); the recorded data.source /
    # test_source as the preset wrote them (a relative path is the project root's, as training read it)
    same_file = bool(src) and _same_path(preset_source(str(src)), path)
    if same_file and target == d.get("target", target):
        test_src = d.get("test_source") or ""
        ds, n_held = load_training_data(path, target, format=fmt, per_atom=per_atom,
                                        test_path=preset_source(test_src) if test_src else None)
    else:
        ds, n_held = load_source(path, target, per_atom=per_atom), 0
    test_rows = own_test_rows(meta, ds, n_held_out=n_held) if target == d.get("target", target) else None
    warnings: list[str] = []
    if rows in ("test", "val") and test_rows is None:
        raise DataError(f"{path}: not the data checkpoint was trained on (content differs), so it has no "
                        f"{rows} rows there; use --rows all")
    if rows == "val":
        want, kind = own_test_rows(meta, ds, n_held_out=n_held, part="val") or [], "val"
        if not want:
            raise DataError(f"{path}: the checkpoint's split has no validation rows")
    elif rows == "all" or test_rows is None:
        want = [r for r in range(len(ds))]
        kind = "all"
        if test_rows is not None:
            warnings.append(f"--rows all: {path} is the checkpoint's training data; its training and validation "
                            f"rows are included, so this MAE is not a test MAE (the {len(test_rows)} test rows "
                            "are the default)")
    else:
        want, kind = list(test_rows), "test"
    res = predict(payload, ds, target=target, rows=want, batch_size=batch_size, device=device, progress=progress)
    return Evaluation(res, path, kind, test_rows is not None, len(want), warnings)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


__all__ = ["DataError", "Evaluation", "PotentialEvaluation", "PotentialResult", "PotentialRow", "PredictResult",
           "PredictionRow", "checked_graph", "convert_graphs", "evaluate", "evaluate_potential", "format_csv",
           "format_potential_csv", "is_potential", "load_model", "own_test_rows", "predict", "predict_items",
           "predict_potential", "read_inputs", "read_potential_inputs", "write_csv", "write_potential_extxyz"]


def evaluate_checkpoint(
    ckpt_path: Path | str, data_path: Path | str, target: str | None = None, *, rows: str = "auto",
    batch_size: int = 32, device: str = "auto", progress=None,
):
    """A checkpoint's MAE on a data source (any format), through ``predict``:
    :class:`tui_ft.core.library.predict.Evaluation`. ``target`` defaults to the checkpoint's own;
    ``rows="auto"`` scores the checkpoint's own test rows when the data is its training
    data, else every row (see :func:`tui_ft.core.library.predict.evaluate`)."""
    return evaluate(ckpt_path, data_path, target, rows=rows, batch_size=batch_size, device=device, progress=progress)


# ---------------------------------------------------------------- potentials
#
# A potential's checkpoint (its preset's ``[task] kind = "potential"``) predicts energies,
# forces, stresses and magmoms, all from CHGNet's energy (``train.forward.potential_forward``).
# Units here, as in training: energy eV/atom (``energy`` = total eV), forces eV/Å,
# stresses GPa with ASE's sign (positive = tensile), magmoms μB.

POTENTIAL_TARGETS = ("energy", "force", "stress", "magmom")
MAE_UNIT = {"energy": "meV/atom", "force": "meV/Å", "stress": "GPa", "magmom": "μB"}
_MAE_SCALE = {"energy": 1000.0, "force": 1000.0, "stress": 1.0, "magmom": 1.0}  # as the potential task's metrics
MAE_COUNTED = {"energy": "structures", "force": "force components", "stress": "stress components",
            "magmom": "atoms"}
FRAME_FORMATS = ("ase", "vasp", "mptrj", "mlearn", "asedb")


def is_potential(meta: dict[str, Any] | None) -> bool:
    """Whether a checkpoint's meta (or its ``preset`` dict) is a potential's (``[task] kind = "potential"``)."""
    if not isinstance(meta, dict):
        return False
    preset = meta.get("preset") if isinstance(meta.get("preset"), dict) else meta
    task = preset.get("task") if isinstance(preset, dict) else None
    return isinstance(task, dict) and task.get("kind") == "potential"


@dataclass
class PotentialRow:
    """One structure's prediction; ``label`` is its frame when the input had labels."""

    id: str
    structure: Any  # pymatgen Structure
    energy_per_atom: float  # eV/atom
    forces: Any = None  # (n, 3) eV/Å
    stress: Any = None  # (3, 3) GPa, ASE sign (positive = tensile)
    magmom: Any = None  # (n,) μB
    label: Any = None  # a tui_ft.core.data.frames.Frame, or None

    @property
    def n_atoms(self) -> int:
        return len(self.structure)

    @property
    def energy(self) -> float:
        """Total energy of the cell, eV."""
        return self.energy_per_atom * self.n_atoms


@dataclass
class PotentialResult:
    """``predict_potential``'s answer: rows, failures by id, and the MAE of each labelled target."""

    rows: list[PotentialRow]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    letters: str = "e"

    def maes(self) -> dict[str, tuple[float, int]]:
        """``{target: (MAE, count)}`` over the rows whose frame carries a usable label: energy
        meV/atom (per structure), force meV/Å (per component), stress GPa (per component), magmom
        μB (per atom, against ``|m|`` as chgnet trains it), as the potential task's test metrics."""
        import numpy as np

        from tui_ft.core.data.frames import frame_problem

        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for r in self.rows:
            f = r.label
            if f is None:
                continue
            for t, label, pred in (("energy", "energy", r.energy_per_atom), ("force", "forces", r.forces),
                                   ("stress", "stress", r.stress), ("magmom", "magmom", r.magmom)):
                if pred is None or not f.has(label) or frame_problem(f, [label]) is not None:
                    continue
                if t == "energy":
                    err = np.abs(np.asarray([pred - f.energy_per_atom]))
                elif t == "magmom":
                    err = np.abs(np.asarray(pred) - np.abs(np.asarray(f.magmom)))
                else:
                    err = np.abs(np.asarray(pred) - np.asarray(getattr(f, label)))
                sums[t] = sums.get(t, 0.0) + float(err.sum())
                counts[t] = counts.get(t, 0) + int(err.size)
        return {t: (_MAE_SCALE[t] * sums[t] / counts[t], counts[t]) for t in POTENTIAL_TARGETS if counts.get(t)}

    def label_problems(self) -> list[tuple[str, str]]:
        """``(id, reason)`` for each label present in a frame but not usable (wrong shape, NaN):
        left out of that target's MAE."""
        from tui_ft.core.data.frames import frame_problem

        out = []
        for r in self.rows:
            if r.label is None:
                continue
            for label in ("energy", "forces", "stress", "magmom"):
                if r.label.has(label):
                    why = frame_problem(r.label, [label])
                    if why is not None:
                        out.append((r.id, why))
        return out


def _frames_format(path: Path, fmt: str | None) -> str | None:
    """The frame format to read ``path`` with, or ``None`` to read it as structures / a data source."""
    from tui_ft.core.data.frames import detect_format as frame_format
    from tui_ft.core.data.sources import detect_format as source_format

    if fmt is not None:
        return fmt if fmt in FRAME_FORMATS else None
    if path.is_dir():  # a tree of VASP calculations, else a folder of structure files (or id_prop.csv)
        has_vasp = any(p.name.lower().startswith(("vasprun", "outcar")) for p in path.rglob("*") if p.is_file())
        return "vasp" if has_vasp else None
    if source_format(path) in ("structures", "csv"):
        return None
    return frame_format(path)


def read_potential_inputs(
    paths: Sequence[str | Path], *, format: str | None = None, reader_options: dict[str, Any] | None = None,
) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, str]]]:
    """The structures to predict: ``([(id, structure, frame or None)], [(id, reason)])``.

    Frames (labels kept: extxyz / anything ASE reads, VASP, MPtrj, mlearn JSON, an ASE db;
    :func:`tui_ft.core.data.frames.load_frames`) or structure files, folders of them and the
    property data sources (no labels; :func:`read_inputs`). ``reader_options`` (the run's
    ``energy_key``, ...) go to the ase / asedb readers. An id seen in two inputs is prefixed
    with its file name. Raises ``DataError`` for an input that cannot be read at all."""
    from tui_ft.core.data.frames import FrameError, load_frames

    items: list[tuple[str, Any, Any]] = []
    failures: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        try:
            kind = _frames_format(p, format)
        except FrameError as exc:
            raise DataError(str(exc)) from None
        part: list[tuple[str, Any, Any]] = []
        bad: list[tuple[str, str]] = []
        if kind is not None:
            opts = {k: v for k, v in (reader_options or {}).items() if k in READER_OPTIONS.get(kind, ())}
            try:
                fs = load_frames(p, fmt=kind, **opts)
            except FrameError as exc:
                raise DataError(str(exc)) from None
            part = [(f.id, f.structure, f) for f in fs.frames]
            bad = [(str(k), why) for k, why in fs.bad.items()]
        else:
            ds = read_inputs([p], "", format=format)
            for r in range(len(ds)):
                if r in ds.bad_rows:
                    bad.append((ds.ids[r], ds.bad_rows[r]))
                else:
                    part.append((ds.ids[r], ds.structures[r], None))
        clash = {i for i, _, _ in part} & seen
        if clash:
            part = [((f"{p.name}:{i}" if i in clash else i), s, f) for i, s, f in part]
        seen |= {i for i, _, _ in part}
        items += part
        failures += bad
    return items, failures


def _detach(x):
    return x.detach().cpu().numpy().astype("float64")


def predict_items(
    model, items: Sequence[tuple[str, Any, Any]], *, letters: str = "e", batch_size: int = 32,
    device: str = "auto", progress: Callable[[str, int, int], None] | None = None,
) -> PotentialResult:
    """A potential's predictions for ``(id, structure, frame or None)`` items, in batches of
    ``batch_size`` structures: ``letters`` ("e", "ef", "efs", "efsm") chooses the outputs of
    :func:`tui_ft.core.train.forward.potential_forward`. Each structure gets the training-time
    checks first (:func:`checked_graph`); one that fails is in ``failures`` by id."""
    import time

    import torch

    from tui_ft.core.train.forward import potential_forward
    from tui_ft.core.train.setup import pick_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    dev = pick_device(device)
    model = model.to(dev).eval()
    graphs: dict[int, Any] = {}
    failures: dict[int, str] = {}
    for i, (ident, s, _) in enumerate(items):
        g, why = checked_graph(model.graph_converter, s, i, ident)
        if g is None:
            failures[i] = why
        else:
            graphs[i] = energy_only(g)
        if progress is not None and ((i + 1) % 50 == 0 or i + 1 == len(items)):
            progress("graphs", i + 1, len(items))
    ok = [i for i in range(len(items)) if i in graphs]
    rows: list[PotentialRow] = []
    need_grad = "f" in letters or "s" in letters
    for k in range(0, len(ok), batch_size):
        chunk = ok[k : k + batch_size]
        batch = [graphs[i].to(dev) for i in chunk]
        with torch.set_grad_enabled(need_grad):
            out = potential_forward(model, batch, letters, create_graph=False)
        e = out["e"].detach().cpu().reshape(-1).tolist()
        for j, i in enumerate(chunk):
            ident, s, frame = items[i]
            rows.append(PotentialRow(
                ident, s, float(e[j]),
                forces=_detach(out["f"][j]) if "f" in out else None,
                stress=_detach(out["s"][j]) if "s" in out else None,
                magmom=_detach(out["m"][j]).reshape(-1) if "m" in out else None,
                label=frame,
            ))
        if progress is not None:
            progress("predict", min(k + batch_size, len(ok)), len(ok))
    return PotentialResult(rows, [(items[i][0], failures[i]) for i in sorted(failures)],
                           time.perf_counter() - t0, [], letters)


def predict_potential(
    ckpt_or_model, inputs: str | Path | Sequence[str | Path], *, forces: bool = False, stress: bool = False,
    format: str | None = None, batch_size: int = 32, device: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> PotentialResult:
    """A potential's energies (and with ``forces`` / ``stress`` those) for every structure of the
    inputs (:func:`read_potential_inputs`). Raises ``DataError`` / ``CheckpointError``."""
    model, meta = load_model(ckpt_or_model)
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items, unread = read_potential_inputs(paths, format=format, reader_options=_reader_options(meta))
    letters = "e" + ("f" if forces else "") + ("s" if stress else "")
    res = predict_items(model, items, letters=letters, batch_size=batch_size, device=device, progress=progress)
    res.failures = unread + res.failures
    return res


_ASE_KEYS = ("energy_key", "forces_key", "stress_key", "magmom_key")
READER_OPTIONS = {"ase": _ASE_KEYS, "asedb": _ASE_KEYS, "mlearn": ("shear_order",)}  # a run's [task] keys per reader


def _reader_options(meta: dict[str, Any]) -> dict[str, Any]:
    task = ((meta.get("preset") or {}).get("task") or {}) if isinstance(meta, dict) else {}
    return {k: task[k] for k in {k for keys in READER_OPTIONS.values() for k in keys} if task.get(k)}


def format_potential_csv(result: PotentialResult) -> str:
    """One row per structure: ``id,n_atoms,energy_eV_per_atom,energy_eV`` and, when the input has
    labels, the DFT energy per atom and the structure's force and stress MAE (as test_predictions.csv)."""
    import csv
    import io


    labelled = any(r.label is not None for r in result.rows)
    buf = io.StringIO()
    buf.write("# potential: energy per atom (eV/atom) and total energy (eV) per structure"
              + ("; force MAE eV/Å per component, stress MAE GPa per component" if labelled else "") + "\n")
    w = csv.writer(buf, lineterminator="\n")
    head = ["id", "n_atoms", "energy_eV_per_atom", "energy_eV"]
    if labelled:
        head += ["energy_true_eV_per_atom", "force_mae_eV_per_A", "stress_mae_GPa"]
    w.writerow(head)
    for r in result.rows:
        row = [r.id, r.n_atoms, repr(r.energy_per_atom), repr(r.energy)]
        if labelled:
            f = r.label
            e_true = "" if f is None or f.energy is None else repr(f.energy_per_atom)
            row += [e_true, _frame_mae(f, r.forces, "forces"), _frame_mae(f, r.stress, "stress")]
        w.writerow(row)
    return buf.getvalue()


def _frame_mae(frame, pred, label: str) -> str:
    """One structure's MAE of ``label`` (eV/Å or GPa, per component) as CSV text, "" without a usable label."""
    import numpy as np

    if frame is None or pred is None or getattr(frame, label) is None:
        return ""
    a, b = np.asarray(pred), np.asarray(getattr(frame, label))
    return repr(float(np.abs(a - b).mean())) if a.shape == b.shape and np.isfinite(b).all() else ""


def write_potential_extxyz(result: PotentialResult, path: Path | str) -> Path:
    """Every predicted structure as extxyz (``ase.io.write(..., format="extxyz")``, written
    atomically) with a SinglePointCalculator holding what was predicted: ``energy`` (total, eV),
    ``forces`` (eV/Å), ``stress`` (eV/Å³, ASE's sign -- positive = tensile -- and ASE's Voigt
    order xx yy zz yz xz xy; CHGNet's GPa x ``ase.units.GPa``). ``info["id"]`` is the structure's id."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress
    from ase.units import GPa
    from pymatgen.io.ase import AseAtomsAdaptor

    from tui_ft.core.common.atomic import atomic_write

    images = []
    for r in result.rows:
        atoms = AseAtomsAdaptor.get_atoms(r.structure)
        atoms.info = {"id": r.id}
        res: dict[str, Any] = {"energy": r.energy}
        if r.forces is not None:
            res["forces"] = r.forces
        if r.stress is not None:
            res["stress"] = full_3x3_to_voigt_6_stress(r.stress * GPa)
        atoms.calc = SinglePointCalculator(atoms, **res)
        images.append(atoms)
    atomic_write(path, lambda fh: ase.io.write(fh, images, format="extxyz"), binary=False)
    return Path(path)


@dataclass
class PotentialEvaluation:
    """``evaluate_potential``'s answer: predictions with labels, and which rows were scored."""

    result: PotentialResult
    path: Path  # the data scored
    rows: str  # "test": the run's own test rows; "val": its validation rows; "all": every frame of the data
    n_rows: int  # structures asked for (scored + failed)
    warnings: list[str] = field(default_factory=list)

    def maes(self) -> dict[str, tuple[float, int]]:
        return self.result.maes()


class _RunShim:
    """What ``PotentialTask.load_data`` reads of a trainer, to rebuild a run's data and splits."""

    def __init__(self, preset, paths) -> None:
        from types import SimpleNamespace

        self.p, self.paths, self.dist = preset, paths, SimpleNamespace(active=False)
        self.said: list[str] = []
        self.warnings: list[str] = []

    def say(self, text: str, level: str = "info") -> None:
        self.said.append(text)


def own_potential_data(meta: dict[str, Any]):
    """A potential run's own frames and splits, rebuilt from the preset in its checkpoint:
    ``(task, shim)`` with ``task.frames`` and ``shim.splits`` / ``shim.ds``. ``DataError`` when the
    data cannot be read or is not what the run trained on (its content hash differs)."""
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.fields import PresetError
    from tui_ft.core.config.presets import preset_from_dict
    from tui_ft.core.task.potential import PotentialTask
    from tui_ft.core.train.errors import TrainingFailed

    try:
        preset = preset_from_dict(dict(meta.get("preset") or {}), "the checkpoint's preset")
    except PresetError as exc:
        raise DataError(f"the checkpoint's preset cannot be read back ({' '.join(str(exc).split())[:200]})") from None
    shim = _RunShim(preset, Paths.default())
    task = PotentialTask(preset)
    try:
        task.load_data(shim)
    except TrainingFailed as exc:
        raise DataError(str(exc)) from None
    want = meta.get("data_sha256")
    if want and want != shim.ds.sha256:
        raise DataError(f"{shim.ds.path}: not the data this checkpoint was trained on (its content changed since "
                        "the run); pass the frames to score with --data")
    started = _run_started(meta)
    if started is not None and started.skipped:  # the engine re-split without the frames its graphs refused
        gone = set(started.skipped)
        shim.splits = task.resplit(shim, {r for r, i in enumerate(shim.ds.ids) if i in gone})
    if started is not None and started.n_test != len(shim.splits.test):
        shim.warnings.append(f"the run tested {started.n_test} frames, the split rebuilt from its preset has "
                             f"{len(shim.splits.test)}; these MAEs may not be the run's test MAEs")
    return task, shim


def _run_started(meta: dict[str, Any]):
    """The last ``RunStarted`` event of the checkpoint's run (its test count, the frames it left out), or None."""
    from tui_ft.core.common.events import RunStarted, read_events
    from tui_ft.core.common.paths import Paths

    run_id = meta.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return None
    try:
        path = Paths.default().run_log_dir(run_id) / "events.jsonl"
    except ValueError:
        return None
    if not path.is_file():
        return None
    started = [e for e in read_events(path, warn=lambda _msg: None) if isinstance(e, RunStarted)]
    return started[-1] if started else None


def evaluate_potential(
    ckpt_or_payload, data: str | Path | None = None, *, rows: str = "auto", batch_size: int = 32,
    device: str = "auto", format: str | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> PotentialEvaluation:
    """A potential checkpoint's MAE per labelled target (``tui-ft eval`` on a potential).

    ``data`` ``None`` or the run's own data (same path): its test rows, rebuilt from the
    preset in the checkpoint (``rows="val"``: its validation rows; ``rows="all"``: every frame,
    with a warning); other data: every frame (``rows="test"``/``"val"`` are then a ``DataError``)."""
    from tui_ft.core.data.dataset import preset_source, resolve_source
    from tui_ft.core.library.ckptfile import load_checkpoint

    if rows not in EVAL_ROWS:
        raise ValueError(f"rows must be one of {', '.join(EVAL_ROWS)}, got {rows!r}")
    payload = ckpt_or_payload if isinstance(ckpt_or_payload, dict) else load_checkpoint(ckpt_or_payload)
    meta = dict(payload.get("meta") or {})
    model, _ = load_model(payload)
    src = meta.get("data_source")
    path = resolve_source(str(data)) if data is not None else None
    own = data is None or (bool(src) and _same_path(preset_source(str(src)), path))  # recorded: the root's
    warnings: list[str] = []
    if own:
        task, shim = own_potential_data(meta)
        path = shim.ds.path
        warnings += shim.warnings
        if rows == "all":
            want, kind = list(range(len(task.frames))), "all"
            warnings.append(f"--rows all: {path} is the run's training data; its training and validation frames "
                            f"are included, so these MAEs are not test MAEs (the {len(shim.splits.test)} test frames "
                            "are the default)")
        elif rows == "val":
            want, kind = [int(r) for r in shim.splits.val], "val"
            if not want:
                raise DataError(f"{path}: the run has no validation frames")
        else:
            want, kind = [int(r) for r in shim.splits.test], "test"
            if not want:
                raise DataError(f"{path}: the run has no test frames (data.test_limit / test_fraction); "
                                "use --rows all or pass other frames with --data")
        items = [(task.frames[r].id, task.frames[r].structure, task.frames[r]) for r in want]
        unread: list[tuple[str, str]] = []
    else:
        if rows in ("test", "val"):
            raise DataError(f"{path}: not the data the checkpoint was trained on, so it has no {rows} rows there; "
                            "use --rows all")
        items, unread = read_potential_inputs([path], format=format, reader_options=_reader_options(meta))
        kind = "all"
    labelled = [f for _, _, f in items if f is not None]
    letters = "e" + "".join(c for c, lab in (("f", "forces"), ("s", "stress"), ("m", "magmom"))
                            if any(f.has(lab) for f in labelled))
    res = predict_items(model, items, letters=letters, batch_size=batch_size, device=device, progress=progress)
    res.failures = unread + res.failures
    return PotentialEvaluation(res, Path(path), kind, len(items) + len(unread), warnings)
