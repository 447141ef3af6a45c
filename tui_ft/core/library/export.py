"""Export a tui-ft checkpoint as a file chgnet loads: ``CHGNet.from_file(out)``.

chgnet's ``CHGNet.from_file`` reads ``torch.load(path)["model"]`` and passes it
to ``CHGNet.from_dict``, which builds ``CHGNet(**model_args)`` and loads
``state_dict``. A tui-ft checkpoint holds the same two things under other names
(``model_args``, ``model_state``; ``library.save_checkpoint``), so the export is
a renaming: no weight is changed. The refit AtomRef of a head-mode run is part
of the state dict (``composition_model.fc.weight``) and the rebuilt AtomRef is
marked fitted by ``CHGNet.__init__`` (``composition_model="MPtrj"``), so the
exported model's energy output ``e`` is exactly tui-ft's prediction.

What that output means: CHGNet's ``e`` is "energy per atom"; after fine-tuning
on a target it is the model's prediction of that target (for ``e_form``: the
formation energy in eV/atom). Forces and stresses from the exported model are
derivatives of that quantity and have no physical meaning unless the target is
a total energy per atom. A potential's checkpoint (its preset's ``[task] kind =
"potential"``) was trained on energies, forces and stresses, and its export says so.

The file also carries ``tui_ft``: plain metadata (run id, target, unit, data
hash, versions), and holds only tensors and plain data, so it loads with
``torch.load(..., weights_only=True)`` too. It is written atomically and, by
default, checked by loading it back with ``CHGNet.from_file`` and comparing every
tensor with the checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tui_ft.core.common.atomic import atomic_write
from tui_ft.core.library.ckptfile import CheckpointError, load_checkpoint

EXPORT_FORMAT = "tui-ft-export/1"
POTENTIAL_OUTPUT = ("a potential: energy 'e' in eV/atom, forces 'f' in eV/Å, stresses 's' in GPa "
                    "(ASE's sign, tensile positive; CHGNetCalculator gives eV/Å³), magmoms 'm' in μB")


class ExportError(Exception):
    """An export that could not be written or did not round-trip (one-line message)."""


def _plain(obj: Any) -> Any:
    """``obj`` reduced to JSON-able plain data (so the file stays weights_only-loadable)."""
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)


def export_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The exported file's content for a loaded checkpoint payload."""
    from tui_ft.core.common.units import default_unit

    args = dict(payload["model_args"])
    bad = [k for k, v in args.items() if not isinstance(v, (str, int, float, bool, list, tuple, type(None)))]
    if bad:
        raise ExportError(f"model_args {', '.join(bad)} are not plain values; chgnet could not rebuild this model")
    meta = dict(payload.get("meta") or {})
    preset = meta.get("preset") if isinstance(meta.get("preset"), dict) else {}
    data = preset.get("data") if isinstance(preset.get("data"), dict) else {}
    task = preset.get("task") if isinstance(preset.get("task"), dict) else {}
    if task.get("kind") == "potential":
        target, unit, output = "energy", "eV/atom", POTENTIAL_OUTPUT
    else:
        target = data.get("target") or "e_form"
        unit = data.get("unit") if isinstance(data.get("unit"), str) else default_unit(target, meta.get("data_source"))
        output = f"the energy output 'e' is the predicted {target!r}" + (f" in {unit}" if unit else "")
    info = {
        "format": EXPORT_FORMAT,
        "run_id": meta.get("run_id"),
        "kind": meta.get("kind"),
        "preset_name": meta.get("preset_name"),
        "epoch": meta.get("epoch"),
        "val_mae": meta.get("val_mae"),
        "test_mae": meta.get("test_mae"),
        "mode": meta.get("mode"),
        "target": target,
        "unit": unit,
        "output": output,
        "data_source": meta.get("data_source"),
        "data_sha256": meta.get("data_sha256"),
        "versions": meta.get("versions"),
    }
    return {
        "model": {"model_args": args, "state_dict": {k: v.detach().cpu() for k, v in payload["model_state"].items()}},
        "tui_ft": _plain(info),
    }


def verify_export(out_path: Path | str, payload: dict[str, Any]) -> None:
    """Load ``out_path`` with chgnet's own ``CHGNet.from_file`` and check every tensor equals the checkpoint's."""
    import torch

    from tui_ft.core.train.setup import _quiet_stdout

    with _quiet_stdout():
        from chgnet.model import CHGNet

        try:
            model = CHGNet.from_file(str(out_path))
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{out_path}: CHGNet.from_file cannot load the export ({type(exc).__name__}: {exc})") from None
    got = model.state_dict()
    want = payload["model_state"]
    if set(got) != set(want):
        diff = sorted(set(got) ^ set(want))[:5]
        raise ExportError(f"{out_path}: exported model's weights differ in names from the checkpoint's: {diff}")
    for k, v in want.items():
        if not torch.equal(got[k].cpu(), v.cpu()):
            raise ExportError(f"{out_path}: weight {k} differs after loading the export")
    cm = getattr(model, "composition_model", None)
    if cm is not None and not getattr(cm, "fitted", True):
        raise ExportError(f"{out_path}: the exported model's AtomRef is not marked fitted")


def export_checkpoint(ckpt_path: Path | str, out_path: Path | str, *, verify: bool = True, force: bool = False,
                      paths=None) -> Path:
    """Write ``out_path`` that ``chgnet.model.CHGNet.from_file`` loads; return its path.

    ``out_path`` must pass :func:`tui_ft.core.common.outputs.check_output_path` (not the
    checkpoint itself, nothing under ``logs/`` or ``checkpoints/`` of ``paths``, no device,
    FIFO, link or folder; an existing file only with ``force``), checked before anything is read.

    Raises :class:`tui_ft.core.library.checkpoints.CheckpointError` for a checkpoint that cannot
    be read and :class:`ExportError` when the export cannot be written or checked
    (a file that fails the check is removed).
    """
    import torch

    from tui_ft.core.common.outputs import OutputPathError, check_output_path

    try:
        out = check_output_path(out_path, inputs=[ckpt_path], paths=paths, force=force, what="OUT", example="model.pt")
    except OutputPathError as exc:
        raise ExportError(str(exc)) from None
    payload = load_checkpoint(ckpt_path)
    if "model_args" not in payload:
        raise CheckpointError(f"{ckpt_path}: not a tui-ft checkpoint (no model_args)")
    content = export_payload(payload)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda fh: torch.save(content, fh))
    except OSError as exc:
        raise ExportError(f"{out}: cannot write ({exc.strerror or exc})") from None
    if verify:
        try:
            verify_export(out, payload)
        except ExportError:
            out.unlink(missing_ok=True)
            raise
    return out


def read_export_info(path: Path | str) -> dict[str, Any]:
    """The ``tui_ft`` metadata of an exported file (``{}`` for a plain chgnet file)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    return dict(obj.get("tui_ft") or {}) if isinstance(obj, dict) else {}
