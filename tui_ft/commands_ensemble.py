"""``predict``, ``eval`` and ``export`` of an ensemble (``ensemble:NAME``, made by ``tui-ft ensemble``).

The mean of the members is the prediction and their standard deviation (ddof=0) its
uncertainty (:mod:`tui_ft.core.library.ensemble`). Exit codes as the single-checkpoint
commands (:mod:`tui_ft.commands_io`): 0 done, 1 a structure failed or a MAE is NaN,
2 usage, ensemble or data error (nothing written).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tui_ft.commands_io import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Progress, _err, _reason


def _members(ref: str):
    """``(name, members)`` after saying the warnings; None after saying why not."""
    from tui_ft.core.library.ensemble import EnsembleError, resolve

    try:
        name, members, warnings = resolve(ref)
    except EnsembleError as exc:
        _err(str(exc))
        return None
    for w in warnings:
        _err(f"[warning] {ref}: {w}")
    return name, members


def _scales(ref: str, name: str) -> dict[str, float]:
    """The ensemble's std scales (its ``ensemble.json``), after saying what was wrong with them."""
    from tui_ft.core.library.ensemble import read_std_scales

    scales, warnings = read_std_scales(name)
    for w in warnings:
        _err(f"[warning] {ref}: {w}")
    return scales


def _potential(members) -> bool:
    from tui_ft.commands_io import _is_potential

    return _is_potential(members[0].checkpoint)


