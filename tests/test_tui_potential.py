"""The dashboard and the library for a potential run (issue 24, item 5), no training.

A potential run is written as its training process writes it (``events.jsonl`` through
the event classes, ``test_predictions.csv``, ``test_forces.csv``, a checkpoint) into the
fake history of the snapshot tests. The pilot selects it, switches the learning curve's
metric with ``m``, opens the force parity plot and the error histograms, and the Library
shows the test MAE of each target; the CSV readers skip a bad row (said once), cap what
they read and refuse what is not a regular file.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import pilot_ready as ready
from test_tui_snapshots import T0, preset_dict, write_history

from tui_ft.core.common.events import (
    CheckpointSaved,
    EpochEnd,
    EventWriter,
    RunFinished,
    RunStarted,
)
from tui_ft.core.library.ckptfile import save_checkpoint
from tui_ft.tui.app import TuiFtApp
from tui_ft.tui.charts import (
    PredictionsError,
    default_metric,
    metric_options,
    series_from_history,
)
from tui_ft.tui.plots import CurvePlot, ErrorPlot, ParityPlot
from tui_ft.tui.potential_results import (
    read_energies,
    read_forces,
    read_potential_results,
)
from tui_ft.tui.screenshots import screen_text

POT = "demo_potential-20250101-130000-9f9f"
PROP = "demo-20250101-120000-a1b2"
SIZES = [(120, 40), (80, 24)]
N_FRAMES, N_ATOMS = 12, 5


def val_metrics(ep: int) -> dict[str, float]:
    d = 1.0 / (1 + ep)
    return {"val_loss": 0.2 * d, "val_energy_mae": 30.0 * d + 1, "val_force_mae": 120.0 * d + 10,
            "val_stress_mae": 0.8 * d + 0.05}


def train_metrics(ep: int) -> dict[str, float]:
    d = 1.0 / (1 + ep)
    return {"train_loss": 0.15 * d, "train_energy_mae": 25.0 * d, "train_force_mae": 100.0 * d + 5,
            "train_stress_mae": 0.6 * d + 0.04}


def force_rows(n_frames: int = N_FRAMES, n_atoms: int = N_ATOMS) -> list[list[float]]:
    """(fx_true, fy_true, fz_true, fx_pred, fy_pred, fz_pred) per atom, eV/Å."""
    rows = []
    for i in range(n_frames * n_atoms):
        t = [math.sin(0.7 * i + k) for k in range(3)]
        rows.append(t + [x + 0.05 * math.cos(1.3 * i + k) for k, x in enumerate(t)])
    return rows


def write_potential_run(root: Path, run_id: str = POT, *, forces_text: str | None = None, epochs: int = 5) -> None:
    log_dir = root / "logs" / run_id
    ckpt_dir = root / "checkpoints" / run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    pd = preset_dict("demo_potential", "full", 1e-4, epochs - 1)
    t = T0 + 3600
    e_rows = ["id,n_atoms,energy_true_eV_per_atom,energy_pred_eV_per_atom,force_mae_eV_per_A,stress_mae_GPa"]
    for i in range(N_FRAMES):
        true = -4.0 + 0.1 * math.sin(i)
        e_rows.append(f"frame-{i:03d},{N_ATOMS},{true:.6f},{true + 0.01 * math.cos(2 * i):.6f},0.040000,0.120000")
    (log_dir / "test_predictions.csv").write_text("\n".join(e_rows) + "\n", encoding="utf-8")
    if forces_text is None:
        lines = ["id,atom,fx_true,fy_true,fz_true,fx_pred,fy_pred,fz_pred"]
        for i, r in enumerate(force_rows()):
            lines.append(f"frame-{i // N_ATOMS:03d},{i % N_ATOMS}," + ",".join(f"{x:.6f}" for x in r))
        forces_text = "\n".join(lines) + "\n"
    (log_dir / "test_forces.csv").write_text(forces_text, encoding="utf-8")
    best = math.inf
    with EventWriter(log_dir / "events.jsonl") as w:
        w.emit(RunStarted(run_id, preset_name="demo_potential", preset=pd, device="cpu", n_train=40, n_val=8,
                          n_test=N_FRAMES, pid=0, epochs=epochs - 1, unit="", time=t))
        for ep in range(epochs):
            t += 5
            m = val_metrics(ep) | (train_metrics(ep) if ep else {})
            best = min(best, m["val_loss"])
            w.emit(EpochEnd(run_id, epoch=ep, train_mae=m.get("train_loss"), val_mae=m["val_loss"], lr=1e-4,
                            seconds=5.0, best_val_mae=best, best_epoch=ep, unit="", metrics=m, time=t))
            w.emit(CheckpointSaved(run_id, kind="best", path=str(ckpt_dir / "best.pt"), epoch=ep, val_mae=best, time=t))
        test = {"test_loss": 0.05, "test_energy_mae": 7.5, "test_force_mae": 41.2, "test_stress_mae": 0.123}
        w.emit(RunFinished(run_id, test_mae=test["test_loss"], best_epoch=epochs - 1, best_val_mae=best, seconds=30.0,
                           n_test=N_FRAMES, predictions=str(log_dir / "test_predictions.csv"), unit="",
                           test_metrics=test, time=t + 1))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    meta = {"run_id": run_id, "kind": "best", "preset_name": "demo_potential", "preset": pd, "mode": "full",
            "epoch": epochs - 1, "val_mae": best, "test_mae": 0.05, "parent": None, "finished": True,
            "status": "finished", "time": t + 1, "device": "cpu"}
    save_checkpoint(ckpt_dir / "best.pt", {"model_state": {"w": torch.zeros(1)}, "model_args": {}, "meta": meta})


@pytest.fixture
def hist(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    write_history(root)
    write_potential_run(root)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.chdir(root)
    time.tzset()
    yield root
    monkeypatch.undo()
    time.tzset()


def _history(root: Path, run_id: str):
    from tui_ft.core.common.events import read_events

    return [e for e in read_events(root / "logs" / run_id / "events.jsonl") if isinstance(e, EpochEnd)]


# --------------------------------------------------------------------------- pure parts


def test_metric_options_and_defaults(hist):
    pot, prop = _history(hist, POT), _history(hist, PROP)
    assert metric_options(pot) == ["loss", "energy_mae", "force_mae", "stress_mae"]
    assert default_metric(metric_options(pot)) == "force_mae"
    assert metric_options(prop) == ["mae"] and default_metric(["mae"]) is None  # a property: val_mae, as before
    assert default_metric(["loss", "energy_mae"]) == "loss"  # a potential without forces
    s = series_from_history(POT, pot, "stress_mae")
    assert s.val == [val_metrics(ep)["val_stress_mae"] for ep in range(5)]
    assert s.train_epochs == [1, 2, 3, 4] and s.unit == "GPa"


def test_readers_units_stats_and_sampling(hist):
    log_dir = hist / "logs" / POT
    energy, errors, problem = read_energies(log_dir / "test_predictions.csv")
    assert problem is None and len(energy) == N_FRAMES and energy.unit == "eV/atom" and errors.unit == "meV/atom"
    e_errs = [1000 * (p - t) for t, p in zip(energy.true, energy.pred)]
    assert [p - t for t, p in zip(errors.true, errors.pred)] == pytest.approx(e_errs)
    mae_e = sum(abs(e) for e in e_errs) / len(e_errs)
    assert f"MAE {mae_e:.3g} meV/atom" in energy.caption

    rows = force_rows()
    comps = [r[3 + k] - r[k] for r in rows for k in range(3)]
    mae_f = 1000 * sum(abs(c) for c in comps) / len(comps)
    forces, f_err, problem = read_forces(log_dir / "test_forces.csv", max_points=30)
    assert problem is None and forces.unit == "eV/Å" and f_err.unit == "meV/Å"
    assert len(forces) == 30 < len(comps)  # sampled: whole atoms, 3 components each
    # the caption's statistics are over every component, not the sample
    assert f"n={len(comps)}  (30 shown)" in forces.caption and f"MAE {mae_f:.3g} meV/Å" in forces.caption
    # the sample is the file's own pairs, the same on each read
    pairs = {(round(r[k], 6), round(r[3 + k], 6)) for r in rows for k in range(3)}
    assert all((round(t, 6), round(p, 6)) in pairs for t, p in zip(forces.true, forces.pred))
    again, _, _ = read_forces(log_dir / "test_forces.csv", max_points=30)
    assert again.true == forces.true
    res = read_potential_results(log_dir, str(log_dir / "test_predictions.csv"))
    assert res.energy is not None and res.forces is not None and not res.problems


def test_readers_skip_a_bad_row_cap_the_size_and_refuse_what_is_not_a_file(tmp_path):
    path = tmp_path / "test_forces.csv"
    good = "frame-000,0,0.1,0.2,0.3,0.11,0.19,0.32"
    path.write_text("id,atom,fx_true,fy_true,fz_true,fx_pred,fy_pred,fz_pred\n" + good + "\n"
                    "frame-000,1,0.1,abc,0.3,0.1,0.2,0.3\n" + "frame-000,2,0.1\n" + "frame-000,3,nan,0,0,0,0,0\n" + good + "\n",
                    encoding="utf-8")
    forces, _, problem = read_forces(path)
    assert len(forces) == 6 and forces.skipped == 3
    assert problem.startswith(f"{path}: 3 bad row(s) skipped (first: line 3: fy_true 'abc' is not a finite number")
    assert "3 bad row(s) skipped" in forces.caption

    # a file over the cap: its first whole lines only, and the problem line says so
    big = tmp_path / "big" / "test_forces.csv"
    big.parent.mkdir()
    big.write_text("id,atom,fx_true,fy_true,fz_true,fx_pred,fy_pred,fz_pred\n" + (good + "\n") * 2000, encoding="utf-8")
    capped, _, problem = read_forces(big, cap=4096)
    assert 0 < len(capped) // 3 < 2000 and capped.skipped == 0  # no torn last row
    assert "read" in problem and "MiB" in problem

    missing = tmp_path / "none" / "test_predictions.csv"
    with pytest.raises(PredictionsError, match="not written"):
        read_energies(missing)
    with pytest.raises(PredictionsError, match="not a regular file"):
        read_energies(tmp_path)  # a folder
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(PredictionsError, match="not a regular file"):  # opened without blocking
        read_forces(fifo)
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("id,true,pred\nx,1,2\n", encoding="utf-8")
    with pytest.raises(PredictionsError, match=r"h.csv:1: no column energy_true_eV_per_atom"):
        read_energies(bad_header)


# --------------------------------------------------------------------------- the dashboard


def footer_keys(app) -> str:
    return screen_text(app).rstrip("\n").splitlines()[-1]


def tab_line(app) -> str:
    return next(ln for ln in screen_text(app).splitlines() if "Curve" in ln or "Learning curve" in ln)


@pytest.mark.parametrize("size", SIZES)
async def test_metric_selector_force_parity_and_histograms(hist, size):
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        pane = app.runs_pane
        curve = app.query_one("#curve", CurvePlot)
        await pilot.press("2")  # the Runs tab, its table focused: its keys in the footer
        await pilot.pause(0.2)
        app.show_run(POT)
        await pilot.pause(0.3)
        # the default for a potential: validation (and training) force MAE
        assert pane.curve_metric() == "force_mae"
        assert curve.data[POT]["val"] == pytest.approx([val_metrics(ep)["val_force_mae"] for ep in range(5)])
        assert curve.data[POT]["train"] == pytest.approx([train_metrics(ep)["train_force_mae"] for ep in range(1, 5)])
        assert curve.title_text.endswith("val/train force MAE (meV/Å)")
        text = screen_text(app)
        assert "force MAE (meV/Å)" in text, text
        assert "Metric" in footer_keys(app), footer_keys(app)
        # every tab of a potential run is on screen, whole
        line = tab_line(app)
        for label in ("Curve", "Parity E", "Parity F", "Errors E", "Errors F"):
            assert label in line, line

        await pilot.press("m")  # force -> stress
        await pilot.pause(0.2)
        assert pane.curve_metric() == "stress_mae"
        assert curve.data[POT]["val"] == pytest.approx([val_metrics(ep)["val_stress_mae"] for ep in range(5)])
        assert "stress MAE (GPa)" in curve.title_text
        await pilot.press("m")  # stress -> loss (wraps)
        await pilot.pause(0.2)
        assert pane.curve_metric() == "loss" and curve.title_text.endswith("val/train loss")
        assert curve.data[POT]["val"] == pytest.approx([val_metrics(ep)["val_loss"] for ep in range(5)])

        # a property run: its val_mae as before, no metric key in the footer, its three tabs
        app.show_run(PROP)
        await pilot.pause(0.3)
        assert pane.curve_metric() is None and curve.metric is None
        assert "Metric" not in footer_keys(app)
        assert "Learning curve" in tab_line(app) and "Parity F" not in tab_line(app)
        await pilot.press("m")  # does nothing for one metric
        await pilot.pause()
        assert pane.curve_metric() is None
        app.show_run(POT)
        await pilot.pause(0.3)
        assert pane.curve_metric() == "loss"  # the pick is kept for runs that have it

        # the force parity plot and both histograms
        energy = app.query_one("#parity", ParityPlot)
        forces = app.query_one("#parity-force", ParityPlot)
        e_hist = app.query_one("#errors", ErrorPlot)
        f_hist = app.query_one("#errors-force", ErrorPlot)
        assert energy.predictions.unit == "eV/atom" and len(energy.predictions) == N_FRAMES
        assert forces.predictions.unit == "eV/Å" and len(forces.predictions) == 3 * N_FRAMES * N_ATOMS
        assert e_hist.predictions.unit == "meV/atom" and f_hist.predictions.unit == "meV/Å"
        shown = {}
        for _ in range(4):
            pane.action_next_chart()
            await pilot.pause(0.3)
            shown[app.query_one("#chart-tabs").active] = screen_text(app)
        assert list(shown) == ["tab-parity", "tab-parity-f", "tab-errors", "tab-errors-f"]
        assert "energy  MAE" in shown["tab-parity"] and "true (eV/atom)" in shown["tab-parity"]
        assert "force components" in shown["tab-parity-f"] and "(eV/Å)" in shown["tab-parity-f"]
        assert "energy error" in shown["tab-errors"] and "pred - true (meV/atom)" in shown["tab-errors"]
        assert "force error" in shown["tab-errors-f"] and "pred - true (meV/Å)" in shown["tab-errors-f"]
        # back to a property run on a force tab: its own tabs, the learning curve
        app.show_run(PROP)
        await pilot.pause(0.3)
        assert app.query_one("#chart-tabs").active == "tab-curve"
        assert "Errors F" not in tab_line(app)


@pytest.mark.parametrize("size", SIZES)
async def test_library_shows_each_targets_test_mae(hist, size):
    app = TuiFtApp()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        app.action_show_tab("library")
        await pilot.pause()
        pane = app.library_pane
        pane.select(f"{POT}@best")
        await pilot.pause(0.2)
        text = screen_text(app)
        cells = pane.table.full[f"{POT}@best"]
        assert "E 7.5 meV/atom  F 41.2 meV/Å  S 0.123 GPa" in [str(c) for c in cells]
        # the detail box says it in words, whole, at either size
        box = " ".join(ln.strip("│ ") for ln in text.splitlines() if ln.startswith("│"))
        assert "test energy 7.5 meV/atom · force 41.2 meV/Å · stress 0.123 GPa" in " ".join(box.split()), text
        # the val column: the force MAE with its unit at the checkpoint's epoch (from the run's
        # log), not the sidecar's unitless weighted loss
        best = pane.items[f"{POT}@best"]
        assert str(cells[3]) == f"F {val_metrics(best.epoch)['val_force_mae']:.4g} meV/Å" != f"{best.val_mae:.4f}"
        # a property checkpoint keeps its one val and test MAE
        prop = f"{PROP}@best"
        assert str(pane.table.full[prop][3]) == f"{pane.items[prop].val_mae:.4f}"
        assert str(pane.table.full[prop][4]) == f"{pane.items[prop].test_mae:.4f}"
        if size == (120, 40):  # wide enough for the column: the row shows it
            row = next(ln for ln in text.splitlines() if POT[:12] in ln and "│" in ln and "E 7.5" in ln)
            assert "S 0.123 GPa" in row, row


async def test_a_corrupted_forces_row_is_skipped_and_said_once(hist):
    lines = ["id,atom,fx_true,fy_true,fz_true,fx_pred,fy_pred,fz_pred"]
    for i, r in enumerate(force_rows()):
        lines.append(f"frame-{i // N_ATOMS:03d},{i % N_ATOMS}," + ",".join(f"{x:.6f}" for x in r))
    lines.insert(8, "frame-001,2,0.1,0.2,NOT_A_NUMBER,0.1,0.2,0.3")
    bad = "demo_potential-20250101-140000-beef"
    write_potential_run(hist, bad, forces_text="\n".join(lines) + "\n")
    app = TuiFtApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        for _ in range(2):  # selected twice: said once
            app.show_run(bad)
            await pilot.pause(0.3)
            app.show_run(POT)
            await pilot.pause(0.2)
        app.show_run(bad)
        await pilot.pause(0.3)
        said = [p for p in app.model.problems if "test_forces.csv" in p]
        assert len(said) == 1 and "1 bad row(s) skipped (first: line 9: fz_true 'NOT_A_NUMBER'" in said[0], said
        forces = app.query_one("#parity-force", ParityPlot).predictions
        assert forces.skipped == 1 and len(forces) == 3 * N_FRAMES * N_ATOMS
        app.runs_pane.action_next_chart()
        app.runs_pane.action_next_chart()
        await pilot.pause(0.3)
        assert "1 bad row(s) skipped" in screen_text(app)
