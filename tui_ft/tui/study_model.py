"""What the study and sweep views show: pure data, no Textual.

The Studies tab (:mod:`tui_ft.tui.studies`) and the Sweeps tab
(:mod:`tui_ft.tui.sweeps`) only draw what the functions here return. Every
reader is total: a corrupt ``study.json`` or ``study.db``, a missing run
folder or a missing Optuna gives a problem line, never an exception, so a
view refreshed from a worker cannot take the dashboard down.

Studies are read with :mod:`tui_ft.core.orchestrate.study` (``read_study``,
``fold_result``), sweeps with :mod:`tui_ft.core.orchestrate.sweep` (``load_study``,
``trial_rows``, ``best_row``, ``best_preset``); per-epoch curves come from each
run's events (:func:`tui_ft.core.library.runs.summarize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tui_ft.core.common.metrics import headline, headline_metric
from tui_ft.core.common.paths import Paths
from tui_ft.tui.charts import (
    PALETTE,
    RGB,
    Curve,
    RunSeries,
    chain_stages,
    downsample,
    series_from_history,
)

STUDIES = ".studies"
SWEEPS = ".sweeps"
FAINT: RGB = (95, 95, 95)  # the other trials' curves under the best one
MEAN_COLOR: RGB = (240, 240, 240)
REFERENCE_COLOR: RGB = (150, 150, 150)


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fmt_value(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def fmt_wall(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean and standard deviation (ddof=0, as Matbench reports the fold spread);
    None for no values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))


# =========================================================================== studies


@dataclass(frozen=True)
class StudyListRow:
    """One study in the list: ``problem`` is set (and the rest empty) when its study.json cannot be read."""

    name: str
    status: str = "?"
    folds: int = 0
    finished: int = 0
    data_source: str = ""
    source_name: str = ""
    updated: float = 0.0
    problem: str | None = None
    axis: str = "fold"  # "member": an ensemble (tui-ft ensemble)


def study_root(paths: Paths) -> Path:
    return paths.logs / STUDIES


def _read_study_json(folder: Path, fold_problems: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(study dict, None) or (None, the problem in one line): the core's one reader
    (:func:`tui_ft.core.orchestrate.study.read_study_file`: regular files only, size-capped, every field checked)."""
    from tui_ft.core.orchestrate.study import StudyError, read_study_file

    path = folder / "study.json"
    try:
        obj = read_study_file(path, {} if fold_problems is None else fold_problems)  # a bad fold: a problem row
    except StudyError as exc:
        return None, str(exc)
    if obj is None:
        return None, f"{path}: missing"
    return obj, None


