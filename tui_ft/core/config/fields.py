"""Preset errors (file, line, field) and the value checks and field types of the preset schema."""

from __future__ import annotations

import re
import types
import unicodedata
from typing import Annotated, Any, Callable, Iterable, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
)

from tui_ft.core.common.paths import (
    DEMO_SOURCE,
    MATBENCH_SOURCE,
    MATBENCH_TASKS,
    NAMED_SOURCES,
)
from tui_ft.core.config.tomlfile import TomlFileError


DEMO_TARGET = "e_form"  # the only target column of the demo data
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"
from tui_ft.core.common.paths import NAME_MAX, check_component  # noqa: E402 - the one rule for names

DEMO_TARGET = "e_form"  # the only target column of the demo data


DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"


_REF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


_CUDA_N = re.compile(r"cuda:(0|[1-9][0-9]{0,3})")


_BARE = re.compile(r"[A-Za-z0-9_-]+")


_UNIONS = (Union, types.UnionType)


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

    The same rule as every id that becomes a path (:func:`tui_ft.core.common.paths.check_component`).
    Raises ``ValueError`` with the message for the error line."""
    return check_component(v, NAME_MAX)


def _source(v: str) -> str:
    """``demo``, a Matbench task (``matbench_mp_e_form``, ...) or a path: a Matbench .json/.json.gz
    file, a folder with id_prop.csv, a CSV, or any file ase reads (extxyz, ...). Whether it exists and
    parses is checked by :func:`check_resources` (the format is then told by ``sources.detect_format``)."""
    want = (f'expected "{DEMO_SOURCE}", a Matbench task such as "{MATBENCH_SOURCE}" or a path (a .json/.json.gz '
            "file, a folder with id_prop.csv, a .csv or an extxyz/ase-readable file)")
    if not v.strip():
        raise ValueError(f"{want}, got an empty string")
    if _has_control(v):
        raise ValueError(f"must not contain control characters, got {show_value(v)}")
    if v.startswith("matbench_") and v not in NAMED_SOURCES and "/" not in v and "." not in v:
        tasks = ", ".join(MATBENCH_TASKS)
        raise ValueError(f"{show_value(v)} is not a Matbench regression task on structures (those are: {tasks})")
    return v


def _test_source(v: str) -> str:
    if v == "":
        return v
    return _source(v)


def _unit(v: str) -> str:
    if _has_control(v) or len(v) > 40:
        raise ValueError(f"expected a short unit such as \"eV/atom\", got {show_value(v)}")
    return v


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


def _num(*, gt: float | None = None, ge: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    return Annotated[float, Field(gt=gt, ge=ge, le=le, lt=lt, allow_inf_nan=False)]


def _text(check: Callable[[str], str]) -> Any:
    return Annotated[str, AfterValidator(check)]


LrFactor = _num(gt=0.0, le=10.0)


Optimizer = Literal["adam", "adamw", "sgd"]


Scheduler = Literal["none", "cosine"]


Loss = Literal["mse", "huber", "l1"]


Ddp = Literal["auto", "off"]


Precision = Literal["fp32", "bf16", "fp16"]


Mode = Literal["head", "full"]


Pretrained = Literal["0.3.0", "0.2.0", "r2scan"]


LrGroup = Literal["embedding", "interaction", "readout"]


DataFormat = Literal["auto", "matbench", "idprop", "ase", "csv"]


SplitKind = Literal["matbench", "random", "group"]


TaskKind = Literal["property", "potential"]


FrameFormat = Literal["auto", "ase", "vasp", "mptrj", "mlearn", "asedb"]


Selection = Literal["val_loss", "val_energy_mae", "val_force_mae", "val_stress_mae", "val_magmom_mae"]


WandbMode = Literal["offline", "online", "disabled"]


PRETRAINED_VERSIONS: tuple[str, ...] = get_args(Pretrained)


LR_GROUPS: tuple[str, ...] = get_args(LrGroup)

SWEEP_KINDS = ("log_uniform", "uniform", "int", "choice")
