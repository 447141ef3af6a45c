"""``tui-ft matbench``: one preset or plan on the Matbench folds, as a study.

A study runs its preset (or plan) once per fold (``--folds 0-4`` by default),
each fold an ordinary run (or plan) in the library. Its folder is
``logs/.studies/<study>/``:

``study.json``
    (written atomically) the source preset/plan, its fingerprint, the folds
    with their files, run ids and status, the executor.
``fold<k>.toml``
    the fold's preset (``data.fold = k``, run name ``<study>-f<k>``) or plan
    (every stage's ``data.fold = k``, plan name ``<study>-f<k>``).
``fold<k>.log``
    the fold process's output.
``results.json.gz``
    when every requested fold has finished: the predictions per fold keyed by
    the data file's own ids, in the layout ``matbench``'s ``MatbenchBenchmark``
    writes (``as_dict``: ``@module``, ``@class``, ``version``, ``tasks``,
    ``user_metadata``, ``benchmark_name``, ``datestamp``, ``hash``; per task
    ``results.fold_k.{data, parameters, scores}``), gzipped as the leaderboard
    stores it. Only the full ``matbench_mp_e_form`` file gives a valid
    leaderboard entry: other files' ids are not Matbench's.
``summary.md``
    the fold table, mean ± std, and the Matbench v0.1 leaderboard's published
    numbers for the task.

Running the same command again continues the study: finished folds are kept,
an interrupted, failed or killed fold's run continues from its ``last.pt``
(``tui-ft resume``), and a fold without one starts afresh. A plan fold is run
again as a plan, which keeps its finished stages.

Exit codes: 0 every requested fold finished, 1 a fold failed, 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tui_ft.core.common.atomic import atomic_write, atomic_write_json, atomic_write_text
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import Preset
from tui_ft.core.config.fields import check_name
from tui_ft.core.config.dump import save_preset

STUDY_FORMAT = "tui-ft-study/1"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
N_FOLDS = 5
MATBENCH_VERSION = "0.6"  # the matbench package version whose layout results.json.gz follows
BENCHMARK_NAME = "matbench_v0.1"
# Published test MAEs (eV/atom), Matbench v0.1 leaderboard, task matbench_mp_e_form.
LEADERBOARD = {
    "matbench_mp_e_form": [("coGN", 0.0170), ("ALIGNN", 0.0215), ("CGCNN", 0.0337)],
}
TASK = "matbench_mp_e_form"
_FOLDS = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


class StudyError(Exception):
    """A usage problem (bad folds, study name, a study that belongs to another preset)."""


# --------------------------------------------------------------------------- arguments


def parse_folds(text: str) -> list[int]:
    """``"0-4"``, ``"3"``, ``"0,2,4"``, ``"0-1,3"`` -> sorted fold numbers (each 0..4)."""
    out: set[int] = set()
    for part in str(text).split(","):
        m = _FOLDS.fullmatch(part)
        if not m:
            raise StudyError(f"--folds: expected fold numbers 0-{N_FOLDS - 1} like 0-4 or 0,2,3; got {text!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if a > b or b >= N_FOLDS:
            raise StudyError(f"--folds: folds are 0 to {N_FOLDS - 1} (low-high); got {part.strip()!r}")
        out.update(range(a, b + 1))
    return sorted(out)


def parse_gpus(text: str | None) -> list[str]:
    if not text:
        return []
    gpus = [g.strip() for g in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", g) for g in gpus) or len(set(gpus)) != len(gpus):  # ASCII digits: "²".isdigit()
        raise StudyError(f"--gpus: expected distinct device numbers like 0,1,2,3; got {text!r}")
    return gpus


def study_dir(name: str, paths: Paths) -> Path:
    return paths.logs / ".studies" / name


def _fold_name(base: str, k: int) -> str:
    return f"{base[: 64 - 3]}-f{k}"


# --------------------------------------------------------------------------- fold files


def _fingerprint(loaded) -> str:
    if isinstance(loaded, Preset):
        blob: Any = loaded.with_changes({"data.fold": 0}).to_dict()
        blob.pop("cluster", None)  # where it runs is not what it computes
        blob["run"].pop("description", None)
    else:
        blob = [[s.fingerprint, s.gate.text if s.gate else None] for s in loaded.stages]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _plan_text(plan, name: str, k: int, study: "Study | None" = None) -> str:
    """The plan of fold (or member) ``k``: every stage changed as ``study`` changes a preset."""
    from tui_ft.core.config.dump import _toml_key, _toml_value

    study = study or Study
    out = [f"# tui-ft study {study.axis} plan (written by tui-ft {study.command})", "", "[plan]",
           f"name = {_toml_value(name)}"]
    out.append(f"description = {_toml_value(f'{plan.name}, {study.describe(k)}')}")
    for st in plan.stages:
        preset = study.variant(st.preset, k)
        d = preset.to_dict()
        d.pop("cluster", None)
        if st.init:
            d["model"].pop("init", None)
        out += ["", "[[stage]]"]
        if st.init:
            out.append(f"init = {_toml_value(st.init)}")
        if st.gate:
            out.append(f"continue_if = {_toml_value(st.gate.text)}")
        for sec, table in d.items():
            if not table:
                continue
            out.append(f"[stage.{sec}]")
            out += [f"{_toml_key(key)} = {_toml_value(v)}" for key, v in table.items()]
    return "\n".join(out) + "\n"


def cluster_of(loaded):
    """The ``[cluster]`` table: the preset's, or a plan's first stage's."""
    return loaded.cluster if isinstance(loaded, Preset) else loaded.stages[0].preset.cluster


