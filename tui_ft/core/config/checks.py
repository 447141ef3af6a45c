"""Checks that a validated preset can run on this machine, before anything is written.

The preset schema checks values; :func:`check_runnable` checks what they point
at: the ``init`` checkpoint can be loaded and built (a file that is truncated, a
plain state_dict, another architecture or bad ``model_args`` is refused here, not
as a failed run), and ``train.device`` exists. Problems raise
:class:`~tui_ft.core.config.presets.PresetError` at the field's line, so ``tui-ft run``
exits 2 with one line and no run folder. Imports torch (and chgnet for ``init``)
when called.
"""

from __future__ import annotations

from typing import Any, Callable

from tui_ft.core.common.paths import Paths
from tui_ft.core.config.fields import PresetError, PresetErrors

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
    from tui_ft.core.library.checkpoints import Library
    from tui_ft.core.library.ckptfile import (
        CheckpointError,
        build_model,
        load_checkpoint,
    )

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


def potential_problems(preset) -> list[str]:
    """A potential preset's frames, read before any run folder exists: a file that cannot be
    read, a weight > 0 on a label the frames lack (at the weight's line), and frames with a
    missing, misshapen or non-finite weighted label (file, frame, field), unless
    ``data.skip_bad_rows``. Also the test file's, and enough frames for the splits."""
    from tui_ft.core.data.dataset import DataError, preset_source
    from tui_ft.core.data.frames import FrameError, check_frames
    from tui_ft.core.task.potential import (
        FRAME_LABEL,
        frame_leaks,
        read_frames,
        resolve_weights,
        weight_problems,
    )

    d = preset.data
    out: list[str] = []
    try:
        fs = read_frames(preset_source(d.source), preset.task)
        # as the run reads it: with the training file's options (mlearn: its shear order)
        test = read_frames(preset_source(d.test_source), preset.task, like=fs) if d.test_source else None
    except DataError as exc:
        return [str(exc)]
    for field, msg in weight_problems(preset.task, fs) + (weight_problems(preset.task, test) if test else []):
        out.append(str(preset.error(field, msg)))
    if out:
        return out
    weights = resolve_weights(preset.task, fs.labels(), len(fs))
    need = {FRAME_LABEL[k] for k, w in weights.items() if w > 0}
    if not need:
        return [str(preset.error("task.energy_weight", "every target weight is 0: nothing to train"))]
    kept_parts = []
    for part in (fs, test) if test is not None else (fs,):
        try:
            kept = check_frames(part, need, skip_bad=d.skip_bad_rows)
        except FrameError as exc:
            out.append(str(exc) + ("" if d.skip_bad_rows else "; or set data.skip_bad_rows = true to train without them"))
            continue
        kept_parts.append(kept)
        least = 2 if test is not None else 3  # training + validation (+ test when there is no test file)
        if part is fs and len(kept) < least:
            out.append(f"{fs.source}: only {len(kept)} usable frames; at least {least} are needed "
                       f"(training, validation{'' if test is not None else ' and test'})")
    if test is not None and len(kept_parts) == 2 and not out:  # the same frame in both files: a leak
        train_frames, test_frames = list(kept_parts[0].frames), list(kept_parts[1].frames)
        leaks = frame_leaks(train_frames, test_frames)
        if leaks and (not d.skip_bad_rows or len(leaks) == len(test_frames)):
            out += [f"{test.source}: {msg}" for msg in leaks.values()]
            out.append(f"{d.test_source}: {len(leaks)} of {len(test_frames)} test frames are training frames; "
                       "remove them" + ("" if d.skip_bad_rows else
                                        ", or set data.skip_bad_rows = true to test on the others"))
    return out


def preflight(preset) -> list[str]:
    """Problems that stop a run before its folder is made, one message each:

    - a logger of ``[log]`` whose package is missing (names the pip extra);
    - own data (a folder, CSV or extxyz; not Matbench JSON or ``demo``) that cannot be
      read, or that has unusable rows (missing/unparsable structure file, bad or missing
      target, duplicate id), one line per id/frame, unless ``data.skip_bad_rows = true``
      (then the run leaves them out of every split and reports them once).
    """
    from tui_ft.core.train.loggers import check_available

    out = check_available(preset.log)
    d = preset.data
    if preset.task.kind == "potential":
        return out + potential_problems(preset)
    if d.source in ("demo", "matbench_mp_e_form"):
        return out
    from tui_ft.core.data.dataset import DataError, preset_source
    from tui_ft.core.data.sources import (
        check_source_splits,
        detect_format,
        load_training_data,
        problems,
    )

    path = preset_source(d.source)
    try:
        fmt = d.format if d.format != "auto" else detect_format(path)
        if fmt == "matbench" and d.split == "matbench" and not d.test_source:
            return out  # read and split by dataset.check_data (load_and_check)
        test = preset_source(d.test_source) if d.test_source else None
        ds, n_held_out = load_training_data(path, d.target, format=fmt, per_atom=d.per_atom, test_path=test)
    except DataError as exc:
        return out + [str(exc)]
    if ds.bad_rows and not d.skip_bad_rows and fmt != "matbench":  # Matbench JSON: left out and reported, as always
        probs = problems(ds)
        out += [f"{ds.path}: {ident}: {why}" for ident, why in probs]
        out.append(f"{d.source}: {len(probs)} of {len(ds)} rows cannot be used; fix them, or set "
                   "data.skip_bad_rows = true to train on the others (they are left out of every split)")
        return out
    try:  # the run's own splits, with the minimum of Matbench files, before any run folder exists
        check_source_splits(ds, n_held_out=n_held_out, split=d.split, fold=d.fold, fraction=d.fraction,
                            val_fraction=d.val_fraction, seed=d.seed, test_limit=d.test_limit,
                            test_fraction=d.test_fraction)
    except DataError as exc:
        out.append(" ".join(str(exc).split()))
    return out


def load_and_check(path: str, err: Callable[[str], None]):
    """Load a preset or plan and check it as far as can be done before a run folder exists:
    the schema, the data file's ids, targets and splits, the init checkpoint, the device,
    own data formats and loggers (:func:`preflight`). Each problem goes to ``err`` as one
    line; returns the Preset or Plan, or None after a problem."""
    from tui_ft.core.config.dump import check_resources
    from tui_ft.core.config.fields import PresetError, PresetErrors
    from tui_ft.core.config.presets import is_plan_text, parse_preset
    from tui_ft.core.config.tomlfile import TomlFileError, read_text
    from tui_ft.core.data.dataset import check_data, read_columns
    from tui_ft.core.library.checkpoints import Library

    try:
        try:  # read once: PATH may be a pipe, e.g. --preset <(...)
            text = read_text(path, "preset")
        except TomlFileError as exc:
            raise PresetError.from_toml(exc) from None
        if is_plan_text(text):
            from tui_ft.core.orchestrate.plans import check_plan, parse_plan

            plan = parse_plan(text, path)
            check_plan(plan)
            check_plan_runnable(plan)
            return plan
        preset = parse_preset(text, path)
        check_resources(preset, read_columns=read_columns, resolve_init=lambda ref: Library().resolve_ref(ref))
        check_data(preset)  # ids, targets and splits of the data file, before any run folder exists
        check_runnable(preset)  # the init checkpoint loads and fits; the device exists
        problems = preflight(preset)
        for msg in problems:
            err(msg)
        return None if problems else preset
    except PresetErrors as exc:
        for e in exc.errors:
            err(str(e))
    except PresetError as exc:
        err(str(exc))
    return None
