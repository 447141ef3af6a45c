"""Where a study's folds run: local processes, or Slurm jobs through submitit.

Each fold is one :class:`FoldTask`: a callable that runs the ordinary CLI
(``python -m tui_ft --preset FILE --plain --run-id ID``, or ``python -m tui_ft
resume ID`` when the run already has a ``last.pt``) as a child process and
returns how it ended. Both executors run the same callable:

``local`` (:func:`run_local`)
    ``jobs`` folds at a time, each in its own process (a thread per fold waits
    on it: ``concurrent.futures``). With ``gpus``, one fold per device, its
    ``CUDA_VISIBLE_DEVICES`` set to that device; on the CPU, the usable cores
    are divided between the concurrent folds (``TUI_FT_THREADS``,
    ``TUI_FT_CPU_WORKERS`` and ``OMP_NUM_THREADS`` = cores // jobs, at least 1).

``slurm`` (:func:`run_submitit`)
    each fold is submitted with submitit (partition, GPUs, CPUs, memory, time
    limit and extra sbatch options from the preset's ``[cluster]`` table).
    :class:`FoldTask` is a ``submitit.helpers.Checkpointable``: when Slurm
    preempts the job or its time limit nears, submitit calls
    :meth:`FoldTask.checkpoint`, which stops the child (it records
    ``run_interrupted``; ``last.pt`` holds the last completed epoch) and
    requeues the same task, which then continues from ``last.pt``.
    ``TUI_FT_SUBMITIT_CLUSTER=local`` uses submitit's own local executor
    instead of Slurm (jobs as local processes, same code path; the tests use it).

This module does not import torch; submitit is imported only by the slurm executor.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

try:  # submitit is the optional extra "slurm"; the local executor works without it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without submitit
    _Checkpointable = object  # type: ignore[assignment,misc]

ENV_SUBMITIT_CLUSTER = "TUI_FT_SUBMITIT_CLUSTER"
STOP_TIMEOUT_S = 120


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class FoldTask(_Checkpointable):
    """One fold: run (or continue) its preset or plan through the CLI in a child process."""

    fold: int
    kind: str  # "preset" | "plan"
    file: str  # the fold's preset or plan file
    run_id: str | None  # the preset's run id (plans allocate their own)
    root: str  # project root (TUI_FT_HOME)
    cwd: str  # where relative data paths resolve
    log: str  # the child's stdout and stderr
    env: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str] | None:
        """The CLI call for this fold now: None when the run has already finished."""
        base = [sys.executable, "-m", "tui_ft"]
        if self.kind == "plan":
            return [*base, "--preset", self.file, "--plain"]
        from tui_ft.core.runs import summarize

        run_dir = Path(self.root) / "logs" / str(self.run_id)
        if summarize(run_dir).status == "finished":
            return None
        if (Path(self.root) / "checkpoints" / str(self.run_id) / "last.pt").is_file():
            return [*base, "resume", str(self.run_id), "--plain"]
        return [*base, "--preset", self.file, "--plain", "--run-id", str(self.run_id)]

    def __call__(self) -> dict[str, Any]:
        argv = self.command()
        if argv is None:
            return {"fold": self.fold, "run_id": self.run_id, "returncode": 0, "command": "already finished"}
        env = {**os.environ, **self.env, "TUI_FT_HOME": self.root}
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                rc = self._proc.wait()
            except BaseException:  # Ctrl-C, a cancelled job, submitit's requeue exit: stop the child first
                self.stop()
                raise
        return {"fold": self.fold, "run_id": self.run_id, "returncode": rc, "command": " ".join(argv[2:])}

    def stop(self) -> None:
        """Ask the child to stop (it records run_interrupted) and wait for it; kill it if it hangs.

        It does not call ``Popen.wait``: this runs in submitit's signal handler, which may have
        interrupted ``__call__``'s own ``wait`` (holding Popen's wait lock) on the same thread.
        """
        from tui_ft.core.runs import pid_alive

        proc = getattr(self, "_proc", None)
        if proc is None or proc.returncode is not None:
            return
        for sig, patience in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
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
        """Called by submitit on preemption or timeout: stop the run, requeue this fold (it resumes from last.pt)."""
        import submitit

        self.stop()
        return submitit.helpers.DelayedSubmission(self.fresh())

    def fresh(self) -> "FoldTask":
        return FoldTask(self.fold, self.kind, self.file, self.run_id, self.root, self.cwd, self.log, dict(self.env))

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_proc", None)
        return d


Done = Callable[[FoldTask, dict[str, Any]], None]
Start = Callable[[FoldTask], None]


def _nothing(task: FoldTask) -> None:  # noqa: ARG001
    return None


def _wait_all(futures: list[concurrent.futures.Future], on_interrupt: Callable[[], None]) -> None:
    try:
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=0.5)
    except KeyboardInterrupt:
        on_interrupt()
        raise


def run_local(
    tasks: Sequence[FoldTask], *, jobs: int, gpus: Sequence[str] = (), on_start: Start = _nothing, on_done: Done
) -> None:
    """Run the folds ``jobs`` at a time as local processes (one per GPU when ``gpus`` is given)."""
    if not tasks:
        return
    jobs = max(1, min(jobs, len(tasks), len(gpus) if gpus else jobs))
    devices: "queue.Queue[str]" = queue.Queue()
    for g in gpus:
        devices.put(str(g))
    per = str(max(1, usable_cores() // jobs))
    stopping = threading.Event()
    running: list[FoldTask] = []

    def work(task: FoldTask) -> None:
        if stopping.is_set():
            return
        dev = devices.get() if gpus else None
        try:
            if dev is not None:
                task.env["CUDA_VISIBLE_DEVICES"] = dev
            else:
                task.env.update(TUI_FT_THREADS=per, TUI_FT_CPU_WORKERS=per, OMP_NUM_THREADS=per)
            on_start(task)
            running.append(task)
            result = task()
        finally:
            if dev is not None:
                devices.put(dev)
        if not stopping.is_set():
            on_done(task, result)

    def interrupt() -> None:
        stopping.set()
        for t in list(running):
            t.stop()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fold")
    try:
        futures = [pool.submit(work, t) for t in tasks]
        _wait_all(futures, interrupt)
        for f in futures:
            f.result()  # re-raise an error from on_done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def submitit_cluster() -> str:
    """``slurm``, or ``local`` (submitit's local executor) when TUI_FT_SUBMITIT_CLUSTER=local."""
    return "local" if os.environ.get(ENV_SUBMITIT_CLUSTER, "").strip() == "local" else "slurm"


def make_submitit_executor(cluster_cfg, folder: Path, name: str):
    """A submitit executor with the ``[cluster]`` settings (Slurm, or submitit's local executor)."""
    import submitit

    cluster = submitit_cluster()
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
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


def run_submitit(
    tasks: Sequence[FoldTask],
    *,
    executor,
    jobs: int,
    on_start: Start = _nothing,
    on_done: Done,
    on_submit: Callable[[FoldTask, Any], None],
) -> None:
    """Submit the folds (at most ``jobs`` in the queue at once) and wait for them.

    Ctrl-C cancels the submitted jobs; running the study again continues them from ``last.pt``.
    """
    if not tasks:
        return
    stopping = threading.Event()
    submitted: list[Any] = []
    lock = threading.Lock()

    def work(task: FoldTask) -> None:
        with lock:
            if stopping.is_set():
                return
            on_start(task)
            job = executor.submit(task)
            submitted.append(job)
        on_submit(task, job)
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - the job failed outside the run (submitit's error)
            if stopping.is_set():
                return
            result = {"fold": task.fold, "run_id": task.run_id, "returncode": 1, "error": f"{type(exc).__name__}: {exc}"}
        if not stopping.is_set():
            on_done(task, result)

    def interrupt() -> None:
        with lock:
            stopping.set()
            for job in submitted:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fold")
    try:
        futures = [pool.submit(work, t) for t in tasks]
        _wait_all(futures, interrupt)
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