def _run(fn, *args, **kw):
    """``fn(*args, progress=..., **kw)``; the exit code instead when a checkpoint or the data is refused."""
    from tui_ft.core.data.dataset import DataError
    from tui_ft.core.library.ckptfile import CheckpointError

    progress = Progress()
    try:
        return fn(*args, progress=progress, **kw)
    except (CheckpointError, DataError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    finally:
        progress.close()


def _cal_line(c) -> str:
    rho = "-" if c.spearman is None else f"{c.spearman:.3f}"
    return (f"Spearman(std, |error|) {rho}, within 1σ {100 * c.within_1sigma:.1f} %, 2σ {100 * c.within_2sigma:.1f} % "
            f"over {c.n}")


def cmd_eval_ensemble(ref: str, data: str | None, target: str | None, device: str, rows: str, batch_size: int,
                      fmt: str) -> int:
    """The ensemble's MAE (of the members' mean) beside each member's, and the calibration of its std."""
    from tui_ft.core.library.ensemble import (
        evaluate_ensemble,
        evaluate_potential_ensemble,
        scaled_calibration,
    )
    from tui_ft.commands_io import _not_a_pipe
    from tui_ft.core.library.predict import MAE_UNIT

    if data is not None and not _not_a_pipe(data):
        return EXIT_USAGE
    got = _members(ref)
    if got is None:
        return EXIT_USAGE
    name, members = got
    if _potential(members):
        if target is not None:
            _err(f"{ref}: --target does not apply to a potential ensemble (it is scored on every labelled target)")
            return EXIT_USAGE
        res = _run(evaluate_potential_ensemble, name, members, data, rows=rows, batch_size=batch_size, device=device)
        if isinstance(res, int):
            return res
        res.std_scales = _scales(ref, name)
        maes, cal = res.maes(), res.calibration()
        table = {t: {"unit": MAE_UNIT[t], "n": n, "ensemble": v,
                     "members": [mm.get(t, (None, 0))[0] for mm in res.member_maes]} for t, (v, n) in maes.items()}
        # calibration in the MAE's units: energy meV/atom, force meV/Å (per component), stress GPa, magmom μB
        scale = {"energy": 1000.0, "force": 1000.0, "stress": 1.0, "magmom": 1.0}
    else:
        if data is None:
            _err(f"{ref}: eval of a property ensemble needs --data SOURCE (its own data, for its test rows, or any other)")
            return EXIT_USAGE
        res = _run(evaluate_ensemble, name, members, data, target=target, rows=rows, batch_size=batch_size, device=device)
        if isinstance(res, int):
            return res
        res.std_scales = _scales(ref, name)
        c = res.calibration()
        cal = {res.target: c} if c else {}
        n = sum(1 for r in res.rows if r.target is not None)
        table = {res.target: {"unit": res.unit, "n": n, "ensemble": res.mae, "members": res.member_maes}} if n else {}
        scale = {res.target: 1.0}
    cal_k = scaled_calibration(res, res.std_scales)
    for w in res.warnings:
        _err(f"[warning] {w}")
    for ident, why in res.failures:
        _err(f"[warning] structure {ident} left out: {_reason(ident, why)}")
    if not table:
        _err(f"error: no labelled structures in {res.path}; no MAE")
        return EXIT_USAGE
    which = {"test": "the members' test rows", "val": "the members' validation rows"}.get(res.rows_kind, "all rows")
    if fmt == "json":
        out = {"ensemble": name, "members": [{"member": m.number, "run_id": m.run_id, "checkpoint": str(m.checkpoint)}
                                             for m in members],
               "data": str(res.path), "rows": res.rows_kind,
               "mae": {t: {"value": d["ensemble"], "unit": d["unit"], "n": d["n"], "members": d["members"]}
                       for t, d in table.items()},
               "calibration": {t: {**_scaled(c, scale.get(t, 1.0)).as_dict(), "unit": table[t]["unit"]}
                               for t, c in cal.items() if t in table},
               "calibration_scaled": {t: {**_scaled(c, scale.get(t, 1.0)).as_dict(), "unit": table[t]["unit"],
                                          "std_scale": res.std_scales[t]} for t, c in cal_k.items() if t in table},
               "left_out": [{"id": i, "reason": _reason(i, w)} for i, w in res.failures]}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(f"ensemble {name}: {len(members)} members on {len(res.rows)} structures of {res.path} ({which})")
        print(f"{'target':<8} {'ensemble':>10} {'members (min..max, mean)':>30}  unit")
        for t, d in table.items():
            ms = [m for m in d["members"] if m is not None]
            span = f"{min(ms):.4f}..{max(ms):.4f}, {sum(ms) / len(ms):.4f}" if ms else "-"
            print(f"{t:<8} {_f(d['ensemble']):>10} {span:>30}  {d['unit'] or ''}")
        for t, c in cal.items():
            print(f"calibration of {t}: {_cal_line(c)}")
            if t in cal_k:
                ck = cal_k[t]
                print(f"  std x {res.std_scales[t]:.3g} (the ensemble's scale, fit on its validation rows): within 1σ "
                      f"{100 * ck.within_1sigma:.1f} %, 2σ {100 * ck.within_2sigma:.1f} %")
    bad = [t for t, d in table.items() if d["ensemble"] is None or not math.isfinite(d["ensemble"])]
    if bad:
        _err(f"error: the ensemble's {', '.join(bad)} MAE is not a finite number")
        return EXIT_FAILED
    return EXIT_OK


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _scaled(c, k: float):
    """A :class:`Calibration` with its errors and stds in other units (ranks and shares do not change)."""
    from dataclasses import replace

    return replace(c, mean_std=c.mean_std * k, mae=c.mae * k, bins=tuple((a * k, b * k) for a, b in c.bins))


def cmd_predict_ensemble(ref: str, inputs: list[str], out: str | None, *, batch_size: int, device: str,
                         target: str | None, format: str | None, force: bool, forces: bool, stress: bool,
                         xyz: str | None) -> int:
    """The members' mean and std per structure (CSV; a potential's forces/stresses: extxyz)."""
    from tui_ft.commands_io import _extxyz_path, _not_a_pipe, _out_refused, write_predictions
    from tui_ft.core.data.dataset import resolve_source
    from tui_ft.core.library.ensemble import (
        format_ensemble_csv,
        format_potential_ensemble_csv,
        predict_ensemble,
        predict_potential_ensemble,
        write_potential_ensemble_extxyz,
    )

    if _out_refused(out, [*inputs], force) or not all(_not_a_pipe(i) for i in inputs):
        return EXIT_USAGE
    got = _members(ref)
    if got is None:
        return EXIT_USAGE
    name, members = got
    ckpts = [str(m.checkpoint) for m in members]
    if _out_refused(out, ckpts, force):
        return EXIT_USAGE
    potential = _potential(members)
    xyz_path = _extxyz_path(out, xyz) if (forces or stress or xyz) else None
    if not potential and xyz_path is not None:
        _err(f"{ref}: --forces/--stress/--xyz: a property ensemble's forces are meaningless (only a potential's are physical)")
        return EXIT_USAGE
    if potential and target is not None:
        _err(f"{ref}: --target does not apply to a potential ensemble")
        return EXIT_USAGE
    if (forces or stress) and xyz_path is None:
        _err("--forces / --stress write an extxyz file: give --out preds.csv or --xyz FILE.extxyz")
        return EXIT_USAGE
    if xyz_path is not None and _out_refused(xyz_path, [*ckpts, *inputs], force, "--xyz"):
        return EXIT_USAGE
    srcs = [str(resolve_source(i)) if i in ("demo", "demo_potential") else i for i in inputs]
    if potential:
        res = _run(predict_potential_ensemble, name, members, srcs, forces=forces, stress=stress, format=format,
                   batch_size=batch_size, device=device)
    else:
        res = _run(predict_ensemble, name, members, srcs if len(srcs) > 1 else srcs[0], target=target, format=format,
                   batch_size=batch_size, device=device)
    if isinstance(res, int):
        return res
    res.std_scales = _scales(ref, name)
    for w in res.warnings:
        _err(f"[warning] {w}")
    text = (format_potential_ensemble_csv(res) if potential else format_ensemble_csv(res)) if res.rows else ""
    if res.rows and not write_predictions(text, out, xyz_path, lambda p: write_potential_ensemble_extxyz(res, p)):
        return EXIT_USAGE
    for ident, why in res.failures:
        _err(f"[error] {ident}: {_reason(ident, why)}")
    where = ", ".join(x for x in (out, xyz_path) if x) if res.rows else ""
    _err(f"predicted {len(res.rows)} of {len(res.rows) + len(res.failures)} structures with ensemble {name} "
         f"({len(members)} members: mean and std){' -> ' + where if where else ''}"
         + (f"; {len(res.failures)} failed" if res.failures else ""))
    return EXIT_FAILED if res.failures else EXIT_OK


def cmd_export_ensemble(ref: str, out: str, force: bool = False) -> int:
    """Each member as a file ``CHGNet.from_file`` loads, and ``manifest.json``, in the folder ``out``."""
    from tui_ft.core.library.ckptfile import CheckpointError
    from tui_ft.core.library.ensemble import export_ensemble
    from tui_ft.core.library.export import ExportError

    got = _members(ref)
    if got is None:
        return EXIT_USAGE
    name, members = got
    try:
        manifest = export_ensemble(name, members, out, force=force, say=_err)
    except (CheckpointError, ExportError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(manifest)
    _err(f"exported ensemble {name} ({len(members)} members) -> {Path(out)}: load each member with "
         "chgnet.model.CHGNet.from_file; the prediction is their mean, the uncertainty their std (manifest.json)")
    return EXIT_OK
