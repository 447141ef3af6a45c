"""Fine-tuning presets: a strict TOML schema, its loader, and a TOML writer.

A preset is a small TOML file with the tables ``[run]``, ``[data]``,
``[model]`` (optional), ``[finetune]``, ``[optim]`` and ``[train]``. Every
key is checked: unknown tables and keys are errors, values must have the
right type and range, and each error names the file, the line and the field,
for example::

    presets/x.toml:7: data.fold: expected an integer from 0 to 4, got 7

The schema is the pydantic v2 models below (``RunCfg`` ... ``TrainCfg``): one
line per field, its type, range and default. Files are validated strictly (no
strings for numbers, no booleans for integers); strings typed into the form are
first converted in pydantic's lax mode (:func:`coerce_form_value`). pydantic's
error locations are the dotted keys; :func:`_message` rewords its errors in
TOML terms and the line comes from :func:`tui_ft.core.tomlfile.locate_lines`.
Rules between fields (head mode vs backbone options, ``init`` vs
``pretrained``, the demo data's one target) are in :func:`_cross_field`.

Checks that need the file system (the data file exists, the target column is
in it, the ``init`` checkpoint exists) live in :func:`check_resources`, so
that a preset can be parsed anywhere.

This module must stay importable without torch, chgnet, pymatgen or textual.
"""

from __future__ import annotations

import functools
import math
import os
import re
import types
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Optional, Union, get_args, get_origin

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from tui_ft.core.tomlfile import TomlFileError, line_of, locate_lines, parse_toml, read_text

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
    "line_of",
    "check_name",
    "check_field",
    "coerce_form_value",
    "show_value",
    "SECTIONS",
    "SECTION_MODELS",
    "PRETRAINED_VERSIONS",
    "LR_GROUPS",
    "MATBENCH_SOURCE",
    "DEMO_SOURCE",
]

DEMO_SOURCE = "demo"
DEMO_TARGET = "e_form"  # the only target column of the demo data
MATBENCH_SOURCE = "matbench_mp_e_form"
MATBENCH_FILE = "data/matbench_mp_e_form.json.gz"
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"
NAME_MAX = 64
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_REF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_CUDA_N = re.compile(r"cuda:(0|[1-9][0-9]{0,3})")
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_UNIONS = (Union, types.UnionType)


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

    @classmethod
    def from_toml(cls, exc: TomlFileError) -> "PresetError":
        """The reader's error (unreadable file, bad bytes, TOML syntax) as a PresetError."""
        return cls(exc.file, exc.line, exc.field, exc.message)


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


# --------------------------------------------------------------------------- value checks


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
    if isinstance(v, (dict, BaseModel)):
        return "a table"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _has_control(s: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in s)


