"""``tui-ft validate`` on the offline potential demo (EMT labels, not DFT): each check on a checkpoint of
one tiny training (made once for the module), a deliberately broken model whose MD is caught as
unstable, the mlearn layout's ground-state crystal, bad input, and the dashboard's view of the results.
Every check is kept tiny (a few steps, cells of a few atoms): the numbers are checked for what physics
and the code promise, not against stored values."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import module_project
from tui_ft import cli
from tui_ft.core.validate.events import read_events

ROOT = Path(__file__).resolve().parents[1]
SHARED_MLEARN = ROOT.parent / "shared" / "data" / "mlearn"

PRESET = """
[run]
name = "vdemo"
[data]
source = "demo_potential"
split = "random"
fraction = 0.1
test_limit = 6
[task]
kind = "potential"
stress_weight = 0.0
[finetune]
mode = "full"
[optim]
lr = 3e-4
[train]
epochs = 1
batch_size = 8
device = "cpu"
"""

TINY = ["--max-structures", "1", "--relax-steps", "25", "--eos-points", "5", "--md-steps", "15", "--nve-steps", "10",
        "--md-atoms", "8", "--max-frames", "4"]


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def home(tmp_path_factory, graph_cache_dir):
    """A project with one finished tiny potential run (``vdemo``): (root, run_id)."""
    root, mp = module_project(tmp_path_factory, graph_cache_dir, "validate")
    sigterm = signal.getsignal(signal.SIGTERM)
    (root / "presets" / "vdemo.toml").write_text(PRESET)
    rc, _, err = run_cli("--preset", root / "presets" / "vdemo.toml", "--plain")
    assert rc == 0, err
    (run_id,) = [d.name for d in (root / "logs").iterdir() if (d / "events.jsonl").is_file()]
    yield root, run_id
    signal.signal(signal.SIGTERM, sigterm)
    mp.undo()


@pytest.fixture(scope="module")
def validated(home):
    """Every check, tiny, against the pretrained CHGNet: (rc, stdout, stderr, results folder, results)."""
    root, run_id = home
    rc, out, err = run_cli("validate", f"{run_id}@best", *TINY)
    folder = root / "logs" / run_id / "validate-best"
    results = json.loads((folder / "results.json").read_text())
    return rc, out, err, folder, results


def test_validate_writes_results_summary_and_events_and_exits_0(validated):
    rc, out, err, folder, results = validated
    assert rc == 0, err
    assert results["finished"] is True and results["format"] == "tui-ft-validate/1"
    assert results["order"] == ["relax", "eos", "md", "drift", "errors"]
    assert all(results["checks"][c]["status"] == "ran" for c in results["order"]), results["checks"]
    summary = (folder / "summary.md").read_text()
    assert out == summary  # the CLI prints the same summary it writes
    for name in ("relaxation", "equation of state", "MD stability", "drift from the reference", "test errors"):
        assert f"| {name} | ran |" in summary
    assert "pretrained CHGNet" in summary and "meV/atom" in summary and "GPa" in summary
    events = read_events(folder / "events.jsonl")
    assert events[0].event == "start" and events[-1].event == "end"
    ends = {e.check: e.status for e in events if e.event == "check_end"}
    assert ends == dict.fromkeys(results["order"], "ran")
    assert any(e.event == "progress" and e.total > 0 for e in events)
    assert any(e.check == "md" and e.event == "progress" and "step" in e.text for e in events)  # during the run
    assert "validate relax:" in err and "Traceback" not in err


def test_relaxation_reports_energy_volume_lattice_steps_and_convergence(validated):
    results = validated[4]
    (row,) = results["checks"]["relax"]["rows"]
    assert row["dft"]["kind"].startswith("start frame")  # the EMT demo has no relaxed ground state
    start_v = row["dft"]["volume_A3_per_atom"]
    for role in ("finetuned", "reference"):
        r = row[role]
        assert isinstance(r["converged"], bool) and 0 <= r["steps"] <= 25
        assert abs(r["volume_A3_per_atom"] / start_v - 1) < 0.15  # Cu stays Cu: within 15 % of the EMT cell
        assert set(r["lattice"]) == {"a", "b", "c", "alpha", "beta", "gamma"}
        assert math.isclose(r["dvolume_pct"], 100 * (r["volume_A3_per_atom"] / start_v - 1), rel_tol=1e-9)
        if r["converged"]:
            assert r["max_force_eV_per_A"] < 0.05 + 1e-9


def test_eos_fits_birch_murnaghan_for_both_models_and_the_data_points(validated):
    results = validated[4]
    (row,) = results["checks"]["eos"]["rows"]
    for role in ("finetuned", "reference"):
        c = row[role]
        assert len(c["volumes_A3_per_atom"]) == 5 and "error" not in c
        assert min(c["volumes_A3_per_atom"]) <= c["v0_A3_per_atom"] <= max(c["volumes_A3_per_atom"])
        assert c["b0_GPa"] > 0
        # the fit is of these points: its minimum lies within 10 meV/atom of the lowest computed energy
        assert abs(c["e0_eV_per_atom"] - min(c["energies_eV_per_atom"])) < 0.01
    dft = row["dft"]  # the demo's volume-strained Cu cells (-4 .. +4 %): five volumes, fitted
    assert len(dft["volumes_A3_per_atom"]) >= 5 and any("strain" in i for i in dft["ids"])
    assert dft["b0_GPa"] > 0


def test_md_is_stable_for_the_finetuned_model_with_traces_and_nve_drift(validated):
    results = validated[4]
    md = results["checks"]["md"]
    assert md["verdict"] == "ok"
    t = md["rows"][0]["finetuned"]
    assert t["verdict"] == "stable" and t["why"] == "" and t["n_atoms"] >= 8
    assert t["steps_run"] == 25  # 15 NVT + 10 NVE
    tr = t["trace"]
    assert len(tr["time_fs"]) == len(tr["temperature_K"]) == len(tr["min_distance_A"]) == 26  # and the start
    assert tr["time_fs"][0] == 0 and tr["time_fs"][-1] == 25.0 and tr["time_fs"] == sorted(tr["time_fs"])
    assert set(tr["leg"]) == {"nvt", "nve"}
    assert t["min_distance_A"] > 0.5 * t["start_min_distance_A"]
    assert isinstance(t["nve_drift_meV_per_atom_per_ps"], float)


def test_drift_from_the_pretrained_model_on_the_builtin_sample(validated):
    results = validated[4]
    d = results["checks"]["drift"]
    assert len(d["rows"]) == 8 and "built-in sample" in d["source"]
    assert d["force_mad_meV_per_A"] >= 0 and math.isfinite(d["energy_mad_meV_per_atom"])
    assert d["energy_max_meV_per_atom"] >= d["energy_mad_meV_per_atom"]
    formulas = {r["formula"] for r in d["rows"]}
    assert {"Si", "NaCl", "GaAs"} <= formulas


def test_test_errors_per_target_on_the_runs_own_test_frames(validated):
    results = validated[4]
    e = results["checks"]["errors"]
    assert "test_predictions.csv" in e["which"] and e["frames"] == 4
    tuned, pre = e["models"]["finetuned"], e["models"]["reference"]
    for r in (tuned, pre):
        assert r["energy_mae_meV_per_atom"] >= 0 and r["force_mae_meV_per_A"] >= 0 and r["stress_mae_GPa"] >= 0
    # EMT's energy zero is not CHGNet's: the fine-tuned model (its AtomRef refit) is far closer in energy
    assert tuned["energy_mae_meV_per_atom"] < pre["energy_mae_meV_per_atom"]


def test_a_broken_model_is_caught_as_unstable_in_md_and_exits_0(home, tmp_path):
    import torch

    from tui_ft.core.library.ckptfile import load_checkpoint, save_checkpoint

    root, run_id = home
    payload = load_checkpoint(root / "checkpoints" / run_id / "best.pt")
    state = dict(payload["model_state"])
    for k in ("mlp.layers.7.weight", "mlp.layers.7.bias"):  # the readout's last layer, scaled by -10
        state[k] = state[k] * -10.0
    assert isinstance(state["mlp.layers.7.weight"], torch.Tensor)
    broken = tmp_path / "broken.pt"
    save_checkpoint(broken, {**payload, "model_state": state})
    out = tmp_path / "broken-validate"
    rc, stdout, err = run_cli("validate", broken, "--checks", "md", "--against", "none", "--md-steps", "80",
                              "--nve-steps", "0", "--md-atoms", "8", "--max-structures", "1", "--out", out)
    assert rc == 0, err  # an unstable run is a result, not an error
    results = json.loads((out / "results.json").read_text())
    md = results["checks"]["md"]
    t = md["rows"][0]["finetuned"]
    assert md["verdict"] == "fail" and t["verdict"] == "unstable", t["why"]
    assert any(w in t["why"] for w in ("exploded", "collapsed", "blew up", "not finite"))
    assert t["steps_run"] < 80  # stopped where it went wrong
    assert "| MD stability | ran | fail | unstable" in stdout


def _mlearn_file(path: Path) -> Path:
    """A tiny file in the mlearn layout: an EMT-labelled Cu ground-state crystal, five isotropic strains
    of it and two rattled copies (virial_stress in kbar, VASP sign, as mlearn stores it)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.units import GPa
    from pymatgen.io.ase import AseAtomsAdaptor

    entries = []
    rng = np.random.default_rng(1)
    cases = [("Elastic", "Ground state crystal", 1.0, 0.0)] + [
        ("Elastic", f"isotropic strain {x:+.2f}", (1 + x) ** (1 / 3), 0.0) for x in (-0.04, -0.02, 0.02, 0.04, 0.06)
    ] + [("AIMD-NVT", f"Snapshot {k} of 2 of AIMD NVT simulation at 300 K", 1.0, 0.05) for k in (1, 2)]
    for group, desc, scale, rattle in cases:
        a = bulk("Cu", "fcc", a=3.59 * scale, cubic=True)
        a.positions += rng.normal(0, rattle, a.positions.shape) if rattle else 0
        a.calc = EMT()
        s = a.get_stress() / GPa  # ASE sign, GPa, xx yy zz yz xz xy
        entries.append({"structure": AseAtomsAdaptor.get_structure(a).as_dict(), "group": group, "description": desc,
                        "num_atoms": 4, "outputs": {"energy": a.get_potential_energy(), "forces": a.get_forces().tolist(),
                                                    "virial_stress": (-10 * s).tolist()}})
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(entries, fh)
    return path


