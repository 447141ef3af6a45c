"""Plans: several presets run one after another as one unit (e.g. LP-FT).

A plan is a TOML file with a ``[plan]`` table and ordered ``[[stage]]`` tables::

    [plan]
    name = "lpft"
    description = "Head first, then the whole network from the head's best checkpoint."

    [[stage]]
    preset = "presets/run1.toml"           # a preset file (relative to the current directory)
    continue_if = "best_val_mae < 0.3"     # gate, checked after the stage has finished

    [[stage]]
    preset = "presets/run2.toml"
    init = "previous@best"                 # the best checkpoint of the stage before
    [stage.set]                            # overrides, applied with Preset.with_changes
    "optim.lr" = 1e-5

A stage names a preset file with ``preset`` *or* carries the preset inline as
``[stage.run]``, ``[stage.data]``, ``[stage.finetune]``, ... (the preset schema,
validated by :func:`tui_ft.core.config.presets.preset_from_dict`). Optional keys:

* ``init``: where the stage's weights come from: ``"previous@best"`` /
  ``"previous@last"`` (the stage before, resolved when the stage starts) or any
  library reference (``"run1@best"``, a run id, a ``.pt`` path). It replaces
  the preset's ``model.init``; ``finetune.refit_atomref`` then follows its
  default for a checkpoint start (no refit) unless the preset sets it.
* ``continue_if``: ``"<metric> <op> <number>"`` with metric ``val_mae`` (last
  epoch), ``best_val_mae``, ``test_mae`` or ``train_mae`` (last epoch) and op
  ``<``, ``<=``, ``>``, ``>=``. Parsed by a tiny parser, never evaluated as
  code. When the gate is not met the plan ends there, counted as finished.
* ``set``: ``{"section.key" = value}`` overrides of the stage's preset.

Every stage is an ordinary run in the library (``logs/<run_id>/``,
``checkpoints/<run_id>/``) with the plan name and stage number in its
``run_started`` event and checkpoint metadata, and its parent set to the
checkpoint it started from.

Running a plan, its state (``logs/.plans/<plan-name>/state.json``), resume and
the one-run-at-a-time lock are :mod:`tui_ft.core.orchestrate.plan_runner`.

This module does not import torch or textual at import time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_ft.core.common.paths import Paths
from tui_ft.core.config.presets import SECTIONS, Preset, check_field, load_preset, preset_from_dict
from tui_ft.core.config.fields import PresetError, PresetErrors, check_name, show_value
from tui_ft.core.config.dump import check_resources
from tui_ft.core.config.tomlfile import TomlFileError, locate_lines, parse_toml, read_text
from tui_ft.core.config.tomlfile import line_of as _line_of

__all__ = [
    "Gate",
    "Stage",
    "Plan",
    "GATE_METRICS",
    "GATE_OPS",
    "parse_gate",
    "parse_plan",
    "load_plan",
    "check_plan",
]

GATE_METRICS = ("val_mae", "best_val_mae", "test_mae", "train_mae")
GATE_OPS = ("<", "<=", ">", ">=")
PREVIOUS = "previous"
STAGE_KEYS = ("preset", "init", "continue_if", "set")
PLAN_KEYS = ("name", "description")
_GATE_SHAPE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_STAGE_HEADER = re.compile(r"[ \t]*\[\[[ \t]*stage[ \t]*\]\][ \t]*(#.*)?")
_GATE_WANT = (
    "expected '<metric> <op> <number>' with metric one of "
    + ", ".join(GATE_METRICS)
    + " and op one of "
    + ", ".join(GATE_OPS)
    + ', e.g. "best_val_mae < 0.3"'
)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Gate:
    """``continue_if``: go on to the next stage only if ``metric op value``."""

    metric: str
    op: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"

    def holds(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """(met, explanation). A metric the stage did not produce fails the gate."""
        got = metrics.get(self.metric)
        if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got):
            return False, f"{self.metric} is not available for this stage, so {self.text} is not met"
        ok = {
            "<": got < self.value,
            "<=": got <= self.value,
            ">": got > self.value,
            ">=": got >= self.value,
        }[self.op]
        return ok, f"{self.metric} = {got:.4f}, {self.text} {'is met' if ok else 'is not met'}"


@dataclass(frozen=True)
class Stage:
    number: int  # 1-based
    preset: Preset  # validated, overrides applied, model.init = the stage's init (if any)
    source: str  # the preset file as written in the plan, or "inline"
    init: str = ""  # "" | "previous@best" | "previous@last" | a library reference
    gate: Gate | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # in the plan file

    @property
    def fingerprint(self) -> str:
        """What the stage would run; a finished stage is reused on resume only if it is unchanged."""
        blob = json.dumps({"preset": self.preset.to_dict(), "init": self.init}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    stages: tuple[Stage, ...]
    path: str
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------- gate


def parse_gate(text: Any) -> Gate:
    """Parse ``"<metric> <op> <number>"``. Raises ``ValueError`` with a message saying what was expected."""
    if not isinstance(text, str):
        raise ValueError(f"{_GATE_WANT}; got {show_value(text)}")
    m = _GATE_SHAPE.fullmatch(text)
    if not m:
        raise ValueError(f"{_GATE_WANT}; got {show_value(text)}")
    metric, op, num = m.groups()
    if metric not in GATE_METRICS:
        raise ValueError(f"{_GATE_WANT}; unknown metric {show_value(metric)} in {show_value(text)}")
    if not _NUMBER.fullmatch(num):
        raise ValueError(f"{_GATE_WANT}; {show_value(num)} is not a number")
    value = float(num)
    if not math.isfinite(value):  # "1e999"
        raise ValueError(f"{_GATE_WANT}; the number must be finite")
    return Gate(metric, op, value)


# --------------------------------------------------------------------------- line locator


def _plan_lines(text: str, top: dict[str, int], n_stages: int) -> list[dict[str, int]]:
    """Per stage, a map of stage-local keys (``""`` = the ``[[stage]]`` header,
    ``preset``, ``run.name``, ``set.optim.lr``, ...), from the plan's ``top`` map."""
    raw = text.splitlines()
    starts = [i for i, line in enumerate(raw) if _STAGE_HEADER.fullmatch(line)]
    if len(starts) != n_stages:  # stages written some other way: fall back to the first header
        return [{"": top["stage"]} if "stage" in top else {} for _ in range(n_stages)]
    out: list[dict[str, int]] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(raw)
        seg = locate_lines("\n".join(raw[start:end]))
        local: dict[str, int] = {}
        for key, line in seg.items():
            if key == "stage":
                local[""] = line + start
            elif key.startswith("stage."):
                local[key[len("stage.") :]] = line + start
        out.append(local)
    return out


