"""Optional metric loggers of a run: TensorBoard, MLflow and Weights & Biases (``[log]``).

All are off by default. The engine creates :class:`RunLoggers` only when one is
enabled and passes it every event of the run (``Trainer.emit``), so this module
and the loggers' packages are never imported otherwise. Each logger writes the
epoch metrics (``val_mae``, ``train_mae``, ``best_val_mae``, ``lr``,
``epoch_seconds``, by epoch) and the test MAE at the end:

``tensorboard``  ``torch.utils.tensorboard.SummaryWriter`` into ``log.tensorboard_dir``
                 (default ``logs/<run_id>/tensorboard``); needs the ``tensorboard`` package.
``mlflow``       a run in experiment ``log.mlflow_experiment`` of ``log.mlflow_tracking_uri``
                 (default: the SQLite file ``logs/mlflow.db``: MLflow 3 keeps its
                 ``./mlruns`` file store in maintenance mode), through ``MlflowClient``.
``wandb``        ``wandb.init(mode=log.wandb_mode, project=log.wandb_project)``;
                 ``mode = "offline"`` writes under ``logs/<run_id>/wandb`` without network.

A missing package is one message naming the pip extra (:func:`check_available`,
called before a run starts; :class:`LoggerMissing` if it still happens). A logger
that fails to start (its folder is a file or read-only, its store cannot be opened)
or fails while the run is going is switched off with one warning: metrics are
never worth a failed run.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
METRICS = ("val_mae", "train_mae", "best_val_mae", "lr", "seconds")


class LoggerError(Exception):
    """A logger that cannot start (its package is missing, its store cannot be opened)."""


class LoggerMissing(LoggerError):
    """A logger whose package is not installed: the run stops before its first epoch (exit 2 in
    the pre-run checks, :func:`check_available`); every other start-up failure switches the logger off."""


def enabled(cfg) -> list[str]:
    """The loggers ``[log]`` turns on, in a fixed order."""
    return [name for name in ("tensorboard", "mlflow", "wandb") if getattr(cfg, name)]


def missing_message(name: str) -> str:
    return (f"[log] {name} = true needs the {EXTRAS[name]!r} package, which is not installed: "
            f"pip install 'tui-ft[{name}]' (or set {name} = false)")


def check_available(cfg) -> list[str]:
    """One message per enabled logger whose package is not installed (nothing is imported)."""
    return [missing_message(name) for name in enabled(cfg) if importlib.util.find_spec(EXTRAS[name]) is None]


def _epoch_metrics(ev) -> dict[str, float]:
    out = {"val_mae": ev.val_mae, "best_val_mae": ev.best_val_mae, "lr": ev.lr, "epoch_seconds": ev.seconds}
    if ev.train_mae is not None:
        out["train_mae"] = ev.train_mae
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": "0.001"}`` (the loggers' parameters are text)."""
    from tui_ft.core.library.query import flatten

    return {k: str(v) for k, v in flatten(d, prefix).items()}


class _TensorBoard:
    def __init__(self, cfg, run_id: str, paths, preset) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LoggerMissing(missing_message("tensorboard")) from None
        self.dir = Path(cfg.tensorboard_dir).expanduser() if cfg.tensorboard_dir else paths.run_log_dir(run_id) / "tensorboard"
        self.w = SummaryWriter(log_dir=str(self.dir))
        from tui_ft.core.config.dump import dump_preset

        self.w.add_text("preset", "```\n" + dump_preset(preset) + "\n```")

    def epoch(self, ev) -> None:
        for k, v in _epoch_metrics(ev).items():
            self.w.add_scalar(k, v, ev.epoch)
        self.w.flush()

    def finished(self, ev) -> None:
        if ev.test_mae is not None:
            self.w.add_scalar("test_mae", float(ev.test_mae), ev.best_epoch)

    def close(self, status: str) -> None:  # noqa: ARG002
        self.w.close()


