"""The recipe around the optimizer step (issue 27, item 1): ``optim.warmup_epochs``,
``optim.clip_grad_norm``, ``train.ema``, ``train.swa_start`` / ``train.swa_lr``.

Unit tests on a small torch model for the lr of each step and the clipped norm; real
CHGNet runs on the synthetic demo data (head mode, seconds each) for the EMA weights
being the ones evaluated and saved, the SWA checkpoint, and an interrupted + resumed run
equal to an uninterrupted one to 1e-6."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tui_ft.core.common.events import EpochEnd, RunFinished, read_events
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import PresetError, load_preset
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.library.ckptfile import load_checkpoint
from tui_ft.core.library.runs import new_run_id
from tui_ft.core.train.engine import run_training
from tui_ft.core.train.precision import FP32
from tui_ft.core.train.recipe import Recipe, lr_factor

DEMO = Path(__file__).resolve().parents[1] / "presets" / "demo.toml"


def _preset(epochs=4, warmup=0, cosine=False, clip=0.0, ema=0.0, swa_start=0, swa_lr=None):
    return SimpleNamespace(
        optim=SimpleNamespace(warmup_epochs=warmup, scheduler="cosine" if cosine else "none", clip_grad_norm=clip),
        train=SimpleNamespace(epochs=epochs, ema=ema, swa_start=swa_start, swa_lr=swa_lr),
    )


def _toy(lrs=(0.1, 0.01)):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": lrs[0]},
                           {"params": model[1].parameters(), "lr": lrs[1]}], lr=lrs[0])
    return model, opt


# ---------------------------------------------------------------- unit: lr, clipping, averages


def test_warmup_sets_the_lr_of_every_step_then_the_cosine():
    model, opt = _toy()
    r = Recipe(_preset(epochs=5, warmup=2, cosine=True), model, opt, FP32)
    assert r.owns_schedule
    seen = []
    for epoch in range(1, 6):
        for step in range(4):
            r.step_lr(epoch, step, 4)
            seen.append((epoch, step, [g["lr"] for g in opt.param_groups]))
    # warm-up: ((epoch - 1) + (step + 1) / 4) / 2 of each group's lr, step by step
    for epoch, step, lrs in seen[:8]:
        f = ((epoch - 1) + (step + 1) / 4) / 2
        assert lrs == pytest.approx([0.1 * f, 0.01 * f], rel=1e-12)
    assert seen[0][2] == pytest.approx([0.0125, 0.00125])  # the first step is not at lr 0
    assert seen[7][2] == pytest.approx([0.1, 0.01])  # the full lr at the last step of epoch 2
    # then the cosine over the 3 epochs after the warm-up, constant within an epoch
    for epoch, step, lrs in seen[8:]:
        f = 0.5 * (1 + math.cos(math.pi * (epoch - 3) / 3))
        assert lrs == pytest.approx([0.1 * f, 0.01 * f], rel=1e-12)
    assert lr_factor(3, 0, 4, epochs=5, warmup=2, cosine=True) == 1.0


def test_without_warmup_the_cosine_equals_torchs_per_epoch_scheduler():
    model, opt = _toy()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    for epoch in range(1, 7):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(epoch, 0, 3, epochs=6, warmup=0, cosine=True), rel=1e-9)
        opt.step()
        sched.step()


def test_swa_lr_is_constant_from_swa_start():
    model, opt = _toy()
    r = Recipe(_preset(epochs=6, warmup=1, swa_start=4, swa_lr=0.005), model, opt, FP32)
    r.step_lr(3, 0, 2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01])
    for epoch in (4, 5, 6):
        r.step_lr(epoch, 1, 2)
        assert [g["lr"] for g in opt.param_groups] == [0.005, 0.005]


def _total_norm(model) -> float:
    return float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters())))


def test_clipping_caps_the_gradient_norm_and_reports_the_norm_before_it():
    model, opt = _toy(lrs=(0.0, 0.0))  # lr 0: the step leaves the weights, the gradients stay to look at
    r = Recipe(_preset(clip=0.5), model, opt, FP32)
    x = torch.randn(16, 3) * 100
    model(x).pow(2).sum().backward()
    before = _total_norm(model)
    assert before > 0.5
    r.step()
    assert _total_norm(model) == pytest.approx(0.5, rel=1e-5)
    assert r.train_metrics() == {"train_grad_norm": pytest.approx(before, rel=1e-5)}
    assert r.train_metrics() == {"train_grad_norm": 0.0}  # reset for the next epoch
    # below the cap nothing changes
    opt.zero_grad()
    (model(torch.randn(4, 3)).sum() * 1e-4).backward()
    assert _total_norm(model) < 0.5
    small = [p.grad.clone() for p in model.parameters()]
    r.step()
    assert all(torch.equal(a, p.grad) for a, p in zip(small, model.parameters()))
    assert Recipe(_preset(), model, opt, FP32).train_metrics() == {}  # no clipping: no metric


def test_ema_follows_the_weights_and_is_swapped_in_for_evaluation():
    model, opt = _toy(lrs=(0.1, 0.1))
    r = Recipe(_preset(ema=0.5), model, opt, FP32)
    ema = None
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        r.step()
        now = model.state_dict()
        # AveragedModel's first update copies the weights; then ema = d * ema + (1 - d) * w
        ema = {k: v.clone() for k, v in now.items()} if ema is None else {k: 0.5 * ema[k] + 0.5 * now[k] for k in now}
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    saved = r.saved_state()
    assert all(torch.allclose(saved[k], ema[k], rtol=1e-6, atol=1e-7) for k in raw)
    assert any(not torch.allclose(saved[k], raw[k]) for k in raw), "EMA weights must differ from the raw ones"
    with r.evaluated():
        assert all(torch.equal(model.state_dict()[k], saved[k]) for k in raw)
        # while swapped in, last.pt's raw weights are still the trained ones
        assert all(torch.equal(r.state_dict()["raw_model_state"][k], raw[k]) for k in raw)
    assert all(torch.equal(model.state_dict()[k], raw[k]) for k in raw)


# ---------------------------------------------------------------- the preset fields


@pytest.mark.parametrize(
    ("lines", "field", "says"),
    [
        ("[optim]\nwarmup_epochs = 3", "optim.warmup_epochs", "less than train.epochs (3)"),
        ("[train]\nswa_lr = 0.001", "train.swa_lr", "swa_start > 0"),
        ("[train]\nswa_start = 9", "train.swa_start", "at most train.epochs (3)"),
        ("[train]\nema = 1.0", "train.ema", "in [0, 1)"),
        ("[optim]\nclip_grad_norm = -1.0", "optim.clip_grad_norm", "0"),
    ],
)
def test_recipe_fields_are_validated_with_their_line(tmp_path, lines, field, says):
    text = DEMO.read_text(encoding="utf-8")
    table, _, kv = lines.partition("\n")
    text = text.replace(table + "\n", f"{table}\n{kv}\n", 1)
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PresetError) as err:
        load_preset(str(path))
    msg = str(err.value)
    line = text.splitlines().index(kv) + 1
    assert f"bad.toml:{line}: {field}" in msg and says in msg, msg


def test_recipe_fields_are_searchable_sweep_keys(tmp_path):
    text = DEMO.read_text(encoding="utf-8") + (
        '\n[sweep]\ntrials = 2\n[sweep.space]\n"train.ema" = { uniform = [0.9, 0.99] }\n'
        '"optim.warmup_epochs" = { int = [0, 1] }\n"optim.clip_grad_norm" = { choice = [0.0, 10.0] }\n'
    )
    path = tmp_path / "sw.toml"
    path.write_text(text, encoding="utf-8")
    p = load_preset(str(path))
    assert set(p.sweep.space) == {"train.ema", "optim.warmup_epochs", "optim.clip_grad_norm"}


# ---------------------------------------------------------------- real runs on the demo data


@pytest.fixture
def proj(project) -> Paths:
    return Paths(project)


def demo(**changes):
    return load_preset(str(DEMO)).with_changes(changes)


def _run(preset, paths, **kw):
    rid = kw.pop("run_id", None) or new_run_id(preset.name, paths)
    return rid, run_training(preset, run_id=rid, paths=paths, **kw)


def test_ema_weights_are_the_ones_evaluated_and_saved(proj):
    rid, res = _run(demo(**{"train.epochs": 3, "train.ema": 0.8}), proj)
    assert res.status == "finished"
    ckpt = proj.run_ckpt_dir(rid)
    best, last = load_checkpoint(ckpt / "best.pt"), load_checkpoint(ckpt / "last.pt")
    raw = last["recipe_state"]["raw_model_state"]
    ema = {k.removeprefix("module."): v for k, v in last["recipe_state"]["ema"].items() if k.startswith("module.")}
    assert set(ema) == set(raw)
    assert all(torch.equal(last["model_state"][k], ema[k]) for k in raw), "last.pt holds the EMA weights"
    trained = [k for k in raw if not torch.equal(raw[k], ema[k])]
    assert trained and all(k.startswith(("mlp", "composition_model")) or "readout" in k for k in trained), trained
    if res.best_epoch == 3:
        assert all(torch.equal(best["model_state"][k], ema[k]) for k in raw), "best.pt holds the EMA weights"
    eps = [e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, EpochEnd)]
    assert eps[-1].epoch == 3 and eps[-1].val_mae == pytest.approx(last["meta"]["val_mae"], rel=1e-12)
    # a run without the EMA, same seed: other validation numbers after epoch 0
    rid2, res2 = _run(demo(**{"train.epochs": 3}), proj)
    eps2 = [e for e in read_events(proj.run_log_dir(rid2) / "events.jsonl") if isinstance(e, EpochEnd)]
    assert eps2[0].val_mae == pytest.approx(eps[0].val_mae, rel=1e-9)  # epoch 0: the same starting weights
    assert eps2[-1].val_mae != pytest.approx(eps[-1].val_mae, rel=1e-6)


def test_swa_weights_get_their_own_checkpoint_and_metrics(proj):
    rid, res = _run(demo(**{"train.epochs": 4, "train.swa_start": 2, "train.swa_lr": 5e-4}), proj)
    assert res.status == "finished"
    swa = load_checkpoint(proj.run_ckpt_dir(rid) / "swa.pt")
    assert swa["meta"]["kind"] == "swa" and swa["meta"]["finished"]
    lib = Library(proj)
    info = lib.resolve_ref(f"{rid}@swa")
    assert info.kind == "swa" and info.run_id == rid
    fin = [e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, RunFinished)][-1]
    assert set(fin.test_metrics) >= {"swa_val_mae", "swa_test_mae", "test_mae"}
    assert swa["meta"]["test_mae"] == pytest.approx(fin.test_metrics["swa_test_mae"])
    eps = [e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, EpochEnd)]
    assert [e.lr for e in eps[2:]] == [5e-4] * 3  # the constant SWA lr from epoch 2 on
    # the average of epochs 2..4 is not the last epoch's weights
    last = load_checkpoint(proj.run_ckpt_dir(rid) / "last.pt")
    assert any(not torch.equal(swa["model_state"][k], last["model_state"][k]) for k in last["model_state"])


def _interrupt_at(epoch: int):
    def on_batch(e, done, total):  # noqa: ARG001
        if e == epoch:
            raise KeyboardInterrupt
    return on_batch


def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(proj):
    """EMA, SWA, warm-up, clipping and the cosine at once: a run stopped in epoch 3 (after
    one step of it) and resumed from last.pt gives every epoch's metrics, the test MAE and
    the saved weights of the run that was not stopped, to 1e-6."""
    preset = demo(**{
        "train.epochs": 5, "train.ema": 0.7, "train.swa_start": 4, "optim.warmup_epochs": 2,
        "optim.clip_grad_norm": 0.05, "optim.scheduler": "cosine",
    })
    rid_a, a = _run(preset, proj, run_id="whole")
    assert a.status == "finished"
    rid_b, b = _run(preset, proj, run_id="stopped", on_batch=_interrupt_at(3))
    assert b.status == "interrupted"
    _, b = _run(preset, proj, run_id="stopped", resume=True)
    assert b.status == "finished"

    def epochs(rid):
        return {e.epoch: e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, EpochEnd)}

    ea, eb = epochs(rid_a), epochs(rid_b)
    assert sorted(ea) == sorted(eb) == list(range(6))
    for k in ea:
        assert eb[k].lr == pytest.approx(ea[k].lr, rel=1e-12)
        ma, mb = ea[k].named(), eb[k].named()
        assert set(ma) == set(mb)
        for name in ma:
            assert mb[name] == pytest.approx(ma[name], abs=1e-6), (k, name)
    assert "train_grad_norm" in ea[1].named()
    assert b.test_mae == pytest.approx(a.test_mae, abs=1e-6)
    for kind in ("best", "last", "swa"):
        sa = load_checkpoint(proj.run_ckpt_dir(rid_a) / f"{kind}.pt")["model_state"]
        sb = load_checkpoint(proj.run_ckpt_dir(rid_b) / f"{kind}.pt")["model_state"]
        assert max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa) <= 1e-6, kind


@pytest.mark.slow
def test_the_recipe_trains_a_potential(proj, tmp_path):
    """Potential task (energies, forces, stresses of EMT frames), full mode: the EMA weights
    are saved, warm-up sets each step's lr, clipping logs the norm, SWA gets its checkpoint."""
    from test_potential import write_frames  # noqa: PLC0415 - tests/ is on the path

    data = write_frames(tmp_path / "cu.extxyz")
    preset = load_preset(str(DEMO.parent / "demo_potential.toml")).with_changes({
        "data.source": str(data), "data.split": "random", "data.test_fraction": 0.25, "data.val_fraction": 0.25,
        "train.epochs": 3, "train.batch_size": 3, "train.ema": 0.5, "train.swa_start": 3,
        "optim.warmup_epochs": 1, "optim.clip_grad_norm": 1.0,
    })
    rid, res = _run(preset, proj)
    assert res.status == "finished", res
    eps = [e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, EpochEnd)]
    assert [e.epoch for e in eps] == [0, 1, 2, 3]
    assert all("train_grad_norm" in e.named() and "val_force_mae" in e.named() for e in eps[1:])
    assert eps[1].lr == pytest.approx(3e-4)  # the end of the one warm-up epoch: the full lr
    last = load_checkpoint(proj.run_ckpt_dir(rid) / "last.pt")
    raw = last["recipe_state"]["raw_model_state"]
    assert any(not torch.equal(raw[k], last["model_state"][k]) for k in raw)
    fin = [e for e in read_events(proj.run_log_dir(rid) / "events.jsonl") if isinstance(e, RunFinished)][-1]
    assert "swa_test_force_mae" in fin.test_metrics and (proj.run_ckpt_dir(rid) / "swa.pt").is_file()