def _line(lines: dict[str, int], key: str) -> int | None:
    """The key's line in a plan map; in a stage map, the stage header's line when the key is absent."""
    return _line_of(lines, key, lines.get(""))


# --------------------------------------------------------------------------- parsing


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key.count(".") < 2 and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _find_preset_file(name: str) -> Path | None:
    p = Path(name).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path.cwd(), Paths.default().root):
        if (base / p).is_file():
            return p if base == Path.cwd() else base / p
    return None


def _with_changes(preset: Preset, changes: dict[str, Any]) -> Preset:
    """``Preset.with_changes`` that keeps the source file and line map of ``preset``."""
    return preset.with_changes(changes).located(preset.path, preset.lines)


def _check_set(sec_key: str, value: Any) -> str | None:
    """Pre-check one override name and value (strict: no strings for numbers); None if fine."""
    parts = sec_key.split(".")
    if len(parts) not in (2, 3) or parts[0] not in SECTIONS or parts[1] not in SECTIONS[parts[0]]:
        known = ", ".join(f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys if (s, k) != ("model", "init"))
        return f"unknown field (allowed: {known})"
    if parts[:2] == ["model", "init"]:
        return 'set the stage\'s starting checkpoint with the stage key init = "...", not in [stage.set]'
    if len(parts) == 3:
        if parts[:2] != ["finetune", "lr_factors"]:
            return f"{parts[0]}.{parts[1]} is not a table"
        return None  # group and value are checked by the preset schema
    try:
        check_field(sec_key, value)
    except ValueError as exc:
        return str(exc)
    return None


