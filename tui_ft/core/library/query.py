"""Run filters: ``finetune.mode = full and optim.lr < 1e-4 and not status = failed``.

A filter is comparisons of a *field* with a *value*, combined with ``and``, ``or``, ``not``
and parentheses (``not`` binds tightest, then ``and``, then ``or``). It is parsed with
pyparsing's infix-notation grammar (never ``eval``); a syntax error or an unknown field
raises :class:`FilterError` naming its column.

Fields are a run's resolved preset keys (``optim.lr``, ``finetune.mode``, ``data.fold``,
``task.force_weight``, ...) and its results (:func:`run_record`: ``status``, ``preset``,
``run_id``, ``test_mae``, ``best_val_mae``, ``best_epoch``, ``epoch``, ``epochs``,
``elapsed``, ``device``, ``plan``, ``stage``, ``parent``, and a finished potential's
``test_energy_mae``, ``test_force_mae``, ...). Operators:

- ``=`` (or ``==``) and ``!=``: numbers compare as numbers (``optim.lr = 1e-3`` matches
  ``0.001``), ``true``/``false`` as booleans, anything else as text;
- ``<``, ``<=``, ``>``, ``>=``: numbers only;
- ``~`` and ``!~``: a glob pattern (``preset ~ lpft*``, ``run_id ~ "*-2026*"``).

Values are numbers, words (``full``, ``lpft*``) or quoted text (``"a b"``). A run that
lacks a field (a property run has no ``task.force_weight``) matches no comparison on it,
so ``not`` of one matches it.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyparsing as pp

OPS = ("<=", ">=", "!=", "==", "!~", "=", "<", ">", "~")
ORDER_OPS = ("<", "<=", ">", ">=")

# result fields every run has (the preset's keys come from its run_started event)
RESULT_FIELDS = (
    "run_id", "preset", "status", "device", "epoch", "epochs", "best_epoch", "best_val_mae", "test_mae",
    "elapsed", "started", "plan", "stage", "parent", "n_train", "n_val", "n_test", "unit",
)


class FilterError(ValueError):
    """A filter that does not parse, or names an unknown field: ``column`` is 1-based."""

    def __init__(self, message: str, column: int, text: str = ""):
        super().__init__(message)
        self.message, self.column, self.text = message, column, text

    def __str__(self) -> str:
        return f"filter, column {self.column}: {self.message}"

    def pointer(self) -> str:
        """The filter with a caret under the column (two lines)."""
        return f"{self.text}\n{' ' * (self.column - 1)}^"


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: Any  # float, bool or str
    column: int  # of the field
    value_column: int

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.field not in record:
            return False
        got = record[self.field]
        if got is None:
            return False
        op, want = self.op, self.value
        if op in ("~", "!~"):
            hit = fnmatch.fnmatchcase(_text(got), _text(want))
            return hit if op == "~" else not hit
        if op in ORDER_OPS:
            x = _number(got)
            if x is None or math.isnan(x):
                return False
            return {"<": x < want, "<=": x <= want, ">": x > want, ">=": x >= want}[op]
        same = _equal(got, want)
        return same if op in ("=", "==") else not same


@dataclass(frozen=True)
class Node:
    op: str  # "and" | "or" | "not"
    parts: tuple

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.op == "not":
            return not self.parts[0].matches(record)
        if self.op == "and":
            return all(p.matches(record) for p in self.parts)
        return any(p.matches(record) for p in self.parts)


def _text(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    return None


def _equal(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool) and got == want
    if isinstance(want, float):
        x = _number(got)
        if x is not None:
            return x == want or math.isclose(x, want, rel_tol=1e-12, abs_tol=0.0)
        return _text(got) == _text(want)
    return _text(got) == want


def _column(s: str, loc: int) -> int:
    """The 1-based column of the first character at or after ``loc`` that is not a space
    (a located token's start includes the spaces before it)."""
    rest = s[loc:]
    return loc + len(rest) - len(rest.lstrip()) + 1


def _grammar() -> pp.ParserElement:
    and_, or_, not_ = pp.CaselessKeyword("and"), pp.CaselessKeyword("or"), pp.CaselessKeyword("not")
    keyword = and_ | or_ | not_
    name = ~keyword + pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
    name.set_name("a field (optim.lr, status, test_mae, ...)")
    op = pp.Regex("|".join(pp.re.escape(o) for o in OPS)).set_name("an operator (= != < <= > >= ~ !~)")
    number = pp.Regex(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?(?![A-Za-z0-9_.*?\[\]/:+-])")
    number.set_parse_action(lambda t: float(t[0]))
    boolean = (pp.CaselessKeyword("true") | pp.CaselessKeyword("false")).set_parse_action(lambda t: t[0].lower() == "true")
    quoted = pp.QuotedString('"', esc_char="\\") | pp.QuotedString("'", esc_char="\\")
    word = ~keyword + pp.Regex(r"[A-Za-z0-9_.*?\[\]/:+@-]+")
    value = (number | boolean | quoted | word).set_name("a value (a number, a word or quoted text)")
    loc_value = pp.Located(value)

    def comparison(s: str, loc: int, t: pp.ParseResults) -> Comparison:
        field_loc, (field_name,), _, o, vstart, (v,), _ = t
        col = _column(s, field_loc)
        vcol = _column(s, vstart)
        if o in ORDER_OPS and not isinstance(v, float):
            raise FilterError(f"{field_name} {o} needs a number, got {v!r}", vcol, s)
        if o in ("~", "!~"):
            v = _text(v) if not isinstance(v, str) else v
        return Comparison(field_name, "=" if o == "==" else o, v, col, vcol)

    # "-": once a field is read, a missing operator or value is the error (no backtracking)
    cmp = (pp.Located(name) - op - loc_value).set_parse_action(comparison).set_name("a comparison")

    def node(kind: str):
        def act(t: pp.ParseResults) -> Node:
            items = t[0]
            if kind == "not":
                return Node("not", (items[1],))
            return Node(kind, tuple(items[0::2]))

        return act

    return pp.infix_notation(cmp, [
        (not_, 1, pp.OpAssoc.RIGHT, node("not")),
        (and_, 2, pp.OpAssoc.LEFT, node("and")),
        (or_, 2, pp.OpAssoc.LEFT, node("or")),
    ])


_GRAMMAR: pp.ParserElement | None = None


@dataclass(frozen=True)
class Filter:
    """A parsed filter: :meth:`matches` a record (:func:`run_record`)."""

    text: str
    root: Any  # Comparison | Node

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self.root.matches(record)

    def comparisons(self) -> list[Comparison]:
        out, todo = [], [self.root]
        while todo:
            n = todo.pop()
            if isinstance(n, Comparison):
                out.append(n)
            else:
                todo.extend(n.parts)
        return sorted(out, key=lambda c: c.column)

    def check_fields(self, known: Iterable[str]) -> None:
        """Raise :class:`FilterError` at the first field that is not in ``known``."""
        known = set(known)
        for c in self.comparisons():
            if c.field not in known:
                near = difflib.get_close_matches(c.field, sorted(known), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(near)}?" if near else " (fields: preset keys such as optim.lr, and " \
                    + ", ".join(RESULT_FIELDS[:6]) + ", ...)"
                raise FilterError(f"unknown field {c.field!r}{hint}", c.column, self.text)


def parse_filter(text: str) -> Filter:
    """Parse a filter; :class:`FilterError` with the column of the first problem."""
    global _GRAMMAR
    if not text.strip():
        raise FilterError("empty filter", 1, text)
    if _GRAMMAR is None:
        _GRAMMAR = _grammar()
    try:
        result = _GRAMMAR.parse_string(text, parse_all=True)
    except FilterError:
        raise
    except pp.ParseBaseException as exc:
        where = exc.col if exc.loc < len(text) else len(text) + 1
        found = text[exc.loc:].split()[0] if text[exc.loc:].strip() else ""
        expected = _expected(exc)
        msg = f"expected {expected}" + (f", found {found!r}" if found else " at the end")
        raise FilterError(msg, where, text) from None
    return Filter(text, result[0])


def _expected(exc: pp.ParseBaseException) -> str:
    msg = str(exc.msg)
    if msg.startswith("Expected "):
        msg = msg[len("Expected "):]
    if msg.startswith("a comparison") or msg.startswith("{Located:(a field"):
        return "a comparison: a field, an operator and a value (optim.lr < 1e-3)"
    for known in ("an operator", "a value"):
        if known in msg:
            return msg[msg.index(known):].rstrip("}")
    if "end of text" in msg:
        return "and, or, or the end"
    if "Unbalanced" in msg or "parenthes" in msg:
        return "a comparison (field operator value) or a closing ')'"
    return "a comparison: a field, an operator and a value (optim.lr < 1e-3)"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_record(summary: Any, preset: Mapping[str, Any] | None, test_metrics: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A run as a filter sees it: its resolved preset flattened (``optim.lr``), its results
    (:data:`RESULT_FIELDS`) and its named test metrics (``test_force_mae``)."""
    rec = flatten(preset or {})
    rec.update({
        "run_id": summary.run_id, "preset": summary.preset_name, "status": summary.status, "device": summary.device,
        "epoch": summary.epoch, "epochs": summary.epochs, "best_epoch": summary.best_epoch,
        "best_val_mae": summary.best_val_mae, "test_mae": summary.test_mae, "elapsed": summary.elapsed,
        "started": summary.started, "plan": summary.plan, "stage": summary.stage, "parent": summary.parent,
    })
    for k, v in (test_metrics or {}).items():
        rec.setdefault(k if k.startswith("test_") else f"test_{k}", v)
    rec.update(extra or {})
    return rec