def check_name(v: Any) -> str:
    """Validate a run/preset name: 1..64 of [A-Za-z0-9_.-], no leading '.'/'-', no '..'.

    Raises ``ValueError`` with the message for the error line."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {show_value(v)}")
    if not v:
        raise ValueError("must not be empty")
    if _has_control(v):
        raise ValueError(f"must not contain control characters, got {show_value(v)}")
    if len(v) > NAME_MAX:
        raise ValueError(f"must be at most {NAME_MAX} characters, got {len(v)}")
    if not _NAME_CHARS.fullmatch(v):
        raise ValueError(f'may only contain letters, digits, "_", "." and "-", got {show_value(v)}')
    if v[0] in ".-":
        raise ValueError(f'must not start with "." or "-", got {show_value(v)}')
    if ".." in v:
        raise ValueError(f'must not contain "..", got {show_value(v)}')
    return v


def _source(v: str) -> str:
    want = f'expected "{DEMO_SOURCE}", "{MATBENCH_SOURCE}" or a path to a .json/.json.gz file'
    if not v.strip():
        raise ValueError(f"{want}, got an empty string")
    if _has_control(v):
        raise ValueError(f"must not contain control characters, got {show_value(v)}")
    if v in (DEMO_SOURCE, MATBENCH_SOURCE) or v.endswith(".json") or v.endswith(".json.gz"):
        return v
    raise ValueError(f"{want}, got {show_value(v)}")


def _target(v: str) -> str:
    if not v or _has_control(v):
        raise ValueError(f"expected a column name, got {show_value(v)}")
    return v


def _init(v: str) -> str:
    if v == "":
        return v
    if _has_control(v):
        raise ValueError(f"must not contain control characters, got {show_value(v)}")
    name, at, kind = v.rpartition("@")
    if (at and kind in ("best", "last") and _REF_NAME.fullmatch(name)) or v.endswith(".pt"):
        return v
    raise ValueError(f'expected "RUN_OR_PRESET@best", "RUN_OR_PRESET@last" or a path to a .pt file, got {show_value(v)}')


def _device(v: str) -> str:
    if v in DEVICES or _CUDA_N.fullmatch(v):
        return v
    want = ", ".join(f'"{d}"' for d in DEVICES)
    raise ValueError(f'expected one of {want} or "cuda:N" (N = 0, 1, ...), got {show_value(v)}')


# The field types. Each carries its own range, so the error message can say it.
def _int(ge: int, le: int | None = None) -> Any:
    return Annotated[int, Field(ge=ge, le=le)]


def _num(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    return Annotated[float, Field(gt=gt, ge=ge, le=le, allow_inf_nan=False)]


def _text(check: Callable[[str], str]) -> Any:
    return Annotated[str, AfterValidator(check)]


LrFactor = _num(gt=0.0, le=10.0)
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["none", "cosine"]
Loss = Literal["mse", "huber", "l1"]
Mode = Literal["head", "full"]
Pretrained = Literal["0.3.0", "0.2.0", "r2scan"]
LrGroup = Literal["embedding", "interaction", "readout"]
PRETRAINED_VERSIONS: tuple[str, ...] = get_args(Pretrained)
LR_GROUPS: tuple[str, ...] = get_args(LrGroup)


# --------------------------------------------------------------------------- schema


class _Table(BaseModel):
    """A preset table: strict types (a file says what it means), no unknown keys, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")


# One line per field: the type (with its range) and the default; no default = required.


class RunCfg(_Table):
    name: _text(check_name)
    description: str = ""


class DataCfg(_Table):
    source: _text(_source)
    target: _text(_target) = "e_form"
    fold: _int(0, 4) = 0
    fraction: _num(gt=0.0, le=1.0) = 1.0
    val_fraction: _num(gt=0.0, le=0.5) = 0.1
    seed: _int(0) = 0
    test_limit: _int(0) = 0


class ModelCfg(_Table):
    pretrained: Pretrained = "0.3.0"
    init: _text(_init) = ""


class FinetuneCfg(_Table):
    mode: Mode
    refit_atomref: bool = True  # the loader's default follows model.init: no refit from a checkpoint
    backbone_lr: Optional[_num(gt=0.0, le=1.0)] = None
    lr_factors: dict[LrGroup, LrFactor] = Field(default_factory=dict)
    unfreeze_every: _int(0) = 0

    @field_validator("lr_factors")
    @classmethod
    def _in_group_order(cls, v: dict[str, float]) -> dict[str, float]:
        return {g: v[g] for g in LR_GROUPS if g in v}

    def __hash__(self) -> int:  # the dict field would make the generated hash fail
        return hash((self.mode, self.refit_atomref, self.backbone_lr, tuple(self.lr_factors.items()), self.unfreeze_every))


class OptimCfg(_Table):
    optimizer: Optimizer = "adam"
    lr: _num(gt=0.0, le=1.0)
    weight_decay: _num(ge=0.0, le=1.0) = 0.0
    scheduler: Scheduler = "none"


class TrainCfg(_Table):
    epochs: _int(1, 10000)
    batch_size: _int(1, 4096) = 16
    patience: _int(0) = 0
    device: _text(_device) = "auto"
    seed: _int(0, 2**32 - 1) = 0  # numpy's seed range
    loss: Loss = "mse"


