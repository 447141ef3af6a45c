"""Start, signal and read the output of training processes.

Training always runs in its own process (``python -m tui_ft run FILE --run-id
ID --plain``, or ``python -m tui_ft resume ID --plain``) in its own session, so closing the dashboard never stops a run,
and cancelling is a SIGINT to the process group (the run saves ``last.pt``,
records ``run_interrupted`` and exits 130).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tui_ft.core.common.paths import NAMED_SOURCES, Paths, data_source_problem
from tui_ft.core.config.presets import Preset
from tui_ft.core.config.dump import check_resources, save_preset
from tui_ft.core.common.procs import pid_alive
from tui_ft.core.library.runs import new_run_id
from tui_ft.core.common.tail import LineTail

# the preset a run was started with; the run writes the same file itself (engine.write_run_files)
LAUNCH_FILE = "preset.toml"
STDERR_FILE = "stderr.log"
RESUMABLE = ("interrupted", "crashed", "failed")  # statuses `tui-ft resume` continues (with a last.pt)


@dataclass
class LaunchedRun:
    run_id: str
    preset_name: str
    preset_file: Path
    stderr_path: Path
    proc: subprocess.Popen = field(repr=False)
    started: float = field(default_factory=time.time)
    kind: str = "run"  # "run": a new run of a preset; "resume": `tui-ft resume` of an ended run

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()


def check_preset(preset: Preset, paths: Paths) -> None:
    """The checks worth doing before a launch: the init checkpoint resolves and
    the data file exists. Raises ``PresetError``. Reading the data file's columns
    is left to the training process (it may take seconds for a large file; a
    problem there ends the run with exit code 2 and its message in stderr.log)."""
    from tui_ft.core.library.checkpoints import Library

    lib = Library(paths)
    source = preset.data.source
    relative = source not in NAMED_SOURCES and not Path(source).expanduser().is_absolute()
    if relative and Path.cwd().resolve() != paths.root.resolve():
        # check_resources resolves relative data paths against the current
        # folder; the run starts in the project root, so check that ourselves
        problem = data_source_problem(source, paths, base=paths.root)
        if problem is not None:
            raise preset.error("data.source", problem)
        if preset.model.init:
            try:
                lib.resolve_ref(preset.model.init)
            except LookupError as exc:
                raise preset.error("model.init", str(exc.args[0] if exc.args else exc)) from None
        return
    check_resources(preset, resolve_init=lib.resolve_ref)


@dataclass
class LaunchedPlan:
    """A multi-stage plan started by the dashboard; its stages are ordinary
    runs under ``logs/`` that the dashboard finds and follows like any other."""

    name: str
    path: Path
    stderr_path: Path
    proc: subprocess.Popen = field(repr=False)
    started: float = field(default_factory=time.time)
    reported: bool = False

    def poll(self) -> int | None:
        return self.proc.poll()


def check_plan_file(path: Path, paths: Paths):
    """Load and check a plan (stage presets, data files, init checkpoints).
    Raises ``PresetError``. Its stage files are relative to the project root,
    so without the root as the current folder that is left to the run."""
    from tui_ft.core.orchestrate.plans import check_plan, load_plan

    if Path.cwd().resolve() != paths.root.resolve():
        return None
    plan = load_plan(path)
    check_plan(plan, paths=paths)
    return plan


def check_target(target: Preset | Path, paths: Paths) -> None:
    """The pre-launch checks of a preset (``check_preset``) or of a plan file
    (``check_plan_file``). Raises ``PresetError``."""
    if isinstance(target, Preset):
        check_preset(target, paths)
    else:
        check_plan_file(target, paths)


def launch(target: Preset | Path, paths: Paths, *, python: str | None = None) -> LaunchedRun | LaunchedPlan:
    """Start ``tui-ft run`` in its own session for a preset or a plan file.

    A preset gets a run id; it is written to ``logs/ID/preset.toml`` and its
    stderr goes to ``logs/ID/stderr.log``. A plan file runs as it is (its
    stages pick their own run ids); its stderr goes to ``logs/.plans/``."""
    if isinstance(target, Preset):
        run_id = new_run_id(target.name, paths)
        run_dir = paths.run_log_dir(run_id)
        preset_file = run_dir / LAUNCH_FILE
        save_preset(target, preset_file)
        stderr_path = run_dir / STDERR_FILE
        proc = _spawn(["run", str(preset_file), "--run-id", run_id], stderr_path, paths, python)
        return LaunchedRun(run_id, target.name, preset_file, stderr_path, proc)
    err_dir = paths.logs / ".plans"
    err_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = err_dir / f"{target.stem}-{time.strftime('%Y%m%d-%H%M%S')}.stderr.log"
    proc = _spawn(["run", str(target)], stderr_path, paths, python)
    return LaunchedPlan(target.stem, target, stderr_path, proc)


def resumable(run_id: str, status: str, paths: Paths) -> str | None:
    """Why ``run_id`` cannot be resumed from the dashboard, or ``None`` when it
    can: it ended without finishing (interrupted, crashed, failed) and left a
    ``last.pt``."""
    if status not in RESUMABLE:
        return f"{run_id} is {status}: only interrupted, crashed or failed runs can be resumed"
    if not (paths.checkpoints / run_id / "last.pt").is_file():
        return f"{run_id} has no last.pt to resume from (it ended before its first epoch was saved)"
    return None


def launch_resume(run_id: str, preset_name: str, paths: Paths, *, python: str | None = None) -> LaunchedRun:
    """Start ``tui-ft resume RUN_ID`` in its own session, like a launch: its
    stderr is appended to ``logs/RUN_ID/stderr.log``; it appends to the run's
    own ``events.jsonl``, which the dashboard follows."""
    run_dir = paths.run_log_dir(run_id)
    stderr_path = run_dir / STDERR_FILE
    proc = _spawn(["resume", run_id], stderr_path, paths, python)
    return LaunchedRun(run_id, preset_name, run_dir / LAUNCH_FILE, stderr_path, proc, kind="resume")


def _spawn(args: list[str], stderr_path: Path, paths: Paths, python: str | None) -> subprocess.Popen:
    """``python -m tui_ft COMMAND ARGS --plain`` in its own session, stderr to ``stderr_path``."""
    env = {**os.environ, "TUI_FT_HOME": str(paths.root), "PYTHONUNBUFFERED": "1"}
    env.pop("TEXTUAL", None)
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(
            [python or sys.executable, "-m", "tui_ft", *args, "--plain"],
            cwd=paths.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def run_cli(args: list[str], paths: Paths, *, python: str | None = None, timeout: float = 6 * 3600) -> tuple[int, str, str]:
    """Run ``python -m tui_ft ARGS`` to its end in the project root (export, predict: work that
    loads torch runs in its own process, as training does); ``(exit code, stdout, stderr)``."""
    env = {**os.environ, "TUI_FT_HOME": str(paths.root)}
    env.pop("TEXTUAL", None)
    r = subprocess.run([python or sys.executable, "-m", "tui_ft", *args], cwd=paths.root, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def interrupt(pid: int, sig: int = signal.SIGINT) -> None:
    """Send ``sig`` to a run: to its process group when it leads one (our own
    launches), else to the process alone (a headless run started in a shell).
    Raises ``ProcessLookupError`` when it is gone."""
    if pid <= 0 or not pid_alive(pid):
        raise ProcessLookupError(f"process {pid} is not running")
    try:
        leader = os.getpgid(pid) == pid
    except OSError:
        leader = False
    if leader:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


class TextTail(LineTail):
    """The lines appended to a run's stderr.log since the last call; a huge log is
    first read from its last 64 KiB."""

    def __init__(self, path: Path, *, start_at_end: bool = False, max_first: int = 64 * 1024):
        super().__init__(path, start_at_end=start_at_end, max_first=max_first)


def tail_lines(path: Path, n: int = 20, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``n`` non-empty lines of a text file ([] when it is missing)."""
    from tui_ft.core.common.files import open_regular

    try:
        with open_regular(path) as fh:  # a FIFO or a device is never read
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = [ln.rstrip("\r") for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-n:]
