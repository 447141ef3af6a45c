"""Chart maths for the dashboard: pure functions, no Textual, no plotext.

The plot widgets in :mod:`tui_ft.tui.plots` only draw what these functions
return, so everything that can be wrong about a chart (which points, which
scale, which colour) is tested here without an app.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# Okabe-Ito: distinguishable for the common colour-vision deficiencies and on
# dark and light terminals alike.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (86, 180, 233),  # sky blue
    (230, 159, 0),  # orange
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (204, 121, 167),  # reddish purple
    (213, 94, 0),  # vermillion
    (0, 114, 178),  # blue
    (190, 190, 190),  # grey
)

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------- series


@dataclass
class RunSeries:
    """The learning curves of one run: validation MAE from epoch 0 (before any
    update), training MAE from epoch 1."""

    run_id: str
    epochs: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    train_epochs: list[int] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    unit: str | None = None  # the MAEs' unit from the run's events (None: not recorded)

    @property
    def last_epoch(self) -> int | None:
        return self.epochs[-1] if self.epochs else None


def metric_options(history: Iterable[object]) -> list[str]:
    """The metrics (``"loss"``, ``"force_mae"``, ...) a run's ``EpochEnd`` events carry for
    ``val_`` or ``train_``, in the order of :data:`tui_ft.core.common.metrics.METRICS`
    (unknown names after, sorted). A property run has ``["mae"]``."""
    from tui_ft.core.common.metrics import METRICS, split_name

    found: set[str] = set()
    for ev in history:
        named = ev.named() if hasattr(ev, "named") else {}
        for key, v in named.items():
            part, metric = split_name(key)
            if part in ("train", "val") and _finite(v):
                found.add(metric)
    return [m for m in METRICS if m in found] + sorted(found - set(METRICS))


def default_metric(options: Sequence[str]) -> str | None:
    """The learning curve's metric when the user picked none: the validation force MAE
    of a potential, else its loss; ``None`` (the selection value, ``val_mae``) otherwise."""
    if set(options) <= {"mae"}:
        return None
    for m in ("force_mae", "loss", "energy_mae"):
        if m in options:
            return m
    return options[0] if options else None


def metric_label(metric: str | None, unit: str | None = None) -> str:
    """``"force MAE (meV/Å)"``, ``"loss"``; the selection value's ``"MAE (eV/atom)"`` for None."""
    from tui_ft.core.common.metrics import METRICS, unit_of

    if metric is None or metric == "mae":
        return f"MAE{unit_suffix(unit)}"
    label = METRICS.get(metric, (metric.replace("_", " "), ""))[0]
    u = unit_of(f"val_{metric}", unit)
    return f"{label} ({u})" if u else label


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def series_from_history(run_id: str, history: Iterable[object], metric: str | None = None) -> RunSeries:
    """Build a :class:`RunSeries` from ``EpochEnd`` events (anything with
    ``epoch``, ``val_mae``, ``train_mae``). A repeated epoch (a resumed run)
    replaces the earlier value; non-finite values are left out.

    ``metric`` (``"force_mae"``, ``"loss"``, ...; :mod:`tui_ft.core.common.metrics`) draws
    ``val_<metric>`` / ``train_<metric>`` from each event's named metrics instead of the
    task's selection value (``val_mae`` / ``train_mae``), in that metric's unit."""
    if metric:
        from tui_ft.core.common.metrics import unit_of

        s = RunSeries(run_id)
        for ev in history:
            ep = getattr(ev, "epoch", None)
            named = ev.named() if hasattr(ev, "named") else {}
            if not isinstance(ep, int):
                continue
            s.unit = unit_of(f"val_{metric}", getattr(ev, "unit", None))
            for key, eps, ys in ((f"val_{metric}", s.epochs, s.val), (f"train_{metric}", s.train_epochs, s.train)):
                v = named.get(key)
                if _finite(v):
                    if eps and eps[-1] == ep:
                        ys[-1] = float(v)
                    else:
                        eps.append(ep)
                        ys.append(float(v))
        return s
    val: dict[int, float] = {}
    train: dict[int, float] = {}
    unit: str | None = None
    for ev in history:
        u = getattr(ev, "unit", None)
        if isinstance(u, str):
            unit = u
        ep = getattr(ev, "epoch", None)
        if not isinstance(ep, int):
            continue
        v = getattr(ev, "val_mae", None)
        t = getattr(ev, "train_mae", None)
        if _finite(v):
            val[ep] = float(v)  # type: ignore[arg-type]
        if _finite(t):
            train[ep] = float(t)  # type: ignore[arg-type]
    s = RunSeries(run_id, unit=unit)
    for ep in sorted(val):
        s.epochs.append(ep)
        s.val.append(val[ep])
    for ep in sorted(train):
        s.train_epochs.append(ep)
        s.train.append(train[ep])
    return s


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` evenly spaced points, always keeping the first,
    the last and the lowest one (the best epoch must never vanish from a curve)."""
    n = min(len(xs), len(ys))
    xs, ys = list(xs[:n]), list(ys[:n])
    max_points = max(2, int(max_points))
    if n <= max_points:
        return xs, ys
    keep = {round(i * (n - 1) / (max_points - 1)) for i in range(max_points)}
    keep.add(min(range(n), key=lambda i: ys[i]))
    idx = sorted(keep)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def log10_series(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """``log10(y)`` for the positive finite values; other points are dropped.

    We plot the logarithm on a linear axis instead of using plotext's log
    scale, which raises ``math domain error`` when a figure is rebuilt."""
    out_x: list[float] = []
    out_y: list[float] = []
    for x, y in zip(xs, ys):
        if _finite(y) and y > 0:
            out_x.append(x)
            out_y.append(math.log10(y))
    return out_x, out_y


def int_ticks(lo: int, hi: int, max_ticks: int = 8) -> list[int]:
    """Integer ticks from ``lo`` up to ``hi`` with a 1-2-5 step, at most ``max_ticks``."""
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span == 0:
        return [lo]
    max_ticks = max(2, max_ticks)
    mag = 1
    while True:
        for base in (1, 2, 5):
            step = base * mag
            if span / step <= max_ticks - 1:
                return list(range(lo, hi + 1, step))
        mag *= 10


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Round tick values (1, 2, 2.5, 5 times a power of ten) inside [lo, hi]
    and their labels with just enough decimals."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        return [lo], [f"{lo:.3g}"]
    raw = (hi - lo) / max(1, max_ticks - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step >= raw:
            break
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / mag, 6) == 2.5 else 0)
    ticks: list[float] = []
    k = math.ceil(lo / step - 1e-9)
    while k * step <= hi + 1e-9 * step:
        ticks.append(round(k * step, decimals + 3))
        k += 1
    labels = [f"{t:.{decimals}f}" for t in ticks]
    labels = ["0" if lb.strip("-0.") == "" else lb for lb in labels]
    return ticks, labels


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Ticks for a logarithmic MAE axis drawn as log10 on a linear axis:
    ``lo``/``hi`` are log10 values; returns tick positions (log10) and their
    labels as the values themselves (``0.25``, ``0.3``), never the logarithm.

    Values 1, 2, 5 times a power of ten inside the range; when that gives fewer
    than three ticks (a narrow range), round linear values inside it."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if hi < lo:
        lo, hi = hi, lo
    vlo, vhi = 10.0**lo, 10.0**hi
    max_ticks = max(3, max_ticks)

    def inside(mults: tuple[float, ...]) -> list[float]:
        return [
            m * 10.0**e
            for e in range(math.floor(lo) - 1, math.ceil(hi) + 1)
            for m in mults
            if vlo * (1 - 1e-9) <= m * 10.0**e <= vhi * (1 + 1e-9)
        ]

    values = inside((1,))
    if len(values) > max_ticks:  # many decades: every k-th power of ten
        values = values[:: math.ceil(len(values) / max_ticks)]
    elif len(values) < 3:
        for mults in ((1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 7)):
            cand = inside(mults)
            if len(cand) > max_ticks:
                break
            values = cand
            if len(values) >= 3:
                break
    if len(values) < 3:  # a narrow range: round values on the linear scale
        lin, _ = nice_ticks(vlo, vhi, max_ticks)
        values = [v for v in lin if v > 0]
    values = sorted(set(values))
    labels = [f"{v:.4g}" for v in values]
    return [math.log10(v) for v in values], labels


def max_points_for_width(width: int) -> int:
    """How many points a curve may keep in a plot ``width`` cells wide
    (braille markers give two dots per cell; the axes take about 10 cells)."""
    return max(10, 2 * (max(0, width) - 10))


@dataclass
class Curve:
    """One line to draw: points, colour, marker and legend label."""

    label: str
    xs: list[float]
    ys: list[float]
    color: RGB
    marker: str = "braille"


# Series differ by marker as well as colour (NO_COLOR, grey-scale terminals,
# colour-vision deficiencies): the selected run's validation curve is solid
# braille, its training curve a dotted line, each overlay its own character.
VAL_MARKER = "braille"
TRAIN_MARKER = "dot"
OVERLAY_MARKERS = ("+", "x", "*", "o", "#", "%", "@", "=")


def short_id(run_id: str, width: int = 26) -> str:
    """``run_id`` in at most ``width`` characters, shortened in the middle
    (``demo_full-2025…-c3d4``): its start names the preset, its end tells runs apart."""
    if len(run_id) <= width:
        return run_id
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) // 2
    head = width - 1 - tail
    return run_id[:head] + "…" + (run_id[-tail:] if tail else "")


def assign_colors(run_ids: Sequence[str]) -> dict[str, RGB]:
    """A colour per run: each run prefers the palette slot picked by a hash of
    its id (so a run keeps its colour from session to session); when that slot
    is taken by an earlier run in ``run_ids`` the next free slot is used."""
    used: set[int] = set()
    out: dict[str, RGB] = {}
    for rid in run_ids:
        if rid in out:
            continue
        slot = zlib.crc32(rid.encode("utf-8")) % len(PALETTE)
        if len(used) < len(PALETTE):
            while slot in used:
                slot = (slot + 1) % len(PALETTE)
        used.add(slot)
        out[rid] = PALETTE[slot]
    return out


def dim(color: RGB, factor: float = 0.6) -> RGB:
    """A darker shade of ``color`` (for the training curve of the same run)."""
    return tuple(int(round(c * factor)) for c in color)  # type: ignore[return-value]


def learning_curves(
    primary: RunSeries | None,
    overlays: Sequence[RunSeries] = (),
    *,
    log: bool = False,
    max_points: int = 200,
) -> list[Curve]:
    """The curves of the learning-curve chart: the primary run's validation and
    training MAE, then each overlay's validation MAE. Empty series are left out."""
    runs = ([primary] if primary is not None else []) + [o for o in overlays if primary is None or o.run_id != primary.run_id]
    colors = assign_colors([r.run_id for r in runs])
    curves: list[Curve] = []

    def add(label: str, xs: Sequence[float], ys: Sequence[float], color: RGB, marker: str) -> None:
        if log:
            xs, ys = log10_series(xs, ys)
        xs, ys = downsample(xs, ys, max_points)
        if xs:
            curves.append(Curve(label, list(xs), list(ys), color, marker))

    if primary is not None:
        add("val", primary.epochs, primary.val, colors[primary.run_id], VAL_MARKER)
        add("train", primary.train_epochs, primary.train, dim(colors[primary.run_id], 0.55), TRAIN_MARKER)
    for i, o in enumerate(runs[1 if primary is not None else 0 :]):
        marker = OVERLAY_MARKERS[i % len(OVERLAY_MARKERS)]
        add(f"val {short_id(o.run_id, 22)}", o.epochs, o.val, colors[o.run_id], marker)
    return curves


def curve_bounds(curves: Sequence[Curve]) -> tuple[float, float] | None:
    """The x range to show: from epoch 0 to the last epoch of any curve."""
    xs = [x for c in curves for x in c.xs]
    if not xs:
        return None
    return 0.0, max(1.0, max(xs))


# --------------------------------------------------------------------------- predictions


class PredictionsError(ValueError):
    """A predictions CSV that cannot be read."""


@dataclass
class Predictions:
    ids: list[str]
    true: list[float]
    pred: list[float]
    skipped: int = 0
    unit: str | None = None  # the target's unit, from the run's events next to the CSV (None: not recorded)
    caption: str | None = None  # the plot's title when set (a potential's: what it shows, stats with units)

    def __len__(self) -> int:
        return len(self.ids)


LEGACY_UNIT = "eV/atom"  # runs from before units were recorded trained e_form


def unit_suffix(unit: str | None) -> str:
    """`` (eV/atom)`` for an axis label; nothing for a unitless target."""
    u = LEGACY_UNIT if unit is None else unit
    return f" ({u})" if u else ""


def _run_unit(events_path: Path) -> str | None:
    """The unit recorded in a run's ``run_started`` event (read up to that line)."""
    from tui_ft.core.common.files import open_regular

    try:
        with open_regular(events_path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
            for line in fh:
                if '"run_started"' in line:
                    u = json.loads(line).get("unit")
                    return u if isinstance(u, str) else None
    except (OSError, ValueError):
        return None
    return None


def read_predictions(path: Path | str) -> Predictions:
    """Read ``id,true,pred`` rows. Rows with missing or non-finite numbers are
    counted in ``skipped``; a missing file or a missing column raises
    :class:`PredictionsError` with the reason."""
    path = Path(path)
    from tui_ft.core.common.files import TABLE_MAX_BYTES, open_regular

    try:  # a FIFO or a device is never read
        fh = io.TextIOWrapper(open_regular(path, TABLE_MAX_BYTES), encoding="utf-8", newline="")
    except OSError as exc:
        raise PredictionsError(f"{path}: cannot read predictions ({exc.strerror or exc})") from None
    with fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [c for c in ("true", "pred") if c not in fields]
        if missing:
            raise PredictionsError(f"{path}: no {' / '.join(missing)} column (columns: {', '.join(fields) or 'none'})")
        out = Predictions([], [], [])
        for n, row in enumerate(reader):
            try:
                t = float(row["true"])
                p = float(row["pred"])
            except (TypeError, ValueError):
                out.skipped += 1
                continue
            if not (math.isfinite(t) and math.isfinite(p)):
                out.skipped += 1
                continue
            out.ids.append(row.get("id") or str(n))
            out.true.append(t)
            out.pred.append(p)
    out.unit = _run_unit(path.parent / "events.jsonl")
    return out


@dataclass
class ErrorStats:
    n: int
    mae: float
    rmse: float
    max_abs: float
    mean: float  # signed: positive = over-prediction


def error_stats(true: Sequence[float], pred: Sequence[float]) -> ErrorStats | None:
    errs = [p - t for t, p in zip(true, pred)]
    if not errs:
        return None
    n = len(errs)
    return ErrorStats(
        n=n,
        mae=sum(abs(e) for e in errs) / n,
        rmse=math.sqrt(sum(e * e for e in errs) / n),
        max_abs=max(abs(e) for e in errs),
        mean=sum(errs) / n,
    )


def parity_data(
    true: Sequence[float], pred: Sequence[float], max_points: int = 2000
) -> tuple[list[float], list[float], tuple[float, float]]:
    """Points of the parity plot (at most ``max_points``, evenly strided so the
    cloud keeps its shape) and the common axis range for the ``y = x`` line."""
    n = min(len(true), len(pred))
    if n == 0:
        return [], [], (0.0, 1.0)
    lo = min(min(true[:n]), min(pred[:n]))
    hi = max(max(true[:n]), max(pred[:n]))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    step = max(1, math.ceil(n / max(1, max_points)))
    xs = [float(true[i]) for i in range(0, n, step)]
    ys = [float(pred[i]) for i in range(0, n, step)]
    return xs, ys, (lo - pad, hi + pad)


def error_histogram(
    true: Sequence[float], pred: Sequence[float], bins: int = 30
) -> tuple[list[float], list[int], float]:
    """Histogram of ``pred - true``: bin centres, counts and the bin width.
    The range is symmetric around zero so a bias shows as a shifted peak."""
    errs = [p - t for t, p in zip(true, pred)]
    bins = max(1, int(bins))
    if not errs:
        return [], [], 0.0
    span = max(abs(e) for e in errs)
    if span < 1e-12:
        span = 1e-3
    width = 2 * span / bins
    counts = [0] * bins
    for e in errs:
        i = int((e + span) / width)
        counts[min(bins - 1, max(0, i))] += 1
    centres = [-span + (i + 0.5) * width for i in range(bins)]
    return centres, counts, width


def bins_for_width(width: int, n: int) -> int:
    """A histogram bin count that fits ``width`` cells and ``n`` samples."""
    by_width = max(5, (max(0, width) - 12) // 2)
    by_n = max(5, int(math.sqrt(max(1, n)) * 2))
    return max(5, min(60, by_width, by_n))


def chain_stages(stages: Sequence[RunSeries]) -> tuple[RunSeries, list[float]]:
    """Join the stages of a plan into one continuous curve.

    Stage k's epoch ``e`` is drawn at ``x = (last x of stage k-1) + e``, so its
    epoch 0 (the previous stage's best weights, evaluated before any update)
    sits on the boundary. Returns the joined series, named after the last
    stage, and the x of each boundary between stages. Its unit is the last stage's (a stage
    whose events recorded none takes the latest recorded one of the earlier stages).
    """
    if not stages:
        raise ValueError("no stages")
    unit = next((s.unit for s in reversed(stages) if s.unit is not None), None)
    out = RunSeries(stages[-1].run_id, unit=unit)
    bounds: list[float] = []
    offset = 0
    for k, s in enumerate(stages):
        if k:
            bounds.append(offset)
        out.epochs.extend(offset + e for e in s.epochs)
        out.val.extend(s.val)
        out.train_epochs.extend(offset + e for e in s.train_epochs)
        out.train.extend(s.train)
        last = max([*s.epochs, *s.train_epochs], default=0)
        offset += last
    return out, bounds
