"""The offline potential demo: small fcc metal cells labelled by ASE's EMT (NOT DFT).

For trying potential fine-tuning (energies, forces, stresses) without a network,
this module builds 125 frames (650 atoms) of five fcc metals and labels each with ASE's
Effective Medium Theory calculator (:class:`ase.calculators.emt.EMT`). **EMT is a
toy many-body potential, the labels are not DFT data** and mean nothing beyond
"a smooth, physical-looking potential"; see ``docs/DEMO_DATA.md``.

Frames, per metal (Cu, Al, Ni, Ag, Pd; ASE's reference fcc lattice constant)
    ``rattle``   8: Gaussian displacements of std 0.02, 0.05, 0.08, 0.12 Å, two draws
                 each, of the conventional cubic cell (4 atoms).
    ``strain``   9: the conventional cell strained (volume -4, -2, 0, +2, +4 %; shears
                 e_xy = +-2 %, e_yz = +3 %, e_xz = -3 %), then rattled by 0.02 Å so
                 the forces are not zero by symmetry.
    ``md``       6: snapshots 50 fs apart of one Langevin run (5 fs step, 300-600 K by
                 metal) of the 2x2x2 primitive cell (8 atoms), after 100 fs.
    ``vacancy``  2: the conventional 2x1x1 cell (8 atoms) with one atom removed (7
                 atoms), unrelaxed and rattled by 0.05 Å. (In the 2x2x2 primitive
                 cell the unrelaxed vacancy would leave every force zero by symmetry.)

Labels (each frame's :class:`~ase.calculators.singlepoint.SinglePointCalculator`)
    ``energy`` total EMT energy of the cell (eV; EMT's own zero, not a formation
    energy), ``forces`` (eV/Å, n x 3), ``stress`` (eV/Å³, Voigt xx yy zz yz xz xy,
    ASE's sign: positive = tensile, the cell would shrink). EMT gives no magnetic
    moments, so the frames carry none (train with the magmom weight at 0).

Every frame has ``info`` keys ``id`` (``Cu-rattle-003``), ``group`` (frames that
must stay in one split: ``Cu-md`` for a whole trajectory, ``Cu-vacancy`` for both
vacancy frames, the frame's own id otherwise), ``config_type`` (the four names
above), ``desc`` (how it was made), ``labels`` (``"ASE EMT (toy potential, not
DFT)"``), ``demo_version`` and ``seed``. Positions are rounded to 1e-8 Å before
labelling, so the file (which stores positions and forces to 8 decimals, energy
and stress exactly) reproduces its labels when EMT is run on it again.
"""

from __future__ import annotations

import io
from pathlib import Path

from tui_ft.core.common.atomic import atomic_write
from tui_ft.core.common.paths import Paths

DEMO_POTENTIAL_VERSION = 1
DEMO_POTENTIAL_FILENAME = "demo_potential.extxyz"
LABELS = "ASE EMT (toy potential, not DFT)"
CONFIG_TYPES = ("rattle", "strain", "md", "vacancy")

METALS = ("Cu", "Al", "Ni", "Ag", "Pd")
MD_TEMPERATURE_K = {"Cu": 500.0, "Al": 400.0, "Ni": 600.0, "Ag": 300.0, "Pd": 450.0}
RATTLE_STD = (0.02, 0.05, 0.08, 0.12)  # Å
STRAIN_RATTLE_STD = 0.02  # Å
VOLUME_STRAINS = (-0.04, -0.02, 0.0, 0.02, 0.04)  # relative volume change
SHEAR_STRAINS = (("xy", 0.02), ("xy", -0.02), ("yz", 0.03), ("xz", -0.03))  # engineering tensor e_ij = e_ji
MD_TIMESTEP_FS = 5.0  # as in ASE's EMT molecular-dynamics tutorial
MD_FRICTION_PER_FS = 0.02
MD_EQUIL_STEPS = 20  # 100 fs before the first snapshot
MD_STRIDE = 10  # 50 fs between snapshots
MD_SNAPSHOTS = 6
VACANCY_RATTLE_STD = 0.05  # Å
DECIMALS = 8  # positions rounded to this many decimals (Å), as extxyz writes them


def _cells(symbol: str):
    from ase.build import bulk

    conv = bulk(symbol, "fcc", cubic=True)  # 4 atoms, ASE's reference lattice constant
    prim = bulk(symbol, "fcc")
    return {"conv": conv, "conv211": conv.repeat((2, 1, 1)), "prim222": prim.repeat((2, 2, 2))}


def _label(atoms, **info):
    """A fresh, bare copy of ``atoms`` (positions rounded) with EMT's labels in a SinglePointCalculator."""
    import numpy as np
    from ase import Atoms
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    out = Atoms(
        symbols=atoms.get_chemical_symbols(),
        positions=np.round(atoms.get_positions(), DECIMALS),
        cell=np.array(atoms.get_cell()),
        pbc=True,
    )
    out.calc = EMT()
    energy = float(out.get_potential_energy())
    forces = np.array(out.get_forces())
    stress = np.array(out.get_stress(voigt=True))
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces, stress=stress)
    out.info.update(info)
    return out


