"""The checkpoint library: ``checkpoints/<run_id>/{best,last}.pt`` with metadata.

Each ``.pt`` holds the model weights, the model's constructor arguments and a
``meta`` dict (run id, preset, parent, epoch, validation and test MAE, data hash,
package versions, time). A JSON sidecar (``best.json``) carries the same
``meta`` so that listing the library needs neither torch nor unpickling.

Writes are atomic (temp file + rename); reads use ``torch.load(...,
weights_only=True)``, so a checkpoint that smuggles a pickled object is refused.
There is no shared index file: the folders are the index, so concurrent runs
never race on one file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tui_ft.core.atomic import atomic_write, atomic_write_json, deferred_signals
from tui_ft.core.paths import Paths

CHECKPOINT_FORMAT = "tui-ft-checkpoint/1"
KINDS = ("best", "last")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, hostile or foreign."""


@dataclass(frozen=True)
class CheckpointInfo:
    run_id: str
    kind: str
    path: Path
    meta: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.run_id}@{self.kind}"

    @property
    def preset_name(self) -> str:
        return self.meta.get("preset_name", "?")

    @property
    def epoch(self) -> int | None:
        return self.meta.get("epoch")

    @property
    def val_mae(self) -> float | None:
        return self.meta.get("val_mae")

    @property
    def test_mae(self) -> float | None:
        return self.meta.get("test_mae")

    @property
    def parent(self) -> str | None:
        return self.meta.get("parent")

    @property
    def finished(self) -> bool:
        return bool(self.meta.get("finished"))

    @property
    def created(self) -> float:
        return float(self.meta.get("time", 0.0))


def package_versions() -> dict[str, str]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("tui-ft", "chgnet", "torch", "pymatgen"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write a checkpoint ``.pt`` and its ``.json`` sidecar, each atomically.

    ``payload`` must hold ``model_state``, ``model_args`` and ``meta``; it may hold
    ``optimizer_state``, ``scheduler_state`` and ``train_state`` (for resume).
    The ``.pt`` is renamed into place first, then the sidecar: the sidecar is
    what makes a checkpoint listed, so a listed checkpoint always has its weights.
    """
    import torch

    path = Path(path)
    payload = dict(payload)
    payload["format"] = CHECKPOINT_FORMAT
    with deferred_signals():
        atomic_write(path, lambda fh: torch.save(payload, fh))
        atomic_write_json(path.with_suffix(".json"), payload["meta"])


def load_checkpoint(path: Path | str, *, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` on anything odd."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    import re
    import zipfile

    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch zip archive; truncated or another format)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch words it "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module ..."
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it references {m.group(1)}" if m else "it holds objects other than tensors and plain data"
        raise CheckpointError(
            f"{path}: refused to load: {what}, which could run code when unpickled; "
            "only plain-data (weights_only) checkpoints are accepted"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise CheckpointError(f"{path}: not a tui-ft checkpoint (no model_state)")
    return payload


class Library:
    """Query the checkpoints under ``checkpoints/``."""

    def __init__(self, paths: Paths | None = None):
        self.paths = paths or Paths.default()

    @property
    def root(self) -> Path:
        return self.paths.checkpoints

    def list(self) -> list[CheckpointInfo]:
        """All listed checkpoints (those with a readable sidecar and a .pt), newest first."""
        out: list[CheckpointInfo] = []
        if not self.root.is_dir():
            return out
        for run_dir in self.root.iterdir():
            if not run_dir.is_dir() or run_dir.name.startswith("."):
                continue
            for kind in KINDS:
                pt = run_dir / f"{kind}.pt"
                side = run_dir / f"{kind}.json"
                if not (pt.is_file() and side.is_file()):
                    continue
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if not isinstance(meta, dict):
                    continue
                out.append(CheckpointInfo(run_dir.name, kind, pt, meta))
        out.sort(key=lambda c: (c.created, c.run_id, c.kind), reverse=True)
        return out

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
            meta: dict[str, Any] = {}
            side = p.with_suffix(".json")
            if side.is_file():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except ValueError:
                    meta = {}
            kind = p.stem if p.stem in KINDS else "file"
            return CheckpointInfo(meta.get("run_id", p.parent.name), kind, p, meta)
        name, _, kind = ref.rpartition("@")
        if kind not in KINDS:
            raise LookupError(f"checkpoint reference {ref!r}: expected '@best' or '@last' after the name, got '@{kind}'")
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
        target = (self.root / run_id).resolve()
        if target.parent != self.root.resolve() or not target.is_dir():
            raise LookupError(f"no checkpoints for run {run_id!r}")
        # rename first so a half-deleted folder is never listed
        trash = target.with_name(f".deleting-{run_id}-{os.getpid()}")
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
