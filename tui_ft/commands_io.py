"""Data and model in/out commands of ``tui-ft``: ``eval``, ``export``, ``predict``,
``runs --format`` and ``history``. ``cli.py`` holds only their parsers and dispatch.

Exit codes (as in ``cli``): 0 done; 1 the command ran but its result is not usable
(``predict``: at least one structure failed, the others are written; ``eval``: no
usable rows or a NaN MAE); 2 usage, checkpoint or data error (nothing is written).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, fields
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _reason(ident: str, why: str) -> str:
    """A failure's reason without the id repeated at its start."""
    return why[len(ident) + 2:] if why.startswith(f"{ident}: ") else why


def _resolve(ref: str):
    """A checkpoint reference (``run@best``, a .pt path) -> its path; ``None`` after saying why."""
    from tui_ft.core.library.checkpoints import Library

    try:
        return Library().resolve_ref(ref).path
    except LookupError as exc:
        _err(f"{ref}: {exc}")
        return None


def _is_potential(path) -> bool:
    """Whether the checkpoint at ``path`` is a potential's (its preset's ``[task] kind = "potential"``)."""
    from tui_ft.core.library.ckptfile import read_checkpoint_meta
    from tui_ft.core.library.predict import is_potential

    meta, _ = read_checkpoint_meta(Path(path))
    return meta is not None and isinstance(meta.preset, dict) and is_potential({"preset": meta.preset})


class Progress:
    """Progress of ``predict``/``eval``: ``progress(stage, done, total)`` becomes the same throttled
    :class:`tui_ft.core.common.events.Progress` events a run emits, shown by the same printer (a rich bar on
    a terminal, a few plain milestone lines otherwise), so there is one progress display."""

    def __init__(self) -> None:
        from tui_ft.printer import make_printer

        self.printer = make_printer(False)
        self.reporters: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tui_ft.core.common.progress import ProgressReporter

        rep = self.reporters.get(stage)
        if rep is None:
            rep = self.reporters[stage] = ProgressReporter(self.printer.show, "eval", stage)
        rep(done, total)

    def close(self) -> None:
        self.printer.close()


# ---------------------------------------------------------------- eval


def _not_a_pipe(data: str) -> bool:
    """False (after one line) when a data input names a FIFO, a device or the like: reading it
    could hang or never end. Folders are inputs too (id_prop.csv, structure files)."""
    from tui_ft.core.data.dataset import DataError, check_regular_file
    from tui_ft.core.common.paths import NAMED_SOURCES

    path = Path(data).expanduser()
    if data in NAMED_SOURCES or path.is_dir() or not path.exists():
        return True  # resolved (and a missing file reported) by the loader
    try:
        check_regular_file(path)
    except DataError as exc:
        _err(str(exc))
        return False
    return True


