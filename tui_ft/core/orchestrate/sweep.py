"""Hyperparameter sweeps: a preset's ``[sweep]`` table searched with Optuna.

The parent process owns the study (Optuna's ask/tell interface) and each trial
is an ordinary run of the library:

* the study lives in an Optuna RDB storage, the SQLite file
  ``logs/.sweeps/<name>/study.db`` (study name = the sweep's name, opened with
  ``load_if_exists``), so a rerun continues it and ``optuna-dashboard`` can open it;
* trial ``N`` gets the base preset with the sampled values (run name
  ``<sweep>-tN``, written to ``logs/.sweeps/<name>/trials/tN.toml``) and runs
  as ``python -m tui_ft --preset FILE --plain --run-id ID`` in its own process
  (``logs/<ID>/sweep.json`` names the sweep and trial);
* pruning is decided in the trial's own process, once per epoch, through Optuna's
  storage (:class:`TrialReporter`, named by ``sweep.json``): after each epoch's
  ``epoch_end`` and checkpoints, the run calls ``trial.report(val_mae, epoch)`` and
  ``trial.should_prune()`` and waits for the verdict before the next epoch, so a
  fast trial cannot outrun the pruner; a pruned run records ``run_interrupted``
  then ``run_pruned`` (``last.pt``/``best.pt`` kept, status ``pruned``) and the
  parent tells the study PRUNED. The parent follows ``events.jsonl`` only to show
  progress;
* ``trials`` is the number of finished + pruned trials wanted: a rerun marks
  trials left RUNNING by a killed sweep as FAIL, enqueues their parameters
  again, and runs only what is missing.

``--jobs N`` runs N trials at a time through :mod:`tui_ft.core.orchestrate.executors`, the
executors of ``tui-ft matbench``: local processes (``--gpus 0,1``: one trial per
device) or Slurm jobs through submitit (``--executor slurm``, the preset's
``[cluster]`` table). A pruned trial stops itself (its process asks the study after
each epoch), so pruning works the same on every executor.

Optuna is the optional extra ``sweep``; it is imported only when a sweep runs
or is read. The pure functions at the end (:func:`trial_rows`,
:func:`best_row`, :func:`param_points`) are what a dashboard view needs.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import Preset, SweepCfg, SweepDim, preset_from_dict
from tui_ft.core.config.fields import check_name

__all__ = [
    "SweepError",
    "TrialRow",
    "SweepInfo",
    "sweep_name",
    "sweep_dir",
    "run_sweep",
    "list_sweeps",
    "load_study",
    "best_preset",
    "trial_rows",
    "best_row",
    "param_points",
    "suggest",
    "trial_preset",
    "TrialReporter",
    "trial_reporter",
]

SWEEPS = ".sweeps"
TRIAL_FILE = "sweep.json"  # in a trial's logs/<run>/: its sweep, trial number, parameters and study
POLL_S = 0.25
STOP_TIMEOUT_S = 120
EXTRA_HINT = "pip install 'tui-ft[sweep]' (or pip install optuna)"


class SweepError(Exception):
    """A sweep that cannot start or be read (usage error, exit 2)."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError(f"sweeps need Optuna, which is not installed: {EXTRA_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------- names and places


def sweep_name(preset: Preset) -> str:
    if preset.sweep is None:
        raise SweepError(f"preset {preset.name} has no [sweep] table")
    return preset.sweep.name or preset.run.name


def sweep_dir(paths: Paths, name: str) -> Path:
    try:
        check_name(name)
    except ValueError as exc:
        raise SweepError(f"sweep name {name!r}: {exc}") from None
    return paths.logs / SWEEPS / name


SQLITE_TIMEOUT_S = 60  # the parent and its trials write one SQLite file: wait for its lock, never fail on it


def _storage(folder: Path, *, read_only: bool = False):
    """The study's RDB storage (SQLite), shared by the parent and the trial processes.
    ``read_only``: opened with SQLite's ``mode=ro`` (a read command never writes the file)."""
    optuna = _optuna()
    db = folder / "study.db"
    if read_only:
        from urllib.parse import quote

        url = f"sqlite:///file:{quote(str(db.resolve()))}?mode=ro&uri=true"
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}, skip_table_creation=True)
    return optuna.storages.RDBStorage(f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})


SQLITE_MAGIC = b"SQLite format 3\0"
OPTUNA_TABLES = ("studies", "trials", "version_info")


