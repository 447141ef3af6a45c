"""Fine-tuning presets: a strict TOML schema, its loader, and a TOML writer.

A preset is a small TOML file with the tables ``[run]``, ``[data]``,
``[model]`` (optional), ``[finetune]``, ``[optim]`` and ``[train]``. Every
key is checked: unknown tables and keys are errors, values must have the
right type and range, and each error names the file, the line and the field,
for example::

    presets/x.toml:7: data.fold: expected an integer from 0 to 4, got 7

Checks that need the file system (the data file exists, the target column is
in it, the ``init`` checkpoint exists) live in :func:`check_resources`, so
that a preset can be parsed anywhere.

This module must stay importable without torch, chgnet, pymatgen or textual.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "PresetError",
    "PresetErrors",
    "RunCfg",
    "DataCfg",
    "ModelCfg",
    "FinetuneCfg",
    "OptimCfg",
    "TrainCfg",
    "Preset",
    "parse_preset",
    "load_preset",
    "preset_from_dict",
    "dump_preset",
    "save_preset",
    "is_plan_text",
    "check_resources",
    "data_source_path",
    "locate_lines",
    "SECTIONS",
    "PRETRAINED_VERSIONS",
    "LR_GROUPS",
    "MATBENCH_SOURCE",
    "DEMO_SOURCE",
]

DEMO_SOURCE = "demo"
MATBENCH_SOURCE = "matbench_mp_e_form"
MATBENCH_FILE = "data/matbench_mp_e_form.json.gz"
PRETRAINED_VERSIONS = ("0.3.0", "0.2.0", "r2scan")
LR_GROUPS = ("embedding", "interaction", "readout")
NAME_MAX = 64
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_REF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


# --------------------------------------------------------------------------- errors


class PresetError(Exception):
    """One problem with a preset, pointing at a file, a line and a field."""

    def __init__(self, file: str, line: int | None, field: str, message: str):
        super().__init__(file, line, field, message)
        self.file = file
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.field}: {self.message}"
        return f"{self.file}:{self.line}: {self.field}: {self.message}"

    @property
    def errors(self) -> list["PresetError"]:
        """All problems in this exception (just this one)."""
        return [self]


class PresetErrors(PresetError):
    """Several problems at once. ``errors`` lists them; ``str()`` is one line each.

    It is a :class:`PresetError` too (its file, line, field and message are
    those of the first problem), so ``except PresetError`` catches both.
    """

    def __init__(self, errors: Iterable[PresetError]):
        errs = list(errors)
        first = errs[0] if errs else PresetError("<preset>", None, "preset", "invalid preset")
        super().__init__(first.file, first.line, first.field, first.message)
        self.args = (errs,)
        self._errors = errs

    @property
    def errors(self) -> list[PresetError]:
        return list(self._errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self._errors)


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class RunCfg:
    name: str
    description: str = ""


@dataclass(frozen=True)
class DataCfg:
    source: str
    target: str = "e_form"
    fold: int = 0
    fraction: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    test_limit: int = 0


@dataclass(frozen=True)
class ModelCfg:
    pretrained: str = "0.3.0"
    init: str = ""


@dataclass(frozen=True)
class FinetuneCfg:
    mode: str
    refit_atomref: bool
    backbone_lr: float | None = None
    lr_factors: dict[str, float] = field(default_factory=dict)
    unfreeze_every: int = 0

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash(
            (self.mode, self.refit_atomref, self.backbone_lr, tuple(sorted(self.lr_factors.items())), self.unfreeze_every)
        )


@dataclass(frozen=True)
class OptimCfg:
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    scheduler: str = "none"


@dataclass(frozen=True)
class TrainCfg:
    epochs: int
    batch_size: int = 16
    patience: int = 0
    device: str = "auto"
    seed: int = 0
    loss: str = "mse"


@dataclass(frozen=True)
class Preset:
    run: RunCfg
    data: DataCfg
    model: ModelCfg
    finetune: FinetuneCfg
    optim: OptimCfg
    train: TrainCfg
    path: str | None = field(default=None, compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.run.name

    def to_dict(self) -> dict[str, Any]:
        """All resolved values as nested plain dicts (JSON and TOML serialisable).

        ``finetune.backbone_lr`` is left out when unset, and ``model.pretrained``
        when ``model.init`` is set (the checkpoint fixes the model then, and a
        preset may not name both), so ``preset_from_dict(p.to_dict()) == p``.
        """
        model: dict[str, Any] = {}
        if not self.model.init:
            model["pretrained"] = self.model.pretrained
        model["init"] = self.model.init
        finetune: dict[str, Any] = {"mode": self.finetune.mode, "refit_atomref": self.finetune.refit_atomref}
        if self.finetune.backbone_lr is not None:
            finetune["backbone_lr"] = self.finetune.backbone_lr
        finetune["lr_factors"] = {g: self.finetune.lr_factors[g] for g in LR_GROUPS if g in self.finetune.lr_factors}
        finetune["unfreeze_every"] = self.finetune.unfreeze_every
        return {
            "run": {"name": self.run.name, "description": self.run.description},
            "data": {
                "source": self.data.source,
                "target": self.data.target,
                "fold": self.data.fold,
                "fraction": self.data.fraction,
                "val_fraction": self.data.val_fraction,
                "seed": self.data.seed,
                "test_limit": self.data.test_limit,
            },
            "model": model,
            "finetune": finetune,
            "optim": {
                "optimizer": self.optim.optimizer,
                "lr": self.optim.lr,
                "weight_decay": self.optim.weight_decay,
                "scheduler": self.optim.scheduler,
            },
            "train": {
                "epochs": self.train.epochs,
                "batch_size": self.train.batch_size,
                "patience": self.train.patience,
                "device": self.train.device,
                "seed": self.train.seed,
                "loss": self.train.loss,
            },
        }

    def line_of(self, field: str) -> int | None:
        """Line of ``field`` ("data.target") in the source file: the key's line,
        else its table's header line, else ``None``."""
        return _line_of(self.lines, field)

    def error(self, field: str, message: str) -> PresetError:
        return PresetError(self.path or "<preset>", self.line_of(field), field, message)

    def with_changes(self, changes: dict[str, object]) -> "Preset":
        """A new validated preset with ``{"section.key": value}`` changes applied.

        ``None`` (or ``""`` for a number) removes a key so its default applies.
        Strings given for number or boolean fields are converted when they
        parse ("1e-4", "8", "true"), so form inputs can be passed as they are.
        Changing ``model.init`` drops ``model.pretrained`` (unless it is changed
        too) and lets ``finetune.refit_atomref`` follow its default again if it
        was at the default before. Raises :class:`PresetErrors` (file
        ``"<form>"``, the field names as given) when a value is invalid.
        """
        d = self.to_dict()
        errors: list[PresetError] = []
        old_init = self.model.init
        for key, value in changes.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) not in (2, 3) or not all(parts):
                errors.append(PresetError("<form>", None, str(key), "expected a field name like optim.lr"))
                continue
            sec = parts[0]
            table = d.setdefault(sec, {})
            if not isinstance(table, dict):  # pragma: no cover - to_dict gives tables only
                continue
            if len(parts) == 3:
                sub = table.setdefault(parts[1], {})
                if not isinstance(sub, dict):
                    errors.append(PresetError("<form>", None, key, "not a table"))
                    continue
                table, name = sub, parts[2]
            else:
                name = parts[1]
            value = _coerce_form_value(".".join(parts[:2]), value)
            if value is None:
                table.pop(name, None)
            else:
                table[name] = value
        if errors:
            raise PresetErrors(errors)
        if "model.init" in changes:
            new_init = d.get("model", {}).get("init") or ""
            if new_init != old_init:
                if new_init and "model.pretrained" not in changes:
                    d["model"].pop("pretrained", None)
                if "finetune.refit_atomref" not in changes and self.finetune.refit_atomref == (old_init == ""):
                    d["finetune"].pop("refit_atomref", None)
        try:
            return _build(d, "<form>", {})
        except PresetErrors:
            raise
        except PresetError as e:
            raise PresetErrors([e]) from None


