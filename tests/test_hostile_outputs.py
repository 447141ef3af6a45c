"""Issue 26 item 1: one rule for every output path (``export OUT``, ``predict --out``).

``tui_ft.core.common.outputs.check_output_path`` refuses the checkpoint being read, the inputs
and what lies in an input folder, anything under the project's ``checkpoints/`` and ``logs/``,
non-regular existing entries (devices, FIFOs, symlinks, folders), and an existing file
unless ``--force``. Every input here is made by the test (a garbage ``best.pt`` is enough:
the output is checked before the checkpoint is loaded).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tui_ft import cli
from tui_ft.core.common.outputs import OutputPathError, check_output_path
from tui_ft.core.common.paths import Paths

GARBAGE = b"not a checkpoint, but the bytes must survive\n"


@pytest.fixture
def lib(project):
    """A run folder and a checkpoint in the project's library (garbage bytes), and a data folder."""
    ck = project / "checkpoints" / "r1"
    ck.mkdir(parents=True)
    (ck / "best.pt").write_bytes(GARBAGE)
    (ck / "last.pt").write_bytes(GARBAGE)
    (project / "logs" / "r1").mkdir(parents=True)
    (project / "logs" / "r1" / "events.jsonl").write_bytes(b"")
    data = project / "mydata"
    data.mkdir()
    (data / "id_prop.csv").write_text("a,1.0\n", encoding="utf-8")
    return project


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("target", ["checkpoints/r1/best.pt", "checkpoints/r1/last.pt", "checkpoints/r1/new.pt",
                                    "logs/r1/events.jsonl", "logs/r1/model.pt", "checkpoints/../logs/x.pt"])
@pytest.mark.parametrize("force", [False, True])
def test_managed_folders_are_refused_even_with_force(lib, target, force):
    with pytest.raises(OutputPathError) as ei:
        check_output_path(lib / target, paths=Paths(lib), force=force)
    assert "which tui-ft manages" in str(ei.value)


def test_a_symlinked_folder_into_the_library_is_refused(lib, tmp_path):
    (tmp_path / "alias").symlink_to(lib / "checkpoints" / "r1")
    with pytest.raises(OutputPathError, match="checkpoints/"):
        check_output_path(tmp_path / "alias" / "best.pt", paths=Paths(lib), force=True)


def test_inputs_and_input_folders_are_refused(lib, tmp_path):
    out_ck = tmp_path / "elsewhere.pt"
    out_ck.write_bytes(GARBAGE)
    with pytest.raises(OutputPathError, match="is an input"):
        check_output_path(out_ck, inputs=[out_ck], paths=Paths(lib), force=True)
    hard = tmp_path / "hardlink.pt"
    os.link(out_ck, hard)  # the same file by another name
    with pytest.raises(OutputPathError, match="is an input"):
        check_output_path(hard, inputs=[out_ck], paths=Paths(lib), force=True)
    with pytest.raises(OutputPathError, match="inside the input folder"):
        check_output_path(lib / "mydata" / "id_prop.csv", inputs=[lib / "mydata"], paths=Paths(lib), force=True)
    with pytest.raises(OutputPathError, match="inside the input folder"):
        check_output_path(lib / "mydata" / "new.csv", inputs=[lib / "mydata"], paths=Paths(lib))
    # a named source is not a path: ignored
    assert check_output_path(tmp_path / "p.csv", inputs=["demo"], paths=Paths(lib)) == tmp_path / "p.csv"


def test_non_regular_entries_are_refused_even_with_force(lib, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "target.csv")  # dangling: still a link
    for p, what in ((fifo, "FIFO"), (link, "symbolic link"), (os.devnull, "device"), (tmp_path, "folder")):
        with pytest.raises(OutputPathError, match=what):
            check_output_path(p, paths=Paths(lib), force=True)
    assert fifo.exists() and link.is_symlink()


def test_existing_file_needs_force_and_parent_must_be_a_folder(lib, tmp_path):
    f = tmp_path / "old.csv"
    f.write_text("x\n", encoding="utf-8")
    with pytest.raises(OutputPathError, match="--force"):
        check_output_path(f, paths=Paths(lib))
    assert check_output_path(f, paths=Paths(lib), force=True) == f
    assert check_output_path(tmp_path / "new" / "deep" / "x.csv", paths=Paths(lib)) == tmp_path / "new" / "deep" / "x.csv"
    with pytest.raises(OutputPathError, match="not a folder"):
        check_output_path(tmp_path / "old.csv" / "x.csv", paths=Paths(lib), force=True)
    with pytest.raises(OutputPathError, match="empty"):
        check_output_path("", paths=Paths(lib))


def test_export_cli_refuses_to_replace_the_checkpoint_it_reads(lib, capsys):
    best = lib / "checkpoints" / "r1" / "best.pt"
    assert cli.main(["export", str(best), str(best)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(best) in line and ("manages" in line or "input" in line)
    assert best.read_bytes() == GARBAGE
    for force in ([], ["--force"]):
        assert cli.main(["export", str(best), str(lib / "checkpoints" / "r1" / "last.pt"), *force]) == 2
        _one_line(capsys.readouterr().err)
        assert (lib / "checkpoints" / "r1" / "last.pt").read_bytes() == GARBAGE


def test_export_cli_refuses_devices_and_existing_files(lib, tmp_path, capsys):
    best = lib / "checkpoints" / "r1" / "best.pt"
    assert cli.main(["export", str(best), os.devnull, "--force"]) == 2
    assert "device" in _one_line(capsys.readouterr().err)
    old = tmp_path / "model.pt"
    old.write_bytes(b"keep me")
    assert cli.main(["export", str(best), str(old)]) == 2
    assert "--force" in _one_line(capsys.readouterr().err)
    assert old.read_bytes() == b"keep me"
    # with --force the rule lets it through; the garbage checkpoint is then refused (exit 2, nothing written)
    assert cli.main(["export", str(best), str(old), "--force"]) == 2
    assert old.read_bytes() == b"keep me"


def test_predict_cli_refuses_the_library_and_its_own_input(lib, capsys):
    best = lib / "checkpoints" / "r1" / "best.pt"
    last = lib / "checkpoints" / "r1" / "last.pt"
    data = lib / "mydata"
    for out in (last, data / "id_prop.csv"):
        assert cli.main(["predict", str(best), str(data), "--out", str(out), "--force", "--device", "cpu"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert str(out) in line
    assert last.read_bytes() == GARBAGE
    assert (data / "id_prop.csv").read_text(encoding="utf-8") == "a,1.0\n"


def test_predict_out_dev_stdout_is_not_replaced(lib, tmp_path):
    """``--out /dev/stdout`` (a symlink) and a FIFO are refused before the model is loaded:
    run in a subprocess with a timeout, so a regression that opened the FIFO fails instead of hanging."""
    best = lib / "checkpoints" / "r1" / "best.pt"
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for out in ("/dev/stdout", str(fifo)):
        res = subprocess.run([sys.executable, "-m", "tui_ft", "predict", str(best), "demo", "--out", out, "--force"],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert res.returncode == 2, res.stderr
        assert "not a regular file" in _one_line(res.stderr)
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")
    assert fifo.exists() and not fifo.is_file()