def list_studies(paths: Paths) -> list[StudyListRow]:
    """Every folder under ``logs/.studies/`` with a study.json, by name; never raises."""
    try:
        dirs = sorted(d for d in study_root(paths).iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []
    out = []
    for d in dirs:
        if not (d / "study.json").exists():
            continue
        obj, problem = _read_study_json(d)
        if obj is None:
            out.append(StudyListRow(d.name, status="unreadable", problem=problem))
            continue
        from tui_ft.core.orchestrate.study import study_records

        folds = study_records(obj)
        finished = sum(1 for r in folds.values() if isinstance(r, dict) and r.get("status") == "finished")
        updated = obj.get("updated") or obj.get("started") or 0.0
        out.append(StudyListRow(
            d.name, str(obj.get("status", "?")), len(folds), finished, str(obj.get("data_source", "")),
            str(obj.get("source_name", "")), float(updated) if isinstance(updated, (int, float)) else 0.0,
            axis=str(obj.get("axis", "fold")),
        ))
    return out


@dataclass(frozen=True)
class FoldRow:
    fold: int
    run_id: str | None
    status: str
    best_val_mae: float | None
    test_mae: float | None
    epochs: int
    wall_s: float
    problem: str | None = None
    # its best epoch's and its test's named metrics (FoldResult's): a potential's cells and mean
    # show its force MAE in meV/Å (its best_val_mae / test_mae are the unitless weighted loss)
    val_metrics: dict[str, float] | None = None
    test_metrics: dict[str, float] | None = None


@dataclass
class StudyView:
    """One study, ready to draw: fold rows, the folds' validation curves, the running mean."""

    name: str
    status: str = "?"
    source: str = ""
    data_source: str = ""
    folds: list[FoldRow] = field(default_factory=list)
    curves: dict[int, RunSeries] = field(default_factory=dict)  # fold -> its val MAE per epoch (a plan's stages chained)
    boundaries: dict[int, list[float]] = field(default_factory=dict)  # fold -> a plan's stage boundaries
    problem: str | None = None
    axis: str = "fold"  # "member": an ensemble; its folds are its members
    ensemble: dict[str, Any] | None = None  # an ensemble's ensemble.json, once every member finished
    ensemble_problem: str | None = None  # why that file could not be read

    @property
    def metric(self) -> str | None:
        """The named metric a potential study's curves, cells and mean show (the force MAE, else the
        energy MAE, else the loss); None for a property study (its MAE)."""
        for f in self.folds:
            metric = headline_metric(f.test_metrics, "test") or headline_metric(f.val_metrics, "val")
            if metric is not None:
                return metric
        return None

    @property
    def unit(self) -> str:
        """The unit of what the curves and the mean show."""
        from tui_ft.core.common.metrics import METRICS

        m = self.metric
        if m is not None:
            return METRICS[m][1]
        return next((c.unit for c in self.curves.values() if c.unit), None) or "eV/atom"

    @property
    def finished_test_maes(self) -> list[float]:
        m = self.metric
        vals = [f.test_mae if m is None else (f.test_metrics or {}).get(f"test_{m}")
                for f in self.folds if f.status == "finished"]
        return [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]

    @property
    def mean_std(self) -> tuple[float, float] | None:
        """Mean ± std of the finished folds' test MAE so far (the running mean)."""
        return mean_std(self.finished_test_maes)

    @property
    def leaderboard(self) -> list[tuple[str, float]]:
        return leaderboard_for(self.data_source)


def leaderboard_for(data_source: str) -> list[tuple[str, float]]:
    """The published numbers of the Matbench task the study ran on ([] for other data)."""
    from tui_ft.core.orchestrate.study import LEADERBOARD

    task = Path(data_source).name
    for ext in (".json.gz", ".json"):
        if task.endswith(ext):
            task = task[: -len(ext)]
    return list(LEADERBOARD.get(task, []))


def published_reference() -> tuple[str, list[tuple[str, float]]]:
    """The task whose leaderboard the study views quote, and its numbers."""
    from tui_ft.core.orchestrate.study import LEADERBOARD, TASK

    return TASK, list(LEADERBOARD.get(TASK, []))


def _fold_series(paths: Paths, run_ids: Sequence[str]) -> tuple[RunSeries | None, list[float]]:
    """A fold's curve (a plan's stages chained; a potential's force MAE, else energy MAE, else
    loss: :func:`headline_metric`) and the stage boundaries."""
    from tui_ft.core.library.runs import summarize

    stages = []
    for rid in run_ids:
        s = summarize(paths.run_log_dir(rid), warn=lambda _msg: None)
        stages.append(series_from_history(rid, s.history, headline_metric(s.best_metrics(), "val")))
    stages = [s for s in stages if s.epochs] or stages[-1:]
    if not stages:
        return None, []
    if len(stages) == 1:
        return stages[0], []
    return chain_stages(stages)


def load_study_view(name: str, paths: Paths) -> StudyView:
    """Read one study: its folds' rows from their runs' events, and their curves. Never raises."""
    view = StudyView(name)
    fold_problems: dict[str, str] = {}
    obj, problem = _read_study_json(study_root(paths) / name, fold_problems)
    if obj is None:
        view.problem = problem
        view.status = "unreadable"
        return view
    view.status = str(obj.get("status", "?"))
    view.source = str(obj.get("source_name") or obj.get("source") or "")
    view.data_source = str(obj.get("data_source", ""))
    from tui_ft.core.orchestrate.study import fold_result, study_records

    view.axis = str(obj.get("axis", "fold"))
    if view.axis == "member":
        view.ensemble, view.ensemble_problem = read_ensemble_summary(study_root(paths) / name)
    recs: dict[str, Any] = dict(study_records(obj))
    recs.update(fold_problems)  # the records the reader took out: each a problem row in its place
    for key in sorted(recs, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))):
        rec = recs[key]
        try:
            if key in fold_problems:  # the reader checked every record: the rest are objects
                raise ValueError(fold_problems[key])
            rec = {view.axis: key, **rec}
            res = fold_result(rec, paths)
            run_ids = list(res.run_ids)
            view.folds.append(FoldRow(res.fold, run_ids[-1] if run_ids else None, res.status, res.best_val_mae,
                                      res.test_mae, res.epochs, res.wall_s, val_metrics=res.val_metrics,
                                      test_metrics=res.test_metrics))
            series, bounds = _fold_series(paths, run_ids)
            if series is not None and series.epochs:
                view.curves[res.fold] = series
                if bounds:
                    view.boundaries[res.fold] = bounds
        except Exception as exc:  # noqa: BLE001 - one bad fold record is a problem row, not a crash
            fold = int(key) if str(key).isdigit() else -1
            view.folds.append(FoldRow(fold, None, "unreadable", None, None, 0, 0.0,
                                      problem=f"study.json {view.axis} {key}: {_short_error(exc)}"))
    return view