# --------------------------------------------------------------------------- schema


class _Bad(Exception):
    """A value check failed; the argument is the message."""


def show_value(v: Any) -> str:
    """A short TOML-like rendering of ``v`` for error messages (control characters escaped)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        s = v if len(v) <= 60 else v[:57] + "..."
        out = []
        for ch in s:
            if ch == '"':
                out.append('\\"')
            elif ch == "\\":
                out.append("\\\\")
            elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
                out.append(f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, hi: int | None) -> Callable[[Any], int]:
    want = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def check(v: Any) -> int:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise _Bad(f"expected {want}, got {show_value(v)}")
        return int(v)

    return check


def _num(lo: float, hi: float | None, *, lo_open: bool, hi_open: bool = False) -> Callable[[Any], float]:
    def fmt(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(x)

    if hi is None:
        want = f"a number {'>' if lo_open else '>='} {fmt(lo)}"
    else:
        want = f"a number in {'(' if lo_open else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open else ']'}"

    def check(v: Any) -> float:
        ok = _is_num(v) and math.isfinite(v)
        if ok:
            ok = (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            raise _Bad(f"expected {want}, got {show_value(v)}")
        return float(v)

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    want = ", ".join(f'"{o}"' for o in options)

    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise _Bad(f"expected one of {want}, got {show_value(v)}")
        return v

    return check


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {show_value(v)}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {show_value(v)}")
    return v


def _has_control(s: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in s)


def check_name(v: Any) -> str:
    """Validate a run/preset name: 1..64 of [A-Za-z0-9_.-], no leading '.'/'-', no '..'."""
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {show_value(v)}")
    if not v:
        raise _Bad("must not be empty")
    if _has_control(v):
        raise _Bad(f"must not contain control characters, got {show_value(v)}")
    if len(v) > NAME_MAX:
        raise _Bad(f"must be at most {NAME_MAX} characters, got {len(v)}")
    if not _NAME_CHARS.fullmatch(v):
        raise _Bad(f'may only contain letters, digits, "_", "." and "-", got {show_value(v)}')
    if v[0] in ".-":
        raise _Bad(f'must not start with "." or "-", got {show_value(v)}')
    if ".." in v:
        raise _Bad(f'must not contain "..", got {show_value(v)}')
    return v


def _source(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {show_value(v)}")
    want = f'expected "{DEMO_SOURCE}", "{MATBENCH_SOURCE}" or a path to a .json/.json.gz file'
    if not v.strip():
        raise _Bad(f"{want}, got an empty string")
    if _has_control(v):
        raise _Bad(f"must not contain control characters, got {show_value(v)}")
    if v in (DEMO_SOURCE, MATBENCH_SOURCE):
        return v
    if not (v.endswith(".json") or v.endswith(".json.gz")):
        raise _Bad(f"{want}, got {show_value(v)}")
    return v


def _target(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {show_value(v)}")
    if not v or _has_control(v):
        raise _Bad(f"expected a column name, got {show_value(v)}")
    return v


def _init(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {show_value(v)}")
    if v == "":
        return v
    if _has_control(v):
        raise _Bad(f"must not contain control characters, got {show_value(v)}")
    name, at, kind = v.rpartition("@")
    if at and kind in ("best", "last") and _REF_NAME.fullmatch(name):
        return v
    if v.endswith(".pt"):
        return v
    raise _Bad(f'expected "RUN_OR_PRESET@best", "RUN_OR_PRESET@last" or a path to a .pt file, got {show_value(v)}')


def _lr_factors(v: Any) -> dict[str, float]:
    # keys are checked in _build so that each bad key gets its own field name
    if not isinstance(v, dict):
        raise _Bad(f"expected an inline table like {{ embedding = 0.1, readout = 1.0 }}, got {show_value(v)}")
    return v


@dataclass(frozen=True)
class _Key:
    check: Callable[[Any], Any]
    required: bool = False
    default: Any = None
    kind: str = "str"  # "str" | "int" | "float" | "bool" | "table"  (for form-value coercion)


_lr_factor_value = _num(0.0, 10.0, lo_open=True)

SECTIONS: dict[str, dict[str, _Key]] = {
    "run": {
        "name": _Key(check_name, required=True),
        "description": _Key(_str, default=""),
    },
    "data": {
        "source": _Key(_source, required=True),
        "target": _Key(_target, default="e_form"),
        "fold": _Key(_int(0, 4), default=0, kind="int"),
        "fraction": _Key(_num(0.0, 1.0, lo_open=True), default=1.0, kind="float"),
        "val_fraction": _Key(_num(0.0, 0.5, lo_open=True), default=0.1, kind="float"),
        "seed": _Key(_int(0, None), default=0, kind="int"),
        "test_limit": _Key(_int(0, None), default=0, kind="int"),
    },
    "model": {
        "pretrained": _Key(_choice(*PRETRAINED_VERSIONS), default="0.3.0"),
        "init": _Key(_init, default=""),
    },
    "finetune": {
        "mode": _Key(_choice("head", "full"), required=True),
        "refit_atomref": _Key(_bool, default=None, kind="bool"),  # default depends on model.init
        "backbone_lr": _Key(_num(0.0, None, lo_open=True), default=None, kind="float"),
        "lr_factors": _Key(_lr_factors, default=None, kind="table"),
        "unfreeze_every": _Key(_int(0, None), default=0, kind="int"),
    },
    "optim": {
        "optimizer": _Key(_choice("adam", "adamw", "sgd"), default="adam"),
        "lr": _Key(_num(0.0, 1.0, lo_open=True), required=True, kind="float"),
        "weight_decay": _Key(_num(0.0, None, lo_open=False), default=0.0, kind="float"),
        "scheduler": _Key(_choice("none", "cosine"), default="none"),
    },
    "train": {
        "epochs": _Key(_int(1, 10000), required=True, kind="int"),
        "batch_size": _Key(_int(1, 4096), default=16, kind="int"),
        "patience": _Key(_int(0, None), default=0, kind="int"),
        "device": _Key(_choice("auto", "cpu", "cuda"), default="auto"),
        "seed": _Key(_int(0, None), default=0, kind="int"),
        "loss": _Key(_choice("mse", "huber", "l1"), default="mse"),
    },
}
OPTIONAL_SECTIONS = ("model",)


def _coerce_form_value(field_name: str, value: Any) -> Any:
    """Convert a string typed into a form to the field's type when it parses."""
    sec, _, key = field_name.partition(".")
    spec = SECTIONS.get(sec, {}).get(key)
    if spec is None or not isinstance(value, str):
        return value
    s = value.strip()
    if spec.kind in ("int", "float") and s == "":
        return None
    if spec.kind == "int":
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        return value
    if spec.kind == "float":
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
            return float(s)
        return value
    if spec.kind == "bool":
        if s.lower() in ("true", "yes", "on"):
            return True
        if s.lower() in ("false", "no", "off"):
            return False
        return value
    return value


