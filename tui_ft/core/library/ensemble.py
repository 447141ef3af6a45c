"""Ensembles: the runs of ``tui-ft ensemble`` used as one model, with an uncertainty.

An ensemble is a study (``logs/.studies/<name>/study.json``, ``"axis": "member"``;
:mod:`tui_ft.core.orchestrate.ensemble`) whose K members are runs of one preset or plan
that differ only in ``train.seed`` (data order, initialisation of what is new); the split
(``data.seed``, ``data.fold``) is the same for all. It is named ``ensemble:NAME`` where a
command takes a checkpoint (``predict``, ``eval``, ``export``); each member contributes its
``best.pt`` (a plan member: its last finished stage's).

Per structure the ensemble's prediction is the members' mean and its uncertainty their
standard deviation (numpy, ``ddof=0``); a potential's forces and stresses per component
likewise. The calibration of that uncertainty on labelled data compares the absolute error
of the mean with the std (:func:`calibration`): the Spearman rank correlation of the two
(``scipy.stats.spearmanr``; does a larger std mean a larger error?) and the fraction of
errors within 1σ and 2σ (a Gaussian error of that σ would give 68.3 % and 95.4 %).

Members that start from one pretrained model spread too little: their raw std is several
times smaller than the error. So ``tui-ft ensemble`` also fits one factor per target on the
members' shared validation rows (:func:`std_scale`: σ-scaling, the maximum-likelihood factor
for Gaussian errors; Levi et al., Sensors 22, 5540 (2022); Palmer et al., npj Comput. Mater.
8, 115 (2022)) and keeps it in ``ensemble.json``; ``predict`` and ``eval`` on the ensemble
then also give the std times that factor (``std_calibrated``). The factor rescales, it does
not reorder: Spearman is the same for both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_ft.core.common.paths import Paths

ENSEMBLE_REF = "ensemble:"
MANIFEST_FORMAT = "tui-ft-ensemble/1"
MANIFEST = "manifest.json"
ENSEMBLE_FILE = "ensemble.json"  # in the ensemble's study folder: its evaluation and std scales
GAUSS_1SIGMA, GAUSS_2SIGMA = 0.6827, 0.9545  # a normal error's share within 1σ / 2σ


class EnsembleError(Exception):
    """An ensemble reference that cannot be used (one line)."""


@dataclass(frozen=True)
class Member:
    number: int  # the member's number k (its train.seed is the preset's + k)
    run_id: str
    checkpoint: Path
    test_mae: float | None = None


def is_ensemble_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(ENSEMBLE_REF)


def members_of(name: str, paths: Paths | None = None) -> tuple[list[Member], list[str]]:
    """The finished members of ensemble ``name`` and a warning per member left out;
    :class:`EnsembleError` when there is no such ensemble or fewer than two members can be used."""
    from tui_ft.core.config.fields import check_name
    from tui_ft.core.orchestrate.study import (
        StudyError,
        fold_result,
        read_study,
        record_number,
        study_dir,
        study_records,
    )

    paths = paths or Paths.default()
    try:
        check_name(name)
    except ValueError as exc:
        raise EnsembleError(f"{ENSEMBLE_REF}{name}: an ensemble name {exc}") from None
    try:
        obj = read_study(name, paths)
    except StudyError as exc:
        raise EnsembleError(str(exc)) from None
    where = study_dir(name, paths) / "study.json"
    if obj is None:
        raise EnsembleError(f"{ENSEMBLE_REF}{name}: no ensemble of that name ({where} does not exist); "
                            "`tui-ft ensemble PRESET -k K` makes one")
    if obj.get("axis") != "member":
        raise EnsembleError(f"{ENSEMBLE_REF}{name}: {where} is a Matbench study (folds), not an ensemble")
    members: list[Member] = []
    warnings: list[str] = []
    for rec in sorted(study_records(obj).values(), key=record_number):
        k = record_number(rec)
        res = fold_result(rec, paths)
        if res.status != "finished" or res.predictions is None:
            warnings.append(f"member {k} left out: {res.status}")
            continue
        run_id = res.predictions.parent.name  # the run (a plan's last finished stage) whose test MAE is the member's
        ckpt = paths.run_ckpt_dir(run_id) / "best.pt"
        if not ckpt.is_file():
            warnings.append(f"member {k} left out: {ckpt} is missing")
            continue
        members.append(Member(k, run_id, ckpt, res.test_mae))
    if len(members) < 2:
        raise EnsembleError(f"{ENSEMBLE_REF}{name}: {len(members)} finished member(s) with a best.pt; an ensemble needs "
                            "at least 2" + (f" ({'; '.join(warnings)})" if warnings else ""))
    return members, warnings


def resolve(ref: str, paths: Paths | None = None) -> tuple[str, list[Member], list[str]]:
    """``ensemble:NAME`` -> ``(NAME, members, warnings)``."""
    name = ref[len(ENSEMBLE_REF):]
    members, warnings = members_of(name, paths)
    return name, members, warnings


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """How well the members' spread ranks and covers the errors of their mean."""

    n: int
    spearman: float | None  # rank correlation of std and |error|; None when either is constant
    within_1sigma: float  # share of |error| <= std
    within_2sigma: float  # share of |error| <= 2 std
    mean_std: float
    mae: float
    bins: tuple[tuple[float, float], ...] = ()  # (mean std, mean |error|) per std decile: the dashboard's chart

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "spearman": self.spearman, "within_1sigma": self.within_1sigma,
                "within_2sigma": self.within_2sigma, "mean_std": self.mean_std, "mae": self.mae,
                "bins": [list(b) for b in self.bins]}


