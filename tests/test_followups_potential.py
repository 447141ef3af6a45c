"""Follow-ups of the potential work, no training: what an export of a potential says it holds,
the recorded data paths eval resolves (the project root's), the Runs table's numbers for a
potential run, a plan's joined curve keeps its unit, and a FIFO as ``logs/RUN/preset.toml``
(``tui-ft resume``) is refused at once instead of blocking.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_tui_potential import POT, write_potential_run
from test_tui_snapshots import write_history

from tui_ft.core.common.events import EventWriter, RunStarted, RunSummary, read_events
from tui_ft.core.data.dataset import DataError
from tui_ft.core.library import predict as predict_mod
from tui_ft.core.library.ckptfile import save_checkpoint
from tui_ft.core.library.export import export_payload
from tui_ft.tui.charts import RunSeries, chain_stages
from tui_ft.tui.panes import RunsPane
from tui_ft.tui.state import RunState

PROP = "demo-20250101-120000-a1b2"


def _payload(preset: dict) -> dict:
    return {"model_args": {}, "model_state": {"w": torch.zeros(1)},
            "meta": {"run_id": "r", "preset": preset, "data_source": preset.get("data", {}).get("source")}}


# ---------------------------------------------------------------- item 1: export's output line


def test_export_of_a_potential_says_energies_forces_stresses_with_units():
    info = export_payload(_payload({"data": {"source": "demo_potential"}, "task": {"kind": "potential"}}))["tui_ft"]
    out = info["output"]
    assert "predicted" not in out and "e_form" not in out
    for unit in ("eV/atom", "eV/Å", "GPa"):
        assert unit in out
    assert "sign" in out  # the stress sign convention crosses the file boundary
    assert info["target"] == "energy" and info["unit"] == "eV/atom"


def test_export_of_a_property_names_its_target_and_unit():
    info = export_payload(_payload({"data": {"source": "x.json", "target": "gap", "unit": "eV"}}))["tui_ft"]
    assert info["output"] == "the energy output 'e' is the predicted 'gap' in eV"


# ---------------------------------------------------------------- item 5: recorded paths are the root's


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A project root with data/train.json, data/test.json, data/frames.extxyz; the current folder elsewhere."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    for name in ("train.json", "test.json", "frames.extxyz"):
        (root / "data" / name).write_text("{}\n", encoding="utf-8")
    cwd = tmp_path / "elsewhere"
    (cwd / "data").mkdir(parents=True)  # a data/ here too: the recorded paths must not land in it
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.chdir(cwd)
    return root


def test_eval_takes_the_recorded_data_and_test_source_from_the_project_root(elsewhere, monkeypatch):
    seen = {}

    def training_data(path, target, **kw):
        seen["train"], seen["test"] = Path(path), kw.get("test_path")
        raise DataError("stop here")

    def other_data(path, target, **kw):
        raise AssertionError(f"{path} read as data other than the run's: the recorded data.source was not found")

    from tui_ft.core.data import sources

    monkeypatch.setattr(sources, "load_training_data", training_data)
    monkeypatch.setattr(sources, "load_source", other_data)
    payload = _payload({"data": {"source": "data/train.json", "target": "y", "test_source": "data/test.json"}})
    with pytest.raises(DataError, match="stop here"):
        predict_mod.evaluate(payload, str(elsewhere / "data" / "train.json"))
    assert seen["train"] == elsewhere / "data" / "train.json"
    assert Path(seen["test"]) == elsewhere / "data" / "test.json"


def test_eval_of_a_potential_knows_its_own_frames_by_the_root_relative_source(elsewhere, monkeypatch):
    monkeypatch.setattr(predict_mod, "load_model", lambda payload: (None, None))

    def own(meta):
        raise DataError("the run's own frames")

    monkeypatch.setattr(predict_mod, "own_potential_data", own)
    payload = _payload({"data": {"source": "data/frames.extxyz"}, "task": {"kind": "potential"}})
    with pytest.raises(DataError, match="the run's own frames"):
        predict_mod.evaluate_potential(payload, str(elsewhere / "data" / "frames.extxyz"))


# ---------------------------------------------------------------- item 6: the Runs table's numbers


def _state(root: Path, run_id: str) -> RunState:
    st = RunState(RunSummary(run_id))
    st.apply(read_events(root / "logs" / run_id / "events.jsonl"))
    return st


def test_runs_table_shows_a_potentials_force_maes_and_a_propertys_maes(tmp_path):
    root = tmp_path / "project"
    write_history(root)
    write_potential_run(root)
    pot = RunsPane.cells(_state(root, POT))
    # the best epoch is the last (4): val force MAE 120/5 + 10 = 34 meV/Å; the test's is 41.2 meV/Å
    assert (pot[4], pot[5]) == ("F 34 meV/Å", "F 41.2 meV/Å")
    st = _state(root, PROP)
    prop = RunsPane.cells(st)
    assert (prop[4], prop[5]) == (f"{st.summary.best_val_mae:.4f}", f"{st.summary.test_mae:.4f}")


def test_cli_runs_and_checkpoints_show_a_potentials_force_maes_and_export_every_named_metric(tmp_path, monkeypatch, capsys):
    import json

    from tui_ft import cli

    root = tmp_path / "project"
    write_history(root)
    write_potential_run(root)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith(POT))
    assert "F 34 meV/Å" in row and "F 41.2 meV/Å" in row  # best epoch 4's val force MAE, the test's
    prop = next(ln for ln in out.splitlines() if ln.startswith(PROP))
    assert "meV" not in prop
    assert cli.main(["checkpoints"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"{POT}@best"))
    assert "F 34 meV/Å" in row and "F 41.2 meV/Å" in row
    assert cli.main(["runs", "--format", "json"]) == 0
    got = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert got[POT]["test_force_mae"] == 41.2 and got[POT]["test_energy_mae"] == 7.5
    assert got[POT]["best_val_force_mae"] == pytest.approx(34.0) and got[POT]["best_val_stress_mae"] == pytest.approx(0.21)
    assert "test_force_mae" not in got[PROP]


def test_study_and_ensemble_tables_give_a_potential_members_force_mae_with_its_unit():
    from tui_ft.core.orchestrate.ensemble import member_table
    from tui_ft.core.orchestrate.study import FoldResult, fold_table

    pot = FoldResult(0, "finished", ["pot-m0"], best_val_mae=0.0085, test_mae=0.0098, epochs=5, wall_s=1.0,
                     val_metrics={"val_loss": 0.0085, "val_force_mae": 86.96, "val_energy_mae": 7.1},
                     test_metrics={"test_loss": 0.0098, "test_force_mae": 90.94, "test_energy_mae": 7.35})
    prop = FoldResult(1, "finished", ["prop-f1"], best_val_mae=0.0312, test_mae=0.0301, epochs=3, wall_s=1.0)
    assert (pot.val_text, pot.test_text) == ("F 86.96 meV/Å", "F 90.94 meV/Å")
    assert (prop.val_text, prop.test_text) == ("0.0312", "0.0301")
    for table in (member_table([pot, prop]), fold_table([pot, prop])):
        assert "F 86.96 meV/Å" in table[1] and "F 90.94 meV/Å" in table[1] and "0.0085" not in table[1]
        assert "0.0312" in table[2] and "0.0301" in table[2]


# ---------------------------------------------------------------- item 7: a plan's curve keeps its unit


def test_chained_stages_keep_the_runs_unit():
    a = RunSeries("a", epochs=[0, 1, 2], val=[3.0, 2.0, 1.0], unit="eV")
    b = RunSeries("b", epochs=[0, 1], val=[1.0, 0.5], unit="eV")
    joined, bounds = chain_stages([a, b])
    assert joined.unit == "eV" and bounds == [2] and joined.epochs == [0, 1, 2, 2, 3]
    assert chain_stages([a, RunSeries("old", epochs=[0], val=[1.0])])[0].unit == "eV"  # a stage without one
    assert chain_stages([RunSeries("x", epochs=[0], val=[1.0], unit="")])[0].unit == ""  # unitless stays unitless


# ---------------------------------------------------------------- item 8: a FIFO as a run's preset.toml

RUN = "demo-20250101-120000-f1f0"


def test_resume_refuses_a_fifo_as_the_runs_preset_at_once(tmp_path):
    root = tmp_path / "project"
    log_dir, ckpt_dir = root / "logs" / RUN, root / "checkpoints" / RUN
    log_dir.mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    with EventWriter(log_dir / "events.jsonl") as w:
        w.emit(RunStarted(RUN, preset_name="demo", preset={}, device="cpu", n_train=1, n_val=1, n_test=1, pid=0,
                          epochs=2, time=1.0))
    save_checkpoint(ckpt_dir / "last.pt", {"model_state": {"w": torch.zeros(1)}, "model_args": {},
                                           "meta": {"run_id": RUN, "kind": "last", "finished": False}})
    fifo = log_dir / "preset.toml"
    os.mkfifo(fifo)
    env = {**os.environ, "TUI_FT_HOME": str(root), "TUI_FT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # no writer ever opens the FIFO: a reader that opened it for reading would wait here forever
    proc = subprocess.run([sys.executable, "-m", "tui_ft", "resume", RUN], check=False, capture_output=True, text=True,
                          timeout=240, env=env, cwd=root)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(fifo) in lines[0] and "FIFO" in lines[0] and "regular file" in lines[0]
    assert fifo.exists() and not fifo.is_file()  # nothing replaced it


def test_read_text_regular_only_refuses_a_fifo_and_still_reads_one_by_default(tmp_path):
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    code = f"""
import os, threading
from tui_ft.core.config.tomlfile import TomlFileError, read_text
try:
    read_text({str(fifo)!r}, "preset", regular_only=True)
except TomlFileError as exc:
    print("refused:", exc)
def write():
    with open({str(fifo)!r}, "w") as fh:
        fh.write("a = 1\\n")
t = threading.Thread(target=write); t.start()
print("read:", read_text({str(fifo)!r}, "preset").strip())
t.join()
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("refused:") and "FIFO" in out[0] and str(fifo) in out[0]
    assert out[1] == "read: a = 1"  # ``--preset <(...)`` keeps working
