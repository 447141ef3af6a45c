"""The real CHGNet, trained on the CPU on the built-in demo data (synthetic labels)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tui_ft.core.train.setup import GROUPS
from tui_ft.core.train.engine import run_training
from tui_ft.core.common.events import CheckpointSaved, EpochEnd, Message, RunFinished, RunStarted
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.library.ckptfile import load_checkpoint
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import load_preset
from tui_ft.core.library.runs import new_run_id, summarize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def proj(tmp_path, monkeypatch, cache_dir, request):
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.setenv("TUI_FT_CACHE", str(cache_dir))
    monkeypatch.chdir(tmp_path)
    return Paths(tmp_path)


def demo(**changes):
    base = load_preset(str(__import__("pathlib").Path(__file__).resolve().parents[1] / "presets" / "demo.toml"))
    return base.with_changes(changes)


def run(preset, paths, **kw):
    events = []
    rid = new_run_id(preset.name, paths)
    res = run_training(preset, run_id=rid, paths=paths, emit=events.append, **kw)
    return res, events


def epochs(events):
    return [e for e in events if isinstance(e, EpochEnd)]


def test_head_mode_run_end_to_end(proj):
    res, events = run(demo(**{"train.epochs": 3}), proj)
    assert res.status == "finished"
    assert isinstance(events[0], Message)
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.device == "cpu" and started.n_train > 0 and started.n_val > 0 and started.n_test > 0
    eps = epochs(events)
    assert [e.epoch for e in eps] == [0, 1, 2, 3]
    assert eps[0].train_mae is None and all(e.train_mae is not None for e in eps[1:])
    assert all(math.isfinite(e.val_mae) and e.seconds >= 0 for e in eps)
    fin = events[-1]
    assert isinstance(fin, RunFinished) and fin.test_mae is not None and fin.n_test == started.n_test
    assert fin.best_val_mae == min(e.val_mae for e in eps)
    # test predictions: every test structure, in order, none dropped
    rows = list(csv.DictReader(open(fin.predictions, encoding="utf-8")))
    assert len(rows) == started.n_test
    mae = sum(abs(float(r["pred"]) - float(r["true"])) for r in rows) / len(rows)
    assert mae == pytest.approx(fin.test_mae, abs=1e-5)
    # checkpoints with their settings
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert {e.kind for e in saved} == {"best", "last"}
    best = load_checkpoint(proj.run_ckpt_dir(res.run_id) / "best.pt")
    meta = best["meta"]
    assert meta["run_id"] == res.run_id and meta["preset_name"] == "demo" and meta["finished"] is True
    assert meta["preset"]["finetune"]["mode"] == "head" and meta["test_mae"] == pytest.approx(fin.test_mae)
    assert meta["epoch"] == fin.best_epoch and len(meta["data_sha256"]) == 64
    assert {"chgnet", "torch", "python", "tui-ft"} <= set(meta["versions"])
    last = load_checkpoint(proj.run_ckpt_dir(res.run_id) / "last.pt")
    assert last["meta"]["epoch"] == 3 and last["optimizer_state"] is not None
    # the run folder keeps the resolved preset and the events
    assert load_preset(proj.run_log_dir(res.run_id) / "preset.toml") == demo(**{"train.epochs": 3})
    assert summarize(proj.run_log_dir(res.run_id)).status == "finished"  # the events end in run_finished
    # head mode: backbone weights unchanged, head changed
    from tui_ft.core.train.setup import load_pretrained

    ref = load_pretrained("0.3.0").state_dict()
    st = best["model_state"] if fin.best_epoch > 0 else last["model_state"]
    changed = {k.split(".")[0] for k in ref if not torch.equal(ref[k], st[k])}
    assert changed and changed <= {"mlp", "readout_norm", "composition_model"}


def test_atomref_refit_makes_epoch0_comparable(proj):
    _, ev_refit = run(demo(**{"train.epochs": 1}), proj)
    _, ev_raw = run(demo(**{"train.epochs": 1, "finetune.refit_atomref": False}), proj)
    v_refit, v_raw = epochs(ev_refit)[0].val_mae, epochs(ev_raw)[0].val_mae
    # zero-shot CHGNet predicts total energy, eV/atom away from a formation energy
    assert v_raw > 1.0
    assert v_refit < v_raw / 5


def test_same_preset_and_seed_gives_same_numbers(proj):
    p = demo(**{"train.epochs": 2})
    _, a = run(p, proj)
    _, b = run(p, proj)
    assert [e.val_mae for e in epochs(a)] == [e.val_mae for e in epochs(b)]
    assert [e.train_mae for e in epochs(a)] == [e.train_mae for e in epochs(b)]
    assert a[-1].test_mae == b[-1].test_mae


def test_full_mode_continues_from_head_best(proj):
    res1, ev1 = run(demo(**{"train.epochs": 2}), proj)
    best1 = ev1[-1].best_val_mae
    full = demo(**{
        "run.name": "demo_full", "finetune.mode": "full", "model.init": "demo@best", "optim.lr": 1e-4,
        "finetune.backbone_lr": 5e-5, "train.epochs": 1, "train.batch_size": 16, "data.fraction": 0.3,
    })
    assert full.finetune.refit_atomref is False
    res2, ev2 = run(full, proj)
    assert res2.status == "finished"
    started = next(e for e in ev2 if isinstance(e, RunStarted))
    assert started.parent == f"{res1.run_id}@best"
    e0 = epochs(ev2)[0]
    assert abs(e0.val_mae - best1) < 1e-5  # starts exactly where the head run ended
    info = Library(proj).get(res2.run_id)
    assert info.parent == f"{res1.run_id}@best"
    assert [c.run_id for c in Library(proj).lineage(info)] == [res2.run_id, res1.run_id]
    # full mode: backbone weights moved
    s1 = load_checkpoint(proj.run_ckpt_dir(res1.run_id) / "best.pt")["model_state"]
    s2 = load_checkpoint(proj.run_ckpt_dir(res2.run_id) / "last.pt")["model_state"]
    moved = {k.split(".")[0] for k in s1 if not torch.equal(s1[k], s2[k])}
    assert moved & {"atom_embedding", "atom_conv_layers", "bond_conv_layers"}


def test_early_stopping_and_cosine(proj):
    # an SGD step of 1e-30 leaves float32 weights unchanged: validation never improves
    res, ev = run(demo(**{"train.epochs": 8, "train.patience": 2, "optim.optimizer": "sgd", "optim.lr": 1e-30}), proj)
    assert res.status == "finished"
    assert [e.epoch for e in epochs(ev)] == [0, 1, 2]
    assert ev[-1].stopped_early is True and ev[-1].best_epoch == 0
    _, ev = run(demo(**{"train.epochs": 4, "optim.scheduler": "cosine", "optim.lr": 1e-3}), proj)
    lrs = [e.lr for e in epochs(ev)]
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))


def test_progressive_unfreezing_and_lr_factors(proj):
    from tui_ft.core.train.engine import RunContext, Trainer

    p = demo(**{
        "run.name": "unfreeze", "finetune.mode": "full", "optim.lr": 1e-4, "finetune.backbone_lr": 1e-5,
        "finetune.lr_factors": {"embedding": 0.1, "interaction": 0.5}, "finetune.unfreeze_every": 1,
        "train.epochs": 2, "train.batch_size": 32, "data.fraction": 0.1, "data.test_limit": 5,
    })
    rid = new_run_id(p.name, proj)
    events = []
    t = Trainer(RunContext(p, rid, proj, events.append))
    res = t.run()
    assert res.status == "finished"
    lrs = {g["name"]: g["lr"] for g in t.optimizer.param_groups}
    assert lrs == pytest.approx({"readout": 1e-4, "interaction": 0.5e-5, "embedding": 0.1e-5})
    texts = [e.text for e in events if isinstance(e, Message)]
    assert any("epoch 2: unfroze interaction" in x for x in texts)
    assert t.active == ["readout", "interaction"]
    assert set(GROUPS) == {"embedding", "interaction", "readout"}


def test_run_removes_temp_files_left_by_a_killed_writer(proj):
    p = demo(**{"train.epochs": 1})
    rid = new_run_id(p.name, proj)
    d = proj.run_ckpt_dir(rid)
    d.mkdir(parents=True)
    stale = d / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    res = run_training(p, run_id=rid, paths=proj, emit=None)
    assert res.status == "finished"
    assert not stale.exists()
    assert sorted(f.name for f in d.iterdir()) == ["best.json", "best.pt", "last.json", "last.pt"]