def calibration(abs_err: Sequence[float], std: Sequence[float], *, n_bins: int = 10) -> Calibration:
    """:class:`Calibration` of errors ``abs_err`` against predicted ``std`` (same units, same order)."""
    import numpy as np
    from scipy.stats import spearmanr

    e = np.abs(np.asarray(abs_err, dtype=float).reshape(-1))
    s = np.asarray(std, dtype=float).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"calibration: {e.size} errors but {s.size} stds")
    keep = np.isfinite(e) & np.isfinite(s)
    e, s = e[keep], s[keep]
    if e.size == 0:
        return Calibration(0, None, math.nan, math.nan, math.nan, math.nan)
    rho = None
    if e.size > 2 and np.ptp(e) > 0 and np.ptp(s) > 0:
        r = float(spearmanr(s, e).statistic)
        rho = r if math.isfinite(r) else None
    order = np.argsort(s, kind="stable")
    bins = tuple((float(s[c].mean()), float(e[c].mean())) for c in np.array_split(order, min(n_bins, e.size)) if c.size)
    return Calibration(int(e.size), rho, float((e <= s).mean()), float((e <= 2 * s).mean()), float(s.mean()),
                       float(e.mean()), bins)


def std_scale(abs_err: Sequence[float], std: Sequence[float]) -> tuple[float | None, int]:
    """``(s, n)``: the factor that gives ``error / (s · std)`` unit mean square over the ``n``
    pairs with a finite error and a std > 0, ``s = sqrt(mean((error / std)²))`` (for Gaussian
    errors with σ = s · std, the maximum-likelihood s); ``(None, 0)`` when no pair has."""
    import numpy as np

    e = np.abs(np.asarray(abs_err, dtype=float).reshape(-1))
    s = np.asarray(std, dtype=float).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"std_scale: {e.size} errors but {s.size} stds")
    keep = np.isfinite(e) & np.isfinite(s) & (s > 0)
    if not keep.any():
        return None, 0
    k = float(np.sqrt(np.mean((e[keep] / s[keep]) ** 2)))
    return (k if math.isfinite(k) and k > 0 else None), int(keep.sum())


def fit_std_scales(val_result) -> dict[str, tuple[float | None, int]]:
    """:func:`std_scale` per target of an ensemble's result on its validation rows."""
    return {t: std_scale(e, s) for t, (e, s) in val_result.error_pairs().items()}


def scaled_calibration(result, scales: dict[str, float]) -> dict[str, Calibration]:
    """The :class:`Calibration` per target of ``result`` with each std times its target's scale."""
    import numpy as np

    pairs = result.error_pairs()
    return {t: calibration(pairs[t][0], np.asarray(pairs[t][1], dtype=float) * k)
            for t, k in scales.items() if k and t in pairs}


