"""A loss that becomes NaN or inf ends the run cleanly.

``tui_ft.core.engine._loss_fn`` is patched so that the loss turns NaN/inf from a
given epoch on; the real CLI (``tui_ft.cli.main``, in-process) must then exit 1
with one clear ``run ... failed: ...`` line and no traceback, the events end in
``run_failed`` naming the epoch, and ``best.pt`` (from before the divergence)
stays listed, loadable and usable by ``tui-ft eval``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tui_ft import cli
from tui_ft.core import engine
from tui_ft.core.demo import build_demo_dataset
from tui_ft.core.events import EpochEnd, RunFailed, RunFinished, read_events
from tui_ft.core.library import Library, load_checkpoint
from tui_ft.core.paths import Paths
from tui_ft.core.runs import summarize


@pytest.mark.parametrize("bad, fail_at", [(math.nan, 2), (math.inf, 1)], ids=["nan-epoch2", "inf-epoch1"])
def test_nonfinite_loss_fails_run_keeps_best(bad, fail_at, project, demo_preset, monkeypatch, capsys, fault_report):
    real = engine._loss_fn
    epochs_seen = []

    def poisoned_loss_fn(name):
        fn = real(name)
        epochs_seen.append(name)  # the engine asks for the loss once per training epoch
        if len(epochs_seen) < fail_at:
            return fn
        return lambda pred, target: fn(pred, target) + bad

    monkeypatch.setattr(engine, "_loss_fn", poisoned_loss_fn)
    preset = demo_preset("diverge", epochs=4, batch_size=16)
    rc = cli.main(["--preset", str(preset), "--plain"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert "Traceback" not in out + err
    failed_lines = [line for line in err.splitlines() if "failed" in line]
    assert len(failed_lines) == 1, err
    word = "nan" if math.isnan(bad) else "inf"
    assert "diverged" in failed_lines[0] and word in failed_lines[0] and f"epoch {fail_at}" in failed_lines[0]
    assert "best checkpoint" in failed_lines[0]

    paths = Paths(project)
    (run_dir,) = list(paths.logs.iterdir())
    run_id = run_dir.name
    events = read_events(run_dir / "events.jsonl")
    assert not any(isinstance(e, RunFinished) for e in events)
    last = events[-1]
    assert isinstance(last, RunFailed) and last.epoch == fail_at and "diverged" in last.message
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == list(range(fail_at))
    s = summarize(run_dir)
    assert s.status == "failed" and "diverged" in s.message

    best = Library(paths).get(run_id, "best")
    assert best is not None
    payload = load_checkpoint(best.path)
    assert payload["meta"]["epoch"] == best.epoch <= fail_at - 1
    assert all(torch.isfinite(t).all() for t in payload["model_state"].values() if t.is_floating_point())
    last_pt = load_checkpoint(paths.run_ckpt_dir(run_id) / "last.pt")
    assert last_pt["meta"]["epoch"] == fail_at - 1
    fault_report["divergence: checkpoints verified"] += 2

    # the kept best checkpoint is usable (on 16 demo structures: eval runs the whole network)
    demo = build_demo_dataset()
    data = project / "sixteen.json"
    data.write_text(json.dumps({"index": demo["index"][:16], "columns": demo["columns"], "data": demo["data"][:16]}))
    assert cli.main(["eval", f"{run_id}@best", "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    mae = float(out.split()[1])
    assert math.isfinite(mae) and mae < 5, out
    fault_report["divergence: runs failed cleanly"] += 1
