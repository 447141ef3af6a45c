"""``tui-ft ensemble``: K runs of one preset or plan that differ only in their seed.

Member ``k`` is the preset (every stage of a plan) with ``train.seed`` raised by ``k``
and run name ``<ensemble>-m<k>``: the order in which the training data is drawn and the
initialisation of anything new (a head, a refit) change; the split (``data.seed``,
``data.fold``, ``data.test_source``) does not, so every member has the same test rows.
The members run on the study executors (``--jobs``, ``--gpus``, ``--executor slurm``), and
the ensemble is a study (:class:`tui_ft.core.orchestrate.study.Study`, axis ``member``) in
``logs/.studies/<name>/``, continued by running the same command again:

``study.json``
    the members (``members.<k>``) with their run ids and status.
``member<k>.toml`` / ``member<k>.log``
    the member's preset (or plan) and its process's output.
``ensemble.json``
    when every member has finished: the members' and the ensemble's test MAE on their
    shared test rows and the calibration of the members' spread
    (:func:`tui_ft.core.library.ensemble.calibration`), per target for a potential; and per
    target the factor ``std_scale`` fitted on their shared validation rows
    (:func:`tui_ft.core.library.ensemble.std_scale`) with the test calibration of the std
    times it (``calibration_scaled``). ``predict``/``eval`` on the ensemble use that factor.
``test_predictions.csv``
    the ensemble's mean, std and calibrated std per test structure (a property ensemble).
``summary.md``
    the member table and the ensemble's numbers.

The ensemble is then ``ensemble:<name>`` for ``tui-ft predict``, ``eval`` and ``export``.

Exit codes: 0 every member finished (and the ensemble was evaluated), 1 a member failed,
2 usage error, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

from tui_ft.core.common.atomic import atomic_write_json, atomic_write_text
from tui_ft.core.config.presets import Preset
from tui_ft.core.library.ensemble import ENSEMBLE_FILE
from tui_ft.core.orchestrate.study import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MAX_MEMBERS,
    FoldResult,
    Study,
    StudyError,
    mean_std,
    run_study,
)


def member_name(base: str, k: int) -> str:
    return f"{base[: 64 - 4]}-m{k}"


def _without_ensemble(preset: Preset) -> Preset:
    """The preset without its ``[ensemble]`` table (a member is one run, not an ensemble again)."""
    if getattr(preset, "ensemble", None) is None:
        return preset
    new = preset.model_copy(update={"ensemble": None})
    return new.located(preset.path, preset.lines)


class Ensemble(Study):
    axis = "member"
    command = "ensemble"

    @classmethod
    def run_name(cls, base: str, k: int) -> str:
        return member_name(base, k)

    @classmethod
    def variant(cls, preset: Preset, k: int) -> Preset:
        seed = (preset.train.seed + k) % 2**32
        return _without_ensemble(preset).with_changes({"train.seed": seed, "run.name": member_name(preset.name, k)})

    @classmethod
    def describe(cls, k: int) -> str:
        return f"ensemble member {k} (train.seed + {k})"

    @classmethod
    def fingerprint(cls, loaded) -> str:
        """What every member trains apart from its seed: the preset (or the plan's stages)
        without where it runs, its description and the ensemble's size."""
        if isinstance(loaded, Preset):
            blob: Any = _without_ensemble(loaded).to_dict()
            blob.pop("cluster", None)
            blob["run"].pop("description", None)
        else:
            blob = [[s.fingerprint, s.gate.text if s.gate else None] for s in loaded.stages]
        return hashlib.sha256(json.dumps(["ensemble", blob], sort_keys=True, default=str).encode()).hexdigest()

    def finish(self, interrupted: bool) -> int:
        results = self.results()
        print("\n".join(member_table(results)), flush=True)
        maes = [r.test_mae for r in results if r.status == "finished" and r.test_mae is not None]
        ms = mean_std(maes) if maes else None
        all_done = all(r.status == "finished" for r in results)
        summary: dict[str, Any] | None = None
        if all_done:
            try:
                summary = self.evaluate()
            except Exception as exc:  # noqa: BLE001 - said in one line; the members stay finished
                self.say(f"ensemble {self.name}: its members finished but the ensemble could not be evaluated "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})")
                all_done = False
        atomic_write_text(self.dir / "summary.md", _summary_md(self, results, ms, summary))
        self.state["status"] = "finished" if all_done else ("interrupted" if interrupted else "failed")
        if ms is not None:
            self.state["test_mae_mean"], self.state["test_mae_std"] = ms
        self.save()
        if all_done:
            print(f"ensemble: ensemble:{self.name} ({self.dir / ENSEMBLE_FILE})", flush=True)
            return EXIT_OK
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED

    def evaluate(self) -> dict[str, Any]:
        """The ensemble on its members' shared test rows: ``ensemble.json`` (and the mean/std per
        structure in ``test_predictions.csv`` for a property); the summary printed."""
        from tui_ft.core.library.ensemble import (
            evaluate_ensemble,
            evaluate_potential_ensemble,
            fit_std_scales,
            format_ensemble_csv,
            members_of,
            scaled_calibration,
        )
        from tui_ft.core.library.predict import MAE_UNIT, is_potential

        def scales_on_val(fn, *args) -> dict[str, tuple[float | None, int]]:
            """The std scale per target, fitted on the members' validation rows ({} and a warning if they fail)."""
            try:
                return fit_std_scales(fn(self.name, members, *args, rows="val"))
            except Exception as exc:  # noqa: BLE001 - the ensemble is still evaluated, without a calibrated std
                self.say(f"[warning] ensemble {self.name}: no std scale fitted on the validation rows "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
                return {}

        members, warnings = members_of(self.name, self.paths)
        for w in warnings:
            self.say(f"[warning] {w}")
        last = self.loaded if isinstance(self.loaded, Preset) else self.loaded.stages[-1].preset
        out: dict[str, Any] = {"ensemble": self.name, "members": [
            {"member": m.number, "run_id": m.run_id, "checkpoint": str(m.checkpoint)} for m in members]}
        if is_potential({"preset": last.to_dict()}):
            res = evaluate_potential_ensemble(self.name, members)
            fitted = scales_on_val(evaluate_potential_ensemble)
            cal = res.calibration()
            targets = {}
            for t, (v, n) in res.maes().items():
                per_member = [mm.get(t, (None, 0))[0] for mm in res.member_maes]
                targets[t] = {"unit": MAE_UNIT[t], "n": n, "ensemble_mae": v, "member_maes": per_member,
                              "calibration": cal[t].as_dict() if t in cal else None}
            out.update(kind="potential", rows=res.rows_kind, targets=targets,
                       calibration_units={"energy": "eV/atom", "force": "eV/Å", "stress": "GPa", "magmom": "μB"})
        else:
            res = evaluate_ensemble(self.name, members, last.data.source)
            fitted = scales_on_val(evaluate_ensemble, last.data.source)
            c = res.calibration()
            out.update(kind="property", rows=res.rows_kind, target=res.target, unit=res.unit, n=len(res.rows),
                       targets={res.target: {"unit": res.unit, "n": len(res.rows), "ensemble_mae": res.mae,
                                             "member_maes": res.member_maes,
                                             "calibration": c.as_dict() if c else None}})
        res.std_scales = {t: k for t, (k, _) in fitted.items() if k is not None}
        scaled = scaled_calibration(res, res.std_scales)
        for t, d in out["targets"].items():
            if t in res.std_scales:
                d["std_scale"] = {"factor": res.std_scales[t], "n": fitted[t][1], "rows": "val"}
                d["calibration_scaled"] = scaled[t].as_dict() if t in scaled else None
        if out["kind"] == "property":
            atomic_write_text(self.dir / "test_predictions.csv", format_ensemble_csv(res))
        atomic_write_json(self.dir / ENSEMBLE_FILE, out)
        for line in ensemble_lines(out):
            print(line, flush=True)
        self.state["ensemble_test_mae"] = next(iter(out["targets"].values()))["ensemble_mae"] if out["targets"] else None
        return out


def member_table(results: list[FoldResult]) -> list[str]:
    lines = [f"{'member':>6}  {'run':44} {'status':11} {'best_val':>9} {'test_mae':>9} {'epochs':>6} {'wall':>8}"]
    for r in results:
        run = r.run_ids[-1] if r.run_ids else "-"
        lines.append(f"{r.fold:>6}  {run:44} {r.status:11} {r.val_text:>9} {r.test_text:>9} "
                     f"{r.epochs:>6} {r.wall_s:>7.1f}s")
    return lines


def _num(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def ensemble_lines(out: dict[str, Any]) -> list[str]:
    """The ensemble's test MAE beside its members', and the calibration, per target."""
    lines = []
    for t, d in out["targets"].items():
        ms = [m for m in d["member_maes"] if m is not None]
        unit = d["unit"] or ""
        member = f"members {min(ms):.4g}..{max(ms):.4g} (mean {sum(ms) / len(ms):.4g})" if ms else "members -"
        lines.append(f"{t}: ensemble test MAE {_num(d['ensemble_mae'])} {unit} on {d['n']}; {member}")
        c = d.get("calibration")
        if c:
            lines.append(f"  calibration over {c['n']}: Spearman(std, |error|) {_num(c['spearman'], '.3f')}; within 1σ "
                         f"{100 * c['within_1sigma']:.1f} %, 2σ {100 * c['within_2sigma']:.1f} % (a Gaussian: 68.3 %, 95.4 %)")
        k, cs = d.get("std_scale"), d.get("calibration_scaled")
        if k and cs:
            lines.append(f"  std x {k['factor']:.3g} (fit on {k['n']} validation values): within 1σ "
                         f"{100 * cs['within_1sigma']:.1f} %, 2σ {100 * cs['within_2sigma']:.1f} % on the test rows")
    return lines


def _summary_md(ens: Ensemble, results: list[FoldResult], ms, summary: dict[str, Any] | None) -> str:
    out = [f"# Ensemble {ens.name}", "", f"Preset or plan: `{ens.state.get('source', '')}`; data: `{ens.data_source}`; "
           f"{len(results)} members, member k trained with train.seed + k (the same split).", ""]
    out += ["| member | run | status | best val MAE | test MAE | epochs | wall time (s) |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in results:
        out.append(f"| {r.fold} | {', '.join(r.run_ids) or '-'} | {r.status} | {r.val_text} | {r.test_text} "
                   f"| {r.epochs} | {r.wall_s:.1f} |")
    out.append("")
    if ms is not None:
        out.append(f"Members' test MAE: {ms[0]:.4f} ± {ms[1]:.4f} (mean ± std, ddof=0).")
    if summary is not None:
        out += ["", "## The ensemble (mean of the members; std = their spread)", ""]
        out += [f"    {line}" for line in ensemble_lines(summary)]
    return "\n".join(out) + "\n"


def parse_members(k: int | None, loaded=None) -> int:
    """``-k`` (or the preset's ``[ensemble] members``): 2..MAX_MEMBERS."""
    if k is None:
        cfg = getattr(loaded, "ensemble", None) if isinstance(loaded, Preset) else None
        if cfg is None:
            raise StudyError("tui-ft ensemble: give the number of members with -k K (or an [ensemble] members = K table "
                             "in the preset)")
        k = cfg.members
    if not 2 <= k <= MAX_MEMBERS:
        raise StudyError(f"-k: an ensemble has 2 to {MAX_MEMBERS} members, got {k}")
    return k


def run(source: str, *, k: int | None = None, jobs: int | None = None, gpus: str | None = None,
        executor: str = "local", name: str | None = None, say: Callable[[str], None] | None = None) -> int:
    """``tui-ft ensemble``: run or continue the ensemble; return the exit code."""
    from tui_ft.core.config.checks import load_and_check

    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    loaded = load_and_check(source, say)
    if loaded is None:
        return EXIT_USAGE
    try:
        n = parse_members(k, loaded)
    except StudyError as exc:
        say(str(exc))
        return EXIT_USAGE
    return run_study(Ensemble, source, list(range(n)), loaded=loaded, jobs=jobs, gpus=gpus, executor=executor,
                     name=name, say=say)
