"""``tui-ft ensemble`` (issue 27 item 2): K runs seeds apart, used as one model through
``ensemble:NAME`` in ``predict`` / ``eval`` / ``export``, with the mean and std per structure and
the calibration of that std.

One ensemble of 3 head-mode members on the demo is trained once for the module; one of
2 tiny potential members for the force test."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import module_project
from tui_ft import cli
from tui_ft.core.common.events import RunStarted, read_events
from tui_ft.core.library.ensemble import calibration, read_std_scales, std_scale


ENS = """
[run]
name = "ens"
[data]
source = "demo"
[finetune]
mode = "head"
[train]
epochs = 2
batch_size = 8
seed = 7
device = "cpu"
"""

POT = """
[run]
name = "pens"
[data]
source = "demo_potential"
split = "random"
fraction = 0.1
test_limit = 8
[task]
kind = "potential"
[finetune]
mode = "full"
[optim]
lr = 3e-4
[train]
epochs = 1
batch_size = 4
device = "cpu"
[ensemble]
members = 2
"""


def _cli(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_ft", *map(str, args)], cwd=root, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def ens(tmp_path_factory, graph_cache_dir):
    """``(root, completed process)`` of ``tui-ft ensemble presets/ens.toml -k 3``."""
    root, mp = module_project(tmp_path_factory, graph_cache_dir, "ens")
    try:
        (root / "presets" / "ens.toml").write_text(ENS)
        r = _cli(root, "ensemble", "presets/ens.toml", "-k", "3")
        assert r.returncode == 0, r.stdout + r.stderr
        yield root, r
    finally:
        mp.undo()


def _state(root: Path, name: str = "ens") -> dict:
    return json.loads((root / "logs" / ".studies" / name / "study.json").read_text())


def _run_ids(root: Path, name: str = "ens") -> list[str]:
    recs = _state(root, name)["members"]
    return [recs[str(k)]["run_id"] for k in range(len(recs))]


def _test_predictions(root: Path, run_id: str) -> dict[str, tuple[float, float]]:
    with open(root / "logs" / run_id / "test_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    return {r["id"]: (float(r["pred"]), float(r["true"])) for r in rows}  # written to 6 decimals


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


# --------------------------------------------------------------------------- calibration by hand


def test_calibration_counts_and_ranks_as_written_out_by_hand():
    err = [0.1, 0.5, 0.2, 2.0]
    std = [0.2, 0.3, 0.1, 1.5]
    c = calibration(err, std, n_bins=2)
    # within 1σ: 0.1<=0.2 yes, 0.5<=0.3 no, 0.2<=0.1 no, 2.0<=1.5 no -> 1/4; within 2σ: yes, yes, yes, yes -> 4/4
    assert (c.n, c.within_1sigma, c.within_2sigma) == (4, 0.25, 1.0)
    # ranks of std 2,3,1,4 and of |error| 1,3,2,4: d = 1,0,-1,0 -> rho = 1 - 6*2/(4*15) = 0.8
    assert c.spearman == pytest.approx(0.8)
    assert c.mae == pytest.approx(0.7) and c.mean_std == pytest.approx(0.525)
    # two bins by std: {0.1, 0.2} with errors {0.2, 0.1}, {0.3, 1.5} with errors {0.5, 2.0}
    assert np.allclose(c.bins, [(0.15, 0.15), (0.9, 1.25)])
    assert calibration([0.1, 0.1, 0.1], [0.2, 0.3, 0.4]).spearman is None  # constant errors: no ranking


def test_std_scale_as_written_out_by_hand():
    # error/std = 0.2/0.1 = 2 and 0.3/0.1 = 3; the pair with std 0 is left out: sqrt((4 + 9) / 2)
    k, n = std_scale([0.2, -0.3, 0.5], [0.1, 0.1, 0.0])
    assert (n, k) == (2, pytest.approx(np.sqrt(6.5)))
    assert std_scale([0.1, 0.2], [0.0, 0.0]) == (None, 0)  # no spread anywhere: no factor
    assert std_scale([0.0, 0.0], [0.1, 0.2]) == (None, 2)  # perfect predictions: no factor either


def test_read_std_scales_survives_a_bad_record(tmp_path):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path)
    where = tmp_path / "logs" / ".studies" / "x"
    assert read_std_scales("x", paths) == ({}, [])  # never evaluated: nothing, quietly
    where.mkdir(parents=True)
    (where / "ensemble.json").write_text('{"targets": {"energy": {"std_scale": {"factor": 2.5}}, '
                                         '"force": {"std_scale": {"factor": -1}}, "stress": {"std_scale": "x"}}}')
    scales, warnings = read_std_scales("x", paths)
    assert scales == {"energy": 2.5}
    assert len(warnings) == 1 and "targets.force.std_scale.factor must be a positive number, got -1" in warnings[0]
    (where / "ensemble.json").write_text('{"targets": ')
    scales, warnings = read_std_scales("x", paths)
    assert scales == {} and "unreadable" in warnings[0] and str(where / "ensemble.json") in warnings[0]


# --------------------------------------------------------------------------- the ensemble's runs


def test_members_differ_only_in_their_seed_and_share_the_split(ens):
    root, r = ens
    ids = _run_ids(root)
    assert len(ids) == 3 and len(set(ids)) == 3
    presets = []
    for k, rid in enumerate(ids):
        (started,) = [e for e in read_events(root / "logs" / rid / "events.jsonl") if isinstance(e, RunStarted)]
        p = dict(started.preset)
        assert p["train"]["seed"] == 7 + k
        assert p["run"]["name"] == f"ens-m{k}"
        assert "ensemble" not in p  # a member is one run
        presets.append(p)
    strip = [{s: {k: v for k, v in t.items() if k not in ("seed", "name")} for s, t in p.items()} for p in presets]
    assert strip[0] == strip[1] == strip[2]
    tests = [_test_predictions(root, rid) for rid in ids]
    assert set(tests[0]) == set(tests[1]) == set(tests[2]) and tests[0]  # the same test rows
    assert any(tests[0][i][0] != tests[1][i][0] for i in tests[0])  # other seeds, other models


def test_the_ensembles_test_mae_is_the_mae_of_the_members_mean(ens):
    root, r = ens
    ids = _run_ids(root)
    tests = [_test_predictions(root, rid) for rid in ids]
    ids_ = sorted(tests[0])
    mean = {i: np.mean([t[i][0] for t in tests]) for i in ids_}
    mae = float(np.mean([abs(mean[i] - tests[0][i][1]) for i in ids_]))
    summary = json.loads((root / "logs" / ".studies" / "ens" / "ensemble.json").read_text())
    d = summary["targets"]["e_form"]
    assert d["ensemble_mae"] == pytest.approx(mae, abs=2e-6)
    member_maes = [float(np.mean([abs(t[i][0] - t[i][1]) for i in ids_])) for t in tests]
    assert d["member_maes"] == pytest.approx(member_maes, abs=2e-6)
    std = [float(np.std([t[i][0] for t in tests])) for i in ids_]
    want = calibration([abs(mean[i] - tests[0][i][1]) for i in ids_], std)
    assert d["calibration"]["within_1sigma"] == pytest.approx(want.within_1sigma, abs=1.01 / len(ids_))
    assert d["calibration"]["n"] == len(ids_)
    assert "ensemble test MAE" in r.stdout and "calibration over" in r.stdout
    assert (root / "logs" / ".studies" / "ens" / "summary.md").read_text().count("| finished |") == 3


def test_the_std_scale_is_fit_on_the_members_validation_rows(ens):
    """ensemble.json's factor is sqrt(mean((error / std)²)) of the members' mean on their
    validation rows (recomputed here from each member's own predictions there), and its
    calibration_scaled is the test calibration of std times that factor."""
    from tui_ft.core.library.predict import evaluate

    root, r = ens
    ids = _run_ids(root)
    vals = [evaluate(root / "checkpoints" / rid / "best.pt", "demo", rows="val") for rid in ids]
    (started,) = [e for e in read_events(root / "logs" / ids[0] / "events.jsonl") if isinstance(e, RunStarted)]
    assert {v.rows for v in vals} == {"val"} and len(vals[0].result.rows) == started.n_val > 0
    rows = [{x.id: x for x in v.result.rows} for v in vals]
    keys = sorted(rows[0])
    assert all(set(rw) == set(keys) for rw in rows)  # one split for all members
    preds = np.array([[rw[i].prediction for rw in rows] for i in keys])
    truth = np.array([rows[0][i].target for i in keys])
    z = np.abs(preds.mean(axis=1) - truth) / preds.std(axis=1)
    d = json.loads((root / "logs" / ".studies" / "ens" / "ensemble.json").read_text())["targets"]["e_form"]
    assert d["std_scale"]["rows"] == "val" and d["std_scale"]["n"] == len(keys)
    assert d["std_scale"]["factor"] == pytest.approx(float(np.sqrt(np.mean(z ** 2))), rel=1e-5)
    tests = [_test_predictions(root, rid) for rid in ids]
    t_ids = sorted(tests[0])
    m = np.array([[t[i][0] for t in tests] for i in t_ids])
    err = np.abs(m.mean(axis=1) - np.array([tests[0][i][1] for i in t_ids]))
    want = calibration(err, m.std(axis=1) * d["std_scale"]["factor"])
    assert d["calibration_scaled"]["within_1sigma"] == pytest.approx(want.within_1sigma, abs=1.01 / len(t_ids))
    assert d["calibration_scaled"]["spearman"] == pytest.approx(d["calibration"]["spearman"], abs=1e-9)  # same ranks
    assert f"std x {d['std_scale']['factor']:.3g} (fit on {len(keys)} validation values)" in r.stdout
    one = _cli(root, "eval", f"{ids[0]}@best", "--data", "demo", "--rows", "val")
    assert one.returncode == 0, one.stderr
    assert f"on {len(keys)} structures" in one.stdout and "the checkpoint's validation rows" in one.stdout


def test_running_it_again_keeps_the_finished_members(ens):
    root, _ = ens
    before = _run_ids(root)
    r = _cli(root, "ensemble", "presets/ens.toml", "-k", "3")
    assert r.returncode == 0, r.stderr
    assert "members 0, 1, 2 already finished" in r.stderr
    assert _run_ids(root) == before


def test_another_preset_under_the_same_name_is_refused(ens, tmp_path):
    root, _ = ens
    other = root / "presets" / "ens_other.toml"
    other.write_text(ENS.replace("epochs = 2", "epochs = 3"))
    r = _cli(root, "ensemble", str(other), "-k", "3", "--name", "ens")
    assert r.returncode == 2 and "was run with another preset" in r.stderr


# --------------------------------------------------------------------------- predict / eval / export


def test_predict_writes_the_members_mean_and_std_and_each_member(ens, tmp_path):
    root, _ = ens
    out = tmp_path / "p.csv"
    r = _cli(root, "predict", "ensemble:ens", "demo", "--out", out)
    assert r.returncode == 0, r.stderr
    rows = _csv(out)
    assert rows and set(rows[0]) >= {"id", "prediction", "std", "member_0", "member_1", "member_2"}
    m = np.array([[float(row[f"member_{k}"]) for k in range(3)] for row in rows])
    assert np.allclose([float(row["prediction"]) for row in rows], m.mean(axis=1), atol=1e-9)
    assert np.allclose([float(row["std"]) for row in rows], m.std(axis=1), atol=1e-9)
    assert (m.std(axis=1) > 0).any()
    k = json.loads((root / "logs" / ".studies" / "ens" / "ensemble.json").read_text())["targets"]["e_form"]
    k = k["std_scale"]["factor"]
    assert np.allclose([float(row["std_calibrated"]) for row in rows], m.std(axis=1) * k, atol=1e-9)
    assert f"std_calibrated = std x {k:.6g}" in out.read_text().splitlines()[0]
    single = tmp_path / "m1.csv"  # member 1's column is what its own checkpoint predicts
    assert _cli(root, "predict", f"{_run_ids(root)[1]}@best", "demo", "--out", single).returncode == 0
    one = {row["id"]: float(row["prediction"]) for row in _csv(single)}
    assert np.allclose([one[row["id"]] for row in rows], m[:, 1], atol=1e-6)


def test_eval_reports_the_ensemble_beside_its_members_and_the_calibration(ens):
    root, _ = ens
    r = _cli(root, "eval", "ensemble:ens", "--data", "demo", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    summary = json.loads((root / "logs" / ".studies" / "ens" / "ensemble.json").read_text())
    assert out["rows"] == "test"
    assert out["mae"]["e_form"]["value"] == pytest.approx(summary["targets"]["e_form"]["ensemble_mae"], abs=1e-6)
    assert out["mae"]["e_form"]["members"] == pytest.approx(summary["targets"]["e_form"]["member_maes"], abs=1e-6)
    cal = out["calibration"]["e_form"]
    assert set(cal) >= {"spearman", "within_1sigma", "within_2sigma", "n"} and cal["unit"] == "eV/atom"
    text = _cli(root, "eval", "ensemble:ens", "--data", "demo")
    assert text.returncode == 0 and "calibration of e_form: Spearman" in text.stdout


def test_export_writes_members_chgnet_loads_and_a_manifest(ens, tmp_path):
    import hashlib

    from chgnet.model import CHGNet

    from tui_ft.core.data.dataset import resolve_source
    from tui_ft.core.data.sources import load_source

    root, _ = ens
    out = tmp_path / "exported"
    r = _cli(root, "export", "ensemble:ens", out)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "tui-ft-ensemble/1" and len(manifest["members"]) == 3
    scales = json.loads((root / "logs" / ".studies" / "ens" / "ensemble.json").read_text())["targets"]
    assert manifest["std_scale"] == {"e_form": scales["e_form"]["std_scale"]["factor"]}
    preds = _csv_by_id(root, tmp_path)
    ds = load_source(resolve_source("demo"), "e_form")
    s = ds.structures[0]
    for e in manifest["members"]:
        f = out / e["file"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == e["sha256"]
        model = CHGNet.from_file(str(f))
        got = float(model.predict_structure(s, task="e")["e"])
        assert got == pytest.approx(preds[ds.ids[0]][e["member"]], abs=1e-5)
    again = _cli(root, "export", "ensemble:ens", out)  # nothing replaced without --force
    assert again.returncode == 2 and "--force" in again.stderr


def _csv_by_id(root: Path, tmp_path: Path) -> dict[str, list[float]]:
    out = tmp_path / "all.csv"
    assert _cli(root, "predict", "ensemble:ens", "demo", "--out", out).returncode == 0
    return {row["id"]: [float(row[f"member_{k}"]) for k in range(3)] for row in _csv(out)}


@pytest.mark.parametrize("ref, says", [
    ("ensemble:nope", "no ensemble of that name"),
    ("ensemble:../x", "an ensemble name"),
    ("ensemble:", "an ensemble name"),
])
def test_a_bad_ensemble_reference_is_one_line_and_exit_2(ens, ref, says):
    root, _ = ens
    for args in (["predict", ref, "demo"], ["eval", ref, "--data", "demo"], ["export", ref, "x_out"]):
        r = _cli(root, *args)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (root / "x_out").exists()


def test_a_study_with_a_bad_member_record_is_named_by_field(tmp_path):
    from tui_ft.core.orchestrate.study import StudyError, check_study_state

    obj = {"format": "tui-ft-study/1", "axis": "member", "fingerprint": "x",
           "members": {"0": {"member": 0, "run_id": "a"}, "70": {"member": 70}}}
    with pytest.raises(StudyError, match="field 'members'"):
        check_study_state(obj, "s.json")
    obj["members"] = {"0": {"member": 0, "run_id": "../up"}}
    with pytest.raises(StudyError, match=r"members\.0\.run_id"):
        check_study_state(obj, "s.json")


# --------------------------------------------------------------------------- the preset table


def test_the_ensemble_table_is_checked_with_file_and_line(tmp_path):
    from tui_ft.core.config.dump import dump_preset
    from tui_ft.core.config.fields import PresetError, PresetErrors
    from tui_ft.core.config.presets import parse_preset

    p = parse_preset(ENS + "[ensemble]\nmembers = 4\n", "e.toml")
    assert p.ensemble.members == 4 and parse_preset(dump_preset(p)) == p
    with pytest.raises((PresetError, PresetErrors), match=r"e\.toml:14: ensemble\.members: expected an integer from 2 to 64"):
        parse_preset(ENS + "[ensemble]\nmembers = 1\n", "e.toml")
    sweep = '[sweep]\nspace = { "optim.lr" = { log_uniform = [1e-4, 1e-2] } }\n'
    with pytest.raises((PresetError, PresetErrors), match="either a \\[sweep\\]"):
        parse_preset(ENS + sweep + "[ensemble]\nmembers = 2\n", "e.toml")


def test_k_out_of_range_is_a_usage_error(project, demo_preset, capsys):
    p = demo_preset("kk", epochs=1)
    assert cli.main(["ensemble", str(p), "-k", "1"]) == 2
    assert "2 to 64 members" in capsys.readouterr().err
    assert cli.main(["ensemble", str(p)]) == 2
    assert "-k K" in capsys.readouterr().err
    assert not (project / "logs" / ".studies" / "kk").exists()


# --------------------------------------------------------------------------- a potential ensemble


@pytest.mark.slow
def test_a_potential_ensemble_gives_force_components_their_std(tmp_path_factory, graph_cache_dir, tmp_path):
    import ase.io

    root, mp = module_project(tmp_path_factory, graph_cache_dir, "pens")
    try:
        (root / "presets" / "pens.toml").write_text(POT)
        r = _cli(root, "--preset", "presets/pens.toml", "--plain")  # the [ensemble] table makes it an ensemble
        assert r.returncode == 0, r.stdout + r.stderr
        assert "force: ensemble test MAE" in r.stdout
        ids = _run_ids(root, "pens")
        out = tmp_path / "p.csv"
        r = _cli(root, "predict", "ensemble:pens", "demo_potential", "--out", out, "--forces")
        assert r.returncode == 0, r.stderr
        mean = ase.io.read(tmp_path / "p.extxyz", index=":")
        each = []
        for k, rid in enumerate(ids):
            o = tmp_path / f"m{k}.csv"
            assert _cli(root, "predict", f"{rid}@best", "demo_potential", "--out", o, "--forces").returncode == 0
            each.append(ase.io.read(tmp_path / f"m{k}.extxyz", index=":"))
        scales = json.loads((root / "logs" / ".studies" / "pens" / "ensemble.json").read_text())["targets"]
        kf = scales["force"]["std_scale"]["factor"]
        assert kf > 0 and scales["force"]["std_scale"]["n"] > 0 and "calibration_scaled" in scales["force"]
        for i in (0, len(mean) // 2, len(mean) - 1):
            f = np.stack([each[k][i].get_forces() for k in range(2)])
            assert np.allclose(mean[i].get_forces(), f.mean(axis=0), atol=1e-6)
            assert np.allclose(mean[i].arrays["forces_std"], f.std(axis=0), atol=1e-6)
            # (members 1 epoch apart spread little, so kf is large: compared on the std's scale)
            assert np.allclose(mean[i].arrays["forces_std_calibrated"] / kf, f.std(axis=0), atol=1e-6)
        ev = _cli(root, "eval", "ensemble:pens", "--format", "json")
        assert ev.returncode == 0, ev.stderr
        got = json.loads(ev.stdout)
        assert set(got["calibration"]) >= {"energy", "force"} and got["mae"]["force"]["unit"] == "meV/Å"
    finally:
        mp.undo()


# --------------------------------------------------------------------------- the dashboard


async def test_the_studies_tab_shows_the_ensemble_and_its_calibration_chart(ens, monkeypatch):
    import asyncio

    from textual.widgets import Static

    from tui_ft.core.common.paths import Paths
    from tui_ft.tui.app import TuiFtApp
    from tui_ft.tui.studies import StudiesPane, StudyCurves

    root, _ = ens
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.chdir(root)
    app = TuiFtApp(Paths(root))
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("4")
        pane = app.query_one(StudiesPane)
        for _ in range(600):
            if pane.view is not None and pane.view.ensemble is not None:
                break
            await asyncio.sleep(0.05)
        assert pane.view is not None and pane.view.axis == "member" and pane.view.ensemble is not None
        row = [str(c) for c in pane.studies_table.get_row_at(0)]
        assert row[:3] == ["ens", "finished", "3/3 members"]
        assert str(pane.folds_table.columns[next(iter(pane.folds_table.columns))].label) == "member"
        assert pane.folds_table.row_count == 3
        summary = str(app.query_one("#study-summary", Static).render())
        assert "e_form: ensemble test MAE" in summary and "Spearman" in summary and "coGN" not in summary
        plot = app.query_one(StudyCurves)
        assert "val MAE per member" in plot.plt.build()
        await pilot.press("c")
        await pilot.pause()
        for _ in range(100):
            if "calibration on its test rows" in plot.plt.build():
                break
            await asyncio.sleep(0.05)
        text = plot.plt.build()
        assert "calibration on its test rows" in text and "|error| = std" in text
        await pilot.press("c")  # back to the curves
        await pilot.pause()
        assert "val MAE per member" in plot.plt.build()


def test_a_sweep_preset_is_refused_by_ensemble_and_matbench(project, capsys):
    p = project / "presets" / "sweep_demo.toml"  # the fixture copied the shipped presets
    for args in (["ensemble", str(p), "-k", "2"], ["matbench", str(p), "--folds", "0"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "a preset with a [sweep] table is a search" in err and "tui-ft sweep NAME --best" in err
    assert not (project / "logs" / ".studies").exists()