def read_std_scales(name: str, paths: Paths | None = None) -> tuple[dict[str, float], list[str]]:
    """The std scales ``tui-ft ensemble`` fitted for ensemble ``name`` (its ``ensemble.json``):
    ``({target: factor}, warnings)``: none when the file is missing (the ensemble was not
    evaluated), none and a warning when it is unreadable, a warning per bad factor."""
    import json

    from tui_ft.core.orchestrate.study import study_dir

    where = study_dir(name, paths or Paths.default()) / ENSEMBLE_FILE
    try:
        obj = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, [f"{where}: unreadable ({type(exc).__name__}); no calibrated std"]
    targets = obj.get("targets") if isinstance(obj, dict) else None
    out: dict[str, float] = {}
    bad: list[str] = []
    for t, d in (targets.items() if isinstance(targets, dict) else ()):
        scale = d.get("std_scale") if isinstance(d, dict) else None
        k = scale.get("factor") if isinstance(scale, dict) else None
        if k is None:
            continue
        if isinstance(k, (int, float)) and not isinstance(k, bool) and math.isfinite(k) and k > 0:
            out[str(t)] = float(k)
        else:
            bad.append(f"{where}: targets.{t}.std_scale.factor must be a positive number, got {k!r}; ignored")
    return out, bad


def _mean_std(values: list[Any]):
    import numpy as np

    a = np.stack([np.asarray(v, dtype=float) for v in values])
    return a.mean(axis=0), a.std(axis=0)


# --------------------------------------------------------------------------- property ensembles


@dataclass(frozen=True)
class EnsembleRow:
    id: str
    prediction: float  # the members' mean
    std: float  # the members' std (ddof=0)
    target: float | None
    members: tuple[float, ...]

    @property
    def error(self) -> float | None:
        return None if self.target is None else self.prediction - self.target


@dataclass
class EnsembleResult:
    """An ensemble's predictions (property checkpoints): mean and std per structure."""

    name: str
    members: list[Member]
    rows: list[EnsembleRow]
    failures: list[tuple[str, str]] = field(default_factory=list)
    target: str = ""
    unit: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    member_maes: list[float | None] = field(default_factory=list)
    rows_kind: str = "all"  # "test": the members' own test rows
    path: Path | None = None
    std_scales: dict[str, float] = field(default_factory=dict)  # target -> the factor of std_calibrated

    @property
    def mae(self) -> float | None:
        errs = [abs(r.error) for r in self.rows if r.error is not None]
        return sum(errs) / len(errs) if errs else None

    def error_pairs(self) -> dict[str, tuple[list[float], list[float]]]:
        """``{target: (|error|, std)}`` over the labelled rows (``{}`` when none is)."""
        pairs = [(abs(r.error), r.std) for r in self.rows if r.error is not None]
        if not pairs:
            return {}
        e, s = zip(*pairs)
        return {self.target: (list(e), list(s))}

    def calibration(self) -> Calibration | None:
        pairs = self.error_pairs()
        return calibration(*pairs[self.target]) if pairs else None


def _common_rows(results: list[Any]) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Each member's rows by id, the ids every member predicted (in the first member's order),
    and the failures: a structure one member failed is a failure of the ensemble."""
    by_id = [{r.id: r for r in res.rows} for res in results]
    common = [r.id for r in results[0].rows if all(r.id in d for d in by_id)]
    failures = {i: why for res in results for i, why in res.failures}
    for d in by_id:
        for i in d:
            if i not in common and i not in failures:
                failures[i] = "not predicted by every member"
    return by_id, common, failures


def _combine_property(name: str, members: list[Member], results: list[Any]) -> EnsembleResult:
    """The mean and std of the rows every member predicted (:func:`_common_rows`)."""
    by_id, common, failures = _common_rows(results)
    rows = []
    for i in common:
        vals = [d[i].prediction for d in by_id]
        m, s = _mean_std(vals)
        rows.append(EnsembleRow(i, float(m), float(s), by_id[0][i].target, tuple(float(v) for v in vals)))
    first = results[0]
    return EnsembleResult(name, members, rows, sorted(failures.items()), first.target, first.unit,
                          sum(r.seconds for r in results), list(dict.fromkeys(w for r in results for w in r.warnings)),
                          [r.mae for r in results])


def predict_ensemble(name: str, members: list[Member], inputs, *, target: str | None = None, format: str | None = None,
                     batch_size: int = 32, device: str = "auto", progress=None) -> EnsembleResult:
    """Each member's ``predict`` on the inputs, combined (:class:`EnsembleResult`)."""
    from tui_ft.core.library.predict import predict

    results = [predict(m.checkpoint, inputs, target=target, format=format, batch_size=batch_size, device=device,
                       progress=progress) for m in members]
    return _combine_property(name, members, results)