def check_study_db(db: Path, name: str, *, creating: bool = False) -> None:
    """The one check of a sweep's ``study.db`` before Optuna touches it; :class:`SweepError` (one line
    naming the file) unless it is a regular SQLite file holding Optuna's tables and no study but ``name``.

    ``creating`` (the sweep itself): a missing or empty (0-byte) file is a new study. Otherwise
    (the read commands) it must hold the study ``name``. The file is read, never written."""
    import sqlite3
    from urllib.parse import quote

    from tui_ft.core.common.files import open_regular

    hint = "move it away to start the sweep afresh" if creating else "`tui-ft sweeps` lists the sweeps"
    try:
        with open_regular(db) as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        if creating:
            return
        raise SweepError(f"no sweep {name!r} (no {db}); `tui-ft sweeps` lists them") from None
    except OSError as exc:
        raise SweepError(f"{db}: cannot read the sweep's study ({exc.strerror or exc}); {hint}") from None
    if not head:
        if creating:
            return
        raise SweepError(f"{db}: empty file (0 bytes), not an Optuna study database; {hint}")
    if head != SQLITE_MAGIC:
        raise SweepError(f"{db}: not an SQLite database (not an Optuna study: a damaged or foreign file); {hint}")
    try:
        con = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT_S)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in OPTUNA_TABLES if t not in tables]
            names = [] if missing else [r[0] for r in con.execute("SELECT study_name FROM studies")]
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise SweepError(f"{db}: a damaged SQLite database ({exc}); {hint}") from None
    if missing:
        if creating and not tables:
            return  # an SQLite file with no table yet: Optuna makes its tables
        shown = ", ".join(sorted(tables)[:6]) or "none"
        raise SweepError(f"{db}: not an Optuna study database (no table {missing[0]!r}; its tables: {shown}); {hint}")
    if name not in names and (names or not creating):
        shown = ", ".join(repr(n) for n in names[:5]) or "none"
        raise SweepError(f"{db}: holds no study named {name!r} (its studies: {shown}); {hint}")


# --------------------------------------------------------------------------- samplers and pruners


def make_sampler(cfg: SweepCfg, done: int = 0):
    """The ``[sweep]`` sampler. ``done``: trials already in the study; a continued study
    seeds its sampler with ``seed + done``, or it would draw the first run's values again."""
    optuna = _optuna()
    seed = (cfg.seed + done) % 2**32
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":  # it skips the grid points the study already has
        grid = {d.key: list(d.values) if d.kind == "choice" else list(range(d.values[0], d.values[1] + 1)) for d in cfg.dims}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _max_epochs(preset: Preset) -> int:
    for d in preset.sweep.dims if preset.sweep else ():
        if d.key == "train.epochs":
            return int(max(d.values))
    return preset.train.epochs


def make_pruner(preset: Preset):
    """The ``[sweep]`` pruner; epoch 0 (before any update) is never pruned on."""
    optuna = _optuna()
    cfg = preset.sweep
    assert cfg is not None
    if cfg.pruner == "median":
        main = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    elif cfg.pruner == "hyperband":
        main = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(2, _max_epochs(preset)))
    else:
        main = optuna.pruners.NopPruner()
    if cfg.prune_above is None:
        return main
    return _AnyPruner([main, optuna.pruners.ThresholdPruner(upper=cfg.prune_above, n_warmup_steps=1)])


def _AnyPruner(pruners: list):  # noqa: N802 - a class built on the imported base
    optuna = _optuna()

    class AnyPruner(optuna.pruners.BasePruner):
        """Prune when any of the pruners says so (the main pruner, then ``prune_above``)."""

        def __init__(self, ps: list):
            self.pruners = ps

        def prune(self, study, trial) -> bool:
            return any(p.prune(study, trial) for p in self.pruners)

    return AnyPruner(pruners)


