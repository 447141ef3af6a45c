"""The checkpoint library: ``checkpoints/<run_id>/{best,last}.pt`` with metadata.

Each ``.pt`` holds the model weights, the model's constructor arguments and a
``meta`` dict (run id, preset, parent, epoch, validation and test MAE, data hash,
package versions, time; typed as :class:`CheckpointMeta`). A JSON sidecar
(``best.json``) carries the same ``meta`` so that listing the library needs
neither torch nor unpickling.

Writes are atomic (temp file + rename); reads use ``torch.load(...,
weights_only=True)``, so a checkpoint that smuggles a pickled object is refused.
There is no shared index file: the folders are the index, so concurrent runs
never race on one file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from tui_ft.core.common.files import STATE_MAX_BYTES, read_regular_text
from tui_ft.core.common.paths import Paths, UnsafeName, safe_component
from tui_ft.core.library.ckptfile import _META_KEYS, CheckpointMeta, read_checkpoint_meta  # noqa: E402

KINDS = ("best", "last", "swa")  # swa.pt: the SWA weights of a run with train.swa_start (tui_ft.core.train.recipe)
log = logging.getLogger("tui_ft.library")
_REPORTED: set[tuple[str, int, int]] = set()  # sidecars already reported: (path, mtime_ns, size)


@dataclass(frozen=True)
class CheckpointInfo:
    run_id: str
    kind: str
    path: Path
    meta: CheckpointMeta

    @property
    def ref(self) -> str:
        return f"{self.run_id}@{self.kind}"

    def val_metrics(self, summary) -> dict[str, float] | None:
        """The named metrics of the epoch these weights are from, read from the run's summary
        (``RunSummary``; a potential's ``val_force_mae``, ...): the sidecar holds only the
        selection value. None for swa.pt (its weights are no epoch's) or without the epoch."""
        if summary is None or self.kind not in ("best", "last"):
            return None
        return summary.epoch_metrics(self.epoch)

    @property
    def preset_name(self) -> str:
        return self.meta.preset_name if self.meta.preset_name is not None else "?"

    @property
    def epoch(self) -> int | None:
        return self.meta.epoch

    @property
    def val_mae(self) -> float | None:
        return self.meta.val_mae

    @property
    def test_mae(self) -> float | None:
        return self.meta.test_mae

    @property
    def parent(self) -> str | None:
        return self.meta.parent

    @property
    def finished(self) -> bool:
        return bool(self.meta.finished)

    @property
    def created(self) -> float:
        return self.meta.time if self.meta.time is not None else 0.0


_KEY_FIELDS = ("run_id", "kind", "epoch")


class Library:
    """Query the checkpoints under ``checkpoints/``."""

    def __init__(self, paths: Paths | None = None):
        self.paths = paths or Paths.default()
        self.problems: dict[Path, str] = {}  # bad sidecars seen by the last listing: path -> message
        self.unreadable: dict[Path, str] = {}  # .pt files the last listing could not read: path -> why

    @property
    def root(self) -> Path:
        return self.paths.checkpoints

    def list(self) -> list[CheckpointInfo]:
        """All checkpoints (every readable ``.pt``), newest first.

        What is shown comes from the ``.pt`` itself (its ``meta``, read once per file
        state). The ``.json`` sidecar is checked against it: a sidecar that is missing,
        not JSON, not an object, of wrong-typed fields or that disagrees with the
        ``.pt`` is reported; a ``.pt`` that cannot be read (truncated, hostile,
        foreign) is not listed and reported. Reports go once per file state as a
        warning of the ``tui_ft.library`` logger, and stay in :attr:`problems`
        (path -> message) until the next listing.
        """
        out: list[CheckpointInfo] = []
        self.problems = {}
        self.unreadable = {}
        if not self.root.is_dir():
            return out
        for run_dir in self.root.iterdir():
            if not run_dir.is_dir() or run_dir.name.startswith("."):
                continue
            for kind in KINDS:
                pt = run_dir / f"{kind}.pt"
                if not pt.is_file():
                    continue
                info = self._info(run_dir.name, kind, pt)
                if info is not None:
                    out.append(info)
        out.sort(key=lambda c: (c.created, c.run_id, c.kind), reverse=True)
        return out

    def _info(self, run_id: str, kind: str, pt: Path) -> CheckpointInfo | None:
        """One checkpoint as the ``.pt`` shows it, its sidecar cross-checked; None if unreadable."""
        meta, why = read_checkpoint_meta(pt)
        if meta is None:
            self._report(pt, f"{why}; checkpoint not listed")
            self.unreadable[pt] = why
            return None
        side = pt.with_suffix(".json")
        notes = []
        if not side.is_file():
            notes.append("no sidecar (e.g. killed between the two renames); listed from the checkpoint")
        else:
            side_meta, problem = self._read_sidecar(side)
            if problem:
                notes.append(problem)
            if side_meta is not None:
                wrong = {name for name, _ in side_meta.problems}
                theirs, ours = side_meta.to_dict(), meta.to_dict()
                differ = [k for k in _META_KEYS if k not in wrong and theirs.get(k) != ours.get(k)]
                if differ:
                    shown = ", ".join(
                        f"{k} (sidecar {theirs.get(k)!r}, checkpoint {ours.get(k)!r})"
                        for k in sorted(differ, key=lambda k: (k not in _KEY_FIELDS, k))[:3]
                    )
                    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
                    notes.append(f"disagrees with {pt.name} on {shown}{more}")
            if notes:
                notes[-1] += "; shown from the checkpoint"
        if notes:
            self._report(side, "; ".join(notes))
        if meta.problems:
            wrong = "; ".join(f"{name}: {msg}" for name, msg in meta.problems)
            self._report(pt, f"meta: {wrong} (treated as unknown)")
        if meta.time is None:
            with contextlib.suppress(OSError):
                meta = replace(meta, time=pt.stat().st_mtime)
        return CheckpointInfo(run_id, kind, pt, meta)

    def _read_sidecar(self, side: Path) -> tuple[CheckpointMeta | None, str]:
        """The sidecar's meta and what is wrong with it ("" when nothing)."""
        try:
            meta = CheckpointMeta.from_dict(json.loads(read_regular_text(side, STATE_MAX_BYTES)))
        except (OSError, ValueError) as exc:
            return None, f"not readable as JSON ({exc})"
        if meta is None:
            return None, "not a JSON object"
        if meta.problems:
            return meta, "; ".join(f"{name}: {msg}" for name, msg in meta.problems)
        return meta, ""

    def _report(self, side: Path, message: str) -> None:
        self.problems[side] = message
        try:
            st = side.stat()
            key = (str(side), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(side), 0, 0)
        if key not in _REPORTED:
            _REPORTED.add(key)
            log.warning("%s: %s", side, message)

    def filter(self, *, preset: str | None = None, kind: str | None = None, finished: bool | None = None) -> list[CheckpointInfo]:
        items: Iterable[CheckpointInfo] = self.list()
        if preset is not None:
            items = [c for c in items if c.preset_name == preset]
        if kind is not None:
            items = [c for c in items if c.kind == kind]
        if finished is not None:
            items = [c for c in items if c.finished == finished]
        return list(items)

    def best(self, *, preset: str | None = None) -> CheckpointInfo | None:
        """The checkpoint with the lowest validation MAE (optionally of one preset)."""
        cands = [c for c in self.filter(preset=preset) if isinstance(c.val_mae, (int, float))]
        return min(cands, key=lambda c: c.val_mae) if cands else None

    def get(self, run_id: str, kind: str = "best") -> CheckpointInfo | None:
        for c in self.list():
            if c.run_id == run_id and c.kind == kind:
                return c
        return None

    def run_ids(self) -> list[str]:
        return sorted({c.run_id for c in self.list()})

    def resolve_ref(self, ref: str) -> CheckpointInfo:
        """Resolve ``RUN_ID@best``, ``PRESET@best`` (newest finished run), ``...@last`` or a path.

        Raises ``LookupError`` with a message saying what was looked for.
        """
        ref = ref.strip()
        if not ref:
            raise LookupError("empty checkpoint reference")
        if "@" not in ref or ref.endswith(".pt") or os.sep in ref:
            p = Path(ref)
            if not p.is_file():
                raise LookupError(f"checkpoint file {ref!r} does not exist (expected RUN@best, PRESET@best or a .pt path)")
            self.problems = {}
            kind = p.stem if p.stem in KINDS else "file"
            pt_meta, why = read_checkpoint_meta(p)
            if pt_meta is None:
                raise LookupError(f"{p}: {why}")
            in_library = p.resolve().parent.parent == self.root.resolve()  # else a loose file: no sidecar expected
            info = self._info(p.parent.name, kind, p) if in_library else None
            meta = info.meta if info is not None else pt_meta
            return CheckpointInfo(meta.run_id if meta.run_id is not None else p.parent.name, kind, p, meta)
        name, _, kind = ref.rpartition("@")
        if kind not in KINDS:
            raise LookupError(f"checkpoint reference {ref!r}: expected '@best', '@last' or '@swa' after the name, got '@{kind}'")
        try:
            safe_component("checkpoint reference", name)
        except UnsafeName as exc:
            raise LookupError(f"checkpoint reference {ref!r}: the name {exc.rule}") from None
        items = [c for c in self.list() if c.kind == kind]
        exact = [c for c in items if c.run_id == name]
        if exact:
            return exact[0]
        by_preset = [c for c in items if c.preset_name == name and c.finished]
        if by_preset:
            return max(by_preset, key=lambda c: c.created)
        prefixed = sorted({c.run_id for c in items if c.run_id.startswith(name)})
        if len(prefixed) == 1:
            return next(c for c in items if c.run_id == prefixed[0])
        if len(prefixed) > 1:
            shown = ", ".join(prefixed[:5]) + (" ..." if len(prefixed) > 5 else "")
            raise LookupError(f"checkpoint reference {ref!r} is ambiguous: it matches runs {shown}")
        pt = self.root / name / f"{kind}.pt"
        if pt in self.unreadable:
            raise LookupError(f"{pt}: {self.unreadable[pt]}")
        unfinished = [c for c in items if c.preset_name == name]
        if unfinished:
            raise LookupError(
                f"checkpoint reference {ref!r}: preset {name!r} has {kind} checkpoints but no finished run yet"
            )
        raise LookupError(f"checkpoint reference {ref!r}: no run or preset named {name!r} has a {kind} checkpoint")

    def lineage(self, ckpt: CheckpointInfo) -> list[CheckpointInfo]:
        """The chain ``[ckpt, parent, grandparent, ...]`` as far as the library knows it."""
        chain = [ckpt]
        seen = {(ckpt.run_id, ckpt.kind)}
        cur = ckpt
        while cur.parent:
            try:
                nxt = self.resolve_ref(cur.parent)
            except LookupError:
                break
            key = (nxt.run_id, nxt.kind)
            if key in seen:
                break
            seen.add(key)
            chain.append(nxt)
            cur = nxt
        return chain

    def children(self, run_id: str) -> list[CheckpointInfo]:
        return [c for c in self.list() if c.kind == "best" and (c.parent or "").split("@")[0] == run_id]

    def delete(self, run_id: str) -> None:
        """Remove a run's checkpoints (the run's logs are kept)."""
        try:
            safe_component("run id", run_id)
        except UnsafeName as exc:
            raise LookupError(str(exc)) from None
        target = (self.root / run_id).resolve()
        if target.parent != self.root.resolve() or not target.is_dir():
            raise LookupError(f"no checkpoints for run {run_id!r}")
        # rename first so a half-deleted folder is never listed
        trash = target.with_name(f".deleting-{run_id}-{os.getpid()}")
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
