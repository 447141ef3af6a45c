"""A potential run's test results for the dashboard's charts (no Textual here).

A potential run (``tui_ft.core.task.potential``) leaves two CSV files in its log folder:

* ``test_predictions.csv``, one row per test frame: ``id, n_atoms,
  energy_true_eV_per_atom, energy_pred_eV_per_atom, force_mae_eV_per_A, stress_mae_GPa``;
* ``test_forces.csv``, one row per atom: ``id, atom, fx_true, fy_true, fz_true, fx_pred,
  fy_pred, fz_pred`` (eV/Å).

:func:`read_potential_results` turns them into the :class:`~tui_ft.tui.charts.Predictions`
the parity and error plots draw (a caption's parts are parted by two spaces, the
plot drops them from the end when it is narrow): energies per atom (eV/atom, errors in meV/atom) and force
components (eV/Å, errors in meV/Å). The readers open regular files only (never block on
a FIFO, never follow a folder), read at most a capped number of bytes (a bigger file is
read up to the cap, and the caption says so), skip a row that is not well formed (too few
fields, a number that is not a finite number) and say so once per file, naming its first
bad line. Force components are sampled down to a bounded number of points (whole atoms,
drawn by a fixed-seed generator: the same run shows the same cloud each time); the errors' statistics in the
captions are over every component read.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tui_ft.tui.charts import ErrorStats, Predictions, PredictionsError

PREDICTIONS_FILE = "test_predictions.csv"
FORCES_FILE = "test_forces.csv"
MAX_PREDICTIONS_BYTES = 8 * 2**20  # ~130k frames
MAX_FORCES_BYTES = 8 * 2**20  # ~120k atoms (the file is read on the UI thread, once per run)
FORCE_SAMPLE = 6000  # force components kept for the parity plot and the histogram

ENERGY_COLS = ("id", "energy_true_eV_per_atom", "energy_pred_eV_per_atom")
FORCE_COLS = ("id", "atom", "fx_true", "fy_true", "fz_true", "fx_pred", "fy_pred", "fz_pred")


@dataclass
class _Stats:
    """Running statistics of ``pred - true``."""

    n: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    total: float = 0.0
    max_abs: float = 0.0

    def add(self, err: float) -> None:
        self.n += 1
        self.abs_sum += abs(err)
        self.sq_sum += err * err
        self.total += err
        self.max_abs = max(self.max_abs, abs(err))

    def result(self, scale: float = 1.0) -> ErrorStats | None:
        if not self.n:
            return None
        return ErrorStats(
            n=self.n, mae=scale * self.abs_sum / self.n, rmse=scale * math.sqrt(self.sq_sum / self.n),
            max_abs=scale * self.max_abs, mean=scale * self.total / self.n,
        )


@dataclass
class PotentialResults:
    """What the charts of a finished potential run draw, and what was wrong with its files."""

    energy: Predictions | None = None  # per frame, eV/atom
    energy_errors: Predictions | None = None  # the same frames, meV/atom
    forces: Predictions | None = None  # sampled force components, eV/Å
    force_errors: Predictions | None = None  # the same sample, meV/Å
    energy_note: str = ""  # why there is no energy plot
    force_note: str = ""  # why there is no force plot
    problems: list[str] = field(default_factory=list)  # one line per file with skipped rows, cut at its cap


def _read_capped(path: Path, cap: int) -> tuple[str, bool, int]:
    """The text of a regular file, at most ``cap`` bytes of it (cut after its last whole
    line), whether it was cut, and the file's size. Raises :class:`PredictionsError`."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PredictionsError(f"{path.name}: not written (the run wrote no such file)") from None
    except OSError as exc:
        raise PredictionsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PredictionsError(f"{path}: not a regular file, expected a CSV file")
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, cap + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise PredictionsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    cut = len(data) > cap
    if cut:
        data = data[: data.rfind(b"\n", 0, cap) + 1]
    return data.decode("utf-8", errors="replace").lstrip("\ufeff"), cut, st.st_size


