"""Progress of a validation as JSON Lines in ``<results>/events.jsonl``, one object a line:

``{"time": unix s, "event": "start"|"check_start"|"progress"|"check_end"|"end", "check": name or null,
"text": one line for people, "done": int, "total": int, "status": "ran"|"skipped"|"failed"|null}``

Each line is appended and flushed whole; a reader skips a line that is not such an object (a partial
last line while the writer is at work)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS = ("start", "check_start", "progress", "check_end", "end")


@dataclass(frozen=True)
class ValidateEvent:
    event: str
    text: str
    check: str | None = None
    done: int = 0
    total: int = 0
    status: str | None = None
    time: float = 0.0

    def line(self) -> str:
        where = f"{self.check}: " if self.check else ""
        count = f"{self.done}/{self.total} " if self.total else ""
        return f"validate {where}{count}{self.text}"

    @classmethod
    def from_dict(cls, d) -> ValidateEvent | None:
        if not isinstance(d, dict) or d.get("event") not in KINDS or not isinstance(d.get("text"), str):
            return None
        try:
            return cls(event=d["event"], text=d["text"], check=d.get("check") if isinstance(d.get("check"), str) else None,
                       done=int(d.get("done") or 0), total=int(d.get("total") or 0),
                       status=d.get("status") if isinstance(d.get("status"), str) else None,
                       time=float(d.get("time") or 0.0))
        except (TypeError, ValueError):
            return None


class EventLog:
    """Appends events to ``path`` (truncated when opened: one validation per folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")

    def write(self, ev: ValidateEvent) -> ValidateEvent:
        if not ev.time:
            ev = ValidateEvent(**{**asdict(ev), "time": time.time()})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(ev), ensure_ascii=False) + "\n")
            fh.flush()
        return ev


def read_events(path: Path) -> list[ValidateEvent]:
    """Every well-formed event of ``path`` (``[]`` when it does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            ev = ValidateEvent.from_dict(json.loads(line))
        except json.JSONDecodeError:
            ev = None
        if ev is not None:
            out.append(ev)
    return out
