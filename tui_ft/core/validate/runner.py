"""Run the chosen checks of ``tui-ft validate`` and write the results folder.

The folder (``models.results_dir_for``: ``logs/<run>/validate-<kind>/`` beside the run, or ``--out``):

``events.jsonl``  progress, one event a line (``events.py``), appended while it runs
``results.json``  every check's numbers (``format`` ``tui-ft-validate/1``; units in the key names;
                  stresses GPa, ASE sign), rewritten atomically after each check (``finished`` false
                  until the last)
``summary.md``    the same for people (``summary.markdown``), written at the end

Exit codes: 0 every chosen check ran (a failed verdict, such as an unstable MD run, is data); 1 a chosen
check could not run (its one-line reason is in the results); 2 bad input (nothing written).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tui_ft.core.common.atomic import atomic_write_json, atomic_write_text
from tui_ft.core.validate import CHECKS
from tui_ft.core.validate.events import EventLog, ValidateEvent
from tui_ft.core.validate.models import ValidateInputError

FORMAT = "tui-ft-validate/1"
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


@dataclass
class Options:
    checks: tuple[str, ...] = CHECKS
    data: str | None = None  # default: the checkpoint's own data source
    structures: tuple[str, ...] = ()  # structure files to relax / run instead of the data's
    reference: tuple[str, ...] = ()  # structure files for the drift check instead of the built-in sample
    against: str = "pretrained"  # "pretrained", "none" or a checkpoint reference
    out: str | None = None
    max_structures: int = 2
    relax_steps: int = 300
    fmax: float = 0.05  # eV/Å
    eos_points: int = 9
    eos_span: float = 0.06  # relative volume, each side
    md_temperature: float = 300.0  # K
    md_steps: int = 400  # NVT
    md_nve_steps: int = 200
    md_timestep: float = 1.0  # fs
    md_atoms: int = 32
    max_frames: int = 200
    batch_size: int = 16
    check_seconds: float = 900.0  # time bound of one check
    seed: int = 0


def parse_checks(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [x for x in names if x not in CHECKS]
    if bad or not names:
        raise ValidateInputError(f"--checks {text!r}: unknown check {', '.join(bad) or '(none given)'} "
                                 f"(expected a comma-separated list of {', '.join(CHECKS)})")
    return names


def check_options(o: Options) -> None:
    rules = [("max_structures", o.max_structures >= 1, "at least 1"), ("relax_steps", o.relax_steps >= 1, "at least 1"),
             ("fmax", 0 < o.fmax < 10, "between 0 and 10 eV/Å"), ("eos_points", 5 <= o.eos_points <= 101, "5 to 101"),
             ("eos_span", 0 < o.eos_span < 0.5, "between 0 and 0.5"),
             ("md_temperature", 0 < o.md_temperature <= 10000, "between 0 and 10000 K"),
             ("md_steps", o.md_steps >= 1, "at least 1"), ("md_nve_steps", o.md_nve_steps >= 0, "0 or more"),
             ("md_timestep", 0 < o.md_timestep <= 10, "between 0 and 10 fs"), ("md_atoms", 1 <= o.md_atoms <= 2000, "1 to 2000"),
             ("max_frames", o.max_frames >= 1, "at least 1"), ("batch_size", o.batch_size >= 1, "at least 1"),
             ("check_seconds", o.check_seconds > 0, "more than 0 s")]
    for name, ok, want in rules:
        value = getattr(o, name)
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ValidateInputError(f"--{name.replace('_', '-')} {value}: expected {want}")


def _plain(obj: Any) -> Any:
    """JSON-able: numpy scalars and arrays become floats and lists; NaN/inf become None."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def run_validate(ref: str, opts: Options, paths=None, *, say: Callable[[str], None] = lambda s: None
                 ) -> tuple[int, dict[str, Any], Path]:
    """Validate checkpoint ``ref``; ``(exit code, results, folder)``. Raises ValidateInputError for bad input
    before anything is written."""
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.validate import drift, eos, errors, md, relax
    from tui_ft.core.validate.models import (
        load_pair,
        resolve_checkpoint,
        results_dir_for,
    )
    from tui_ft.core.validate.structures import (
        error_frames,
        load_data,
        pick_targets,
        read_structures,
        reference_sample,
    )

    paths = paths or Paths.default()
    check_options(opts)
    info = resolve_checkpoint(ref, paths)
    preset = info.meta.preset if isinstance(info.meta.preset, dict) else {}
    task = preset.get("task") if isinstance(preset.get("task"), dict) else {}
    if task.get("kind") != "potential":
        raise ValidateInputError(f"{ref}: not a potential's checkpoint (task.kind = {task.get('kind', 'property')!r}); "
                                 "validate relaxes structures and runs MD, which needs energies and forces")
    own_source = (preset.get("data") or {}).get("source") if isinstance(preset.get("data"), dict) else None
    source = opts.data or own_source
    for f in (*opts.structures, *opts.reference):
        if not Path(f).is_file():
            raise ValidateInputError(f"{f}: no such structure file")
    given = read_structures(list(opts.structures)) if opts.structures else []
    refs = read_structures(list(opts.reference)) if opts.reference else []
    need_data = "errors" in opts.checks or (not given and {"relax", "eos", "md"} & set(opts.checks))
    data_path, frames = (None, [])
    if need_data and source:
        data_path, frames = load_data(source, paths)
    test_source = (preset.get("data") or {}).get("test_source") if isinstance(preset.get("data"), dict) else None
    held_out = None  # the run's own held-out test file (data.test_source), scored by the errors check
    if "errors" in opts.checks and test_source and (opts.data is None or _same(opts.data, own_source or "", paths)):
        held_out = load_data(test_source, paths)
    out = Path(opts.out) if opts.out else results_dir_for(info, paths)
    if out.exists() and not out.is_dir():
        raise ValidateInputError(f"--out {out}: exists and is not a folder (the results are a folder of files)")
    tuned, other = load_pair(ref, opts.against, paths)
    models = [m for m in (tuned, other) if m is not None]

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "summary.md"):
        (out / stale).unlink(missing_ok=True)
    log = EventLog(out / "events.jsonl")

    def emit(event: str, text: str, check: str | None = None, done: int = 0, total: int = 0, status=None) -> None:
        ev = log.write(ValidateEvent(event, text, check, done, total, status))
        say(ev.line())

    results: dict[str, Any] = {
        "format": FORMAT, "finished": False, "started": time.time(),
        "checkpoint": {"ref": ref, "label": tuned.label, "path": tuned.path, "run_id": info.run_id, "kind": info.kind},
        "against": None if other is None else {"ref": other.ref, "label": other.label, "path": other.path},
        "models": {m.role: m.label for m in models},
        "data": None if data_path is None else {"source": source, "path": str(data_path), "frames": len(frames)},
        "options": asdict(opts), "order": list(opts.checks), "checks": {},
        "units": "energies eV/atom (differences meV/atom), volumes Å³/atom, lengths Å, forces eV/Å "
                 "(errors meV/Å), stresses and B0 GPa (stress sign: ASE, positive = tensile), temperatures K, "
                 "times fs, NVE drift meV/atom/ps",
    }
    emit("start", f"{tuned.label} against {other.label if other else 'nothing'}; results in {out}")
    run_dir = None
    try:
        rd = paths.run_log_dir(info.run_id)
        run_dir = rd if rd.is_dir() else None
    except ValueError:
        pass
    targets = []
    no_targets = ""
    if given:
        targets = pick_targets([], list(opts.structures), opts.max_structures)
    elif frames:
        targets = pick_targets(frames, [], opts.max_structures)
    else:
        no_targets = ("no structures: the checkpoint names no data source; give --data SOURCE or --structures FILE"
                      if not source else "no structures in the data")
    relaxed: dict = {}
    for name in opts.checks:
        t0 = time.monotonic()
        emit("check_start", "started", name)

        def progress(done: int, total: int, text: str, _name=name) -> None:
            emit("progress", text, _name, done, total)

        def deadline(_t0=t0) -> bool:
            return time.monotonic() - _t0 > opts.check_seconds

        try:
            if name in ("relax", "eos", "md") and not targets:
                res = {"skipped": no_targets}
            elif name == "relax":
                res = relax.run(targets, models, steps=opts.relax_steps, fmax=opts.fmax, progress=progress,
                                deadline=deadline)
                relaxed = res.pop("_relaxed")
            elif name == "eos":
                res = eos.run(targets, relaxed, models, frames, points=opts.eos_points, span=opts.eos_span,
                              progress=progress, deadline=deadline)
            elif name == "md":
                res = md.run(targets, relaxed, models, progress=progress, deadline=deadline,
                             temperature=opts.md_temperature, steps=opts.md_steps, nve_steps=opts.md_nve_steps,
                             timestep=opts.md_timestep, min_atoms=opts.md_atoms, seed=opts.seed,
                             max_seconds=opts.check_seconds / len(models))
            elif name == "drift":
                sample = refs or reference_sample()
                what = (f"{len(refs)} given structure file(s)" if refs else
                        f"the built-in sample of {len(sample)} ASE-built crystals (unlabelled, not DFT)")
                res = drift.run(sample, tuned, other, source=what, progress=progress)
            else:  # errors
                if not frames:
                    res = {"skipped": "no data: the checkpoint names no data source; give --data SOURCE"}
                else:
                    own = opts.data is None or (own_source is not None and _same(source, own_source, paths))
                    if own and held_out:
                        rows = held_out[1][: opts.max_frames]
                        which = (f"the run's held-out test file {held_out[0].name}, {len(rows)} of "
                                 f"{len(held_out[1])} frames")
                    else:
                        rows, which = error_frames(frames, data_path, run_dir, own, opts.max_frames)
                    res = errors.run(rows, models, which=which, batch_size=opts.batch_size, progress=progress)
            status = "skipped" if "skipped" in res else "ran"
        except Exception as exc:  # noqa: BLE001 - one check failing must not lose the others
            why = " ".join(str(exc).split())[:200]
            res, status = {"skipped": f"{type(exc).__name__}: {why}"}, "failed"
        res["status"] = status
        res["seconds"] = round(time.monotonic() - t0, 2)
        results["checks"][name] = res
        atomic_write_json(out / "results.json", _plain(results))
        verdict = res.get("verdict")
        emit("check_end", res["skipped"] if status != "ran" else f"ran in {res['seconds']:.1f} s"
             + (f", verdict {verdict}" if verdict else ""), name, status=status)
    results["finished"] = True
    results["ended"] = time.time()
    plain = _plain(results)
    from tui_ft.core.validate.summary import markdown

    atomic_write_json(out / "results.json", plain)
    atomic_write_text(out / "summary.md", markdown(plain))
    ran = all(c["status"] == "ran" for c in results["checks"].values())
    emit("end", "every chosen check ran" if ran else "some checks could not run (see their reasons)",
         status="ran" if ran else "skipped")
    return (EXIT_OK if ran else EXIT_INCOMPLETE), plain, out


def _same(a: str, b: str, paths) -> bool:
    from tui_ft.core.data.dataset import DataError, resolve_source

    if a == b:
        return True
    try:
        return resolve_source(a, paths).resolve() == resolve_source(b, paths).resolve()
    except (DataError, OSError):
        return False


def read_results(folder: Path) -> dict[str, Any] | None:
    """``results.json`` of a results folder, or None when it is absent or not one."""
    import json

    try:
        d = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None
