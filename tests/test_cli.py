"""The headless CLI: exit codes, output, --help without torch, eval, listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui_ft.cli import main
from tui_ft.core.common.events import read_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def proj(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path))
    monkeypatch.setenv("TUI_FT_CACHE", str(cache_dir))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    for p in (ROOT / "presets").glob("*.toml"):
        (tmp_path / "presets" / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def test_help_answers_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from tui_ft.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n        main(['--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
        "assert 'tui-ft --preset' in buf.getvalue()\n"
        "heavy = [m for m in ('torch', 'chgnet', 'pymatgen', 'textual') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_usage_exits_2(proj, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    assert e.value.code == 2
    capsys.readouterr()
    assert main(["--preset", "presets/missing.toml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("presets/missing.toml") and "cannot read" in err[0]
    assert not any((proj / "logs").iterdir()) if (proj / "logs").exists() else True


def test_bad_preset_exit_2_one_line_nothing_created(proj, capsys):
    bad = proj / "presets" / "bad.toml"
    bad.write_text((proj / "presets" / "demo.toml").read_text().replace("fold = 0", "fold = 7"), encoding="utf-8")
    assert main(["--preset", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if t.startswith("fold"))
    assert err[0].startswith(f"{bad}:{line}: data.fold: ")
    assert not (proj / "logs").exists() or not any((proj / "logs").iterdir())
    assert not (proj / "checkpoints").exists() or not any((proj / "checkpoints").iterdir())


@pytest.mark.slow
def test_demo_preset_runs_headless_and_library_commands(proj, capsys):
    assert main(["--preset", "presets/demo.toml", "--plain"]) == 0
    out = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in out if line.startswith("epoch")]
    assert [int(line.split()[1]) for line in epoch_lines] == list(range(0, len(epoch_lines)))
    assert any(line.startswith("test_mae ") for line in out)
    (run_dir,) = (proj / "logs").iterdir()
    evs = read_events(run_dir / "events.jsonl")
    assert evs[-1].type == "run_finished"
    assert (proj / "checkpoints" / run_dir.name / "best.pt").is_file()

    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert run_dir.name in out and "finished" in out
    assert main(["checkpoints"]) == 0
    out = capsys.readouterr().out
    assert f"{run_dir.name}@best" in out and f"{run_dir.name}@last" in out

    # eval any checkpoint (by reference) on any Matbench-layout file (--rows all: on its own
    # data file eval scores only the checkpoint's test rows by default)
    assert main(["eval", "demo@best", "--data", "demo", "--rows", "all"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("mae ") and "on 240 structures" in out
    mae_all = float(out.split()[1])
    # eval of the best checkpoint on the run's own test rows gives the run's test MAE
    import csv

    from tui_ft.core.data.demo import build_demo_dataset

    fin = evs[-1]
    test_ids = [r["id"] for r in csv.DictReader(open(fin.predictions, encoding="utf-8"))]
    demo = build_demo_dataset()
    keep = [i for i, rid in enumerate(demo["index"]) if rid in set(test_ids)]
    assert len(keep) == len(test_ids) == fin.n_test
    sub = {"index": [demo["index"][i] for i in keep], "columns": demo["columns"], "data": [demo["data"][i] for i in keep]}
    (proj / "test_rows.json").write_text(json.dumps(sub), encoding="utf-8")
    assert main(["eval", "demo@best", "--data", "test_rows.json"]) == 0
    out = capsys.readouterr().out.strip()
    assert f"on {fin.n_test} structures" in out
    assert float(out.split()[1]) == pytest.approx(fin.test_mae, abs=1e-4)  # printed to 4 decimals
    assert 0 < mae_all < 1.0  # all 240 rows (train, val and test); the untrained model is at 3.9 eV/atom
    assert main(["eval", "nope@best", "--data", "demo"]) == 2


@pytest.mark.slow
def test_interrupt_gives_130_and_resume_finishes(proj):
    """Ctrl-C in a real subprocess: exit 130, run recorded as interrupted, last.pt kept; resume finishes."""
    import signal
    import time

    preset = proj / "presets" / "slow.toml"
    text = (proj / "presets" / "demo.toml").read_text().replace('name = "demo"', 'name = "slow"')
    text = text.replace('mode = "head"', 'mode = "full"').replace("epochs = 3", "epochs = 4")
    text = text.replace("fraction = 1.0", "fraction = 0.3\ntest_limit = 8")
    preset.write_text(text, encoding="utf-8")
    env = {**os.environ, "TUI_FT_HOME": str(proj)}
    proc = subprocess.Popen([sys.executable, "-m", "tui_ft", "--preset", str(preset), "--plain"], cwd=proj, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    run_dir = None
    while time.time() < deadline:
        dirs = list((proj / "logs").glob("slow-*")) if (proj / "logs").exists() else []
        if dirs and any(e.type == "epoch_end" and e.epoch >= 1 for e in read_events(dirs[0] / "events.jsonl")):
            run_dir = dirs[0]
            break
        time.sleep(0.2)
    assert run_dir is not None, proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    evs = read_events(run_dir / "events.jsonl")
    assert evs[-1].type == "run_interrupted"
    last = json.loads((proj / "checkpoints" / run_dir.name / "last.json").read_text())
    done = last["epoch"]  # the signal may land while epoch 1's checkpoints are written: then last.pt is epoch 0
    assert done >= 0
    # the interrupted line says how to continue (issue 22)
    (line,) = [ln for ln in err.splitlines() if ln.startswith(f"run {run_dir.name} interrupted:")]
    assert "last.pt" in line and line.endswith(f"continue with: tui-ft resume {run_dir.name}")
    res = subprocess.run([sys.executable, "-m", "tui_ft", "resume", run_dir.name, "--plain"], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    resumed = [int(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("epoch")]
    assert resumed == list(range(done + 1, 5))
    assert read_events(run_dir / "events.jsonl")[-1].type == "run_finished"


@pytest.mark.slow
def test_dev_data_head_then_full_from_best(proj, capsys, dev_data):
    """The plan this tool exists for, on real MP data (fold 0, fraction 0.1; test set limited for CI time)."""
    head = (ROOT / "presets" / "head_finetune_freeze.toml").read_text()
    head = head.replace('source = "../shared/data/mp_e_form_dev.json.gz"', f'source = "{dev_data}"\ntest_limit = 200')
    (proj / "presets" / "h.toml").write_text(head, encoding="utf-8")
    assert main(["--preset", "presets/h.toml", "--plain"]) == 0
    out = capsys.readouterr().out.splitlines()
    vals = {int(line.split()[1]): float(line.split()[3]) for line in out if line.startswith("epoch")}
    assert sorted(vals) == [0, 1, 2, 3]
    assert vals[0] < 0.5  # AtomRef refit: far below the ~4.6 eV/atom of zero-shot CHGNet
    best_val = min(vals.values())
    assert any(line.startswith("test_mae ") for line in out)

    full = (ROOT / "presets" / "full_finetune.toml").read_text()
    full = full.replace('source = "../shared/data/mp_e_form_dev.json.gz"', f'source = "{dev_data}"\ntest_limit = 200')
    full = full.replace('name = "full_finetune"', 'name = "full_from_head"').replace("epochs = 3", "epochs = 1")
    full = full.replace('pretrained = "0.3.0"', 'init = "head_finetune_freeze@best"')
    full = "\n".join(line for line in full.splitlines() if not line.startswith("refit_atomref"))
    (proj / "presets" / "f.toml").write_text(full, encoding="utf-8")
    assert main(["--preset", "presets/f.toml", "--plain"]) == 0
    out = capsys.readouterr().out.splitlines()
    vals2 = {int(line.split()[1]): float(line.split()[3]) for line in out if line.startswith("epoch")}
    assert abs(vals2[0] - best_val) < 1e-4  # printed to 4 decimals; the engine test checks 1e-5
    assert main(["eval", "full_from_head@best", "--data", "demo"]) == 0
    assert capsys.readouterr().out.startswith("mae ")


@pytest.mark.parametrize(
    "argv, command, plain, run_id",
    [
        (["--plain", "run", "x.toml"], "run", True, None),
        (["run", "x.toml", "--plain"], "run", True, None),
        (["run", "x.toml"], "run", False, None),
        (["--run-id", "R", "run", "x.toml"], "run", False, "R"),
        (["run", "x.toml", "--run-id", "R"], "run", False, "R"),
        (["--plain", "--preset", "x.toml"], "run", True, None),
        (["--plain", "resume", "R"], "resume", True, "R"),
        (["resume", "R", "--plain"], "resume", True, "R"),
        (["resume", "R"], "resume", False, "R"),
    ],
)
def test_plain_and_run_id_reach_the_command_wherever_given(monkeypatch, argv, command, plain, run_id):
    """A subcommand's unset --plain must not overwrite the top-level one (`tui-ft --plain run x.toml`)."""
    import tui_ft.cli as cli

    calls = []
    monkeypatch.setattr(cli, "cmd_run", lambda path, run_id=None, plain=False, jobs=1, gpus=None, executor=None: calls.append(("run", plain, run_id)) or 0)
    monkeypatch.setattr(cli, "cmd_resume", lambda rid, plain=False: calls.append(("resume", plain, rid)) or 0)
    assert main(argv) == 0
    assert calls == [(command, plain, run_id)]
