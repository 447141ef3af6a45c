"""Check 2, equation of state: energy against volume around each model's relaxed cell (the cell scaled
isotropically over ``±span`` in ``points`` volumes, single points, no relaxation at each volume), fitted
with pymatgen's Birch–Murnaghan EOS (``pymatgen.analysis.eos.EOS("birch_murnaghan")``): V0 (Å³/atom),
E0 (eV/atom), B0 (GPa). The data's frames that are the same crystal scaled are the DFT points (fitted
too when there are five volumes or more)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fit(volumes, energies) -> dict[str, Any]:
    """Birch–Murnaghan fit of ``(Å³/atom, eV/atom)`` points: ``v0``, ``e0``, ``b0_GPa`` (or ``error``)."""
    from pymatgen.analysis.eos import EOS

    try:
        f = EOS(eos_name="birch_murnaghan").fit(list(volumes), list(energies))
        out = {"v0_A3_per_atom": float(f.v0), "e0_eV_per_atom": float(f.e0), "b0_GPa": float(f.b0_GPa)}
    except Exception as exc:  # noqa: BLE001 - a fit that does not converge is a result, not a crash
        return {"error": f"Birch–Murnaghan fit failed ({type(exc).__name__}: {str(exc)[:80]})"}
    if not all(np.isfinite(list(out.values()))) or out["b0_GPa"] <= 0:
        out["error"] = f"unphysical fit (B0 {out['b0_GPa']:.3g} GPa)"
    return out


def curve(model, structure, *, points: int, span: float) -> dict[str, Any]:
    from tui_ft.core.validate.models import predict

    n = len(structure)
    v0 = structure.volume
    scales = np.linspace(1 - span, 1 + span, points)
    cells = []
    for x in scales:
        s = structure.copy()
        s.scale_lattice(float(v0 * x))
        cells.append(s)
    preds = predict(model, cells, task="e")
    vols = [float(s.volume / n) for s in cells]
    es = [float(p["e"]) for p in preds]
    return {"volumes_A3_per_atom": vols, "energies_eV_per_atom": es, **fit(vols, es)}


def run(targets, relaxed: dict, models, frames, *, points: int, span: float, progress, deadline) -> dict[str, Any]:
    from tui_ft.core.validate.structures import eos_dft_points

    rows = []
    total, done = len(targets) * len(models), 0
    for i, t in enumerate(targets):
        row: dict[str, Any] = {"name": t.name}
        dft = eos_dft_points(frames, t)
        if dft:
            row["dft"] = {"volumes_A3_per_atom": [p[0] for p in dft], "energies_eV_per_atom": [p[1] for p in dft],
                          "ids": [p[2] for p in dft]}
            if len({round(p[0], 3) for p in dft}) >= 5:
                row["dft"].update(fit([p[0] for p in dft], [p[1] for p in dft]))
        for m in models:
            if deadline():
                row[m.role] = {"skipped": "time bound reached"}
                continue
            start = relaxed.get((i, m.role), t.structure)
            c = curve(m.model, start, points=points, span=span)
            c["around"] = "its relaxed cell" if (i, m.role) in relaxed else "the start cell (relax did not run)"
            row[m.role] = c
            done += 1
            shown = c.get("error") or f"V0 {c['v0_A3_per_atom']:.3f} Å³/atom, B0 {c['b0_GPa']:.1f} GPa"
            progress(done, total, f"{t.name}: {m.label} {shown}")
        rows.append(row)
    bad = [r["name"] for r in rows if "error" in r.get("finetuned", {})]
    return {"rows": rows, "verdict": "fail" if bad else "ok",
            "note": f"{points} volumes over ±{100 * span:g} %, Birch–Murnaghan (pymatgen)"
                    + (f"; fit failed for {', '.join(bad)}" if bad else "")}
