"""Matbench-layout JSON (pandas "split" orientation, optionally gzipped): ``data.load_matbench``."""

from __future__ import annotations

from pathlib import Path

from tui_ft.core.data.dataset import Dataset, load_matbench


def load(path: Path | str, target: str = "e_form", *, need_target: bool = True) -> Dataset:  # noqa: ARG001
    return load_matbench(path, target)