# --------------------------------------------------------------------------- state


_FOLD_KINDS = ("preset", "plan")
# what a study varies between its runs: the Matbench fold (tui-ft matbench) or the member's seed (tui-ft ensemble)
AXES = ("fold", "member")
MAX_MEMBERS = 64
RECORDS = {"fold": "folds", "member": "members"}  # the study.json key that holds the runs, per axis


def records_key(obj: dict[str, Any]) -> str:
    """``"folds"`` (a Matbench study) or ``"members"`` (an ensemble): where study.json keeps its runs."""
    return RECORDS.get(obj.get("axis", "fold"), "folds")


def study_records(obj: dict[str, Any]) -> dict[str, Any]:
    """The run records of a checked study.json, keyed by fold or member number."""
    recs = obj.get(records_key(obj))
    return recs if isinstance(recs, dict) else {}


def record_number(rec: dict[str, Any]) -> int:
    """A record's fold or member number."""
    return int(rec["member"] if "member" in rec else rec["fold"])
LIVE_FOLD_WAIT_S = 300.0  # how long a rerun waits for a fold's run left live by an earlier matbench
_STR_FIELDS = ("study", "source", "source_name", "data_source", "executor", "status")
_NUM_FIELDS = ("started", "updated", "test_mae_mean", "test_mae_std")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_study_state(obj: Any, where: str, fold_problems: dict[str, str] | None = None) -> dict[str, Any]:
    """``obj`` (a parsed study.json) if every field has the type and range a study writes;
    else :class:`StudyError`, one line naming ``where`` and the field. Run ids and plan names
    must be safe path components (they become ``logs/<id>``).

    ``fold_problems`` (the dashboard's reading): a bad fold record is taken out of
    ``obj["folds"]`` and its one-line problem stored under its key instead of raising, so the
    other folds still show; a rerun of the study reads strictly (``None``)."""

    def bad(field: str, expected: str, got: Any) -> StudyError:
        shown = json.dumps(got)[:60] if isinstance(got, (str, int, float, bool, type(None))) else type(got).__name__
        return StudyError(f"{where}: field '{field}': expected {expected}, got {shown}; fix or move the file "
                          "(or give the study another --name)")

    if not isinstance(obj, dict):
        raise bad("(top level)", "a JSON object", obj)
    if obj.get("format") != STUDY_FORMAT:
        got = obj.get("format")
        shown = f"'{got[:60]}'" if isinstance(got, str) else json.dumps(got)[:60] if not isinstance(got, (dict, list)) else type(got).__name__
        raise StudyError(f"{where}: format {shown}, expected '{STUDY_FORMAT}' (not a tui-ft study file, or another "
                         "version); fix or move the file (or give the study another --name)")
    for k in _STR_FIELDS:
        if k in obj and not isinstance(obj[k], str):
            raise bad(k, "a string", obj[k])
    for k in _NUM_FIELDS:
        if k in obj and obj[k] is not None and (isinstance(obj[k], bool) or not isinstance(obj[k], (int, float))):
            raise bad(k, "a number", obj[k])
    axis = obj.get("axis", "fold")
    if axis not in AXES:
        raise bad("axis", '"fold" or "member"', axis)
    if "kind" in obj and obj["kind"] not in _FOLD_KINDS:
        raise bad("kind", '"preset" or "plan"', obj["kind"])
    if "pid" in obj and obj["pid"] is not None and not (_is_int(obj["pid"]) and obj["pid"] >= 0):
        raise bad("pid", "a process id (a whole number >= 0)", obj["pid"])
    rkey = RECORDS[axis]
    folds = obj.get(rkey, {})
    if not isinstance(folds, dict):
        n = N_FOLDS if axis == "fold" else MAX_MEMBERS
        raise bad(rkey, f"an object of {rkey} keyed 0..{n - 1}", folds)
    for key, rec in list(folds.items()):
        if fold_problems is None:
            _check_fold(key, rec, bad, axis)
            continue
        try:
            _check_fold(key, rec, bad, axis)
        except StudyError as exc:
            fold_problems[key] = str(exc)
            del folds[key]
    if not isinstance(obj.get("fingerprint"), str):
        raise bad("fingerprint", "a string", obj.get("fingerprint"))
    return obj