def _build_stage(
    k: int, raw: Any, path: str, lines: dict[str, int], n: int, errors: list[PresetError]
) -> Stage | None:
    where = f"stage[{k}]"

    def err(key: str, msg: str) -> None:
        errors.append(PresetError(path, _line(lines, key), f"{where}.{key}" if key else where, msg))

    if not isinstance(raw, dict):
        err("", f"expected a table [[stage]], got {show_value(raw)}")
        return None
    n_before = len(errors)
    sections = [s for s in raw if s in SECTIONS]
    for key in raw:
        if key not in STAGE_KEYS and key not in SECTIONS:
            err(key, f"unknown key (allowed: {', '.join(STAGE_KEYS)}, or the preset tables {', '.join(SECTIONS)})")

    # gate
    gate = None
    if "continue_if" in raw:
        try:
            gate = parse_gate(raw["continue_if"])
        except ValueError as exc:
            err("continue_if", str(exc))
        else:
            if k == n:
                err("continue_if", "the last stage has no next stage to gate; remove continue_if")

    # init
    init = ""
    if "init" in raw:
        v = raw["init"]
        if not isinstance(v, str) or not v.strip():
            err("init", f'expected "previous@best", "previous@last" or a checkpoint reference, got {show_value(v)}')
        elif v.startswith(f"{PREVIOUS}@"):
            if v not in (f"{PREVIOUS}@best", f"{PREVIOUS}@last"):
                err("init", f'expected "previous@best" or "previous@last", got {show_value(v)}')
            elif k == 1:
                err("init", "the first stage has no previous stage; use a checkpoint reference or leave init out")
            else:
                init = v
        else:
            try:
                init = check_field("model.init", v)
            except ValueError as exc:
                err("init", str(exc))

    # overrides
    changes: dict[str, Any] = {}
    if "set" in raw:
        s = raw["set"]
        if not isinstance(s, dict):
            err("set", f'expected a table of overrides like {{ "optim.lr" = 1e-5 }}, got {show_value(s)}')
        else:
            for key, value in _flatten(s).items():
                problem = _check_set(key, value)
                if problem:
                    err(f"set.{key}", problem)
                else:
                    changes[key] = value

    # the preset
    preset: Preset | None = None
    source = "inline"
    if "preset" in raw and sections:
        err("preset", f"give either preset = \"FILE\" or inline preset tables, not both (found [stage.{sections[0]}])")
    elif "preset" in raw:
        v = raw["preset"]
        if not isinstance(v, str) or not v:
            err("preset", f"expected the path of a preset file, got {show_value(v)}")
        else:
            source = v
            found = _find_preset_file(v)
            if found is None:
                looked = f"looked in {Path.cwd()}"
                root = Paths.default().root
                if root != Path.cwd().resolve():
                    looked += f" and {root}"
                err("preset", f"preset file {show_value(v)} not found ({looked})")
            else:
                try:
                    preset = load_preset(str(found))
                except PresetError as exc:
                    errors.extend(exc.errors)  # they name the preset file and its lines
    elif sections:
        d = {s: raw[s] for s in sections}
        local = {key: line for key, line in lines.items() if key}
        try:
            preset = preset_from_dict(d, path, local)
        except PresetError as exc:
            for e in exc.errors:
                line = e.line if e.line is not None else _line(lines, "")
                errors.append(PresetError(e.file, line, f"{where}.{e.field}", e.message))
    else:
        err("", "expected preset = \"FILE\" or inline preset tables ([stage.run], [stage.data], [stage.finetune], "
                "[stage.optim], [stage.train])")

    if preset is None or len(errors) > n_before:
        return None

    # apply init and overrides to the preset
    all_changes = dict(changes)
    if init:
        all_changes["model.init"] = init
        explicit_refit = "finetune.refit_atomref" in changes or (
            "finetune.refit_atomref" in preset.lines if source != "inline" else "refit_atomref" in raw.get("finetune", {})
        )
        if explicit_refit and "finetune.refit_atomref" not in changes:
            all_changes["finetune.refit_atomref"] = preset.finetune.refit_atomref
    if all_changes:
        try:
            preset = _with_changes(preset, all_changes)
        except PresetError as exc:
            for e in exc.errors:
                key = f"set.{e.field}" if e.field in changes else ("init" if e.field == "model.init" and init else "set")
                errors.append(PresetError(path, _line(lines, key), f"{where}.{key}", e.message))
            return None
    return Stage(k, preset, source, init, gate, changes, _line(lines, ""), dict(lines))


