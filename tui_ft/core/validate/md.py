"""Check 3, MD stability: a short NVT run (chgnet's ``MolecularDynamics``, ASE's Berendsen thermostat)
of a supercell of the relaxed structure, then an NVE leg (velocity Verlet) from where it ended.

Along the way, every ``interval`` steps: temperature (K), potential energy (eV/atom), the smallest
interatomic distance (Å, minimum image) and the largest force (eV/Å). The run is **unstable** (and
stops there) when the energy or forces stop being finite, the smallest distance falls below
``collapse`` × its starting value (atoms collapse onto each other), the largest force exceeds
``max_force`` eV/Å, or the temperature exceeds ``hot`` × the target (the run explodes). The NVE leg's
energy drift is the slope of a straight line fitted to the total energy per atom against time
(meV/atom/ps). Velocities start from a Maxwell–Boltzmann distribution at the target temperature
(seeded), with no net momentum."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

MAX_POINTS = 200  # points kept per trace


class _Stop(Exception):
    def __init__(self, reason: str, unstable: bool):
        super().__init__(reason)
        self.reason, self.unstable = reason, unstable


def supercell(structure, min_atoms: int):
    """The structure repeated ``k`` times along each axis, the smallest ``k`` giving ``min_atoms`` atoms."""
    k = 1
    while len(structure) * k ** 3 < min_atoms:
        k += 1
    return structure * (k, k, k) if k > 1 else structure.copy()


def _min_distance(atoms) -> float:
    if len(atoms) < 2:
        return float(min(atoms.cell.lengths()))
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def _thin(xs: list) -> list:
    if len(xs) <= MAX_POINTS:
        return xs
    idx = np.linspace(0, len(xs) - 1, MAX_POINTS).round().astype(int)
    return [xs[i] for i in idx]


def run_one(model, structure, *, temperature: float, steps: int, nve_steps: int, timestep: float,
            min_atoms: int, seed: int, max_seconds: float, collapse: float = 0.5, max_force: float = 50.0,
            hot: float = 5.0, on_step=None) -> dict[str, Any]:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from chgnet.model.dynamics import MolecularDynamics
    from pymatgen.io.ase import AseAtomsAdaptor

    from tui_ft.core.validate.models import quiet

    cell = supercell(structure, min_atoms)
    atoms = AseAtomsAdaptor.get_atoms(cell)
    n = len(atoms)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    d0 = _min_distance(atoms)
    interval = max(1, (steps + nve_steps) // MAX_POINTS)
    trace: dict[str, list] = {"time_fs": [], "temperature_K": [], "epot_eV_per_atom": [], "min_distance_A": [],
                              "max_force_eV_per_A": [], "etot_eV_per_atom": [], "leg": []}
    state = {"step": 0, "leg": "nvt", "t0": time.monotonic()}

    def watch(dyn_atoms, dyn, offset: int) -> None:
        if state["leg"] == "nve" and dyn.nsteps == 0:
            return  # the NVE leg's first call is the NVT run's last point
        state["step"] = offset + dyn.nsteps
        e = float(dyn_atoms.get_potential_energy()) / n
        f = dyn_atoms.get_forces()
        temp = float(dyn_atoms.get_temperature())
        fm = float(np.sqrt((f ** 2).sum(axis=1)).max()) if np.all(np.isfinite(f)) else math.inf
        dmin = _min_distance(dyn_atoms)
        trace["time_fs"].append(state["step"] * timestep)
        trace["temperature_K"].append(temp)
        trace["epot_eV_per_atom"].append(e)
        trace["min_distance_A"].append(dmin)
        trace["max_force_eV_per_A"].append(fm)
        trace["etot_eV_per_atom"].append(e + float(dyn_atoms.get_kinetic_energy()) / n)
        trace["leg"].append(state["leg"])
        if on_step is not None:
            on_step(state["step"], steps + nve_steps, temp)
        at = f"at {state['step'] * timestep:g} fs ({state['leg'].upper()} step {state['step']})"
        if not (math.isfinite(e) and math.isfinite(fm)):
            raise _Stop(f"energy or forces not finite {at}", True)
        if dmin < collapse * d0:
            raise _Stop(f"atoms collapsed {at}: smallest distance {dmin:.2f} Å (start {d0:.2f} Å)", True)
        if fm > max_force:
            raise _Stop(f"force blew up {at}: {fm:.1f} eV/Å", True)
        if temp > hot * temperature and state["step"] > 2 * interval:
            raise _Stop(f"the run exploded {at}: {temp:.0f} K for a {temperature:g} K thermostat", True)
        if time.monotonic() - state["t0"] > max_seconds:
            raise _Stop(f"time bound of {max_seconds:g} s reached {at}", False)

    verdict, why, drift = "stable", "", None
    try:
        with quiet():
            md = MolecularDynamics(atoms=atoms, model=model, ensemble="nvt", thermostat="Berendsen",
                                   temperature=temperature, timestep=timestep, trajectory=None, logfile=None,
                                   loginterval=interval, on_isolated_atoms="ignore")
        md.dyn.attach(watch, interval=interval, dyn_atoms=md.atoms, dyn=md.dyn, offset=0)
        md.run(steps)
        state["step"] = md.dyn.nsteps  # the steps run, whatever the observer interval saw last
        if nve_steps > 0:
            state["leg"] = "nve"
            with quiet():
                nve = MolecularDynamics(atoms=md.atoms, model=model, ensemble="nve", timestep=timestep,
                                        trajectory=None, logfile=None, loginterval=interval,
                                        on_isolated_atoms="ignore")
            nve.dyn.attach(watch, interval=interval, dyn_atoms=nve.atoms, dyn=nve.dyn, offset=md.dyn.nsteps)
            nve.run(nve_steps)
            state["step"] = md.dyn.nsteps + nve.dyn.nsteps
    except _Stop as stop:
        verdict, why = ("unstable" if stop.unstable else "stopped"), stop.reason
    nve_t = [t for t, leg in zip(trace["time_fs"], trace["leg"]) if leg == "nve"]
    nve_e = [e for e, leg in zip(trace["etot_eV_per_atom"], trace["leg"]) if leg == "nve"]
    if len(nve_t) >= 3 and verdict == "stable":
        slope = np.polyfit(np.array(nve_t) / 1000.0, np.array(nve_e) * 1000.0, 1)[0]  # meV/atom per ps
        drift = float(slope)
    finite = [x for x in trace["min_distance_A"] if math.isfinite(x)]
    return {"n_atoms": n, "temperature_K": temperature, "timestep_fs": timestep, "nvt_steps": steps,
            "nve_steps": nve_steps, "steps_run": state["step"], "verdict": verdict, "why": why,
            "start_min_distance_A": d0, "min_distance_A": min(finite) if finite else None,
            "max_force_eV_per_A": max(trace["max_force_eV_per_A"], default=None),
            "mean_temperature_K": float(np.mean(trace["temperature_K"])) if trace["temperature_K"] else None,
            "nve_drift_meV_per_atom_per_ps": drift,
            "trace": {k: _thin(v) for k, v in trace.items()}}


def run(targets, relaxed: dict, models, *, progress, deadline, **kw) -> dict[str, Any]:
    """MD of the first target (its relaxed cell per model) with every model."""
    if not targets:
        return {"rows": [], "verdict": None, "note": "no structure to run"}
    t = targets[0]
    row: dict[str, Any] = {"name": t.name}
    for k, m in enumerate(models):
        if deadline():
            row[m.role] = {"skipped": "time bound reached"}
            continue
        start = relaxed.get((0, m.role), t.structure)
        total = kw["steps"] + kw["nve_steps"]
        shown = {"next": max(1, total // 10)}

        def on_step(step: int, n: int, temp: float, _m=m, _k=k, shown=shown) -> None:
            if step >= shown["next"] and step < n:  # about every tenth of the run
                shown["next"] = step + max(1, n // 10)
                progress(_k, len(models), f"{_m.label}: step {step}/{n}, {temp:.0f} K")

        r = run_one(m.model, start, on_step=on_step, **kw)
        row[m.role] = r
        text = r["verdict"] + (f": {r['why']}" if r["why"] else "")
        if r["nve_drift_meV_per_atom_per_ps"] is not None:
            text += f", NVE drift {r['nve_drift_meV_per_atom_per_ps']:.2f} meV/atom/ps"
        progress(k + 1, len(models), f"{t.name}: {m.label} {text}")
    tuned = row.get("finetuned", {})
    verdict = {"stable": "ok", "unstable": "fail", "stopped": "warn"}.get(tuned.get("verdict"), None)
    return {"rows": [row], "verdict": verdict,
            "note": f"NVT {kw['steps']} steps + NVE {kw['nve_steps']} steps of {kw['timestep']:g} fs at "
                    f"{kw['temperature']:g} K, ≥ {kw['min_atoms']} atoms"}
