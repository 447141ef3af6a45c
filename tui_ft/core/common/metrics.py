"""Named metrics of a run and their units, for every front end (no torch here).

An ``epoch_end`` event carries ``metrics`` by name (``EpochEnd.named()``; runs from
before tasks have only ``train_mae`` / ``val_mae``), a ``run_finished`` its
``test_metrics``. A name is ``<part>_<metric>``, the part ``train`` / ``val`` /
``test``; the metric is one of :data:`METRICS` (a property run's ``mae`` is in the
run's target unit, ``RunStarted.unit``).
"""

from __future__ import annotations

import math
from typing import Any

# metric -> (label, unit); "" = the run's own unit (a property's target unit) or none (a loss)
METRICS: dict[str, tuple[str, str]] = {
    "mae": ("MAE", ""),
    "loss": ("loss", ""),
    "energy_mae": ("energy MAE", "meV/atom"),
    "force_mae": ("force MAE", "meV/Å"),
    "stress_mae": ("stress MAE", "GPa"),
    "magmom_mae": ("magmom MAE", "μB"),
}
PARTS = ("train", "val", "test")
SHORT = {"loss": "loss", "energy_mae": "E", "force_mae": "F", "stress_mae": "S", "magmom_mae": "M", "mae": "mae"}


def split_name(name: str) -> tuple[str, str]:
    """``"val_force_mae"`` -> ``("val", "force_mae")``; a name without a part -> ``("", name)``."""
    part, _, metric = name.partition("_")
    return (part, metric) if part in PARTS and metric else ("", name)


def unit_of(name: str, run_unit: str | None = None) -> str:
    """The unit of a named metric (``run_unit`` for a property's ``mae``)."""
    _, metric = split_name(name)
    unit = METRICS.get(metric, ("", ""))[1]
    return unit or (run_unit or "" if metric == "mae" else "")


def compact(metrics: dict[str, float], part: str) -> str:
    """``"loss 0.0123  E 12.3 meV/atom  F 45.6 meV/Å"`` for one part of a potential's metrics."""
    out = []
    for metric in ("loss", "energy_mae", "force_mae", "stress_mae", "magmom_mae"):
        v = metrics.get(f"{part}_{metric}")
        if v is None:
            continue
        unit = METRICS[metric][1]
        out.append(f"{SHORT[metric]} {v:.4g}" + (f" {unit}" if unit else ""))
    return "  ".join(out)


def headline_metric(metrics: dict[str, Any] | None, part: str) -> str | None:
    """The metric a potential's one number is: ``"force_mae"``, else ``"energy_mae"``, else
    ``"loss"``, the first that ``metrics`` holds for ``part`` as a finite number; None when
    none (a property's metrics: its ``mae``)."""
    for metric in ("force_mae", "energy_mae", "loss"):
        v = (metrics or {}).get(f"{part}_{metric}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return metric
    return None


def headline(metrics: dict[str, Any] | None, part: str) -> str | None:
    """A potential's one number for a "val" / "test" cell (:func:`headline_metric`) with its
    unit: ``F 41.2 meV/Å``, ``E 7.5 meV/atom`` or ``loss 0.05``; None when there is none."""
    metric = headline_metric(metrics, part)
    if metric is None:
        return None
    unit = METRICS[metric][1]
    return f"{SHORT[metric]} {metrics[f'{part}_{metric}']:.4g}" + (f" {unit}" if unit else "")


def is_potential(metrics: dict[str, Any] | None) -> bool:
    return bool(metrics) and any(k.endswith(("_loss", "_force_mae", "_energy_mae")) for k in metrics)
