"""Plans: parsing and validation, gates, state and resume, and real two-stage runs on the demo data."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from tui_ft.core.orchestrate.plans import (
    Gate,
    check_plan,
    load_plan,
    parse_gate,
    parse_plan,
)
from tui_ft.core.orchestrate.plan_runner import (
    PlanLock,
    PlanLocked,
    PlanState,
    StageState,
    StateError,
    _resume_point,
    lock_path,
    process_start_time,
    read_state,
    run_plan,
    state_path,
)
from tui_ft.core.config.fields import PresetError, PresetErrors
from tui_ft.core.config.presets import is_plan_text, load_preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch, tmp_path):
    """Stage preset paths are relative to the current directory (the project root here)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path / "home"))
    # relative data paths are the project root's: ../shared beside the home is the repository's
    if (ROOT.parent / "shared").is_dir():
        (tmp_path / "home").mkdir(exist_ok=True)
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")


def errors_of(text: str, path: str = "plan.toml") -> list[PresetError]:
    with pytest.raises(PresetError) as info:
        parse_plan(text, path)
    return info.value.errors


def one_error(text: str, path: str = "plan.toml") -> PresetError:
    errs = errors_of(text, path)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


TWO_FILES = """\
[plan]
name = "p"

[[stage]]
preset = "presets/run1.toml"
continue_if = "best_val_mae < 0.3"

[[stage]]
preset = "presets/run2.toml"
init = "previous@best"
"""


def inline_stage(name: str, mode: str, epochs: int, *, lr: float, extra: str = "", data: str = "") -> str:
    return f"""
[[stage]]
{extra}
[stage.run]
name = "{name}"
[stage.data]
source = "demo"
fraction = 0.15
val_fraction = 0.05
test_limit = 6
{data}
[stage.finetune]
mode = "{mode}"
[stage.optim]
lr = {lr}
[stage.train]
epochs = {epochs}
batch_size = 16
device = "cpu"
"""


# --------------------------------------------------------------------------- shipped plans


def test_shipped_lpft():
    assert is_plan_text((ROOT / "presets/lpft.toml").read_text())
    plan = load_plan("presets/lpft.toml")
    assert plan.name == "lpft" and plan.description
    s1, s2 = plan.stages
    assert s1.source == "presets/run1.toml" and s1.init == ""
    assert s1.preset.finetune.mode == "head"
    assert (s1.preset.train.epochs, s1.preset.train.patience) == (10, 3)
    assert s1.gate == Gate("best_val_mae", "<", 0.3)
    assert s2.source == "presets/run2.toml" and s2.init == "previous@best" and s2.gate is None
    assert s2.preset.finetune.mode == "full" and s2.preset.optim.lr == 1e-5 and s2.preset.train.epochs == 5
    assert s2.preset.model.init == "previous@best"
    assert s2.preset.finetune.refit_atomref is False  # keeps the AtomRef learned in stage 1
    # the stage preset still knows its own file and lines, for error messages
    assert s2.preset.path == "presets/run2.toml" and s2.preset.line_of("optim.lr") is not None
    lines = (ROOT / "presets/lpft.toml").read_text().splitlines()
    assert lines[s1.line - 1] == lines[s2.line - 1] == "[[stage]]" and s1.line < s2.line


def test_shipped_lpft_cosine():
    plan = load_plan("presets/lpft_cosine.toml")
    s1, s2 = plan.stages
    assert s1.preset.name == "run3" and s1.preset.optim.scheduler == "cosine" and s1.preset.train.epochs == 15
    assert s1.preset.finetune.mode == "head"
    assert s2.preset.name == "run2" and s2.init == "previous@best"


def test_shipped_lpft_dev_is_the_benchmarked_recipe():
    """presets/lpft_dev.toml = BENCHMARKS.md's lpft row (head 30 epochs lr 1e-3 batch 8, then 2 full
    epochs lr 1e-4 batch 16 from its best checkpoint) on the whole training part."""
    s1, s2 = load_plan("presets/lpft_dev.toml").stages
    assert s1.preset.finetune.mode == "head" and s2.preset.finetune.mode == "full"
    assert (s1.preset.train.epochs, s1.preset.optim.lr, s1.preset.train.batch_size) == (30, 1e-3, 8)
    assert (s2.preset.train.epochs, s2.preset.optim.lr, s2.preset.train.batch_size) == (2, 1e-4, 16)
    assert s1.preset.data.fraction == s2.preset.data.fraction == 1.0
    assert s2.init == "previous@best" and s1.gate is None