class _Rows:
    """Numbered, checked rows of a CSV text; remembers the rows it skipped."""

    def __init__(self, path: Path, text: str, columns: tuple[str, ...]):
        self.path = path
        self.reader = csv.reader(io.StringIO(text, newline=""))
        header = next(self.reader, None)
        if header is None:
            raise PredictionsError(f"{path}: empty file, expected a header line with {', '.join(columns)}")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise PredictionsError(
                f"{path}:1: no column {', '.join(missing)} (columns: {', '.join(header) or 'none'})"
            )
        self.index = {c: header.index(c) for c in columns}
        self.width = max(self.index.values()) + 1
        self.skipped = 0
        self.first_bad = ""

    def bad(self, line: int, why: str) -> None:
        self.skipped += 1
        if not self.first_bad:
            self.first_bad = f"line {line}: {why}"

    def numbers(self, row: list[str], line: int, names: tuple[str, ...]) -> list[float] | None:
        """The named fields of ``row`` as finite floats, or None (the row counted as skipped)."""
        if len(row) < self.width:
            self.bad(line, f"{len(row)} fields, expected at least {self.width}")
            return None
        out = []
        for name in names:
            cell = row[self.index[name]].strip()
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                self.bad(line, f"{name} {cell[:30]!r} is not a finite number")
                return None
            out.append(v)
        return out

    def __iter__(self):
        for row in self.reader:
            line = self.reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            yield line, row

    def problem(self, cut: bool, size: int, cap: int, what: str) -> str | None:
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} bad row(s) skipped (first: {self.first_bad})")
        if cut:
            parts.append(f"only its first {cap // 2**20} MiB of {size / 2**20:.0f} MiB read ({what})")
        return f"{self.path}: " + "; ".join(parts) if parts else None


def _skipped_note(n: int) -> str:
    return f"  {n} bad row(s) skipped" if n else ""


def read_energies(path: Path, *, cap: int = MAX_PREDICTIONS_BYTES) -> tuple[Predictions, Predictions, str | None]:
    """Per-frame energies per atom of ``test_predictions.csv``: (parity in eV/atom, errors in
    meV/atom, a problem line or None)."""
    text, cut, size = _read_capped(path, cap)
    rows = _Rows(path, text, ENERGY_COLS)
    ids, true, pred = [], [], []
    stats = _Stats()
    for line, row in rows:
        v = rows.numbers(row, line, ENERGY_COLS[1:])
        if v is None:
            continue
        ids.append(row[rows.index["id"]].strip() or str(line))
        true.append(v[0])
        pred.append(v[1])
        stats.add(v[1] - v[0])
    if not ids:
        raise PredictionsError(f"{path}: no readable frame" + (f" ({rows.skipped} bad row(s), first: {rows.first_bad})" if rows.skipped else ""))
    st = stats.result(1000.0)
    note = _skipped_note(rows.skipped) + ("  file cut at its cap" if cut else "")
    energy = Predictions(ids, true, pred, skipped=rows.skipped, unit="eV/atom",
                         caption=f"energy  MAE {st.mae:.3g} meV/atom  n={st.n}{note}")
    errors = Predictions(ids, [1000.0 * t for t in true], [1000.0 * p for p in pred], skipped=rows.skipped,
                         unit="meV/atom",
                         caption=f"energy error (meV/atom)  RMSE {st.rmse:.3g}  mean {st.mean:+.3g}  max {st.max_abs:.3g}")
    return energy, errors, rows.problem(cut, size, cap, f"{len(ids)} frames")


