"""Filters over runs (``tui-ft runs --where``) and ``tui-ft compare`` (issue 28, items 1 and 2).

The runs here are event streams written by the test (a preset dict in ``run_started``, the
epochs, the finish), so every case is exact and fast; the dashboard's compare view and
filter line are tested with real demo runs in ``test_tui_compare.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.common.events import EpochEnd, EventWriter, RunFinished, RunStarted
from tui_ft.core.common.paths import Paths
from tui_ft.core.library.compare import compare_runs, known_fields, record_of, select_runs
from tui_ft.core.library.query import FilterError, parse_filter
from tui_ft.core.library.runs import list_runs


def _preset(name: str = "demo", lr: float = 1e-3, mode: str = "head", fold: int = 0, source: str = "demo") -> dict:
    return {
        "run": {"name": name, "description": "a test run"},
        "data": {"source": source, "target": "e_form", "fold": fold, "fraction": 1.0},
        "model": {"pretrained": "0.3.0", "init": ""},
        "finetune": {"mode": mode, "refit_atomref": True, "lr_factors": {}},
        "optim": {"optimizer": "adam", "lr": lr, "weight_decay": 0.0, "scheduler": "none"},
        "train": {"epochs": 3, "batch_size": 8, "device": "cpu", "seed": 0},
    }


def write_run(root: Path, rid: str, preset: dict, *, test_mae: float | None = 0.3, status: str = "finished",
              data_sha: str = "a" * 64, split_sha: str = "b" * 64, t0: float | None = None) -> None:
    t0 = time.time() - 1000 if t0 is None else t0
    with EventWriter(root / "logs" / rid / "events.jsonl") as w:
        w.emit(RunStarted(rid, preset_name=preset["run"]["name"], preset=preset, device="cpu", n_train=10, n_val=2,
                          n_test=3, epochs=3, pid=0, data_sha256=data_sha, split_sha256=split_sha, time=t0))
        for ep in range(4):
            w.emit(EpochEnd(rid, epoch=ep, train_mae=None if ep == 0 else 0.4, val_mae=0.5 - 0.01 * ep, lr=preset["optim"]["lr"],
                            seconds=1.0, best_val_mae=0.5 - 0.01 * ep, best_epoch=ep, unit="eV/atom", time=t0 + ep))
        if status == "finished":
            w.emit(RunFinished(rid, test_mae=test_mae, best_epoch=3, best_val_mae=0.47, seconds=4.0, n_test=3,
                               unit="eV/atom", time=t0 + 5))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "presets").mkdir(parents=True)
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.chdir(root)
    t = time.time() - 5000
    write_run(root, "a-head-lr1e-3", _preset(lr=1e-3), test_mae=0.031, t0=t)
    write_run(root, "b-head-lr1e-4", _preset(lr=1e-4), test_mae=0.029, t0=t + 10)
    write_run(root, "c-full-lr1e-5", _preset(name="lpft_dev", lr=1e-5, mode="full"), test_mae=0.027, t0=t + 20)
    write_run(root, "d-full-fold1", _preset(name="lpft_dev", lr=1e-5, mode="full", fold=1), status="running", t0=t + 30)
    return root


# ---------------------------------------------------------------- the grammar

REC = {"optim.lr": 5e-5, "finetune.mode": "head", "status": "finished", "preset": "lpft_dev", "data.fold": 0,
       "test_mae": 0.029, "log.tensorboard": True, "run_id": "lpft_dev-20261202-101010-ab12"}


@pytest.mark.parametrize("text, expected", [
    ("optim.lr < 1e-3 and finetune.mode = head", True),
    ("optim.lr = 5e-5", True),  # numbers compare as numbers
    ("optim.lr == 0.00005", True),
    ("optim.lr >= 1e-4", False),
    ("finetune.mode = full or data.fold = 0", True),
    ("finetune.mode = full or data.fold = 1 and status = finished", False),  # and binds tighter than or
    ("(finetune.mode = full or data.fold = 0) and status = finished", True),
    ("not status = finished", False),
    ("not not status = finished", True),
    ("preset ~ lpft*", True),
    ("preset !~ lpft*", False),
    ("run_id ~ '*-2026*'", True),
    ('preset = "lpft_dev"', True),
    ("log.tensorboard = true", True),
    ("log.tensorboard = 1", False),  # a bool is not a number
    ("task.force_weight > 0", False),  # a field the run lacks matches no comparison ...
    ("not task.force_weight > 0", True),  # ... so its negation does
    ("test_mae < 0.03 AND status != failed", True),  # keywords in any case
])
def test_filter_semantics(text, expected):
    assert parse_filter(text).matches(REC) is expected


@pytest.mark.parametrize("text, column, phrase", [
    ("optim.lr <", 11, "expected a value"),
    ("optim.lr < abc", 12, "needs a number"),
    ("status finished", 8, "expected an operator"),
    ("finetune.mode = full andd x = 1", 22, "found 'andd'"),
    ("(status = finished", 19, "closing ')'"),
    ("status = finished)", 18, "found ')'"),
    ("= 3", 1, "expected a comparison"),
    ("status = finished and", 22, "expected a comparison"),
    ("__import__('os').system('true')", 11, ""),  # never evaluated: a syntax error like any other
    ("", 1, "empty filter"),
])
def test_filter_errors_point_at_the_column(text, column, phrase):
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert info.value.column == column, str(info.value)
    assert phrase in str(info.value)
    assert str(info.value).startswith(f"filter, column {column}: ")
    assert info.value.pointer().splitlines()[1] == " " * (column - 1) + "^"


def test_an_unknown_field_is_an_error_at_its_column_with_a_suggestion():
    flt = parse_filter("status = finished and optim.lrr < 1e-3")
    with pytest.raises(FilterError) as info:
        flt.check_fields(known_fields([REC]))
    assert info.value.column == 23 and "unknown field 'optim.lrr'" in str(info.value) and "optim.lr" in str(info.value)
    # a preset key no run has yet is known (from the preset's schema), not an error
    parse_filter("task.force_weight > 0").check_fields(known_fields([]))


# ---------------------------------------------------------------- runs --where


def _listed(capsys) -> list[str]:
    out = capsys.readouterr().out.splitlines()
    return [ln.split()[0] for ln in out[1:] if ln.strip()]


def test_runs_where_lists_the_matching_runs_only(runs, capsys):
    assert cli.main(["runs", "--where", "optim.lr < 1e-3 and finetune.mode = head"]) == 0
    assert _listed(capsys) == ["b-head-lr1e-4"]
    assert cli.main(["runs", "--where", "preset ~ lpft* and not status = running"]) == 0
    assert _listed(capsys) == ["c-full-lr1e-5"]
    assert cli.main(["runs", "--where", "finetune.mode = full or test_mae < 0.03"]) == 0
    assert _listed(capsys) == ["d-full-fold1", "c-full-lr1e-5", "b-head-lr1e-4"]  # newest first
    assert cli.main(["runs", "--where", "data.fold = 3"]) == 0
    assert "match 'data.fold = 3'" in capsys.readouterr().out


def test_runs_where_in_json_and_csv(runs, capsys):
    assert cli.main(["runs", "--format", "json", "--where", "status = finished and optim.lr <= 1e-4"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in rows] == ["c-full-lr1e-5", "b-head-lr1e-4"]
    assert rows[0]["data_sha256"] == "a" * 64 and "preset" not in rows[0]  # the preset dict is not a column
    assert cli.main(["runs", "--format", "csv", "--where", "run_id ~ a-*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("a-head-lr1e-3,")


def test_a_bad_filter_exits_2_with_one_message_and_its_column(runs, capsys):
    assert cli.main(["runs", "--where", "optim.lr < 1e-3 andd status = finished"]) == 2
    err = capsys.readouterr().err
    assert "error: --where: filter, column 17: expected and, or, or the end, found 'andd'" in err
    assert "Traceback" not in err and err.rstrip().endswith("^")
    assert cli.main(["runs", "--format", "json", "--where", "optim.lrr < 1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "unknown field 'optim.lrr'; did you mean optim.lr" in err


def test_select_runs_sees_the_named_test_metrics_of_a_potential(tmp_path):
    root = tmp_path
    p = _preset(name="pot")
    with EventWriter(root / "logs" / "pot-1" / "events.jsonl") as w:
        w.emit(RunStarted("pot-1", preset_name="pot", preset=p, device="cpu", n_train=1, n_val=1, n_test=1))
        w.emit(RunFinished("pot-1", test_mae=0.01, best_epoch=0, best_val_mae=0.02, seconds=1.0,
                           test_metrics={"test_energy_mae": 9.5, "test_force_mae": 93.7}))
    (s,) = list_runs(paths=Paths(root))
    assert record_of(s)["test_force_mae"] == 93.7
    assert select_runs([s], "test_force_mae < 100 and test_energy_mae < 10") == [s]
    assert select_runs([s], "test_force_mae < 90") == []


# ---------------------------------------------------------------- compare


def test_compare_shows_exactly_the_keys_that_differ(runs, capsys):
    assert cli.main(["compare", "a-head-lr1e-3", "b-head-lr1e-4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 key differ")
    assert out[1].split() == ["key", "a-head-lr1e-3", "b-head-lr1e-4"]
    assert out[2].split() == ["optim.lr", "0.001", "0.0001"]
    assert out[3] == ""
    table = [ln.split() for ln in out[5:]]
    assert [r[0] for r in table] == ["a-head-lr1e-3", "b-head-lr1e-4"]
    assert [r[5] for r in table] == ["0.0310", "0.0290"] and all(r[-1] == "eV/atom" for r in table)


def test_compare_json_and_the_data_question(runs, capsys):
    root = runs
    write_run(root, "e-other-data", _preset(lr=1e-3), data_sha="c" * 64, split_sha="d" * 64)
    assert cli.main(["compare", "a-head-lr1e-3", "e-other-data", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["runs"] == ["a-head-lr1e-3", "e-other-data"]
    assert got["differing"] == {"data_sha256": ["a" * 64, "c" * 64], "split_sha256": ["b" * 64, "d" * 64]}
    assert [r["test_mae"] for r in got["results"]] == [0.031, 0.3]
    assert cli.main(["compare", "a-head-lr1e-3", "c-full-lr1e-5", "d-full-fold1", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got["differing"]) == {"optim.lr", "finetune.mode", "data.fold"}
    assert got["differing"]["data.fold"] == [0, 0, 1]
    assert [r["status"] for r in got["results"]] == ["finished", "finished", "running"]  # pid 0: not checked


def test_compare_of_equal_runs_and_bad_names(runs, capsys):
    write_run(runs, "f-same-as-a", _preset(lr=1e-3))
    assert cli.main(["compare", "a-head-lr1e-3", "f-same-as-a"]) == 0
    assert capsys.readouterr().out.startswith("no key differs (")
    assert cli.main(["compare", "a-head-lr1e-3", "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert "no-such-run: no run or preset of that name" in err and "Traceback" not in err
    assert cli.main(["compare", "a-head-lr1e-3"]) == 2
    assert "compare needs two or more runs" in capsys.readouterr().err


def test_compare_runs_keeps_missing_keys_apart_from_values():
    class S:  # the fields compare reads from a run summary
        def __init__(self, rid, preset):
            self.run_id, self.preset_name, self.status, self.preset = rid, "p", "finished", preset
            self.best_val_mae = self.best_epoch = self.test_mae = self.epoch = self.elapsed = None
            self.epochs, self.history, self.test_metrics = 0, [], None
            self.data_sha256 = self.split_sha256 = None

    a = _preset()
    b = _preset()
    b["task"] = {"kind": "potential", "force_weight": 1.0}
    b["log"] = {"tensorboard": True}
    a["log"] = {"tensorboard": 1}
    res = compare_runs([S("a", a), S("b", b)])
    assert dict(res.differing) == {"log.tensorboard": [1, True], "task.force_weight": ["-", 1.0], "task.kind": ["-", "potential"]}
