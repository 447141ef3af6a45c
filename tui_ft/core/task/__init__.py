"""What a model is trained to predict: one Task object per kind of target (a scalar
property per structure; energies, forces, stresses and magmoms of a potential)."""

from __future__ import annotations

TASKS = ("property", "potential")


def task_for(preset):
    """The task of a preset (``[task] kind``; property when the preset has none). Imports torch."""
    kind = getattr(getattr(preset, "task", None), "kind", "property")
    if kind == "potential":
        from tui_ft.core.task.potential import PotentialTask

        return PotentialTask(preset)
    from tui_ft.core.task.property import PropertyTask

    return PropertyTask()