class _MLflow:
    def __init__(self, cfg, run_id: str, paths, preset) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise LoggerMissing(missing_message("mlflow")) from None
        # default: an SQLite store in logs/ (MLflow 3 keeps its ./mlruns file store in maintenance mode)
        paths.logs.mkdir(parents=True, exist_ok=True)
        uri = cfg.mlflow_tracking_uri or f"sqlite:///{(paths.logs / 'mlflow.db').resolve()}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(cfg.mlflow_experiment)
            artifacts = None if cfg.mlflow_tracking_uri else (paths.logs / ".mlflow-artifacts").resolve().as_uri()
            exp_id = (exp.experiment_id if exp is not None
                      else self.client.create_experiment(cfg.mlflow_experiment, artifact_location=artifacts))
            self.run = self.client.create_run(exp_id, run_name=run_id, tags={"tui_ft.run_id": run_id})
            params = _flat(preset.to_dict())
            from mlflow.entities import Param

            self.client.log_batch(self.run.info.run_id, params=[Param(k, v[:500]) for k, v in params.items()])
        except Exception as exc:  # noqa: BLE001 - any store problem is one message
            raise LoggerError(f"[log] mlflow: cannot open the tracking store {uri} ({type(exc).__name__}: {exc})") from None
        self.uri = uri

    def epoch(self, ev) -> None:
        rid = self.run.info.run_id
        for k, v in _epoch_metrics(ev).items():
            self.client.log_metric(rid, k, v, step=ev.epoch)

    def finished(self, ev) -> None:
        if ev.test_mae is not None:
            self.client.log_metric(self.run.info.run_id, "test_mae", float(ev.test_mae), step=ev.best_epoch)

    def close(self, status: str) -> None:
        state = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}.get(status, "FINISHED")
        self.client.set_terminated(self.run.info.run_id, status=state)


class _WandB:
    def __init__(self, cfg, run_id: str, paths, preset) -> None:
        try:
            import wandb
        except ImportError:
            raise LoggerMissing(missing_message("wandb")) from None
        d = paths.run_log_dir(run_id)
        d.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=cfg.wandb_project, mode=cfg.wandb_mode, name=run_id, id=None,
                                  dir=str(d), config=preset.to_dict(), reinit=True)
        except Exception as exc:  # noqa: BLE001
            raise LoggerError(f"[log] wandb: cannot start ({type(exc).__name__}: {exc})") from None

    def epoch(self, ev) -> None:
        self.run.log({**_epoch_metrics(ev), "epoch": ev.epoch}, step=ev.epoch)

    def finished(self, ev) -> None:
        if ev.test_mae is not None:
            self.run.summary["test_mae"] = float(ev.test_mae)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


_CLASSES = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


class RunLoggers:
    """The enabled loggers of one run, fed the run's events through :meth:`handle`.

    They start on ``run_started`` (a missing package raises :class:`LoggerMissing`,
    which fails the run before its first epoch; any other logger that cannot start is
    switched off with a warning) and close on the run's final event.
    """

    def __init__(self, cfg, run_id: str, paths, *, preset, say: Callable[[str, str], None] | None = None):
        self.cfg, self.run_id, self.paths, self.preset = cfg, run_id, paths, preset
        self.say = say or (lambda text, level="info": None)
        self.active: dict[str, Any] = {}
        self.off: set[str] = set()  # loggers that could not start
        self.closed = False

    def start(self) -> None:
        """Start each enabled logger; one that cannot start is switched off with one warning
        (only a missing package, :class:`LoggerMissing`, stops the run)."""
        for name in enabled(self.cfg):
            if name in self.active or name in self.off:
                continue
            try:
                self.active[name] = _CLASSES[name](self.cfg, self.run_id, self.paths, self.preset)
            except LoggerMissing:
                raise
            except Exception as exc:  # noqa: BLE001 - a logger must not fail the run
                self.off.add(name)
                why = str(exc).removeprefix(f"[log] {name}: ") if isinstance(exc, LoggerError) else f"cannot start: {type(exc).__name__}: {exc}"
                self.say(f"[log] {name} switched off: {why}", "warning")

    def _each(self, method: str, *args) -> None:
        for name, lg in list(self.active.items()):
            try:
                getattr(lg, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a logger must not fail the run
                del self.active[name]
                self.say(f"[log] {name} switched off: {type(exc).__name__}: {exc}", "warning")

    def handle(self, ev) -> None:
        from tui_ft.core.common.events import (
            EpochEnd,
            RunFailed,
            RunFinished,
            RunInterrupted,
            RunStarted,
        )

        if self.closed:
            return
        if isinstance(ev, RunStarted):
            self.start()
        elif isinstance(ev, EpochEnd):
            self._each("epoch", ev)
        elif isinstance(ev, RunFinished):
            self._each("finished", ev)
            self.close("finished")
        elif isinstance(ev, RunFailed):
            self.close("failed")
        elif isinstance(ev, RunInterrupted):
            self.close("interrupted")

    def close(self, status: str) -> None:
        if not self.closed:
            self.closed = True
            self._each("close", status)
