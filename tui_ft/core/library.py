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
import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Union, get_args, get_type_hints

from tui_ft.core.atomic import atomic_write, atomic_write_json, deferred_signals
from tui_ft.core.paths import Paths

CHECKPOINT_FORMAT = "tui-ft-checkpoint/1"
KINDS = ("best", "last")
log = logging.getLogger("tui_ft.library")
_REPORTED: set[tuple[str, int, int]] = set()  # sidecars already reported: (path, mtime_ns, size)
_WRITTEN = {"nullable": False}  # CheckpointMeta fields the engine always writes with a value


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, hostile or foreign."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself: the ``meta`` of a ``.pt`` and its ``.json`` sidecar.

    The on-disk form is the plain dict of :meth:`to_dict` (the same keys as ever, so
    old checkpoints load). :meth:`from_dict` is total: a field of the wrong type
    (``"val_mae": "bad"``, ``"time": "x"``, or ``null`` for a field the engine always
    writes, such as ``"epoch": null``) becomes ``None`` and is recorded in
    ``problems`` as ``(field, message)``; it never raises. A key that is absent is
    ``None`` without a problem (older or hand-made sidecars). Keys it does not know
    are kept in ``extra`` and written back. The types are checked by pydantic
    (strict: no ``"0.5"`` read as a number).
    """

    run_id: str | None = field(default=None, metadata=_WRITTEN)
    kind: str | None = field(default=None, metadata=_WRITTEN)
    preset_name: str | None = field(default=None, metadata=_WRITTEN)
    preset: dict[str, Any] | None = field(default=None, metadata=_WRITTEN)
    parent: str | None = None
    epoch: int | None = field(default=None, metadata=_WRITTEN)
    val_mae: float | None = field(default=None, metadata=_WRITTEN)
    best_val_mae: float | None = None
    test_mae: float | None = None
    data_sha256: str | None = field(default=None, metadata=_WRITTEN)
    data_source: str | None = field(default=None, metadata=_WRITTEN)
    mode: str | None = field(default=None, metadata=_WRITTEN)
    versions: dict[str, Any] | None = field(default=None, metadata=_WRITTEN)
    time: float | None = field(default=None, metadata=_WRITTEN)
    device: str | None = field(default=None, metadata=_WRITTEN)
    cpu_workers: int | None = field(default=None, metadata=_WRITTEN)
    finished: bool | None = field(default=None, metadata=_WRITTEN)
    status: str | None = field(default=None, metadata=_WRITTEN)
    plan: str | None = None
    stage: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    problems: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> CheckpointMeta | None:
        """The meta of a loaded dict; ``None`` if ``d`` is not a dict at all."""
        if not isinstance(d, dict):
            return None
        known = {k: v for k, v in d.items() if k in _META_KEYS}
        extra = {k: v for k, v in d.items() if k not in _META_KEYS}
        from pydantic import ValidationError

        problems: list[tuple[str, str]] = []
        while True:
            try:
                fields_ = _meta_adapter().validate_python(known, strict=True)
                break
            except ValidationError as exc:
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"] and str(e["loc"][0]) in known}
                if not bad:  # cannot happen for a flat dict of optional fields; stay total anyway
                    return cls(extra=extra, problems=((("meta", str(exc).splitlines()[0])),))
                for e in exc.errors():
                    name = str(e["loc"][0]) if e["loc"] else ""
                    if name in bad and name not in {p[0] for p in problems}:
                        problems.append((name, f"{e['msg'].lower()}, got {known[name]!r}"))
                for name in bad:
                    known.pop(name)
        return cls(**fields_, extra=extra, problems=tuple(problems))

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form: every known key (in the engine's order), then the unknown ones."""
        out = {k: getattr(self, k) for k in _META_KEYS}
        out.update(self.extra)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read, for callers written against the old dict (the dashboard)."""
        value = self.to_dict().get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


_META_KEYS = tuple(f.name for f in fields(CheckpointMeta) if f.name not in ("extra", "problems"))


def _on_disk_type(f: Any) -> Any:
    """A field's type in a file: its annotation, without ``None`` if the engine always writes a value."""
    hint = get_type_hints(CheckpointMeta)[f.name]
    if f.metadata.get("nullable", True):
        return hint
    args = tuple(a for a in get_args(hint) if a is not type(None))
    return args[0] if len(args) == 1 else Union[args]  # noqa: UP007 - built at run time


@functools.cache
def _meta_adapter():
    """The pydantic validator of a meta dict, built on first use: the dashboard imports
    this module before its first frame, and pydantic plus the schema cost a few 100 ms."""
    from pydantic import TypeAdapter
    from typing_extensions import NotRequired, TypedDict

    return TypeAdapter(
        TypedDict(  # type: ignore[operator]
            "CheckpointMetaOnDisk",
            {f.name: NotRequired[_on_disk_type(f)] for f in fields(CheckpointMeta) if f.name in _META_KEYS},
        )
    )


@dataclass(frozen=True)
class CheckpointInfo:
    run_id: str
    kind: str
    path: Path
    meta: CheckpointMeta

    @property
    def ref(self) -> str:
        return f"{self.run_id}@{self.kind}"

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
        self.problems: dict[Path, str] = {}  # bad sidecars seen by the last listing: path -> message

    @property
    def root(self) -> Path:
        return self.paths.checkpoints

    def list(self) -> list[CheckpointInfo]:
        """All listed checkpoints (those with a readable sidecar and a .pt), newest first.

        A sidecar that is not a JSON object is skipped; one with fields of the wrong
        type is listed with those fields unknown (its time taken from the ``.pt``).
        Either is reported once per process as a warning of the ``tui_ft.library``
        logger, and kept in :attr:`problems` (path -> message) until the next listing.
        """
        out: list[CheckpointInfo] = []
        self.problems = {}
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
                meta = self._read_sidecar(side)
                if meta is None:
                    continue
                if any(name == "time" for name, _ in meta.problems):
                    with contextlib.suppress(OSError):
                        meta = replace(meta, time=pt.stat().st_mtime)
                out.append(CheckpointInfo(run_dir.name, kind, pt, meta))
        out.sort(key=lambda c: (c.created, c.run_id, c.kind), reverse=True)
        return out

    def _read_sidecar(self, side: Path) -> CheckpointMeta | None:
        """The sidecar's meta, or ``None`` (unreadable, not JSON, not an object); problems reported."""
        try:
            meta = CheckpointMeta.from_dict(json.loads(side.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            self._report(side, f"not readable as JSON ({exc}); checkpoint not listed")
            return None
        if meta is None:
            self._report(side, "not a JSON object; checkpoint not listed")
        elif meta.problems:
            wrong = "; ".join(f"{name}: {msg}" for name, msg in meta.problems)
            self._report(side, f"{wrong} (treated as unknown)")
        return meta

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
            side = p.with_suffix(".json")
            meta = (self._read_sidecar(side) if side.is_file() else None) or CheckpointMeta()
            kind = p.stem if p.stem in KINDS else "file"
            return CheckpointInfo(meta.run_id if meta.run_id is not None else p.parent.name, kind, p, meta)
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
