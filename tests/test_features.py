"""Head mode on cached frozen features computes exactly what the full CHGNet computes.

Head-mode training never runs the backbone after the first pass: it trains the
readout (readout norm, MLP, AtomRef) on per-atom features cached on disk. That
is only sound if ``head_forward(cached features)`` equals ``model(graphs)`` for
any readout weights while the backbone is unchanged, and if the cache is keyed
by the backbone weights. These tests check both on demo structures.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tui_ft.core.train import engine
from tui_ft.core.train import setup
from tui_ft.core.train import forward
from tui_ft.core.data.demo import demo_structures
from tui_ft.core.common.paths import Paths

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    m = engine.load_pretrained("0.3.0")
    m.eval()
    return m


@pytest.fixture(scope="module")
def graphs(model):
    picked = demo_structures()[::12][:20]  # spread over the prototypes, 1 to 8 atoms each
    assert len(picked) == 20
    return [model.graph_converter(s, graph_id=ident) for ident, s, _proto in picked]


@pytest.fixture(scope="module")
def cached(model, graphs):
    """Features extracted in batches of 8 (the full-model reference below runs all 20 at once)."""
    feats = forward.extract_features(model, graphs, batch_size=8, device="cpu")
    comp = forward.composition_matrix(graphs)
    n_atoms = torch.tensor([float(g.atomic_number.shape[0]) for g in graphs])
    return forward.FeatureSet(feats, comp, n_atoms)


def full_prediction(model, graphs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(graphs, task="e")["e"].detach()


def head_prediction(model, fs: forward.FeatureSet, idx=None) -> torch.Tensor:
    idx = list(range(len(fs.feats))) if idx is None else idx
    with torch.no_grad():
        return forward.head_forward(model, *fs.batch(idx, "cpu")).detach()


def test_pretrained_model_supports_the_feature_head(model):
    assert forward.supports_feature_head(model)


def test_features_are_per_atom(cached, graphs, model):
    dim = model.mlp.layers[0].in_features if hasattr(model.mlp, "layers") else None
    for f, g in zip(cached.feats, graphs):
        assert f.shape[0] == g.atomic_number.shape[0]
        assert f.dtype == torch.float32 and torch.isfinite(f).all()
        if dim is not None:
            assert f.shape[1] == dim


def test_head_equals_full_model(model, graphs, cached):
    full = full_prediction(model, graphs)
    head = head_prediction(model, cached)
    assert full.shape == head.shape == (20,)
    assert torch.allclose(head, full, atol=TOL, rtol=0), (head - full).abs().max()
    # any subset and order of structures (a training batch) gives the same numbers
    idx = [17, 3, 3, 9, 0]
    assert torch.allclose(head_prediction(model, cached, idx), full[idx], atol=TOL, rtol=0)


def test_head_equals_full_model_after_changing_the_head(model, graphs, cached):
    """Training changes only the readout: the cached features must stay valid for any head weights."""
    m = copy.deepcopy(model)
    bb_before = setup.backbone_hash(m)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.mlp.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        if m.readout_norm is not None:
            for p in m.readout_norm.parameters():
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        for p in m.composition_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    assert setup.backbone_hash(m) == bb_before  # the readout is not part of the cache key
    full = full_prediction(m, graphs)
    assert not torch.allclose(full, full_prediction(model, graphs), atol=1e-3)  # the change matters
    head = head_prediction(m, cached)  # features of the ORIGINAL model's backbone, unchanged
    assert torch.allclose(head, full, atol=TOL, rtol=0), (head - full).abs().max()


def test_head_without_composition_is_the_rest(model, graphs, cached):
    with torch.no_grad():
        rest = forward.head_forward(model, *cached.batch(range(20), "cpu"), with_comp=False)
        comp = model.composition_model._get_energy(forward.composition_matrix(graphs))
    assert torch.allclose(rest + comp, full_prediction(model, graphs), atol=TOL, rtol=0)


def test_cache_key_follows_the_backbone(model, graphs, tmp_path):
    paths = Paths(tmp_path)
    rows = list(range(len(graphs)))
    by_row = dict(enumerate(graphs))
    data_sha = "ab" * 32

    fc = forward.FeatureCache(paths, setup.backbone_hash(model), data_sha)
    first = fc.get(model, rows, by_row, 8, "cpu")
    assert fc.hits == 0 and fc.path.is_file()
    fc2 = forward.FeatureCache(paths, setup.backbone_hash(model), data_sha)
    again = fc2.get(model, rows, by_row, 8, "cpu")
    assert fc2.hits == len(rows) and fc2.path == fc.path
    assert all(torch.equal(first[r], again[r]) for r in rows)

    # one backbone weight changes: another key, another file, other features
    m = copy.deepcopy(model)
    with torch.no_grad():
        z = int(graphs[0].atomic_number[0])  # an element these structures contain
        m.atom_embedding.embedding.weight[z - 1, 0] += 1e-3
    h_new = setup.backbone_hash(m)
    assert h_new != setup.backbone_hash(model)
    fc3 = forward.FeatureCache(paths, h_new, data_sha)
    assert fc3.path != fc.path
    fresh = fc3.get(m, rows, by_row, 8, "cpu")
    assert fc3.hits == 0
    assert any(not torch.equal(fresh[r], first[r]) for r in rows)
    # and the new features again reproduce the changed full model
    fs = forward.FeatureSet([fresh[r] for r in rows], forward.composition_matrix(graphs),
                           torch.tensor([float(g.atomic_number.shape[0]) for g in graphs]))
    assert torch.allclose(head_prediction(m, fs), full_prediction(m, graphs), atol=TOL, rtol=0)

    # another data file: another key as well
    assert forward.FeatureCache(paths, setup.backbone_hash(model), "cd" * 32).path != fc.path


def test_a_readout_weight_is_not_in_the_backbone_hash(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        next(m.mlp.parameters()).add_(1.0)
        next(m.composition_model.parameters()).add_(1.0)
    assert setup.backbone_hash(m) == setup.backbone_hash(model)


def test_head_and_full_forward_objects_agree(model, graphs, cached):
    """The engine's two forward objects (one per mode) give the same predictions, the
    same AtomRef residual base and the same readout gradient on the same batch."""
    rows = list(range(len(graphs)))
    by_row = dict(enumerate(graphs))
    head_m, full_m = copy.deepcopy(model), copy.deepcopy(model)
    for m in (head_m, full_m):
        m.eval()
        mlp = {id(prm) for prm in m.mlp.parameters()}
        for prm in m.parameters():
            prm.requires_grad = id(prm) in mlp
    head = engine.HeadForward(head_m, {"train": cached, "val": cached}, "cpu")
    full = engine.FullForward(full_m, by_row, "cpu")
    with torch.no_grad():
        hp, fp = torch.cat(head.predict("val", rows, 8)), torch.cat(full.predict("val", rows, 8))
        assert len(head.predict("val", rows, 8)) == 3  # batches of 8, 8, 4
        assert torch.allclose(hp, fp, atol=TOL, rtol=0)
        assert torch.allclose(head.energy_without_atomref(rows, 8), full.energy_without_atomref(rows, 8),
                              atol=TOL, rtol=0)
    batch = [3, 17, 0, 9, 11]
    target = fp[batch] + 0.1
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.0) for m in (head_m, full_m)]
    (pred_h, loss_h), (pred_f, loss_f) = (
        fw.train_step(batch, batch, target, torch.nn.functional.mse_loss, opt) for fw, opt in zip((head, full), opts)
    )
    assert torch.allclose(pred_h, pred_f, atol=TOL, rtol=0) and loss_h.item() == pytest.approx(loss_f.item(), abs=1e-6)
    for ph, pf in zip(head_m.mlp.parameters(), full_m.mlp.parameters()):
        assert ph.grad is not None and ph.grad.abs().sum() > 0
        assert torch.allclose(ph.grad, pf.grad, atol=1e-5, rtol=1e-4)


def test_feature_cache_is_read_memory_mapped_and_grows_safely(model, graphs, tmp_path):
    """A warm feature cache is memory-mapped (file-backed pages that concurrent runs share, not each
    run's own copy); adding rows later rewrites the file while the features already handed out stay
    valid; a corrupt file is rebuilt."""
    import os

    paths = Paths(tmp_path)
    by_row = dict(enumerate(graphs))
    key = setup.backbone_hash(model)
    fc = forward.FeatureCache(paths, key, "ef" * 32)
    first = fc.get(model, list(range(10)), by_row, 8, "cpu")
    warm = forward.FeatureCache(paths, key, "ef" * 32).get(model, list(range(10)), by_row, 8, "cpu")
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps", encoding="utf-8") as fh:
            assert str(fc.path) in fh.read()  # the cache file is mapped into this process
    more = forward.FeatureCache(paths, key, "ef" * 32)
    both = more.get(model, list(range(20)), by_row, 8, "cpu")  # 10 new rows: the file is rewritten
    assert more.hits == 10
    for r in range(10):
        assert torch.equal(warm[r], first[r]) and torch.equal(both[r], first[r])
    fc.path.write_bytes(b"not a torch file")
    broken = forward.FeatureCache(paths, key, "ef" * 32)
    rebuilt = broken.get(model, list(range(20)), by_row, 8, "cpu")
    assert broken.hits == 0 and all(torch.equal(rebuilt[r], both[r]) for r in range(20))