@pytest.mark.devdata
@pytest.mark.parametrize("name", ["lpft.toml", "lpft_cosine.toml", "lpft_dev.toml"])
def test_shipped_plans_check_with_dev_data(name):
    check_plan(load_plan(f"presets/{name}"))  # previous@best is not looked up before the run


def test_preset_loader_still_refuses_plans():
    with pytest.raises(PresetError, match="plan loader"):
        load_preset("presets/lpft.toml")


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize(
    "text, gate",
    [
        ("val_mae < 0.3", Gate("val_mae", "<", 0.3)),
        ("best_val_mae<=0.25", Gate("best_val_mae", "<=", 0.25)),
        ("  test_mae >  1e-2 ", Gate("test_mae", ">", 0.01)),
        ("train_mae >= -1", Gate("train_mae", ">=", -1.0)),
        ("val_mae < .5", Gate("val_mae", "<", 0.5)),
    ],
)
def test_parse_gate(text, gate):
    assert parse_gate(text) == gate


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true') or val_mae < 1",
        "val_mae < 0.3 and test_mae < 1",
        "val_mae == 0.3",
        "val_mae = 0.3",
        "val_mae != 0.3",
        "loss < 0.3",
        "VAL_MAE < 0.3",
        "val_mae < abc",
        "val_mae < 0.3.1",
        "val_mae < nan",
        "val_mae < inf",
        "val_mae < 1e999",
        "val_mae <",
        "< 0.3",
        "",
        "0.3 > val_mae",
        0.3,
        True,
        ["val_mae", "<", 0.3],
    ],
)
def test_parse_gate_rejects(text):
    with pytest.raises(ValueError, match="expected '<metric> <op> <number>'"):
        parse_gate(text)


def test_gate_evaluation():
    m = {"val_mae": 0.3, "best_val_mae": 0.2, "test_mae": None, "train_mae": float("nan")}
    assert parse_gate("val_mae < 0.3").holds(m)[0] is False
    assert parse_gate("val_mae <= 0.3").holds(m)[0] is True
    assert parse_gate("best_val_mae > 0.1").holds(m)[0] is True
    assert parse_gate("best_val_mae >= 0.21").holds(m)[0] is False
    met, why = parse_gate("test_mae < 9").holds(m)
    assert met is False and "not available" in why
    assert parse_gate("train_mae < 9").holds(m)[0] is False  # NaN never passes a gate
    assert parse_gate("val_mae < 1").holds({})[0] is False
    assert "0.2000" in parse_gate("best_val_mae < 0.3").holds(m)[1]


def test_bad_gate_in_plan_points_at_its_line():
    text = TWO_FILES.replace('"best_val_mae < 0.3"', "\"__import__('os')\"")
    e = one_error(text, "presets/x.toml")
    assert (e.file, e.line, e.field) == ("presets/x.toml", 6, "stage[1].continue_if")
    assert str(e).startswith("presets/x.toml:6: stage[1].continue_if: expected '<metric> <op> <number>'")
    assert "__import__" in str(e)


def test_gate_on_the_last_stage_is_rejected():
    e = one_error(TWO_FILES + 'continue_if = "val_mae < 1"\n')
    assert (e.line, e.field) == (11, "stage[2].continue_if") and "last stage" in e.message


# --------------------------------------------------------------------------- structure and strictness


def test_unknown_keys_everywhere():
    text = """\
[plan]
name = "p"
colour = "red"

[[stage]]
preset = "presets/run1.toml"
bogus = 1

[[stage]]
preset = "presets/run2.toml"
init = "previous@best"
[stage.set]
"optim.lr" = 1e-5
"optim.nope" = 2

[data]
source = "demo"
"""
    errs = errors_of(text)
    got = [(e.line, e.field) for e in errs]
    assert got == [(3, "plan.colour"), (7, "stage[1].bogus"), (14, "stage[2].set.optim.nope"), (16, "data")]
    assert "allowed: name, description" in errs[0].message
    assert "inside a stage" in errs[3].message
    assert isinstance(errs, list) and all(e.file == "plan.toml" for e in errs)


