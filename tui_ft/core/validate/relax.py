"""Check 1, relaxation: chgnet's ``StructOptimizer`` (FIRE, positions and cell through ASE's
``FrechetCellFilter``) on each target, per model: energy (eV/atom), volume (Å³/atom) and lattice
parameters (Å, °; of the conventional standard cell pymatgen's SpacegroupAnalyzer finds) after the
relaxation, the number of optimizer steps, and whether it converged (stopped before the step bound,
i.e. every generalised force below ``fmax``). Beside them: the DFT structure when the data has one
(the ground-state crystal; else the start frame's own, unrelaxed values, marked as such)."""

from __future__ import annotations

import math
from typing import Any


def lattice(structure) -> dict[str, float]:
    """a, b, c (Å), alpha, beta, gamma (°) of the conventional standard cell (the cell itself if no symmetry is found)."""
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        conv = SpacegroupAnalyzer(structure, symprec=0.1).get_conventional_standard_structure()
    except Exception:  # noqa: BLE001
        conv = structure
    a, b, c = conv.lattice.abc
    al, be, ga = conv.lattice.angles
    return {"a": a, "b": b, "c": c, "alpha": al, "beta": be, "gamma": ga}


def relax_one(model, structure, *, steps: int, fmax: float) -> dict[str, Any]:
    """One relaxation with chgnet's StructOptimizer; the relaxed Structure is under ``"structure"``."""
    from chgnet.model import StructOptimizer

    from tui_ft.core.validate.models import quiet

    with quiet():
        opt = StructOptimizer(model=model, optimizer_class="FIRE", use_device="cpu", on_isolated_atoms="ignore")
        out = opt.relax(structure.copy(), fmax=fmax, steps=steps, relax_cell=True, verbose=False,
                        assign_magmoms=False)
    final, traj = out["final_structure"], out["trajectory"]
    n = len(final)
    taken = max(0, len(traj.energies) - 2)  # the observer is called once before the first step and once after the last
    e = float(traj.energies[-1]) / n
    forces = traj.forces[-1]
    fmax_seen = float(max(math.sqrt(float((f ** 2).sum())) for f in forces)) if len(forces) else 0.0
    return {"structure": final, "energy_eV_per_atom": e, "volume_A3_per_atom": final.volume / n,
            "lattice": lattice(final), "steps": taken, "converged": taken < steps,
            "max_force_eV_per_A": fmax_seen, "n_atoms": n}


def run(targets, models, *, steps: int, fmax: float, progress, deadline) -> dict[str, Any]:
    """Relax every target with every model; ``progress(done, total, text)`` after each relaxation."""
    rows: list[dict[str, Any]] = []
    total, done = len(targets) * len(models), 0
    relaxed: dict[tuple[int, str], Any] = {}
    for i, t in enumerate(targets):
        row: dict[str, Any] = {"name": t.name, "n_atoms": len(t.structure)}
        if t.frame is not None:
            s = t.frame.structure
            row["dft"] = {"energy_eV_per_atom": t.frame.energy_per_atom, "volume_A3_per_atom": s.volume / len(s),
                          "lattice": lattice(s), "id": t.frame.id,
                          "kind": "DFT ground state" if t.ground_state else "start frame (not a relaxed DFT structure)"}
        for m in models:
            if deadline():
                row[m.role] = {"skipped": "time bound reached"}
                continue
            r = relax_one(m.model, t.structure, steps=steps, fmax=fmax)
            relaxed[(i, m.role)] = r.pop("structure")
            if "dft" in row:
                d = row["dft"]
                r["dvolume_pct"] = 100 * (r["volume_A3_per_atom"] / d["volume_A3_per_atom"] - 1)
                r["da_pct"] = 100 * (r["lattice"]["a"] / d["lattice"]["a"] - 1)
                r["denergy_meV_per_atom"] = 1000 * (r["energy_eV_per_atom"] - d["energy_eV_per_atom"])
            row[m.role] = r
            done += 1
            progress(done, total, f"{t.name}: {m.label} {'converged' if r['converged'] else 'NOT converged'} "
                                  f"in {r['steps']} steps, V {r['volume_A3_per_atom']:.3f} Å³/atom")
        rows.append(row)
    tuned = [r["finetuned"] for r in rows if "converged" in r.get("finetuned", {})]
    verdict = "ok" if all(r["converged"] for r in tuned) else "warn"
    return {"rows": rows, "verdict": verdict, "_relaxed": relaxed,
            "note": f"FIRE, fmax {fmax} eV/Å, at most {steps} steps, cell relaxed (FrechetCellFilter)"}
