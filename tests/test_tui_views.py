"""The Studies and Sweeps tabs (issues 16 and 17).

Pure tests of :mod:`tui_ft.tui.study_model` on a fabricated study (a
study.json and its runs' events.jsonl written by hand, as ``tui-ft matbench``
writes them) and a small real Optuna study database (trials added with
Optuna directly: no training); then Pilot tests that open each tab on that
project.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from tui_ft.core.common.events import EpochEnd, EventWriter, RunFinished, RunPruned, RunStarted
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import load_preset
from tui_ft.core.orchestrate.study import LEADERBOARD, STUDY_FORMAT, TASK
from tui_ft.tui.study_model import (
    FAINT,
    best_preset_path,
    fold_cells,
    list_studies,
    list_sweep_rows,
    load_study_view,
    load_sweep_view,
    mean_std,
    next_key,
    save_best_preset,
    scatter_data,
    study_curves,
    study_reference_lines,
    study_summary_lines,
    sweep_curves,
    trial_cells,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = (140, 44)

# fold -> (val MAE per epoch, test MAE or None while it runs)
FOLDS = {0: ([0.40, 0.30, 0.25], 0.26), 1: ([0.42, 0.33, 0.28], 0.29), 2: ([0.41, 0.35], None)}


def write_run(paths: Paths, run_id: str, vals: list[float], test_mae: float | None, *, finished: bool = True,
              pruned: bool = False, t0: float = 1_000_000.0) -> None:
    run_dir = paths.run_log_dir(run_id)
    with EventWriter(run_dir / "events.jsonl") as w:
        w.emit(RunStarted(run_id, preset_name=run_id.rsplit("-", 1)[0], preset={}, device="cpu", n_train=10,
                          n_val=2, n_test=2, epochs=len(vals) - 1, time=t0))
        best = math.inf
        for ep, v in enumerate(vals):
            best_ep = ep if v < best else None
            best = min(best, v)
            w.emit(EpochEnd(run_id, epoch=ep, train_mae=None if ep == 0 else v + 0.05, val_mae=v, lr=1e-3, seconds=1.0,
                            best_val_mae=best, best_epoch=best_ep if best_ep is not None else 0, time=t0 + 10 * (ep + 1)))
        if pruned:
            w.emit(RunPruned(run_id, epoch=len(vals) - 1, reason="median pruner", time=t0 + 10 * len(vals) + 1))
        elif finished:
            w.emit(RunFinished(run_id, test_mae=test_mae, best_epoch=vals.index(min(vals)), best_val_mae=min(vals),
                               seconds=10.0 * len(vals), time=t0 + 10 * len(vals) + 5))


def make_study(paths: Paths, name: str = "mb", data_source: str = "demo") -> None:
    folds = {}
    for k, (vals, test) in FOLDS.items():
        run_id = f"{name}-f{k}-20260101-000000-000{k}"
        write_run(paths, run_id, vals, test, finished=test is not None)
        folds[str(k)] = {"fold": k, "kind": "preset", "run_id": run_id, "status": "finished" if test else "running"}
    folds["3"] = {"fold": 3, "kind": "preset", "run_id": None, "status": "queued"}
    d = paths.logs / ".studies" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "study.json").write_text(json.dumps({
        "format": STUDY_FORMAT, "study": name, "fingerprint": "x", "folds": folds, "started": 1.0,
        "source": "presets/demo.toml", "source_name": "demo", "kind": "preset", "data_source": data_source,
        "executor": "local", "pid": 0, "status": "running",
    }), encoding="utf-8")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    (root / "presets").mkdir(parents=True)
    shutil.copy(ROOT / "presets" / "demo.toml", root / "presets" / "demo.toml")
    (root / ".tui-ft").touch()
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.chdir(root)
    return root


# --------------------------------------------------------------------------- sweeps: a real Optuna study db

SWEEP_TRIALS = [  # (state, lr, batch size, val MAE per epoch, objective)
    ("COMPLETE", 1e-3, 8, [0.50, 0.30, 0.22], 0.22),
    ("COMPLETE", 3e-3, 16, [0.50, 0.25, 0.18], 0.18),
    ("PRUNED", 1e-4, 8, [0.50, 0.47], None),
    ("COMPLETE", 5e-4, 16, [0.50, 0.35, 0.31], 0.31),
]


def make_sweep(paths: Paths, name: str = "sw") -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = paths.logs / ".sweeps" / name
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}", direction="minimize")
    study.set_user_attr("trials", 6)
    study.set_user_attr("preset", load_preset(paths.presets / "demo.toml").to_dict())
    dists = {
        "optim.lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "train.batch_size": optuna.distributions.CategoricalDistribution([8, 16]),
    }
    S = optuna.trial.TrialState
    for n, (state, lr, bs, vals, value) in enumerate(SWEEP_TRIALS):
        run_id = f"{name}-t{n}-20260101-000000-00a{n}"
        write_run(paths, run_id, vals, 0.3, finished=state == "COMPLETE", pruned=state == "PRUNED")
        study.add_trial(optuna.trial.create_trial(
            state=getattr(S, state), value=value, params={"optim.lr": lr, "train.batch_size": bs}, distributions=dists,
            intermediate_values=dict(enumerate(vals)),
            user_attrs={"run_id": run_id, "preset": str(folder / "trials" / f"t{n}.toml")},
        ))


# =========================================================================== pure: studies


def test_study_view_rows_curves_and_running_mean(project):
    paths = Paths(project)
    make_study(paths)
    (row,) = list_studies(paths)
    assert (row.name, row.status, row.folds, row.finished, row.problem) == ("mb", "running", 4, 2, None)
    view = load_study_view("mb", paths)
    assert view.problem is None
    assert [(f.fold, f.status) for f in view.folds][:2] == [(0, "finished"), (1, "finished")]
    assert view.folds[2].status in ("running", "crashed")  # its writer (this test) is not a run process
    assert view.folds[3].status == "pending" and view.folds[3].run_id is None
    f0 = view.folds[0]
    assert (f0.best_val_mae, f0.test_mae, f0.epochs) == (0.25, 0.26, 2)
    assert f0.wall_s == pytest.approx(35.0)
    assert fold_cells(f0) == ("0", f0.run_id, "finished", "0.2500", "0.2600", "2", "35s")
    # the running mean is over the finished folds only, numpy-style std (ddof=0)
    m, s = view.mean_std
    assert m == pytest.approx(0.275) and s == pytest.approx(0.015)
    curves = study_curves(view)
    assert [c.label for c in curves] == ["fold 0", "fold 1", "fold 2"]
    assert curves[2].ys == FOLDS[2][0] and curves[0].xs == [0, 1, 2]
    assert len({c.color for c in curves}) == 3
    # demo data: the published numbers are quoted as text, not drawn (other data, other scale)
    lines = study_summary_lines(view)
    assert "test MAE 0.2750 ± 0.0150 eV/atom (mean ± std, 2 of 4 folds finished)" in lines
    for model, value in LEADERBOARD[TASK]:
        assert any(model in ln and f"{value:.4f}" in ln for ln in lines)
    assert [lbl for lbl, _, _ in study_reference_lines(view)] == ["mean test 0.2750"]


def test_study_on_the_task_draws_the_published_numbers(project):
    paths = Paths(project)
    make_study(paths, "full", data_source=TASK)
    refs = study_reference_lines(load_study_view("full", paths))
    assert [(lbl.split()[0], y) for lbl, y, _ in refs[1:]] == [("coGN", 0.0170), ("ALIGNN", 0.0215), ("CGCNN", 0.0337)]


def write_potential_member(paths: Paths, run_id: str, forces: list[float], test_force: float) -> None:
    """A potential run's events: its selection value is the weighted loss, its named metrics carry
    the force (meV/Å) and energy (meV/atom) MAE."""
    with EventWriter(paths.run_log_dir(run_id) / "events.jsonl") as w:
        w.emit(RunStarted(run_id, preset_name="pot", preset={}, device="cpu", n_train=10, n_val=2, n_test=2,
                          epochs=len(forces) - 1, time=1_000_000.0))
        for ep, f in enumerate(forces):
            m = {"val_loss": f / 10_000, "val_energy_mae": f / 10, "val_force_mae": f}
            w.emit(EpochEnd(run_id, epoch=ep, train_mae=None, val_mae=m["val_loss"], lr=1e-3, seconds=1.0,
                            best_val_mae=m["val_loss"], best_epoch=ep, metrics=m, time=1_000_010.0 + ep))
        w.emit(RunFinished(run_id, test_mae=test_force / 10_000, best_epoch=len(forces) - 1, best_val_mae=forces[-1] / 10_000,
                           seconds=5.0, time=1_000_100.0,
                           test_metrics={"test_loss": test_force / 10_000, "test_energy_mae": 7.5, "test_force_mae": test_force}))


def test_a_potential_ensemble_shows_force_maes_with_their_unit_not_the_loss(project):
    paths = Paths(project)
    members = {}
    for k, (forces, test) in enumerate([([190.0, 120.0, 90.0], 95.0), ([190.0, 125.0, 92.0], 97.0)]):
        run_id = f"pot-m{k}-20260101-000000-000{k}"
        write_potential_member(paths, run_id, forces, test)
        members[str(k)] = {"member": k, "kind": "preset", "run_id": run_id, "status": "finished"}
    d = paths.logs / ".studies" / "pot"
    d.mkdir(parents=True)
    (d / "study.json").write_text(json.dumps({
        "format": STUDY_FORMAT, "study": "pot", "fingerprint": "x", "axis": "member", "members": members,
        "started": 1.0, "source": "pot.toml", "source_name": "pot", "kind": "preset", "data_source": "frames.extxyz",
        "executor": "local", "pid": 0, "status": "finished"}), encoding="utf-8")
    view = load_study_view("pot", paths)
    assert view.problem is None and view.metric == "force_mae" and view.unit == "meV/Å"
    assert fold_cells(view.folds[0])[3:5] == ("F 90 meV/Å", "F 95 meV/Å")
    assert [c.ys for c in study_curves(view)] == [[190.0, 120.0, 90.0], [190.0, 125.0, 92.0]]
    assert view.mean_std == pytest.approx((96.0, 1.0))
    assert "members' test force MAE 96 ± 1 meV/Å (mean ± std, 2 of 2 members finished)" in study_summary_lines(view)


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "other/9"}', "format 'other/9'"),
    (json.dumps({"format": STUDY_FORMAT, "folds": [1]}), "field 'folds'"),
])
def test_corrupt_study_json_is_one_problem_line(project, text, words):
    paths = Paths(project)
    d = paths.logs / ".studies" / "bad"
    d.mkdir(parents=True)
    (d / "study.json").write_text(text, encoding="utf-8")
    (row,) = list_studies(paths)
    assert row.status == "unreadable" and words in row.problem and "study.json" in row.problem
    view = load_study_view("bad", paths)
    assert view.folds == [] and words in view.problem
    assert study_summary_lines(view) == [f"problem: {view.problem}"]


def test_a_bad_fold_record_is_a_problem_row(project):
    paths = Paths(project)
    make_study(paths)
    path = paths.logs / ".studies" / "mb" / "study.json"
    obj = json.loads(path.read_text())
    obj["folds"]["4"] = "garbage"
    path.write_text(json.dumps(obj))
    view = load_study_view("mb", paths)
    bad = view.folds[-1]
    assert (bad.fold, bad.status) == (4, "unreadable") and "expected an object" in bad.problem
    assert view.mean_std[0] == pytest.approx(0.275)


def test_mean_std_matches_numpy():
    np = pytest.importorskip("numpy")
    vals = [0.031, 0.029, 0.035, 0.030]
    m, s = mean_std(vals)
    assert m == pytest.approx(float(np.mean(vals))) and s == pytest.approx(float(np.std(vals)))
    assert mean_std([]) is None and mean_std([float("nan")]) is None


# =========================================================================== pure: sweeps


def test_sweep_view_rows_best_curves_and_scatter(project):
    paths = Paths(project)
    make_sweep(paths)
    (row,), problems = list_sweep_rows(paths)
    assert problems == []
    assert (row.name, row.requested, row.complete, row.pruned, row.best_trial, row.best_value) == ("sw", 6, 3, 1, 1, 0.18)
    view = load_sweep_view("sw", paths)
    assert view.problem is None
    assert [(r.number, r.state, r.value) for r in view.rows] == [
        (1, "finished", 0.18), (0, "finished", 0.22), (3, "finished", 0.31), (2, "pruned", 0.47)]
    assert view.best.number == 1 and view.keys == ["optim.lr", "train.batch_size"]
    assert view.log_keys == {"optim.lr"}
    assert trial_cells(view.rows[0], view.keys) == ("1", "finished", "0.1800", "2", "0.003", "16", view.rows[0].run_id)
    assert trial_cells(view.rows[-1], view.keys)[:4] == ("2", "pruned", "0.4700", "1")
    curves = sweep_curves(view)
    assert curves[-1].label == "best t1" and curves[-1].ys == SWEEP_TRIALS[1][3]
    assert {c.color for c in curves[:-1]} == {FAINT} and len(curves) == 4
    lr = scatter_data(view, "optim.lr")
    assert lr.log and sorted(lr.ys) == [0.18, 0.22, 0.31]  # the pruned trial has no objective
    assert lr.best == (pytest.approx(math.log10(3e-3)), 0.18)
    assert lr.labels[0] == f"1e{math.floor(math.log10(5e-4))}"
    bs = scatter_data(view, "train.batch_size")
    assert not bs.log and bs.labels == ["8", "16"] and bs.xs == [1.0, 0.0, 1.0] and bs.best == (1.0, 0.18)
    assert next_key(view.keys, "optim.lr") == "train.batch_size"
    assert next_key(view.keys, "train.batch_size") == "optim.lr" and next_key(view.keys, None) == "optim.lr"
    assert next_key([], None) is None


def test_save_best_preset_loads_strictly_and_refuses_to_overwrite(project):
    paths = Paths(project)
    make_sweep(paths)
    path = save_best_preset(paths, "sw")
    assert path == project / "presets" / "sw-best.toml"
    p = load_preset(path)
    assert p.optim.lr == pytest.approx(3e-3) and p.train.batch_size == 16 and p.run.name == "sw-best"
    assert p.sweep is None
    before = path.read_text()
    path.write_text("# mine\n" + before)
    with pytest.raises(FileExistsError):
        save_best_preset(paths, "sw")
    assert path.read_text().startswith("# mine")
    save_best_preset(paths, "sw", overwrite=True)
    assert path.read_text() == before


def test_corrupt_study_db_is_one_problem_line(project):
    pytest.importorskip("optuna")
    paths = Paths(project)
    d = paths.logs / ".sweeps" / "broken"
    d.mkdir(parents=True)
    (d / "study.db").write_bytes(b"this is not an sqlite file" * 40)
    (row,), problems = list_sweep_rows(paths)
    assert problems == [] and row.name == "broken" and "study.db: cannot read" in row.problem
    view = load_sweep_view("broken", paths)
    assert view.rows == [] and "study.db: cannot read" in view.problem
    assert "\n" not in view.problem


def test_missing_optuna_is_one_problem_line(project, monkeypatch):
    import sys

    paths = Paths(project)
    d = paths.logs / ".sweeps" / "x"
    d.mkdir(parents=True)
    (d / "study.db").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "optuna", None)
    rows, problems = list_sweep_rows(paths)
    assert rows == [] and len(problems) == 1 and "Optuna" in problems[0]
    assert "Optuna" in load_sweep_view("x", paths).problem


# =========================================================================== Pilot


async def wait_for(pilot, cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_studies_tab_shows_folds_and_mean(project):
    from tui_ft.tui.app import TuiFtApp
    from tui_ft.tui.studies import StudiesPane, StudyCurves

    paths = Paths(project)
    make_study(paths)
    app = TuiFtApp(paths)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await pilot.pause()
        pane = app.query_one(StudiesPane)
        await wait_for(pilot, lambda: pane.view is not None, what="the study view")
        assert app.active_tab == "studies"
        assert cells(pane.studies_table)[0][:3] == ["mb", "running", "2/4"]
        rows = cells(pane.folds_table)
        assert [r[0] for r in rows] == ["0", "1", "2", "3"]
        assert rows[0][2:5] == ["finished", "0.2500", "0.2600"] and rows[3][2] == "pending"
        summary = str(app.query_one("#study-summary", Static).render())
        assert "0.2750 ± 0.0150" in summary and "coGN" in summary
        plot = app.query_one(StudyCurves)
        assert plot.view is pane.view and len(plot.view.curves) == 3
        # the mean test MAE line is labelled in the chart's legend (issue 22 item 17)
        await wait_for(pilot, lambda: "mean test 0.2750" in plot.plt.build(), what="the labelled mean line")
        # a fold finishing on disk shows up at the next refresh
        write_run(paths, "mb-f2-20260101-000000-0002-done", [0.4, 0.3], 0.30)
        path = paths.logs / ".studies" / "mb" / "study.json"
        obj = json.loads(path.read_text())
        obj["folds"]["2"].update(run_id="mb-f2-20260101-000000-0002-done", status="finished")
        path.write_text(json.dumps(obj))
        loads = pane.loads
        await pilot.press("r")
        await wait_for(pilot, lambda: pane.loads > loads and pane.view.mean_std[0] == pytest.approx((0.26 + 0.29 + 0.30) / 3),
                       what="the refreshed mean")
        # a corrupt study.json: one problem line, the app keeps running
        path.write_text("{oops")
        await pilot.press("r")
        await wait_for(pilot, lambda: pane.view is not None and pane.view.problem is not None, what="the problem line")
        assert "not valid JSON" in str(app.query_one("#study-summary", Static).render())
        assert pane.folds_table.row_count == 0


async def test_sweeps_tab_trials_best_scatter_and_save(project):
    from tui_ft.tui.app import TuiFtApp
    from tui_ft.tui.modals import ConfirmScreen
    from tui_ft.tui.sweeps import ParamScatter, SweepsPane

    paths = Paths(project)
    make_sweep(paths)
    app = TuiFtApp(paths)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await pilot.pause()
        pane = app.query_one(SweepsPane)
        await wait_for(pilot, lambda: pane.view is not None, what="the sweep view")
        assert cells(pane.sweeps_table)[0][:7] == ["sw", "4/6", "3", "1", "0", "0", "0.1800"]
        rows = cells(pane.trials_table)
        assert [(r[0], r[1], r[2]) for r in rows] == [("1", "finished", "0.1800"), ("0", "finished", "0.2200"),
                                                      ("3", "finished", "0.3100"), ("2", "pruned", "0.4700")]
        assert "best: trial 1" in str(app.query_one("#sweep-status", Static).render())
        scatter = app.query_one(ParamScatter)
        assert scatter.key == "optim.lr"
        await pilot.press("p")
        assert scatter.key == "train.batch_size"
        await pilot.press("p")
        assert scatter.key == "optim.lr"
        # save best as preset: written, loads strictly
        await pilot.press("b")
        await pilot.pause()
        target = best_preset_path(paths, "sw")
        assert target.is_file() and load_preset(target).optim.lr == pytest.approx(3e-3)
        # again: asks first; "n" keeps the file
        target.write_text("# mine\n" + target.read_text())
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the overwrite question")
        app.simulate_key("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="the question to close")
        assert target.read_text().startswith("# mine")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the overwrite question")
        app.simulate_key("y")
        await wait_for(pilot, lambda: not target.read_text().startswith("# mine"), what="the overwrite")
        assert load_preset(target).run.name == "sw-best"


def test_view_model_does_not_import_textual():
    import subprocess
    import sys

    code = "import sys, tui_ft.tui.study_model; sys.exit('textual' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
