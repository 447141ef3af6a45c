"""Events round-trip through JSON Lines; the library lists, filters, resolves and writes atomically."""

from __future__ import annotations

import json
import math
import os
import time

import pytest
import torch

from tui_ft.core.common.events import (
    EVENT_TYPES,
    CheckpointSaved,
    EpochEnd,
    EventFollower,
    EventWriter,
    Message,
    RunFailed,
    RunFinished,
    RunInterrupted,
    Progress,
    RunPruned,
    RunStarted,
    event_from_json,
    read_events,
)
from tui_ft.core.library.ckptfile import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import list_runs, new_run_id


def _samples(rid="r1"):
    return [
        RunStarted(rid, preset_name="p", preset={"run": {"name": "p"}}, device="cpu", n_train=3, n_val=1, n_test=2, parent="a@best", pid=1, skipped=["mp-1"]),
        Message(rid, text="héllo", level="warning"),
        EpochEnd(rid, epoch=0, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5, best_epoch=0),
        CheckpointSaved(rid, kind="best", path="x/best.pt", epoch=0, val_mae=0.5),
        RunFinished(rid, test_mae=0.25, best_epoch=0, best_val_mae=0.5, seconds=1.0, n_test=2, predictions="p.csv"),
        RunFailed(rid, message="boom", epoch=2),
        RunInterrupted(rid, epoch=1),
        RunPruned(rid, epoch=1, reason="median pruner: val_mae 0.5000 at epoch 1"),
        Progress(rid, stage="graphs", done=10, total=40, rate=12.5),
    ]


def test_every_event_type_round_trips(tmp_path):
    evs = _samples()
    assert {type(e) for e in evs} == set(EVENT_TYPES.values())
    p = tmp_path / "events.jsonl"
    with EventWriter(p) as w:
        for e in evs:
            w.emit(e)
    lines = p.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(evs)
    assert all(json.loads(line)["type"] == e.type for line, e in zip(lines, evs))
    back = read_events(p)
    assert back == evs
    assert event_from_json(evs[2].to_json()) == evs[2]


def test_truncated_line_is_skipped_with_warning(tmp_path):
    p = tmp_path / "events.jsonl"
    evs = _samples()
    text = "\n".join(e.to_json() for e in evs[:3])
    p.write_text(text + "\n" + evs[3].to_json()[:25] + "\n" + evs[4].to_json() + "\n", encoding="utf-8")
    warnings = []
    back = read_events(p, warn=warnings.append)
    assert [e.type for e in back] == ["run_started", "message", "epoch_end", "run_finished"]
    assert len(warnings) == 1 and ":4:" in warnings[0]


def test_follower_waits_for_complete_lines(tmp_path):
    p = tmp_path / "events.jsonl"
    f = EventFollower(p)
    assert f.poll() == []
    evs = _samples()
    line = evs[0].to_json() + "\n"
    with open(p, "w", encoding="utf-8") as fh:
        fh.write(line[:10])
        fh.flush()
        assert f.poll() == []
        fh.write(line[10:] + evs[2].to_json() + "\n")
    assert f.poll() == [evs[0], evs[2]]
    assert f.poll() == []


def _payload(run_id, kind, preset, val, parent=None, finished=True, t=None):
    return {
        "model_state": {"w": torch.arange(4.0)},
        "model_args": {"atom_fea_dim": 64},
        "meta": {"run_id": run_id, "kind": kind, "preset_name": preset, "val_mae": val, "epoch": 1,
                 "parent": parent, "finished": finished, "time": t if t is not None else time.time()},
    }


@pytest.fixture
def lib(tmp_path):
    paths = Paths(tmp_path)
    now = time.time()
    entries = [
        ("run1-a", "run1", 0.30, None, True, now - 30),
        ("run1-b", "run1", 0.20, None, True, now - 20),
        ("run1-c", "run1", 0.10, None, False, now - 10),  # unfinished: not picked by run1@best
        ("run2-a", "run2", 0.15, "run1-b@best", True, now),
    ]
    for rid, preset, val, parent, fin, t in entries:
        for kind in ("best", "last"):
            save_checkpoint(paths.run_ckpt_dir(rid) / f"{kind}.pt", _payload(rid, kind, preset, val, parent, fin, t))
    return Library(paths)


def test_list_filter_best(lib):
    assert len(lib.list()) == 8
    assert {c.run_id for c in lib.filter(preset="run1")} == {"run1-a", "run1-b", "run1-c"}
    assert lib.best().run_id == "run1-c"
    assert lib.best(preset="run2").run_id == "run2-a"
    assert lib.list()[0].run_id == "run2-a"  # newest first


def test_resolve_refs(lib, tmp_path):
    assert lib.resolve_ref("run1@best").run_id == "run1-b"  # newest *finished* run1
    assert lib.resolve_ref("run1-c@last").kind == "last"
    assert lib.resolve_ref("run2@best").parent == "run1-b@best"
    p = lib.get("run1-a").path
    assert lib.resolve_ref(str(p)).run_id == "run1-a"
    with pytest.raises(LookupError, match="ambiguous"):
        lib.resolve_ref("run1-@best")
    with pytest.raises(LookupError, match="no run or preset"):
        lib.resolve_ref("nope@best")
    with pytest.raises(LookupError, match="@best"):
        lib.resolve_ref("run1@worst")


def test_lineage_and_children(lib):
    chain = lib.lineage(lib.get("run2-a"))
    assert [c.run_id for c in chain] == ["run2-a", "run1-b"]
    assert [c.run_id for c in lib.children("run1-b")] == ["run2-a"]