def test_missing_preset_file_names_the_line():
    e = one_error(TWO_FILES.replace("presets/run2.toml", "presets/no_such.toml"))
    assert (e.file, e.line, e.field) == ("plan.toml", 9, "stage[2].preset")
    assert 'preset file "presets/no_such.toml" not found' in e.message


def test_bad_stage_preset_file_reports_that_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "presets/run1.toml").read_text().replace("epochs = 10", "epochs = 0"))
    e = one_error(TWO_FILES.replace("presets/run1.toml", str(bad)))
    assert e.file == str(bad) and e.field == "train.epochs" and e.line is not None


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        ('[[stage]]\npreset = "presets/run1.toml"\n', 1, "plan", "missing required table [plan]"),
        ('[plan]\nname = "p"\n', 1, "stage", "at least one [[stage]]"),
        ('[plan]\nname = "p"\n[stage]\npreset = "presets/run1.toml"\n', 3, "stage", "double brackets"),
        ('[plan]\nname = "a/b"\n[[stage]]\npreset = "presets/run1.toml"\n', 2, "plan.name", "may only contain"),
        ('[plan]\ndescription = "d"\n[[stage]]\npreset = "presets/run1.toml"\n', 1, "plan.name", "missing required"),
        ('[plan]\nname = "p"\n[[stage]]\ninit = "run1@best"\n', 3, "stage[1]", "expected preset = "),
        ('[plan]\nname = "p"\n[[stage]]\npreset = 3\n', 4, "stage[1].preset", "expected the path"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\ninit = "previous@best"\n', 5, "stage[1].init",
         "first stage has no previous"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\n[[stage]]\npreset = "presets/run2.toml"\n'
         'init = "previous@worst"\n', 7, "stage[2].init", '"previous@best" or "previous@last"'),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\ninit = "run1"\n', 5, "stage[1].init",
         "RUN_OR_PRESET@best"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\n[stage.set]\n"model.init" = "x@best"\n', 6,
         "stage[1].set.model.init", "stage key init"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\n[stage.set]\n"optim.lr" = "1e-5"\n', 6,
         "stage[1].set.optim.lr", 'got "1e-5"'),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\n[stage.set]\n"finetune.backbone_lr" = 1e-5\n',
         6, "stage[1].set.finetune.backbone_lr", 'only allowed when finetune.mode = "full"'),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\nset = 3\n', 5, "stage[1].set", "table of overrides"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\n[stage.run]\nname = "x"\n', 4, "stage[1].preset",
         "not both"),
        ('[plan]\nname = "p"\n[[stage]]\npreset = "presets/run1.toml"\ncontinue_if = "loss < 1"\n[[stage]]\n'
         'preset = "presets/run1.toml"\n', 5, "stage[1].continue_if", 'unknown metric "loss"'),
        ('[plan]\nname = "p"\n[[stage]\n', 3, "toml", ""),
    ],
)
def test_structure_errors(text, line, field, words):
    e = one_error(text)
    assert (e.line, e.field) == (line, field), str(e)
    assert words in e.message
    assert str(e).startswith(f"plan.toml:{line}: {field}: ")


def test_inline_stage_errors_carry_the_stage_and_plan_line():
    text = '[plan]\nname = "p"\n' + inline_stage("a", "head", 2, lr=1e-3, data="fold = 9") + inline_stage(
        "b", "full", 1, lr=5.0, extra='init = "previous@best"'
    )
    errs = errors_of(text)
    got = {e.field: e.line for e in errs}
    assert set(got) == {"stage[1].data.fold", "stage[2].optim.lr"}
    lines = text.splitlines()
    assert lines[got["stage[1].data.fold"] - 1] == "fold = 9"
    assert lines[got["stage[2].optim.lr"] - 1] == "lr = 5.0"


def test_inline_stage_missing_table_points_at_the_stage():
    text = '[plan]\nname = "p"\n\n[[stage]]\n[stage.run]\nname = "a"\n[stage.data]\nsource = "demo"\n'
    errs = errors_of(text)
    assert {e.field for e in errs} == {"stage[1].finetune"}  # [optim] and [train] have defaults
    assert all(e.line == 4 for e in errs)


