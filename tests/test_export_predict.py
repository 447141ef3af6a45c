"""Model out: export to chgnet's file layout, and predict on every input form.

One tiny head-mode run on the demo data (2 epochs, AtomRef refit) is trained
through the real CLI; its best checkpoint is exported and loaded with chgnet's
own ``CHGNet.from_file``, whose ``predict_structure`` must reproduce
``tui_ft.core.library.predict.predict`` to 1e-6 on the demo test rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tui_ft.core.data.dataset import load_matbench, make_splits
from tui_ft.core.library.export import ExportError, export_checkpoint, read_export_info
from tui_ft.core.library.ckptfile import CheckpointError, load_checkpoint
from tui_ft.core.library.predict import own_test_rows, predict, write_csv
from tui_ft.core.data.sources import load_source


@pytest.fixture
def trained(project, demo_preset, tui_ft_cli):
    demo_preset("tiny", epochs=2)
    res = tui_ft_cli("--preset", "presets/tiny.toml", "--plain", timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpts = sorted((project / "checkpoints").glob("*/best.pt"))
    assert len(ckpts) == 1
    return ckpts[0]


def test_export_round_trip_and_predict(trained, project, tmp_path):
    from chgnet.model import CHGNet

    from tui_ft.core.data.demo import ensure_demo_dataset

    payload = load_checkpoint(trained)
    assert payload["meta"]["mode"] == "head"
    out = export_checkpoint(trained, tmp_path / "model.pt")
    # plain data only: loads without unpickling code, and carries what the output means
    info = read_export_info(out)
    assert info["target"] == "e_form" and info["unit"] == "eV/atom" and info["run_id"] == payload["meta"]["run_id"]

    exported = CHGNet.from_file(str(out))
    # the refit AtomRef went along (it differs from the pretrained MPtrj one)
    w = exported.composition_model.fc.weight.detach()
    assert torch.equal(w, payload["model_state"]["composition_model.fc.weight"])
    assert not torch.equal(w, CHGNet.load(verbose=False).composition_model.fc.weight.detach())

    data = ensure_demo_dataset()
    ds = load_matbench(data, "e_form")
    test_rows = make_splits(len(ds), fold=0).test
    ours = predict(trained, data, rows=test_rows, batch_size=8, device="cpu")
    assert not ours.failures and len(ours.rows) == len(test_rows)
    assert [r.id for r in ours.rows] == [ds.ids[r] for r in test_rows]
    theirs = exported.predict_structure([ds.structures[int(r)] for r in test_rows], task="e", batch_size=8)
    a = np.array([r.prediction for r in ours.rows])
    b = np.array([float(t["e"]) for t in theirs])
    assert np.abs(a - b).max() <= 1e-6
    # predictions come with their targets, and the MAE is the engine's test MAE for this checkpoint
    np.testing.assert_allclose([r.target for r in ours.rows], ds.targets[test_rows])
    assert ours.unit == "eV/atom" and ours.target == "e_form"
    assert ours.mae == pytest.approx(float(np.abs(a - ds.targets[test_rows]).mean()))

    # same predictions from a CIF folder and an extxyz file of the same rows (rotation-level float noise only)
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    cif = tmp_path / "cif"
    cif.mkdir()
    frames = []
    for r in test_rows[:12]:
        s = ds.structures[int(r)]
        s.to(filename=str(cif / f"{ds.ids[r]}.cif"))
        a_ = AseAtomsAdaptor.get_atoms(s)
        a_.info = {"id": ds.ids[r], "e_form": float(ds.targets[r])}
        frames.append(a_)
    (cif / "id_prop.csv").write_text("".join(f"{ds.ids[r]},{float(ds.targets[r])!r}\n" for r in test_rows[:12]))
    ase.io.write(tmp_path / "t.extxyz", frames, format="extxyz")
    for src in (cif, tmp_path / "t.extxyz"):
        res = predict(trained, src, batch_size=4, device="cpu")
        assert [r.id for r in res.rows] == [ds.ids[r] for r in test_rows[:12]]
        np.testing.assert_allclose([r.prediction for r in res.rows], a[:12], atol=1e-5)
        np.testing.assert_allclose([r.target for r in res.rows], ds.targets[test_rows[:12]])

    # structure files without targets; a broken one is a failure by id, the rest are predicted
    files = sorted(cif.glob("*.cif"))[:3]
    files[1].write_text("not a cif\n")
    res = predict(trained, files, device="cpu")
    assert [r.id for r in res.rows] == [files[0].name, files[2].name]
    assert [i for i, _ in res.failures] == [files[1].name] and "unreadable structure" in res.failures[0][1]
    assert not res.has_targets

    # a single structure file: its name is the id
    one = predict(trained, files[0], device="cpu")
    assert [r.id for r in one.rows] == [files[0].name] and one.rows[0].prediction == pytest.approx(a[0], abs=1e-5)

    # eval's default rows: the checkpoint's own test rows, only on its own data
    assert own_test_rows(payload["meta"], ds) == [int(r) for r in test_rows]
    assert own_test_rows(payload["meta"], load_source(cif, "e_form")) is None

    csv_path = write_csv(ours, tmp_path / "preds.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "# target: e_form; unit: eV/atom" and lines[1] == "id,prediction,target,error"
    first = lines[2].split(",")
    assert first[0] == ours.rows[0].id and float(first[1]) == ours.rows[0].prediction
    assert len(lines) == 2 + len(ours.rows)


def test_export_refuses_bad_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        export_checkpoint(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "out.pt")


def test_export_of_pretrained_weights_matches_chgnet(tmp_path):
    """Without training: a checkpoint holding the pretrained model exports to a file chgnet
    loads, with predictions equal to the pretrained model's."""
    from chgnet.model import CHGNet

    from tui_ft.core.data.demo import demo_structures
    from tui_ft.core.library.ckptfile import save_checkpoint

    base = CHGNet.load(verbose=False)
    ckpt = tmp_path / "ck" / "best.pt"
    save_checkpoint(ckpt, {"model_state": base.state_dict(), "model_args": dict(base.model_args),
                           "meta": {"run_id": "x", "preset": {"data": {"target": "e_form"}}}})
    out = export_checkpoint(ckpt, tmp_path / "m.pt")
    m = CHGNet.from_file(str(out))
    structs = [s for _, s, _ in demo_structures()[:6]]
    want = [float(p["e"]) for p in base.predict_structure(structs, task="e")]
    got = [float(p["e"]) for p in m.predict_structure(structs, task="e")]
    assert got == want
    with pytest.raises(ExportError, match="is a folder"):
        export_checkpoint(ckpt, tmp_path)
    assert json.loads(json.dumps(read_export_info(out)))["format"] == "tui-ft-export/1"