def cmd_eval(ref: str, data: str | None, target: str | None, device: str, rows: str = "auto", batch_size: int = 32,
             fmt: str = "table") -> int:
    """MAE of a checkpoint on a data source; by default its own test rows when the data is its own.
    A potential's checkpoint: the MAE of each labelled target (:func:`_eval_potential`)."""
    from tui_ft.core.common.units import with_unit

    if data is not None and not _not_a_pipe(data):
        return EXIT_USAGE
    path = _resolve(ref)
    if path is None:
        return EXIT_USAGE
    if _is_potential(path):
        if target is not None:
            _err(f"{ref}: --target does not apply to a potential's checkpoint (it is scored on every labelled "
                 "target: energy, forces, stress, magmoms)")
            return EXIT_USAGE
        return _eval_potential(ref, path, data, device, rows, batch_size, fmt)
    if data is None:
        _err(f"{ref}: eval of a property checkpoint needs --data SOURCE (its own data, for its test rows, or any "
             "other data source)")
        return EXIT_USAGE
    from tui_ft.core.library.predict import evaluate_checkpoint

    ev = _evaluated(evaluate_checkpoint, path, data, target, rows=rows, batch_size=batch_size, device=device)
    if isinstance(ev, int):
        return ev
    res = ev.result
    which = {"test": "the checkpoint's test rows", "val": "the checkpoint's validation rows"}.get(ev.rows, "all rows")
    n = sum(1 for r in res.rows if r.target is not None)
    if n == 0:
        _err(f"error: no usable rows with a {res.target!r} target in {ev.path} ({which}: {ev.n_rows} asked, "
             f"{len(res.failures)} left out); no MAE")
        return EXIT_USAGE  # nothing to evaluate is a data error, like an unreadable file
    mae = res.mae
    if mae is None or not math.isfinite(mae):
        bad = sum(1 for r in res.rows if not math.isfinite(r.prediction))
        _err(f"error: the MAE is {mae} ({bad} of {n} predictions are not finite numbers); checkpoint {path}")
        return EXIT_FAILED
    if fmt == "json":
        print(json.dumps({"checkpoint": str(path), "data": str(ev.path), "rows": ev.rows, "target": res.target,
                          "n_structures": n, "mae": {"value": mae, "unit": res.unit or None},
                          "left_out": [{"id": i, "reason": _reason(i, w)} for i, w in res.failures]}, indent=2))
        return EXIT_OK
    print(f"mae {with_unit(f'{mae:.4f}', res.unit)} on {n} structures of {ev.path} ({which}, target "
          f"{res.target}) (checkpoint {path})")
    return EXIT_OK


def _evaluated(evaluate, *args, **kw):
    """``evaluate(*args, progress=..., **kw)`` with its progress on stderr; its warnings and the
    structures it left out said once; the exit code instead when the checkpoint or data is refused."""
    from tui_ft.core.data.dataset import DataError
    from tui_ft.core.library.ckptfile import CheckpointError

    progress = Progress()
    try:
        ev = evaluate(*args, progress=progress, **kw)
    except (CheckpointError, DataError) as exc:
        progress.close()
        _err(str(exc))
        return EXIT_USAGE
    progress.close()
    for w in ev.warnings:
        _err(f"[warning] {w}")
    for ident, why in ev.result.failures:
        _err(f"[warning] structure {ident} left out: {_reason(ident, why)}")
    return ev


def _eval_potential(ref: str, path, data: str | None, device: str, rows: str, batch_size: int, fmt: str) -> int:
    """A potential checkpoint's MAE per labelled target: energy (meV/atom), force components
    (meV/Å), stress components (GPa), magmoms (μB); a table or ``--format json``."""
    from tui_ft.core.library.predict import MAE_COUNTED, MAE_UNIT, evaluate_potential

    ev = _evaluated(evaluate_potential, path, data, rows=rows, batch_size=batch_size, device=device)
    if isinstance(ev, int):
        return ev
    res = ev.result
    for ident, why in res.label_problems():
        _err(f"[warning] structure {ident}: label left out of its MAE: {_reason(ident, why)}")
    which = {"test": "the run's test frames", "val": "the run's validation frames"}.get(ev.rows, "all frames")
    maes = ev.maes()
    if not maes:
        _err(f"error: no labelled structures in {ev.path} ({which}: {ev.n_rows} asked, {len(res.failures)} left "
             "out); no MAE (frames need energy, forces, stress or magmom labels)")
        return EXIT_USAGE
    bad = [t for t, (v, _) in maes.items() if not math.isfinite(v)]
    if fmt == "json":
        out = {"checkpoint": str(path), "data": str(ev.path), "rows": ev.rows, "n_structures": len(res.rows),
               "mae": {t: {"value": v if math.isfinite(v) else None, "unit": MAE_UNIT[t], "n": n, "counted": MAE_COUNTED[t]}
                       for t, (v, n) in maes.items()},
               "left_out": [{"id": i, "reason": _reason(i, w)} for i, w in res.failures]}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(f"{len(res.rows)} structures of {ev.path} ({which}) (checkpoint {path})")
        print(f"{'target':<8} {'MAE':>12}  {'unit':<9} over")
        for t, (v, n) in maes.items():
            print(f"{t:<8} {v:>12.4f}  {MAE_UNIT[t]:<9} {n} {MAE_COUNTED[t]}")
    if bad:
        _err(f"error: the {', '.join(bad)} MAE is not a finite number (the model predicts NaN or inf); checkpoint {path}")
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- export


