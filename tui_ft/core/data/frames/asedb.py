"""An ASE database (``ase.db.connect(path)``, SQLite ``.db`` or ``.json``).

Each row is a frame; labels as for ase files (ASE units: eV, eV/A, stress
eV/A^3 ASE sign and Voigt order, muB), looked up under the option keys first in
the row's key-value pairs and ``data``, then in its calculator results (what
``row.toatoms()`` attaches). id: key ``id`` / ``name`` / ``material_id`` /
``mp_id``, else ``row-<row id>``; group: key ``group`` / ``config_type`` / ...,
else the file name.
"""

from __future__ import annotations

from pathlib import Path

from tui_ft.core.data.frames.ase_files import GROUP_KEYS, ID_KEYS, first_key, frame_from_atoms
from tui_ft.core.data.frames.frame import Collector, FrameError, FrameSet, hash_files


def read(path: Path, *, energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
         magmom_key: str = "magmoms") -> FrameSet:
    import ase.db

    keys = dict(energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, magmom_key=magmom_key)
    out = Collector(path, "asedb")
    try:
        rows = list(ase.db.connect(path, create_indices=False, use_lock_file=False).select())
    except Exception as exc:  # noqa: BLE001 - any reader failure is one message naming the file
        raise FrameError(f"{path}: not readable as an ASE database ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})") from None
    for row in rows:
        extra = {**row.key_value_pairs, **(row.get("data") or {})}
        ident = first_key(extra, ID_KEYS, f"row-{row.id}")
        where = f"{path} row {row.id}"
        group = first_key(extra, GROUP_KEYS, path.name)
        out.add(lambda: frame_from_atoms(row.toatoms(), ident, group, where, extra=extra, **keys), where, ident)
    return out.build(hash_files([path], path.parent))
