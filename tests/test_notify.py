"""``[log] notify``: a command run when a run ends, the final event as JSON on its stdin (issue 28, item 4)."""

from __future__ import annotations

import json
import sys

import pytest

from tui_ft.core.common.events import RunFailed, RunFinished
from tui_ft.core.train.notify import notify

HOOK = """\
import json, sys
ev = json.loads(sys.stdin.read())
with open(sys.argv[1], "a", encoding="utf-8") as fh:
    fh.write(json.dumps(ev) + "\\n")
"""


def test_notify_passes_the_event_as_json_on_stdin(tmp_path):
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK, encoding="utf-8")
    out = tmp_path / "got.jsonl"
    ev = RunFinished("r1", test_mae=0.03, best_epoch=2, best_val_mae=0.04, seconds=1.0, unit="eV/atom")
    assert notify(f"{sys.executable} {hook} {out}", ev) is None
    (got,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["type"] == "run_finished" and got["run_id"] == "r1" and got["test_mae"] == 0.03 and got["unit"] == "eV/atom"


@pytest.mark.parametrize("command, phrase", [
    ("no-such-command-tui-ft --x", "'no-such-command-tui-ft' not found"),
    (f"{sys.executable} -c 'import sys; sys.exit(3)'", "exited with code 3"),
    (f"{sys.executable} -c 'import sys; print(\"boom\", file=sys.stderr); sys.exit(1)'", "exited with code 1: boom"),
    ("'unclosed", "cannot split the command"),
])
def test_a_failing_hook_is_one_message(command, phrase):
    problem = notify(command, RunFailed("r1", message="x"))
    assert problem is not None and phrase in problem and problem.startswith("[log] notify")


def test_a_run_calls_its_hook_once_at_the_end_and_a_failing_hook_is_a_warning(project, demo_preset, tui_ft_cli, tmp_path):
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK, encoding="utf-8")
    out = tmp_path / "got.jsonl"
    preset = demo_preset("notified", epochs=1)
    preset.write_text(preset.read_text() + f'\n[log]\nnotify = "{sys.executable} {hook} {out}"\n', encoding="utf-8")
    proc = tui_ft_cli("--preset", preset, "--plain", "--run-id", "n-ok")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (got,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["type"] == "run_finished" and got["run_id"] == "n-ok"
    # a hook that fails: one warning in the run's log, the run still finished
    bad = demo_preset("badhook", epochs=1)
    bad.write_text(bad.read_text() + '\n[log]\nnotify = "no-such-command-tui-ft"\n', encoding="utf-8")
    proc = tui_ft_cli("--preset", bad, "--plain", "--run-id", "n-bad")
    assert proc.returncode == 0, proc.stderr[-2000:]
    evs = [json.loads(line) for line in (project / "logs" / "n-bad" / "events.jsonl").read_text().splitlines()]
    warnings = [e["text"] for e in evs if e["type"] == "message" and "notify" in e["text"]]
    assert warnings == ["[log] notify: 'no-such-command-tui-ft' not found (is it installed and on PATH?)"]
    assert [e["type"] for e in evs if e["type"].startswith("run_")] == ["run_started", "run_finished"]