def test_overrides_applied():
    text = TWO_FILES + '[stage.set]\n"optim.lr" = 2e-5\ntrain.epochs = 1\n"finetune.lr_factors" = { embedding = 0.1 }\n'
    plan = parse_plan(text)
    p = plan.stages[1].preset
    assert p.optim.lr == 2e-5 and p.train.epochs == 1 and p.finetune.lr_factors == {"embedding": 0.1}
    assert plan.stages[1].changes == {"optim.lr": 2e-5, "train.epochs": 1, "finetune.lr_factors.embedding": 0.1}
    assert p.name == "run2" and p.model.init == "previous@best"


def test_refit_atomref_follows_the_stage_init_unless_explicit():
    head = inline_stage("a", "head", 1, lr=1e-3)
    full = inline_stage("b", "full", 1, lr=1e-5, extra='init = "previous@best"')
    plan = parse_plan('[plan]\nname = "p"\n' + head + full)
    assert plan.stages[0].preset.finetune.refit_atomref is True  # pretrained start: refit
    assert plan.stages[1].preset.finetune.refit_atomref is False  # checkpoint start: keep it
    explicit = full.replace('mode = "full"', 'mode = "full"\nrefit_atomref = true')
    plan = parse_plan('[plan]\nname = "p"\n' + head + explicit)
    assert plan.stages[1].preset.finetune.refit_atomref is True


def test_load_plan_file_errors(tmp_path):
    with pytest.raises(PresetError, match="cannot read"):
        load_plan(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[plan]\nname = "\xe9"\n')
    with pytest.raises(PresetError, match="UTF-8") as info:
        load_plan(bad)
    assert info.value.line == 2
    # a preset given to the plan loader
    with pytest.raises(PresetErrors) as info:
        load_plan("presets/run1.toml")
    assert any("inside a stage" in e.message for e in info.value.errors)


# --------------------------------------------------------------------------- resources


def test_check_plan_resources(tmp_path):
    text = (
        '[plan]\nname = "p"\n'
        + inline_stage("a", "head", 1, lr=1e-3, data='target = "band_gap"')
        + inline_stage("b", "full", 1, lr=1e-5, extra='init = "previous@best"')
        + inline_stage("c", "full", 1, lr=1e-5, extra='init = "nothing@best"')
    ).replace('source = "demo"', f'source = "{tmp_path / "x.json"}"', 1)
    plan = parse_plan(text, "p.toml")
    with pytest.raises(PresetErrors) as info:
        check_plan(plan)
    by_field = {e.field: e for e in info.value.errors}
    assert set(by_field) == {"stage[1].data.source", "stage[3].init"}, [str(e) for e in info.value.errors]
    assert "not found" in by_field["stage[1].data.source"].message
    assert text.splitlines()[by_field["stage[3].init"].line - 1] == 'init = "nothing@best"'
    assert "no run or preset named 'nothing'" in by_field["stage[3].init"].message


def test_cli_reports_plan_errors(tmp_path, capsys):
    from tui_ft import cli

    f = tmp_path / "bad_plan.toml"
    f.write_text(TWO_FILES.replace("best_val_mae < 0.3", "val_mae ~ 1"))
    assert cli.main(["--preset", str(f)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{f}:6: stage[1].continue_if: expected '<metric> <op> <number>'" in err


# --------------------------------------------------------------------------- state without training


def _hold_lock(paths, name: str, pid: int, start) -> Path:
    """A lock file as process ``pid`` (started at ``start``) would have left it."""
    p = lock_path(name, paths)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"pid": pid, "start": start, "created": 0.0}))
    return p


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free (reuse within the test is very unlikely)
    return proc.pid


def test_second_start_is_stopped_by_the_lock(tmp_path):
    """A live process holding the plan's lock: the second start does not run and writes nothing."""
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    plan = parse_plan(TWO_FILES)
    parent = os.getppid()
    lock = _hold_lock(paths, "p", parent, process_start_time(parent))
    before = lock.read_bytes()
    said: list[str] = []
    assert run_plan(plan, emit_factory=lambda rid: None, say=said.append, paths=paths) == "stopped"
    assert len(said) == 1 and "already running in process" in said[0] and str(parent) in said[0]
    assert str(lock) in said[0] and said[0].endswith("not started")
    assert lock.read_bytes() == before  # left alone
    assert not state_path("p", paths).exists() and not paths.checkpoints.exists()


