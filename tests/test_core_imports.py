"""tui_ft.core must never import Textual or a front end; presets must not need torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "tui_ft" / "core"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _core_modules() -> list[str]:
    """Every module under tui_ft/core, its rooms and their subpackages included."""
    out = []
    for p in sorted(CORE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


FRONT_ENDS = ("tui_ft.cli", "tui_ft.commands_io", "tui_ft.printer", "tui_ft.tui")


def test_core_modules_import_no_front_end():
    """No arrow runs back up: no module of the core imports the CLI, its commands or the
    dashboard, at the top or inside a function (read from the source with ast)."""
    import ast

    bad = []
    for p in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "tui_ft" else [])
            for n in names:
                if any(n == f or n.startswith(f + ".") for f in FRONT_ENDS):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}: imports {n}")
    assert not bad, "\n".join(bad)


def test_every_room_says_what_lives_there():
    """Each folder of the core has an __init__ whose docstring says what lives there."""
    rooms = [d for d in CORE.iterdir() if d.is_dir() and d.name != "__pycache__"]
    assert {"common", "config", "data", "train", "library", "orchestrate"} <= {d.name for d in rooms}
    for d in rooms:
        doc = ast_doc(d / "__init__.py")
        assert doc and len(doc.split()) >= 8, f"{d}: no docstring saying what lives there"


def ast_doc(path: Path) -> str | None:
    import ast

    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


def test_core_modules_do_not_import_textual():
    modules = _core_modules()
    assert "tui_ft.core.config.presets" in modules and "tui_ft.core.train.engine" in modules
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
        "import sys, tui_ft.core.config.presets\n"
        "heavy = [m for m in ('torch', 'chgnet', 'pymatgen', 'textual') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert res.returncode == 0, res.stdout + res.stderr
