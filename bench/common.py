"""Shared helpers for the benchmarks in ``bench/``.

The benchmarks read the development file ``../shared/data/mp_e_form_dev.json.gz``
(relative to the repository root) where it lies; nothing from it is ever copied
into the repository. Runs go through the real engine in a temporary project
root (``TUI_FT_HOME``) with a persistent cache (``TUI_FT_CACHE``) so crystal
graphs and frozen-backbone features are built once and reused by later runs.

Timings are wall-clock (``time.perf_counter``). The benchmarks are meant to be
run under ``nice`` on a shared machine; they print the load average next to
each table because other processes on the same cores change every number.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
DEV_DATA = (REPO.parent / "shared" / "data" / "mp_e_form_dev.json.gz").resolve()
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "tui-ft-bench-cache"
PRESETS = REPO / "presets"

if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def require_dev_data(path: Path | None = None) -> Path:
    """The dev data file, or exit with a clear message (exit code 2) when it is absent."""
    p = Path(path) if path else DEV_DATA
    if not p.is_file():
        print(
            f"error: the development data file {p} is not there.\n"
            f"These benchmarks read it from ../shared/data/ relative to the repository root "
            f"({REPO}); it is never copied into the repository. Put it there (or pass --data FILE) and rerun.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return p


def setup_env(cache: str | Path | None = None, home: str | Path | None = None) -> tuple[Path, Path]:
    """Point TUI_FT_HOME at a fresh temporary project root and TUI_FT_CACHE at a persistent cache.

    Returns ``(home, cache)``. Must run before the engine builds ``Paths.default()``.
    """
    cache_p = Path(cache or os.environ.get("TUI_FT_BENCH_CACHE") or DEFAULT_CACHE).resolve()
    cache_p.mkdir(parents=True, exist_ok=True)
    home_p = Path(home).resolve() if home else Path(tempfile.mkdtemp(prefix="tui-ft-bench-home-"))
    home_p.mkdir(parents=True, exist_ok=True)
    os.environ["TUI_FT_HOME"] = str(home_p)
    os.environ["TUI_FT_CACHE"] = str(cache_p)
    return home_p, cache_p


def dev_preset(base: str, changes: dict[str, Any], data: Path | None = None):
    """A preset built from ``presets/<base>.toml`` with ``changes`` (Preset.with_changes), reading the dev file."""
    from tui_ft.core.config.presets import load_preset

    p = load_preset(PRESETS / f"{base}.toml")
    ch = {"data.source": str(data or DEV_DATA)}
    ch.update(changes)
    return p.with_changes(ch)


def fraction_for_n(n_rows: int, n_train: int, *, fold: int = 0, val_fraction: float = 0.1) -> float:
    """The ``data.fraction`` that gives exactly ``n_train`` training rows (fold ``fold``)."""
    from tui_ft.core.data.dataset import make_splits, matbench_folds

    train_part = len(matbench_folds(n_rows)[fold][0])
    rest = train_part - max(1, int(round(val_fraction * train_part)))
    if not 1 <= n_train <= rest:
        raise SystemExit(f"error: --n must be 1..{rest} for this file (fold {fold} leaves {rest} training rows)")
    frac = n_train / rest
    got = len(make_splits(n_rows, fold=fold, fraction=frac, val_fraction=val_fraction).train)
    assert got == n_train, (got, n_train)
    return frac


def count_rows(path: Path) -> int:
    from tui_ft.core.data.dataset import _load_json

    return len(_load_json(Path(path))["index"])


# ---------------------------------------------------------------- reporting


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def loadavg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def machine_line() -> str:
    import torch

    return (
        f"machine: {nproc()} CPUs ({cpu_model()}), python {platform.python_version()}, torch {torch.__version__}, "
        f"niceness {os.nice(0)}, load average {loadavg()} (1/5/15 min)"
    )


def warn_if_not_niced() -> None:
    if os.nice(0) <= 0:
        print("note: not running under nice; on a shared machine run `nice python bench/...`", file=sys.stderr)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 120:
        return f"{x:.1f} s"
    return f"{x / 60:.1f} min"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def git_dirty(paths: Sequence[str] = ("tui_ft/core", "bench")) -> bool:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.strip())