def test_lock_is_exclusive_and_released(tmp_path):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    with PlanLock("p", paths) as first:
        held = json.loads(first.path.read_text())
        assert held["pid"] == os.getpid() and held["start"] == process_start_time(os.getpid())
        with pytest.raises(PlanLocked) as info:
            PlanLock("p", paths).acquire()  # even this process: one run of a plan at a time
        assert info.value.pid == os.getpid()
        PlanLock("other", paths).acquire().release()  # another plan has its own lock
    assert not lock_path("p", paths).exists()
    PlanLock("p", paths).acquire().release()


def test_simultaneous_starts_only_one_runs(tmp_path):
    """Several processes take the same plan's lock at the same moment: exactly one gets it."""
    import subprocess
    import sys

    go = tmp_path / "go"
    code = f"""
import os, sys, time
from pathlib import Path
from tui_ft.core.common.paths import Paths
from tui_ft.core.orchestrate.plan_runner import PlanLock, PlanLocked
while not os.path.exists({str(go)!r}):
    time.sleep(0.001)
try:
    lock = PlanLock("p", Paths(Path({str(tmp_path / "home")!r}))).acquire()
except PlanLocked:
    print("locked", flush=True)
    sys.exit(0)
print("got", flush=True)
time.sleep(2)
lock.release()
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(4)
    ]
    # give them time to import, then start them together
    import time

    time.sleep(3)
    go.touch()
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(outs) == ["got", "locked", "locked", "locked"]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    pid = _dead_pid()
    _hold_lock(paths, "q", pid, "proc:1")
    text = '[plan]\nname = "q"\n' + inline_stage("a", "head", 1, lr=1e-3, extra='init = "ghost@best"')
    said: list[str] = []
    # it runs (and fails at its init, which needs no training), then releases the lock
    assert run_plan(parse_plan(text), emit_factory=lambda rid: None, say=said.append, paths=paths) == "failed"
    assert not any("already running" in s for s in said)
    assert read_state("q", paths).pid == os.getpid()
    assert not lock_path("q", paths).exists()


def test_stale_lock_with_a_reused_pid_is_taken_over(tmp_path):
    """The lock's pid is alive but is another process now (its start time differs)."""
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    parent = os.getppid()
    real = process_start_time(parent)
    assert real is not None  # /proc (or psutil) is there on the machines this runs on
    lock = _hold_lock(paths, "p", parent, real + "0")  # same pid, another start time
    with PlanLock("p", paths):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # an unreadable lock left long ago is stale too; a fresh one (being written) is not
    lock.write_text("")
    with pytest.raises(PlanLocked):
        PlanLock("p", paths).acquire()
    os.utime(lock, (1, 1))
    PlanLock("p", paths).acquire().release()


def test_state_round_trip_and_old_dict_format(tmp_path):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    plan = parse_plan(TWO_FILES)
    st = PlanState.new(plan, None)
    st.stages.append(
        StageState(1, "run1", "run1-x", "finished", "abc", init=None, source="presets/run1.toml",
                   gate="best_val_mae < 0.3", metrics={"val_mae": 0.25, "best_val_mae": 0.2, "test_mae": None},
                   gate_met=True)
    )
    st.stages.append(StageState(2, "run2", None, "failed", "def", init="ghost@best", message="no run"))
    st.write(paths)
    back = read_state("p", paths)
    assert back == st and isinstance(back.stages[0], StageState)
    again = PlanState.new(plan, back)
    assert [(h.status, h.runs) for h in again.history] == [("running", ["run1-x", None])]
    # the JSON keys are those of the dict format before: a state written by the old code reads
    raw = json.loads(state_path("p", paths).read_text())
    assert set(raw) == {"format", "plan", "plan_file", "status", "message", "pid", "started", "updated", "stages", "history"}
    assert "gate_met" in raw["stages"][0] and "gate_met" not in raw["stages"][1]
    old = {"format": "tui-ft-plan-state/1", "plan": "p", "plan_file": "p.toml", "status": "failed", "message": "",
           "pid": 12, "started": 1.5, "updated": 2, "history": [{"started": None, "status": "finished", "runs": ["a"]}],
           "stages": [{"stage": 1, "preset": "a", "run_id": None, "status": "failed", "fingerprint": "f",
                       "init": "ghost@best", "message": "gone"}]}
    state_path("p", paths).write_text(json.dumps(old))
    got = read_state("p", paths)
    assert got.stages[0].metrics == {} and got.history[0].runs == ["a"] and got.updated == 2.0


