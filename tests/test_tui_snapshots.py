"""Snapshots of the dashboard's screens over a fixed, fake run history.

The history (events, predictions, checkpoint sidecars) is written with fixed
run ids and times, the clock zone is UTC and the header shows a fixed
folder, so the SVGs are the same on every machine. Update them with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at them.
No training happens here.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from tui_ft.core.common.events import (
    CheckpointSaved,
    EpochEnd,
    EventWriter,
    Message,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from textual.widgets import Input

from tui_ft.core.library.ckptfile import save_checkpoint
from tui_ft.tui.app import TuiFtApp

T0 = 1735732800.0  # 2025-01-01 12:00:00 UTC

DEMO = """\
[run]
name = "demo"
description = "Smoke test on the built-in demo data (synthetic, not DFT data)."

[data]
source = "demo"
target = "e_form"
fold = 0
fraction = 1.0

[finetune]
mode = "head"

[optim]
lr = 1e-3

[train]
epochs = 6
batch_size = 8
device = "cpu"
"""

FULL = """\
[run]
name = "demo_full"
description = "Stage 2: all layers from demo@best at a small lr."

[data]
source = "demo"

[model]
init = "demo@best"

[finetune]
mode = "full"

[optim]
lr = 1e-4

[train]
epochs = 4
batch_size = 16
device = "cpu"
"""

BROKEN = """\
[run]
name = "broken"

[data]
source = "demo"

[finetune]
mode = "head"

[optim]
lr = "fast"

[train]
epochs = 3
"""


def preset_dict(name: str, mode: str, lr: float, epochs: int, init: str = "") -> dict:
    model = {"init": init} if init else {"pretrained": "0.3.0", "init": ""}
    return {
        "run": {"name": name, "description": ""},
        "data": {"source": "demo", "target": "e_form", "fold": 0, "fraction": 1.0, "val_fraction": 0.1, "seed": 0, "test_limit": 0},
        "model": model,
        "finetune": {"mode": mode, "refit_atomref": not init, "lr_factors": {}, "unfreeze_every": 0},
        "optim": {"optimizer": "adam", "lr": lr, "weight_decay": 0.0, "scheduler": "none"},
        "train": {"epochs": epochs, "batch_size": 8, "patience": 0, "device": "cpu", "seed": 0, "loss": "mse"},
    }


def fake_run(
    root: Path,
    run_id: str,
    preset: str,
    start: float,
    vals: list[float],
    trains: list[float | None],
    *,
    end: str = "finished",
    parent: str | None = None,
    mode: str = "head",
    lr: float = 1e-3,
) -> None:
    """Write a run's events (and predictions and checkpoint sidecars when it finished)."""
    log_dir = root / "logs" / run_id
    ckpt_dir = root / "checkpoints" / run_id
    pd = preset_dict(preset, mode, lr, len(vals) - 1 if end == "finished" else 10, parent or "")
    t = start
    best, best_ep = math.inf, 0
    with EventWriter(log_dir / "events.jsonl") as w:
        w.emit(Message(run_id, text="reading data/demo_e_form.json.gz", time=t))
        w.emit(Message(run_id, text="graphs: 240 from cache, 0 built", time=t + 1))
        w.emit(
            RunStarted(
                run_id, preset_name=preset, preset=pd, device="cpu", n_train=173, n_val=19, n_test=48,
                parent=parent, pid=0, epochs=pd["train"]["epochs"], time=t + 2,
            )
        )
        t += 2
        for ep, (v, tr) in enumerate(zip(vals, trains)):
            t += 7.5
            if v < best:
                best, best_ep = v, ep
            w.emit(EpochEnd(run_id, epoch=ep, train_mae=tr, val_mae=v, lr=lr, seconds=7.5, best_val_mae=best, best_epoch=ep if v <= best else best_ep, time=t))
            w.emit(CheckpointSaved(run_id, kind="best", path=str(ckpt_dir / "best.pt"), epoch=best_ep, val_mae=best, time=t))
        if end == "finished":
            pred_path = log_dir / "test_predictions.csv"
            rows = ["id,true,pred"]
            for i in range(48):
                true = -3.5 + 4.5 * ((i * 37) % 48) / 47
                err = 0.35 * math.sin(i * 1.7) + 0.08 * math.cos(i * 0.3)
                rows.append(f"demo-{i:04d},{true:.6f},{true + err:.6f}")
            pred_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
            w.emit(RunFinished(run_id, test_mae=best * 0.93, best_epoch=best_ep, best_val_mae=best, seconds=t - start, n_test=48, predictions=str(pred_path), time=t + 1))
        elif end == "failed":
            w.emit(Message(run_id, text="loss is not finite (nan) at epoch 3", level="error", time=t + 1))
            w.emit(RunFailed(run_id, message="loss became NaN at epoch 3: try a smaller optim.lr", epoch=3, time=t + 1))
        else:
            w.emit(RunInterrupted(run_id, epoch=len(vals) - 1, message="interrupted by the user; last.pt saved", time=t + 1))
    if end in ("finished", "interrupted"):
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        kinds = ("best", "last") if end == "finished" else ("last",)
        for kind in kinds:
            meta = {
                "run_id": run_id, "kind": kind, "preset_name": preset, "preset": pd, "mode": mode,
                "epoch": best_ep if kind == "best" else len(vals) - 1, "val_mae": best,
                "test_mae": best * 0.93 if end == "finished" else None, "parent": parent,
                "finished": end == "finished", "status": end, "time": t + 1, "device": "cpu",
            }
            # a tiny real checkpoint: the library lists what the .pt holds (its sidecar is checked against it)
            save_checkpoint(ckpt_dir / f"{kind}.pt", {"model_state": {"w": torch.zeros(1)}, "model_args": {}, "meta": meta})