def _allowed(keys: Iterable[str]) -> str:
    return ", ".join(keys)


def _build(d: Any, path: str, lines: dict[str, int]) -> Preset:
    """Validate a parsed TOML document (nested dicts) and build a :class:`Preset`."""
    errors: list[PresetError] = []

    def err(fld: str, msg: str) -> None:
        errors.append(PresetError(path, _line_of(lines, fld), fld, msg))

    if not isinstance(d, dict):
        raise PresetError(path, None, "preset", f"expected a table of sections, got {show_value(d)}")
    if isinstance(d.get("stage"), list):
        raise PresetError(
            path,
            _line_of(lines, "stage"),
            "stage",
            "this is a plan (it has top-level [[stage]] tables), not a preset: load it with the plan loader",
        )

    for sec in d:
        if sec not in SECTIONS:
            err(sec, f"unknown section (allowed: {_allowed(SECTIONS)})")

    vals: dict[str, dict[str, Any]] = {}
    present: dict[str, set[str]] = {}
    for sec, keys in SECTIONS.items():
        vals[sec] = {}
        present[sec] = set()
        if sec not in d:
            if sec in OPTIONAL_SECTIONS:
                vals[sec] = {key: spec.default for key, spec in keys.items()}
            else:
                err(sec, "missing required section")
            continue
        table = d[sec]
        if not isinstance(table, dict):
            err(sec, f"expected a table [{sec}], got {show_value(table)}")
            continue
        for key in table:
            if key not in keys:
                err(f"{sec}.{key}", f"unknown key (allowed: {_allowed(keys)})")
        for key, spec in keys.items():
            fld = f"{sec}.{key}"
            if key in table:
                present[sec].add(key)
                try:
                    vals[sec][key] = spec.check(table[key])
                except _Bad as bad:
                    err(fld, str(bad))
            elif spec.required:
                err(fld, "missing required key")
            else:
                vals[sec][key] = spec.default

    # lr_factors: each group checked on its own field
    ft = vals["finetune"]
    factors = ft.get("lr_factors")
    if isinstance(factors, dict):
        clean: dict[str, float] = {}
        for group, value in factors.items():
            fld = f"finetune.lr_factors.{group}"
            if group not in LR_GROUPS:
                err(fld, f"unknown group (allowed: {_allowed(LR_GROUPS)})")
                continue
            try:
                clean[group] = _lr_factor_value(value)
            except _Bad as bad:
                err(fld, str(bad))
        ft["lr_factors"] = {g: clean[g] for g in LR_GROUPS if g in clean}
    elif "lr_factors" in ft and factors is None:
        ft["lr_factors"] = {}

    # model: a checkpoint to start from and an explicit pretrained version exclude each other
    mdl = vals["model"]
    init = mdl.get("init")
    if isinstance(init, str) and init and "pretrained" in present["model"] and "pretrained" in mdl:
        err(
            "model.init",
            "cannot be combined with model.pretrained (the checkpoint already fixes the model); remove one of them",
        )

    # head mode trains only the readout head: the backbone options make no sense there
    if ft.get("mode") == "head":
        if "backbone_lr" in present["finetune"] and ft.get("backbone_lr") is not None:
            err("finetune.backbone_lr", 'only allowed when finetune.mode = "full"')
        if ft.get("lr_factors"):
            err("finetune.lr_factors", 'only allowed when finetune.mode = "full"')
        if isinstance(ft.get("unfreeze_every"), int) and ft["unfreeze_every"] > 0:
            err("finetune.unfreeze_every", 'only allowed when finetune.mode = "full"')

    if "refit_atomref" in ft and ft["refit_atomref"] is None and isinstance(init, str):
        ft["refit_atomref"] = init == ""

    if errors:
        errors.sort(key=lambda e: -1 if e.line is None else e.line)
        if len(errors) == 1:
            raise errors[0]
        raise PresetErrors(errors)

    return Preset(
        run=RunCfg(**vals["run"]),
        data=DataCfg(**vals["data"]),
        model=ModelCfg(**vals["model"]),
        finetune=FinetuneCfg(**ft),
        optim=OptimCfg(**vals["optim"]),
        train=TrainCfg(**vals["train"]),
        path=None if path in ("<form>",) else path,
        lines=dict(lines),
    )