@pytest.mark.parametrize(
    "content, where",
    [
        ("{not json", "Invalid JSON"),
        ("[1, 2]", "Input should be an object"),
        ('{"format": "tui-ft-plan-state/9", "plan": "p", "plan_file": "x", "status": "running"}', "format"),
        ('{"format": "tui-ft-plan-state/1", "plan": "p", "plan_file": "x", "status": "running", '
         '"stages": [{"stage": "1", "preset": "a", "run_id": null, "status": "failed", "fingerprint": "f"}]}',
         "stages[0].stage"),
        ('{"format": "tui-ft-plan-state/1", "plan": "p", "plan_file": "x", "status": 3}', "status"),
    ],
)
def test_corrupt_state_is_reported_once_and_ignored(tmp_path, content, where):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    p = state_path("q", paths)
    p.parent.mkdir(parents=True)
    p.write_text(content)
    with pytest.raises(StateError) as info:
        PlanState.from_json(p.read_bytes(), str(p))
    assert str(info.value).startswith(f"{p}: ") and where in str(info.value)
    errors: list[str] = []
    assert read_state("q", paths, on_error=errors.append) is None and errors == [str(info.value)]
    # running the plan reports it once, keeps the file aside and starts anew
    text = '[plan]\nname = "q"\n' + inline_stage("a", "head", 1, lr=1e-3, extra='init = "ghost@best"')
    said: list[str] = []
    assert run_plan(parse_plan(text), emit_factory=lambda rid: None, say=said.append, paths=paths) == "failed"
    bad = [s for s in said if "ignoring the plan state" in s]
    assert len(bad) == 1 and where in bad[0] and "starting anew" in bad[0]
    assert p.with_name("state.json.bad").read_text() == content
    assert read_state("q", paths, on_error=errors.append).status == "failed" and len(errors) == 1
    said.clear()
    run_plan(parse_plan(text), emit_factory=lambda rid: None, say=said.append, paths=paths)
    assert not any("ignoring" in s for s in said)


def test_unresolvable_init_fails_the_stage(tmp_path):
    from tui_ft.core.common.paths import Paths

    paths = Paths(tmp_path / "home")
    text = '[plan]\nname = "q"\n' + inline_stage("a", "head", 1, lr=1e-3, extra='init = "ghost@best"')
    said: list[str] = []
    assert run_plan(parse_plan(text), emit_factory=lambda rid: None, say=said.append, paths=paths) == "failed"
    st = read_state("q", paths)
    assert st.status == "failed" and st.stages[0].status == "failed" and st.stages[0].run_id is None
    assert any("ghost@best" in s for s in said)


# --------------------------------------------------------------------------- real runs (demo data)


class Sink:
    """emit_factory for tests: collects each run's events (the engine writes events.jsonl)."""

    def __init__(self, interrupt_stage: int | None = None):
        self.events: dict[str, list] = {}
        self.order: list[str] = []
        self.interrupt_stage = interrupt_stage

    def __call__(self, run_id: str):
        self.order.append(run_id)
        stage = len(self.order)
        fired = []

        def emit(ev):
            self.events.setdefault(run_id, []).append(ev)
            if (
                stage == self.interrupt_stage
                and not fired
                and ev.type == "epoch_end"
                and ev.epoch >= 1
            ):
                fired.append(1)
                raise KeyboardInterrupt  # as Ctrl-C in the middle of the stage

        return emit

    def history(self, run_id):
        return [e for e in self.events[run_id] if e.type == "epoch_end"]


@pytest.fixture(scope="module")
def _shared_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("plans_home"), tmp_path_factory.mktemp("plans_cache")