def read_forces(
    path: Path, *, cap: int = MAX_FORCES_BYTES, max_points: int = FORCE_SAMPLE, seed: int = 0
) -> tuple[Predictions, Predictions, str | None]:
    """Force components of ``test_forces.csv``: (parity in eV/Å, errors in meV/Å, a problem
    line or None), at most ``max_points`` components (whole atoms drawn without replacement
    by a fixed-seed generator: the same cloud on every read); the captions' statistics are
    over every component read."""
    text, cut, size = _read_capped(path, cap)
    rows = _Rows(path, text, FORCE_COLS)
    names = FORCE_COLS[2:]
    cols = [rows.index[n] for n in names]
    i_id, i_atom = rows.index["id"], rows.index["atom"]
    values = array("d")  # six per atom: fx..fz true, fx..fz pred (eV/Å)
    where: list[tuple[str, str]] = []  # (frame id, atom) per atom read
    for line, row in rows:
        try:  # the common case at full speed; a bad row is looked at field by field
            v = [float(row[i]) for i in cols]
            if not math.isfinite(sum(v)):
                raise ValueError
        except (ValueError, IndexError):
            v = rows.numbers(row, line, names)
            if v is None:
                continue
        values.extend(v)
        where.append((row[i_id], row[i_atom]))
    n_atoms = len(where)
    if not n_atoms:
        raise PredictionsError(f"{path}: no readable atom" + (f" ({rows.skipped} bad row(s), first: {rows.first_bad})" if rows.skipped else ""))
    a = np.frombuffer(values, dtype=np.float64).reshape(n_atoms, 6)
    err = (a[:, 3:] - a[:, :3]).ravel() * 1000.0  # meV/Å, every component
    st = ErrorStats(n=err.size, mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err * err).mean())),
                    max_abs=float(np.abs(err).max()), mean=float(err.mean()))
    keep = max(1, max_points // 3)
    picked = (np.arange(n_atoms) if n_atoms <= keep
              else np.sort(np.random.default_rng(seed).choice(n_atoms, keep, replace=False)))
    ids, true, pred = [], [], []
    for i in picked.tolist():
        frame, atom = where[i]
        for k, axis in enumerate("xyz"):
            ids.append(f"{frame.strip()}:{atom.strip()}:{axis}")
            true.append(float(a[i, k]))
            pred.append(float(a[i, 3 + k]))
    shown = f"  ({len(ids)} shown)" if len(ids) < st.n else ""
    note = _skipped_note(rows.skipped) + ("  file cut at its cap" if cut else "")
    forces = Predictions(ids, true, pred, skipped=rows.skipped, unit="eV/Å",
                         caption=f"force components  MAE {st.mae:.3g} meV/Å  n={st.n}{shown}{note}")
    errors = Predictions(ids, [1000.0 * t for t in true], [1000.0 * p for p in pred], skipped=rows.skipped,
                         unit="meV/Å",
                         caption=f"force error (meV/Å)  RMSE {st.rmse:.3g}  mean {st.mean:+.3g}  max {st.max_abs:.3g}{shown}")
    return forces, errors, rows.problem(cut, size, cap, f"{n_atoms} atoms")


def read_potential_results(log_dir: Path, predictions: str | None = None) -> PotentialResults:
    """Both files of a potential run's log folder (``predictions``: the path its
    ``run_finished`` event names, used when it lies in that folder); a file that cannot
    be read leaves its plots out with the reason in ``energy_note`` / ``force_note``."""
    out = PotentialResults()
    pred_path = log_dir / PREDICTIONS_FILE
    if predictions and Path(predictions).name.endswith(".csv") and Path(predictions).parent.resolve() == log_dir.resolve():
        pred_path = log_dir / Path(predictions).name
    try:
        out.energy, out.energy_errors, problem = read_energies(pred_path)
        if problem:
            out.problems.append(problem)
    except PredictionsError as exc:
        out.energy_note = str(exc)
    try:
        out.forces, out.force_errors, problem = read_forces(log_dir / FORCES_FILE)
        if problem:
            out.problems.append(problem)
    except PredictionsError as exc:
        out.force_note = str(exc)
    return out