def evaluate_ensemble(name: str, members: list[Member], data, *, target: str | None = None, rows: str = "auto",
                      batch_size: int = 32, device: str = "auto", progress=None) -> EnsembleResult:
    """Each member's ``eval`` (its own test rows on its own data by default), combined."""
    from tui_ft.core.library.predict import evaluate

    evs = [evaluate(m.checkpoint, data, target, rows=rows, batch_size=batch_size, device=device, progress=progress)
           for m in members]
    res = _combine_property(name, members, [e.result for e in evs])
    res.warnings = list(dict.fromkeys(w for e in evs for w in e.warnings)) + res.warnings
    res.rows_kind, res.path = evs[0].rows, evs[0].path
    return res


def format_ensemble_csv(res: EnsembleResult) -> str:
    """``id,prediction,std[,target,error],member_0..`` with the unit and what mean/std are in a comment."""
    import csv
    import io

    buf = io.StringIO()
    k = res.std_scales.get(res.target)
    buf.write(f"# target: {res.target}; unit: {res.unit or '(none)'}; ensemble {res.name} of {len(res.members)} "
              f"members (runs {', '.join(m.run_id for m in res.members)}): prediction = their mean, std = their "
              "standard deviation (ddof=0)" + (f"; std_calibrated = std x {k:.6g} (fit on the members' validation "
                                               "rows by tui-ft ensemble)" if k else "") + "\n")
    w = csv.writer(buf, lineterminator="\n")
    with_t = any(r.target is not None for r in res.rows)
    w.writerow(["id", "prediction", "std"] + (["std_calibrated"] if k else []) + (["target", "error"] if with_t else [])
               + [f"member_{m.number}" for m in res.members])
    for r in res.rows:
        row = [r.id, repr(r.prediction), repr(r.std)] + ([repr(r.std * k)] if k else [])
        if with_t:
            row += ["" if r.target is None else repr(r.target), "" if r.error is None else repr(r.error)]
        w.writerow(row + [repr(v) for v in r.members])
    return buf.getvalue()


# --------------------------------------------------------------------------- potential ensembles


@dataclass
class PotentialEnsembleResult:
    """A potential ensemble's predictions: ``mean`` holds :class:`tui_ft.core.library.predict.PotentialRow`
    of the members' means (so its ``maes()`` are the ensemble's), ``std`` the matching stds per row
    (``{"energy": eV/atom, "forces": (n, 3) eV/Å, "stress": (3, 3) GPa, "magmom": (n,) μB}``)."""

    name: str
    members: list[Member]
    mean: Any  # PotentialResult
    std: list[dict[str, Any]]
    member_maes: list[dict[str, tuple[float, int]]] = field(default_factory=list)
    rows_kind: str = "all"
    path: Path | None = None
    std_scales: dict[str, float] = field(default_factory=dict)  # target -> the factor of the calibrated stds

    @property
    def rows(self):
        return self.mean.rows

    @property
    def failures(self):
        return self.mean.failures

    @property
    def warnings(self):
        return self.mean.warnings

    def maes(self) -> dict[str, tuple[float, int]]:
        return self.mean.maes()

    def calibration(self) -> dict[str, Calibration]:
        """Per target: energy per structure (eV/atom), force and stress per component, magmom per atom."""
        return {t: calibration(e, s) for t, (e, s) in self.error_pairs().items()}

    def error_pairs(self) -> dict[str, tuple[Any, Any]]:
        """``{target: (|error|, std)}`` as flat arrays, units as :meth:`calibration`'s."""
        import numpy as np

        from tui_ft.core.data.frames import frame_problem

        errs: dict[str, list[Any]] = {}
        stds: dict[str, list[Any]] = {}
        for r, s in zip(self.mean.rows, self.std):
            f = r.label
            if f is None:
                continue
            for t, label, pred in (("energy", "energy", r.energy_per_atom), ("force", "forces", r.forces),
                                   ("stress", "stress", r.stress), ("magmom", "magmom", r.magmom)):
                if pred is None or label not in s or not f.has(label) or frame_problem(f, [label]) is not None:
                    continue
                true = (f.energy_per_atom if t == "energy" else np.abs(np.asarray(f.magmom)) if t == "magmom"
                        else np.asarray(getattr(f, label)))
                errs.setdefault(t, []).append(np.abs(np.asarray(pred, dtype=float) - true).reshape(-1))
                stds.setdefault(t, []).append(np.asarray(s[label], dtype=float).reshape(-1))
        return {t: (np.concatenate(errs[t]), np.concatenate(stds[t])) for t in errs}


