"""One checkpoint file: its metadata (CheckpointMeta, the .json sidecar), written atomically,
loaded with torch.load(weights_only=True) after size and archive checks, and the CHGNet rebuilt from it."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_type_hints

from tui_ft.core.common.atomic import atomic_write, atomic_write_json, deferred_signals


CHECKPOINT_FORMAT = "tui-ft-checkpoint/1"


_WRITTEN = {"nullable": False}  # CheckpointMeta fields the engine always writes with a value


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, hostile or foreign."""


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, ...); the previous one is kept."""


# Limits for an untrusted checkpoint, checked on its zip directory before torch reads
# anything. A CHGNet checkpoint is a few MB (412k parameters: 1.7 MB of weights, ~5 MB
# with the optimizer state); torch stores records uncompressed, so what a record
# inflates to is about what it occupies in the file.
MAX_CHECKPOINT_BYTES = 2 << 30  # every record together, uncompressed


MAX_INFLATION = 50  # uncompressed total <= this x the file's size (+ 1 MiB)


MAX_PICKLE_BYTES = 64 << 20  # the pickled structure (data.pkl) alone


MAX_RECORDS = 100_000


# What CHGNet.__init__ accepts (its named parameters and the **kwargs it pops), with
# the types and ranges a model to fine-tune can have. Checked before anything is built.
_DIM = (1, 4096)


_MODEL_ARGS: dict[str, tuple[str, Any]] = {
    "atom_fea_dim": ("int", _DIM), "bond_fea_dim": ("int", _DIM), "angle_fea_dim": ("int", _DIM),
    "num_radial": ("int", _DIM), "num_angular": ("int", _DIM), "n_conv": ("int", (1, 16)),
    "cutoff_coeff": ("int", (1, 64)), "num_heads": ("int", (1, 64)),
    "atom_conv_hidden_dim": ("dims", (1, 4096)), "bond_conv_hidden_dim": ("dims", (1, 4096)),
    "angle_layer_hidden_dim": ("dims", (0, 4096)), "mlp_hidden_dims": ("dims", (1, 4096)),
    "update_bond": ("bool", None), "update_angle": ("bool", None), "mlp_first": ("bool", None),
    "is_intensive": ("bool", None), "learnable_rbf": ("bool", None), "mlp_out_bias": ("bool", None),
    "converter_verbose": ("bool", None),
    "conv_dropout": ("float", (0.0, 1.0)), "mlp_dropout": ("float", (0.0, 1.0)),
    "atom_graph_cutoff": ("cutoff", (0.0, 20.0)), "bond_graph_cutoff": ("cutoff", (0.0, 20.0)),
    "composition_model": ("choice", ("MPtrj", "MPtrj_e", "MPF", "MP-r2SCAN", None)),
    "read_out": ("choice", ("ave", "sum", "attn", "weighted")),
    "non_linearity": ("choice", ("silu", "relu", "tanh", "gelu")),
    "graph_converter_algorithm": ("choice", ("legacy", "fast")),
    "gMLP_norm": ("choice", ("layer", "batch", "graph", None)),
    "readout_norm": ("choice", ("layer", "batch", "graph", None)),
    "conv_norm": ("choice", ("layer", "batch", "graph", None)),
    "final_mlp": ("choice", ("MLP", "normal", "GatedMLP")),
    "version": ("text", 40),
}


_MAX_DIMS_LIST = 8


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_model_args(args: Any, where: str = "checkpoint") -> dict[str, Any]:
    """``model_args`` of an untrusted checkpoint: a dict whose keys CHGNet accepts,
    each of the right type and within range. Raises :class:`CheckpointError`
    (``<where>: model_args.<key>: ...``) for the first problem; returns ``args``."""
    if not isinstance(args, dict):
        raise CheckpointError(f"{where}: model_args: expected a table of CHGNet arguments, got {type(args).__name__}")
    for key, v in args.items():
        spec = _MODEL_ARGS.get(key) if isinstance(key, str) else None
        if spec is None:
            raise CheckpointError(f"{where}: model_args: {key!r} is not an argument of CHGNet")
        kind, rng = spec
        bad = None
        if kind == "int":
            if not _is_int(v) or not rng[0] <= v <= rng[1]:
                bad = f"an integer in {rng[0]}..{rng[1]}"
        elif kind == "dims":
            items = v if isinstance(v, (list, tuple)) else [v]
            if (
                len(items) > _MAX_DIMS_LIST
                or (isinstance(v, (list, tuple)) and not items)
                or not all(_is_int(x) and rng[0] <= x <= rng[1] for x in items)
            ):
                bad = f"an integer in {rng[0]}..{rng[1]} or a list of at most {_MAX_DIMS_LIST} of them"
        elif kind == "bool":
            if not isinstance(v, bool):
                bad = "true or false"
        elif kind in ("float", "cutoff"):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            lo, hi = rng
            if not ok or not (lo < v <= hi if kind == "cutoff" else lo <= v <= hi):
                bad = f"a number in {'(' if kind == 'cutoff' else '['}{lo:g}, {hi:g}]"
        elif kind == "choice":
            if v not in rng or (v is not None and not isinstance(v, str)):
                bad = "one of " + ", ".join("none" if c is None else repr(c) for c in rng)
        elif kind == "text":
            if v is not None and (not isinstance(v, str) or len(v) > rng):
                bad = f"a short string or none"
        if bad is not None:
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise CheckpointError(f"{where}: model_args.{key}: expected {bad}, got {shown}")
    return args


def build_model(payload: dict[str, Any], where: str = "checkpoint"):
    """The CHGNet of a loaded checkpoint. Its ``model_args`` are checked, the model is
    first built without memory (torch's meta device) to compare every weight's shape
    with ``model_state``, and only then built and loaded (strictly).
    Raises :class:`CheckpointError` naming the file and the first mismatch."""
    import contextlib as _cl
    import io

    import torch
    from chgnet.model import CHGNet

    args = check_model_args(payload.get("model_args"), where)
    state = payload.get("model_state")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in state.items()):
        raise CheckpointError(f"{where}: model_state: expected a table of named tensors")
    with _cl.redirect_stdout(io.StringIO()):  # CHGNet prints a banner per model built
        try:
            with torch.device("meta"):
                shapes = {k: tuple(t.shape) for k, t in CHGNet(**args).state_dict().items()}
        except Exception as exc:  # noqa: BLE001 - arguments CHGNet rejects
            raise CheckpointError(f"{where}: model_args: CHGNet cannot be built from them ({type(exc).__name__}: {exc})") from None
        missing = sorted(set(shapes) - set(state))
        unexpected = sorted(set(state) - set(shapes))
        if missing or unexpected:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
            n = len(missing) + len(unexpected)
            raise CheckpointError(
                f"{where}: model_state does not fit the model of its model_args ({what}"
                + (f" and {n - 1} more" if n > 1 else "") + "; another architecture?)"
            )
        for k, shape in shapes.items():
            if tuple(state[k].shape) != shape:
                raise CheckpointError(
                    f"{where}: model_state[{k!r}] has shape {list(state[k].shape)}, "
                    f"its model_args give {list(shape)} (another architecture?)"
                )
        try:
            model = CHGNet(**args)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{where}: the weights do not load ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return model


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


class _RecordingFile:
    """A file object that remembers the OSError its write raised: torch.save turns it
    into ``RuntimeError: [enforce fail at inline_container.cc] ... file write failed``."""

    def __init__(self, fh: Any):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> Any:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _write_failure(path: Path, exc: BaseException, recorded: OSError | None) -> CheckpointWriteError:
    import errno

    err = recorded if recorded is not None else (exc if isinstance(exc, OSError) else None)
    text = str(exc)
    if (err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in text:
        return CheckpointWriteError(f"no space left on device ({path}); the previous checkpoint is kept")
    if err is not None:
        return CheckpointWriteError(f"{path}: could not write the checkpoint ({err.strerror or err}); the previous checkpoint is kept")
    first = text.splitlines()[0] if text else type(exc).__name__
    if "file write failed" in text or "inline_container" in text:
        return CheckpointWriteError(
            f"{path}: could not write the checkpoint (the write failed: no space left on device?); "
            "the previous checkpoint is kept"
        )
    return CheckpointWriteError(f"{path}: could not write the checkpoint ({first}); the previous checkpoint is kept")


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write a checkpoint ``.pt`` and its ``.json`` sidecar, each atomically.

    ``payload`` must hold ``model_state``, ``model_args`` and ``meta``; it may hold
    ``optimizer_state``, ``scheduler_state`` and ``train_state`` (for resume).
    The ``.pt`` is renamed into place first, then the sidecar; the library checks
    the sidecar against the ``.pt`` (and lists a ``.pt`` without one), so a kill
    between the two renames shows what the ``.pt`` holds.

    A write that fails (disk full, ...) raises :class:`CheckpointWriteError` with one
    line ("no space left on device (<path>)"); the temp file is removed and the
    previous checkpoint stays as it was.
    """
    import torch

    path = Path(path)
    payload = dict(payload)
    payload["format"] = CHECKPOINT_FORMAT
    state: dict[str, _RecordingFile] = {}

    def write(fh: Any) -> None:
        state["fh"] = _RecordingFile(fh)
        torch.save(payload, state["fh"])

    with deferred_signals():
        target = path
        try:
            atomic_write(path, write)
            target = path.with_suffix(".json")
            atomic_write_json(target, payload["meta"])
        except (OSError, RuntimeError) as exc:
            rec = state["fh"].error if "fh" in state and target == path else None
            raise _write_failure(target, exc, rec) from None


def _check_archive(path: Path) -> None:
    """Refuse a file that is not a torch zip archive, or whose records would inflate
    beyond the limits above, before torch reads any of it."""
    import zipfile

    from tui_ft.core.common.files import open_regular

    try:  # a FIFO or a device named like a checkpoint is refused, never read
        with open_regular(path) as fh, zipfile.ZipFile(fh) as zf:
            size = os.fstat(fh.fileno()).st_size
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not a torch zip archive: truncated, or a legacy/other format; {exc})"
        ) from None
    if len(infos) > MAX_RECORDS:
        raise CheckpointError(f"{path}: refused: {len(infos)} records (at most {MAX_RECORDS})")
    total = 0
    cap = min(MAX_CHECKPOINT_BYTES, MAX_INFLATION * size + (1 << 20))
    for info in infos:
        total += info.file_size
        if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{path}: refused: record {info.filename!r} is {info.file_size} bytes (at most {MAX_PICKLE_BYTES})"
            )
        if info.file_size > cap or total > cap:
            raise CheckpointError(
                f"{path}: refused: its records inflate to over {cap} bytes "
                f"(record {info.filename!r}: {info.file_size} bytes; the file is {size} bytes)"
            )
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise CheckpointError(f"{path}: not a readable checkpoint (a zip archive, but not one torch.save wrote)")