def _out_refused(out: str | None, inputs: list, force: bool, what: str = "--out") -> bool:
    """True (after one line) when ``out`` breaks the output rule (:mod:`tui_ft.core.common.outputs`),
    checked before any input is read. ``inputs``: the checkpoint reference and the data inputs as given."""
    from tui_ft.core.common.outputs import OutputPathError, check_output_path

    if out is None:
        return False
    try:
        check_output_path(out, inputs=inputs, force=force, what=what)
    except OutputPathError as exc:
        _err(str(exc))
        return True
    return False


def cmd_export(ref: str, out: str, force: bool = False) -> int:
    """Write a file chgnet's ``CHGNet.from_file`` loads (exit 2 when the checkpoint or the file is bad;
    the output path follows :func:`tui_ft.core.common.outputs.check_output_path`)."""
    from tui_ft.core.library.export import ExportError, export_checkpoint, read_export_info
    from tui_ft.core.library.ckptfile import CheckpointError

    if _out_refused(out, [ref], force, "OUT"):
        return EXIT_USAGE
    path = _resolve(ref)
    if path is None:
        return EXIT_USAGE
    try:
        written = export_checkpoint(path, out, force=force)
    except (CheckpointError, ExportError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    info = read_export_info(written)
    print(written)
    _err(f"exported {path} -> {written}: load it with chgnet.model.CHGNet.from_file({str(written)!r}); "
         f"{info.get('output', '')}")
    return EXIT_OK


# ---------------------------------------------------------------- predict


def cmd_predict(ref: str, inputs: list[str], out: str | None, *, batch_size: int = 32, device: str = "auto",
                target: str | None = None, format: str | None = None, force: bool = False,
                forces: bool = False, stress: bool = False, xyz: str | None = None) -> int:
    """Predictions for every structure of the inputs as CSV (to ``out`` or stdout); a potential's
    checkpoint: energies per structure, and with ``forces`` / ``stress`` (or ``xyz``) an extxyz file
    (:func:`_predict_potential`).

    Exit 0: every structure predicted; 1: some failed (listed by id on stderr, the
    others written); 2: the checkpoint or an input cannot be read (nothing written).
    """
    from tui_ft.core.data.dataset import DataError, resolve_source
    from tui_ft.core.library.ckptfile import CheckpointError
    from tui_ft.core.library.predict import FRAME_FORMATS, format_csv, predict, write_csv

    if _out_refused(out, [ref, *inputs], force):
        return EXIT_USAGE
    if not all(_not_a_pipe(i) for i in inputs):
        return EXIT_USAGE
    path = _resolve(ref)
    if path is None:
        return EXIT_USAGE
    if _is_potential(path):
        if target is not None:
            _err(f"{ref}: --target does not apply to a potential's checkpoint (it predicts energies, forces and stresses)")
            return EXIT_USAGE
        return _predict_potential(ref, path, inputs, out, batch_size=batch_size, device=device, format=format,
                                  force=force, forces=forces, stress=stress, xyz=xyz)
    if forces or stress or xyz:
        what = "--forces" if forces else "--stress" if stress else "--xyz"
        _err(f"{ref}: {what}: this checkpoint predicts one property per structure through CHGNet's energy output, so "
             "forces and stresses derived from it are meaningless; only a potential's checkpoint (task.kind = "
             "\"potential\") has physical forces")
        return EXIT_USAGE
    if format in FRAME_FORMATS and format != "ase":
        _err(f"--format {format}: a frame format, read only for a potential's checkpoint; {ref} is a property's "
             "(formats: matbench, idprop, ase, csv, structures)")
        return EXIT_USAGE
    srcs = [str(resolve_source(i)) if i == "demo" else i for i in inputs]
    progress = Progress()
    try:
        res = predict(path, srcs if len(srcs) > 1 else srcs[0], target=target, format=format,
                      batch_size=batch_size, device=device, progress=progress)
    except (CheckpointError, DataError) as exc:
        progress.close()
        _err(str(exc))
        return EXIT_USAGE
    progress.close()
    for w in res.warnings:
        _err(f"[warning] {w}")
    if res.rows:
        if out:
            write_csv(res, out)
        else:
            sys.stdout.write(format_csv(res))
            sys.stdout.flush()
    for ident, why in res.failures:
        _err(f"[error] {ident}: {_reason(ident, why)}")
    total = len(res.rows) + len(res.failures)
    where = f" -> {out}" if out and res.rows else ""
    mae = res.mae
    extra = f", MAE {mae:.4f}{' ' + res.unit if res.unit else ''} on the {sum(r.target is not None for r in res.rows)} with targets" if mae is not None else ""
    if extra and res.warnings:
        extra += " (training rows included: not a test MAE)"
    _err(f"predicted {len(res.rows)} of {total} structures{where} ({res.seconds:.1f}s){extra}"
         + (f"; {len(res.failures)} failed" if res.failures else ""))
    return EXIT_FAILED if res.failures else EXIT_OK


def write_predictions(text: str, out: str | None, xyz_path: str | None, write_xyz) -> bool:
    """A potential's predictions out: ``write_xyz(xyz_path)`` when asked, the CSV ``text`` to
    ``out`` (atomically) or to stdout; False after one line when a file cannot be written."""
    from tui_ft.core.common.atomic import atomic_write_text

    try:
        if xyz_path is not None:
            write_xyz(xyz_path)
        if out:
            atomic_write_text(out, text)
    except OSError as exc:
        _err(f"{exc.filename or out}: cannot write ({exc.strerror or exc})")
        return False
    if not out:
        sys.stdout.write(text)
        sys.stdout.flush()
    return True


def _extxyz_path(out: str | None, xyz: str | None) -> str | None:
    if xyz:
        return xyz
    return str(Path(out).with_suffix(".extxyz")) if out else None


def _predict_potential(ref: str, path, inputs: list[str], out: str | None, *, batch_size: int, device: str,
                       format: str | None, force: bool, forces: bool, stress: bool, xyz: str | None) -> int:
    """A potential's energies as CSV (eV/atom and total eV), and with ``--forces`` / ``--stress``
    an extxyz file whose SinglePointCalculator holds energy (total eV), forces (eV/Å) and stress
    (eV/Å³, ASE's sign -- positive = tensile -- and Voigt order xx yy zz yz xz xy)."""
    from tui_ft.core.data.dataset import DataError, resolve_source
    from tui_ft.core.library.ckptfile import CheckpointError
    from tui_ft.core.library.predict import (
        MAE_UNIT,
        format_potential_csv,
        predict_potential,
        write_potential_extxyz,
    )

    xyz_path = _extxyz_path(out, xyz) if (forces or stress or xyz) else None
    if (forces or stress) and xyz_path is None:
        _err("--forces / --stress write an extxyz file: give --out preds.csv (the file is then preds.extxyz) "
             "or --xyz FILE.extxyz")
        return EXIT_USAGE
    if xyz_path is not None and out and Path(xyz_path).expanduser().resolve() == Path(out).expanduser().resolve():
        _err(f"--xyz {xyz_path}: the same file as --out; give the extxyz file another name")
        return EXIT_USAGE
    if xyz_path is not None:
        from tui_ft.core.common.outputs import OutputPathError, check_output_path

        try:
            check_output_path(xyz_path, inputs=[path, *inputs], force=force, what="--xyz", example="preds.extxyz")
        except OutputPathError as exc:
            _err(str(exc))
            return EXIT_USAGE
    srcs = [str(resolve_source(i)) if i in ("demo", "demo_potential") else i for i in inputs]
    progress = Progress()
    try:
        res = predict_potential(path, srcs, forces=forces, stress=stress, format=format, batch_size=batch_size,
                                device=device, progress=progress)
    except (CheckpointError, DataError) as exc:
        progress.close()
        _err(str(exc))
        return EXIT_USAGE
    progress.close()
    for w in res.warnings:
        _err(f"[warning] {w}")
    if res.rows and not write_predictions(format_potential_csv(res), out, xyz_path,
                                          lambda p: write_potential_extxyz(res, p)):
        return EXIT_USAGE
    for ident, why in res.failures:
        _err(f"[error] {ident}: {_reason(ident, why)}")
    total = len(res.rows) + len(res.failures)
    where = ", ".join(x for x in (out, xyz_path) if x) if res.rows else ""
    maes = res.maes()
    extra = ("; MAE " + ", ".join(f"{t} {v:.4g} {MAE_UNIT[t]}" for t, (v, _) in maes.items())) if maes else ""
    _err(f"predicted {len(res.rows)} of {total} structures{' -> ' + where if where else ''} ({res.seconds:.1f}s)"
         f"{extra}" + (f"; {len(res.failures)} failed" if res.failures else ""))
    return EXIT_FAILED if res.failures else EXIT_OK


# ---------------------------------------------------------------- metrics out


TIME_KEYS = ("time", "started", "updated")  # seconds since 1970: ISO 8601 in CSV and tables


def iso_time(t: float | None) -> str:
    """``1796170847.66`` -> ``2026-12-01T14:20:47+01:00`` (local time with its offset; "" for None)."""
    from datetime import datetime

    if t is None or not isinstance(t, (int, float)) or not math.isfinite(t):
        return ""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _run_row(s) -> dict:
    d = {f.name: getattr(s, f.name) for f in fields(s) if f.name not in ("history", "preset", "test_metrics")}
    d["elapsed"] = s.elapsed
    d["n_epochs_logged"] = s.history.seen
    d["unit"] = next((e.unit for e in reversed(s.history) if getattr(e, "unit", "")), "")
    # every named metric of the best epoch (best_val_force_mae, ...) and of the test
    # (test_force_mae, ...); units as in tui_ft.core.common.metrics: meV/atom, meV/Å, GPa, μB
    for k, v in (s.best_metrics() or {}).items():
        if k.startswith("val_"):
            d[f"best_{k}"] = v
    for k, v in (s.test_metrics or {}).items():
        d.setdefault(k, v)
    return d


def _write_rows(rows: list[dict], fmt: str) -> None:
    """Rows as JSON (times as numbers, with ``<key>_iso`` beside them) or CSV (times in ISO 8601)."""
    if fmt == "json":  # NaN/inf are not JSON: null
        out = []
        for r in _nan_to_none(rows):
            row = {}
            for k, v in r.items():
                row[k] = v
                if k in TIME_KEYS:
                    row[f"{k}_iso"] = iso_time(v) or None
            out.append(row)
        print(json.dumps(out, indent=2, allow_nan=False, default=str))
        return
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    w = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: iso_time(v) if k in TIME_KEYS else "" if v is None else v for k, v in r.items()})


