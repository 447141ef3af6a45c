"""What the checks run on: the data's frames, the structures to relax, DFT points for the EOS, and the
built-in reference sample for the drift check.

Structures to relax: files the user names, else the data's ground-state entries (a frame whose group
says "ground state": the mlearn files carry one DFT ground-state crystal per element, read with
``group_by="trajectory"`` so its description becomes its group), else, per composition, the frame with
the lowest DFT energy per atom (the most equilibrium-like one; for the EMT demo a near-undistorted cell).
Each is relaxed in its primitive cell when pymatgen finds a smaller one (``tolerance`` 0.1 Å), which for
a rattled frame symmetrises it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_ft.core.validate.models import ValidateInputError

GROUND = re.compile(r"ground[\s_-]*state", re.IGNORECASE)

# The built-in reference sample for the drift check: eight simple crystals built with ASE at their
# room-temperature experimental lattice constants (Å), rattled by 0.03 Å (seed 0) so forces are not zero
# by symmetry. They carry NO labels (no DFT): they only measure how far the fine-tuned model's energies
# and forces moved from the model it is compared with.
REFERENCE_SAMPLE = (
    ("Si-diamond", "Si", "diamond", {"a": 5.431}),
    ("Cu-fcc", "Cu", "fcc", {"a": 3.615}),
    ("Al-fcc", "Al", "fcc", {"a": 4.050}),
    ("Fe-bcc", "Fe", "bcc", {"a": 2.867}),
    ("Ti-hcp", "Ti", "hcp", {"a": 2.951, "c": 4.686}),
    ("NaCl-rocksalt", "NaCl", "rocksalt", {"a": 5.640}),
    ("MgO-rocksalt", "MgO", "rocksalt", {"a": 4.212}),
    ("GaAs-zincblende", "GaAs", "zincblende", {"a": 5.653}),
)
REFERENCE_RATTLE = 0.03  # Å


@dataclass
class Target:
    """A structure to relax: its name, the start structure, and the DFT frame it came from (or None)."""

    name: str
    structure: Any  # pymatgen Structure (primitive where found)
    frame: Any = None  # the data frame (DFT energy, the DFT structure) or None for a given file
    ground_state: bool = False  # the frame is the data's relaxed DFT ground state
    n_sites_given: int = 0


def load_data(source: str, paths) -> tuple[Path, list]:
    """The frames of a data source (a path or a built-in name such as ``demo_potential``)."""
    from tui_ft.core.data.dataset import DataError, resolve_source
    from tui_ft.core.data.frames import FrameError, detect_format, load_frames

    try:
        path = resolve_source(source, paths)
        fmt = detect_format(path)
        fs = load_frames(path, fmt=fmt, group_by="trajectory") if fmt == "mlearn" else load_frames(path, fmt=fmt)
    except (DataError, FrameError, OSError) as exc:
        raise ValidateInputError(f"--data {source}: {exc}") from None
    if not fs.frames:
        raise ValidateInputError(f"--data {source}: no usable frame in {path}")
    return path, list(fs.frames)


def read_structures(files: list[str]) -> list[tuple[str, Any]]:
    """Structure files (anything pymatgen or ASE reads) as ``(name, Structure)``; one line per bad file."""
    from pymatgen.core import Structure

    out = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise ValidateInputError(f"{f}: no such structure file")
        try:
            s = Structure.from_file(str(p))
        except Exception:  # noqa: BLE001 - fall back to ASE's readers
            try:
                import ase.io
                from pymatgen.io.ase import AseAtomsAdaptor

                s = AseAtomsAdaptor.get_structure(ase.io.read(str(p)))
            except Exception as exc:  # noqa: BLE001
                raise ValidateInputError(f"{f}: not a structure pymatgen or ASE reads ({type(exc).__name__})") from None
        if not s.is_ordered or len(s) == 0:
            raise ValidateInputError(f"{f}: expected an ordered periodic structure with atoms")
        out.append((p.stem, s))
    return out


def primitive(structure):
    try:
        prim = structure.get_primitive_structure(tolerance=0.1)
    except Exception:  # noqa: BLE001
        return structure
    return prim if len(prim) < len(structure) else structure


def pick_targets(frames: list, files: list[str], limit: int) -> list[Target]:
    """The structures to relax (see the module docstring), at most ``limit``."""
    if files:
        return [Target(n, primitive(s), n_sites_given=len(s)) for n, s in read_structures(files)][:limit]
    with_e = [f for f in frames if f.energy is not None]
    ground = [f for f in with_e if GROUND.search(f.group or "") or GROUND.search(f.id)]
    if ground:
        chosen, gs = ground, True
    else:
        best: dict[str, Any] = {}
        for f in with_e:
            key = f.structure.composition.reduced_formula
            if key not in best or f.energy_per_atom < best[key].energy_per_atom:
                best[key] = f
        chosen, gs = list(best.values()), False
    return [Target(f"{f.structure.composition.reduced_formula} ({f.id})", primitive(f.structure), f, gs,
                   len(f.structure)) for f in chosen[:limit]]


def _shape(structure) -> tuple[float, ...]:
    a, b, c = structure.lattice.abc
    return (b / a, c / a, *structure.lattice.angles)


def eos_dft_points(frames: list, target: Target) -> list[tuple[float, float, str]]:
    """``(volume Å³/atom, energy eV/atom, id)`` of the data's frames that are the target's crystal scaled:
    the same composition and number of sites, the same cell shape (axis ratios within 1 %, angles within
    1°), the lowest energy at each volume (0.01 Å³/atom). Strained cells with shears or other shapes are left
    out (they are not on the EOS)."""
    ref = target.frame
    if ref is None:
        return []
    comp, n, shape = ref.structure.composition.reduced_formula, len(ref.structure), _shape(ref.structure)
    lowest: dict[float, tuple[float, float, str]] = {}
    for f in frames:
        if f.energy is None or len(f.structure) != n or f.structure.composition.reduced_formula != comp:
            continue
        sh = _shape(f.structure)
        if all(abs(x - y) < 0.01 for x, y in zip(sh[:2], shape[:2])) and all(abs(x - y) < 1.0 for x, y in zip(sh[2:], shape[2:])):
            v = f.structure.volume / n
            key = round(v, 2)  # frames at one volume (rattled copies): the lowest energy is the closest to the EOS
            if key not in lowest or f.energy_per_atom < lowest[key][1]:
                lowest[key] = (v, f.energy_per_atom, f.id)
    return sorted(lowest.values())


def reference_sample() -> list[tuple[str, Any]]:
    """The built-in drift sample (see ``REFERENCE_SAMPLE``): 2x2x2 supercells of primitive cells, rattled."""
    import numpy as np
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    rng = np.random.default_rng(0)
    out = []
    for name, formula, kind, lat in REFERENCE_SAMPLE:
        atoms = bulk(formula, kind, **lat)
        atoms = atoms.repeat((2, 2, 2)) if len(atoms) < 4 else atoms.repeat((2, 2, 1))
        atoms.positions += rng.normal(0, REFERENCE_RATTLE, atoms.positions.shape)
        out.append((name, AseAtomsAdaptor.get_structure(atoms)))
    return out


def error_frames(frames: list, data_path: Path, run_dir: Path | None, own_data: bool, limit: int) -> tuple[list, str]:
    """The frames the test errors are measured on and a line saying which they are: the run's own test
    frames (the ids of its ``test_predictions.csv``) when the data is the run's own, else every frame."""
    import csv

    pred = run_dir / "test_predictions.csv" if run_dir is not None else None
    if own_data and pred is not None and pred.is_file():
        with open(pred, newline="", encoding="utf-8") as fh:
            ids = {row["id"] for row in csv.DictReader(fh) if row.get("id")}
        chosen = [f for f in frames if f.id in ids]
        if chosen:
            return chosen[:limit], f"the run's {len(chosen)} test frames ({pred.name})" + (
                f", first {limit}" if len(chosen) > limit else "")
    return frames[:limit], f"all {len(frames)} frames of {data_path.name}" + (
        f", first {limit}" if len(frames) > limit else "")