def load_checkpoint(path: Path | str, *, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` on anything odd.

    Before torch reads it, the zip directory is checked against the size limits
    (:data:`MAX_CHECKPOINT_BYTES`, :data:`MAX_INFLATION`...); after, ``model_state``
    must be there and ``model_args`` hold only CHGNet's arguments, in range
    (:func:`check_model_args`). :func:`build_model` makes the model."""
    import pickle
    import re

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch words it "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module ..."
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it references {m.group(1)}" if m else "it holds objects other than tensors and plain data"
        raise CheckpointError(
            f"{path}: refused to load: {what}, which could run code when unpickled; "
            "only plain-data (weights_only) checkpoints are accepted"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        first = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise CheckpointError(f"{path}: not a tui-ft checkpoint (no model_state; a plain state_dict?)")
    check_model_args(payload.get("model_args"), str(path))
    return payload


def read_checkpoint_meta(pt: Path) -> tuple[CheckpointMeta | None, str]:
    """The ``meta`` a ``.pt`` holds, and "" -- or ``(None, why)`` when it cannot be read.
    Cached by (path, mtime, size); the weights are memory-mapped, not read."""
    try:
        st = pt.stat()
    except OSError as exc:
        return None, f"cannot read ({exc.strerror or exc})"
    key = (str(pt), st.st_mtime_ns, st.st_size)
    hit = _PT_META.get(key)
    if hit is not None:
        return hit
    try:
        payload = _payload_without_tensors(pt)
        if payload is None:  # not readable the quick way: torch decides (weights_only, memory-mapped)
            payload = load_checkpoint(pt, mmap=True)
        meta = CheckpointMeta.from_dict(payload.get("meta"))
        out = (meta, "") if meta is not None else (None, "the checkpoint holds no meta table")
    except CheckpointError as exc:
        msg = str(exc)
        out = (None, msg[len(str(pt)) + 2 :] if msg.startswith(f"{pt}: ") else msg)
    if len(_PT_META) > 4096:
        _PT_META.clear()
    _PT_META[key] = out
    return out


class _NoTensors:
    """Stands for every tensor and storage when only a checkpoint's plain data is read."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass


def _no_tensor(*args: Any, **kwargs: Any) -> _NoTensors:
    return _NoTensors()


def _payload_without_tensors(pt: Path) -> dict[str, Any] | None:
    """The payload of a ``.pt`` with every tensor replaced by a placeholder, read with
    ``pickle`` restricted to torch's tensor-rebuild functions and storage types (the
    Python docs' "restricting globals"): nothing else is ever looked up, so nothing
    can run, and torch need not be imported to list the library. Checked like
    :func:`load_checkpoint` (zip limits, model_state, model_args). Returns None when
    the file holds anything else (then torch's weights_only loader decides)."""
    import collections
    import pickle
    import zipfile

    _check_archive(pt)

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            if module == "torch._utils" and name.startswith("_rebuild_"):
                return _no_tensor
            if module == "torch" and (name.endswith("Storage") or name in ("Size", "device")):
                return _NoTensors
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid: Any) -> Any:
            return _NoTensors()

    try:
        with zipfile.ZipFile(pt) as zf:
            name = next(n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            raw = zf.read(name)
        payload = Restricted(io.BytesIO(raw)).load()
    except Exception:  # noqa: BLE001 - anything odd: leave it to torch's loader
        return None
    if not isinstance(payload, dict) or "model_state" not in payload:
        return None
    check_model_args(payload.get("model_args"), str(pt))
    return payload


_META_KEYS = tuple(f.name for f in fields(CheckpointMeta) if f.name not in ("extra", "problems"))
_PT_META: dict[tuple[str, int, int], tuple[CheckpointMeta | None, str]] = {}  # (path, mtime_ns, size) -> (meta, error)
