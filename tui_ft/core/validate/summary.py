"""The people's view of a validation's ``results.json``: one row per check, and the markdown summary.

Pure functions of the results dict (no I/O), shared by ``summary.md``, the CLI and the dashboard. The
data's labels are called "data" (DFT for real data sets; the offline demo's are EMT's, not DFT)."""

from __future__ import annotations

from typing import Any

NAMES = {"relax": "relaxation", "eos": "equation of state", "md": "MD stability", "drift": "drift from the reference",
         "errors": "test errors"}


def _f(x: Any, spec: str = ".3f") -> str:
    return "–" if not isinstance(x, (int, float)) or isinstance(x, bool) else format(x, spec)


def _label(results: dict, role: str) -> str:
    return (results.get("models") or {}).get(role, role)


def check_line(name: str, c: dict[str, Any], results: dict[str, Any]) -> str:
    """One line saying what a check found (or why it did not run)."""
    if c.get("status") != "ran":
        return str(c.get("skipped") or "did not run")
    if name == "relax":
        rows = c.get("rows") or []
        parts = []
        for r in rows:
            t = r.get("finetuned") or {}
            if "converged" in t:
                dv = f", ΔV {t['dvolume_pct']:+.1f} % vs {('DFT ground state' if 'ground' in r['dft']['kind'] else 'start frame')}" if "dvolume_pct" in t else ""
                parts.append(f"{r['name']}: {'converged' if t['converged'] else 'not converged'} in {t['steps']} steps{dv}")
        return "; ".join(parts) or "nothing relaxed"
    if name == "eos":
        parts = []
        for r in c.get("rows") or []:
            t = r.get("finetuned") or {}
            o = r.get("reference") or {}
            d = r.get("dft") or {}
            s = f"{r['name']}: B0 {_f(t.get('b0_GPa'), '.1f')} GPa" + (f" (ref. {_f(o.get('b0_GPa'), '.1f')}" if o else "")
            s += (f", data {_f(d.get('b0_GPa'), '.1f')}" if "b0_GPa" in d else "") + (")" if o else "")
            parts.append(s + (f" [{t['error']}]" if t.get("error") else ""))
        return "; ".join(parts)
    if name == "md":
        r = (c.get("rows") or [{}])[0]
        t = r.get("finetuned") or {}
        if "verdict" not in t:
            return str(t.get("skipped") or "did not run")
        s = t["verdict"] + (f": {t['why']}" if t.get("why") else "")
        if t.get("nve_drift_meV_per_atom_per_ps") is not None:
            s += f"; NVE drift {t['nve_drift_meV_per_atom_per_ps']:.3f} meV/atom/ps"
        return s
    if name == "drift":
        return (f"mean abs ΔE {_f(c.get('energy_mad_meV_per_atom'), '.1f')} meV/atom (max {_f(c.get('energy_max_meV_per_atom'), '.1f')}), "
                f"mean abs ΔF {_f(c.get('force_mad_meV_per_A'), '.1f')} meV/Å on {len(c.get('rows') or [])} structures")
    if name == "errors":
        m = c.get("models") or {}
        t, o = m.get("finetuned") or {}, m.get("reference")
        s = (f"E {_f(t.get('energy_mae_meV_per_atom'), '.1f')} meV/atom, F {_f(t.get('force_mae_meV_per_A'), '.0f')} meV/Å, "
             f"S {_f(t.get('stress_mae_GPa'), '.3f')} GPa")
        if o:
            s += (f" (ref. E {_f(o.get('energy_mae_meV_per_atom'), '.1f')}, F {_f(o.get('force_mae_meV_per_A'), '.0f')}, "
                  f"S {_f(o.get('stress_mae_GPa'), '.3f')})")
        return s + f" on {c.get('frames')} frames"
    return ""