# --------------------------------------------------------------------------- line locator

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _line_of(lines: dict[str, int], fld: str) -> int | None:
    parts = fld.split(".")
    while parts:
        key = ".".join(parts)
        if key in lines:
            return lines[key]
        parts.pop()
    return None


def _parse_key(s: str, i: int) -> tuple[list[str], int] | None:
    """Parse a (dotted) TOML key at ``s[i:]``; return its parts and the index after it."""
    parts: list[str] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            return None
        c = s[i]
        if c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            if j >= n:
                return None
            raw = s[i : j + 1]
            try:
                parts.append(json.loads(raw))
            except ValueError:
                parts.append(raw[1:-1])
            i = j + 1
        elif c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                return None
            parts.append(s[i + 1 : j])
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, i


def _scan(s: str, i: int, depth: int) -> tuple[int, str | None, str]:
    """Scan a value from ``s[i:]``: track bracket depth, skip strings and comments.

    Returns (depth, open multi-line string delimiter or None, the text with
    string contents blanked out).
    """
    out = list(s)
    n = len(s)
    while i < n:
        c = s[i]
        if s.startswith('"""', i) or s.startswith("'''", i):
            delim = s[i : i + 3]
            j = s.find(delim, i + 3)
            if j < 0:
                return depth, delim, "".join(out[:i])
            j += 3
            while j < n and s[j] == delim[0]:  # up to two quotes may end the content
                j += 1
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                out[k] = " "
            i = j + 1
        elif c == "'":
            j = s.find("'", i + 1)
            j = n if j < 0 else j
            for k in range(i, min(j + 1, n)):
                out[k] = " "
            i = j + 1
        elif c == "#":
            return depth, None, "".join(out[:i])
        else:
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
            i += 1
    return depth, None, "".join(out)


