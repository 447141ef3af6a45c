"""Training goes the right way: the loss falls and validation improves on epoch 0.

The other training tests check repeatability, that weights changed and that the
batch split equals the unsplit pass; an optimizer step with the wrong sign would
pass all of them. These tests run the real engine (``run_training``) and check
the direction of learning from the ``epoch_end`` events:

- the training error (``train_mae``, the engine's per-epoch training metric of
  the loss it minimises) of the last epoch is below that of the first training
  epoch, and
- the best validation MAE of the updated epochs (1, 2, ...) is below epoch 0's
  (epoch 0 = validation before any update, after the AtomRef refit).

``test_flipped_loss_sign_fails_the_checks`` patches the engine's loss function
to return ``-loss`` (gradient ascent) and shows the same checks then fail, in
head and full mode, so the checks do catch a model that learns the wrong way.

On the dev data (skipped when ``../shared/data/mp_e_form_dev.json.gz`` is
absent) the seed plan's head preset at fraction 0.1 must end within a margin of
the test MAE published in BENCHMARKS.md; the margin comes from the run-to-run
spread measured over training seeds (see ``DEV_HEAD_MARGIN``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_ft.core.task import property as property_task
from tui_ft.core.train.engine import run_training
from tui_ft.core.common.events import EpochEnd
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import load_preset
from tui_ft.core.library.runs import new_run_id

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "mp_e_form_dev.json.gz"

# BENCHMARKS.md, section 2, row "seed-head" at fraction 0.1: presets/head_finetune_freeze.toml
# (head, lr 1e-3, 3 epochs, batch 8, AtomRef refit) on fold 0, 1,000 test rows.
DEV_HEAD_TEST_MAE = 0.0472
# Run-to-run spread of that figure, measured with the real engine over train.seed 0, 1, 2 (the
# shuffle order; the data split is fixed by data.seed): test MAE 0.04717 / 0.04779 / 0.04690
# (range 0.0009, sample std 0.00046); run1.toml (same head settings, up to 10 epochs, patience 3):
# 0.04719 / 0.04656 / 0.04744. The guard allows 1.5e-3, about 3 standard deviations of that spread
# (the test runs seed 0 only, so another seed's shuffle order -- or another BLAS -- is what it must
# tolerate). The margin alone cannot tell learning from none (the AtomRef refit alone gives 0.0479,
# BENCHMARKS.md row "atomref"); the learning-direction check in the same test does.
DEV_HEAD_MARGIN = 1.5e-3


def learning_direction_failures(history: list[EpochEnd]) -> list[str]:
    """What is wrong with the direction of learning in a run's epochs (empty: it learned)."""
    eps = sorted(history, key=lambda e: e.epoch)
    trains = [e.train_mae for e in eps if e.train_mae is not None]
    if not eps or eps[0].epoch != 0 or len(trains) < 2:
        return [f"need epoch 0 and at least 2 training epochs, got epochs {[e.epoch for e in eps]}"]
    problems = []
    if not trains[-1] < trains[0]:
        problems.append(f"training error did not fall: first training epoch {trains[0]:.5f}, last {trains[-1]:.5f}")
    best_after = min(e.val_mae for e in eps if e.epoch > 0)
    if not best_after < eps[0].val_mae:
        problems.append(f"best validation MAE {best_after:.5f} is not below epoch 0's {eps[0].val_mae:.5f}")
    return problems


def _demo(mode: str, **changes):
    p = load_preset(ROOT / "presets" / "demo.toml")
    base = {"run.name": f"learn-{mode}", "finetune.mode": mode, "train.device": "cpu"}
    if mode == "head":
        base.update({"train.epochs": 4, "train.batch_size": 8})
    else:  # full mode: a quarter of the demo data, 2 epochs (each epoch runs the whole network)
        base.update({"optim.lr": 1e-4, "train.epochs": 2, "train.batch_size": 8, "data.fraction": 0.25,
                     "data.test_limit": 16})
    base.update(changes)
    return p.with_changes(base)


def _run(preset):
    paths = Paths.default()
    res = run_training(preset, run_id=new_run_id(preset.name, paths), paths=paths)
    assert res.status == "finished", res.message
    return res


def _flip_loss_sign(monkeypatch):
    real = property_task._loss_fn

    def flipped(name):
        fn = real(name)
        return lambda pred, target, **kw: -fn(pred, target, **kw)

    monkeypatch.setattr(property_task, "_loss_fn", flipped)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["head", "full"])
def test_training_lowers_the_loss_and_beats_epoch_0(mode, project):
    res = _run(_demo(mode))
    assert [e.epoch for e in res.history] == list(range(len(res.history)))
    assert learning_direction_failures(res.history) == []
    assert res.best_epoch > 0 and res.best_val_mae < res.history[0].val_mae


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["head", "full"])
def test_flipped_loss_sign_fails_the_checks(mode, project, monkeypatch):
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "1")  # the unsplit path: loss_fn(pred, target)
    _flip_loss_sign(monkeypatch)
    res = _run(_demo(mode))
    problems = learning_direction_failures(res.history)
    assert any("training error did not fall" in p for p in problems), problems
    assert any("not below epoch 0's" in p for p in problems), problems
    assert res.best_epoch == 0  # the best checkpoint stays the one before any update


@pytest.mark.slow
def test_flipped_sign_also_fails_with_the_batch_split(project, monkeypatch):
    """Full mode with 2 worker threads calls the loss with ``reduction="sum"``; the flip reaches it too."""
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "2")
    _flip_loss_sign(monkeypatch)
    res = _run(_demo("full"))
    problems = learning_direction_failures(res.history)
    assert any("training error did not fall" in p for p in problems), problems
    assert any("not below epoch 0's" in p for p in problems), problems


def test_the_check_itself():
    def ep(epoch, train, val):
        return EpochEnd(run_id="r", epoch=epoch, train_mae=train, val_mae=val, lr=1e-3, seconds=0.1,
                        best_val_mae=val, best_epoch=epoch)

    good = [ep(0, None, 0.5), ep(1, 0.4, 0.45), ep(2, 0.3, 0.46)]
    assert learning_direction_failures(good) == []
    up = [ep(0, None, 0.5), ep(1, 0.4, 0.55), ep(2, 0.6, 0.6)]
    assert len(learning_direction_failures(up)) == 2
    assert learning_direction_failures([ep(0, None, 0.5), ep(1, 0.4, 0.45)])  # one training epoch is not enough


@pytest.mark.slow
@pytest.mark.devdata
@pytest.mark.skipif(not DEV.is_file(), reason="dev data file ../shared/data/mp_e_form_dev.json.gz is absent")
def test_dev_head_preset_matches_the_published_test_mae(project):
    """The seed plan's head preset (fraction 0.1, 3 epochs) ends at BENCHMARKS.md's figure, within the margin."""
    p = load_preset(ROOT / "presets" / "head_finetune_freeze.toml").with_changes(
        {"data.source": str(DEV), "train.device": "cpu"}
    )
    assert p.data.fraction == 0.1 and p.finetune.mode == "head"
    res = _run(p)
    assert learning_direction_failures(res.history) == []
    assert abs(res.test_mae - DEV_HEAD_TEST_MAE) <= DEV_HEAD_MARGIN, res.test_mae