def test_delete_removes_run(lib):
    lib.delete("run1-a")
    assert "run1-a" not in lib.run_ids()
    with pytest.raises(LookupError):
        lib.delete("run1-a")
    with pytest.raises(LookupError):
        lib.delete("../..")


def test_atomic_write_never_leaves_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "r" / "best.pt"
    save_checkpoint(path, _payload("r", "best", "p", 0.5))
    before = path.read_bytes()

    def boom(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _payload("r", "best", "p", 0.1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["best.json", "best.pt"]
    assert load_checkpoint(path)["meta"]["val_mae"] == 0.5


def test_listing_ignores_half_written_runs(tmp_path):
    paths = Paths(tmp_path)
    d = paths.run_ckpt_dir("r")
    d.mkdir(parents=True)
    (d / "best.pt").write_bytes(b"\x00garbage")  # no sidecar yet: not listed
    assert Library(paths).list() == []
    (d / "best.json").write_text("{truncated", encoding="utf-8")
    assert Library(paths).list() == []


def test_wrong_typed_sidecar_fields_are_reported_once_not_fatal(lib, caplog):
    """A sidecar with fields of the wrong type, or one that is not an object, does not
    change what is listed: the library shows what the .pt holds and reports the
    sidecar once (cause 8 of issue 12: the .pt is trusted over the sidecar)."""
    side = lib.get("run1-a").path.with_suffix(".json")
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta.update(val_mae="bad", epoch=None, time="x", finished="yes", note=[1, 2])
    side.write_text(json.dumps(meta), encoding="utf-8")
    bad_json = lib.get("run1-b", "last").path.with_suffix(".json")
    bad_json.write_text("[1, 2]", encoding="utf-8")

    with caplog.at_level("WARNING", logger="tui_ft.library"):
        items = lib.list()
        again = lib.list()
    assert len(items) == len(again) == 8  # both still listed, from their .pt
    c = next(i for i in items if i.ref == "run1-a@best")
    assert (c.val_mae, c.epoch, c.finished, c.preset_name) == (0.30, 1, True, "run1")
    assert c.meta.problems == () and c.meta.extra == {}
    assert next(i for i in items if i.ref == "run1-b@last").val_mae == 0.20
    assert set(lib.problems) == {side, bad_json}
    assert "val_mae" in lib.problems[side] and "'bad'" in lib.problems[side]
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2, reports  # each bad sidecar once, although listed twice
    assert any(m.startswith(f"{side}: ") and "time" in m and "shown from the checkpoint" in m for m in reports)
    assert any(m.startswith(f"{bad_json}: ") and "not a JSON object" in m for m in reports)
    # the rest of the library still works around it
    assert lib.best().run_id == "run1-c" and lib.best(preset="run1").run_id == "run1-c"
    assert lib.resolve_ref("run1-a@best").val_mae == 0.30


def test_checkpoint_meta_round_trips_the_on_disk_keys():
    d = {"run_id": "r", "kind": "best", "preset_name": "p", "epoch": 2, "val_mae": 0.25, "parent": None,
         "time": 12.5, "finished": True, "custom": {"a": 1}}
    meta = CheckpointMeta.from_dict(d)
    assert meta.problems == () and (meta.epoch, meta.val_mae, meta.finished) == (2, 0.25, True)
    out = meta.to_dict()
    assert {k: out[k] for k in d} == d  # every key kept with its value, unknown ones too
    assert CheckpointMeta.from_dict(out) == meta
    assert CheckpointMeta.from_dict("not a dict") is None
    assert CheckpointMeta.from_dict({"val_mae": "0.5"}).problems[0][0] == "val_mae"  # strict: no coercion
    assert CheckpointMeta.from_dict({"val_mae": math.nan}).problems == ()  # the interrupt path writes NaN


def test_garbage_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_run_ids_are_unique_and_summaries(tmp_path):
    paths = Paths(tmp_path)
    ids = {new_run_id("run1", paths) for _ in range(50)}
    assert len(ids) == 50 and all((paths.logs / i).is_dir() for i in ids)
    rid = sorted(ids)[0]
    with EventWriter(paths.logs / rid / "events.jsonl") as w:
        for e in _samples(rid)[:5]:
            w.emit(e)
    runs = {s.run_id: s for s in list_runs(paths)}
    s = runs[rid]
    assert s.status == "finished" and s.test_mae == 0.25 and s.best_val_mae == 0.5 and len(s.history) == 1
    assert runs[sorted(ids)[1]].status == "pending"


def test_dead_process_without_final_event_is_crashed(tmp_path):
    paths = Paths(tmp_path)
    rid = new_run_id("p", paths)
    ev = _samples(rid)[0]
    ev.pid = 2**22 + 12345  # no such process
    with EventWriter(paths.logs / rid / "events.jsonl") as w:
        w.emit(ev)
    (s,) = list_runs(paths)
    assert s.status == "crashed" and math.isfinite(s.elapsed or 0.0)


def test_ctrl_c_during_a_checkpoint_write_is_delivered_after_it(tmp_path):
    import signal

    path = tmp_path / "checkpoints" / "r" / "last.pt"
    real_save = torch.save
    signal.signal(signal.SIGINT, signal.default_int_handler)  # an in-process CLI run may have set its own

    def save_then_interrupted(obj, fh, *a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-save
        real_save(obj, fh, *a, **k)

    torch.save = save_then_interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, _payload("r", "last", "p", 0.5))
    finally:
        torch.save = real_save
    # the interrupt waited for the write: both files are whole
    assert load_checkpoint(path)["meta"]["val_mae"] == 0.5
    assert (path.with_suffix(".json")).is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