@pytest.fixture
def home(_shared_dirs, monkeypatch):
    """One project root for the real runs (also the cwd); the graph/feature cache is shared."""
    root, cache = _shared_dirs
    monkeypatch.setenv("TUI_FT_HOME", str(root))
    monkeypatch.setenv("TUI_FT_CACHE", str(cache))
    monkeypatch.chdir(root)
    return root


def _two_stage(name: str, gate: str) -> str:
    return (
        f'[plan]\nname = "{name}"\ndescription = "demo LP-FT"\n'
        + inline_stage(f"{name}_head", "head", 2, lr=1e-3, extra=f'continue_if = "{gate}"')
        + inline_stage(f"{name}_full", "full", 1, lr=1e-5, extra='init = "previous@best"')
    )


@pytest.mark.slow
def test_two_stage_run(home):
    from tui_ft.core.library.checkpoints import Library
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.library.runs import summarize

    paths = Paths.default()
    f = home / "lpft_demo.toml"
    f.write_text(_two_stage("lpft_demo", "best_val_mae < 100"))
    plan = load_plan(f)
    check_plan(plan)
    sink, said = Sink(), []
    assert run_plan(plan, emit_factory=sink, say=said.append) == "finished"

    r1, r2 = sink.order
    st = read_state("lpft_demo", paths)
    assert st.status == "finished" and st.plan_file == str(f)
    assert [(s.stage, s.run_id, s.status) for s in st.stages] == [(1, r1, "finished"), (2, r2, "finished")]
    assert st.stages[0].gate_met is True and st.stages[1].init == f"{r1}@best"

    # each stage is an ordinary library run linked to its parent
    lib = Library(paths)
    b1, b2 = lib.get(r1, "best"), lib.get(r2, "best")
    assert b1.parent is None and b2.parent == f"{r1}@best"
    assert (b1.meta["plan"], b1.meta["stage"], b2.meta["plan"], b2.meta["stage"]) == ("lpft_demo", 1, "lpft_demo", 2)
    assert [c.ref for c in lib.lineage(b2)] == [f"{r2}@best", f"{r1}@best"]
    from tui_ft.core.common.events import read_events

    assert [e.type for e in read_events(paths.run_log_dir(r2) / "events.jsonl")] == [e.type for e in sink.events[r2]]
    s2 = summarize(paths.run_log_dir(r2))
    assert (s2.status, s2.plan, s2.stage, s2.parent) == ("finished", "lpft_demo", 2, f"{r1}@best")
    assert load_preset(paths.run_log_dir(r2) / "preset.toml").model.init == f"{r1}@best"

    # stage 2 starts exactly where stage 1's best weights were
    h1, h2 = sink.history(r1), sink.history(r2)
    assert [e.epoch for e in h1] == [0, 1, 2] and [e.epoch for e in h2] == [0, 1]
    best1 = min(e.val_mae for e in h1)
    assert abs(h2[0].val_mae - best1) < 1e-5
    assert abs(h2[0].val_mae - b1.meta["best_val_mae"]) < 1e-5
    assert any("gate after stage 1" in s and "is met" in s for s in said)

    # a finished plan run again starts a new plan run (here: check the bookkeeping only)
    assert _resume_point(plan, st, paths) == (-1, "")


@pytest.mark.slow
def test_gate_not_met_stops_after_stage_1_via_cli(home, capsys):
    from tui_ft import cli
    from tui_ft.core.common.paths import Paths

    f = home / "gated.toml"
    f.write_text(_two_stage("gated", "best_val_mae < 0.0001"))
    assert cli.main(["--preset", str(f), "--plain"]) == cli.EXIT_OK  # a closed gate still counts as finished
    out = capsys.readouterr()
    assert "is not met" in out.err and "the plan ends here" in out.err
    st = read_state("gated", Paths.default())
    assert st.status == "finished" and len(st.stages) == 1 and st.stages[0].gate_met is False
    assert "stopped after stage 1" in st.message
    assert "test_mae" in out.out and "stage 1" in out.out
    assert not any(d.name.startswith("gated_full") for d in Paths.default().logs.iterdir())


