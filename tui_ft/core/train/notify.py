"""``[log] notify``: a command run when a run ends (finished, failed, interrupted or pruned).

The command line is split like a shell would (``shlex``) and run without a shell, with
the final event as one JSON object on its stdin (``{"type": "run_finished", "run_id": ...,
"test_mae": ...}``), from the project root, within ``NOTIFY_TIMEOUT_S``. Under DDP only
rank 0 runs it. A command that cannot start, fails or hangs is reported with one warning;
it never changes the run's result.

    [log]
    notify = "notify-send tui-ft"          # a desktop note (the JSON goes to its stdin, unread)
    notify = "python scripts/to_slack.py"  # reads the event from stdin
"""

from __future__ import annotations

import shlex
import subprocess

NOTIFY_TIMEOUT_S = 30.0
FINAL_TYPES = ("run_finished", "run_failed", "run_interrupted", "run_pruned")


def notify(command: str, event, *, cwd=None) -> str | None:
    """Run ``command`` with ``event`` as JSON on stdin; ``None`` when it exited 0, else what went wrong."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"[log] notify = {command!r}: cannot split the command ({exc})"
    if not argv:
        return None
    try:
        proc = subprocess.run(argv, input=event.to_json() + "\n", text=True, capture_output=True,
                              timeout=NOTIFY_TIMEOUT_S, cwd=cwd)
    except FileNotFoundError:
        return f"[log] notify: {argv[0]!r} not found (is it installed and on PATH?)"
    except subprocess.TimeoutExpired:
        return f"[log] notify: {argv[0]!r} ran past {NOTIFY_TIMEOUT_S:.0f} s and was stopped"
    except OSError as exc:
        return f"[log] notify: {argv[0]!r} cannot start: {exc.strerror or exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
        return f"[log] notify: {argv[0]!r} exited with code {proc.returncode}" + (f": {tail[0][:200]}" if tail[0] else "")
    return None
