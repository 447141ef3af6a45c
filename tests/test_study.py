"""``tui-ft matbench``: a study over the Matbench folds, its resume, and its executors.

The long tests run the real CLI on the demo data (240 rows, head mode, 2 epochs):
five folds, a kill during fold 3 and a rerun, the submitit path through
submitit's own local executor, and a submitit preemption resumed from last.pt.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui_ft.core.common.events import RunFinished, RunInterrupted, RunStarted, read_events
from tui_ft.core.orchestrate.study import StudyError, hash_dictionary, parse_folds, scores


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")


# --------------------------------------------------------------------------- units


def test_parse_folds():
    assert parse_folds("0-4") == [0, 1, 2, 3, 4]
    assert parse_folds("3") == [3]
    assert parse_folds("4,0-1") == [0, 1, 4]
    for bad in ("5", "0-5", "3-1", "a", "", "1,,2"):
        with pytest.raises(StudyError, match="--folds"):
            parse_folds(bad)


def test_scores_and_hash_follow_matbench():
    s = scores([1.0, -2.0, 0.0], [1.5, -1.0, 0.25])
    assert s == pytest.approx({"mae": 0.5833333, "rmse": (0.25 + 1 + 0.0625) ** 0.5 / 3**0.5, "mape": 0.5, "max_error": 1.0})
    # key order does not matter (matbench's immutify_dictionary sorts keys)
    assert hash_dictionary({"b": 1, "a": {"y": [1, 2], "x": 2}}) == hash_dictionary({"a": {"x": 2, "y": [1, 2]}, "b": 1})


def test_usage_errors_exit_2(demo_preset, tui_ft_cli):
    p = demo_preset("st", epochs=1)
    r = tui_ft_cli("matbench", p, "--folds", "7")
    assert r.returncode == 2 and "--folds: folds are 0 to 4" in r.stderr
    r = tui_ft_cli("matbench", p, "--name", "../x")
    assert r.returncode == 2 and "--name: study name" in r.stderr
    r = tui_ft_cli("matbench", p, "--jobs", "0")
    assert r.returncode == 2 and "--jobs" in r.stderr
    assert not (Path("logs") / ".studies").exists()


# --------------------------------------------------------------------------- helpers


def _study(name: str = "st") -> dict:
    return json.loads((Path("logs/.studies") / name / "study.json").read_text())


def _run_ids(name: str = "st") -> dict[int, str]:
    return {int(k): v["run_id"] for k, v in _study(name)["folds"].items() if v.get("run_id")}


def _finished_mae(run_id: str) -> float:
    evs = [e for e in read_events(Path("logs") / run_id / "events.jsonl") if isinstance(e, RunFinished)]
    assert len(evs) == 1, run_id
    return evs[0].test_mae


def _demo_ids() -> list[str]:
    from tui_ft.core.data.demo import ensure_demo_dataset
    from tui_ft.core.common.paths import Paths

    with gzip.open(ensure_demo_dataset(Paths.default()), "rt", encoding="utf-8") as fh:
        return [str(i) for i in json.load(fh)["index"]]


def _check_complete_study(name: str, out: str) -> None:
    """Five finished runs, the table, mean = mean of the run_finished MAEs, results cover every row once."""
    import numpy as np

    st = _study(name)
    ids = _run_ids(name)
    assert sorted(ids) == [0, 1, 2, 3, 4] and st["status"] == "finished"
    maes = [_finished_mae(ids[k]) for k in range(5)]
    for k in range(5):
        assert st["folds"][str(k)]["status"] == "finished"
        assert any(line.split()[:3] == [str(k), ids[k], "finished"] for line in out.splitlines()), out
    assert st["test_mae_mean"] == pytest.approx(float(np.mean(maes)), abs=1e-12)
    assert st["test_mae_std"] == pytest.approx(float(np.std(maes)), abs=1e-12)
    assert f"{np.mean(maes):.4f} ± {np.std(maes):.4f}" in out

    d = json.loads(gzip.decompress((Path("logs/.studies") / name / "results.json.gz").read_bytes()))
    assert {k for k in d} == {"@module", "@class", "version", "tasks", "user_metadata", "benchmark_name", "datestamp", "hash"}
    assert (d["@module"], d["@class"], d["benchmark_name"]) == ("matbench.bench", "MatbenchBenchmark", "matbench_v0.1")
    (task,) = d["tasks"].values()
    assert (task["@module"], task["@class"]) == ("matbench.task", "MatbenchTask")
    assert sorted(task["results"]) == [f"fold_{k}" for k in range(5)]
    seen: list[str] = []
    for k in range(5):
        fold = task["results"][f"fold_{k}"]
        assert sorted(fold) == ["data", "parameters", "scores"]
        assert fold["scores"]["mae"] == pytest.approx(maes[k], abs=1e-5)  # the CSV keeps 6 decimals
        assert all(isinstance(v, float) for v in fold["data"].values())
        seen += list(fold["data"])
    all_ids = _demo_ids()
    assert len(seen) == len(set(seen)) == len(all_ids) and set(seen) == set(all_ids)
    h = d.pop("hash")
    assert hash_dictionary(d) == h
    try:  # matbench itself (its PyPI release pins old scikit-learn/scipy; often not installable)
        from matbench.constants import REG_METRICS
        from matbench.util import hash_dictionary as mb_hash
    except ImportError:
        return
    assert mb_hash(d) == h
    assert all(sorted(task["results"][f"fold_{k}"]["scores"]) == sorted(REG_METRICS) for k in range(5))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _start_study(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tui_ft", "matbench", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )



# --------------------------------------------------------------------------- the study, killed and continued


@pytest.mark.slow
def test_study_killed_during_fold_3_continues_with_folds_3_and_4(demo_preset, tui_ft_cli, held_run):
    p = demo_preset("st", epochs=2)
    hold = held_run("st-f3-")  # fold 3's run waits after its first last.pt (conftest.HeldRun)
    proc = _start_study(str(p), "--folds", "0-4", "--jobs", "1", env={**os.environ, **hold.env})
    try:  # three folds one after another on a possibly busy machine, then fold 3 is held
        rid, pid = hold.wait(lambda: proc.poll() is None)
        assert rid == _run_ids().get(3) and (Path("checkpoints") / rid / "last.pt").is_file()
        os.killpg(proc.pid, signal.SIGKILL)  # the study, and its run (in a session of its own): the
        os.kill(pid, signal.SIGKILL)         # machine went down, nothing stopped cleanly
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _run_ids()
    assert sorted(before) == [0, 1, 2, 3]
    done_before = {k: (Path("logs") / before[k] / "events.jsonl").read_bytes() for k in range(3)}

    r = tui_ft_cli("matbench", p, "--folds", "0-4", "--jobs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    after = _run_ids()
    assert {k: after[k] for k in range(4)} == before  # folds 0-2 kept, fold 3 continued under its id
    for k in range(3):  # not run again
        assert (Path("logs") / after[k] / "events.jsonl").read_bytes() == done_before[k]
    assert "folds 0, 1, 2 already finished" in r.stderr
    assert f"fold 3: continuing run {before[3]} from its last.pt" in r.stderr
    started = [e for e in read_events(Path("logs") / after[3] / "events.jsonl") if isinstance(e, RunStarted)]
    assert len(started) == 2  # the killed start and the resume
    _check_complete_study("st", r.stdout)

    r2 = tui_ft_cli("matbench", p, "--folds", "0-4")  # all done: nothing runs again
    assert r2.returncode == 0 and "folds 0, 1, 2, 3, 4 already finished" in r2.stderr
    assert _run_ids() == after


# --------------------------------------------------------------------------- plans


@pytest.mark.slow
def test_plan_study_sets_every_stage_fold(project, preset_text, tui_ft_cli):
    from tui_ft.core.orchestrate.plans import load_plan

    def stage(name: str) -> str:
        body = preset_text(name, epochs=1).replace("[", "[stage.").replace("fold = 0\n", "")
        return body

    plan = project / "presets" / "two.toml"
    plan.write_text('[plan]\nname = "two"\n\n[[stage]]\n' + stage("s1")
                    + '\n[[stage]]\ninit = "previous@best"\n' + stage("s2"), encoding="utf-8")
    r = tui_ft_cli("matbench", plan, "--folds", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    st = _study("two")
    rec = st["folds"]["2"]
    assert st["kind"] == "plan" and rec["status"] == "finished" and len(rec["run_ids"]) == 2
    fold_plan = load_plan(rec["file"])
    assert [s.preset.data.fold for s in fold_plan.stages] == [2, 2] and fold_plan.name == "two-f2"
    s1, s2 = rec["run_ids"]
    started = [e for e in read_events(Path("logs") / s2 / "events.jsonl") if isinstance(e, RunStarted)]
    assert started[0].parent == f"{s1}@best" and started[0].preset["data"]["fold"] == 2
    assert st["test_mae_mean"] == pytest.approx(_finished_mae(s2))  # the plan's result is its last stage


# --------------------------------------------------------------------------- submitit


@pytest.mark.slow
def test_slurm_executor_through_submitit_local(demo_preset, tui_ft_cli):
    pytest.importorskip("submitit")
    p = demo_preset("sts", epochs=1)
    r = tui_ft_cli("matbench", p, "--folds", "0-4", "--jobs", "2", "--executor", "slurm",
                   env={"TUI_FT_SUBMITIT_CLUSTER": "local"}, timeout=1200)  # 5 folds: 140 s alone, >300 s beside two loads
    assert r.returncode == 0, r.stdout + r.stderr
    st = _study("sts")
    assert st["executor"] == "slurm"
    assert all(st["folds"][str(k)].get("job_id") for k in range(5))
    assert sorted(Path("logs/.studies/sts/submitit").glob("*_submitted.pkl"))  # submitit's own job files
    _check_complete_study("sts", r.stdout)


@pytest.mark.slow
def test_submitit_preemption_requeues_and_resumes_from_last_pt(demo_preset, held_run, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from tui_ft.core.orchestrate.executors import RunTask, tui_ft_argv
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.config.presets import load_preset
    from tui_ft.core.config.dump import save_preset
    from tui_ft.core.library.runs import new_run_id, summarize

    paths = Paths.default()
    preset = load_preset(demo_preset("pre", epochs=6))
    file = paths.logs / ".studies" / "pre" / "fold0.toml"
    file.parent.mkdir(parents=True)
    save_preset(preset.with_changes({"run.name": "pre-f0"}), file)
    run_id = new_run_id("pre-f0", paths)
    task = RunTask(tui_ft_argv("--preset", str(file), "--plain", "--run-id", run_id), str(file.with_suffix(".log")),
                   run_id=run_id, root=str(paths.root), cwd=os.getcwd())
    hold = held_run(run_id, after_epoch=1)  # the run waits after epoch 1's last.pt (conftest.HeldRun)
    for k, v in hold.env.items():  # submitit's local controller, its job and the run inherit them
        monkeypatch.setenv(k, v)
    ex = submitit.AutoExecutor(folder=str(file.parent / "submitit"), cluster="local")
    ex.update_parameters(timeout_min=10)
    job = ex.submit(task)
    events = paths.run_log_dir(run_id) / "events.jsonl"
    hold.wait(lambda: not job.done() or pytest.fail(job.stderr() or "the job ended"), timeout=180)
    # what Slurm does before it preempts or times out a job: USR2 to the job's process (here the
    # local controller's child), whose submitit handler calls RunTask.checkpoint (SIGINT to the
    # run, delivered once the held save goes on) and requeues
    (task_pid,) = _children(job._process.pid)
    os.kill(task_pid, signal.SIGUSR2)
    hold.wait_signalled()  # the SIGINT of RunTask.checkpoint reached the run
    hold.release()
    result = job.result()
    assert result["returncode"] == 0 and result["run_id"] == run_id
    evs = list(read_events(events))
    kinds = [e.type for e in evs]
    assert kinds.count("run_started") == 2 and any(isinstance(e, RunInterrupted) for e in evs)
    assert kinds.index("run_interrupted") < len(kinds) - 1 - kinds[::-1].index("run_started")
    assert summarize(paths.run_log_dir(run_id)).status == "finished"
    log = file.with_suffix(".log").read_text()
    assert f"resume {run_id}" in log  # the requeued job continued the run from its last.pt
    assert "Requeued job" in job.stdout() + (job.stderr() or "")


# --------------------------------------------------------------------------- GPUs


@pytest.mark.cuda
@needs_cuda
def test_local_executor_one_fold_per_gpu(demo_preset, tui_ft_cli):
    p = demo_preset("stg", epochs=1)
    p.write_text(p.read_text().replace('device = "cpu"', 'device = "cuda"'))
    r = tui_ft_cli("matbench", p, "--folds", "0-1", "--gpus", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    for rid in _run_ids("stg").values():
        (ev,) = [e for e in read_events(Path("logs") / rid / "events.jsonl") if isinstance(e, RunStarted)]
        assert ev.device.startswith("cuda")


# --------------------------------------------------------------------------- a fold's run left live


def _hold_run_lock(root: Path, run_id: str, seconds: float) -> subprocess.Popen:
    """A process that holds logs/<run_id>/lock for ``seconds`` (as a fold's run orphaned by a
    killed study would), started once the lock is taken."""
    code = ("import sys, time; from pathlib import Path; from tui_ft.core.common.paths import Paths; "
            "from tui_ft.core.common.locks import RunLock; "
            "lock = RunLock(sys.argv[1], Paths(Path(sys.argv[2]))).acquire(); print('held', flush=True); "
            "time.sleep(float(sys.argv[3])); lock.release()")
    proc = subprocess.Popen([sys.executable, "-c", code, run_id, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_rerun_waits_for_a_folds_run_still_live_then_goes_on(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tui_ft.core.common.paths import Paths
    from tui_ft.core.orchestrate import study

    paths, said = Paths(tmp_path), []
    me = SimpleNamespace(paths=paths, say=said.append, axis=study.Study.axis, command=study.Study.command)
    assert study.Study._wait_for_live_run(me, 3, "st-f3-20260101-000000-aaaa") is False  # no lock: no wait
    proc = _hold_run_lock(tmp_path, "st-f3-20260101-000000-aaaa", 1.0)
    try:
        assert study.Study._wait_for_live_run(me, 3, "st-f3-20260101-000000-aaaa") is True
        assert proc.wait(timeout=60) == 0  # it returned once the holder had let go
        assert len(said) == 1 and "still running" in said[0] and f"pid {proc.pid}" in said[0]
        monkeypatch.setattr(study, "LIVE_FOLD_WAIT_S", 0.5)
        proc = _hold_run_lock(tmp_path, "st-f3-20260101-000000-aaaa", 60.0)
        with pytest.raises(StudyError, match=rf"fold 3: .* still running \(pid {proc.pid}\) after 0.5 s; stop it"):
            study.Study._wait_for_live_run(me, 3, "st-f3-20260101-000000-aaaa")
    finally:
        proc.kill()
        proc.wait()