def check_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(check, status, verdict, line)`` per chosen check, in the order chosen (those not reached: pending)."""
    checks = results.get("checks") or {}
    out = []
    for name in results.get("order") or list(checks):
        c = checks.get(name)
        if c is None:
            out.append((name, "pending", "", ""))
        else:
            out.append((name, str(c.get("status")), str(c.get("verdict") or ""), check_line(name, c, results)))
    return out


def eos_curves(results: dict[str, Any], index: int = 0) -> dict[str, tuple[list[float], list[float]]]:
    """The EOS points of one structure per model (and the data's points, as "data"): ``{label: (V Å³/atom, E eV/atom)}``."""
    rows = ((results.get("checks") or {}).get("eos") or {}).get("rows") or []
    if index >= len(rows):
        return {}
    r = rows[index]
    out = {}
    for role in ("finetuned", "reference", "dft"):
        d = r.get(role) or {}
        if d.get("volumes_A3_per_atom"):
            name = "data" if role == "dft" else _label(results, role)
            out[name] = (list(d["volumes_A3_per_atom"]), list(d["energies_eV_per_atom"]))
    return out


def markdown(results: dict[str, Any]) -> str:
    ck = results.get("checkpoint") or {}
    ag = results.get("against")
    data = results.get("data")
    lines = [f"# Validation of {ck.get('label')}" + (f" against {ag['label']}" if ag else ""), ""]
    if data:
        lines.append(f"Data: `{data['source']}` ({data['frames']} frames). ")
    lines += [f"Units: {results.get('units')}.", "", "| check | status | verdict | result |", "| --- | --- | --- | --- |"]
    for name, status, verdict, line in check_rows(results):
        lines.append(f"| {NAMES.get(name, name)} | {status} | {verdict or '–'} | {line} |")
    checks = results.get("checks") or {}
    roles = [r for r in ("finetuned", "reference") if r in (results.get("models") or {})]
    c = checks.get("relax")
    if c and c.get("status") == "ran":
        lines += ["", f"## Relaxation ({c.get('note')})", "",
                  "| structure | model | E (eV/atom) | V (Å³/atom) | a, b, c (Å) | steps | converged | ΔV | ΔE (meV/atom) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in c.get("rows") or []:
            if "dft" in r:
                d = r["dft"]
                la = d["lattice"]
                lines.append(f"| {r['name']} | data: {d['kind']} | {_f(d['energy_eV_per_atom'], '.4f')} | "
                             f"{_f(d['volume_A3_per_atom'])} | {la['a']:.3f}, {la['b']:.3f}, {la['c']:.3f} | | | | |")
            for role in roles:
                t = r.get(role) or {}
                if "converged" not in t:
                    continue
                la = t["lattice"]
                lines.append(f"| {r['name']} | {_label(results, role)} | {_f(t['energy_eV_per_atom'], '.4f')} | "
                             f"{_f(t['volume_A3_per_atom'])} | {la['a']:.3f}, {la['b']:.3f}, {la['c']:.3f} | {t['steps']} | "
                             f"{'yes' if t['converged'] else 'NO'} | {_f(t.get('dvolume_pct'), '+.2f')} % | "
                             f"{_f(t.get('denergy_meV_per_atom'), '+.1f')} |")
    c = checks.get("eos")
    if c and c.get("status") == "ran":
        lines += ["", f"## Equation of state ({c.get('note')})", "",
                  "| structure | model | V0 (Å³/atom) | E0 (eV/atom) | B0 (GPa) | points |", "| --- | --- | --- | --- | --- | --- |"]
        for r in c.get("rows") or []:
            for role in (*roles, "dft"):
                t = r.get(role) or {}
                if not t.get("volumes_A3_per_atom"):
                    continue
                name = "data points" if role == "dft" else _label(results, role)
                lines.append(f"| {r['name']} | {name} | {_f(t.get('v0_A3_per_atom'))} | {_f(t.get('e0_eV_per_atom'), '.4f')} | "
                             f"{_f(t.get('b0_GPa'), '.1f')} | {len(t['volumes_A3_per_atom'])} |")
    c = checks.get("md")
    if c and c.get("status") == "ran":
        lines += ["", f"## MD stability ({c.get('note')})", "",
                  "| structure | model | verdict | atoms | steps run | mean T (K) | min distance (Å) | max force (eV/Å) | NVE drift (meV/atom/ps) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in c.get("rows") or []:
            for role in roles:
                t = r.get(role) or {}
                if "verdict" not in t:
                    continue
                v = t["verdict"] + (f" ({t['why']})" if t.get("why") else "")
                lines.append(f"| {r['name']} | {_label(results, role)} | {v} | {t['n_atoms']} | {t['steps_run']} | "
                             f"{_f(t.get('mean_temperature_K'), '.0f')} | {_f(t.get('min_distance_A'), '.2f')} | "
                             f"{_f(t.get('max_force_eV_per_A'), '.2f')} | {_f(t.get('nve_drift_meV_per_atom_per_ps'), '.3f')} |")
    c = checks.get("drift")
    if c and c.get("status") == "ran":
        lines += ["", f"## Drift ({c.get('note')})", "", "| structure | atoms | ΔE (meV/atom) | ΔF MAE (meV/Å) | ΔF max (meV/Å) |",
                  "| --- | --- | --- | --- | --- |"]
        for r in c.get("rows") or []:
            lines.append(f"| {r['name']} | {r['n_atoms']} | {r['denergy_meV_per_atom']:+.1f} | {r['dforce_mae_meV_per_A']:.1f} | "
                         f"{r['dforce_max_meV_per_A']:.1f} |")
    c = checks.get("errors")
    if c and c.get("status") == "ran":
        lines += ["", f"## Test errors ({c.get('which')})", "",
                  "| model | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) |", "| --- | --- | --- | --- |"]
        for role in roles:
            t = (c.get("models") or {}).get(role) or {}
            lines.append(f"| {_label(results, role)} | {_f(t.get('energy_mae_meV_per_atom'), '.1f')} | "
                         f"{_f(t.get('force_mae_meV_per_A'), '.1f')} | {_f(t.get('stress_mae_GPa'), '.3f')} |")
    return "\n".join(lines) + "\n"
