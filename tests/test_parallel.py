"""Data-parallel CPU training (tui_ft.core.train.parallel) against one plain pass of the real CHGNet."""

from __future__ import annotations

import copy

import pytest
import torch

from tui_ft.core.train.setup import load_pretrained
from tui_ft.core.train.engine import run_training
from tui_ft.core.common.events import EpochEnd, Message, RunFailed, RunFinished
from tui_ft.core.library.ckptfile import load_checkpoint
from tui_ft.core.train.parallel import CpuDataParallel, graph_cost, plan_workers, split_batch
from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import load_preset
from tui_ft.core.library.runs import new_run_id

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


class G:  # the three fields graph_cost reads
    def __init__(self, atoms, edges, angles):
        self.atomic_number = torch.zeros(atoms)
        self.atom_graph = torch.zeros(edges, 2)
        self.bond_graph = torch.zeros(angles, 3) if angles else torch.zeros(0)


def test_split_batch_covers_every_structure_once_and_balances_cost():
    gs = [G(2, 100, 50), G(8, 900, 700), G(1, 10, 0), G(4, 400, 300), G(3, 300, 200), G(5, 500, 100)]
    parts = split_batch(gs, 2)
    assert sorted(i for p in parts for i in p) == list(range(len(gs)))
    assert all(p == sorted(p) for p in parts)
    loads = [sum(graph_cost(gs[i]) for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(graph_cost(g) for g in gs)
    assert split_batch(gs, 2) == parts  # deterministic
    assert split_batch(gs[:1], 4) == [[0]]  # no empty parts
    assert split_batch(gs, 1) == [list(range(len(gs)))]


def test_plan_workers(monkeypatch):
    monkeypatch.delenv("TUI_FT_CPU_WORKERS", raising=False)
    monkeypatch.setenv("TUI_FT_THREADS", "2")
    assert plan_workers(8, "cpu") == (2, 1)
    assert plan_workers(1, "cpu")[0] == 1  # nothing to split
    assert plan_workers(8, "cuda")[0] == 1
    monkeypatch.setenv("TUI_FT_THREADS", "4")
    assert plan_workers(16, "cpu") == (4, 1)
    assert plan_workers(4, "cpu") == (2, 2)  # at least two structures per part
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "1")
    assert plan_workers(16, "cpu") == (1, 4)
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "3")
    assert plan_workers(16, "cpu") == (3, 1)
    monkeypatch.delenv("TUI_FT_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TUI_FT_CPU_WORKERS")
    assert plan_workers(16, "cpu")[0] == 1  # OMP_NUM_THREADS=1: one core, no split
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "two")
    with pytest.raises(ValueError, match="TUI_FT_CPU_WORKERS='two'"):
        plan_workers(8, "cpu")


@pytest.mark.slow
def test_train_step_matches_one_pass_over_the_batch(project):
    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.data.graphstore import energy_only
    from tui_ft.core.data.demo import ensure_demo_dataset

    ds = load_matbench(ensure_demo_dataset(Paths.default()))
    model = load_pretrained("0.3.0")
    graphs = [energy_only(model.graph_converter(ds.structures[i], graph_id=str(i))) for i in range(10)]
    target = torch.tensor([float(ds.targets[i]) for i in range(10)])
    plain = copy.deepcopy(model)
    dp = CpuDataParallel(model, 2, 1)
    try:
        for fn in (torch.nn.functional.mse_loss, torch.nn.functional.huber_loss):
            model.train()
            plain.train()
            plain.zero_grad(set_to_none=True)
            ref = plain(graphs, task="e")["e"]
            ref_loss = fn(ref, target)
            ref_loss.backward()
            pred, loss = dp.train_step(graphs, target, fn)
            assert torch.allclose(pred, ref.detach(), atol=1e-5)
            assert abs(float(loss) - float(ref_loss)) < 1e-5 * max(1.0, abs(float(ref_loss)))
            n_grads = 0
            for (name, a), b in zip(plain.named_parameters(), model.parameters()):
                assert (a.grad is None) == (b.grad is None), name
                if a.grad is not None:
                    n_grads += 1
                    scale = float(a.grad.abs().max()) + 1e-12
                    assert float((a.grad - b.grad).abs().max()) / scale < 1e-4, name
            assert n_grads > 100  # the backbone got gradients, not only the head
        # after a change to the master's weights (an optimizer step), replicas follow it
        with torch.no_grad():
            for prm in model.parameters():
                prm.mul_(0.99)
            plain.load_state_dict(model.state_dict())
        model.eval()
        plain.eval()
        with torch.no_grad():
            ref = plain(graphs, task="e")["e"]
        assert torch.allclose(dp.predict(graphs), ref, atol=1e-5)
    finally:
        dp.close()