def load_study(paths: Paths, name: str, *, preset: Preset | None = None):
    """Open the sweep's study (create it when ``preset`` is given)."""
    optuna = _optuna()
    folder = sweep_dir(paths, name)
    db = folder / "study.db"
    check_study_db(db, name, creating=preset is not None)
    try:
        if preset is None:  # a read command: opened read-only, never written
            return optuna.load_study(study_name=name, storage=_storage(folder, read_only=True))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            done = len(optuna.load_study(study_name=name, storage=_storage(folder)).get_trials(deepcopy=False))
        except KeyError:  # a new study
            done = 0
        return optuna.create_study(
            storage=_storage(folder),
            study_name=name,
            direction="minimize",
            sampler=make_sampler(preset.sweep, done),
            pruner=make_pruner(preset),
            load_if_exists=True,
        )
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - an Optuna schema of another version, a damaged table: one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SweepError(f"{db}: cannot open the sweep's study ({type(exc).__name__}: {first})") from None


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    """What a sweep computes, from a preset's dict: all of it but the trial count (a rerun with more
    trials continues), where it runs ([cluster]) and the run's description (as a study's fingerprint)."""
    blob = json.loads(json.dumps(d, default=str))
    blob.pop("cluster", None)
    (blob.get("run") or {}).pop("description", None)
    (blob.get("sweep") or {}).pop("trials", None)
    return blob


def _tell(study, trial, *args, **kw) -> None:
    """``study.tell``, for every sampler. Optuna's GridSampler calls ``study.stop()`` when it
    counts its grid as done, which raises RuntimeError outside ``study.optimize`` (ask-and-tell, as
    here: optuna issues #4121 and #5141, documented in #5153); the trial's result is stored before
    that (``_tell_with_warning``'s ``finally``). The sweep's own count (``trials``, which a grid
    sweep must set to the grid's size) says when to stop, so the request is not needed."""
    try:
        study.tell(trial, *args, **kw)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def sweep_fingerprint(d: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(_identity(d), sort_keys=True).encode()).hexdigest()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)) if k != "space" else {f"{prefix}.{k}": v})
    return out


def check_identity(study, preset: Preset, db: Path) -> None:
    """Refuse to continue a study that holds trials of another preset (another space, other data,
    other settings): its trials would mix with this one's and ``--best`` could return theirs."""
    attrs = study.user_attrs
    old = attrs.get("preset")
    fp = sweep_fingerprint(preset.to_dict())
    if isinstance(old, dict) and study.get_trials(deepcopy=False) and sweep_fingerprint(old) != fp:
        a, b = _flat(_identity(old)), _flat(_identity(preset.to_dict()))
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        shown = ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")
        raise SweepError(
            f"sweep {study.study_name!r} ({db}) was run with another preset ({shown or 'its settings'} differ); "
            "its trials would mix with this one's: give this sweep another [sweep] name, or delete that folder")
    study.set_user_attr("fingerprint", fp)