def parse_plan(text: str, path: str = "<string>") -> Plan:
    """Parse and validate plan TOML text. Raises PresetError / PresetErrors."""
    path = os.fspath(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data, top = parse_toml(text, path)
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    raw_stages = data.get("stage")
    n = len(raw_stages) if isinstance(raw_stages, list) else 0
    stage_lines = _plan_lines(text, top, n)
    errors: list[PresetError] = []

    def err(key: str, msg: str) -> None:
        errors.append(PresetError(path, _line(top, key), key, msg))

    for key in data:
        if key not in ("plan", "stage"):
            hint = " (preset tables belong inside a stage: [stage.run], ...)" if key in SECTIONS else ""
            err(key, f"unknown key (allowed: [plan] and [[stage]]){hint}")
    name, description = "", ""
    plan_t = data.get("plan")
    if plan_t is None:
        errors.append(PresetError(path, 1 if text.strip() else None, "plan", 'missing required table [plan] with name = "..."'))
    elif not isinstance(plan_t, dict):
        err("plan", f"expected a table [plan], got {show_value(plan_t)}")
    else:
        for key in plan_t:
            if key not in PLAN_KEYS:
                err(f"plan.{key}", f"unknown key (allowed: {', '.join(PLAN_KEYS)})")
        if "name" not in plan_t:
            err("plan.name", "missing required key")
        else:
            try:
                name = check_name(plan_t["name"])
            except ValueError as exc:
                err("plan.name", str(exc))
        d = plan_t.get("description", "")
        if not isinstance(d, str):
            err("plan.description", f"expected a string, got {show_value(d)}")
        else:
            description = d

    stages: list[Stage] = []
    if isinstance(raw_stages, dict):
        err("stage", "expected [[stage]] tables (double brackets), one per stage; got a single [stage] table")
    elif not isinstance(raw_stages, list) or not raw_stages:
        line = _line(top, "stage") or top.get("plan")
        errors.append(PresetError(path, line, "stage", "a plan needs at least one [[stage]] table"))
    else:
        for k, raw in enumerate(raw_stages, start=1):
            st = _build_stage(k, raw, path, stage_lines[k - 1], n, errors)
            if st is not None:
                stages.append(st)

    if errors:
        if len(errors) == 1:
            raise errors[0]
        errors.sort(key=lambda e: (e.file != path, e.line or 0))
        raise PresetErrors(errors)
    return Plan(name, description, tuple(stages), path, top)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file. Raises PresetError / PresetErrors naming the file and line."""
    name = os.fspath(path)
    try:
        text = read_text(name, "plan")
    except TomlFileError as exc:
        raise PresetError.from_toml(exc) from None
    return parse_plan(text, name)


# --------------------------------------------------------------------------- resources


def check_plan(plan: Plan, *, paths: Paths | None = None) -> None:
    """Check what each stage needs from the file system (data files, target columns,
    ``init`` checkpoints). ``previous@...`` is resolved only when the stage starts.
    Raises PresetError / PresetErrors with every problem found."""
    from tui_ft.core.data.dataset import read_columns
    from tui_ft.core.library.checkpoints import Library

    lib = Library(paths)
    columns: dict[Path, Any] = {}

    def cached_columns(p: Path) -> list[str]:
        key = Path(p).resolve()
        if key not in columns:
            try:
                columns[key] = list(read_columns(p))
            except (ValueError, OSError) as exc:
                columns[key] = exc
        got = columns[key]
        if isinstance(got, Exception):
            raise got
        return got

    errors: list[PresetError] = []
    for st in plan.stages:
        # the stage's own init is checked below at the plan's line; the preset's at its own line
        skip_init = bool(st.init)
        try:
            check_resources(
                st.preset,
                read_columns=cached_columns,
                resolve_init=(lambda ref: None) if skip_init else lib.resolve_ref,
            )
        except PresetError as exc:
            for e in exc.errors:
                if st.source == "inline":
                    e = PresetError(e.file, e.line, f"stage[{st.number}].{e.field}", e.message)
                errors.append(e)
        if st.init and not st.init.startswith(f"{PREVIOUS}@"):
            try:
                lib.resolve_ref(st.init)
            except LookupError as exc:
                msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                errors.append(PresetError(plan.path, _line(st.lines, "init"), f"stage[{st.number}].init", msg))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PresetErrors(errors)
