"""Check 4, drift from the foundation model: on a reference set (structure files the user names, or the
built-in sample of ``structures.REFERENCE_SAMPLE``: eight simple crystals built with ASE, unlabelled),
how far the fine-tuned model's energies (meV/atom) and forces (meV/Å, per component) moved from the
model it is compared with. No DFT is involved: a large drift on chemistry the fine-tuning data never
saw says the fine-tuning overwrote what the foundation model knew there. Energy differences include any
refit of the per-element reference energies (the AtomRef, ``finetune.refit_atomref``): a constant shift
per element that moves energies but not forces; the force drift is the one a refit does not explain."""

from __future__ import annotations

from typing import Any

import numpy as np


def run(structures: list[tuple[str, Any]], tuned, reference, *, source: str, progress) -> dict[str, Any]:
    from tui_ft.core.validate.models import predict

    if reference is None:
        return {"skipped": "no model to compare with (--against none)"}
    items = [s for _, s in structures]
    pt = predict(tuned.model, items, task="ef")
    progress(1, 2, f"{tuned.label} on {len(items)} reference structures")
    pr = predict(reference.model, items, task="ef")
    progress(2, 2, f"{reference.label} on {len(items)} reference structures")
    rows = []
    de_all, df_all = [], []
    for (name, s), a, b in zip(structures, pt, pr):
        de = 1000 * (float(a["e"]) - float(b["e"]))
        df = 1000 * np.abs(np.asarray(a["f"]) - np.asarray(b["f"]))
        de_all.append(de)
        df_all.append(df.ravel())
        rows.append({"name": name, "formula": s.composition.reduced_formula, "n_atoms": len(s),
                     "denergy_meV_per_atom": de, "dforce_mae_meV_per_A": float(df.mean()),
                     "dforce_max_meV_per_A": float(df.max())})
    forces = np.concatenate(df_all) if df_all else np.zeros(0)
    return {"rows": rows, "source": source, "verdict": None,
            "energy_mad_meV_per_atom": float(np.mean(np.abs(de_all))) if de_all else None,
            "energy_max_meV_per_atom": float(np.max(np.abs(de_all))) if de_all else None,
            "force_mad_meV_per_A": float(forces.mean()) if forces.size else None,
            "note": f"{tuned.label} minus {reference.label} on {source}; energies include any AtomRef refit "
                    "(a constant per element), forces do not"}
