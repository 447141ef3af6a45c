"""Optional loggers of ``[log]``: TensorBoard and MLflow for real (files under tmp),
W&B in offline mode when installed; off by default and never imported then; a
missing package is one message naming the pip extra."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tui_ft.core.common.events import EpochEnd, RunFailed, RunFinished, RunStarted
from tui_ft.core.train.loggers import RunLoggers, check_available, missing_message
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import LogCfg, parse_preset

PRESET = """[run]
name = "lg"
[data]
source = "demo"
[finetune]
mode = "head"
[optim]
lr = 0.001
[train]
epochs = 2
device = "cpu"
"""


def _events(rid: str = "lg-1"):
    yield RunStarted(rid, preset_name="lg", preset={}, device="cpu", n_train=3, n_val=1, n_test=1, unit="eV/atom")
    yield EpochEnd(rid, epoch=0, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5, best_epoch=0)
    yield EpochEnd(rid, epoch=1, train_mae=0.3, val_mae=0.4, lr=1e-3, seconds=0.1, best_val_mae=0.4, best_epoch=1)
    yield EpochEnd(rid, epoch=2, train_mae=0.2, val_mae=0.45, lr=1e-3, seconds=0.1, best_val_mae=0.4, best_epoch=1)
    yield RunFinished(rid, test_mae=0.42, best_epoch=1, best_val_mae=0.4, seconds=1.0)


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_off_by_default_and_not_imported():
    p = parse_preset(PRESET)
    assert p.log == LogCfg() and "log" not in p.to_dict()
    code = ("import sys; from tui_ft.core.config.presets import parse_preset; import tui_ft.core.train.engine; "
            "print(any(m in sys.modules for m in ('tui_ft.core.train.loggers', 'mlflow', 'wandb', 'torch.utils.tensorboard')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.stdout.strip() == "False", res.stderr[-2000:]


def test_missing_package_names_the_extra(monkeypatch):
    cfg = parse_preset(PRESET + "[log]\nmlflow = true\ntensorboard = true\n").log
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    msgs = check_available(cfg)
    assert msgs == [missing_message("mlflow")]
    assert "pip install 'tui-ft[mlflow]'" in msgs[0]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_writes_epoch_scalars(project, tmp_path):
    cfg = LogCfg(tensorboard=True, tensorboard_dir=str(tmp_path / "tb"))
    lg = RunLoggers(cfg, "lg-1", Paths.default(), preset=parse_preset(PRESET))
    for ev in _events():
        lg.handle(ev)
    assert lg.closed
    sc = _scalars(tmp_path / "tb")
    assert sc["val_mae"] == [(0, pytest.approx(0.5)), (1, pytest.approx(0.4)), (2, pytest.approx(0.45))]
    assert [s for s, _ in sc["train_mae"]] == [1, 2]
    assert sc["test_mae"] == [(1, pytest.approx(0.42))]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_file_store_metrics(project, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = LogCfg(mlflow=True, mlflow_tracking_uri=uri, mlflow_experiment="exp1")
    lg = RunLoggers(cfg, "lg-1", Paths.default(), preset=parse_preset(PRESET))
    for ev in _events():
        lg.handle(ev)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp1")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "lg-1" and run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "val_mae")
    assert [(m.step, round(m.value, 6)) for m in hist] == [(0, 0.5), (1, 0.4), (2, 0.45)]
    assert run.data.metrics["test_mae"] == pytest.approx(0.42)
    assert run.data.params["optim.lr"] == "0.001"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (pip install 'tui-ft[wandb]')")
def test_wandb_offline(project, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LogCfg(wandb=True, wandb_mode="offline", wandb_project="p")
    paths = Paths.default()
    lg = RunLoggers(cfg, "lg-1", paths, preset=parse_preset(PRESET))
    for ev in _events():
        lg.handle(ev)
    assert lg.closed and "wandb" in lg.active  # not switched off by an error
    runs = list((paths.run_log_dir("lg-1") / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_failed_run_closes_loggers_and_a_broken_logger_is_switched_off(project, tmp_path):
    said = []
    cfg = LogCfg(tensorboard=True, tensorboard_dir=str(tmp_path / "tb"))
    lg = RunLoggers(cfg, "lg-1", Paths.default(), preset=parse_preset(PRESET), say=lambda t, lvl="info": said.append(t))
    evs = list(_events())
    lg.handle(evs[0])
    lg.active["tensorboard"].w.close()
    lg.active["tensorboard"].epoch = None  # the next call raises: switched off with one warning
    lg.handle(evs[1])
    assert "tensorboard" not in lg.active and len(said) == 1 and "switched off" in said[0]
    lg.handle(RunFailed("lg-1", message="x"))
    assert lg.closed


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard and mlflow needed")
def test_real_run_logs_to_tensorboard_and_mlflow(project, capsys):
    from mlflow.tracking import MlflowClient

    from tui_ft import cli
    from tui_ft.core.common.events import read_events

    path = project / "presets" / "lg.toml"
    path.write_text(PRESET + "[log]\ntensorboard = true\nmlflow = true\n", encoding="utf-8")
    assert cli.main(["run", str(path), "--plain"]) == 0, capsys.readouterr().err[-2000:]
    (run_dir,) = (project / "logs").glob("lg-*")
    evs = read_events(run_dir / "events.jsonl")
    val = {e.epoch: e.val_mae for e in evs if isinstance(e, EpochEnd)}
    sc = _scalars(run_dir / "tensorboard")
    assert {s: v for s, v in sc["val_mae"]} == pytest.approx(val)
    client = MlflowClient(tracking_uri=f"sqlite:///{(project / 'logs' / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("tui-ft").experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.metrics["test_mae"] == pytest.approx(evs[-1].test_mae)
