"""Issue 14 through the CLI: own data in (CIF folder + id_prop.csv, extxyz), model out
(export, predict), metrics out (runs/history --format), and malformed data refused.

The demo structures are written as a Matbench JSON, a CIF folder with id_prop.csv and
an extxyz file; head-mode runs of 2 epochs train on them through ``tui_ft.cli.main``
(the same entry point as the ``tui-ft`` command; one run goes through a subprocess).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_demo_forms

from tui_ft import cli
from tui_ft.core.common.events import RunFinished, RunStarted, read_events

N = 60  # demo rows: 12 test rows in Matbench fold 0


def _write_forms(root: Path, n: int = N) -> dict:
    return write_demo_forms(root, n)


def _preset(project: Path, name: str, source: Path | str, extra: str = "") -> Path:
    p = project / "presets" / f"{name}.toml"
    p.write_text(f"""[run]
name = "{name}"

[data]
source = "{source}"
target = "e_form"
{extra}
[finetune]
mode = "head"

[optim]
lr = 0.001

[train]
epochs = 2
batch_size = 8
device = "cpu"
""", encoding="utf-8")
    return p


def _train(project: Path, name: str, source, capsys, extra: str = "") -> tuple[Path, list]:
    rc = cli.main(["run", str(_preset(project, name, source, extra)), "--plain"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    (run_dir,) = [d for d in (project / "logs").iterdir() if d.name.startswith(name + "-")]
    return run_dir, read_events(run_dir / "events.jsonl")


def _csv_rows(text: str) -> tuple[str, list[dict]]:
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    return lines[0], list(csv.DictReader(io.StringIO("\n".join(lines[1:]))))


@pytest.mark.slow
def test_own_data_trains_predicts_and_matches_matbench(project, tmp_path, capsys):
    forms = _write_forms(tmp_path / "forms")
    runs = {}
    for name, key in (("mbrun", "matbench"), ("cifrun", "cif"), ("xyzrun", "xyz")):
        run_dir, evs = _train(project, name, forms[key], capsys)
        started = next(e for e in evs if isinstance(e, RunStarted))
        fin = evs[-1]
        assert isinstance(fin, RunFinished) and fin.test_mae is not None
        assert started.unit == "eV/atom" and fin.unit == "eV/atom"
        test_ids = [r["id"] for r in csv.DictReader(open(fin.predictions, encoding="utf-8"))]
        runs[name] = (started, fin, test_ids, run_dir)
    # the same rows in three forms: the same splits and the same test MAE
    mb, cif, xyz = runs["mbrun"], runs["cifrun"], runs["xyzrun"]
    for other in (cif, xyz):
        assert (other[0].n_train, other[0].n_val, other[0].n_test) == (mb[0].n_train, mb[0].n_val, mb[0].n_test)
        assert other[2] == mb[2]
        assert other[1].test_mae == pytest.approx(mb[1].test_mae, abs=1e-5)

    # predict on each form: id,prediction,target,error with the unit in the header comment
    for name, key in (("cifrun", "cif"), ("xyzrun", "xyz")):
        out = tmp_path / f"{name}.csv"
        assert cli.main(["predict", f"{name}@best", str(forms[key]), "--out", str(out), "--device", "cpu"]) == 0
        capsys.readouterr()
        head, rows = _csv_rows(out.read_text())
        assert "unit: eV/atom" in head
        assert len(rows) == N and list(rows[0]) == ["id", "prediction", "target", "error"]
        err = [float(r["prediction"]) - float(r["target"]) for r in rows]
        assert np.allclose(err, [float(r["error"]) for r in rows])
        # the run's own test predictions agree with predict's on the same ids
        own = {r["id"]: float(r["pred"]) for r in csv.DictReader(open(runs[name][1].predictions, encoding="utf-8"))}
        got = {r["id"]: float(r["prediction"]) for r in rows}
        assert max(abs(got[i] - own[i]) for i in own) < 1e-5

    # eval: the checkpoint's own test rows by default, with the unit; --rows all warns
    assert cli.main(["eval", "cifrun@best", "--data", str(forms["cif"]), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("mae ") and "eV/atom" in out and f"on {cif[0].n_test} structures" in out
    assert float(out.split()[1]) == pytest.approx(cif[1].test_mae, abs=1e-4)
    assert cli.main(["eval", "cifrun@best", "--data", str(forms["cif"]), "--rows", "all", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"on {N} structures" in out and "training and validation rows are included" in err
    # another file: all its rows; --rows test there is refused
    assert cli.main(["eval", "cifrun@best", "--data", str(forms["xyz"]), "--rows", "test"]) == 2
    assert "--rows all" in capsys.readouterr().err

    # metrics out: one row per run (all columns), one row per epoch
    assert cli.main(["runs", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["run_id"] for r in rows} == {v[3].name for v in runs.values()}
    assert {"status", "best_val_mae", "test_mae", "device", "unit"} <= set(rows[0])
    assert cli.main(["runs", "--format", "json"]) == 0
    js = json.loads(capsys.readouterr().out)
    by_id = {r["run_id"]: r for r in js}
    assert by_id[cif[3].name]["test_mae"] == pytest.approx(cif[1].test_mae)
    assert cli.main(["history", cif[3].name, "--format", "csv"]) == 0
    hist = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["epoch"]) for r in hist] == [0, 1, 2]
    assert float(hist[-1]["best_val_mae"]) == pytest.approx(cif[1].best_val_mae)
    assert cli.main(["history", "no-such-run"]) == 2


@pytest.mark.slow
def test_export_round_trip_through_cli(project, tmp_path, capsys, tui_ft_cli):
    from chgnet.model import CHGNet

    forms = _write_forms(tmp_path / "forms", 40)
    run_dir, evs = _train(project, "exp", forms["cif"], capsys)
    out = tmp_path / "model.pt"
    res = tui_ft_cli("export", "exp@best", out, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    preds = tmp_path / "p.csv"
    res = tui_ft_cli("predict", "exp@best", forms["cif"], "--out", preds, "--device", "cpu", timeout=600)
    assert res.returncode == 0, res.stderr
    _, rows = _csv_rows(preds.read_text())
    from tui_ft.core.data.sources import load_source

    ds = load_source(forms["cif"], "e_form")
    model = CHGNet.from_file(str(out))
    theirs = model.predict_structure([ds.structures[i] for i in range(len(ds))], task="e", batch_size=8)
    a = np.array([float(r["prediction"]) for r in rows])
    b = np.array([float(t["e"]) for t in theirs])
    assert [r["id"] for r in rows] == ds.ids
    assert np.abs(a - b).max() < 1e-6
    # a bad checkpoint or a folder as the output: exit 2, one line
    assert cli.main(["export", str(tmp_path / "nope.pt"), str(tmp_path / "x.pt")]) == 2
    assert cli.main(["export", "exp@best", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is a folder" in err[1]


def _no_run_written(project: Path) -> None:
    logs = project / "logs"
    assert not logs.exists() or not any(logs.iterdir())
    assert not (project / "checkpoints").exists() or not any((project / "checkpoints").iterdir())


@pytest.mark.parametrize("fault", ["missing_cif", "bad_cif", "bad_number", "frame_without_target"])
def test_malformed_own_data_one_line_nothing_written(project, tmp_path, capsys, fault):
    forms = _write_forms(tmp_path / "forms", 12)
    src: Path = forms["cif"]
    if fault == "missing_cif":
        (src / "demo-0004.cif").unlink()
        want = ["demo-0004", "line 4", "no structure file"]
    elif fault == "bad_cif":
        (src / "demo-0005.cif").write_text("data_x\n_cell_length_a oops\n")
        want = ["demo-0005", "line 5", "demo-0005.cif"]
    elif fault == "bad_number":
        text = (src / "id_prop.csv").read_text().replace("demo-0006,", "demo-0006,1.2.3#", 1)
        (src / "id_prop.csv").write_text(text)
        want = ["demo-0006", "line 6", "not a number"]
    else:
        import ase.io

        frames = ase.io.read(forms["xyz"], index=":")
        del frames[3].info["e_form"]
        src = tmp_path / "bad.extxyz"
        ase.io.write(src, frames, format="extxyz")
        want = ["demo-0004", "frame 3", "e_form"]
    rc = cli.main(["run", str(_preset(project, "bad", src)), "--plain"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    named = [ln for ln in lines if all(w in ln for w in want)]
    assert len(named) == 1, lines
    assert len(lines) == 2 and "skip_bad_rows" in lines[1]  # the one problem, then what to do
    _no_run_written(project)


def test_unreadable_source_is_one_line(project, tmp_path, capsys):
    bad = tmp_path / "junk.extxyz"
    bad.write_text("this is not\nan extxyz file\n")
    assert cli.main(["run", str(_preset(project, "junk", bad)), "--plain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    folder = tmp_path / "nofolder"
    folder.mkdir()
    assert cli.main(["run", str(_preset(project, "nof", folder)), "--plain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "id_prop.csv" in err[0]
    _no_run_written(project)


@pytest.mark.slow
def test_skip_bad_rows_trains_on_the_rest_and_reports_once(project, tmp_path, capsys):
    forms = _write_forms(tmp_path / "forms", 40)
    (forms["cif"] / "demo-0004.cif").unlink()
    run_dir, evs = _train(project, "skip", forms["cif"], capsys, extra="skip_bad_rows = true\n")
    warnings = [e for e in evs if getattr(e, "level", "") == "warning" and "demo-0004" in e.text]
    assert len(warnings) == 1 and "1 of 40 rows left out of every split" in warnings[0].text
    started = next(e for e in evs if isinstance(e, RunStarted))
    assert "demo-0004" in started.skipped
    assert started.n_train + started.n_val + started.n_test == 39


def test_predict_failures_listed_exit_1(project, tmp_path, capsys):
    """Structure files: the broken one is named, the others written; exit 1."""
    from chgnet.model import CHGNet

    from tui_ft.core.library.ckptfile import save_checkpoint

    forms = _write_forms(tmp_path / "forms", 4)
    m = CHGNet.load(verbose=False)
    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, {"model_state": m.state_dict(), "model_args": dict(m.model_args), "meta": {}})
    folder = tmp_path / "structs"
    folder.mkdir()
    for f in sorted(forms["cif"].glob("*.cif")):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "demo-0002.cif").write_text("not a cif\n")
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(ck), str(folder), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("[error]")] == [
        ln for ln in err.splitlines() if ln.startswith("[error] demo-0002.cif: ")]
    assert "predicted 3 of 4 structures" in err
    _, rows = _csv_rows(out.read_text())
    assert [r["id"] for r in rows] == ["demo-0001.cif", "demo-0003.cif", "demo-0004.cif"]
    assert list(rows[0]) == ["id", "prediction"]


def test_chart_labels_carry_the_recorded_unit(tmp_path):
    """Charts label their axes with the unit the run recorded; older runs (no unit) keep eV/atom."""
    from tui_ft.core.common.events import EpochEnd, EventWriter
    from tui_ft.tui.charts import read_predictions, series_from_history, unit_suffix

    def ep(unit):
        return EpochEnd("r", epoch=0, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5,
                        best_epoch=0, unit=unit)

    assert series_from_history("r", [ep("log10(GPa)")]).unit == "log10(GPa)"
    assert unit_suffix(series_from_history("r", [ep(None)]).unit) == " (eV/atom)"
    assert unit_suffix("") == "" and unit_suffix("eV") == " (eV)"
    run = tmp_path / "r"
    run.mkdir()
    with EventWriter(run / "events.jsonl") as w:
        w.emit(RunStarted("r", preset_name="p", preset={}, device="cpu", n_train=1, n_val=1, n_test=1, unit="meV/atom"))
    (run / "test_predictions.csv").write_text("id,true,pred\na,1.0,1.5\n")
    assert read_predictions(run / "test_predictions.csv").unit == "meV/atom"
