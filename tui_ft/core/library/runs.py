"""Run folders under ``logs/``: ids, status summaries from their event streams."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from tui_ft.core.common.events import EpochHistory, Event, RunSummary, iter_events
from tui_ft.core.common.paths import Paths

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(preset_name: str, paths: Paths) -> str:
    """Create ``logs/<run_id>/`` exclusively and return the id (unique even for simultaneous starts)."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    base = _SAFE.sub("_", preset_name).strip("._-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_id = f"{base}-{stamp}-{secrets.token_hex(2)}"
        try:
            os.mkdir(paths.logs / run_id)
        except FileExistsError:
            continue
        return run_id
    raise RuntimeError("could not allocate a run id")


def summarize(run_dir: Path, *, warn=None, events: list[Event] | None = None, history_max: int | None = None) -> RunSummary:
    """The summary of one run folder. ``events``: its events when the caller has
    already read them; else they are read here, one line at a time. ``history_max``:
    keep a thinned history of fewer than twice that many epochs (:class:`EpochHistory`;
    the dashboard's charts), not every epoch. Never raises: bad lines are skipped and
    reported through ``warn``."""
    s = RunSummary(run_id=run_dir.name, history=EpochHistory(limit=history_max))
    for ev in iter_events(run_dir / "events.jsonl", warn=warn) if events is None else events:
        s.apply(ev)
    s.check_alive()
    return s


def run_folder_names(paths: Paths, *, warn=None) -> list[str]:
    """The names of the run folders under ``logs/`` (sorted; hidden entries left out). An
    entry that cannot be looked at (a symlink to itself, no permission) is left out and
    reported through ``warn``; the others are listed all the same. Names only, no ``Path``
    per entry: the dashboard lists thousands of folders every couple of seconds."""
    try:
        with os.scandir(paths.logs) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                out.append(entry.name)
        except OSError as exc:
            if warn is not None:
                warn(f"{entry.path}: skipped ({exc.strerror or exc})")
    return out


def run_folders(paths: Paths, *, warn=None) -> list[Path]:
    """The run folders under ``logs/`` as paths (:func:`run_folder_names`)."""
    return [paths.logs / name for name in run_folder_names(paths, warn=warn)]


def list_runs(paths: Paths | None = None, *, warn=None, history_max: int | None = 256) -> list[RunSummary]:
    """Every run folder under ``logs/``, newest first; each history thinned to fewer than
    ``2 * history_max`` epochs (its latest and best kept; ``None``: every epoch)."""
    paths = paths or Paths.default()
    out = [summarize(d, warn=warn, history_max=history_max) for d in run_folders(paths, warn=warn)]
    out.sort(key=lambda s: (s.started or 0.0, s.run_id), reverse=True)
    return out


def resolve_run(name: str, paths: Paths | None = None) -> tuple[str, str]:
    """A run named the way checkpoints are (``Library.resolve_ref``): ``(run_id, how)``.

    In order: a run id (a folder under ``logs/`` with an ``events.jsonl``); a preset
    name (its newest run, whatever its status); ``RUN@best`` / ``PRESET@best`` /
    ``...@last`` (the run that saved that checkpoint, through ``Library.resolve_ref``);
    the start of exactly one run id. ``how`` says which ("" for a run id). Raises
    ``LookupError`` saying what was looked for.
    """
    from tui_ft.core.common.paths import UnsafeName, safe_component

    paths = paths or Paths.default()
    name = name.strip()
    ref, at, _ = name.partition("@")
    try:
        safe_component("run", ref)
    except UnsafeName as exc:
        raise LookupError(f"run {name!r}: the name {exc.rule}") from None
    if at:
        from tui_ft.core.library.checkpoints import Library

        ck = Library(paths=paths).resolve_ref(name)
        if not (paths.run_log_dir(ck.run_id) / "events.jsonl").is_file():
            raise LookupError(f"{name}: checkpoint {ck.path} is of run {ck.run_id}, which has no events under {paths.logs}")
        return ck.run_id, f"the run of checkpoint {name}"
    if (paths.run_log_dir(name) / "events.jsonl").is_file():
        return name, ""
    runs = [s for s in list_runs(paths) if (paths.run_log_dir(s.run_id) / "events.jsonl").is_file()]
    mine = [s for s in runs if s.preset_name == name]
    if mine:  # newest first
        return mine[0].run_id, f"the newest of {len(mine)} run{'s' if len(mine) > 1 else ''} of preset {name}"
    prefixed = [s.run_id for s in runs if s.run_id.startswith(name)]
    if len(prefixed) == 1:
        return prefixed[0], f"the one run whose id starts with {name}"
    if prefixed:
        shown = ", ".join(sorted(prefixed)[:5]) + (" ..." if len(prefixed) > 5 else "")
        raise LookupError(f"{name}: ambiguous, it starts the run ids {shown}")
    raise LookupError(f"{name}: no run or preset of that name under {paths.logs} (`tui-ft runs` lists them)")