def test_mlearn_data_ground_state_is_relaxed_and_compared_with_dft(home, tmp_path):
    _root, run_id = home
    data = _mlearn_file(tmp_path / "Cu_training.json.gz")
    out = tmp_path / "ml"
    rc, stdout, err = run_cli("validate", f"{run_id}@best", "--data", data, "--checks", "relax,eos,errors",
                              "--max-structures", "1", "--relax-steps", "20", "--eos-points", "5", "--out", out)
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    (row,) = results["checks"]["relax"]["rows"]
    assert row["dft"]["kind"] == "DFT ground state"
    assert row["dft"]["id"] == "frame-0"
    assert "dvolume_pct" in row["finetuned"] and "da_pct" in row["finetuned"]
    dft = results["checks"]["eos"]["rows"][0]["dft"]
    assert "frame-0" in dft["ids"] and len(dft["ids"]) == 6 and dft["b0_GPa"] > 0  # the MD snapshots are left out
    e = results["checks"]["errors"]
    assert e["frames"] == 8 and "all 8 frames" in e["which"]  # another data source: every frame
    assert "DFT ground state" in stdout


def test_the_real_mlearn_files_ground_state_is_found(home):
    files = sorted(SHARED_MLEARN.glob("*_training.json.gz")) if SHARED_MLEARN.is_dir() else []
    if not files:
        pytest.skip("no mlearn data in ../shared/data/mlearn")
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.validate.structures import load_data, pick_targets

    path = SHARED_MLEARN / "Si_training.json.gz"
    path = path if path.is_file() else files[0]
    _, frames = load_data(str(path), Paths.default())
    (target,) = pick_targets(frames, [], 3)
    assert target.ground_state and target.frame.group == "Ground state crystal"
    assert len(target.structure) < len(target.frame.structure)  # relaxed in its primitive cell


