"""tui_ft.core must never import Textual; presets must not need torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "tui_ft" / "core"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_core_modules_do_not_import_textual():
    modules = sorted(
        "tui_ft.core" if p.name == "__init__.py" else f"tui_ft.core.{p.stem}" for p in CORE.glob("*.py")
    )
    assert "tui_ft.core.presets" in modules
    code = f"""
import importlib, sys, traceback
failed = []
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\\n" + traceback.format_exc())
    loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    if loaded:
        print("TEXTUAL", name, loaded[:5])
        sys.exit(3)
if failed:
    print("IMPORT FAILED", *failed, sep="\\n")
    sys.exit(4)
print("OK", len({modules!r}))
"""
    res = _run(code)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("OK")


def test_presets_import_without_heavy_dependencies():
    res = _run(
        "import sys, tui_ft.core.presets\n"
        "heavy = [m for m in ('torch', 'chgnet', 'pymatgen', 'textual') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert res.returncode == 0, res.stdout + res.stderr
