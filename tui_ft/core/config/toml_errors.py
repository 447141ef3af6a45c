"""Pydantic's errors in TOML words (the dotted key, what a TOML author needs to read), and the
rules of a [sweep] table; root is the schema's top model (tui_ft.core.config.presets.Preset)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Iterable, Literal, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic.fields import FieldInfo

from tui_ft.core.config.tomlfile import line_of


from tui_ft.core.config.fields import (  # noqa: E402
    _UNIONS,
    SWEEP_KINDS,
    PresetError,
    show_value,
)


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


def _field_type(loc: tuple[Any, ...], root: Any) -> tuple[Any, list[Any]] | None:
    """The annotation and constraints of the field at a pydantic location (None if unknown)."""
    tp: Any = root
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


def _message(err: dict[str, Any], root: Any) -> tuple[str, str]:
    """(field, message) for one pydantic error: the dotted key and what a TOML author needs to read."""
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if loc and loc[-1] == "[key]":  # a key of a table with fixed key names (lr_factors)
        field = ".".join(str(p) for p in loc[:-1])
        table = _field_type(loc[:-2], root)  # the dict; its key type lists the names
        keys = _unpack(get_args(table[0])[0])[0] if table and get_origin(table[0]) is dict else None
        allowed = ", ".join(get_args(keys)) if get_origin(keys) is Literal else ""
        return field, f"unknown group (allowed: {allowed})"
    field = ".".join(str(p) for p in loc)
    if kind == "missing":
        return field, "missing required section" if len(loc) == 1 else "missing required key"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return field, f"unknown section (allowed: {', '.join(root.model_fields)})"
        parent = _field_type(loc[:-1], root)
        keys = tuple(parent[0].model_fields) if parent and isinstance(parent[0], type) else ()
        return field, f"unknown key (allowed: {', '.join(keys)})"
    if kind in ("value_error", "assertion_error"):
        return field, str((err.get("ctx") or {}).get("error") or err["msg"])
    found = _field_type(loc, root)
    want = _want(*found) if found else None
    if want is None:
        return field, err["msg"][:1].lower() + err["msg"][1:]
    if len(loc) == 1 and want == "a table":
        return field, f"expected a table [{field}], got {show_value(value)}"
    return field, f"expected {want}, got {show_value(value)}"


def _union_message(err: dict[str, Any], root: Any) -> tuple[str, str] | None:
    """One message for a value that fits no member of a union (pydantic gives one error per member,
    its location ending in the member's type name: ``cluster.extra.a.str``, ``.int``, ``.bool``)."""
    loc = tuple(err["loc"])
    if len(loc) < 2:
        return None
    found = _field_type(loc[:-1], root)
    if not found or get_origin(found[0]) not in _UNIONS:
        return None
    members = [a for a in get_args(found[0]) if a is not type(None)]
    wants = [_want(*_unpack(a)) or getattr(a, "__name__", str(a)) for a in members]
    want = ", ".join(wants[:-1]) + f" or {wants[-1]}" if len(wants) > 1 else wants[0]
    return ".".join(str(p) for p in loc[:-1]), f"expected {want}, got {show_value(err.get('input'))}"


def _errors(exc: ValidationError, path: str, lines: dict[str, int], prefix: str = "", *, root: Any) -> list[PresetError]:
    out = []
    said: set[str] = set()
    for err in exc.errors(include_url=False):
        union = _union_message(err, root)
        if union is not None and union[0] in said:
            continue  # the other members of the same union
        field, message = union or _message(err, root)
        said.add(field)
        field = prefix + field if field else prefix.rstrip(".") or "preset"
        out.append(PresetError(path, line_of(lines, field), _space_field(field), message))
    return out


def _space_field(field: str) -> str:
    """``sweep.space.optim.lr.int`` as written in TOML: ``sweep.space."optim.lr".int`` (the key has a dot)."""
    parts = field.split(".")
    if parts[:2] != ["sweep", "space"] or len(parts) < 4:
        return field
    return ".".join(["sweep", "space", f'"{parts[2]}.{parts[3]}"', *parts[4:]])


def _check_sweep(d: dict[str, Any], *, root: Any, sections: dict[str, tuple[str, ...]], check_field: Callable,
                 cross_field: Callable) -> list[tuple[str, str]]:
    """Problems of a ``[sweep]`` table beyond its types, as (field, message); field is the dotted line key.

    Each searched key must be a preset field (``section.key``, not ``run.name``);
    its value exactly one of ``{ log_uniform = [LOW, HIGH] }``, ``{ uniform = [LOW, HIGH] }``,
    ``{ int = [LOW, HIGH] }``, ``{ choice = [A, B, ...] }``, of a kind that fits the field's
    type, with LOW < HIGH (LOW > 0 for log_uniform), and every bound or choice a valid
    value of the field (checked by the field's own validator, and against the rules
    between fields with the rest of the preset).
    """
    sweep = d.get("sweep")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("space"), dict):
        return []
    out: list[tuple[str, str]] = []
    forms = "{ log_uniform = [LOW, HIGH] }, { uniform = [LOW, HIGH] }, { int = [LOW, HIGH] } or { choice = [A, B, ...] }"
    grid = sweep.get("sampler") == "grid"
    grid_size = 1
    if not sweep["space"]:
        return [("sweep.space", 'expected at least one searched key, like "optim.lr" = { log_uniform = [1e-5, 1e-2] }')]
    for key, spec in sweep["space"].items():
        field = f"sweep.space.{key}"
        sec, _, name = key.partition(".")
        if sec not in sections or name not in sections[sec] or key == "run.name":
            if sec in sections and not name and isinstance(spec, dict) and set(spec) <= set(sections[sec]):
                sub = next(iter(spec), "key")
                out.append((field, f'a dotted key must be quoted here: "{sec}.{sub}" = {{ ... }}'))
                continue
            known = ", ".join(f"{s}.{k}" for s, ks in sections.items() for k in ks if f"{s}.{k}" != "run.name")
            out.append((field, f"unknown preset key {show_value(key)} (searchable: {known})"))
            continue
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SWEEP_KINDS:
            out.append((field, f"expected one of {forms}, got {show_value(spec)}"))
            continue
        kind, values = next(iter(spec.items()))
        field = f"{field}.{kind}"
        if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
            want = "a non-empty array [A, B, ...]" if kind == "choice" else "an array [LOW, HIGH]"
            shown = "[]" if values == [] else show_value(values)
            out.append((field, f"expected {want}, got {shown}"))
            continue
        tp = _field_type((sec, name), root)
        base = tp[0] if tp else None
        is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        if kind in ("log_uniform", "uniform") and base is not float:
            hint = "int = [LOW, HIGH] or choice = [...]" if base is int else "choice = [...]"
            out.append((field, f"{key} is not a real number: use {hint}"))
            continue
        if kind == "int" and base not in (int, float):
            out.append((field, f"{key} is not a number: use choice = [...]"))
            continue
        if kind == "int" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out.append((field, f"expected two integers [LOW, HIGH], got [{', '.join(show_value(v) for v in values)}]"))
            continue
        if kind != "choice":
            if not all(is_num(v) and math.isfinite(v) for v in values):
                out.append((field, f"expected two numbers [LOW, HIGH], got [{', '.join(show_value(v) for v in values)}]"))
                continue
            lo, hi = values
            if not lo < hi:
                out.append((field, f"empty range: LOW must be below HIGH, got [{show_value(lo)}, {show_value(hi)}]"))
                continue
            if kind == "log_uniform" and lo <= 0:
                out.append((field, f"log_uniform needs LOW > 0, got {show_value(lo)}"))
                continue
        elif len(set(map(repr, values))) != len(values):
            out.append((field, f"the choices must differ, got [{', '.join(show_value(v) for v in values)}]"))
            continue
        bad = None
        for v in values:  # each bound / choice as the preset would get it
            try:
                check_field(key, v)
            except ValueError as exc:
                bad = f"{show_value(v)} is not a valid {key}: {exc}"
                break
            trial = {**d, sec: {**(d.get(sec) if isinstance(d.get(sec), dict) else {}), name: v}}
            rules = [m for f, m in cross_field(trial) if f == key]
            if rules:
                bad = f"{key} = {show_value(v)}: {rules[0]}"
                break
        if bad:
            out.append((field, bad))
            continue
        if grid:
            if kind in ("log_uniform", "uniform"):
                out.append((field, 'sampler = "grid" needs int = [LOW, HIGH] or choice = [...] ranges'))
                continue
            grid_size *= len(values) if kind == "choice" else values[1] - values[0] + 1
    trials = sweep.get("trials", 20)
    if grid and not out and isinstance(trials, int) and trials > grid_size:
        out.append(("sweep.trials", f'sampler = "grid": the space has {grid_size} points, got trials = {trials}'))
    return out
