"""The one TOML reader (tui_ft.core.config.tomlfile) against hostile files.

Each case must end quickly with one clear ``FILE[:LINE]: field: message``
error: no hang, no RecursionError, no quadratic parse.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tui_ft import cli
from tui_ft.core.config import tomlfile
from tui_ft.core.orchestrate.plans import load_plan
from tui_ft.core.config.fields import PresetError
from tui_ft.core.config.presets import load_preset, parse_preset
from tui_ft.core.config.tomlfile import MAX_BYTES, MAX_DEPTH, MAX_KEY_PARTS, TomlFileError, parse_toml, read_text

ROOT = Path(__file__).resolve().parents[1]
DEMO = (ROOT / "presets" / "demo.toml").read_text(encoding="utf-8")


def test_bom_is_dropped(tmp_path):
    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbf" + DEMO.encode("utf-8"))
    assert read_text(f) == DEMO
    assert load_preset(f).name == "demo"


def test_bad_utf8_names_its_line(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes(DEMO.encode("utf-8").replace(b"Smoke test", b"Sm\xf6ke test", 1))
    line = DEMO[: DEMO.index("Smoke test")].count("\n") + 1
    with pytest.raises(PresetError) as info:
        load_preset(f)
    assert (info.value.line, info.value.field) == (line, "toml")
    assert str(info.value) == f"{f}:{line}: toml: file is not valid UTF-8 text"


def test_syntax_error_line_without_tomllib_position():
    with pytest.raises(TomlFileError) as info:
        parse_toml('a = 1\nb = "x\n', "s.toml")
    assert (info.value.file, info.value.line, info.value.field) == ("s.toml", 2, "toml")
    assert "(at line" not in info.value.message


def test_directory_refused(tmp_path):
    with pytest.raises(PresetError) as info:
        load_preset(tmp_path)
    assert str(info.value) == f"{tmp_path}: preset: cannot read: is a directory, expected a TOML file"
    with pytest.raises(PresetError) as info:
        load_plan(tmp_path)
    assert info.value.field == "plan" and "is a directory" in info.value.message


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_refused_without_hanging():
    t0 = time.monotonic()
    with pytest.raises(PresetError) as info:
        load_preset("/dev/zero")
    assert time.monotonic() - t0 < 5
    assert str(info.value) == f"/dev/zero: preset: file is larger than {MAX_BYTES // 1024} KiB; is it really a preset?"


def test_size_cap(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text(DEMO + "# " + "x" * MAX_BYTES + "\n", encoding="utf-8")
    with pytest.raises(PresetError) as info:
        load_preset(f)
    assert info.value.field == "preset" and "larger than" in info.value.message
    ok = tmp_path / "ok.toml"
    ok.write_text(DEMO + "# " + "x" * (MAX_BYTES - len(DEMO) - 10) + "\n", encoding="utf-8")
    assert load_preset(ok).name == "demo"  # just under the cap still loads


@pytest.mark.skipif(sys.platform == "win32", reason="AF_UNIX sockets")
def test_socket_refused(tmp_path):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        with pytest.raises(PresetError) as info:
            load_preset(path)
        assert info.value.field == "preset" and "cannot read" in info.value.message
    finally:
        s.close()


def _fifo_with(tmp_path, data: bytes) -> Path:
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as fh:
            fh.write(data)

    threading.Thread(target=write, daemon=True).start()
    return fifo


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_is_read_once(tmp_path):
    """``--preset <(...)``: a pipe can be read only once, and that is enough."""
    fifo = _fifo_with(tmp_path, DEMO.encode("utf-8"))
    assert load_preset(fifo).name == "demo"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_cli_reads_a_pipe_once(tmp_path, monkeypatch, capsys):
    """The CLI decides preset-or-plan and loads from the same single read."""
    monkeypatch.setenv("TUI_FT_HOME", str(tmp_path / "home"))
    fifo = _fifo_with(tmp_path, DEMO.replace("epochs = 3", "epochs = 0").encode("utf-8"))
    assert cli.main(["--preset", str(fifo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = DEMO[: DEMO.index("epochs = 3")].count("\n") + 1
    assert err == [f"{fifo}:{line}: train.epochs: expected an integer from 1 to 10000, got 0"]


def test_deep_arrays_give_a_clean_error():
    text = DEMO + "deep = " + "[" * 5000 + "]" * 5000 + "\n"
    line = text.count("\n")
    with pytest.raises(PresetError) as info:
        parse_preset(text, "d.toml")
    assert (info.value.line, info.value.field) == (line, "toml")
    assert f"nested more than {MAX_DEPTH} deep" in info.value.message


def test_deep_multiline_arrays_and_inline_tables():
    text = "a = [\n" + "[\n" * 100 + "]\n" * 101
    with pytest.raises(TomlFileError) as info:
        parse_toml(text, "m.toml")
    assert info.value.line == MAX_DEPTH + 1  # the line where the limit was passed
    text = "a = " + "{ b = " * 1000 + "1" + " }" * 1000 + "\n"
    with pytest.raises(TomlFileError) as info:
        parse_toml(text, "i.toml")
    assert info.value.line == 1 and "nested" in info.value.message


def test_nesting_within_the_limit_parses():
    text = "a = " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    data, _ = parse_toml(text)
    assert isinstance(data["a"], list)


@pytest.mark.parametrize(
    "text",
    [
        "a" + ".a" * 20000 + " = 1\n",  # a dotted key
        "[" + ".".join(["t"] * 20000) + "]\nx = 1\n",  # a table header
        "x = { " + ".".join(["k"] * 20000) + " = 1 }\n",  # a key inside an inline table
    ],
    ids=["key", "header", "inline"],
)
def test_absurd_dotted_keys_fail_fast(text):
    t0 = time.monotonic()
    with pytest.raises(PresetError) as info:
        parse_preset(text, "k.toml")
    assert time.monotonic() - t0 < 2  # tomllib alone takes about 25 s on the first one
    assert (info.value.line, info.value.field) == (1, "toml")
    assert f"more than {MAX_KEY_PARTS}" in info.value.message


def test_line_locator_default():
    lines = tomlfile.locate_lines("[a]\nb = 1\n")
    assert tomlfile.line_of(lines, "a.b") == 2
    assert tomlfile.line_of(lines, "a.zz") == 1
    assert tomlfile.line_of(lines, "q.r") is None
    assert tomlfile.line_of(lines, "q.r", 7) == 7
