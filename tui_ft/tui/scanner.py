"""What is on disk: preset files, run folders, checkpoints.

:func:`scan` is called every couple of seconds from a thread worker; it only
lists folders and compares cheap signatures (names, sizes, mtimes), and reads
files only for what is new or changed. No Textual here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tui_ft.core.library.checkpoints import CheckpointInfo, Library
from tui_ft.core.common.paths import Paths, is_safe_component
from tui_ft.core.config.presets import Preset, is_plan_text, load_preset
from tui_ft.core.config.fields import PresetError
from tui_ft.core.common.events import iter_events
from tui_ft.core.library.runs import RunSummary, run_folder_names
from tui_ft.tui.state import RunState

# a run folder with no run_started yet counts as live while its files changed recently
PENDING_LIVE_S = 300.0


@dataclass
class PresetEntry:
    """One file in ``presets/``: the preset, or why it does not load."""

    path: Path
    text: str = ""
    preset: Preset | None = None
    errors: list[str] = field(default_factory=list)
    error_line: int | None = None
    is_plan: bool = False
    plan: object | None = None  # tui_ft.core.orchestrate.plans.Plan, when the plan file was validated
    missing_data: list[str] = field(default_factory=list)  # data.source values whose data is not there

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def ok(self) -> bool:
        """Launchable: a valid preset whose data is there, or a plan without known problems."""
        return (self.preset is not None or self.is_plan) and not self.errors

    @property
    def error(self) -> str:
        """The first problem on one line ("" when the preset loads)."""
        return self.errors[0].splitlines()[0] if self.errors else ""

    @property
    def mode(self) -> str:
        if self.is_plan:
            return "plan"
        return self.preset.finetune.mode if self.preset else "error"

    @property
    def data_label(self) -> str:
        if self.is_plan:
            stages = getattr(self.plan, "stages", None)
            return f"{len(stages)} stages" if stages else "stages"
        p = self.preset
        if p is None:
            return ""
        frac = "" if p.data.fraction == 1.0 else f" {100 * p.data.fraction:g}%"
        return f"{source_label(p.data.source)}{frac} f{p.data.fold}"

    @property
    def missing_label(self) -> str:
        """``missing mp_e_form_dev`` when the data of the preset (or of a plan's stage) is not
        there, else "": what the data column shows in place of the data."""
        names = list(dict.fromkeys(source_label(s) for s in self.missing_data))
        return f"missing {', '.join(names)}" if names else ""

    @property
    def lr(self) -> str:
        return f"{self.preset.optim.lr:.0e}" if self.preset else ""

    @property
    def epochs(self) -> str:
        return str(self.preset.train.epochs) if self.preset else ""

    @property
    def init(self) -> str:
        return self.preset.model.init if self.preset else ""


def source_label(source: str) -> str:
    """A data source as the presets table shows it: a named source as is, a file by its name
    without ``.json.gz`` (``../shared/data/mp_e_form_dev.json.gz`` -> ``mp_e_form_dev``)."""
    from tui_ft.core.common.paths import NAMED_SOURCES

    if source in NAMED_SOURCES:
        return source
    name = Path(source).name
    for ext in (".json.gz", ".json"):
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name or source


def _data_problems(preset: Preset, path: Path, entry: PresetEntry | None = None) -> list[str]:
    """``["presets/X.toml: data.source: <what is missing and what to do>"]`` when the preset's data is
    not there (relative paths are taken against the project root, where runs start), else ``[]``.
    The missing source is noted in ``entry.missing_data``."""
    from tui_ft.core.common.paths import Paths, data_source_problem

    root = path.resolve().parent.parent
    problem = data_source_problem(preset.data.source, Paths(root), base=root)
    if problem is None:
        return []
    if entry is not None and preset.data.source not in entry.missing_data:
        entry.missing_data.append(preset.data.source)
    return [f"presets/{path.name}: data.source: {problem}"]


def load_entry(path: Path) -> PresetEntry:
    """Load one preset file; never raises."""
    entry = PresetEntry(path)
    try:
        entry.text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        entry.errors = [f"{path}: cannot read: {exc.strerror or exc}"]
        return entry
    if is_plan_text(entry.text):
        entry.is_plan = True
        if Path.cwd().resolve() != path.parent.parent.resolve():
            return entry  # its stage files are relative to the project root: validated by the run itself
        try:
            from tui_ft.core.orchestrate.plans import load_plan

            entry.plan = load_plan(path)
            for stage in getattr(entry.plan, "stages", []):
                entry.errors += [e for e in _data_problems(stage.preset, path, entry) if e not in entry.errors]
        except PresetError as exc:
            shown = f"presets/{path.name}"
            entry.errors = [str(e).replace(str(path), shown, 1) for e in exc.errors] or [str(exc)]
            entry.error_line = exc.errors[0].line if exc.errors else exc.line
        except Exception as exc:  # noqa: BLE001 - a loader bug must not hide the other presets
            entry.errors = [f"{path}: {type(exc).__name__}: {exc}"]
        return entry
    try:
        entry.preset = load_preset(path)
        entry.errors = _data_problems(entry.preset, path, entry)
    except PresetError as exc:
        shown = f"presets/{path.name}"  # shorter than the absolute path, still unambiguous
        entry.errors = [str(e).replace(str(path), shown, 1) for e in exc.errors] or [str(exc)]
        entry.error_line = exc.errors[0].line if exc.errors else exc.line
    except Exception as exc:  # noqa: BLE001 - a loader bug must not hide the other presets
        entry.errors = [f"{path}: {type(exc).__name__}: {exc}"]
    return entry


def list_preset_files(paths: Paths) -> list[Path]:
    try:
        return sorted(p for p in paths.presets.iterdir() if p.suffix == ".toml" and p.is_file())
    except OSError:
        return []


def presets_signature(paths: Paths) -> tuple:
    sig = []
    for p in list_preset_files(paths):
        try:
            st = p.stat()
        except OSError:
            continue
        sig.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(sig)


def load_presets(paths: Paths) -> list[PresetEntry]:
    return [load_entry(p) for p in list_preset_files(paths)]


def library_signature(paths: Paths) -> tuple:
    root = paths.checkpoints
    sig = []
    try:
        dirs = sorted(d for d in os.listdir(root) if not d.startswith("."))
    except OSError:
        return ()
    for d in dirs:
        for kind in ("best", "last"):
            try:
                st = os.stat(root / d / f"{kind}.json")
            except OSError:
                continue
            sig.append((d, kind, st.st_mtime_ns))
    return tuple(sig)


def run_dirs(paths: Paths, warn=None) -> list[str]:
    """The names of the run folders under ``logs/``: only folders whose name is a valid run id
    (Paths.run_log_dir refuses the others); an entry that cannot be looked at (a symlink to
    itself) is left out and reported through ``warn``."""
    return [name for name in run_folder_names(paths, warn=warn) if is_safe_component(name)]


def events_signature(run_dir: Path | str) -> tuple:
    """What changes when a run's ``events.jsonl`` gets a line (or is replaced): its inode,
    size and mtime; ``()`` when it is not there."""
    try:
        st = os.stat(os.path.join(run_dir, "events.jsonl"))
    except OSError:
        return ()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def last_change(run_dir: Path) -> float:
    """When the run folder or its events file last changed."""
    times = []
    for p in (run_dir, run_dir / "events.jsonl"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def is_live(summary: RunSummary, run_dir: Path, now: float | None = None) -> bool:
    """Whether a run found on disk may still be writing events."""
    if summary.status == "running":  # summarize() already checked its pid
        return True
    if summary.status == "pending":
        now = time.time() if now is None else now
        return now - last_change(run_dir) < PENDING_LIVE_S
    return False


@dataclass
class FoundRun:
    run_id: str
    summary: RunSummary
    live: bool
    state: RunState | None = None  # the run as its events read (None for a live run: its follower reads them)
    sig: tuple = ()  # events_signature() taken before its events were read


@dataclass
class ScanResult:
    new_runs: list[FoundRun] = field(default_factory=list)
    changed_runs: list[FoundRun] = field(default_factory=list)  # settled runs whose events file changed since
    gone_runs: list[str] = field(default_factory=list)
    presets: list[PresetEntry] | None = None  # None: unchanged
    presets_sig: tuple = ()
    library: list[CheckpointInfo] | None = None  # None: unchanged
    library_sig: tuple = ()
    warnings: list[str] = field(default_factory=list)


def _found(run_dir: Path, warn) -> FoundRun:
    """A run folder's state, its events folded in one at a time here in the scan's worker
    (a long run's file is never held whole; the state keeps a thinned history)."""
    sig = events_signature(run_dir)  # before reading: a line added meanwhile changes it again
    st = RunState(RunSummary(run_id=run_dir.name))
    st.apply(iter_events(run_dir / "events.jsonl", warn=warn))
    st.summary.check_alive()
    live = is_live(st.summary, run_dir)
    return FoundRun(run_dir.name, st.summary, live, None if live else st, sig)


def scan(
    paths: Paths,
    known_runs: frozenset[str] | set[str] = frozenset(),
    presets_sig: tuple | None = None,
    library_sig: tuple | None = None,
    settled: Mapping[str, tuple] | None = None,
) -> ScanResult:
    """New and removed run folders, and presets / checkpoints when their
    signature differs from the one given (``None`` forces a reload).

    ``settled``: runs the caller no longer follows (they looked finished,
    interrupted, ...), each with the :func:`events_signature` it last read.
    One whose events file changed since (``tui-ft resume`` in another
    terminal appends to it) is read again into ``changed_runs``."""
    res = ScanResult()
    names = run_dirs(paths, res.warnings.append)
    on_disk = set(names)
    settled = settled or {}
    logs = paths.logs
    for name in names:
        if name in known_runs:
            # thousands of settled runs every couple of seconds: one stat each, no Path built
            if name in settled and events_signature(os.path.join(logs, name)) != settled[name]:
                res.changed_runs.append(_found(logs / name, res.warnings.append))
            continue
        res.new_runs.append(_found(logs / name, res.warnings.append))
    res.gone_runs = sorted(set(known_runs) - on_disk)

    res.presets_sig = presets_signature(paths)
    if presets_sig is None or res.presets_sig != presets_sig:
        res.presets = load_presets(paths)
    res.library_sig = library_signature(paths)
    if library_sig is None or res.library_sig != library_sig:
        lib = Library(paths)
        res.library = lib.list()
        # a bad sidecar is skipped by the library; say so (the app shows each cause once)
        res.warnings.extend(f"{side}: {msg}" for side, msg in sorted(lib.problems.items()))
    return res
