"""One run across two CPU processes (torchrun, gloo) equals one process with the same global batch.

Each test starts the real CLI under ``python -m torch.distributed.run --standalone
--nproc_per_node 2`` and compares its events with a one-process run of the same
preset: every epoch's validation MAE (and the training MAE), and the test MAE,
within 1e-5. Only rank 0 writes: one events.jsonl, one set of checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOL = 1e-5
ENV = {"OMP_NUM_THREADS": "1", "TUI_FT_CPU_WORKERS": "1"}


def torchrun(*args: str, nproc: int = 2, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV}, **kw,
    )


def events(project: Path, run_id: str) -> list[dict]:
    with open(project / "logs" / run_id / "events.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def curve(evs: list[dict]) -> dict[int, tuple[float, float | None]]:
    return {e["epoch"]: (e["val_mae"], e["train_mae"]) for e in evs if e["type"] == "epoch_end"}


def finished(evs: list[dict]) -> dict:
    (fin,) = [e for e in evs if e["type"] == "run_finished"]
    return fin


def assert_same_run(one: list[dict], ddp: list[dict]) -> None:
    c1, c2 = curve(one), curve(ddp)
    assert sorted(c1) == sorted(c2) and len(c1) >= 3
    for ep in c1:
        assert c2[ep][0] == pytest.approx(c1[ep][0], abs=TOL), f"epoch {ep} val MAE"
        if c1[ep][1] is not None:
            assert c2[ep][1] == pytest.approx(c1[ep][1], abs=TOL), f"epoch {ep} train MAE"
    f1, f2 = finished(one), finished(ddp)
    assert f2["test_mae"] == pytest.approx(f1["test_mae"], abs=TOL)
    assert (f2["best_epoch"], f2["n_test"]) == (f1["best_epoch"], f1["n_test"])


def run_pair(project: Path, tui_ft_cli, preset: Path, tag: str) -> tuple[list[dict], list[dict], subprocess.CompletedProcess]:
    one = tui_ft_cli("--preset", preset, "--plain", "--run-id", f"{tag}-one", env=ENV)
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = torchrun("-m", "tui_ft", "--preset", str(preset), "--plain", "--run-id", f"{tag}-ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return events(project, f"{tag}-one"), events(project, f"{tag}-ddp"), ddp


def test_ddp_head_mode_equals_one_process(project, demo_preset, tui_ft_cli):
    """Head mode (features cached), batch 8 on 2 ranks: the last global batch of 173
    training rows has 5 structures, so the ranks hold unequal shares."""
    preset = demo_preset("ddphead", epochs=3, batch_size=8)
    one, ddp, proc = run_pair(project, tui_ft_cli, preset, "head")
    assert_same_run(one, ddp)
    started = [e for e in ddp if e["type"] == "run_started"]
    assert len(started) == 1  # rank 1 wrote no events
    assert any("DDP: 2 processes (gloo)" in e.get("text", "") for e in ddp if e["type"] == "message")
    # one run folder and one set of checkpoints: rank 1 allocated nothing
    assert sorted(p.name for p in (project / "logs").iterdir()) == ["head-ddp", "head-one"]
    assert {p.name for p in (project / "checkpoints" / "head-ddp").glob("*.pt")} == {"best.pt", "last.pt"}
    # the gathered test predictions cover every test structure once
    rows = (project / "logs" / "head-ddp" / "test_predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == finished(ddp)["n_test"] == len({r.split(",")[0] for r in rows})
    assert proc.stdout.count("test_mae") == 1  # rank 1 printed nothing


FULL_PRESET = """\
[run]
name = "ddpfull"
description = "DDP test: full mode on a few demo rows"

[data]
source = "demo"
fraction = 0.2
test_limit = 8

[finetune]
mode = "full"

[optim]
lr = 1e-4

[train]
epochs = 2
batch_size = 6
device = "cpu"
"""


@pytest.mark.slow
def test_ddp_full_mode_equals_one_process(project, tui_ft_cli):
    preset = project / "presets" / "ddpfull.toml"
    preset.write_text(FULL_PRESET, encoding="utf-8")
    one, ddp, _ = run_pair(project, tui_ft_cli, preset, "full")
    c1 = curve(one)
    assert c1[2][0] != c1[0][0]  # the backbone did train
    assert_same_run(one, ddp)


FAIL_ON_RANK_1 = """\
import os, sys
from tui_ft.core.train import engine
from tui_ft.cli import main

real = engine.Trainer._train_epoch

def failing(self, epoch):
    if epoch == 2 and os.environ.get("RANK") == "1":
        raise RuntimeError("injected failure on this rank")
    return real(self, epoch)

