"""The recipe fields under DDP (issue 27): EMA, SWA, warm-up and clipping on two torchrun
ranks give the run of one process with the same global batch (every epoch's metrics,
the test MAE, the SWA metrics), as tests/test_ddp.py checks for plain runs."""

from __future__ import annotations

import pytest

from test_ddp import ENV, TOL, assert_same_run, events, finished, torchrun  # noqa: F401 - tests/ is on the path

pytestmark = pytest.mark.slow

RECIPE = """
[train]
epochs = 4
batch_size = 8
seed = 0
device = "cpu"
ema = 0.8
swa_start = 3
swa_lr = 5e-4
"""


def test_ddp_recipe_equals_one_process(project, demo_preset, tui_ft_cli):
    path = demo_preset("ddprecipe", epochs=4, batch_size=8)
    text = path.read_text(encoding="utf-8")
    head, _, _ = text.partition("[train]")
    head = head.replace('lr = 0.001', 'lr = 0.001\nwarmup_epochs = 1\nclip_grad_norm = 0.05')
    path.write_text(head + RECIPE.lstrip(), encoding="utf-8")
    one = tui_ft_cli("--preset", path, "--plain", "--run-id", "recipe-one", env=ENV)
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = torchrun("-m", "tui_ft", "--preset", str(path), "--plain", "--run-id", "recipe-ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    e1, e2 = events(project, "recipe-one"), events(project, "recipe-ddp")
    assert_same_run(e1, e2)
    m1 = {e["epoch"]: e["metrics"] for e in e1 if e["type"] == "epoch_end"}
    m2 = {e["epoch"]: e["metrics"] for e in e2 if e["type"] == "epoch_end"}
    for ep in m1:
        for k, v in m1[ep].items():  # train_grad_norm included
            assert m2[ep][k] == pytest.approx(v, abs=TOL), (ep, k)
    f1, f2 = finished(e1), finished(e2)
    assert "swa_test_mae" in f1["test_metrics"]
    for k, v in f1["test_metrics"].items():
        assert f2["test_metrics"][k] == pytest.approx(v, abs=TOL), k
    assert {p.name for p in (project / "checkpoints" / "recipe-ddp").glob("*.pt")} == {"best.pt", "last.pt", "swa.pt"}