def _combine_potential(name: str, members: list[Member], results: list[Any]) -> PotentialEnsembleResult:
    from tui_ft.core.library.predict import PotentialResult, PotentialRow

    by_id, common, failures = _common_rows(results)
    rows, stds = [], []
    for i in common:
        rs = [d[i] for d in by_id]
        e_m, e_s = _mean_std([r.energy_per_atom for r in rs])
        out: dict[str, Any] = {"energy": float(e_s)}
        means: dict[str, Any] = {}
        for attr in ("forces", "stress", "magmom"):
            if getattr(rs[0], attr) is not None:
                means[attr], out[attr] = _mean_std([getattr(r, attr) for r in rs])
        rows.append(PotentialRow(i, rs[0].structure, float(e_m), label=rs[0].label, **means))
        stds.append(out)
    first = results[0]
    mean = PotentialResult(rows, sorted(failures.items()), sum(r.seconds for r in results),
                           list(dict.fromkeys(w for r in results for w in r.warnings)), first.letters)
    return PotentialEnsembleResult(name, members, mean, stds, [r.maes() for r in results])


def predict_potential_ensemble(name: str, members: list[Member], inputs, *, forces: bool = False,
                               stress: bool = False, format: str | None = None, batch_size: int = 32,
                               device: str = "auto", progress=None) -> PotentialEnsembleResult:
    from tui_ft.core.library.predict import predict_potential

    results = [predict_potential(m.checkpoint, inputs, forces=forces, stress=stress, format=format,
                                 batch_size=batch_size, device=device, progress=progress) for m in members]
    return _combine_potential(name, members, results)


def evaluate_potential_ensemble(name: str, members: list[Member], data=None, *, rows: str = "auto",
                                batch_size: int = 32, device: str = "auto", progress=None) -> PotentialEnsembleResult:
    from tui_ft.core.library.predict import evaluate_potential

    evs = [evaluate_potential(m.checkpoint, data, rows=rows, batch_size=batch_size, device=device, progress=progress)
           for m in members]
    res = _combine_potential(name, members, [e.result for e in evs])
    res.mean.warnings = list(dict.fromkeys(w for e in evs for w in e.warnings)) + res.mean.warnings
    res.rows_kind, res.path = evs[0].rows, evs[0].path
    return res


def format_potential_ensemble_csv(res: PotentialEnsembleResult) -> str:
    """The potential CSV (:func:`tui_ft.core.library.predict.format_potential_csv`) of the mean,
    with the energy's std per structure (eV/atom) after the energy columns."""
    from tui_ft.core.library.predict import format_potential_csv

    lines = format_potential_csv(res.mean).splitlines()
    k = res.std_scales.get("energy")
    head = (f"# ensemble {res.name} of {len(res.members)} members (runs {', '.join(m.run_id for m in res.members)}): "
            "each value the members' mean; energy_std_eV_per_atom their standard deviation (ddof=0)"
            + (f"; energy_std_calibrated_eV_per_atom = that x {k:.6g} (fit on the members' validation frames by "
               "tui-ft ensemble)" if k else ""))
    out = [lines[0], head, lines[1] + ",energy_std_eV_per_atom" + (",energy_std_calibrated_eV_per_atom" if k else "")]
    out += [f"{line},{s['energy']!r}" + (f",{s['energy'] * k!r}" if k else "") for line, s in zip(lines[2:], res.std)]
    return "\n".join(out) + "\n"


