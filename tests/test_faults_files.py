"""Bad files: hostile or broken checkpoints, unconvertible structures, torn event logs.

* A checkpoint whose pickle would run code (``__reduce__`` -> ``os.system``) is
  refused by ``load_checkpoint`` with a ``CheckpointError`` and the code never
  runs (its marker file is never created), also through ``tui-ft eval`` (exit 2,
  one line) and as a preset's ``model.init``.
* A data file with structures CHGNet cannot convert (isolated atoms), an
  unparsable structure dict and a non-numeric target: each is reported by id in
  a warning ``message`` event, listed in ``run_started.skipped``, in no split,
  and the run completes; ``tui-ft eval`` on that file names them too.
* A truncated or garbled ``events.jsonl`` line is skipped with a warning by
  ``read_events``, ``EventFollower`` and ``summarize``, never a crash; an event
  appended after a torn last line is not lost; ``tui-ft runs`` still works.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import warnings
from pathlib import Path

import pytest
import torch

from tui_ft import cli
from tui_ft.core.common.events import (
    EpochEnd,
    EventFollower,
    EventWriter,
    Message,
    RunFinished,
    RunStarted,
    read_events,
)
from tui_ft.core.library.ckptfile import CheckpointError, load_checkpoint
from tui_ft.core.library.checkpoints import Library
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.runs import summarize

BAD_IDS = ["bad-isolated", "bad-unparsable", "bad-target"]


# ---------------------------------------------------------------- helpers


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def hostile_checkpoint(path: Path, marker: Path, *, where: str = "meta", zip_format: bool = True) -> Path:
    payload = {
        "model_state": {"w": torch.zeros(2)},
        "model_args": {},
        "meta": {"run_id": "evil", "kind": "best", "epoch": 1, "val_mae": 0.1},
    }
    if where == "meta":
        payload["meta"]["note"] = RunsCode(marker)
    else:
        payload["model_state"]["w"] = RunsCode(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    return path


def small_data(path: Path, n_good: int = 40, *, bad: bool = True) -> Path:
    """A Matbench-layout file: ``n_good`` demo rows, plus (if ``bad``) three faulty rows
    placed among them: isolated atoms (no neighbour within 6 A), an unparsable
    structure dict, a non-numeric target."""
    from pymatgen.core import Lattice, Structure

    from tui_ft.core.data.demo import build_demo_dataset

    demo = build_demo_dataset()
    index, data = list(demo["index"][:n_good]), list(demo["data"][:n_good])
    if bad:
        isolated = Structure(Lattice.cubic(14.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
        rows = [
            (3, "bad-isolated", [isolated, -1.0]),
            (17, "bad-unparsable", [{"lattice": "not a lattice", "sites": 7}, -0.5]),
            (29, "bad-target", [demo["data"][0][0], "n/a"]),
        ]
        for pos, ident, row in rows:
            index.insert(pos, ident)
            data.insert(pos, row)
    path.write_text(json.dumps({"index": index, "columns": ["structure", "e_form"], "data": data}), encoding="utf-8")
    return path


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- hostile checkpoints


@pytest.mark.parametrize(
    "where, zip_format",
    [("meta", True), ("model_state", True), ("meta", False)],
    ids=["zip-meta", "zip-weights", "legacy-pickle"],
)
def test_checkpoint_that_runs_code_is_refused(where, zip_format, tmp_path, fault_report):
    marker = tmp_path / "pwned"
    ckpt = hostile_checkpoint(tmp_path / "evil.pt", marker, where=where, zip_format=zip_format)
    # the payload really is hostile: plain unpickling runs the command
    if zip_format:
        torch.load(ckpt, weights_only=False)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt)
    msg = str(info.value)
    assert msg.startswith(str(ckpt)) and "\n" not in msg
    assert "refused" in msg or "not a readable checkpoint" in msg
    if zip_format:
        assert "refused to load" in msg and "system" in msg, msg
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    fault_report["hostile checkpoints refused"] += 1


def test_hostile_checkpoint_through_cli(project, tui_ft_cli, capsys, fault_report):
    marker = project / "pwned"
    data = small_data(project / "small.json", 16, bad=False)
    # a loose file and the same file inside the library, listed by its sidecar
    loose = hostile_checkpoint(project / "evil.pt", marker)
    lib = hostile_checkpoint(project / "checkpoints" / "evilrun" / "best.pt", marker)
    (lib.parent / "best.json").write_text(json.dumps({"run_id": "evilrun", "kind": "best", "epoch": 1,
                                                       "val_mae": 0.1, "preset_name": "evil", "time": 1.0}))
    res = tui_ft_cli("eval", loose, "--data", data, cwd=project, timeout=120)
    assert res.returncode == 2, res
    line = one_line(res.stderr)
    assert line.startswith(str(loose)) and "refused to load" in line
    assert res.stdout == ""
    assert not marker.exists()

    assert cli.main(["eval", "evilrun@best", "--data", str(data)]) == 2
    out, err = capsys.readouterr()
    assert "refused to load" in one_line(err) and out == ""
    assert not marker.exists()
    assert cli.main(["checkpoints"]) == 0  # the listing reads the .pt (weights_only): refused, not listed
    out, err = capsys.readouterr()
    assert "evilrun@best" not in out and "Traceback" not in err
    lib_now = Library(Paths(project))
    assert lib_now.list() == [] and "refused to load" in lib_now.unreadable[lib]  # reported (once) as a warning
    assert not marker.exists()

    # as the starting point of a run: a preset error (exit 2), no run folder, nothing runs
    preset = project / "presets" / "from_evil.toml"
    preset.write_text(
        '[run]\nname = "from_evil"\n[data]\nsource = "%s"\n[model]\ninit = "evilrun@best"\n'
        '[finetune]\nmode = "head"\n[optim]\nlr = 1e-3\n[train]\nepochs = 1\ndevice = "cpu"\n' % data
    )
    rc = cli.main(["--preset", str(preset), "--plain"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    line = one_line(err)
    assert line.startswith(str(preset)) and "model.init" in line and "refused to load" in line
    assert not Paths(project).logs.exists() or not any(Paths(project).logs.iterdir())
    assert not marker.exists()
    fault_report["hostile checkpoints refused"] += 3


# ---------------------------------------------------------------- unconvertible structures


def test_bad_structures_reported_by_id_and_run_completes(project, demo_preset, capsys, fault_report):
    data = small_data(project / "with_bad_rows.json")
    preset = demo_preset("badrows", source=str(data), epochs=2, batch_size=8)
    rc = cli.main(["--preset", str(preset), "--plain"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in out + err
    paths = Paths(project)
    (run_dir,) = paths.logs.iterdir()
    events = read_events(run_dir / "events.jsonl")
    warned = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    for ident in BAD_IDS:
        assert sum(ident in w for w in warned) == 1, (ident, warned)
        assert ident in err
    assert any("isolated atom" in w for w in warned if "bad-isolated" in w), warned
    started = next(e for e in events if isinstance(e, RunStarted))
    assert sorted(started.skipped) == sorted(BAD_IDS)
    assert started.n_train + started.n_val + started.n_test == 40  # every good row in a split
    assert isinstance(events[-1], RunFinished)
    with open(events[-1].predictions, newline="", encoding="utf-8") as fh:
        test_ids = [row["id"] for row in csv.DictReader(fh)]
    assert len(test_ids) == started.n_test and not set(test_ids) & set(BAD_IDS)
    run_id = run_dir.name
    for kind in ("best", "last"):
        load_checkpoint(paths.run_ckpt_dir(run_id) / f"{kind}.pt")

    # the second time the failures come from the graph cache, still reported by id
    rc = cli.main(["--preset", str(preset), "--plain"])
    out, err2 = capsys.readouterr()
    assert rc == 0 and all(ident in err2 for ident in BAD_IDS)

    # eval on the same file names them and scores the rest
    # (--rows all: every row of the run's own file, not only its test rows)
    assert cli.main(["eval", f"{run_id}@best", "--data", str(data), "--rows", "all"]) == 0
    out, err = capsys.readouterr()
    assert "on 40 structures" in out
    left_out = [line for line in err.splitlines() if line.startswith("[warning] structure ")]
    assert sorted(line.split()[2] for line in left_out) == sorted(BAD_IDS)
    assert all(" left out: " in line for line in left_out)
    fault_report["unusable structures reported by id"] += len(BAD_IDS)


def test_eval_bad_inputs_one_line(project, tui_ft_cli, capsys):
    data = small_data(project / "tiny.json", 12, bad=False)
    good = project / "ck" / "x.pt"
    good.parent.mkdir()
    torch.save({"model_state": {"w": torch.zeros(1)}, "model_args": {}, "meta": {}}, good)
    truncated = project / "ck" / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = [
        (["eval", str(truncated), "--data", str(data)], "not a readable checkpoint"),
        (["eval", str(project / "nope.pt"), "--data", str(data)], "does not exist"),
        (["eval", "ghost@best", "--data", str(data)], "ghost"),
    ]
    for argv, needle in cases:
        assert cli.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert needle in one_line(err) and out == ""


# ---------------------------------------------------------------- torn event logs


def _run_events(run_id: str) -> list:
    return [
        RunStarted(run_id, preset_name="p", preset={"finetune": {"mode": "head"}}, device="cpu",
                   n_train=3, n_val=1, n_test=1, pid=0, epochs=2),
        EpochEnd(run_id, epoch=0, train_mae=None, val_mae=0.5, lr=1e-3, seconds=0.1, best_val_mae=0.5, best_epoch=0),
        EpochEnd(run_id, epoch=1, train_mae=0.4, val_mae=0.45, lr=1e-3, seconds=0.1, best_val_mae=0.45, best_epoch=1),
        RunFinished(run_id, test_mae=0.3, best_epoch=1, best_val_mae=0.45, seconds=1.0),
    ]


def test_truncated_and_garbled_event_lines(project, capsys, fault_report):
    paths = Paths(project)
    run_dir = paths.logs / "torn-run"
    run_dir.mkdir(parents=True)
    f = run_dir / "events.jsonl"
    evs = _run_events("torn-run")
    lines = [e.to_json() for e in evs]
    garbage = [
        lines[1][: len(lines[1]) // 2],  # torn line (a crash mid-write), then more lines
        "\x00\x00\x00",  # zeros left by a crash on some file systems
        "[1, 2, 3]",  # JSON, not an object
        "42",
        "null",
        '{"type": "epoch_end", "run_id": "torn-run"}',  # fields missing
        '{"type": "from_the_future", "run_id": "torn-run"}',
    ]
    f.write_text("\n".join([lines[0], *garbage, *lines[1:]]) + "\n", encoding="utf-8")

    warned: list[str] = []
    back = read_events(f, warn=warned.append)
    assert back == evs
    assert len(warned) == len(garbage) and all(str(f) in w for w in warned)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_events(f) == evs
    assert len(caught) == len(garbage)

    follower_warned: list[str] = []
    follower = EventFollower(f, warn=follower_warned.append)
    assert follower.poll() == evs and len(follower_warned) == len(garbage)

    warned.clear()
    s = summarize(run_dir, warn=warned.append)
    assert s.status == "finished" and s.test_mae == 0.3 and len(s.history) == 2 and warned

    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "torn-run" in out and "finished" in out and "Traceback" not in err
    assert "skipped unreadable event line" in err
    fault_report["garbled event lines skipped"] += len(garbage)


def test_event_after_torn_last_line_is_not_lost(project, capsys):
    """A crash can leave a last line without its newline; the next writer (a resume)
    must not glue its first event onto it."""
    paths = Paths(project)
    run_dir = paths.logs / "torn-tail"
    run_dir.mkdir(parents=True)
    f = run_dir / "events.jsonl"
    evs = _run_events("torn-tail")
    f.write_text(evs[0].to_json() + "\n" + evs[1].to_json() + "\n" + evs[2].to_json()[:30], encoding="utf-8")

    follower = EventFollower(f)
    assert follower.poll() == evs[:2]  # the partial line waits for its newline
    warned: list[str] = []
    assert read_events(f, warn=warned.append) == evs[:2] and len(warned) == 1

    with EventWriter(f) as w:  # e.g. `tui-ft resume` appending to the same file
        w.emit(evs[2])
        w.emit(evs[3])
    warned.clear()
    assert read_events(f, warn=warned.append) == evs  # nothing after the tear is lost
    assert len(warned) == 1
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert follower.poll() == evs[2:]
    assert summarize(run_dir, warn=warned.append).status == "finished"
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "torn-tail" in out and "finished" in out and "skipped unreadable event line" in err


def test_runs_and_checkpoints_with_broken_files(project, capsys):
    paths = Paths(project)
    (paths.logs / "empty-run").mkdir(parents=True)  # no events file at all
    (paths.logs / "zero-run").mkdir()
    (paths.logs / "zero-run" / "events.jsonl").write_bytes(b"")
    (paths.logs / "binary-run").mkdir()
    (paths.logs / "binary-run" / "events.jsonl").write_bytes(os.urandom(512) + b"\n\xff\xfe\n")
    d = paths.checkpoints / "broken"
    d.mkdir(parents=True)
    (d / "best.pt").write_bytes(b"PK\x03\x04 truncated")
    (d / "best.json").write_text('{"run_id": "broken", "epo', encoding="utf-8")  # torn sidecar: not listed
    (d / "last.pt").write_bytes(b"junk")
    (d / "last.json").write_text("[1, 2]", encoding="utf-8")  # not an object: not listed
    (d / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert Library(paths).list() == []
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert all(r in out for r in ("empty-run", "zero-run", "binary-run")) and "Traceback" not in err
    assert cli.main(["checkpoints"]) == 0
    out, err = capsys.readouterr()
    assert "no checkpoints" in out and "Traceback" not in err
