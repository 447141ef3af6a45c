"""Units of targets: the default ``data.unit`` for a target and data source.

``default_unit("e_form", source)`` is ``eV/atom`` (Matbench's ``mp_e_form`` and
the demo data), except for ``matbench_perovskites``, whose ``e_form`` is the heat
of formation of the whole 5-atom cell (``eV/unit cell``). Other Matbench
structure tasks have the unit given in matminer's dataset metadata; anything
else has no known unit (``""``): the user sets ``data.unit``.
"""

from __future__ import annotations

from pathlib import Path

# Matbench dataset -> (target column, unit), from matminer's dataset metadata
MATBENCH_UNITS: dict[str, tuple[str, str]] = {
    "matbench_mp_e_form": ("e_form", "eV/atom"),
    "matbench_mp_gap": ("gap pbe", "eV"),
    "matbench_expt_gap": ("gap expt", "eV"),
    "matbench_log_kvrh": ("log10(K_VRH)", "log10(GPa)"),
    "matbench_log_gvrh": ("log10(G_VRH)", "log10(GPa)"),
    "matbench_perovskites": ("e_form", "eV/unit cell"),
    "matbench_jdft2d": ("exfoliation_en", "meV/atom"),
    "matbench_phonons": ("last phdos peak", "cm^-1"),
    "matbench_dielectric": ("n", ""),  # refractive index: unitless
    "matbench_steels": ("yield strength", "MPa"),
    "matbench_mp_is_metal": ("is_metal", ""),
    "matbench_expt_is_metal": ("is_metal", ""),
    "matbench_glass": ("gfa", ""),
}


def matbench_name(source: str | Path | None) -> str | None:
    """The Matbench dataset a source names (``matbench_mp_gap``, ``data/matbench_mp_gap.json.gz``), or None."""
    if not source:
        return None
    name = Path(str(source)).name
    for suffix in (".gz", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name if name in MATBENCH_UNITS else None


def default_unit(target: str, source: str | Path | None = None) -> str:
    """The unit of ``target`` read from ``source`` when the preset gives none (``""`` if unknown)."""
    mb = matbench_name(source)
    if mb is not None:
        col, unit = MATBENCH_UNITS[mb]
        if target == col:
            return unit
    if target == "e_form":
        return "eV/atom"
    cols = {col: unit for name, (col, unit) in MATBENCH_UNITS.items() if name != "matbench_perovskites"}
    return cols.get(target, "")


def with_unit(value: str, unit: str) -> str:
    """``"0.0312 eV/atom"`` (just the value when the unit is empty)."""
    return f"{value} {unit}" if unit else value


def fmt_elapsed(seconds: float | None) -> str:
    """A wall time as ``m:ss`` or ``h:mm:ss`` (``-`` for None): the dashboard's and ``compare``'s column."""
    if seconds is None:
        return "-"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# a stress shear component's name -> its plane (``zx`` and ``xz`` are one component of a symmetric tensor)
SHEAR_PLANE: dict[str, str] = {"xy": "xy", "yx": "xy", "yz": "yz", "zy": "yz", "xz": "xz", "zx": "xz"}


def shear_order_names(text: str) -> tuple[str, str, str] | None:
    """A file's order of its three shear stress components: ``"auto"`` -> None, ``"xy yz zx"`` -> the
    names; ``ValueError`` (its message for the preset and the reader) for anything else."""
    if text.strip().lower() == "auto":
        return None
    names = tuple(text.lower().replace(",", " ").split())  # "XY, YZ, ZX" reads as "xy yz zx"
    if len(names) != 3 or len({SHEAR_PLANE.get(n) for n in names} - {None}) != 3:
        raise ValueError('expected "auto" or the three shear components in the file\'s order, '
                         f'e.g. "xy yz zx" (VASP) or "yz xz xy" (ASE), got {text!r}')
    return names  # type: ignore[return-value]