def _nan_to_none(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def filtered_runs(where: str | None, paths=None):
    """Every run under ``logs/`` (newest first) that ``where`` matches; ``None`` after saying
    why a filter is bad (its column marked) on stderr."""
    from tui_ft.core.library.compare import FilterError, select_runs
    from tui_ft.core.library.runs import list_runs

    runs = list_runs(paths, warn=_err)
    try:
        return select_runs(runs, where)
    except FilterError as exc:
        _err(f"error: --where: {exc}")
        _err("  " + exc.pointer().replace("\n", "\n  "))
        return None


def cmd_runs_export(fmt: str, where: str | None = None) -> int:
    """Every run (that ``where`` matches), one row each, all columns (``tui-ft runs --format csv|json``)."""
    runs = filtered_runs(where)
    if runs is None:
        return EXIT_USAGE
    _write_rows([_run_row(s) for s in runs], fmt)
    return EXIT_OK


def cmd_compare(names: list[str], fmt: str = "text") -> int:
    """Runs side by side (``tui-ft compare RUN RUN... [--format text|json]``): the resolved preset
    keys that differ, data and split hashes included, and each run's results."""
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.library.compare import compare_lines, compare_runs
    from tui_ft.core.library.runs import resolve_run, summarize

    paths = Paths.default()
    ids: list[str] = []
    for name in names:
        try:
            run_id, how = resolve_run(name, paths)
        except LookupError as exc:
            _err(f"error: {exc}")
            return EXIT_USAGE
        if how:
            _err(f"{name}: run {run_id} ({how})")
        if run_id not in ids:
            ids.append(run_id)
    if len(ids) < 2:
        _err(f"error: compare needs two or more runs; {', '.join(names)} name{'s' if len(names) == 1 else ''} only {ids[0]}")
        return EXIT_USAGE
    summaries = [summarize(paths.run_log_dir(r), warn=_err, history_max=64) for r in ids]
    res = compare_runs(summaries)
    if fmt == "json":
        print(json.dumps(res.to_dict(), indent=2, allow_nan=False, default=str))
    else:
        print("\n".join(compare_lines(res)))
    return EXIT_OK


def _num(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def history_table(s) -> list[str]:
    """A run's epochs as the lines of a table (``tui-ft history`` on a terminal): a caption
    naming the run, its status and the MAEs' unit, a header, one line per epoch."""
    from tui_ft.core.common.units import with_unit

    unit = next((e.unit for e in reversed(s.history) if getattr(e, "unit", "")), "")
    test = f", test MAE {with_unit(f'{s.test_mae:.4f}', unit)}" if s.test_mae is not None else ""
    lines = [f"run {s.run_id} (preset {s.preset_name}, {s.status}{test}); MAEs in {unit or 'the target unit'}"]
    lines.append(f"{'epoch':>5} {'val_mae':>9} {'train_mae':>9} {'best':>9} {'at':>4} {'lr':>9} {'seconds':>8}  time")
    from tui_ft.core.common.metrics import compact, is_potential

    for e in s.history:
        extra = f"  {compact(e.metrics, 'val')}" if is_potential(e.metrics) else ""
        lines.append(f"{e.epoch:>5} {_num(e.val_mae, '.4f'):>9} {_num(e.train_mae, '.4f'):>9} "
                     f"{_num(e.best_val_mae, '.4f'):>9} {e.best_epoch:>4} {_num(e.lr, '.2e'):>9} "
                     f"{_num(e.seconds, '.1f'):>8}  {iso_time(e.time)}{extra}")
    if not s.history:
        lines.append("(no epoch finished yet)")
    return lines


def cmd_history(run: str, fmt: str | None = None) -> int:
    """A run's epochs, one row each (``tui-ft history RUN [--format table|csv|json]``).

    ``run``: a run id, a preset name (its newest run), ``RUN@best`` / ``PRESET@best`` or the
    start of one run id (:func:`tui_ft.core.library.runs.resolve_run`). ``fmt`` None: a table on a
    terminal, CSV otherwise.
    """
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.library.runs import resolve_run, summarize

    paths = Paths.default()
    try:
        run_id, how = resolve_run(run, paths)
    except LookupError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if how:
        _err(f"{run}: run {run_id} ({how})")
    fmt = fmt or ("table" if sys.stdout.isatty() else "csv")
    s = summarize(paths.run_log_dir(run_id), warn=_err)
    if fmt == "table":
        print("\n".join(history_table(s)))
        return EXIT_OK
    rows = []
    for e in s.history:
        row = {k: v for k, v in asdict(e).items() if k not in ("run_id", "metrics")}
        # a task's named metrics (a potential's val_force_mae, ...) as columns of their own
        named = {k: v for k, v in e.named().items() if k not in ("val_mae", "train_mae")}
        rows.append({"run_id": run_id, **row, **named})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: r.get(k) for k in keys} for r in rows]
    _write_rows(rows, fmt)
    return EXIT_OK