@pytest.mark.slow
def test_resume_after_interrupted_stage_2(home):
    from tui_ft.core.library.checkpoints import Library
    from tui_ft.core.common.paths import Paths

    paths = Paths.default()
    plan = parse_plan(_two_stage("resumable", "best_val_mae < 100"), "resumable.toml")

    # Ctrl-C as stage 2's epoch 1 ends (the engine keeps last.pt of epoch 0 and reports the interrupt)
    sink = Sink(interrupt_stage=2)
    assert run_plan(plan, emit_factory=sink, say=lambda s: None) == "interrupted"
    r1, r2 = sink.order
    st = read_state("resumable", paths)
    assert st.status == "interrupted"
    assert [(s.run_id, s.status) for s in st.stages] == [(r1, "finished"), (r2, "interrupted")]
    assert (paths.run_ckpt_dir(r2) / "last.pt").is_file()
    assert sink.events[r2][-1].type == "run_interrupted"

    # run again: stage 1 is kept, stage 2 starts afresh from stage 1's best checkpoint
    sink2, said = Sink(), []
    assert run_plan(plan, emit_factory=sink2, say=said.append) == "finished"
    assert len(sink2.order) == 1
    r2b = sink2.order[0]
    assert r2b not in (r1, r2)
    assert any("resuming at stage 2" in s for s in said)
    st = read_state("resumable", paths)
    assert st.status == "finished" and [s.run_id for s in st.stages] == [r1, r2b]
    assert Library(paths).get(r2b, "best").parent == f"{r1}@best"
    h = sink2.history(r2b)
    assert [e.epoch for e in h] == [0, 1]
    assert abs(h[0].val_mae - min(e.val_mae for e in sink.history(r1))) < 1e-5

    # the plan is finished now: running it again would start a new plan run at stage 1
    assert _resume_point(plan, st, paths)[0] == -1


@pytest.mark.slow
def test_changed_stage_is_not_reused(home):
    """Resume keeps finished stages only while they are unchanged, their checkpoint exists and their gate held.

    Independent of the other tests: stage 1's run is trained here (2 head epochs on a few demo
    structures) and the plan state naming it is written by hand."""
    import shutil

    from tui_ft.core.train.engine import run_training
    from tui_ft.core.common.paths import Paths
    from tui_ft.core.orchestrate.plan_runner import PlanState, StageState, _resume_point
    from tui_ft.core.library.runs import new_run_id

    paths = Paths.default()
    plan = parse_plan(_two_stage("changed_stage", "best_val_mae < 100"))
    stage1 = plan.stages[0]
    rid = new_run_id(stage1.preset.name, paths)
    res = run_training(stage1.preset, run_id=rid, paths=paths)
    assert res.status == "finished"
    st = PlanState(plan="changed_stage", plan_file="", status="interrupted", stages=[
        StageState(stage=1, preset=stage1.preset.name, run_id=rid, status="finished", fingerprint=stage1.fingerprint,
                   init="", metrics={"best_val_mae": res.best_val_mae, "val_mae": res.history[-1].val_mae,
                                     "test_mae": res.test_mae, "train_mae": res.history[-1].train_mae}),
    ])
    assert _resume_point(plan, st, paths) == (1, "")  # stage 1 is kept, stage 2 runs
    assert _resume_point(plan, None, paths) == (0, "")
    assert _resume_point(plan, dataclasses.replace(st, status="finished"), paths) == (-1, "")

    changed = parse_plan(_two_stage("changed_stage", "best_val_mae < 100").replace("lr = 0.001", "lr = 0.002"))
    assert changed.stages[0].fingerprint != stage1.fingerprint
    assert _resume_point(changed, st, paths) == (0, "stage 1 changed since it ran")
    # the gate is checked against the recorded metrics: a gate that did not hold ended that plan run
    gated = parse_plan(_two_stage("changed_stage", "best_val_mae < 100").replace("best_val_mae < 100", "best_val_mae < 1e-9"))
    assert gated.stages[0].fingerprint == stage1.fingerprint
    assert _resume_point(gated, st, paths) == (-1, "")
    # stage 1's checkpoint deleted: nothing can be kept
    shutil.rmtree(paths.run_ckpt_dir(rid))
    assert _resume_point(plan, st, paths) == (0, f"stage 1's checkpoint {rid}@best is gone")
