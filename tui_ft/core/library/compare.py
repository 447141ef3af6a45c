"""Compare runs by what differs, select them by their settings (``tui-ft compare``, ``tui-ft runs
--where``, the dashboard's compare view and filter line).

:func:`compare_runs` lines up the resolved presets of two or more runs (their
``run_started`` events) and keeps only the keys whose values differ, the data's
SHA-256 and the split's included (``same data?``), with one row of results per run.
:func:`select_runs` keeps the runs a filter (:mod:`tui_ft.core.library.query`) matches.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tui_ft.core.library.query import RESULT_FIELDS, Filter, FilterError, flatten, parse_filter, run_record

MISSING = "-"  # a key a run's preset does not have (another task's field, an older run)
# keys that name a run rather than what it computes: shown in the table, not as differences
LABEL_KEYS = ("run.name", "run.description")
HASH_KEYS = ("data_sha256", "split_sha256")


@functools.lru_cache(maxsize=1)
def preset_fields() -> frozenset[str]:
    """Every key a preset can have (``optim.lr``, ``task.force_weight``, ...), from its schema (walked once)."""
    from pydantic import BaseModel

    from tui_ft.core.config.presets import Preset

    out: set[str] = set()

    def walk(model: type, prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
            if sub:
                walk(sub[0], f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")

    walk(Preset, "")
    return frozenset(out)


def record_of(summary: Any) -> dict[str, Any]:
    """A run summary as filters and compare see it (its preset flattened, its results, hashes)."""
    return run_record(summary, summary.preset, summary.test_metrics,
                      {"data_sha256": summary.data_sha256, "split_sha256": summary.split_sha256})


def known_fields(records: Iterable[dict[str, Any]] = ()) -> set[str]:
    """The fields a filter may name: a preset's keys, the results, and any key of ``records``."""
    known = preset_fields() | set(RESULT_FIELDS) | set(HASH_KEYS)
    for r in records:
        known |= set(r)
    return known


def compile_filter(text: str, records: Iterable[dict[str, Any]] = ()) -> Filter:
    """Parse ``text`` and check its fields; :class:`FilterError` naming the column."""
    flt = parse_filter(text)
    flt.check_fields(known_fields(records))
    return flt


def select_runs(summaries: Sequence[Any], where: str | None) -> list[Any]:
    """The summaries ``where`` matches (all of them for None); :class:`FilterError` for a bad filter."""
    if not where:
        return list(summaries)
    records = [record_of(s) for s in summaries]
    flt = compile_filter(where, records)
    return [s for s, r in zip(summaries, records) if flt.matches(r)]


@dataclass
class Compared:
    """What :func:`compare_runs` found: the runs, the differing keys with each run's value,
    the number of keys that are equal, and one row of results per run."""

    run_ids: list[str]
    differing: list[tuple[str, list[Any]]] = field(default_factory=list)
    n_same: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differing_keys(self) -> list[str]:
        return [k for k, _ in self.differing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.run_ids,
            "differing": {k: vals for k, vals in self.differing},
            "n_same": self.n_same,
            "results": [{k: _finite_or_none(v) for k, v in r.items()} for r in self.rows],
        }


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _same(values: list[Any]) -> bool:
    """All equal; ``true`` is not ``1`` (a bool and a number differ), ``1`` is ``1.0``."""
    first = (isinstance(values[0], bool), values[0])
    return all((isinstance(v, bool), v) == first for v in values[1:])


def compare_runs(summaries: Sequence[Any]) -> Compared:
    """The keys of the runs' resolved presets (and data/split hashes) whose values differ."""
    out = Compared([s.run_id for s in summaries])
    flats = []
    for s in summaries:
        flat = {k: v for k, v in flatten(s.preset or {}).items() if k not in LABEL_KEYS}
        for k in HASH_KEYS:
            flat[k] = getattr(s, k, None)
        flats.append(flat)
    keys = sorted(set().union(*flats)) if flats else []
    for key in keys:
        values = [f.get(key, MISSING) for f in flats]
        if _same(values):
            out.n_same += 1
        else:
            out.differing.append((key, values))
    for s in summaries:
        out.rows.append({
            "run_id": s.run_id, "preset": s.preset_name, "status": s.status,
            "best_val_mae": s.best_val_mae, "best_epoch": s.best_epoch, "test_mae": s.test_mae,
            "epoch": s.epoch, "epochs": s.epochs, "elapsed_s": s.elapsed, "unit": _unit(s),
            **{k if k.startswith("test_") else f"test_{k}": v for k, v in (s.test_metrics or {}).items()
               if k not in ("test_mae", "mae")},
        })
    return out


def _unit(s: Any) -> str:
    return next((e.unit for e in reversed(s.history) if getattr(e, "unit", "")), "") or ""


def _show(v: Any) -> str:
    if v is None:
        return "none"
    if v == "":
        return '""'  # an empty value, not a missing key ("-")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]  # a SHA-256: its start tells two apart
    return str(v)


def _num(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


from tui_ft.core.common.units import fmt_elapsed as _elapsed  # noqa: E402 - one formatter for wall times


def epochs_cell(r: dict[str, Any]) -> str:
    """A result row's epochs: ``3/10`` (done of planned), or the last epoch alone."""
    return f"{_num(r['epoch'], 'd')}/{r['epochs']}" if r["epochs"] else _num(r["epoch"], "d")


def compare_lines(res: Compared) -> list[str]:
    """The comparison as text: the differing keys (one column per run), then the results."""
    ids = res.run_ids
    width = max(12, *(min(len(_show(v)), 34) for _, vals in res.differing for v in vals)) if res.differing else 12
    width = max(width, *(min(len(r), 34) for r in ids)) if ids else width
    key_w = max([len("key"), *(len(k) for k in res.differing_keys)])
    lines = []
    if res.differing:
        lines.append(f"{len(res.differing)} key{'s' if len(res.differing) != 1 else ''} differ "
                     f"({res.n_same} the same; data_sha256 / split_sha256: the data's bytes / the ids in each split)")
        lines.append(f"{'key':{key_w}}  " + "  ".join(f"{r[:34]:{width}}" for r in ids))
        for key, vals in res.differing:
            lines.append(f"{key:{key_w}}  " + "  ".join(f"{_show(v)[:34]:{width}}" for v in vals))
    else:
        lines.append(f"no key differs ({res.n_same} the same, data and split included)")
    lines.append("")
    lines.append(f"{'run':40} {'preset':22} {'status':10} {'best_val':>9} {'at':>5} {'test':>9} {'epochs':>11} {'wall':>8}  unit")
    for r in res.rows:
        ep = epochs_cell(r)
        lines.append(f"{r['run_id']:40} {r['preset']:22} {r['status']:10} {_num(r['best_val_mae']):>9} "
                     f"{_num(r['best_epoch'], 'd'):>5} {_num(r['test_mae']):>9} {ep:>11} {_elapsed(r['elapsed_s']):>8}  {r['unit'] or '-'}")
    return lines


__all__ = ["Compared", "FilterError", "compare_lines", "compare_runs", "compile_filter", "known_fields",
           "preset_fields", "record_of", "select_runs"]
