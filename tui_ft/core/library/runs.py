"""Run folders under ``logs/``: ids, status summaries from their event streams."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from tui_ft.core.common.events import Event, RunSummary, read_events
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


def summarize(run_dir: Path, *, warn=None, events: list[Event] | None = None) -> RunSummary:
    """The summary of one run folder. ``events``: its events when the caller has
    already read them (the dashboard keeps them for the log); else they are read
    here. Never raises: bad lines are skipped and reported through ``warn``."""
    s = RunSummary(run_id=run_dir.name)
    for ev in read_events(run_dir / "events.jsonl", warn=warn) if events is None else events:
        s.apply(ev)
    s.check_alive()
    return s


def list_runs(paths: Paths | None = None, *, warn=None) -> list[RunSummary]:
    """Every run folder under ``logs/``, newest first."""
    paths = paths or Paths.default()
    try:
        dirs = [d for d in paths.logs.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return []
    out = [summarize(d, warn=warn) for d in dirs]
    out.sort(key=lambda s: (s.started or 0.0, s.run_id), reverse=True)
    return out