def write_potential_ensemble_extxyz(res: PotentialEnsembleResult, path: Path | str) -> Path:
    """The mean as extxyz (:func:`tui_ft.core.library.predict.write_potential_extxyz`), with the
    members' std per structure in ``info["energy_std"]`` (total, eV), per atom in
    ``arrays["forces_std"]`` (eV/Å) and the stress's in ``info["stress_std"]`` (eV/Å³, ASE's Voigt
    order xx yy zz yz xz xy); each also as ``..._std_calibrated`` (times its target's scale) where
    the ensemble has one."""
    import ase.io
    from ase.stress import full_3x3_to_voigt_6_stress
    from ase.units import GPa

    from tui_ft.core.common.atomic import atomic_write
    from tui_ft.core.library.predict import write_potential_extxyz

    write_potential_extxyz(res.mean, path)  # the mean, with its SinglePointCalculator
    images = ase.io.read(path, index=":", format="extxyz")
    ks = res.std_scales
    for atoms, row, s in zip(images, res.mean.rows, res.std):
        atoms.info["energy_std"] = float(s["energy"]) * row.n_atoms
        if "energy" in ks:
            atoms.info["energy_std_calibrated"] = float(s["energy"]) * row.n_atoms * ks["energy"]
        if "forces" in s:
            atoms.arrays["forces_std"] = s["forces"]
            if "force" in ks:
                atoms.arrays["forces_std_calibrated"] = s["forces"] * ks["force"]
        if "stress" in s:
            atoms.info["stress_std"] = full_3x3_to_voigt_6_stress(s["stress"] * GPa)
            if "stress" in ks:
                atoms.info["stress_std_calibrated"] = full_3x3_to_voigt_6_stress(s["stress"] * GPa * ks["stress"])
    atomic_write(path, lambda fh: ase.io.write(fh, images, format="extxyz"), binary=False)
    return Path(path)


# --------------------------------------------------------------------------- export


def export_ensemble(name: str, members: list[Member], out_dir: Path | str, *, force: bool = False,
                    paths: Paths | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Each member as a file ``CHGNet.from_file`` loads (``member_<k>.pt``,
    :func:`tui_ft.core.library.export.export_checkpoint`) in ``out_dir``, and ``manifest.json``
    naming them; returns the manifest's path. Every path is checked before anything is written,
    and a failure removes what this call wrote."""
    import hashlib

    from tui_ft.core.common.atomic import atomic_write_json
    from tui_ft.core.common.outputs import OutputPathError, check_output_path
    from tui_ft.core.library.export import (
        ExportError,
        export_checkpoint,
        read_export_info,
    )

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT {out_dir}: an ensemble is exported to a folder; {out_dir} is a file")
    files = [out / f"member_{m.number}.pt" for m in members]
    ckpts = [m.checkpoint for m in members]
    try:
        for f in (*files, out / MANIFEST):
            check_output_path(f, inputs=ckpts, paths=paths, force=force, what="OUT", example="ensemble/")
    except OutputPathError as exc:
        raise ExportError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        entries = []
        for m, f in zip(members, files):
            export_checkpoint(m.checkpoint, f, force=force, paths=paths)
            written.append(f)
            info = read_export_info(f)
            entries.append({"member": m.number, "file": f.name, "run_id": m.run_id, "test_mae": m.test_mae,
                            "unit": info.get("unit"), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
            if say:
                say(f"member {m.number}: {m.checkpoint} -> {f}")
        first = read_export_info(files[0])
        scales, notes = read_std_scales(name, paths)
        for n in notes:
            if say:
                say(f"[warning] {n}")
        manifest = {
            "format": MANIFEST_FORMAT, "ensemble": name, "members": entries, "target": first.get("target"),
            "unit": first.get("unit"), "output": first.get("output"),
            "combine": "prediction = the members' mean; uncertainty = their standard deviation (numpy, ddof=0)"
                       + ("; calibrated uncertainty = that times std_scale[target] (fit on the members' validation "
                          "rows)" if scales else ""),
            "load": "chgnet.model.CHGNet.from_file(<folder>/<file>) for each member",
        }
        if scales:
            manifest["std_scale"] = scales
        atomic_write_json(out / MANIFEST, manifest)
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return out / MANIFEST