def _check_fold(key: str, rec: Any, bad: Any, axis: str = "fold") -> None:
    """One fold (or member) record of a study.json (:func:`check_study_state`)."""
    from tui_ft.core.common.paths import check_component

    rkey, n = RECORDS[axis], (N_FOLDS if axis == "fold" else MAX_MEMBERS)
    f = f"{rkey}.{key}"
    if key not in {str(k) for k in range(n)}:
        raise bad(rkey, f"{axis} keys 0..{n - 1}", key)
    if not isinstance(rec, dict):
        raise bad(f, "an object", rec)
    if not _is_int(rec.get(axis)) or str(rec[axis]) != key:
        raise bad(f"{f}.{axis}", f"the {axis} number {key}", rec.get(axis))
    if rec.get("kind", "preset") not in _FOLD_KINDS:
        raise bad(f"{f}.kind", '"preset" or "plan"', rec.get("kind"))
    for name, kind in (("run_id", "run id"), ("plan", "plan name")):
        v = rec.get(name)
        if v is not None:
            try:
                check_component(v)
            except ValueError as exc:
                raise bad(f"{f}.{name}", f"a {kind} ({exc})", v) from None
    ids = rec.get("run_ids", [])
    if not isinstance(ids, list):
        raise bad(f"{f}.run_ids", "a list of run ids", ids)
    for v in ids:
        try:
            check_component(v)
        except ValueError as exc:
            raise bad(f"{f}.run_ids", f"run ids ({exc})", v) from None
    for name in ("file", "status", "message", "job_id"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            raise bad(f"{f}.{name}", "a string", rec[name])
    if rec.get("returncode") is not None and not _is_int(rec["returncode"]):
        raise bad(f"{f}.returncode", "a whole number", rec["returncode"])


def read_study_file(path: Path, fold_problems: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The one reader of a study.json: None when it does not exist; the checked dict
    (:func:`check_study_state`, which takes ``fold_problems``); else :class:`StudyError` in one line (unreadable, a FIFO or a
    device, too large, truncated or not JSON, foreign, a field of the wrong type)."""
    from tui_ft.core.common.files import STATE_MAX_BYTES, read_regular_text

    try:
        text = read_regular_text(path, STATE_MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read ({exc.strerror or exc}); fix or move the file") from None
    except ValueError:
        raise StudyError(f"{path}: not UTF-8 text; fix or move the file (or give the study another --name)") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise StudyError(f"{path}: not valid JSON (truncated?) at line {getattr(exc, 'lineno', '?')}: "
                         f"{getattr(exc, 'msg', exc)}; fix or move the file (or give the study another --name)") from None
    except RecursionError:
        raise StudyError(f"{path}: not a study file (nested too deeply)") from None
    return check_study_state(obj, str(path), fold_problems)


def read_study(name: str, paths: Paths) -> dict[str, Any] | None:
    """The study's state (:func:`read_study_file`): None when it has none yet; :class:`StudyError` when broken."""
    return read_study_file(study_dir(name, paths) / "study.json")


@dataclass
class FoldResult:
    fold: int
    status: str
    run_ids: list[str]
    best_val_mae: float | None = None
    test_mae: float | None = None
    epochs: int = 0
    wall_s: float = 0.0
    predictions: Path | None = None
    val_metrics: dict[str, float] | None = None  # the best epoch's named metrics (a potential's force MAE, ...)
    test_metrics: dict[str, float] | None = None

    @property
    def val_text(self) -> str:
        """The best validation number: a potential's force MAE with its unit (its best_val_mae is
        the unitless weighted loss), a property's MAE."""
        from tui_ft.core.common.metrics import headline

        return headline(self.val_metrics, "val") or _fmt(self.best_val_mae)

    @property
    def test_text(self) -> str:
        from tui_ft.core.common.metrics import headline

        return headline(self.test_metrics, "test") or _fmt(self.test_mae)


def _wall_seconds(run_dir: Path) -> float:
    """Time spent running: from each run_started to the last event before the next (resumes add up)."""
    from tui_ft.core.common.events import RunStarted, read_events

    total, start, last = 0.0, None, None
    for ev in read_events(run_dir / "events.jsonl"):
        if isinstance(ev, RunStarted):
            if start is not None and last is not None:
                total += max(0.0, last - start)
            start = ev.time
        last = ev.time
    if start is not None and last is not None:
        total += max(0.0, last - start)
    return total


def fold_result(rec: dict[str, Any], paths: Paths) -> FoldResult:
    """The fold's status and numbers, read from its runs' events (and a plan's state)."""
    from tui_ft.core.library.runs import summarize

    k = record_number(rec)
    if rec.get("kind") == "plan":
        from tui_ft.core.orchestrate.plan_runner import read_state
        from tui_ft.core.common.procs import pid_alive

        state = read_state(rec["plan"], paths)
        if not state:
            return FoldResult(k, "pending", [])
        ids = [s.run_id for s in state.stages if s.run_id]
        status = str(state.status)
        if status == "running" and not pid_alive(int(state.pid or 0)):
            status = "crashed"
        res = FoldResult(k, status, ids)
        sums = [summarize(paths.run_log_dir(r)) for r in ids]
        res.epochs = sum(s.epoch or 0 for s in sums)  # epoch 0 is the evaluation before training
        res.wall_s = sum(_wall_seconds(paths.run_log_dir(r)) for r in ids)
        done = [s for s in sums if s.status == "finished"]
        if done:  # the last finished stage is the plan's result (a gate may have ended it early)
            last = done[-1]
            res.best_val_mae, res.test_mae = last.best_val_mae, last.test_mae
            res.val_metrics, res.test_metrics = last.best_metrics(), last.test_metrics
            res.predictions = paths.run_log_dir(last.run_id) / "test_predictions.csv"
        return res
    run_id = rec.get("run_id")
    if not run_id:
        return FoldResult(k, "pending", [])
    s = summarize(paths.run_log_dir(run_id))
    res = FoldResult(k, s.status, [run_id], s.best_val_mae, s.test_mae, s.epoch or 0, _wall_seconds(paths.run_log_dir(run_id)),
                     val_metrics=s.best_metrics(), test_metrics=s.test_metrics)
    if s.status == "finished":
        res.predictions = paths.run_log_dir(run_id) / "test_predictions.csv"
    return res


# --------------------------------------------------------------------------- results


def read_predictions(path: Path) -> list[tuple[str, float, float]]:
    import io

    from tui_ft.core.common.files import TABLE_MAX_BYTES, open_regular

    with open_regular(path, TABLE_MAX_BYTES) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        return [(row["id"], float(row["true"]), float(row["pred"])) for row in csv.DictReader(fh)]


def scores(true: list[float], pred: list[float]) -> dict[str, float]:
    """Matbench's regression scores (mae, rmse, mape with |true| > 1e-5, max_error), as floats."""
    import numpy as np

    t, p = np.asarray(true, dtype=float), np.asarray(pred, dtype=float)
    err = np.abs(t - p)
    mask = np.abs(t) > 1e-5
    return {
        "mae": float(err.mean()),
        "rmse": float(math.sqrt(float(((t - p) ** 2).mean()))),
        "mape": float((err[mask] / np.abs(t[mask])).mean()) if mask.any() else float("nan"),
        "max_error": float(err.max()),
    }


def hash_dictionary(d: dict[str, Any]) -> str:
    """matbench.util.hash_dictionary: sha256 of the key-sorted JSON (lists and tuples alike)."""
    def immutify(x: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(((k, immutify(v) if isinstance(v, dict) else v) for k, v in x.items()), key=lambda kv: kv[0]))

    return hashlib.sha256(json.dumps(immutify(d)).encode("utf-8")).hexdigest()


def benchmark_dict(task: str, folds: dict[int, tuple[list[tuple[str, float, float]], dict[str, Any]]], user_metadata: dict[str, Any]) -> dict[str, Any]:
    """The dict ``MatbenchBenchmark.as_dict()`` gives for one task with these folds recorded."""
    results = {}
    for k in sorted(folds):
        rows, params = folds[k]
        results[f"fold_{k}"] = {
            "data": {i: p for i, _, p in rows},
            "parameters": params,
            "scores": scores([t for _, t, _ in rows], [p for _, _, p in rows]),
        }
    task_d = {"@module": "matbench.task", "@class": "MatbenchTask", "benchmark_name": BENCHMARK_NAME,
              "dataset_name": task, "results": results}
    d = {
        "@module": "matbench.bench",
        "@class": "MatbenchBenchmark",
        "version": MATBENCH_VERSION,
        "tasks": {task: task_d},
        "user_metadata": user_metadata,
        "benchmark_name": BENCHMARK_NAME,
        "datestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y.%m.%d %H:%M.%S"),
    }
    d["hash"] = hash_dictionary(d)
    return d


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and standard deviation (numpy's std, ddof=0, as Matbench reports fold spread)."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def fold_table(results: list[FoldResult]) -> list[str]:
    lines = [f"{'fold':>4}  {'run':44} {'status':11} {'best_val':>9} {'test_mae':>9} {'epochs':>6} {'wall':>8}"]
    for r in results:
        run = r.run_ids[-1] if r.run_ids else "-"
        lines.append(
            f"{r.fold:>4}  {run:44} {r.status:11} {r.val_text:>9} {r.test_text:>9} "
            f"{r.epochs:>6} {r.wall_s:>7.1f}s"
        )
    return lines


def _summary_md(name: str, source: str, data_source: str, results: list[FoldResult], ms: tuple[float, float] | None) -> str:
    out = [f"# Study {name}", "", f"Preset or plan: `{source}`; data: `{data_source}`.", ""]
    out += ["| fold | run | status | best val MAE | test MAE | epochs | wall time (s) |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in results:
        out.append(
            f"| {r.fold} | {', '.join(r.run_ids) or '-'} | {r.status} | {r.val_text} | {r.test_text} "
            f"| {r.epochs} | {r.wall_s:.1f} |"
        )
    out.append("")
    if ms is not None:
        n = len([r for r in results if r.test_mae is not None])
        out.append(f"**Test MAE over {n} folds: {ms[0]:.4f} ± {ms[1]:.4f} eV/atom** (mean ± std, numpy ddof=0).")
    out += ["", f"## Published numbers ({TASK}, Matbench v0.1 leaderboard)", "", "| model | test MAE (eV/atom) |", "|---|---:|"]
    out += [f"| {m} | {v:.4f} |" for m, v in LEADERBOARD[TASK]]
    if ms is not None:
        out.append(f"| this study | {ms[0]:.4f} |")
    out.append("")
    if data_source != TASK:
        out.append(
            f"Note: this study ran on `{data_source}`, not the full `{TASK}` file; its numbers do not compare "
            "with the leaderboard's, and its results.json.gz is keyed by that file's ids."
        )
    else:
        out.append("The leaderboard numbers are published results (mean over the five folds), not rerun here.")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the study


@dataclass
class FoldSpec:
    """A fold to run: its preset or plan file, its run id (a preset fold's, once it starts), its log."""

    fold: int
    kind: str  # "preset" | "plan"
    file: str
    run_id: str | None
    log: str


class Study:
    """A preset or plan run once per fold (``tui-ft matbench``); :class:`tui_ft.core.orchestrate.ensemble.Ensemble`
    runs it once per seed instead. What differs between the two is in the class attributes and
    :meth:`variant` / :meth:`run_name` / :meth:`describe` (classmethods, so a plan's text needs no instance)."""

    axis = "fold"
    command = "matbench"

    @classmethod
    def run_name(cls, base: str, k: int) -> str:
        return _fold_name(base, k)

    @classmethod
    def variant(cls, preset: Preset, k: int) -> Preset:
        """The preset of fold ``k``."""
        return preset.with_changes({"data.fold": k, "run.name": cls.run_name(preset.name, k)})

    @classmethod
    def describe(cls, k: int) -> str:
        return f"on Matbench fold {k}"

    @classmethod
    def fingerprint(cls, loaded) -> str:
        return _fingerprint(loaded)

    def __init__(self, source: str, loaded, name: str, folds: list[int], paths: Paths, say: Callable[[str], None]):
        self.source = source
        self.loaded = loaded
        self.kind = "preset" if isinstance(loaded, Preset) else "plan"
        self.name = name
        self.folds = folds
        self.paths = paths
        self.say = say
        self.dir = study_dir(name, paths)
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {}
        self.key = RECORDS[self.axis]

    @property
    def records(self) -> dict[str, Any]:
        return self.state[self.key]

    @property
    def data_source(self) -> str:
        p = self.loaded if self.kind == "preset" else self.loaded.stages[-1].preset
        return p.data.source

    def save(self) -> None:
        with self.lock:
            self.state["updated"] = time.time()
            atomic_write_json(self.dir / "study.json", self.state)

    def open(self, executor: str) -> None:
        """Read or create study.json; refuse a study of another preset or one running elsewhere."""
        from tui_ft.core.common.procs import pid_alive

        fp = self.fingerprint(self.loaded)
        old = read_study(self.name, self.paths)
        if old is not None:
            if old.get("axis", "fold") != self.axis:
                other = "an ensemble" if self.axis == "fold" else "a Matbench study"
                raise StudyError(f"{self.dir / 'study.json'}: {self.name!r} is {other}; give this one another --name")
            if old.get("fingerprint") != fp:
                raise StudyError(
                    f"study {self.name!r} ({self.dir / 'study.json'}) was run with another preset or plan "
                    f"({old.get('source')}); give this one another --name, or delete that folder"
                )
            pid = int(old.get("pid") or 0)
            if old.get("status") == "running" and pid != os.getpid() and pid_alive(pid):
                raise StudyError(f"study {self.name!r} is already running in process {pid}")
            self.state = old
        else:
            self.state = {"format": STUDY_FORMAT, "study": self.name, "fingerprint": fp, self.key: {}, "started": time.time()}
            if self.axis != "fold":
                self.state["axis"] = self.axis
        self.state.update(
            source=str(Path(self.source).resolve()) if Path(self.source).exists() else self.source,
            source_name=self.loaded.name,
            kind=self.kind,
            data_source=self.data_source,
            executor=executor,
            pid=os.getpid(),
            status="running",
        )
        self.state.setdefault(self.key, {})
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()

    def prepare(self, k: int) -> "FoldSpec | None":
        """The fold's file (written now), or None when the fold has finished."""
        fname = self.run_name(self.name, k)
        rec = self.records.get(str(k)) or {self.axis: k, "kind": self.kind}
        if self.kind == "plan":
            rec.setdefault("plan", fname)
        current = fold_result(rec, self.paths)
        if current.status == "finished":
            rec["status"] = "finished"
            self.records[str(k)] = rec
            return None
        file = self.dir / f"{self.axis}{k}.toml"
        if self.kind == "preset":
            save_preset(self.variant(self.loaded, k), file)
            run_id = rec.get("run_id")
            if run_id and self._wait_for_live_run(k, run_id):
                current = fold_result(rec, self.paths)  # what the run did before it stopped
                if current.status == "finished":
                    rec["status"] = "finished"
                    self.records[str(k)] = rec
                    return None
            resumable = run_id and (self.paths.run_ckpt_dir(run_id) / "last.pt").is_file()
            never_started = run_id and not (self.paths.run_log_dir(run_id) / "events.jsonl").exists()
            if resumable:
                self.say(f"{self.axis} {k}: continuing run {run_id} from its last.pt ({current.status})")
            elif not never_started:
                if run_id:
                    self.say(f"{self.axis} {k}: run {run_id} {current.status} without a last.pt; starting afresh")
                run_id = None  # a new run id when the fold starts (start())
            rec.update(run_id=run_id, file=str(file))
        else:
            atomic_write_text(file, _plan_text(self.loaded, fname, k, self))
            rec.update(file=str(file))
            if current.status not in ("pending",):
                self.say(f"{self.axis} {k}: plan {fname} {current.status}; running it again keeps its finished stages")
        rec["status"] = "queued"
        self.records[str(k)] = rec
        return FoldSpec(k, self.kind, str(file), rec.get("run_id"), str(self.dir / f"{self.axis}{k}.log"))

    def _wait_for_live_run(self, k: int, run_id: str) -> bool:
        """A fold's run still trained by a live process (an earlier ``matbench`` killed with
        SIGKILL: its folds get SIGINT from the kernel and stop at the next batch, keeping
        last.pt): wait for it to stop, at most ``LIVE_FOLD_WAIT_S``, then carry on from what it
        left. True when it waited; :class:`StudyError` when the run is still live after that."""
        from tui_ft.core.common.locks import RunLock

        lock = RunLock(run_id, self.paths)
        pid = lock.holder()
        if pid is None:
            return False
        self.say(f"{self.axis} {k}: run {run_id} is still running (pid {pid}, started by an earlier {self.command}); "
                 f"waiting up to {LIVE_FOLD_WAIT_S:g} s for it to stop")
        deadline = time.monotonic() + LIVE_FOLD_WAIT_S
        while lock.holder() is not None:
            if time.monotonic() > deadline:
                raise StudyError(f"{self.axis} {k}: run {run_id} is still running (pid {pid}) after {LIVE_FOLD_WAIT_S:g} s; "
                                 f"stop it (kill -INT {pid}) or wait for it, then run the same command again")
            time.sleep(0.5)
        return True

    def start(self, fold: "FoldSpec"):
        """Just before a fold runs (or is submitted): give a fresh preset fold its run id; its task."""
        from tui_ft.core.orchestrate.executors import RunTask, tui_ft_argv
        from tui_ft.core.library.runs import new_run_id

        if fold.kind == "preset" and not fold.run_id:
            fold.run_id = new_run_id(self.run_name(self.name, fold.fold), self.paths)
        with self.lock:
            self.records[str(fold.fold)].update(run_id=fold.run_id, status="running")
        self.save()
        self.say(f"{self.axis} {fold.fold}: {'run ' + fold.run_id if fold.run_id else 'plan ' + fold.file} starting")
        argv = tui_ft_argv("--preset", fold.file, "--plain")
        if fold.run_id:
            argv += ["--run-id", fold.run_id]
        return RunTask(argv, fold.log, run_id=fold.run_id, root=str(self.paths.root), cwd=os.getcwd(), label=f"{self.axis} {fold.fold}")

    def done(self, fold: "FoldSpec", handle) -> None:
        result = handle.result()
        rec = self.records[str(fold.fold)]
        res = fold_result(rec, self.paths)
        rec.update(status=res.status, run_ids=res.run_ids, returncode=result.get("returncode"))
        if result.get("error"):
            rec["message"] = result["error"]
        self.save()
        extra = f" (exit {result.get('returncode')}; see {fold.log})" if res.status != "finished" else ""
        self.say(f"{self.axis} {fold.fold}: {res.status}, test {res.test_text}, run {', '.join(res.run_ids) or '-'}{extra}")

    def results(self) -> list[FoldResult]:
        """Each requested fold's (member's) status and numbers, written back into its record."""
        results = [fold_result(self.records.get(str(k)) or {self.axis: k, "kind": "preset"}, self.paths) for k in self.folds]
        for r in results:
            rec = self.records.setdefault(str(r.fold), {self.axis: r.fold, "kind": self.kind})
            rec.update(status=r.status, run_ids=r.run_ids)
        return results

    def finish(self, interrupted: bool) -> int:
        results = self.results()
        print("\n".join(fold_table(results)), flush=True)
        maes = [r.test_mae for r in results if r.status == "finished" and r.test_mae is not None]
        ms = mean_std(maes) if maes else None
        if ms is not None:
            print(f"test MAE over {len(maes)} folds: {ms[0]:.4f} ± {ms[1]:.4f} eV/atom (mean ± std)", flush=True)
        all_done = all(r.status == "finished" for r in results)
        if all_done:
            self.write_results(results)
            print(f"results: {self.dir / 'results.json.gz'}", flush=True)
        atomic_write_text(self.dir / "summary.md", _summary_md(self.name, self.state.get("source", ""), self.data_source, results, ms))
        self.state["status"] = "finished" if all_done else ("interrupted" if interrupted else "failed")
        if ms is not None:
            self.state["test_mae_mean"], self.state["test_mae_std"] = ms
        self.save()
        if all_done:
            return EXIT_OK
        return EXIT_INTERRUPTED if interrupted else EXIT_FAILED

    def write_results(self, results: list[FoldResult]) -> None:
        folds = {}
        for r in results:
            rows = read_predictions(r.predictions) if r.predictions else []
            params = {"tui_ft_study": self.name, "run_ids": r.run_ids, "source": self.state.get("source_name")}
            if self.kind == "preset":
                params["preset"] = self.loaded.with_changes({"data.fold": r.fold}).to_dict()
            folds[r.fold] = (rows, params)
        seen: dict[str, int] = {}
        for k, (rows, _) in folds.items():
            for i, _, _ in rows:
                if i in seen:
                    self.say(f"[warning] id {i} is in the test predictions of folds {seen[i]} and {k}")
                seen[i] = k
        task = TASK if self.data_source == TASK else Path(self.data_source).name.split(".")[0]
        meta = {"algorithm": "tui-ft (CHGNet fine-tuning)", "study": self.name, "data_source": self.data_source,
                "folds": sorted(folds)}
        d = benchmark_dict(task, folds, meta)
        atomic_write(self.dir / "results.json.gz", lambda fh: fh.write(gzip.compress(json.dumps(d).encode("utf-8"), mtime=0)))


def run(
    source: str,
    *,
    folds: str = "0-4",
    jobs: int | None = None,
    gpus: str | None = None,
    executor: str = "local",
    name: str | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """``tui-ft matbench``: run or continue the study; return the exit code."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        fold_list = parse_folds(folds)
    except StudyError as exc:
        say(str(exc))
        return EXIT_USAGE
    return run_study(Study, source, fold_list, jobs=jobs, gpus=gpus, executor=executor, name=name, say=say)


def run_study(
    cls: type[Study],
    source,
    numbers: list[int],
    *,
    loaded=None,
    jobs: int | None = None,
    gpus: str | None = None,
    executor: str = "local",
    name: str | None = None,
    say: Callable[[str], None],
) -> int:
    """Run or continue a study of class ``cls`` over ``numbers`` (folds, members) of ``source``
    (a preset or plan file; ``loaded``: it, already loaded and checked); return the exit code."""
    from tui_ft.core.config.checks import load_and_check

    try:
        gpu_list = parse_gpus(gpus)
        if jobs is not None and jobs < 1:
            raise StudyError(f"--jobs: expected a number >= 1, got {jobs}")
        if executor not in ("local", "slurm"):
            raise StudyError(f"--executor: expected local or slurm, got {executor!r}")
        if gpu_list and executor != "local":
            raise StudyError("--gpus is for the local executor; on Slurm set [cluster] gpus_per_node")
    except StudyError as exc:
        say(str(exc))
        return EXIT_USAGE
    if loaded is None:
        loaded = load_and_check(source, lambda m: print(m, file=sys.stderr, flush=True))
    if loaded is None:
        return EXIT_USAGE
    searched = [loaded] if isinstance(loaded, Preset) else [st.preset for st in loaded.stages]
    if any(p.sweep is not None for p in searched):
        say(f"{source}: a preset with a [sweep] table is a search, not one setting to run per {cls.axis}; run the "
            "sweep (tui-ft --preset FILE), then this command on its best trial's preset (tui-ft sweep NAME --best)")
        return EXIT_USAGE
    study_name = name or loaded.name
    try:
        check_name(study_name)
    except ValueError as exc:
        say(f"--name: study name {exc}")
        return EXIT_USAGE
    paths = Paths.default()
    from tui_ft.core.orchestrate.executors import ExecutorError, make_executor, run_all

    what = cls.axis
    try:  # before study.json says "running": an executor that cannot start is a usage error, nothing written
        if executor == "local":
            # each run in its own process session, as a sweep's trials: Ctrl-C reaches this process only,
            # which stops each run once (SIGINT); a SIGKILL of it gives each run SIGINT (PR_SET_PDEATHSIG)
            ex = make_executor("local", jobs=jobs or (len(gpu_list) if gpu_list else 1), gpus=gpu_list,
                               own_session=True)
        else:
            cfg = cluster_of(loaded)
            folder = Path(cfg.folder).expanduser() if cfg.folder else study_dir(study_name, paths) / "submitit"
            ex = make_executor("slurm", jobs=jobs or max(1, len(numbers)), cluster_cfg=cfg, folder=folder, name=study_name)
    except ExecutorError as exc:
        say(str(exc))
        return EXIT_USAGE
    study = cls(source, loaded, study_name, numbers, paths, say)
    try:
        study.open(executor)
    except StudyError as exc:
        say(str(exc))
        return EXIT_USAGE

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        tasks = [t for t in (study.prepare(k) for k in numbers) if t is not None]
    except StudyError as exc:  # a run still live after the wait: nothing started
        say(str(exc))
        return study.finish(False)
    except KeyboardInterrupt:
        say(f"study {study_name}: interrupted; run the same command again to continue")
        return study.finish(True)
    kept = [k for k in numbers if study.records[str(k)]["status"] == "finished"]
    study.save()
    if kept:
        say(f"study {study_name}: {what}{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} already finished")
    for t in tasks:
        say(f"study {study_name}: {what} {t.fold}: {t.kind} {t.file}" + (f", continuing run {t.run_id}" if t.run_id else ""))
    interrupted = False

    def submitted(fold: FoldSpec, handle) -> None:
        job_id = getattr(handle, "job_id", None)
        if job_id is not None:
            study.records[str(fold.fold)]["job_id"] = job_id
            study.save()
            say(f"{what} {fold.fold}: submitted job {job_id}")

    try:
        run_all(ex, tasks, make_task=study.start, on_submit=submitted, on_done=study.done)
    except KeyboardInterrupt:
        interrupted = True
        say(f"study {study_name}: interrupted; run the same command again to continue")
    except ExecutorError as exc:  # a run that could not be submitted: the study is not left "running"
        say(f"study {study_name}: {exc}")
        study.finish(False)
        return EXIT_USAGE
    return study.finish(interrupted)
