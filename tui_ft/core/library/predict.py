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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tui_ft.core.data.dataset import Dataset, DataError
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
        try:
            graphs[i] = energy_only(converter(s, graph_id=str(i), mp_id=ids[i] if ids else None))
        except Exception as exc:  # noqa: BLE001 - reported by id
            failed[i] = f"graph conversion failed ({type(exc).__name__}: {exc})"
        if progress is not None and ((i + 1) % 50 == 0 or i + 1 == total):
            progress(i + 1, total)
    return graphs, failed


def load_model(ckpt_or_model) -> tuple[Any, dict[str, Any]]:
    """``(model, meta)`` from a checkpoint path (tui-ft's, read with ``weights_only=True``) or a model."""
    if hasattr(ckpt_or_model, "graph_converter"):
        return ckpt_or_model, {}
    from tui_ft.core.train.setup import _quiet_stdout, model_from_payload
    from tui_ft.core.library.ckptfile import load_checkpoint

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

    from tui_ft.core.train.setup import pick_device
    from tui_ft.core.train.parallel import CpuDataParallel, plan_workers
    from tui_ft.core.common.units import default_unit

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


def own_test_rows(meta: dict[str, Any], ds: Dataset, *, n_held_out: int = 0) -> list[int] | None:
    """The checkpoint's own test rows in ``ds`` (for ``eval``'s default), or ``None`` when ``ds``
    is not the data the checkpoint was trained on (its ``data_sha256`` differs). With a separate
    test file, ``ds`` and ``n_held_out`` are what ``sources.load_training_data`` returned.

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
    return [int(r) for r in s.test]


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
    rows: str  # "test": the checkpoint's own test rows; "all": every row of the file
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
    else every row; ``"test"`` insists on the own test rows (``DataError`` otherwise);
    ``"all"`` scores every row, with a warning when training rows are among them.
    """
    from tui_ft.core.data.dataset import resolve_source
    from tui_ft.core.library.ckptfile import load_checkpoint
    from tui_ft.core.data.sources import load_source, load_training_data

    if rows not in ("auto", "all", "test"):
        raise ValueError(f"rows must be auto, all or test, got {rows!r}")
    payload = ckpt_or_payload if isinstance(ckpt_or_payload, dict) else load_checkpoint(ckpt_or_payload)
    meta = dict(payload.get("meta") or {})
    d = (meta.get("preset") or {}).get("data") or {}
    target = target or str(d.get("target") or "e_form")
    path = resolve_source(str(data))
    fmt = d.get("format") if d.get("format") not in (None, "auto") else None
    per_atom = bool(d.get("per_atom", False))
    src = meta.get("data_source")
    same_file = bool(src) and _same_path(resolve_source(str(src)), path)
    if same_file and target == d.get("target", target):
        test_src = d.get("test_source") or ""
        ds, n_held = load_training_data(path, target, format=fmt, per_atom=per_atom,
                                        test_path=resolve_source(test_src) if test_src else None)
    else:
        ds, n_held = load_source(path, target, per_atom=per_atom), 0
    test_rows = own_test_rows(meta, ds, n_held_out=n_held) if target == d.get("target", target) else None
    warnings: list[str] = []
    if rows == "test" and test_rows is None:
        raise DataError(f"{path}: not the data checkpoint was trained on (content differs), so it has no "
                        "test rows there; use --rows all")
    if rows == "all" or test_rows is None:
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


__all__ = ["DataError", "Evaluation", "PredictResult", "evaluate", "format_csv", "PredictionRow", "convert_graphs", "load_model", "own_test_rows", "predict", "read_inputs",
           "write_csv"]


def evaluate_checkpoint(
    ckpt_path: Path | str, data_path: Path | str, target: str | None = None, *, rows: str = "auto",
    batch_size: int = 32, device: str = "auto", progress=None,
):
    """A checkpoint's MAE on a data source (any format), through ``predict``:
    :class:`tui_ft.core.library.predict.Evaluation`. ``target`` defaults to the checkpoint's own;
    ``rows="auto"`` scores the checkpoint's own test rows when the data is its training
    data, else every row (see :func:`tui_ft.core.library.predict.evaluate`)."""
    return evaluate(ckpt_path, data_path, target, rows=rows, batch_size=batch_size, device=device, progress=progress)
