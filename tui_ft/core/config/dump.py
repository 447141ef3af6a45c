"""Presets written back as TOML, and the checks of what a preset's paths point at (data, init)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

from tui_ft.core.common.paths import missing_data_message
from tui_ft.core.common.paths import data_source_path as _data_source_path
from tui_ft.core.config.presets import Preset


from tui_ft.core.config.fields import (  # noqa: E402
    _BARE,
    PresetError,
    PresetErrors,
    show_value,
)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:  # lone surrogate: cannot be written as UTF-8
            raise ValueError(f"string contains a lone surrogate U+{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_preset(preset: Preset) -> str:
    """The preset as TOML text, all resolved values written out.

    ``parse_preset(dump_preset(p)) == p``. An empty ``lr_factors`` table, an
    unset ``backbone_lr`` and an empty ``model.init`` are left out.
    """
    d = preset.to_dict()
    if not d["finetune"].get("lr_factors"):
        d["finetune"].pop("lr_factors", None)
    if d.get("model", {}).get("init") == "":
        d["model"].pop("init")  # unset: pretrained CHGNet (the default); `init = ""` read as a mistake
    out: list[str] = [f"# tui-ft preset {preset.name}"]
    for sec, table in d.items():
        out.append("")
        out.append(f"[{sec}]")
        space = table.pop("space", None) if sec == "sweep" else None
        for key, value in table.items():
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
        if space is not None:  # one line per searched key
            out.append("")
            out.append("[sweep.space]")
            for key, value in space.items():
                out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def save_preset(preset: Preset, path: str | os.PathLike[str]) -> None:
    """Write ``dump_preset(preset)`` to ``path`` atomically."""
    from tui_ft.core.common.atomic import atomic_write_text

    atomic_write_text(path, dump_preset(preset))


def data_source_path(source: str) -> Path | None:
    """The file behind ``data.source`` (:func:`tui_ft.core.common.paths.data_source_path`):
    None for the built-in demo data, ``<root>/data/NAME.json.gz`` for a Matbench
    task, otherwise the path (relative paths against the current directory)."""
    return _data_source_path(source)


def _special_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a folder nor a regular file (a FIFO, a device)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def _check_other_source(preset: Preset, path: Path) -> list[PresetError]:
    """A non-Matbench data source: the format is detected (``data.format`` when given);
    a folder without id_prop.csv cannot be trained on. Reading it is left to the run."""
    fmt = preset.data.format
    if fmt != "auto":
        return []
    if path.is_dir() and _special_file(path / "id_prop.csv"):
        return [preset.error("data.source", f"{path / 'id_prop.csv'} is not a file (it is "
                             f"{_special_file(path / 'id_prop.csv')}); expected id,target rows")]
    if path.is_dir() and not (path / "id_prop.csv").is_file():
        return [preset.error("data.source", f"folder {show_value(preset.data.source)} has no id_prop.csv "
                             "(expected id,target rows and one structure file per id)")]
    return []


def check_resources(
    preset: Preset,
    *,
    resolve_init: Callable[[str], Any] | None = None,
    read_columns: Callable[[Path], list[str]] | None = None,
) -> None:
    """Check what a preset needs from the file system; raise PresetError at the line.

    - the data file exists (not checked for ``"demo"``);
    - ``read_columns(path)`` (if given) succeeds and lists ``data.target``;
      a ``ValueError`` / ``OSError`` it raises (e.g. "empty dataset") is
      reported under ``data.source``;
    - ``resolve_init(model.init)`` (if given and init is set) succeeds; a
      ``LookupError`` it raises is reported under ``model.init``. Without
      ``resolve_init``, an init that is a ``.pt`` path must exist.

    Several problems raise :class:`PresetErrors`.
    """
    from tui_ft.core.common.paths import Paths

    errors: list[PresetError] = []
    source = preset.data.source
    root = Paths.default().root  # relative data paths are the project root's (as the run reads them)
    path = _data_source_path(source, base=root)
    if path is not None:
        if preset.task.kind == "potential" and (path.is_dir() or path.is_file()):
            # frames (an MPtrj or mlearn JSON, extxyz, a VASP run or folder tree, an ASE .db): read and
            # checked frame by frame by config.checks.preflight through the frame readers, not as a
            # property table with a target column or a folder with id_prop.csv
            pass
        elif path.is_dir() or (path.is_file() and not path.name.lower().endswith((".json", ".json.gz"))):
            # a folder (id_prop.csv), a CSV or an ase-readable file: its format must be known and readable
            errors += _check_other_source(preset, path)
        elif not path.is_file():
            why = _special_file(path)
            errors.append(preset.error("data.source", f"data file {show_value(source)} is not a file ({path} is {why}); "
                                       "expected a regular data file or a folder" if why else missing_data_message(source, path)))
        elif read_columns is not None:
            try:
                columns = list(read_columns(path))
            except (ValueError, OSError) as exc:
                errors.append(preset.error("data.source", f"{show_value(source)}: {exc}"))
            else:
                target = preset.data.target
                data_cols = [c for c in columns if c != "structure"]
                if target not in data_cols:
                    shown = ", ".join(str(c) for c in data_cols) or "none"
                    errors.append(
                        preset.error(
                            "data.target",
                            f"column {show_value(target)} is not in {show_value(source)} (target columns: {shown})",
                        )
                    )
    test_source = preset.data.test_source
    if test_source:
        tpath = Path(test_source).expanduser()
        shown = tpath if tpath.is_absolute() else root / tpath
        if not shown.exists():
            where = "" if tpath.is_absolute() else f" (looked for {shown}: a relative path is the project root's)"
            errors.append(preset.error("data.test_source", f"test data {show_value(test_source)} not found{where}"))
        elif _special_file(shown):  # a FIFO would hang the reader, /dev/zero never ends
            errors.append(preset.error("data.test_source", f"test data {show_value(test_source)} is not a file "
                                       f"({shown} is {_special_file(shown)}); expected a regular data file or a folder"))
    init = preset.model.init
    if init:
        if resolve_init is not None:
            try:
                resolve_init(init)
            except LookupError as exc:
                msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                errors.append(preset.error("model.init", msg))
        elif init.endswith(".pt") and not Path(init).expanduser().is_file():
            errors.append(preset.error("model.init", f"checkpoint file {show_value(init)} not found"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PresetErrors(errors)