def _inline_keys(blank: str, base: list[str], lineno: int, lines: dict[str, int]) -> None:
    """Record the keys of inline tables in a (string-blanked) value."""
    stack: list[tuple[str, list[str]]] = []  # (bracket, table path)
    last_key: list[str] = []
    i, n = 0, len(blank)
    expect_key = False
    while i < n:
        c = blank[i]
        if c == "{":
            path = base if not stack else (stack[-1][1] + last_key if last_key else stack[-1][1])
            stack.append(("{", path))
            expect_key, last_key = True, []
            i += 1
        elif c == "[":
            stack.append(("[", (stack[-1][1] + last_key) if stack else base))
            expect_key, last_key = False, []
            i += 1
        elif c in "}]":
            if stack:
                stack.pop()
            expect_key, last_key = False, []
            i += 1
        elif c == ",":
            expect_key = bool(stack) and stack[-1][0] == "{"
            i += 1
        elif expect_key and c not in " \t":
            parsed = _parse_key(blank, i)
            if parsed and parsed[1] < n and blank[parsed[1]] == "=":
                parts, j = parsed
                path = stack[-1][1]
                for k in range(1, len(parts) + 1):
                    lines.setdefault(".".join(path + parts[:k]), lineno)
                last_key = parts
                i = j + 1
            else:
                i += 1
            expect_key = False
        else:
            i += 1


