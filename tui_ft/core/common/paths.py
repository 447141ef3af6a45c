"""Where tui-ft keeps its files, and what a preset's ``data.source`` names.

Everything lives under one project root, found as git finds its repository
(:func:`project_root`):

1. ``TUI_FT_HOME``, when set, is the root;
2. otherwise the first folder, walking up from the current directory, that
   holds a ``presets/`` folder and either a ``.tui-ft`` marker file or a
   ``pyproject.toml`` naming the ``tui-ft`` project (a clone of this
   repository; ``touch .tui-ft`` beside ``presets/`` marks any other folder);
3. otherwise the current directory (as before root discovery).

``tui-ft --preset FILE`` run from a folder with no root above it looks upward
from FILE's folder too (``cli.main``). Tests point ``TUI_FT_HOME`` at a
temporary folder so they never touch the real library.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TUI_FT_HOME"
ROOT_MARKER = ".tui-ft"
PROJECT_NAME = "tui-ft"

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
    if s.isascii():  # the common case, without a category lookup per character: C0 controls and DEL
        return not s.isprintable()
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
        return cls(project_root()[0])

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


# ---------------------------------------------------------------- the project root


def _names_this_project(pyproject: Path) -> bool:
    import tomllib

    try:
        with open(pyproject, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError):
        return False
    project = data.get("project")
    return isinstance(project, dict) and project.get("name") == PROJECT_NAME


def is_project_root(folder: Path) -> bool:
    """``folder`` holds ``presets/`` and a ``.tui-ft`` marker or tui-ft's ``pyproject.toml``."""
    if not (folder / "presets").is_dir():
        return False
    return (folder / ROOT_MARKER).is_file() or _names_this_project(folder / "pyproject.toml")


def find_project_root(start: Path | str) -> Path | None:
    """The first project root at or above ``start`` (a folder), or None."""
    here = Path(start).expanduser().resolve()
    for folder in (here, *here.parents):
        if is_project_root(folder):
            return folder
    return None


def project_root(cwd: Path | str | None = None) -> tuple[Path, str]:
    """``(root, how)``: the project root in use and how it was chosen
    (``"TUI_FT_HOME"``, ``"found"`` or ``"cwd"``); see the module docstring."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve(), HOME_ENV
    cwd = Path(cwd if cwd is not None else os.getcwd()).resolve()
    found = find_project_root(cwd)
    if found is not None:
        return found, "found"
    return cwd, "cwd"


def describe_root(cwd: Path | str | None = None) -> str:
    """One line saying which project root is in use and why (``--help``, ``tui-ft runs``)."""
    root, how = project_root(cwd)
    why = {
        HOME_ENV: f"set by {HOME_ENV}",
        "found": f"the nearest folder up from here holding presets/ and {ROOT_MARKER} or tui-ft's pyproject.toml",
        "cwd": f"the current directory: no folder above it holds presets/ and {ROOT_MARKER} or tui-ft's pyproject.toml",
    }[how]
    return f"project root: {root} ({why})"


# ---------------------------------------------------------------- data sources

DEMO_SOURCE = "demo"
DEMO_POTENTIAL_SOURCE = "demo_potential"  # EMT-labelled frames for the potential task (data/demo_potential.py)
MATBENCH_SOURCE = "matbench_mp_e_form"
# Matbench regression tasks on structures (what CHGNet can fit), each accepted as
# a data.source and downloaded by `tui-ft data fetch NAME` to data/NAME.json.gz.
# The composition-only tasks (matbench_expt_gap, matbench_steels) and the
# classification tasks are left out: CHGNet needs crystal structures and a number.
MATBENCH_TASKS = (
    "matbench_dielectric",
    "matbench_jdft2d",
    "matbench_log_gvrh",
    "matbench_log_kvrh",
    "matbench_mp_e_form",
    "matbench_mp_gap",
    "matbench_perovskites",
    "matbench_phonons",
)
NAMED_SOURCES = (DEMO_SOURCE, DEMO_POTENTIAL_SOURCE, *MATBENCH_TASKS)


def matbench_file(name: str, paths: Paths) -> Path:
    """Where ``tui-ft data fetch NAME`` saves a Matbench task."""
    return paths.data / f"{name}.json.gz"


def data_source_path(source: str, paths: Paths | None = None, *, base: Path | None = None) -> Path | None:
    """The file behind a preset's ``data.source``: None for the built-in demo
    data (built on first use), ``<root>/data/NAME.json.gz`` for a Matbench task,
    otherwise the path itself; a relative path is taken against ``base``
    (default: the current directory)."""
    if source in (DEMO_SOURCE, DEMO_POTENTIAL_SOURCE):
        return None
    if source in MATBENCH_TASKS:
        return matbench_file(source, paths or Paths.default())
    p = Path(source).expanduser()
    return p if p.is_absolute() else Path(base if base is not None else os.getcwd()) / p


def _task_in(name: str) -> str | None:
    """The Matbench task a file name refers to (``mp_e_form_dev.json.gz`` -> ``matbench_mp_e_form``)."""
    for task in sorted(MATBENCH_TASKS, key=len, reverse=True):
        short = task.removeprefix("matbench_")
        if re.search(rf"(^|[^a-z]){re.escape(short)}([^a-z]|$)", name):
            return task
    return None


def missing_data_message(source: str, path: Path) -> str:
    """What to say when ``data.source``'s file is missing: what it is, and what to do."""
    shown = f'"{source}"'
    if source in MATBENCH_TASKS:
        return (
            f"{source} is not downloaded yet ({path} is missing); run `tui-ft data fetch {source}` first, "
            f"or copy a {source}.json.gz obtained elsewhere to {path}"
        )
    what = "is not a file" if path.exists() else "not found"
    task = _task_in(Path(source).name)
    fetch = (
        f"run `tui-ft data fetch {task}` and use source = \"{task}\", or " if task is not None else ""
    )
    return f"data file {shown} {what} (looked for {path.resolve()}); {fetch}copy the file to {path.resolve()}"


def data_source_problem(source: str, paths: Paths | None = None, *, base: Path | None = None) -> str | None:
    """None when ``data.source`` names data that is there (the demo data always is), else the message."""
    path = data_source_path(source, paths, base=base)
    if path is None or path.is_file() or path.is_dir():
        return None
    return missing_data_message(source, path)