def write_history(root: Path) -> None:
    (root / "presets").mkdir(parents=True)
    (root / "presets" / "demo.toml").write_text(DEMO, encoding="utf-8")
    (root / "presets" / "demo_full.toml").write_text(FULL, encoding="utf-8")
    (root / "presets" / "broken.toml").write_text(BROKEN, encoding="utf-8")
    demo_vals = [0.5772, 0.5336, 0.5070, 0.4856, 0.4701, 0.4633, 0.4598]
    demo_train = [None, 0.2612, 0.2448, 0.2393, 0.2310, 0.2275, 0.2241]
    fake_run(root, "demo-20250101-120000-a1b2", "demo", T0, demo_vals, demo_train)
    fake_run(
        root, "demo_full-20250101-121500-c3d4", "demo_full", T0 + 900,
        [0.4598, 0.4410, 0.4302, 0.4251, 0.4239], [None, 0.2100, 0.1950, 0.1880, 0.1843],
        parent="demo-20250101-120000-a1b2@best", mode="full", lr=1e-4,
    )
    fake_run(root, "demo-20250101-123000-e5f6", "demo", T0 + 1800, [0.5772, 0.6120, 0.9300], [None, 0.3100, 0.5200], end="failed", lr=5e-1)
    fake_run(root, "demo-20250101-124500-a7b8", "demo", T0 + 2700, [0.5772, 0.5401, 0.5150, 0.4990], [None, 0.27, 0.25, 0.24], end="interrupted")


@pytest.fixture
def snap_home(tmp_path, monkeypatch):
    root = tmp_path / "project"
    write_history(root)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.chdir(root)
    # the system pane shows this machine's load: a fixed sample keeps the pictures the same everywhere
    from tui_ft.core.common import system

    fixed = system.SystemSample(cpu_percent=12.0, n_cpus=2, load1=0.42, mem_used_bytes=3 * system.GiB,
                                mem_total_bytes=16 * system.GiB, gpu_note="none found (NVML: driver not loaded)")
    monkeypatch.setattr(system.SystemSampler, "sample", lambda self, runs: fixed)
    time.tzset()
    yield root
    monkeypatch.undo()
    time.tzset()


async def ready(pilot) -> TuiFtApp:
    app = pilot.app
    for _ in range(200):
        if app.scans >= 1 and app.system_samples >= 1:
            break
        await pilot.pause(0.02)
    app.sub_title = "~/project"
    await pilot.pause()
    return app


def runs_tab(run_id: str, overlay: str | None = None, chart: int = 0):
    async def before(pilot):
        app = await ready(pilot)
        if overlay:
            app.show_run(overlay)
            await pilot.pause()
            app.runs_pane.action_toggle_overlay()
        app.show_run(run_id)
        await pilot.pause()
        for _ in range(chart):
            app.runs_pane.action_next_chart()
        # let the log panel wrap and scroll to its end before the picture
        await pilot.pause(0.2)
        await pilot.pause()

    return before


def test_snapshot_presets(snap_home, snap_compare):
    async def before(pilot):
        await ready(pilot)

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_presets_broken(snap_home, snap_compare):
    """broken.toml selected (moved onto from another row) and launched: its error is shown, nothing starts.

    (The plain presets snapshot also has broken.toml selected: it sorts first.)"""
    async def before(pilot):
        app = await ready(pilot)
        app.presets_pane.select("demo.toml")
        await pilot.pause()
        assert app.presets_pane.selected.name == "demo"
        app.presets_pane.select("broken.toml")
        await pilot.pause()
        entry = app.presets_pane.selected
        assert entry.path.name == "broken.toml" and not entry.ok
        await pilot.press("l")
        await pilot.pause()
        assert not any(st.launched for st in app.runs.values())

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_presets_valid_selected(snap_home, snap_compare):
    """A valid preset selected: its description, settings and TOML instead of an error."""
    async def before(pilot):
        app = await ready(pilot)
        app.presets_pane.select("demo_full.toml")
        await pilot.pause()
        entry = app.presets_pane.selected
        assert entry.path.name == "demo_full.toml" and entry.ok

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_runs_curve_with_overlay(snap_home, snap_compare):
    before = runs_tab("demo_full-20250101-121500-c3d4", overlay="demo-20250101-120000-a1b2")
    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_runs_log_scale(snap_home, snap_compare):
    before = runs_tab("demo-20250101-120000-a1b2")

    async def log_before(pilot):
        await before(pilot)
        pilot.app.runs_pane.log_scale = True
        await pilot.pause()

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=log_before)


def test_snapshot_runs_parity(snap_home, snap_compare):
    before = runs_tab("demo-20250101-120000-a1b2", chart=1)
    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_runs_histogram(snap_home, snap_compare):
    before = runs_tab("demo-20250101-120000-a1b2", chart=2)
    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_runs_failed_small_terminal(snap_home, snap_compare):
    before = runs_tab("demo-20250101-123000-e5f6")
    assert snap_compare(TuiFtApp(), terminal_size=(80, 24), run_before=before)


def test_snapshot_library_lineage(snap_home, snap_compare):
    async def before(pilot):
        app = await ready(pilot)
        app.action_show_tab("library")
        await pilot.pause()
        app.library_pane.select("demo_full-20250101-121500-c3d4@best")
        await pilot.pause()

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_preset_form(snap_home, snap_compare):
    async def before(pilot):
        app = await ready(pilot)
        app.presets_pane.select("demo.toml")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        for field in app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor made this picture depend on timing
        app.screen.query_one("#f-lr").value = "-1"
        await pilot.pause()

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)


def test_snapshot_help(snap_home, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(TuiFtApp(), terminal_size=(120, 40), run_before=before)
