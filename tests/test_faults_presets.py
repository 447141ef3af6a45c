"""Bad input through the real CLI: every malformed preset in tests/bad_presets.

For each file ``tui-ft --preset FILE`` must exit 2 and print exactly one line on
stderr, ``FILE:LINE: field: message`` (``FILE: field: message`` when the error
has no line), with the line and field that ``expected.toml`` lists, no
traceback, and nothing created in the project (no run folder, no checkpoint).

The whole corpus goes through ``tui_ft.cli.main`` in-process (cheap); a handful
of files, one per kind of failure, also through a real ``python -m tui_ft``
subprocess. Paths inside the corpus are relative to the repository root, so
the CLI runs with the repository as working directory and ``TUI_FT_HOME`` at an
empty temporary project.

``plan_file.toml`` is a plan, and ``--preset`` also runs plans: once the plan
module exists it is rejected by the plan loader (several faults, one line each,
exit 2) rather than by the preset loader.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tui_ft import cli

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_presets"
EXPECTED = tomllib.loads((BAD / "expected.toml").read_text(encoding="utf-8"))
STEMS = sorted(EXPECTED)

# one file per kind of failure: TOML syntax, no line, control character in the
# value, NaN, a plan given where a preset is expected, each resource check
SUBPROCESS_STEMS = [
    "not_toml",
    "missing_run",
    "name_control_char",
    "lr_nan",
    "dotted_lr_string",
    "plan_file",
    "missing_data_file",
    "empty_dataset",
    "wrong_target",
    "missing_checkpoint",
]


def _skip_reason(stem: str) -> str | None:
    exp = EXPECTED[stem]
    if "needs" in exp and not (ROOT / exp["needs"]).is_file():
        return f"{exp['needs']} is not available"
    return None


def _as_plan(stem: str) -> bool:
    """``--preset`` also takes plans: with plan support, plan_file.toml is read as a plan
    (and fails as one: no [plan] table, stage presets not found), not as a preset."""
    return stem == "plan_file" and importlib.util.find_spec("tui_ft.core.orchestrate.plans") is not None


@pytest.fixture
def home(tmp_path, monkeypatch, graph_cache_dir) -> Path:
    """An empty project root; the working directory is the repository root."""
    h = tmp_path / "home"
    h.mkdir()
    if (ROOT.parent / "shared").is_dir():  # relative data paths are the root's: ../shared beside it
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TUI_FT_HOME", str(h))
    monkeypatch.setenv("TUI_FT_CACHE", str(graph_cache_dir))
    return h


LINE = re.compile(r"(?P<where>.+?): (?P<field>[A-Za-z_][\w.\[\]\"]*): (?P<msg>.+)")


def check_rejected(stem: str, rc: int, out: str, err: str, home: Path) -> None:
    exp = EXPECTED[stem]
    file = f"tests/bad_presets/{stem}.toml"
    where = f"{file}:{exp['line']}" if "line" in exp else file
    assert "Traceback" not in out + err, err
    assert rc == 2, f"{file}: exit {rc}\nstdout: {out}\nstderr: {err}"
    assert out == "", f"{file}: nothing should go to stdout, got {out!r}"
    # nothing created: no run folder, no checkpoint, no data or cache in the project
    assert not (home / "logs").exists() and not (home / "checkpoints").exists(), file
    assert sorted(p.name for p in home.iterdir()) == [], file
    lines = err.splitlines()
    if _as_plan(stem):
        # read as a plan it has several faults: one line each, every one FILE:LINE: field: message
        assert lines, file
        for line in lines:
            m = LINE.fullmatch(line)
            assert m and m["where"].startswith(f"{file}:"), line
        return
    assert len(lines) == 1, f"{file}: expected one line on stderr, got {len(lines)}:\n{err}"
    m = LINE.fullmatch(lines[0])
    assert m, f"{file}: not 'FILE:LINE: field: message': {lines[0]!r}"
    assert m["where"] == where, lines[0]
    assert m["field"] == exp["field"], lines[0]
    assert m["msg"].strip(), lines[0]


def test_corpus_matches_expected():
    files = {p.stem for p in BAD.glob("*.toml")} - {"expected"}
    assert files == set(EXPECTED)
    assert set(SUBPROCESS_STEMS) <= files


@pytest.mark.parametrize("stem", STEMS)
def test_bad_preset_cli_in_process(stem, home, capsys, fault_report):
    reason = _skip_reason(stem)
    if reason:
        pytest.skip(reason)
    rc = cli.main(["--preset", f"tests/bad_presets/{stem}.toml"])
    out, err = capsys.readouterr()
    check_rejected(stem, rc, out, err, home)
    fault_report["bad presets tried in-process (tui_ft.cli.main)"] += 1


@pytest.mark.parametrize("stem", SUBPROCESS_STEMS)
def test_bad_preset_cli_subprocess(stem, home, tui_ft_cli, fault_report):
    reason = _skip_reason(stem)
    if reason:
        pytest.skip(reason)
    # the `run FILE` spelling goes through the same checks as `--preset FILE`
    args = ["run", f"tests/bad_presets/{stem}.toml"] if stem in ("lr_nan", "empty_dataset") else [
        "--preset", f"tests/bad_presets/{stem}.toml"]
    res = tui_ft_cli(*args, "--plain", cwd=ROOT, timeout=120)
    check_rejected(stem, res.returncode, res.stdout, res.stderr, home)
    fault_report["bad presets tried in a subprocess (python -m tui_ft)"] += 1