def locate_lines(text: str) -> dict[str, int]:
    """Map "table.key" (and "table") to the 1-based line where it is first defined.

    Handles ``[table]`` / ``[[table]]`` headers, ``key = value`` lines, dotted
    keys (``optim.lr = 1e-3`` at top level) and the keys of inline tables
    (which get the line of the inline table). Multi-line strings and arrays
    are skipped. It is a locator for messages, not a parser: the text must
    also pass ``tomllib``.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    ml: str | None = None
    depth = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if ml is not None:
            j = raw.find(ml)
            if j < 0:
                continue
            rest_start = j + 3
            while rest_start < len(raw) and raw[rest_start] == ml[0]:
                rest_start += 1
            ml = None
            depth, ml, _ = _scan(raw, rest_start, depth)
            continue
        if depth > 0:
            depth, ml, _ = _scan(raw, 0, depth)
            continue
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            arr = s.startswith("[[")
            parsed = _parse_key(s, 2 if arr else 1)
            if parsed:
                table = parsed[0]
                for k in range(1, len(table) + 1):
                    lines.setdefault(".".join(table[:k]), lineno)
            continue
        parsed = _parse_key(raw, 0)
        if not parsed:
            continue
        parts, i = parsed
        if i >= len(raw) or raw[i] != "=":
            continue
        full = table + parts
        for k in range(len(table) + 1, len(full) + 1):
            lines.setdefault(".".join(full[:k]), lineno)
        depth, ml, blank = _scan(raw, i + 1, 0)
        value = blank[i + 1 :].strip()
        if value.startswith("{") or value.startswith("["):
            _inline_keys(value, full, lineno, lines)
    return lines


# --------------------------------------------------------------------------- parsing


def _toml_error(path: str, text: str, exc: Exception) -> PresetError:
    msg = getattr(exc, "msg", None) or str(exc)
    line = getattr(exc, "lineno", None)
    m = _TOML_POS.search(msg)
    if m:
        line = int(m.group(1))
        msg = msg[: m.start()]
    elif _TOML_END.search(msg):
        msg = _TOML_END.sub("", msg) + " at end of file"
        line = max(1, len(text.splitlines()))
    return PresetError(path, line, "toml", msg.strip() or "invalid TOML")


def _loads(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(path, text, exc) from None


def parse_preset(text: str, path: str = "<string>") -> Preset:
    """Parse and validate preset TOML text. Raises PresetError / PresetErrors."""
    path = os.fspath(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    data = _loads(text, path)
    return _build(data, path, locate_lines(text))


def load_preset(path: str | os.PathLike[str]) -> Preset:
    """Read and validate a preset file. The error file name is ``path`` as given."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise PresetError(name, None, "preset", f"cannot read: {why}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PresetError(name, line, "toml", "file is not valid UTF-8 text") from None
    return parse_preset(text, name)