def read_ensemble_summary(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """An ensemble's ``ensemble.json`` (:mod:`tui_ft.core.orchestrate.ensemble`): ``(summary, None)``,
    ``(None, None)`` when it is not written yet, ``(None, problem)`` when it cannot be used. Never raises."""
    import json

    from tui_ft.core.common.files import STATE_MAX_BYTES, read_regular_text

    path = folder / "ensemble.json"
    try:
        obj = json.loads(read_regular_text(path, STATE_MAX_BYTES))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{path}: {_short_error(exc)}"
    targets = obj.get("targets") if isinstance(obj, dict) else None
    if not isinstance(targets, dict) or not all(isinstance(v, dict) for v in targets.values()):
        return None, f"{path}: not an ensemble summary (no targets table)"
    return obj, None


def calibration_points(view: StudyView) -> dict[str, list[tuple[float, float]]]:
    """Per target of an ensemble: (mean std, mean |error|) of its test structures (components)
    binned by std, as ensemble.json holds them; {} for a Matbench study or an unfinished ensemble."""
    out: dict[str, list[tuple[float, float]]] = {}
    for t, d in ((view.ensemble or {}).get("targets") or {}).items():
        bins = (d.get("calibration") or {}).get("bins") if isinstance(d.get("calibration"), dict) else None
        pts = [(float(b[0]), float(b[1])) for b in bins or [] if isinstance(b, (list, tuple)) and len(b) == 2
               and all(isinstance(x, (int, float)) and math.isfinite(x) for x in b)]
        if pts:
            out[str(t)] = pts
    return out


def fold_cells(row: FoldRow) -> tuple[str, ...]:
    """The fold table's cells: fold, run, status, best val MAE, test MAE, epochs, wall time."""
    return (str(row.fold), row.run_id or "-", row.status, headline(row.val_metrics, "val") or fmt_value(row.best_val_mae),
            headline(row.test_metrics, "test") or fmt_value(row.test_mae), str(row.epochs), fmt_wall(row.wall_s))


def study_summary_lines(view: StudyView) -> list[str]:
    """The text beside the curves: the running mean ± std, then the published numbers."""
    if view.problem:
        return [f"problem: {view.problem}"]
    if view.axis == "member":
        return ensemble_summary_lines(view)
    lines = [f"study {view.name}: {view.status}", f"preset/plan {view.source or '?'} on {view.data_source or '?'}"]
    maes = view.finished_test_maes
    ms = view.mean_std
    done = f"{len(maes)} of {len(view.folds)} folds finished"
    if ms is None:
        lines.append(f"test MAE: no fold finished yet ({done})")
    else:
        lines.append(f"test {_what(view)} {ms[0]:.4f} ± {ms[1]:.4f} {view.unit} (mean ± std, {done})")
    task, board = published_reference()
    lines.append("")
    lines.append(f"published ({task}, Matbench v0.1):")
    lines += [f"  {m:8} {v:.4f}" for m, v in board]
    if not view.leaderboard:
        lines.append(f"(this study's data is not {task}: not comparable)")
    bad = [f.problem for f in view.folds if f.problem]
    lines += [f"problem: {p}" for p in bad[:3]]
    return lines


def _what(view: StudyView) -> str:
    """``"MAE"``, or a potential study's ``"force MAE"`` (``"loss"``)."""
    from tui_ft.core.common.metrics import METRICS

    return "MAE" if view.metric is None else METRICS[view.metric][0]


def ensemble_summary_lines(view: StudyView) -> list[str]:
    """An ensemble's text: its members' test MAE, then (once all finished) the ensemble's and the calibration."""
    from tui_ft.core.orchestrate.ensemble import ensemble_lines

    lines = [f"ensemble {view.name}: {view.status}", f"preset/plan {view.source or '?'} on {view.data_source or '?'}"]
    maes, ms = view.finished_test_maes, view.mean_std
    done = f"{len(maes)} of {len(view.folds)} members finished"
    what = _what(view)
    lines.append(f"members' test {what}: none finished yet ({done})" if ms is None
                 else f"members' test {what} {ms[0]:.4g} ± {ms[1]:.4g} {view.unit} (mean ± std, {done})")
    if view.ensemble is not None:
        lines.append("")
        try:
            lines += ensemble_lines(view.ensemble)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            lines.append(f"problem: ensemble.json: {_short_error(exc)}")
        if calibration_points(view):
            lines.append("(c: the calibration chart)")
    elif view.ensemble_problem:
        lines.append(f"problem: {view.ensemble_problem}")
    bad = [f.problem for f in view.folds if f.problem]
    lines += [f"problem: {p}" for p in bad[:3]]
    return lines


def study_curves(view: StudyView, max_points: int = 200) -> list[Curve]:
    """Each fold's validation MAE per epoch, one colour per fold."""
    out = []
    for fold in sorted(view.curves):
        s = view.curves[fold]
        xs, ys = downsample(s.epochs, s.val, max_points)
        out.append(Curve(f"{view.axis} {fold}", xs, ys, PALETTE[fold % len(PALETTE)]))
    return out


def study_reference_lines(view: StudyView) -> list[tuple[str, float, RGB]]:
    """Horizontal lines on the curves: the running mean test MAE, and the published
    numbers when the study ran on the task itself (other data would only squash the scale)."""
    out: list[tuple[str, float, RGB]] = []
    ms = view.mean_std
    if ms is not None:
        out.append((f"mean test {ms[0]:.4f}", ms[0], MEAN_COLOR))
    if view.axis == "fold":
        out += [(f"{m} {v:.4f}", v, REFERENCE_COLOR) for m, v in view.leaderboard]
    return out


# =========================================================================== sweeps


@dataclass(frozen=True)
class SweepListRow:
    name: str
    requested: int | None = None
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best_value: float | None = None
    best_trial: int | None = None
    problem: str | None = None


def sweep_root(paths: Paths) -> Path:
    return paths.logs / SWEEPS


def _optuna_problem() -> str | None:
    from tui_ft.core.orchestrate.sweep import SweepError, _optuna

    try:
        _optuna()
    except SweepError as exc:
        return str(exc)
    return None


def list_sweep_rows(paths: Paths) -> tuple[list[SweepListRow], list[str]]:
    """Every sweep under ``logs/.sweeps/`` (a corrupt one as a row with its problem),
    and problems that concern them all (Optuna missing). Never raises."""
    try:
        dirs = sorted(d for d in sweep_root(paths).iterdir() if (d / "study.db").is_file())
    except OSError:
        return [], []
    if not dirs:
        return [], []
    missing = _optuna_problem()
    if missing:
        return [], [missing]
    from tui_ft.core.orchestrate.sweep import best_row, load_study

    out = []
    for d in dirs:
        try:
            study = load_study(paths, d.name)
            trials = study.get_trials(deepcopy=False)
            best = best_row(trials)
            counts = {s: sum(1 for t in trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
            req = study.user_attrs.get("trials")
            out.append(SweepListRow(d.name, req if isinstance(req, int) else None, counts["COMPLETE"], counts["PRUNED"],
                                    counts["FAIL"], counts["RUNNING"], best.value if best else None,
                                    best.number if best else None))
        except Exception as exc:  # noqa: BLE001 - a corrupt db, another study name, a newer schema
            out.append(SweepListRow(d.name, problem=f"{d / 'study.db'}: cannot read ({_short_error(exc)})"))
    return out, []


@dataclass
class SweepView:
    """One sweep, ready to draw."""

    name: str
    requested: int | None = None
    rows: list[Any] = field(default_factory=list)  # tui_ft.core.orchestrate.sweep.TrialRow, sorted as trial_rows sorts
    best: Any = None  # the best TrialRow, or None
    keys: list[str] = field(default_factory=list)  # the sampled parameters, in the order of the search space
    log_keys: frozenset[str] = frozenset()  # parameters sampled on a log scale
    choices: dict[str, tuple] = field(default_factory=dict)  # categorical parameters: their choices
    curves: dict[int, RunSeries] = field(default_factory=dict)  # trial number -> its val MAE per epoch
    problem: str | None = None


def param_keys(rows: Iterable[Any]) -> list[str]:
    """The union of the rows' parameter names, in first-seen order."""
    out: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in out:
                out.append(k)
    return out


def load_sweep_view(name: str, paths: Paths) -> SweepView:
    """Read one sweep's trials (via Optuna) and its trials' curves (via their events). Never raises."""
    view = SweepView(name)
    missing = _optuna_problem()
    if missing:
        view.problem = missing
        return view
    from tui_ft.core.library.runs import summarize
    from tui_ft.core.orchestrate.sweep import best_row, load_study, trial_rows

    try:
        study = load_study(paths, name)
        trials = study.get_trials(deepcopy=False)
        req = study.user_attrs.get("trials")
        view.requested = req if isinstance(req, int) else None
        view.rows = trial_rows(trials)
        view.best = best_row(trials)
        view.keys = param_keys(view.rows)
        view.log_keys = frozenset(
            k for t in trials for k, d in (t.distributions or {}).items() if getattr(d, "log", False)
        )
        view.choices = {k: tuple(d.choices) for t in trials for k, d in (t.distributions or {}).items()
                        if hasattr(d, "choices")}
    except Exception as exc:  # noqa: BLE001 - a corrupt study.db is one problem line
        view.problem = f"{sweep_root(paths) / name / 'study.db'}: cannot read ({_short_error(exc)})"
        return view
    for r in view.rows:
        if not r.run_id:
            continue
        try:
            s = summarize(paths.run_log_dir(r.run_id), warn=lambda _msg: None)
        except Exception:  # noqa: BLE001 - a trial without a readable run has no curve
            continue
        series = series_from_history(r.run_id, s.history)
        if series.epochs:
            view.curves[r.number] = series
    return view


def trial_cells(row: Any, keys: Sequence[str]) -> tuple[str, ...]:
    """The trials table's cells: number, state, value, last epoch, each parameter, run id."""
    epoch = "-" if row.epoch is None else str(row.epoch)
    return (str(row.number), row.state, fmt_value(row.value), epoch,
            *(fmt_param(row.params[k]) if k in row.params else "-" for k in keys), row.run_id or "-")


def next_key(keys: Sequence[str], current: str | None) -> str | None:
    """The parameter after ``current`` (cycling); the first when ``current`` is not one."""
    if not keys:
        return None
    if current not in keys:
        return keys[0]
    return keys[(list(keys).index(current) + 1) % len(keys)]


def sweep_curves(view: SweepView, max_points: int = 200) -> list[Curve]:
    """Every trial's validation MAE per epoch: the others faint, the best on top in colour."""
    best = view.best.number if view.best is not None else None
    out = []
    for number in sorted(view.curves):
        if number == best:
            continue
        s = view.curves[number]
        xs, ys = downsample(s.epochs, s.val, max_points)
        out.append(Curve(f"t{number}", xs, ys, FAINT))
    if best is not None and best in view.curves:
        s = view.curves[best]
        xs, ys = downsample(s.epochs, s.val, max_points)
        out.append(Curve(f"best t{best}", xs, ys, PALETTE[0]))
    return out


@dataclass(frozen=True)
class Scatter:
    """A parameter against the objective: ``xs`` are log10 values for a log-scale
    parameter and category indices for a categorical one (``labels`` name the ticks)."""

    key: str
    xs: list[float]
    ys: list[float]
    ticks: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    log: bool = False
    best: tuple[float, float] | None = None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scatter_data(view: SweepView, key: str) -> Scatter:
    """The finished trials' (``key``, objective) points, ready for a plotext scatter."""
    pts = [(r.params[key], r.value, r.number) for r in view.rows
           if r.state == "finished" and r.value is not None and math.isfinite(r.value) and key in r.params]
    best_n = view.best.number if view.best is not None else None
    if not pts:
        return Scatter(key, [], [])
    values = [p[0] for p in pts]
    if key not in view.choices and all(_is_number(v) for v in values):
        log = key in view.log_keys and all(v > 0 for v in values)
        xs = [math.log10(v) if log else float(v) for v in values]
        ticks: list[float] = []
        labels: list[str] = []
        if log:
            lo, hi = math.floor(min(xs)), math.ceil(max(xs))
            ticks = [float(e) for e in range(lo, hi + 1)]
            labels = [f"1e{e}" for e in range(lo, hi + 1)]
    else:  # categorical: one column per choice, in the order of the choices
        cats: list[str] = [str(c) for c in view.choices.get(key, ())]
        for v in values:
            if str(v) not in cats:
                cats.append(str(v))
        xs = [float(cats.index(str(v))) for v in values]
        ticks, labels, log = [float(i) for i in range(len(cats))], cats, False
    ys = [float(p[1]) for p in pts]
    best = next(((x, y) for x, y, p in zip(xs, ys, pts) if p[2] == best_n), None)
    return Scatter(key, xs, ys, ticks, labels, log, best)


def best_preset_path(paths: Paths, name: str) -> Path:
    return paths.presets / f"{name}-best.toml"


def save_best_preset(paths: Paths, name: str, *, overwrite: bool = False) -> Path:
    """Write the sweep's best trial as ``presets/<sweep>-best.toml`` and check that it
    loads strictly. Raises FileExistsError (the file exists and ``overwrite`` is
    False), :class:`tui_ft.core.orchestrate.sweep.SweepError` (no finished trial, no study) or
    :class:`tui_ft.core.config.presets.PresetError` (what was written does not load)."""
    from tui_ft.core.config.dump import dump_preset
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.common.atomic import atomic_write_text
    from tui_ft.core.orchestrate.sweep import best_preset

    target = best_preset_path(paths, name)
    if target.exists() and not overwrite:
        raise FileExistsError(str(target))
    preset = best_preset(paths, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, dump_preset(preset))
    load_preset(target)  # the strict loader must read it back
    return target
