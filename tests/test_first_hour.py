"""Issue 13 (a new user's first hour, CLI side) and issue 11.7 (paths in one place):
data-dependent tests, checkpoints --preset, closed output and --detach, the project
root, and what to do when a preset's data is missing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.common import paths as paths_mod
from tui_ft.core.common.events import read_events
from tui_ft.core.common.paths import (
    DEMO_SOURCE,
    MATBENCH_TASKS,
    Paths,
    data_source_problem,
    find_project_root,
    project_root,
)
from tui_ft.core.data.dataset import resolve_data_source
from tui_ft.core.config.fields import PresetError
from tui_ft.core.config.dump import check_resources
from tui_ft.core.config.presets import load_preset, parse_preset

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_presets"
SHIPPED_NEEDING_DEV_DATA = ["run1", "run2", "run3", "head_finetune_freeze", "full_finetune", "lpft", "lpft_cosine", "lpft_dev"]


def _preset(name: str, source: str = "demo", epochs: int = 2) -> str:
    return f"""\
[run]
name = "{name}"

[data]
source = "{source}"
target = "e_form"

[finetune]
mode = "head"

[optim]
lr = 1e-3

[train]
epochs = {epochs}
batch_size = 8
device = "cpu"
"""


# ---------------------------------------------------------------- 13.1 tests without ../shared


def test_bad_presets_reading_shared_data_are_marked_needs():
    """A case that reaches the resource checks with ../shared data must say so (``needs``),
    or it fails on a fresh clone that has no ../shared."""
    expected = tomllib.loads((BAD / "expected.toml").read_text(encoding="utf-8"))
    checked = 0
    for stem, exp in expected.items():
        if exp["stage"] != "resources":
            continue
        with open(BAD / f"{stem}.toml", "rb") as fh:
            source = tomllib.load(fh).get("data", {}).get("source", "")
        if "../shared" in source:
            checked += 1
            assert (ROOT / exp.get("needs", "-")).resolve() == (ROOT / source).resolve(), (
                f"{stem}: reads {source} but its expected.toml entry has no needs = {source!r}"
            )
    assert checked >= 1  # wrong_target reads the dev data's columns


def test_missing_checkpoint_case_needs_no_data(monkeypatch, tmp_path):
    """Run where ../shared does not exist: only the init is wrong."""
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    preset = load_preset("tests/bad_presets/missing_checkpoint.toml")

    def no_runs(ref):
        raise LookupError(f"no run named {ref!r}")

    with pytest.raises(PresetError) as info:
        check_resources(preset, resolve_init=no_runs)
    assert len(info.value.errors) == 1 and info.value.field == "model.init"


# ---------------------------------------------------------------- 13.2 checkpoints --preset


def test_checkpoints_preset_filter_and_top_level_preset(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    from tui_ft.core.library.checkpoints import Library

    asked = []
    monkeypatch.setattr(Library, "filter", lambda self, preset=None, **kw: asked.append(preset) or [])
    assert cli.main(["checkpoints", "--preset", "demo"]) == 0
    assert cli.main(["checkpoints"]) == 0
    assert asked == ["demo", None]
    capsys.readouterr()
    # the other order is the top-level --preset FILE (run it): refused, saying what to write
    with pytest.raises(SystemExit) as e:
        cli.main(["--preset", "presets/demo.toml", "checkpoints"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be combined with the command 'checkpoints'" in err
    assert "tui-ft checkpoints --preset NAME" in err
    assert asked == ["demo", None]  # nothing listed
    with pytest.raises(SystemExit):
        cli.main(["--preset", "presets/demo.toml", "runs"])


# ---------------------------------------------------------------- 13.4 output never stops a run


class _Gone(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")


def test_printer_survives_a_closed_stdout(monkeypatch):
    from tui_ft.core.common.events import EpochEnd

    monkeypatch.setattr(sys, "stdout", _Gone())
    printer = cli.Printer(plain=True)
    ev = EpochEnd("r", epoch=0, train_mae=0.3, val_mae=0.25, lr=1e-3, seconds=1.0, best_val_mae=0.25, best_epoch=0)
    printer.show(ev)  # raised BrokenPipeError before: the engine recorded run_failed
    printer.show(ev)
    assert not isinstance(sys.stdout, _Gone)  # later output goes to /dev/null
    printer.close()
    monkeypatch.setattr(sys, "stderr", _Gone())
    cli._err("a problem nobody can read")  # stderr too


def _wait_finished(events: Path, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.is_file():
            evs = read_events(events)
            if any(e.type in ("run_finished", "run_failed", "run_interrupted") for e in evs):
                return evs
        time.sleep(0.5)
    raise AssertionError(f"{events}: no end event within {timeout} s")


@pytest.fixture
def nested(tmp_path, monkeypatch, graph_cache_dir):
    """<tmp>/outer/tui-ft is a project root (presets/ and .tui-ft); the cwd is <tmp>/outer."""
    outer = tmp_path / "outer"
    proj = outer / "tui-ft"
    (proj / "presets").mkdir(parents=True)
    (proj / ".tui-ft").write_text("")
    (proj / "presets" / "tiny.toml").write_text(_preset("tiny"), encoding="utf-8")
    monkeypatch.delenv("TUI_FT_HOME", raising=False)
    monkeypatch.setenv("TUI_FT_CACHE", str(graph_cache_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(outer)
    return proj


@pytest.mark.slow
def test_piped_run_from_the_parent_folder_survives_head(nested):
    """`cd .. && tui-ft --preset tui-ft/presets/tiny.toml | head -1`: the run keeps its
    files in the project root above the preset, and the closed pipe does not stop it."""
    outer = nested.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_ft", "--preset", "tui-ft/presets/tiny.toml"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=outer,
    )
    first = proc.stdout.readline()
    assert first, "no output at all"
    proc.stdout.close()  # `head -1` exits
    assert proc.wait(timeout=600) == 0
    (run,) = [p for p in (nested / "logs").iterdir() if p.is_dir()]
    evs = read_events(run / "events.jsonl")
    assert evs[-1].type == "run_finished"
    assert not any(e.type == "run_failed" for e in evs)
    assert sorted(p.name for p in outer.iterdir()) == ["tui-ft"]  # no data/, logs/, .cache/ in the parent


@pytest.mark.slow
def test_detach_survives_the_terminal_closing(nested):
    outer = nested.parent
    # the parent in its own process group, stdout a pipe we close: a terminal going away
    parent = subprocess.Popen(
        [sys.executable, "-m", "tui_ft", "--preset", "tui-ft/presets/tiny.toml", "--detach"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=outer,
        start_new_session=True,
        text=True,
    )
    line = parent.stdout.readline()
    parent.stdout.close()
    parent.stderr.close()
    assert parent.wait(timeout=120) == 0
    try:
        os.killpg(parent.pid, signal.SIGHUP)  # the hang-up reaches the terminal's process group
    except ProcessLookupError:
        pass
    assert line.startswith("started run tiny-"), line
    run_id = line.split()[2]
    log = nested / "logs" / run_id / "stdout.log"
    assert str(log) in line
    evs = _wait_finished(nested / "logs" / run_id / "events.jsonl", 600)
    assert evs[-1].type == "run_finished", [e.type for e in evs]
    assert evs[0].run_id == run_id
    assert "test" in log.read_text(encoding="utf-8")  # the run's own output went to its log


def test_detach_needs_a_run(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--detach", "runs"])
    assert e.value.code == 2


# ---------------------------------------------------------------- 13.5 the project root


def test_project_root_is_found_like_git(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TUI_FT_HOME", raising=False)
    clone = tmp_path / "clone"
    (clone / "presets").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "tui-ft"\n')
    deep = clone / "presets" / "sub"
    deep.mkdir()
    other = tmp_path / "other"
    (other / "presets").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "something-else"\n')

    monkeypatch.chdir(deep)
    assert Paths.default().root == clone.resolve()
    assert project_root() == (clone.resolve(), "found")
    monkeypatch.chdir(other)  # presets/ alone, another project's pyproject: not a root
    assert find_project_root(other) is None or find_project_root(other) != other.resolve()
    (other / ".tui-ft").write_text("")  # the marker file makes it one
    assert find_project_root(other / "presets") == other.resolve()
    monkeypatch.setenv("TUI_FT_HOME", str(clone))
    assert Paths.default().root == clone.resolve() and project_root()[1] == "TUI_FT_HOME"


def test_no_root_found_means_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TUI_FT_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    if find_project_root(tmp_path) is not None:
        pytest.skip("a project root above the temporary folder")
    assert project_root() == (tmp_path.resolve(), "cwd")
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith(f"project root: {tmp_path.resolve()} (the current directory")
    assert f"no runs under {tmp_path.resolve() / 'logs'}" in out


def test_root_in_help_and_from_the_preset_folder(nested, monkeypatch, capsys):
    outer = nested.parent
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert f"project root: {outer.resolve()}" in out or f"project root: {nested.resolve()}" in out
    assert "TUI_FT_HOME" in out
    if find_project_root(outer) is not None:
        pytest.skip("a project root above the temporary folder")
    cli._root_from_preset("tui-ft/presets/tiny.toml")
    assert os.environ["TUI_FT_HOME"] == str(nested.resolve())
    assert Paths.default().root == nested.resolve()


# ---------------------------------------------------------------- 13.7 data a new user lacks


@pytest.mark.parametrize("name", SHIPPED_NEEDING_DEV_DATA)
def test_shipped_presets_without_dev_data_say_what_to_do(name, tmp_path, monkeypatch):
    from tui_ft.cli import load_and_check

    proj = tmp_path / "fresh" / "tui-ft"  # no ../shared beside it
    (proj / "presets").mkdir(parents=True)
    for p in (ROOT / "presets").glob("*.toml"):
        (proj / "presets" / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("TUI_FT_HOME", str(proj))
    monkeypatch.chdir(proj)
    errors = io.StringIO()
    monkeypatch.setattr(sys, "stderr", errors)
    assert load_and_check(f"presets/{name}.toml") is None
    text = errors.getvalue()
    want = (proj.parent / "shared" / "data" / "mp_e_form_dev.json.gz").resolve()
    assert "data.source" in text, text
    assert "run `tui-ft data fetch matbench_mp_e_form` and use source = \"matbench_mp_e_form\"" in text, text
    assert f"copy the file to {want}" in text, text


def test_every_matbench_regression_task_is_a_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    paths = Paths(tmp_path)
    for task in MATBENCH_TASKS:
        p = parse_preset(_preset("x", source=task), "x.toml")
        assert p.data.source == task
        assert resolve_data_source(task, paths) == tmp_path / "data" / f"{task}.json.gz"
        problem = data_source_problem(task, paths)
        assert f"tui-ft data fetch {task}" in problem and str(tmp_path / "data" / f"{task}.json.gz") in problem
    assert "matbench_mp_gap" in MATBENCH_TASKS
    with pytest.raises(PresetError, match="not a Matbench regression task on structures"):
        parse_preset(_preset("x", source="matbench_glass"), "x.toml")
    assert data_source_problem(DEMO_SOURCE, paths) is None


def test_matbench_tasks_are_ones_data_fetch_accepts():
    pytest.importorskip("matminer")
    from tui_ft.core.data.fetch import known_matbench_names

    assert set(MATBENCH_TASKS) <= set(known_matbench_names())


def test_fetch_offline_says_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    from tui_ft.core.data import fetch

    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))

    def offline(name, dest=None, **kw):
        raise fetch.FetchError(f"download of https://example.invalid/{name}.json.gz failed: Name or service not known")

    monkeypatch.setattr(fetch, "fetch_matbench", offline)
    assert cli.main(["data", "fetch", "matbench_mp_gap"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Name or service not known" in err
    assert f"copy it to {tmp_path.resolve() / 'data' / 'matbench_mp_gap.json.gz'}" in err
    assert 'source = "matbench_mp_gap"' in err


# ---------------------------------------------------------------- 11.7 one resolver


def test_the_three_resolvers_agree(tmp_path, monkeypatch):
    from tui_ft.core.data import dataset as data
    from tui_ft.core.config import dump
    from tui_ft.tui.launcher import check_preset

    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    paths = Paths(tmp_path)
    for source in ("matbench_mp_e_form", "matbench_mp_gap", "x/y.json.gz", str(tmp_path / "abs.json")):
        assert dump.data_source_path(source) == paths_mod.data_source_path(source, paths)
        assert data.resolve_source(source, paths) == paths_mod.data_source_path(source, paths)
    # the dashboard's check, run from elsewhere, looks in the project root and says what to do
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    p = parse_preset(_preset("x", source="data/mp_e_form_small.json"), "x.toml")
    with pytest.raises(PresetError) as info:
        check_preset(p, paths)
    msg = str(info.value)
    assert f"copy the file to {tmp_path.resolve() / 'data' / 'mp_e_form_small.json'}" in msg
    assert "tui-ft data fetch matbench_mp_e_form" in msg
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mp_e_form_small.json").write_text(json.dumps({}))
    check_preset(p, paths)  # found in the root
