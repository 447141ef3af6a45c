"""The two models a validation compares: the checkpoint under test and the one it is held against.

``against`` is ``"pretrained"`` (chgnet's own ``CHGNet.load()``), ``"none"`` (no comparison) or a
second checkpoint reference. Checkpoints resolve as ``export`` resolves them (``RUN@best``,
``PRESET@best``, ``...@last`` or a ``.pt`` path: :meth:`Library.resolve_ref`) and load with
``torch.load(..., weights_only=True)`` after the archive checks of :mod:`tui_ft.core.library.ckptfile`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ValidateInputError(ValueError):
    """Bad input to ``validate`` (a checkpoint, a file, an option): one line, exit code 2."""


@dataclass
class Model:
    """A loaded CHGNet with the name it is shown under."""

    role: str  # "finetuned" or "reference"
    label: str  # "run1@best", "pretrained CHGNet 0.3.0"
    model: Any
    ref: str = ""
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def quiet():
    """chgnet prints banners ("CHGNet will run on cpu", "NVT-Berendsen-MD created") on stdout: swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def resolve_checkpoint(ref: str, paths=None):
    """``CheckpointInfo`` of a reference; ValidateInputError saying what was looked for."""
    from tui_ft.core.library.checkpoints import Library

    try:
        return Library(paths).resolve_ref(ref)
    except LookupError as exc:
        raise ValidateInputError(f"{ref}: {exc}") from None


def load_checkpoint_model(ref: str, paths=None, *, role: str = "finetuned") -> Model:
    from tui_ft.core.library.ckptfile import (
        CheckpointError,
        build_model,
        load_checkpoint,
    )
    info = resolve_checkpoint(ref, paths)
    try:
        payload = load_checkpoint(info.path)
        if "model_args" not in payload:
            raise CheckpointError(f"{info.path}: not a tui-ft checkpoint (no model_args)")
        with quiet():
            model = build_model(payload, str(info.path))
    except CheckpointError as exc:
        raise ValidateInputError(str(exc)) from None
    model.eval()
    meta = dict(payload.get("meta") or {})
    return Model(role, info.ref if info.kind in ("best", "last") else str(info.path), model, ref=ref,
                 path=str(info.path), meta=meta)


def pretrained(role: str = "reference") -> Model:
    """chgnet's pretrained model, as ``CHGNet.load()`` gives it (the weights chgnet ships)."""
    from chgnet.model import CHGNet

    with quiet():
        model = CHGNet.load(use_device="cpu", verbose=False)
    model.eval()
    version = getattr(model, "version", None) or "0.3.0"
    return Model(role, f"pretrained CHGNet {version}", model, ref="pretrained")


def load_pair(ref: str, against: str, paths=None) -> tuple[Model, Model | None]:
    """The checkpoint under test and the model it is compared with (``None`` for ``against="none"``)."""
    tuned = load_checkpoint_model(ref, paths)
    if against == "none":
        return tuned, None
    if against == "pretrained":
        return tuned, pretrained()
    return tuned, load_checkpoint_model(against, paths, role="reference")


def predict(model, structures: list, task: str = "efs", batch_size: int = 16) -> list[dict[str, Any]]:
    """chgnet's ``predict_structure`` on a list (energies eV/atom, forces eV/Å, stresses GPa, ASE sign)."""
    if not structures:
        return []
    out = model.predict_structure(list(structures), task=task, batch_size=batch_size)
    return out if isinstance(out, list) else [out]


def results_dir_for(info, paths) -> Path:
    """Where the validation of a checkpoint goes: ``logs/<run>/validate-<kind>/`` when the run's folder
    exists (beside its events), else ``validate-<stem>/`` beside the ``.pt`` file."""
    from tui_ft.core.common.paths import UnsafeName

    try:
        run_dir = paths.run_log_dir(info.run_id)
    except (UnsafeName, ValueError):
        run_dir = None
    pt = Path(info.path)
    if run_dir is not None and run_dir.is_dir() and info.kind in ("best", "last"):
        return run_dir / f"validate-{info.kind}"
    return pt.parent / f"validate-{pt.stem}"