def _frames_for(symbol: str, k: int, seed: int) -> list:
    import numpy as np
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    rng = np.random.default_rng([seed, k])
    cells = _cells(symbol)
    frames: list = []
    common = {"labels": LABELS, "demo_version": DEMO_POTENTIAL_VERSION, "seed": seed}

    def add(kind: str, atoms, desc: str, group: str | None = None) -> None:
        n = sum(1 for f in frames if f.info["config_type"] == kind)
        ident = f"{symbol}-{kind}-{n:03d}"
        frames.append(_label(atoms, id=ident, group=group or ident, config_type=kind, desc=desc, **common))

    def rattled(atoms, std: float):
        a = atoms.copy()
        a.positions = a.positions + rng.normal(0.0, std, size=a.positions.shape)
        return a

    for std in RATTLE_STD:
        for draw in ("a", "b"):
            add("rattle", rattled(cells["conv"], std), f"rattle {std:.2f} A on conv, draw {draw}")

    axis = {"x": 0, "y": 1, "z": 2}
    strains = [(f"volume {100 * v:+.0f}%", np.eye(3) * ((1.0 + v) ** (1.0 / 3.0) - 1.0)) for v in VOLUME_STRAINS]
    for pair, e in SHEAR_STRAINS:
        eps = np.zeros((3, 3))
        i, j = axis[pair[0]], axis[pair[1]]
        eps[i, j] = eps[j, i] = e
        strains.append((f"shear e_{pair} {100 * e:+.0f}%", eps))
    for text, eps in strains:
        a = cells["conv"].copy()
        a.set_cell(np.array(a.get_cell()) @ (np.eye(3) + eps), scale_atoms=True)
        add("strain", rattled(a, STRAIN_RATTLE_STD), f"{text} + rattle {STRAIN_RATTLE_STD:.2f} A on conv")

    t_k = MD_TEMPERATURE_K[symbol]
    md = cells["prim222"].copy()
    md.calc = EMT()
    md.set_constraint(FixCom())
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(md, t_k, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(md, temperature_K=t_k, rng=rng)
    vd.Stationary(md)
    dyn = Langevin(
        md,
        timestep=MD_TIMESTEP_FS * units.fs,
        temperature_K=t_k,
        friction=MD_FRICTION_PER_FS / units.fs,
        fixcm=False,  # the FixCom constraint keeps the centre of mass instead (ASE >= 3.28)
        rng=rng,
    )
    dyn.run(MD_EQUIL_STEPS)
    for s in range(MD_SNAPSHOTS):
        if s:
            dyn.run(MD_STRIDE)
        snap = md.copy()
        snap.wrap()
        step = MD_EQUIL_STEPS + s * MD_STRIDE
        add("md", snap, f"Langevin {t_k:.0f} K step {step} ({step * MD_TIMESTEP_FS:.0f} fs) on prim222",
            group=f"{symbol}-md")

    vac = cells["conv211"].copy()
    del vac[0]
    add("vacancy", vac, "one vacancy in conv211, unrelaxed", group=f"{symbol}-vacancy")
    add("vacancy", rattled(vac, VACANCY_RATTLE_STD), f"one vacancy in conv211, rattle {VACANCY_RATTLE_STD:.2f} A",
        group=f"{symbol}-vacancy")
    return frames


def build_frames(seed: int = 0) -> list:
    """Every demo frame (``ase.Atoms`` with EMT labels), metal by metal in ``METALS`` order.

    Deterministic for a given ``seed`` (one NumPy generator per metal from ``(seed, metal index)``)."""
    frames: list = []
    for k, symbol in enumerate(METALS):
        frames.extend(_frames_for(symbol, k, seed))
    return frames


def demo_potential_bytes(frames: list | None = None, *, seed: int = 0) -> bytes:
    """The extxyz text (UTF-8) of ``frames`` (default: ``build_frames(seed)``)."""
    from ase.io import write

    frames = build_frames(seed) if frames is None else frames
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    return buf.getvalue().encode("utf-8")


def write_demo_potential(path: Path | str, *, seed: int = 0) -> Path:
    """Write the demo frames for ``seed`` to ``path`` (extxyz, atomically) and return it."""
    path = Path(path)
    blob = demo_potential_bytes(seed=seed)
    atomic_write(path, lambda fh: fh.write(blob))
    return path


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """``(demo_version, seed)`` of the file's first frame, or None if it cannot be read."""
    try:
        from ase.io import read

        info = read(path, index=0, format="extxyz").info
        return int(info["demo_version"]), int(info["seed"])
    except Exception:  # noqa: BLE001 - anything unreadable is rebuilt
        return None


def ensure_demo_potential(paths: Paths | None = None) -> Path:
    """``<data>/demo_potential.extxyz`` (seed 0), (re)built if missing, unreadable or of another version."""
    paths = paths or Paths.default()
    path = paths.data / DEMO_POTENTIAL_FILENAME
    if path.is_file() and _file_stamp(path) == (DEMO_POTENTIAL_VERSION, 0):
        return path
    return write_demo_potential(path, seed=0)
