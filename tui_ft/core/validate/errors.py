"""Check 5, test errors per target: energy (meV/atom), force (meV/Å, per component) and stress (GPa, per
component, ASE sign: positive = tensile, as the frames hold it) mean absolute errors against the data's
labels, for each model, on the run's own test frames (or every frame of another data source)."""

from __future__ import annotations

from typing import Any

import numpy as np


def run(frames: list, models, *, which: str, batch_size: int, progress) -> dict[str, Any]:
    from tui_ft.core.validate.models import predict

    if not frames:
        return {"skipped": "no frames to score"}
    out: dict[str, Any] = {"frames": len(frames), "which": which, "verdict": None, "models": {}}
    structs = [f.structure for f in frames]
    for k, m in enumerate(models):
        preds = predict(m.model, structs, task="efs", batch_size=batch_size)
        e, f, s = [], [], []
        for fr, p in zip(frames, preds):
            if fr.energy is not None:
                e.append(abs(float(p["e"]) - fr.energy_per_atom))
            if fr.forces is not None:
                f.append(np.abs(np.asarray(p["f"]) - fr.forces).ravel())
            if fr.stress is not None:
                s.append(np.abs(np.asarray(p["s"]) - fr.stress).ravel())
        r = {"energy_mae_meV_per_atom": 1000 * float(np.mean(e)) if e else None,
             "force_mae_meV_per_A": 1000 * float(np.concatenate(f).mean()) if f else None,
             "stress_mae_GPa": float(np.concatenate(s).mean()) if s else None,
             "n_energy": len(e), "n_forces": len(f), "n_stress": len(s)}
        out["models"][m.role] = r
        shown = ", ".join(f"{k2.split('_mae')[0]} {v:.4g}" for k2, v in r.items() if "_mae" in k2 and v is not None)
        progress(k + 1, len(models), f"{m.label}: {shown}")
    return out
