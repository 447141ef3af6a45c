"""Where runs execute: local processes, or Slurm jobs through submitit.

One layer serves ``tui-ft matbench`` (a study's folds, :mod:`tui_ft.core.orchestrate.study`)
and sweeps (Optuna trials, :mod:`tui_ft.core.orchestrate.sweep`).

A run is one :class:`RunTask`: a command line (normally ``python -m tui_ft
--preset FILE --plain --run-id ID``), its environment, its log file and the run
id it makes. An executor takes tasks one at a time, ``submit(task) -> Handle``,
and runs at most ``jobs`` of them at once (:meth:`Executor.free` says how many
more it takes now). A :class:`Handle` follows one run: ``done()``, ``result()``
(``{"run_id", "returncode", "command"[, "error"]}``), ``returncode`` (None until
done), ``stop()`` (the run records ``run_interrupted`` and keeps ``last.pt``) and
``wait()``.

``local`` (:class:`LocalExecutor`)
    each run is a child process. With ``gpus``, one run per device, its
    ``CUDA_VISIBLE_DEVICES`` set to that device (and at most ``len(gpus)`` at
    once); on the CPU, the usable cores are divided between the concurrent runs
    (``TUI_FT_THREADS``, ``TUI_FT_CPU_WORKERS`` and ``OMP_NUM_THREADS`` = cores //
    jobs, at least 1). ``stop()`` sends the run SIGINT. ``own_session``: the runs
    get their own session (a Ctrl-C on the terminal reaches only the parent, which
    stops them once) and, on Linux, SIGINT when the parent dies.

``slurm`` (:class:`SubmititExecutor`)
    each run is a job submitted with submitit (partition, GPUs, CPUs, memory, time
    limit and extra sbatch options from the preset's ``[cluster]`` table).
    :class:`RunTask` is a ``submitit.helpers.Checkpointable``: when Slurm preempts
    the job or its time limit nears, submitit calls :meth:`RunTask.checkpoint`,
    which stops the run (it records ``run_interrupted``; ``last.pt`` holds the last
    completed epoch) and requeues the same task, which then continues from
    ``last.pt`` (``python -m tui_ft resume ID``). ``stop()`` cancels the job; the
    job's process stops the run, and the handle is done once the run has ended.
    ``TUI_FT_SUBMITIT_CLUSTER=local`` uses submitit's own local executor instead
    of Slurm (jobs as local processes, same code path; the tests use it).

:func:`run_all` drives a fixed list through an executor (a study's folds); a
sweep asks for its trials one at a time and submits them itself.

This module does not import torch; submitit is imported only by the slurm executor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

try:  # submitit is the optional extra "slurm"; the local executor works without it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without submitit
    _Checkpointable = object  # type: ignore[assignment,misc]

ENV_SUBMITIT_CLUSTER = "TUI_FT_SUBMITIT_CLUSTER"
STOP_TIMEOUT_S = 120
POLL_S = 0.25
EXECUTORS = ("local", "slurm")


class ExecutorError(Exception):
    """A usage problem with an executor's settings (usage error, exit 2)."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]`` (distinct device numbers); None or "" -> []."""
    if not text:
        return []
    gpus = [g.strip() for g in str(text).split(",")]
    if not all(g.isascii() and g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ExecutorError(f"--gpus: expected distinct device numbers like 0,1,2,3; got {text!r}")
    return gpus


def tui_ft_argv(*args: str) -> list[str]:
    """``python -m tui_ft ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tui_ft", *args]


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the run gets SIGINT (stops cleanly, keeps last.pt) if its parent dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


# --------------------------------------------------------------------------- the task


@dataclass
class RunTask(_Checkpointable):
    """One run: a command line, its environment and log, and the run id it makes.

    With ``run_id`` and ``root`` set, :meth:`command` continues the run instead of
    starting it again: nothing when it has finished, ``python -m tui_ft resume ID``
    when it has a ``last.pt`` (a requeued Slurm job, a study rerun). A plan (which
    allocates its own run ids) leaves ``run_id`` None: its command is always ``argv``.
    """

    argv: list[str]
    log: str  # the run's stdout and stderr (appended)
    run_id: str | None = None
    root: str | None = None  # project root (TUI_FT_HOME)
    cwd: str | None = None  # where relative data paths resolve
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""  # for messages: "fold 3", "trial 5"

    def command(self) -> list[str] | None:
        """The command line now: None when the run has already finished."""
        if self.run_id and self.root:
            from tui_ft.core.library.runs import summarize

            if summarize(Path(self.root) / "logs" / self.run_id).status == "finished":
                return None
            if (Path(self.root) / "checkpoints" / self.run_id / "last.pt").is_file():
                return tui_ft_argv("resume", self.run_id, "--plain")
        return list(self.argv)

    def start(self, argv: Sequence[str], extra_env: dict[str, str] | None = None, *, own_session: bool = False) -> subprocess.Popen:
        """Start ``argv`` with the task's environment, output appended to its log."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        if self.root:
            env["TUI_FT_HOME"] = self.root
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            linux = sys.platform.startswith("linux")
            return subprocess.Popen(
                list(argv), cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=own_session, preexec_fn=_pdeathsig if own_session and linux else None,
            )

    def result(self, rc: int, argv: Sequence[str] | None) -> dict[str, Any]:
        return {"run_id": self.run_id, "label": self.label, "returncode": rc,
                "command": "already finished" if argv is None else " ".join(argv[2:])}

    def __call__(self) -> dict[str, Any]:
        """Run it to the end in this process (what a submitit job does)."""
        argv = self.command()
        if argv is None:
            return self.result(0, None)
        self._proc = self.start(argv)
        try:
            rc = self._proc.wait()
        except BaseException:  # Ctrl-C, a cancelled job, submitit's requeue exit: stop the child first
            self.stop()
            raise
        return self.result(rc, argv)

    def stop(self) -> None:
        """Ask the child to stop (SIGINT: it records run_interrupted) and wait for it; kill it if it hangs.

        It does not call ``Popen.wait``: this runs in submitit's signal handler, which may have
        interrupted ``__call__``'s own ``wait`` (holding Popen's wait lock) on the same thread.
        """
        from tui_ft.core.common.procs import pid_alive

        proc = getattr(self, "_proc", None)
        if proc is None or proc.returncode is not None:
            return
        for sig, patience in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline:
                if not pid_alive(proc.pid):  # exited (a zombie until __call__ reaps it)
                    return
                time.sleep(0.1)

    def checkpoint(self, *args: Any, **kwargs: Any):  # noqa: ARG002 - submitit's signature
        """Called by submitit on preemption or timeout: stop the run, requeue this task (it resumes from last.pt)."""
        import submitit

        self.stop()
        return submitit.helpers.DelayedSubmission(self.fresh())

    def fresh(self) -> "RunTask":
        return RunTask(list(self.argv), self.log, self.run_id, self.root, self.cwd, dict(self.env), self.label)

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_proc", None)
        return d

    def run_settled(self) -> bool:
        """The run is not running any more (True when there is no run id to look at)."""
        if not (self.run_id and self.root):
            return True
        from tui_ft.core.library.runs import summarize

        return summarize(Path(self.root) / "logs" / self.run_id).status != "running"


# --------------------------------------------------------------------------- handles


class Handle:
    """One submitted run."""

    task: RunTask
    ident: str = ""  # "pid 123" / "job 456", for messages

    def done(self) -> bool:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        """Wait for the end; ``{"run_id", "returncode", "command"[, "error"]}``."""
        raise NotImplementedError

    @property
    def returncode(self) -> int | None:
        return self.result()["returncode"] if self.done() else None

    def stop(self) -> None:
        """Stop the run (it records run_interrupted and keeps its last.pt); returns at once."""
        raise NotImplementedError

    def wait(self, timeout: float = STOP_TIMEOUT_S + 15) -> bool:
        """Wait until done (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


class LocalHandle(Handle):
    def __init__(self, task: RunTask, proc: subprocess.Popen | None, argv: list[str] | None, release: Callable[[], None]):
        self.task, self.proc, self.argv, self._release = task, proc, argv, release
        self.pid = proc.pid if proc is not None else None
        self.ident = f"pid {self.pid}" if proc is not None else "nothing to run"
        self._stopped_at: float | None = None
        if proc is None:
            self._finish()

    def _finish(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None  # type: ignore[assignment]

    def done(self) -> bool:
        if self.proc is not None and self.proc.poll() is None:
            if self._stopped_at is not None and time.monotonic() - self._stopped_at > STOP_TIMEOUT_S:
                self.proc.kill()  # it did not stop in time
                self.proc.wait()
            else:
                return False
        self._finish()
        return True

    def result(self) -> dict[str, Any]:
        while not self.done():
            time.sleep(0.1)
        return self.task.result(self.proc.returncode if self.proc is not None else 0, self.argv)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None or self._stopped_at is not None:
            return  # stopped once: a second SIGINT could cut its clean stop short
        self._stopped_at = time.monotonic()
        try:
            self.proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass


class SubmititHandle(Handle):
    def __init__(self, task: RunTask, job: Any):
        self.task, self.job = task, job
        self.job_id = str(job.job_id)
        self.ident = f"job {self.job_id}"
        self._stopped_at: float | None = None
        self._result: dict[str, Any] | None = None

    def done(self) -> bool:
        if not self.job.done():
            return False
        if self._stopped_at is not None and not self.task.run_settled():
            # a cancelled job's process may end before the run it stopped has written run_interrupted
            return time.monotonic() - self._stopped_at > STOP_TIMEOUT_S + 15
        return True

    def result(self) -> dict[str, Any]:
        while not self.done():
            time.sleep(0.2)
        if self._result is None:
            try:
                self._result = dict(self.job.result())
            except Exception as exc:  # noqa: BLE001 - the job failed or was cancelled (submitit's error)
                self._result = {"run_id": self.task.run_id, "label": self.task.label, "returncode": 1,
                                "error": f"{type(exc).__name__}: {exc}"}
        return self._result

    def stop(self) -> None:
        if self._stopped_at is not None or self.job.done():
            return
        self._stopped_at = time.monotonic()
        try:
            self.job.cancel(check=False)
        except Exception:  # noqa: BLE001 - best effort (already ended)
            pass


# --------------------------------------------------------------------------- executors


class Executor:
    """``submit(task) -> Handle``, at most ``jobs`` at once."""

    kind = ""
    jobs = 1

    def __init__(self) -> None:
        self.active: list[Handle] = []

    def free(self) -> int:
        """How many more runs it takes now."""
        self.active = [h for h in self.active if not h.done()]
        return max(0, self.jobs - len(self.active))

    def submit(self, task: RunTask) -> Handle:
        if self.free() <= 0:
            raise RuntimeError(f"{self.kind} executor: {self.jobs} run(s) already running")
        h = self._submit(task)
        self.active.append(h)
        return h

    def _submit(self, task: RunTask) -> Handle:
        raise NotImplementedError


class LocalExecutor(Executor):
    kind = "local"

    def __init__(self, jobs: int = 1, gpus: Sequence[str] = (), *, own_session: bool = False):
        super().__init__()
        if jobs < 1:
            raise ExecutorError(f"--jobs: expected a number >= 1, got {jobs}")
        self.gpus = [str(g) for g in gpus]
        self.jobs = min(jobs, len(self.gpus)) if self.gpus else jobs
        self.free_gpus = list(self.gpus)
        self.own_session = own_session
        self.per = str(max(1, usable_cores() // self.jobs))

    def _submit(self, task: RunTask) -> Handle:
        argv = task.command()
        if argv is None:
            return LocalHandle(task, None, None, lambda: None)
        if self.gpus:
            dev = self.free_gpus.pop(0)
            extra = {"CUDA_VISIBLE_DEVICES": dev}
            release = lambda: self.free_gpus.append(dev)  # noqa: E731
        else:
            extra = {"TUI_FT_THREADS": self.per, "TUI_FT_CPU_WORKERS": self.per, "OMP_NUM_THREADS": self.per}
            release = lambda: None  # noqa: E731
        task.env.update(extra)
        try:
            proc = task.start(argv, own_session=self.own_session)
        except BaseException:
            release()
            raise
        return LocalHandle(task, proc, argv, release)


def submitit_cluster() -> str:
    """``slurm``, or ``local`` (submitit's local executor) when TUI_FT_SUBMITIT_CLUSTER=local."""
    return "local" if os.environ.get(ENV_SUBMITIT_CLUSTER, "").strip() == "local" else "slurm"


def make_submitit_executor(cluster_cfg, folder: Path, name: str):
    """A submitit executor with the ``[cluster]`` settings (Slurm, or submitit's local executor)."""
    import shutil

    import submitit

    cluster = submitit_cluster()
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ExecutorError("--executor slurm: Slurm's sbatch is not on PATH (not a Slurm login node?); "
                            f"run where Slurm is, or use --executor local ({ENV_SUBMITIT_CLUSTER}=local tries "
                            "submitit's local executor)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise ExecutorError(f"[cluster] folder {folder}: cannot create or write it ({exc.strerror or exc}); "
                            "set [cluster] folder to a folder you can write") from None
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except Exception as exc:  # noqa: BLE001 - submitit's own checks (no srun, ...): one line
        raise ExecutorError(f"--executor slurm: submitit cannot start ({type(exc).__name__}: {exc})") from None
    params: dict[str, Any] = {"timeout_min": cluster_cfg.timeout_min, "name": name}
    if cluster == "slurm":
        params.update(
            gpus_per_node=cluster_cfg.gpus_per_node,
            cpus_per_task=cluster_cfg.cpus_per_task,
            mem_gb=cluster_cfg.mem_gb,
            tasks_per_node=1,
            nodes=1,
            slurm_signal_delay_s=120,  # USR2 two minutes before the limit: time to stop and requeue
        )
        if cluster_cfg.partition:
            params["slurm_partition"] = cluster_cfg.partition
        if cluster_cfg.extra:
            params["slurm_additional_parameters"] = {k: v for k, v in cluster_cfg.extra.items()}
    ex.update_parameters(**params)
    return ex


class SubmititExecutor(Executor):
    kind = "slurm"

    def __init__(self, cluster_cfg, folder: Path, name: str, jobs: int = 1):
        super().__init__()
        if jobs < 1:
            raise ExecutorError(f"--jobs: expected a number >= 1, got {jobs}")
        try:
            self.ex = make_submitit_executor(cluster_cfg, folder, name)
        except ImportError:
            raise ExecutorError("the slurm executor needs submitit: pip install 'tui-ft[slurm]'") from None
        self.jobs = jobs

    def _submit(self, task: RunTask) -> Handle:
        try:
            job = self.ex.submit(task)
        except Exception as exc:  # noqa: BLE001 - sbatch refused it, the folder went away: one line
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ExecutorError(f"{task.label or 'run'}: could not be submitted ({type(exc).__name__}: {first})") from None
        return SubmititHandle(task, job)


def make_executor(kind: str, *, jobs: int, gpus: Sequence[str] = (), cluster_cfg=None, folder: Path | None = None,
                  name: str = "tui-ft", own_session: bool = False) -> Executor:
    """``local`` or ``slurm`` (``cluster_cfg`` and ``folder`` for the latter)."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"--executor: expected local or slurm, got {kind!r}")
    if kind == "local":
        return LocalExecutor(jobs, gpus, own_session=own_session)
    if gpus:
        raise ExecutorError("--gpus is for the local executor; on Slurm set [cluster] gpus_per_node")
    assert cluster_cfg is not None and folder is not None
    return SubmititExecutor(cluster_cfg, folder, name, jobs)


# --------------------------------------------------------------------------- a fixed list of runs

T = TypeVar("T")


def run_all(
    executor: Executor,
    items: Iterable[T],
    *,
    make_task: Callable[[T], RunTask],
    on_submit: Callable[[T, Handle], None] = lambda item, h: None,
    on_done: Callable[[T, Handle], None] = lambda item, h: None,
) -> None:
    """Run every item's task through the executor, as many at once as it takes.

    ``make_task`` is called just before an item is submitted (a run id can be allocated
    then). Ctrl-C (KeyboardInterrupt) stops the running ones, waits for them (they
    record run_interrupted) and re-raises; their ``on_done`` is not called.
    """
    pending = list(items)
    running: list[tuple[T, Handle]] = []
    try:
        while pending or running:
            while pending and executor.free() > 0:
                item = pending.pop(0)
                h = executor.submit(make_task(item))
                running.append((item, h))
                on_submit(item, h)
            for pair in list(running):
                if pair[1].done():
                    running.remove(pair)
                    on_done(*pair)
            if pending or running:
                time.sleep(POLL_S)
    except BaseException:  # Ctrl-C, or a submission that failed: stop what runs, then re-raise
        for _, h in running:
            h.stop()
        for _, h in running:
            h.wait()
        raise
