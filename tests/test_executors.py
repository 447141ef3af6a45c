"""tui_ft.core.orchestrate.executors without training: a handle stops a sleeping child, GPUs and cores per run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tui_ft.core.orchestrate.executors import ExecutorError, LocalExecutor, RunTask, make_executor, parse_gpus, run_all

SLEEPER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)  # as the tui_ft CLI does\n"
    "print('sl' + 'eeping', flush=True)\n"
    "try:\n"
    "    time.sleep(60)\n"
    "except KeyboardInterrupt:\n"
    "    print('interrupted', flush=True)\n"
    "    sys.exit(130)\n"
)

ENV_PRINTER = "import os; print('env', os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('TUI_FT_THREADS'))"


def _task(tmp_path: Path, name: str, code: str) -> RunTask:
    return RunTask([sys.executable, "-c", code], str(tmp_path / f"{name}.log"), label=name)


def _wait_for(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} not in {path}")


@pytest.mark.parametrize("own_session", [False, True])
def test_local_handle_stop_interrupts_a_sleeping_child(tmp_path, own_session):
    ex = LocalExecutor(jobs=1, own_session=own_session)
    h = ex.submit(_task(tmp_path, "sleep", SLEEPER))
    assert ex.free() == 0 and not h.done() and h.returncode is None and h.pid
    with pytest.raises(RuntimeError, match="already running"):
        ex.submit(_task(tmp_path, "second", SLEEPER))
    _wait_for(tmp_path / "sleep.log", "sleeping")  # the child is in its sleep, not starting up
    t0 = time.monotonic()
    h.stop()
    assert h.wait(timeout=30) and time.monotonic() - t0 < 30
    assert h.returncode == 130 and h.result()["returncode"] == 130
    log = (tmp_path / "sleep.log").read_text()
    assert log.startswith(f"$ {sys.executable} -c") and "interrupted" in log  # it got SIGINT and stopped itself
    assert ex.free() == 1


def test_local_executor_one_run_per_gpu_and_cores_divided(tmp_path):
    ex = LocalExecutor(jobs=4, gpus=["0", "1"])
    assert ex.jobs == 2  # at most one run per device
    a = ex.submit(_task(tmp_path, "a", SLEEPER))
    b = ex.submit(_task(tmp_path, "b", SLEEPER))
    assert ex.free() == 0
    assert {a.task.env["CUDA_VISIBLE_DEVICES"], b.task.env["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    a.stop()
    assert a.wait(timeout=30) and ex.free() == 1
    c = ex.submit(_task(tmp_path, "c", ENV_PRINTER))  # gets the device a gave back
    assert c.wait(timeout=30) and c.returncode == 0
    assert f"env {a.task.env['CUDA_VISIBLE_DEVICES']} None" in (tmp_path / "c.log").read_text()
    b.stop()
    assert b.wait(timeout=30)

    cpu = LocalExecutor(jobs=2)
    d = cpu.submit(_task(tmp_path, "d", ENV_PRINTER))
    assert d.wait(timeout=30) and d.returncode == 0
    assert f"env None {cpu.per}" in (tmp_path / "d.log").read_text() and int(cpu.per) >= 1


def test_run_all_runs_every_task_n_at_a_time(tmp_path):
    ex = LocalExecutor(jobs=2)
    done: list[tuple[str, int]] = []
    run_all(ex, ["x", "y", "z"], make_task=lambda n: _task(tmp_path, n, ENV_PRINTER),
            on_done=lambda n, h: done.append((n, h.returncode)))
    assert sorted(done) == [("x", 0), ("y", 0), ("z", 0)]


def test_usage_errors():
    with pytest.raises(ExecutorError, match="--gpus"):
        parse_gpus("0,0")
    with pytest.raises(ExecutorError, match="--executor"):
        make_executor("kubernetes", jobs=1)
    with pytest.raises(ExecutorError, match="--gpus is for the local executor"):
        make_executor("slurm", jobs=1, gpus=["0"])
    with pytest.raises(ExecutorError, match="--jobs"):
        LocalExecutor(jobs=0)
    assert parse_gpus("0, 1") == ["0", "1"] and parse_gpus(None) == []