def _last_line(log: Path) -> str:
    """The last non-empty line of a trial's log (the pre-run check's message when it was refused)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, os.path.getsize(log) - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def suggest(trial, dims: Iterable[SweepDim]) -> dict[str, Any]:
    """The sampled value of each searched key, ``{"optim.lr": 3e-4, ...}``."""
    out: dict[str, Any] = {}
    for d in dims:
        if d.kind == "log_uniform":
            out[d.key] = trial.suggest_float(d.key, float(d.values[0]), float(d.values[1]), log=True)
        elif d.kind == "uniform":
            out[d.key] = trial.suggest_float(d.key, float(d.values[0]), float(d.values[1]))
        elif d.kind == "int":
            out[d.key] = trial.suggest_int(d.key, int(d.values[0]), int(d.values[1]))
        else:
            out[d.key] = trial.suggest_categorical(d.key, list(d.values))
    return out


def trial_preset(base: Preset, params: dict[str, Any], sweep: str, number: int) -> Preset:
    """The base preset with the sampled values, run name ``<sweep>-t<number>``, no [sweep] table."""
    d = base.to_dict()
    d.pop("sweep", None)
    shown = ", ".join(f"{k}={_show(v)}" for k, v in params.items())
    changes = {**params, "run.name": f"{sweep}-t{number}", "run.description": f"sweep {sweep} trial {number}: {shown}"}
    return preset_from_dict(d).with_changes(changes)


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------- the trial's side of pruning


class TrialReporter:
    """Reports a trial run's validation MAE to its study after each epoch and returns the
    pruner's verdict (the run waits for it before the next epoch).

    Built in the trial's own process from ``logs/<run>/sweep.json``: the study is opened
    in its RDB storage with the sweep's pruner (from the base preset stored in the study),
    and the trial is the RUNNING one the parent asked for. ``__call__(epoch, val_mae)``
    returns the reason to stop, or None. Epoch 0 is reported (no update has happened yet;
    every pruner here waits one step before pruning)."""

    def __init__(self, study, trial, cfg: SweepCfg):
        self.study, self.trial, self.cfg = study, trial, cfg

    def __call__(self, epoch: int, val_mae: float) -> str | None:
        if not math.isfinite(val_mae):
            return None
        self.trial.report(val_mae, epoch)
        if epoch < 1 or not self.trial.should_prune():
            return None
        rule = self.cfg.pruner if self.cfg.prune_above is None else self.cfg.pruner + "/prune_above"
        return f"{rule} pruner: val_mae {val_mae:.4f} at epoch {epoch}"


def trial_reporter(run_dir: Path, say: Callable[[str], None] = lambda m: None) -> TrialReporter | None:
    """The :class:`TrialReporter` of the trial run in ``run_dir`` (None when the run is not
    a sweep trial, or its trial is no longer running in the study, as in a resume of a
    trial run after its sweep ended). Raises :class:`SweepError` when ``sweep.json``
    names a study that cannot be opened."""
    from tui_ft.core.common.files import STATE_MAX_BYTES, read_regular_text

    file = run_dir / TRIAL_FILE
    if not file.exists() and not file.is_symlink():
        return None
    try:
        info = json.loads(read_regular_text(file, STATE_MAX_BYTES))
        name, number, db = info["sweep"], info["trial"], info.get("study_db")
        if not isinstance(name, str) or not (isinstance(number, int) and not isinstance(number, bool)) \
                or not (db is None or isinstance(db, str)):
            raise TypeError("sweep: a string, trial: a whole number, study_db: a path")
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise SweepError(f"{file}: not a sweep trial file ({type(exc).__name__}: {exc})") from None
    if not db:  # written by a version whose parent decided pruning itself
        return None
    optuna = _optuna()
    folder = Path(db).parent
    if not Path(db).exists():
        raise SweepError(f"{file}: its study {db} does not exist")
    check_study_db(Path(db), name)
    storage = _storage(folder)
    try:
        base = optuna.load_study(study_name=name, storage=storage).user_attrs.get("preset")
        preset = preset_from_dict(base) if isinstance(base, dict) else None
        if preset is None or preset.sweep is None:
            raise SweepError(f"{db}: study {name!r} has no base preset with a [sweep] table")
        study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(preset))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
        if storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
            say(f"sweep {name} trial {number} is no longer running in its study: this run is not pruned")
            return None
        return TrialReporter(study, optuna.trial.Trial(study, trial_id), preset.sweep)
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - any storage problem is one message naming the study
        raise SweepError(f"{db}: cannot open trial {number} of sweep {name!r} ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- launching trials


def _trial_env() -> dict[str, str]:
    """What a trial adds to the environment (the executor adds TUI_FT_HOME, the cores or GPU)."""
    return {"PYTHONUNBUFFERED": "1"}


@dataclass
class _Running:
    trial: Any
    number: int
    run_id: str
    params: dict[str, Any]
    handle: Any  # tui_ft.core.orchestrate.executors.Handle
    follower: Any
    started: float = field(default_factory=time.time)
    last_epoch: int | None = None
    last_value: float | None = None


def _int_attr(v: Any) -> int | None:
    """A whole number read from the study's user attributes (which a hand edit can make anything)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _stop_if_ours(t, run_id: str | None, paths: Paths, say: Callable[[str], None]) -> None:
    """Stop the trial's process if it is still alive and still the trial's (:func:`procs.is_our_run`:
    the recorded start time, from the trial or from its run's events, and the command line);
    a pid that now belongs to another process is left alone."""
    from tui_ft.core.common.procs import is_our_run, pid_alive
    from tui_ft.core.library.runs import summarize

    pid = _int_attr(t.user_attrs.get("pid"))
    if not pid or pid <= 0 or not pid_alive(pid):
        return
    start = _int_attr(t.user_attrs.get("pid_start"))
    if start is None and run_id:
        s = summarize(paths.run_log_dir(run_id), warn=lambda m: None)
        start = s.pid_start if s.pid == pid else None
    if not is_our_run(pid, start, run_id):
        say(f"trial {t.number}: pid {pid} is no longer its process (another start time or command line): not signalled")
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.time() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.2)


