"""Where tui-ft keeps its files.

Everything lives under one project root: the current directory, or the
folder named by ``TUI_FT_HOME``. Tests point ``TUI_FT_HOME`` at a temporary
folder so they never touch the real library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def default(cls) -> "Paths":
        return cls(Path(os.environ.get("TUI_FT_HOME") or os.getcwd()).resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def data(self) -> Path:
        """Downloaded and generated data files (matbench, demo)."""
        return self.root / "data"

    @property
    def cache(self) -> Path:
        """Graph and feature caches."""
        return Path(os.environ.get("TUI_FT_CACHE") or (self.root / ".cache"))

    def run_log_dir(self, run_id: str) -> Path:
        return self.logs / run_id

    def run_ckpt_dir(self, run_id: str) -> Path:
        return self.checkpoints / run_id