class Preset(_Table):
    """A validated preset. ``path`` (the file it came from) and ``lines`` (key -> line)
    are not part of its value: equal presets from two files compare equal."""

    run: RunCfg
    data: DataCfg
    model: ModelCfg = ModelCfg()
    finetune: FinetuneCfg
    optim: OptimCfg
    train: TrainCfg
    _path: Optional[str] = PrivateAttr(default=None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _refit_default(cls, d: Any) -> Any:
        """``finetune.refit_atomref`` defaults to true from pretrained weights, false from a checkpoint."""
        if isinstance(d, dict) and isinstance(d.get("finetune"), dict) and "refit_atomref" not in d["finetune"]:
            model = d.get("model", {})
            init = model.get("init", "") if isinstance(model, dict) else ""
            if isinstance(init, str):
                d = {**d, "finetune": {**d["finetune"], "refit_atomref": init == ""}}
        return d

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def lines(self) -> dict[str, int]:
        return self._lines

    @property
    def name(self) -> str:
        return self.run.name

    def _key(self) -> tuple:
        return (self.run, self.data, self.model, self.finetune, self.optim, self.train)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preset):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def located(self, path: str | None, lines: dict[str, int]) -> "Preset":
        """The same preset, said to come from ``path`` with the key -> line map ``lines``."""
        new = self.model_copy()
        new._path = path
        new._lines = dict(lines)
        return new

    def to_dict(self) -> dict[str, Any]:
        """All resolved values as nested plain dicts (JSON and TOML serialisable).

        ``finetune.backbone_lr`` is left out when unset, and ``model.pretrained``
        when ``model.init`` is set (the checkpoint fixes the model then, and a
        preset may not name both), so ``preset_from_dict(p.to_dict()) == p``.
        """
        d = {sec: getattr(self, sec).model_dump() for sec in SECTIONS}
        if self.model.init:
            del d["model"]["pretrained"]
        if self.finetune.backbone_lr is None:
            del d["finetune"]["backbone_lr"]
        return d

    def line_of(self, field: str) -> int | None:
        """Line of ``field`` ("data.target") in the source file: the key's line,
        else its table's header line, else ``None``."""
        return line_of(self._lines, field)

    def error(self, field: str, message: str) -> PresetError:
        return PresetError(self._path or "<preset>", self.line_of(field), field, message)

    def with_changes(self, changes: dict[str, object]) -> "Preset":
        """A new validated preset with ``{"section.key": value}`` changes applied.

        ``None`` (or ``""`` for a number) removes a key so its default applies.
        Strings given for number or boolean fields are converted when they
        parse ("1e-4", "8", "true"; pydantic's lax mode), so form inputs can be
        passed as they are. Changing ``model.init`` drops ``model.pretrained``
        (unless it is changed too) and lets ``finetune.refit_atomref`` follow
        its default again if it was at the default before. Raises
        :class:`PresetErrors` (file ``"<form>"``, the field names as given)
        when a value is invalid.
        """
        d = self.to_dict()
        errors: list[PresetError] = []
        old_init = self.model.init
        for key, value in changes.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) not in (2, 3) or not all(parts):
                errors.append(PresetError("<form>", None, str(key), "expected a field name like optim.lr"))
                continue
            table = d.setdefault(parts[0], {})
            if len(parts) == 3:
                sub = table.setdefault(parts[1], {})
                if not isinstance(sub, dict):
                    errors.append(PresetError("<form>", None, key, "not a table"))
                    continue
                table, name = sub, parts[2]
            else:
                name = parts[1]
            value = coerce_form_value(".".join(parts[:2]), value)
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


SECTION_MODELS: dict[str, type[_Table]] = {
    name: info.annotation for name, info in Preset.model_fields.items()  # type: ignore[misc]
}
SECTIONS: dict[str, tuple[str, ...]] = {sec: tuple(m.model_fields) for sec, m in SECTION_MODELS.items()}
OPTIONAL_SECTIONS = tuple(sec for sec, info in Preset.model_fields.items() if not info.is_required())


# --------------------------------------------------------------------------- cross-field rules