def _recover(study, say: Callable[[str], None], paths: Paths | None = None) -> None:
    """Trials a killed sweep left RUNNING: stop their process if it survived (and is still theirs),
    then count each as its run's events say: finished (its best value), pruned, or else
    failed with its parameters queued again."""
    from tui_ft.core.common.paths import is_safe_component
    from tui_ft.core.library.runs import summarize

    optuna = _optuna()
    paths = paths or Paths.default()
    State = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        run_id = t.user_attrs.get("run_id")
        run_id = run_id if is_safe_component(run_id) else None
        _stop_if_ours(t, run_id, paths, say)
        s = summarize(paths.run_log_dir(run_id), warn=lambda m: None) if run_id else None
        if s is not None and s.status == "finished" and s.best_val_mae is not None and math.isfinite(s.best_val_mae):
            _tell(study, t.number, s.best_val_mae)
            say(f"trial {t.number} was left running by an interrupted sweep, but its run {run_id} had finished: "
                f"counted as finished ({s.best_val_mae:.4f})")
            continue
        if s is not None and s.status == "pruned":
            _tell(study, t.number, state=State.PRUNED)
            say(f"trial {t.number} was left running by an interrupted sweep; its run {run_id} was pruned: counted as pruned")
            continue
        _tell(study, t.number, state=State.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        say(f"trial {t.number} was left running by an interrupted sweep: marked failed, its parameters queued again")


class _Lock:
    """One sweep process per study (an flock on logs/.sweeps/<name>/lock)."""

    def __init__(self, folder: Path, name: str):
        self.fh = open(folder / "lock", "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise SweepError(f"sweep {name!r} is already running in another process") from None

    def release(self) -> None:
        self.fh.close()


def run_sweep(
    preset: Preset,
    *,
    jobs: int = 1,
    gpus: str | None = None,
    executor: str | None = None,
    paths: Paths | None = None,
    say: Callable[[str], None] = print,
    err: Callable[[str], None] | None = None,
) -> int:
    """Run (or continue) the preset's sweep headless. Returns the exit code: 0 when
    every trial finished or was pruned, 1 when some failed, 130 when interrupted.
    Raises :class:`SweepError` (exit 2) when it cannot start."""
    err = err or (lambda m: print(m, file=sys.stderr, flush=True))
    if preset.sweep is None:
        raise SweepError(f"preset {preset.name} has no [sweep] table")
    if jobs < 1:
        raise SweepError(f"--jobs must be at least 1, got {jobs}")
    from tui_ft.core.orchestrate.executors import ExecutorError, make_executor, parse_gpus

    kind = executor or "local"
    try:
        gpu_list = parse_gpus(gpus)
        if kind not in ("local", "slurm"):
            raise ExecutorError(f"--executor: expected local or slurm, got {kind!r}")
        if gpu_list and kind != "local":
            raise ExecutorError("--gpus is for the local executor; on Slurm set [cluster] gpus_per_node")
    except ExecutorError as exc:
        raise SweepError(str(exc)) from None
    optuna = _optuna()
    from tui_ft.core.common.events import EpochEnd, EventFollower
    from tui_ft.core.orchestrate.executors import RunTask, tui_ft_argv
    from tui_ft.core.library.runs import new_run_id, summarize

    paths = paths or Paths.default()
    cfg = preset.sweep
    name = sweep_name(preset)
    folder = sweep_dir(paths, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials").mkdir(exist_ok=True)
    lock = _Lock(folder, name)
    try:
        if kind == "local":
            ex = make_executor("local", jobs=jobs, gpus=gpu_list, own_session=True)
        else:
            sub = Path(preset.cluster.folder).expanduser() if preset.cluster.folder else folder / "submitit"
            ex = make_executor("slurm", jobs=jobs, cluster_cfg=preset.cluster, folder=sub, name=name)
    except ExecutorError as exc:
        lock.release()
        raise SweepError(str(exc)) from None
    State = optuna.trial.TrialState
    running: list[_Running] = []
    try:
        study = load_study(paths, name, preset=preset)
        check_identity(study, preset, folder / "study.db")
        study.set_user_attr("trials", cfg.trials)
        study.set_user_attr("preset", preset.to_dict())
        _recover(study, err, paths)
        done = len(study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED)))
        remaining = max(0, cfg.trials - done)
        where = kind + (f", GPUs {','.join(gpu_list)}" if gpu_list else "")
        say(f"sweep {name}: {done} of {cfg.trials} trials done, {remaining} to run, {ex.jobs} at a time "
            f"({cfg.sampler} sampler, {cfg.pruner} pruner; {where}; study {folder / 'study.db'})")
        launched = failed = 0
        t0 = time.time()

        def start() -> None:
            trial = study.ask()
            params = suggest(trial, cfg.dims)
            tp = trial_preset(preset, params, name, trial.number)
            file = folder / "trials" / f"t{trial.number}.toml"
            from tui_ft.core.config.dump import save_preset

            save_preset(tp, file)
            run_id = new_run_id(tp.name, paths)
            run_dir = paths.run_log_dir(run_id)
            (run_dir / TRIAL_FILE).write_text(json.dumps({
                "sweep": name, "trial": trial.number, "params": params, "study_db": str(folder / "study.db"),
            }, indent=1) + "\n", encoding="utf-8")
            task = RunTask(tui_ft_argv("--preset", str(file), "--plain", "--run-id", run_id),
                           str(folder / "trials" / f"t{trial.number}.log"), run_id=run_id, root=str(paths.root),
                           env=_trial_env(), label=f"trial {trial.number}")
            try:
                handle = ex.submit(task)
            except ExecutorError as exc:  # the trial is not left RUNNING in the study
                _tell(study, trial, state=State.FAIL)
                raise SweepError(str(exc)) from None
            trial.set_user_attr("run_id", run_id)
            trial.set_user_attr("preset", str(file))
            if getattr(handle, "pid", None):
                from tui_ft.core.common.procs import start_ticks

                trial.set_user_attr("pid", handle.pid)
                trial.set_user_attr("pid_start", start_ticks(handle.pid))  # a rerun signals it only if it is still this process
            if getattr(handle, "job_id", None):
                trial.set_user_attr("job_id", handle.job_id)
            running.append(_Running(trial, trial.number, run_id, params, handle, EventFollower(run_dir / "events.jsonl")))

        def follow(r: _Running) -> None:  # progress only: the trial reports to the study itself
            for ev in r.follower.poll():
                if isinstance(ev, EpochEnd):
                    r.last_epoch, r.last_value = ev.epoch, ev.val_mae

        def finish(r: _Running) -> None:
            nonlocal failed
            follow(r)
            s = summarize(paths.run_log_dir(r.run_id))
            shown = " ".join(f"{k}={_show(v)}" for k, v in r.params.items())
            secs = time.time() - r.started
            if s.status == "finished" and s.best_val_mae is not None and math.isfinite(s.best_val_mae):
                _tell(study, r.trial, s.best_val_mae)
                say(f"trial {r.number:3d}  finished  {cfg.objective} {s.best_val_mae:.4f} (epoch {s.best_epoch})  "
                    f"{secs:6.1f}s  {shown}  run {r.run_id}")
            elif s.status == "pruned":  # the trial's own verdict (TrialReporter), recorded in its events
                _tell(study, r.trial, state=State.PRUNED)
                say(f"trial {r.number:3d}  pruned    at epoch {r.last_epoch} (val_mae {r.last_value:.4f})  "
                    f"{secs:6.1f}s  {shown}  run {r.run_id}")
            else:
                failed += 1
                _tell(study, r.trial, state=State.FAIL)
                status, why = s.status, s.message or r.handle.result().get("error")
                if not why and status == "pending" and r.handle.returncode == 2:  # refused before its run began
                    status, why = "refused", _last_line(folder / "trials" / f"t{r.number}.log") or (
                        "its preset was refused by the pre-run check (exit code 2)")
                why = why or f"exit code {r.handle.returncode}"
                say(f"trial {r.number:3d}  {status:9} {why}  {shown}  run {r.run_id} "
                    f"(log {folder / 'trials' / f't{r.number}.log'})")

        try:
            while True:
                while launched < remaining and ex.free() > 0:
                    start()
                    launched += 1
                if not running:
                    break
                for r in list(running):
                    follow(r)
                    if r.handle.done():
                        running.remove(r)
                        finish(r)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            for r in running:
                r.handle.stop()
            for r in running:
                r.handle.wait()
                _tell(study, r.trial, state=State.FAIL)
                study.enqueue_trial(r.params, user_attrs={"retry_of": r.number})
            err(f"sweep {name} interrupted: {len(running)} running trial(s) stopped (their runs keep last.pt); "
                f"run it again to continue")
            running.clear()
            return 130
        for line in summary_lines(study.get_trials(deepcopy=False), top=5):
            say(line)
        say(f"sweep {name}: {launched} trial(s) run in {time.time() - t0:.1f}s; "
            f"best preset: tui-ft sweep {name} --best")
        return 1 if failed else 0
    finally:
        for r in running:  # an unexpected error: do not leave trials behind
            r.handle.stop()
        for r in running:
            r.handle.wait()
        lock.release()


# --------------------------------------------------------------------------- reading sweeps


@dataclass
class SweepInfo:
    name: str
    requested: int | None
    complete: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    best_trial: int | None


def list_sweeps(paths: Paths | None = None, problems: list[str] | None = None) -> list[SweepInfo]:
    """Every study under ``logs/.sweeps/``, by name. A folder whose ``study.db`` cannot be read
    (damaged, foreign, empty, a FIFO...) is left out and its one-line problem appended to
    ``problems`` (when given)."""
    paths = paths or Paths.default()
    root = paths.logs / SWEEPS
    if not root.is_dir():
        return []
    _optuna()  # a missing package is said, not taken for "no sweeps"
    out = []
    for d in sorted(root.iterdir()):
        db = d / "study.db"
        if not (db.exists() or db.is_symlink()):
            continue
        try:
            study = load_study(paths, d.name)
            trials = study.get_trials(deepcopy=False)
        except SweepError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged row: one line naming the file
            if problems is not None:
                problems.append(f"{db}: cannot read its trials ({type(exc).__name__}: {exc})")
            continue
        best = best_row(trials)
        counts = {s: sum(1 for t in trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
        out.append(SweepInfo(d.name, study.user_attrs.get("trials"), counts["COMPLETE"], counts["PRUNED"],
                             counts["FAIL"], counts["RUNNING"], best.value if best else None, best.number if best else None))
    return out


def best_preset(paths: Paths, name: str) -> Preset:
    """The best finished trial's preset, renamed ``<sweep>-best``: a plain preset, ready to save and run."""
    study = load_study(paths, name)
    db = sweep_dir(paths, name) / "study.db"
    try:
        best = best_row(study.get_trials(deepcopy=False))
    except Exception as exc:  # noqa: BLE001 - a damaged row: one line naming the file
        raise SweepError(f"{db}: cannot read its trials ({type(exc).__name__}: {exc})") from None
    if best is None:
        raise SweepError(f"sweep {name!r} has no finished trial yet")
    from tui_ft.core.config.presets import load_preset

    try:
        file = best.preset if isinstance(best.preset, str) and best.preset else None
        p = load_preset(file) if file and Path(file).is_file() else None
        if p is None:
            base = study.user_attrs.get("preset")
            if not isinstance(base, dict):
                raise SweepError(f"sweep {name!r}: the preset of trial {best.number} is missing")
            p = trial_preset(preset_from_dict(base), best.params, name, best.number)
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hand-edited study: its preset is not one
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SweepError(f"{db}: the preset of trial {best.number} cannot be read ({first})") from None
    return p.with_changes({
        "run.name": f"{name}-best",
        "run.description": f"best trial {best.number} of sweep {name} (best_val_mae {best.value:.4f}, run {best.run_id})",
    })


# --------------------------------------------------------------------------- rows for views (pure)


@dataclass(frozen=True)
class TrialRow:
    """One trial as a table row: ``state`` is finished / pruned / failed / running / waiting."""

    number: int
    state: str
    value: float | None  # the objective (finished) or the last reported val_mae (pruned)
    params: dict[str, Any]
    run_id: str | None
    epoch: int | None  # the last reported epoch
    preset: str | None


_STATES = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def _row(t) -> TrialRow:
    inter = t.intermediate_values
    last = max(inter) if inter else None
    value = t.value if t.state.name == "COMPLETE" else (inter[last] if last is not None else None)
    params = dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})  # an enqueued (waiting) trial
    return TrialRow(t.number, _STATES.get(t.state.name, t.state.name.lower()), value, params,
                    t.user_attrs.get("run_id"), last, t.user_attrs.get("preset"))


def trial_rows(trials: Iterable[Any]) -> list[TrialRow]:
    """Rows for a trials table: finished by value, then pruned by their last value, then the rest by number."""
    rows = [_row(t) for t in trials]
    rank = {"finished": 0, "pruned": 1}
    return sorted(rows, key=lambda r: (rank.get(r.state, 2), r.value if r.value is not None and r.state in rank else math.inf, r.number))


def best_row(trials: Iterable[Any]) -> TrialRow | None:
    """The finished trial with the lowest objective (None when none finished)."""
    rows = [r for r in trial_rows(trials) if r.state == "finished" and r.value is not None]
    return rows[0] if rows else None


def param_points(trials: Iterable[Any], key: str) -> list[tuple[Any, float]]:
    """(value of ``key``, objective) for each finished trial: a scatter of one parameter against the objective."""
    return [(r.params[key], r.value) for r in trial_rows(trials)
            if r.state == "finished" and r.value is not None and key in r.params]


def summary_lines(trials: Iterable[Any], top: int = 5) -> list[str]:
    """The final table: the best ``top`` finished trials with their values and parameters."""
    rows = [r for r in trial_rows(trials) if r.state == "finished"]
    counts: dict[str, int] = {}
    for r in trial_rows(trials):
        counts[r.state] = counts.get(r.state, 0) + 1
    head = "trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    if not rows:
        return [head, "no finished trial"]
    keys = list(rows[0].params)
    out = [head, f"{'rank':>4} {'trial':>5} {'best_val_mae':>12}  " + "  ".join(f"{k:>18}" for k in keys) + "  run"]
    for i, r in enumerate(rows[:top], 1):
        out.append(f"{i:>4} {r.number:>5} {r.value:>12.4f}  " + "  ".join(f"{_show(r.params.get(k)):>18}" for k in keys)
                   + f"  {r.run_id}")
    return out


# --------------------------------------------------------------------------- CLI entry points


def cmd_sweep_run(preset: Preset, *, jobs: int, err: Callable[[str], None], gpus: str | None = None,
                  executor: str | None = None) -> int:
    """``tui-ft --preset SWEEP.toml [--jobs N] [--gpus 0,1] [--executor local|slurm]``:
    0 done, 1 a trial failed, 2 cannot start, 130 interrupted."""
    try:
        return run_sweep(preset, jobs=jobs, gpus=gpus, executor=executor, say=lambda m: print(m, flush=True), err=err)
    except SweepError as exc:
        err(f"error: {exc}")
        return 2


def cmd_sweeps(name: str | None, *, best: bool, err: Callable[[str], None]) -> int:
    """``tui-ft sweeps`` (name None), ``tui-ft sweep NAME`` (its trials) and ``tui-ft sweep NAME --best``."""
    paths = Paths.default()
    try:
        if name is None:
            problems: list[str] = []
            rows = list_sweeps(paths, problems)
            if not rows and not problems:
                print("no sweeps under logs/.sweeps/")
                return 0
            print(f"{'sweep':32} {'done':>9} {'finished':>8} {'pruned':>6} {'failed':>6} {'running':>7} {'best':>8} {'trial':>5}")
            for s in rows:
                done = f"{s.complete + s.pruned}/{s.requested if s.requested is not None else '?'}"
                bv = "-" if s.best_value is None else f"{s.best_value:.4f}"
                bt = "-" if s.best_trial is None else str(s.best_trial)
                print(f"{s.name:32} {done:>9} {s.complete:>8} {s.pruned:>6} {s.failed:>6} {s.running:>7} {bv:>8} {bt:>5}")
            for p in problems:  # a broken study is said, never silently left out
                err(f"error: {p}")
            return 2 if problems else 0
        if best:
            from tui_ft.core.config.dump import dump_preset

            sys.stdout.write(dump_preset(best_preset(paths, name)))
            return 0
        study = load_study(paths, name)
        try:
            trials = study.get_trials(deepcopy=False)
        except Exception as exc:  # noqa: BLE001 - a damaged row: one line naming the file
            raise SweepError(f"{sweep_dir(paths, name) / 'study.db'}: cannot read its trials "
                             f"({type(exc).__name__}: {exc})") from None
        print(f"{'trial':>5} {'state':9} {'value':>8} {'epoch':>5}  params  run")
        for r in trial_rows(trials):
            v = "-" if r.value is None else f"{r.value:.4f}"
            ep = "-" if r.epoch is None else str(r.epoch)
            shown = " ".join(f"{k}={_show(x)}" for k, x in r.params.items())
            print(f"{r.number:>5} {r.state:9} {v:>8} {ep:>5}  {shown}  {r.run_id or '-'}")
        return 0
    except SweepError as exc:
        err(f"error: {exc}")
        return 2