def preset_from_dict(d: dict, path: str = "<dict>", lines: dict[str, int] | None = None) -> Preset:
    """Validate nested dicts (as ``tomllib`` would give) and build a Preset."""
    return _build(d, path, dict(lines or {}))


def is_plan_text(text: str) -> bool:
    """True if the TOML text has a top-level ``[[stage]]`` array (a plan, not a preset)."""
    try:
        data = tomllib.loads(text[1:] if text.startswith("\ufeff") else text)
    except tomllib.TOMLDecodeError:
        return re.search(r"^[ \t]*\[\[[ \t]*stage[ \t]*\]\]", text, re.MULTILINE) is not None
    stage = data.get("stage")
    return isinstance(stage, list) and all(isinstance(s, dict) for s in stage)


# --------------------------------------------------------------------------- writing


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

    ``parse_preset(dump_preset(p)) == p``. An empty ``lr_factors`` table and an
    unset ``backbone_lr`` are left out.
    """
    d = preset.to_dict()
    if not d["finetune"].get("lr_factors"):
        d["finetune"].pop("lr_factors", None)
    out: list[str] = [f"# tui-ft preset {preset.name}"]
    for sec, table in d.items():
        out.append("")
        out.append(f"[{sec}]")
        for key, value in table.items():
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def save_preset(preset: Preset, path: str | os.PathLike[str]) -> None:
    """Write ``dump_preset(preset)`` to ``path`` atomically."""
    from tui_ft.core.atomic import atomic_write_text

    atomic_write_text(path, dump_preset(preset))


# --------------------------------------------------------------------------- resources


def data_source_path(source: str) -> Path | None:
    """The file behind ``data.source``: None for the built-in demo data, the
    downloaded Matbench copy under the project root for ``matbench_mp_e_form``,
    otherwise the path (relative paths against the current directory)."""
    if source == DEMO_SOURCE:
        return None
    if source == MATBENCH_SOURCE:
        from tui_ft.core.paths import Paths

        return Paths.default().root / MATBENCH_FILE
    return Path(source).expanduser()


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
    errors: list[PresetError] = []
    source = preset.data.source
    path = data_source_path(source)
    if path is not None:
        if not path.is_file():
            if source == MATBENCH_SOURCE:
                errors.append(
                    preset.error(
                        "data.source",
                        f"{MATBENCH_SOURCE} is not downloaded yet ({path} is missing); "
                        f"run `tui-ft data fetch {MATBENCH_SOURCE}` first",
                    )
                )
            else:
                where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
                what = "is not a file" if path.exists() else "not found"
                errors.append(preset.error("data.source", f"data file {show_value(source)} {what}{where}"))
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