engine.Trainer._train_epoch = failing
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ddp_failing_rank_fails_the_run_with_one_message(project, demo_preset, tmp_path):
    preset = demo_preset("ddpfail", epochs=3, batch_size=8)
    script = tmp_path / "fail_rank1.py"
    script.write_text(FAIL_ON_RANK_1, encoding="utf-8")
    proc = torchrun(str(script), "--preset", str(preset), "--plain", "--run-id", "fail")
    assert proc.returncode != 0
    evs = events(project, "fail")
    failed = [e for e in evs if e["type"] == "run_failed"]
    assert len(failed) == 1, evs[-3:]
    assert "rank 1" in failed[0]["message"] and "injected failure on this rank" in failed[0]["message"]
    assert not [e for e in evs if e["type"] in ("run_finished", "run_interrupted")]
    assert max(curve(evs)) == 1  # epoch 1 was the last to end


@pytest.mark.slow
def test_ddp_interrupted_run_resumes_to_the_same_result(project, demo_preset, tui_ft_cli):
    preset = demo_preset("ddpresume", epochs=4, batch_size=8)
    one = tui_ft_cli("--preset", preset, "--plain", "--run-id", "r-one", env=ENV)
    assert one.returncode == 0, one.stderr[-3000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tui_ft", "--preset", str(preset), "--plain", "--run-id", "r-ddp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV},
    )
    log = project / "logs" / "r-ddp" / "events.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if log.is_file() and 1 in curve(events(project, "r-ddp")):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the DDP run never finished epoch 1")
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    evs = events(project, "r-ddp")
    assert [e["type"] for e in evs if e["type"].startswith("run_")][-1] == "run_interrupted"
    assert "run_finished" not in {e["type"] for e in evs}
    res = torchrun("-m", "tui_ft", "resume", "r-ddp", "--plain")
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = events(project, "r-ddp")
    # the curve after resume: the last value logged for each epoch
    assert_same_run(events(project, "r-one"), ddp)


POTENTIAL_PRESET = """\
[run]
name = "ddppot"
description = "DDP test: a potential on a few EMT demo frames"

[data]
source = "demo_potential"
split = "random"
fraction = 0.25
test_limit = 7

[task]
kind = "potential"

[finetune]
mode = "full"

[optim]
lr = 3e-4

[train]
epochs = 2
batch_size = 5
device = "cpu"
"""


@pytest.mark.slow
def test_ddp_potential_equals_one_process(project, tui_ft_cli):
    """A potential (energies, forces, stresses) on 2 ranks, batch 5 (odd: the ranks hold unequal
    shares, and the last batch may leave one rank nothing): every epoch's named metrics, the test
    metrics and the per-atom test forces equal one process's; rank 0 alone writes."""
    preset = project / "presets" / "ddppot.toml"
    preset.write_text(POTENTIAL_PRESET, encoding="utf-8")
    one, ddp, proc = run_pair(project, tui_ft_cli, preset, "pot")
    m1 = {e["epoch"]: e["metrics"] for e in one if e["type"] == "epoch_end"}
    m2 = {e["epoch"]: e["metrics"] for e in ddp if e["type"] == "epoch_end"}
    assert sorted(m1) == sorted(m2) == [0, 1, 2]
    assert m1[2]["val_force_mae"] != m1[0]["val_force_mae"]  # it trained
    for ep in m1:
        assert set(m1[ep]) == set(m2[ep])
        for k, v in m1[ep].items():
            assert m2[ep][k] == pytest.approx(v, rel=1e-4), f"epoch {ep} {k}"
    f1, f2 = finished(one), finished(ddp)
    assert (f2["best_epoch"], f2["n_test"]) == (f1["best_epoch"], f1["n_test"]) == (f1["best_epoch"], 7)
    for k, v in f1["test_metrics"].items():
        assert f2["test_metrics"][k] == pytest.approx(v, rel=1e-4), k
    forces = [(project / "logs" / r / "test_forces.csv").read_text().splitlines() for r in ("pot-one", "pot-ddp")]
    assert len(forces[0]) == len(forces[1]) > 7 and [x.split(",")[:2] for x in forces[0]] == \
        [x.split(",")[:2] for x in forces[1]]  # the same atoms of the same frames, in the same order
    assert sorted(p.name for p in (project / "logs").iterdir()) == ["pot-ddp", "pot-one"]
    assert proc.stdout.count("test loss") == 1  # rank 1 printed nothing
    assert any("DDP: 2 processes (gloo)" in e.get("text", "") for e in ddp if e["type"] == "message")