@pytest.mark.slow
def test_feature_extraction_split_across_workers_matches_one_thread(project):
    from tui_ft.core.data.dataset import load_matbench
    from tui_ft.core.data.graphstore import energy_only
    from tui_ft.core.data.demo import ensure_demo_dataset
    from tui_ft.core.train.forward import extract_features

    ds = load_matbench(ensure_demo_dataset(Paths.default()))
    model = load_pretrained("0.3.0")
    graphs = [energy_only(model.graph_converter(ds.structures[i], graph_id=str(i))) for i in range(0, 60, 5)]
    threads = torch.get_num_threads()
    serial = extract_features(model, graphs, batch_size=4, device="cpu")
    split = extract_features(model, graphs, batch_size=4, device="cpu", workers=2, threads=1)
    assert len(split) == len(serial) == len(graphs)
    for g, a, b in zip(graphs, serial, split):
        assert a.shape == b.shape == (int(g.atomic_number.shape[0]), a.shape[1])  # in input order
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.get_num_threads() == threads


def _full_demo(**changes):
    p = load_preset(ROOT / "presets" / "demo.toml")
    ch = {"run.name": "dp", "finetune.mode": "full", "optim.lr": 1e-4, "train.epochs": 2, "train.batch_size": 8,
          "data.fraction": 0.25, "data.test_limit": 16}
    ch.update(changes)
    return p.with_changes(ch)


def _run(preset, paths):
    events = []
    res = run_training(preset, run_id=new_run_id(preset.name, paths), paths=paths, emit=events.append)
    return res, events


@pytest.mark.slow
def test_full_mode_run_split_across_workers_matches_the_unsplit_run(project, monkeypatch):
    paths = Paths.default()
    threads = torch.get_num_threads()
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "1")
    r1, ev1 = _run(_full_demo(), paths)
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "2")
    r2, ev2 = _run(_full_demo(), paths)
    assert r1.status == r2.status == "finished"
    assert any(isinstance(e, Message) and "2 worker threads" in e.text for e in ev2)
    assert not any(isinstance(e, Message) and "worker threads" in e.text for e in ev1)
    e1 = [e for e in ev1 if isinstance(e, EpochEnd)]
    e2 = [e for e in ev2 if isinstance(e, EpochEnd)]
    assert [e.epoch for e in e1] == [e.epoch for e in e2] == [0, 1, 2]
    for a, b in zip(e1, e2):
        assert abs(a.val_mae - b.val_mae) < 1e-5
        assert (a.train_mae is None) == (b.train_mae is None)
        if a.train_mae is not None:
            assert abs(a.train_mae - b.train_mae) < 1e-5
    assert e1[-1].val_mae != e1[0].val_mae  # the weights did train
    assert abs(r1.test_mae - r2.test_mae) < 1e-5
    meta = load_checkpoint(paths.run_ckpt_dir(r2.run_id) / "last.pt")["meta"]
    assert meta["cpu_workers"] == 2
    assert torch.get_num_threads() == threads  # the workers' 1-thread setting did not leak into the caller


@pytest.mark.slow
def test_bad_worker_setting_fails_the_run_with_one_message(project, monkeypatch):
    monkeypatch.setenv("TUI_FT_CPU_WORKERS", "0")
    res, ev = _run(_full_demo(**{"train.epochs": 1}), Paths.default())
    assert res.status == "failed"
    failed = [e for e in ev if isinstance(e, RunFailed)]
    assert len(failed) == 1 and "TUI_FT_CPU_WORKERS='0'" in failed[0].message
    assert not any(isinstance(e, RunFinished) for e in ev)
