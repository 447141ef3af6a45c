"""Where tui-ft keeps its files.

Everything lives under one project root: the current directory, or the
folder named by ``TUI_FT_HOME``. Tests point ``TUI_FT_HOME`` at a temporary
folder so they never touch the real library.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

NAME_MAX = 64  # preset and plan names
COMPONENT_MAX = 200  # any id that becomes a file name: run ids (preset name + stamp), references
_COMPONENT_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


class UnsafeName(ValueError):
    """An id (run id, plan name, reference...) that is not one safe path component.

    ``str(exc)`` is one line: ``<kind> <value>: <what is wrong>``; ``exc.rule`` is
    the part after the colon."""

    def __init__(self, kind: str, value: object, rule: str):
        self.kind, self.value, self.rule = kind, value, rule
        super().__init__(f"{kind} {_show(value)}: {rule}")


def _show(v: object) -> str:
    """A short, escaped rendering of a value for one-line messages."""
    if not isinstance(v, str):
        return type(v).__name__ if v is None or not isinstance(v, (int, float)) else str(v)
    s = v if len(v) <= 60 else v[:57] + "..."
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _has_control(s: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in s)


def check_component(v: object, max_len: int = COMPONENT_MAX) -> str:
    """The one rule for every name that becomes a file or folder name: 1..``max_len``
    of [A-Za-z0-9_.-], no leading "." or "-", no "..". So it is exactly one path
    component, never absolute, never a parent, never hidden, never an option.

    Raises ``ValueError`` whose message is the rule broken (for the error line)."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {_show(v)}")
    if not v:
        raise ValueError("must not be empty")
    if _has_control(v):
        raise ValueError(f"must not contain control characters, got {_show(v)}")
    if len(v) > max_len:
        raise ValueError(f"must be at most {max_len} characters, got {len(v)}")
    if not _COMPONENT_CHARS.fullmatch(v):
        raise ValueError(f'may only contain letters, digits, "_", "." and "-", got {_show(v)}')
    if v[0] in ".-":
        raise ValueError(f'must not start with "." or "-", got {_show(v)}')
    if ".." in v:
        raise ValueError(f'must not contain "..", got {_show(v)}')
    return v


def safe_component(kind: str, value: object, max_len: int = COMPONENT_MAX) -> str:
    """``value`` if it is one safe path component (:func:`check_component`), else
    :class:`UnsafeName` naming ``kind`` (e.g. "run id") and the value."""
    try:
        return check_component(value, max_len)
    except ValueError as exc:
        raise UnsafeName(kind, value, str(exc)) from None


def is_safe_component(value: object) -> bool:
    try:
        check_component(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def default(cls) -> "Paths":
        return cls(Path(os.environ.get("TUI_FT_HOME") or os.getcwd()).resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def data(self) -> Path:
        """Downloaded and generated data files (matbench, demo)."""
        return self.root / "data"

    @property
    def cache(self) -> Path:
        """Graph and feature caches."""
        return Path(os.environ.get("TUI_FT_CACHE") or (self.root / ".cache"))

    def run_log_dir(self, run_id: str) -> Path:
        """``logs/<run_id>``; raises :class:`UnsafeName` for an id that is not one safe component."""
        return self.logs / safe_component("run id", run_id)

    def run_ckpt_dir(self, run_id: str) -> Path:
        """``checkpoints/<run_id>``; raises :class:`UnsafeName` like :meth:`run_log_dir`."""
        return self.checkpoints / safe_component("run id", run_id)

    def plan_dir(self, plan_name: str) -> Path:
        """``logs/.plans/<plan_name>`` (state and lock of a plan)."""
        return self.logs / ".plans" / safe_component("plan name", plan_name)