@pytest.mark.parametrize("args, words", [
    (["nosuch@best"], ["nosuch@best", "no run or preset"]),
    (["{ref}", "--checks", "relax,foo"], ["--checks", "foo", "relax, eos, md, drift, errors"]),
    (["{ref}", "--md-steps", "0"], ["--md-steps 0", "at least 1"]),
    (["{ref}", "--data", "missing.extxyz"], ["--data missing.extxyz", "missing.extxyz"]),
    (["{ref}", "--structures", "missing.cif"], ["missing.cif", "no such structure file"]),
    (["{ref}", "--against", "other@best"], ["other@best"]),
    (["{ref}", "--out", "{file}"], ["exists and is not a folder"]),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(home, tmp_path, args, words):
    _root, run_id = home
    out = tmp_path / "never"
    (tmp_path / "a_file").write_text("x")
    argv = [a.format(ref=f"{run_id}@best", file=tmp_path / "a_file") for a in args]
    rc, stdout, err = run_cli("validate", *argv, *([] if "--out" in argv else ["--out", out]))
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), err
    assert "Traceback" not in err and stdout == "" and not out.exists()


async def test_the_library_opens_the_validation_view_with_checks_and_eos(home, validated):
    from conftest import pilot_ready, pilot_until
    from textual.widgets import DataTable

    from tui_ft.core.common.paths import Paths
    from tui_ft.tui.app import TuiFtApp
    from tui_ft.tui.validate_view import EosPlot, ValidateScreen

    _root, run_id = home
    app = TuiFtApp(Paths.default())
    async with app.run_test(size=(140, 48)) as pilot:
        await pilot_ready(pilot)
        await pilot.press("k")
        await pilot.pause()
        table = app.query_one("#ckpt-table", DataTable)
        table.move_cursor(row=table.get_row_index(f"{run_id}@best"), animate=False)
        table.focus()
        await pilot.pause()
        await pilot.press("v")
        await pilot_until(pilot, lambda: isinstance(app.screen, ValidateScreen), "the validation view")
        screen = app.screen
        checks = screen.query_one("#validate-checks", DataTable)
        await pilot_until(pilot, lambda: checks.row_count == 5, "the table of checks")
        assert [checks.get_row_at(i)[0] for i in range(5)] == [
            "relaxation", "equation of state", "MD stability", "drift from the reference", "test errors"]
        assert checks.get_row_at(2)[1:3] == ["ran", "ok"]
        plot = screen.query_one(EosPlot)
        assert set(plot.curves) == {*validated[4]["models"].values(), "data"}
        assert "EOS" in plot.title and all(len(v[0]) >= 5 for v in plot.curves.values())
        status = str(screen.query_one("#validate-status").render())
        assert "finished" in status and "pretrained CHGNet" in status
        await pilot.press("escape")
        await pilot_until(pilot, lambda: not isinstance(app.screen, ValidateScreen), "the view to close")


def test_errors_score_the_runs_held_out_test_file_when_its_preset_names_one(home, tmp_path):
    """A run trained with ``data.test_source`` (as presets/mlearn_si.toml) is scored on that file's frames."""
    from tui_ft.core.library.ckptfile import load_checkpoint, save_checkpoint

    root, run_id = home
    test_file = _mlearn_file(tmp_path / "Cu_test.json.gz")
    payload = load_checkpoint(root / "checkpoints" / run_id / "best.pt")
    meta = dict(payload["meta"])
    meta["preset"] = {**meta["preset"], "data": {**meta["preset"]["data"], "test_source": str(test_file)}}
    ckpt = tmp_path / "with_test_source.pt"
    save_checkpoint(ckpt, {**payload, "meta": meta})
    out = tmp_path / "held"
    rc, _stdout, err = run_cli("validate", ckpt, "--checks", "errors", "--against", "none", "--out", out)
    assert rc == 0, err
    e = json.loads((out / "results.json").read_text())["checks"]["errors"]
    assert e["frames"] == 8 and "held-out test file Cu_test.json.gz" in e["which"]
    assert e["models"]["finetuned"]["n_forces"] == 8 and "reference" not in e["models"]


def test_a_property_checkpoint_is_refused_in_one_line(home, tmp_path):
    from tui_ft.core.library.ckptfile import load_checkpoint, save_checkpoint

    root, run_id = home
    payload = load_checkpoint(root / "checkpoints" / run_id / "best.pt")
    meta = dict(payload["meta"])
    meta["preset"] = {k: v for k, v in meta["preset"].items() if k != "task"}  # a property run's preset
    ckpt = tmp_path / "property.pt"
    save_checkpoint(ckpt, {**payload, "meta": meta})
    rc, stdout, err = run_cli("validate", ckpt, "--out", tmp_path / "never")
    assert rc == 2 and "not a potential's checkpoint" in err and len(err.strip().splitlines()) == 1, err
    assert stdout == "" and not (tmp_path / "never").exists()


def test_given_structure_files_are_relaxed_instead_of_the_datas(home, tmp_path):
    from pymatgen.core import Lattice, Structure

    _root, run_id = home
    cif = tmp_path / "cu_big.cif"
    Structure(Lattice.cubic(3.75), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]).to(filename=str(cif))
    out = tmp_path / "given"
    rc, _stdout, err = run_cli("validate", f"{run_id}@best", "--structures", cif, "--checks", "relax", "--against",
                               "none", "--relax-steps", "40", "--out", out)
    assert rc == 0, err
    (row,) = json.loads((out / "results.json").read_text())["checks"]["relax"]["rows"]
    assert row["name"] == "cu_big" and "dft" not in row and row["n_atoms"] == 1  # its primitive cell
    t = row["finetuned"]
    assert t["steps"] >= 1 and t["volume_A3_per_atom"] < 3.75 ** 3 / 4  # a 3.75 Å cell is too large for Cu: it shrinks
