"""Checks that a validated preset can run on this machine, before anything is written.

The preset schema checks values; :func:`check_runnable` checks what they point
at: the ``init`` checkpoint can be loaded and built (a file that is truncated, a
plain state_dict, another architecture or bad ``model_args`` is refused here, not
as a failed run), and ``train.device`` exists. Problems raise
:class:`~tui_ft.core.presets.PresetError` at the field's line, so ``tui-ft run``
exits 2 with one line and no run folder. Imports torch (and chgnet for ``init``)
when called.
"""

from __future__ import annotations

from typing import Any

from tui_ft.core.paths import Paths
from tui_ft.core.presets import PresetError, PresetErrors

__all__ = ["device_problem", "init_problem", "check_runnable", "check_plan_runnable"]


def device_problem(name: str) -> str | None:
    """Why ``train.device = name`` cannot be used here, or None."""
    if name in ("auto", "cpu"):
        return None
    if not name.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return f'"{name}" but no CUDA device is available on this machine (use "cpu" or "auto")'
    _, _, idx = name.partition(":")
    if idx:
        n = torch.cuda.device_count()
        if int(idx) >= n:
            return f'"{name}" but this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})'
    return None


def init_problem(ref: str, paths: Paths | None = None) -> str | None:
    """Why checkpoint ``ref`` (``RUN@best``, a path...) cannot start a run, or None.
    The checkpoint is loaded and its model built (weights checked against model_args)."""
    from tui_ft.core.library import CheckpointError, Library, build_model, load_checkpoint

    try:
        info = Library(paths).resolve_ref(ref)
    except LookupError as exc:
        return exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    try:
        build_model(load_checkpoint(info.path), str(info.path))
    except CheckpointError as exc:
        msg = str(exc)
        return msg if msg.startswith(ref) else f"{ref}: {msg}"
    return None


def check_runnable(preset: Any, *, paths: Paths | None = None, prefix: str = "", init: str | None = None) -> None:
    """Raise PresetError(s) if ``preset`` cannot run here (its ``init`` checkpoint, its device).
    ``init``: the reference to check instead of ``preset.model.init`` (a plan stage's)."""
    errors: list[PresetError] = []

    def add(field: str, msg: str) -> None:
        e = preset.error(field, msg)
        if prefix:
            e = PresetError(e.file, e.line, f"{prefix}{field}", e.message)
        errors.append(e)

    why = device_problem(preset.train.device)
    if why:
        add("train.device", why)
    ref = init if init is not None else preset.model.init
    if ref and not ref.startswith("previous@"):  # a plan's previous stage: resolved when it starts
        why = init_problem(ref, paths)
        if why:
            add("model.init", why)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PresetErrors(errors)


def check_plan_runnable(plan: Any, *, paths: Paths | None = None) -> None:
    """:func:`check_runnable` for every stage (``previous@...`` is resolved when the stage starts)."""
    errors: list[PresetError] = []
    for st in plan.stages:
        init = st.init if st.init else None
        if init and init.startswith("previous@"):
            init = ""
        try:
            check_runnable(
                st.preset, paths=paths, init=init,
                prefix=f"stage[{st.number}]." if getattr(st, "source", None) == "inline" else "",
            )
        except PresetError as exc:
            errors.extend(exc.errors)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PresetErrors(errors)