def _cross_field(d: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between fields, as (field, message), on the raw tables (checked after the types)."""
    def table(sec: str) -> dict[str, Any]:
        t = d.get(sec)
        return t if isinstance(t, dict) else {}

    data, model, ft = table("data"), table("model"), table("finetune")
    out: list[tuple[str, str]] = []
    init = model.get("init")
    if isinstance(init, str) and init and "pretrained" in model:
        out.append(("model.init", "cannot be combined with model.pretrained (the checkpoint already fixes the model); "
                                  "remove one of them"))
    # head mode trains only the readout head: the backbone options make no sense there
    if ft.get("mode") == "head":
        full_only = 'only allowed when finetune.mode = "full"'
        if ft.get("backbone_lr") is not None:
            out.append(("finetune.backbone_lr", full_only))
        if ft.get("lr_factors"):
            out.append(("finetune.lr_factors", full_only))
        unfreeze = ft.get("unfreeze_every")
        if isinstance(unfreeze, int) and not isinstance(unfreeze, bool) and unfreeze > 0:
            out.append(("finetune.unfreeze_every", full_only))
    target = data.get("target", DEMO_TARGET)
    if data.get("source") == DEMO_SOURCE and isinstance(target, str) and target != DEMO_TARGET:
        out.append(("data.target", f'the demo data has only the target "{DEMO_TARGET}", got {show_value(target)}'))
    return out


# --------------------------------------------------------------------------- pydantic errors in TOML words


def _unpack(tp: Any, meta: Iterable[Any] = ()) -> tuple[Any, list[Any]]:
    """The base type of an annotation and its constraints (Annotated and Optional unwrapped)."""
    found = list(meta)
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            for e in extra:
                found.extend(e.metadata if isinstance(e, FieldInfo) else [e])
        elif get_origin(tp) in _UNIONS and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                break
            tp = rest[0]
        else:
            return tp, found
    return tp, found  # pragma: no cover


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _want(tp: Any, meta: list[Any]) -> str | None:
    """What a field expects, in TOML words: "an integer from 0 to 4", "a number in (0, 1]"."""
    lo = hi = None
    lo_open = hi_open = False
    for m in meta:
        if isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(f'"{o}"' for o in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        if lo is not None and hi is not None:
            return f"an integer from {lo} to {hi}"
        return f"an integer >= {lo}" if lo is not None else "an integer"
    if tp is float:
        if hi is None:
            return f"a number {'>' if lo_open else '>='} {_fmt(lo)}" if lo is not None else "a number"
        return f"a number in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if tp is str:
        return "a string"
    if get_origin(tp) is dict:
        return "an inline table like { embedding = 0.1, readout = 1.0 }"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a table"
    return None


def _field_type(loc: tuple[Any, ...]) -> tuple[Any, list[Any]] | None:
    """The annotation and constraints of the field at a pydantic location (None if unknown)."""
    tp: Any = Preset
    meta: list[Any] = []
    for part in loc:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp, meta = _unpack(info.annotation, info.metadata)
        elif get_origin(tp) is dict:
            if part == "[key]":
                tp, meta = _unpack(get_args(tp)[0])
            else:
                tp, meta = _unpack(get_args(tp)[1])
        else:
            return None
    return tp, meta


def _message(err: dict[str, Any]) -> tuple[str, str]:
    """(field, message) for one pydantic error: the dotted key and what a TOML author needs to read."""
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if loc and loc[-1] == "[key]":  # a key of a table with fixed key names (lr_factors)
        field = ".".join(str(p) for p in loc[:-1])
        table = _field_type(loc[:-2])  # the dict; its key type lists the names
        keys = _unpack(get_args(table[0])[0])[0] if table and get_origin(table[0]) is dict else None
        allowed = ", ".join(get_args(keys)) if get_origin(keys) is Literal else ""
        return field, f"unknown group (allowed: {allowed})"
    field = ".".join(str(p) for p in loc)
    if kind == "missing":
        return field, "missing required section" if len(loc) == 1 else "missing required key"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return field, f"unknown section (allowed: {', '.join(SECTIONS)})"
        parent = _field_type(loc[:-1])
        keys = tuple(parent[0].model_fields) if parent and isinstance(parent[0], type) else ()
        return field, f"unknown key (allowed: {', '.join(keys)})"
    if kind in ("value_error", "assertion_error"):
        return field, str((err.get("ctx") or {}).get("error") or err["msg"])
    found = _field_type(loc)
    want = _want(*found) if found else None
    if want is None:
        return field, err["msg"][:1].lower() + err["msg"][1:]
    if len(loc) == 1 and want == "a table":
        return field, f"expected a table [{field}], got {show_value(value)}"
    return field, f"expected {want}, got {show_value(value)}"


def _errors(exc: ValidationError, path: str, lines: dict[str, int], prefix: str = "") -> list[PresetError]:
    out = []
    for err in exc.errors(include_url=False):
        field, message = _message(err)
        field = prefix + field if field else prefix.rstrip(".") or "preset"
        out.append(PresetError(path, line_of(lines, field), field, message))
    return out


@functools.lru_cache(maxsize=None)
def _adapter(field: str) -> TypeAdapter | None:
    sec, _, key = field.partition(".")
    model = SECTION_MODELS.get(sec)
    info = model.model_fields.get(key) if model is not None else None
    if info is None:
        return None
    tp = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(tp, config=ConfigDict(strict=True))


def check_field(field: str, value: Any) -> Any:
    """Validate one ``"section.key"`` value as a preset file would give it (strict).

    Returns the value; raises ``KeyError`` for an unknown field and ``ValueError``
    with the TOML-worded message for a bad value.
    """
    adapter = _adapter(field)
    if adapter is None:
        raise KeyError(field)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        err = {**err, "loc": (*field.split("."), *err["loc"])}
        raise ValueError(_message(err)[1]) from None


def coerce_form_value(field: str, value: Any) -> Any:
    """A string typed into a form, as the field's type when it parses (pydantic's lax mode).

    ``""`` for a number or flag means "unset" (``None``). Anything that does not
    parse is returned unchanged, so the strict check reports it in TOML words.
    """
    found = _field_type(tuple(field.split("."))) if field.count(".") == 1 else None
    if found is None or not isinstance(value, str) or found[0] not in _LAX:
        return value
    s = value.strip()
    if s == "":
        return None
    try:  # the type only: the range is checked by the strict schema, which names the value
        return _LAX[found[0]].validate_python(s, strict=False)
    except ValidationError:
        return value


_LAX = {tp: TypeAdapter(tp) for tp in (int, float, bool)}
_coerce_form_value = coerce_form_value  # the name tui_ft.tui.form knew


def _build(d: Any, path: str, lines: dict[str, int]) -> Preset:
    """Validate a parsed TOML document (nested dicts) and build a :class:`Preset`."""
    if not isinstance(d, dict):
        raise PresetError(path, None, "preset", f"expected a table of sections, got {show_value(d)}")
    if isinstance(d.get("stage"), list):
        raise PresetError(
            path,
            line_of(lines, "stage"),
            "stage",
            "this is a plan (it has top-level [[stage]] tables), not a preset: load it with the plan loader",
        )
    errors: list[PresetError] = []
    preset: Preset | None = None
    try:
        preset = Preset.model_validate(d)
    except ValidationError as exc:
        errors = _errors(exc, path, lines)
    bad = {e.field for e in errors}
    for field, message in _cross_field(d):
        if field not in bad and not any(field.startswith(b + ".") for b in bad):
            errors.append(PresetError(path, line_of(lines, field), field, message))
    if errors or preset is None:
        errors.sort(key=lambda e: -1 if e.line is None else e.line)
        if len(errors) == 1:
            raise errors[0]
        raise PresetErrors(errors)
    return preset.located(None if path == "<form>" else path, lines)


# --------------------------------------------------------------------------- parsing


def parse_preset(text: str, path: str = "<string>") -> Preset:
    """Parse and validate preset TOML text. Raises PresetError / PresetErrors."""
    path = os.fspath(path)
    try:
        data, lines = parse_toml(text, path)
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    return _build(data, path, lines)


def load_preset(path: str | os.PathLike[str]) -> Preset:
    """Read and validate a preset file. The error file name is ``path`` as given."""
    name = os.fspath(path)
    try:
        text = read_text(name, "preset")
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    return parse_preset(text, name)


def preset_from_dict(d: dict, path: str = "<dict>", lines: dict[str, int] | None = None) -> Preset:
    """Validate nested dicts (as ``tomllib`` would give) and build a Preset."""
    return _build(d, path, dict(lines or {}))


def is_plan_text(text: str) -> bool:
    """True if the TOML text has a top-level ``[[stage]]`` array (a plan, not a preset)."""
    try:
        data, _ = parse_toml(text)
    except TomlFileError:
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
