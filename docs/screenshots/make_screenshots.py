"""Regenerate the text screenshots in this folder from the real dashboard.

    python docs/screenshots/make_screenshots.py [--keep DIR]

Copies the shipped ``presets/`` into a fresh project folder, trains ``demo``
and then ``demo_full`` (continued from ``demo@best``) headless on the offline
demo data, opens ``tui-ft`` on that folder at 120x40 with Textual's pilot and
writes each tab as text (``tui_ft.tui.screenshots.screen_text``): what a new
user sees after the README's demo. Run ids and times are those of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SIZE = (120, 40)


def train(root: Path, preset: str) -> str:
    env = {**os.environ, "TUI_FT_HOME": str(root)}
    before = set(os.listdir(root / "logs")) if (root / "logs").is_dir() else set()
    subprocess.run([sys.executable, "-m", "tui_ft", "run", f"presets/{preset}.toml", "--plain"], cwd=root, env=env, check=True)
    (run_id,) = set(os.listdir(root / "logs")) - before
    return run_id


async def shoot(root: Path, demo: str, full: str) -> dict[str, str]:
    from tui_ft.tui.app import TuiFtApp
    from tui_ft.tui.screenshots import screen_text

    async def screen(pilot) -> str:
        """The screen once the footer is drawn (it is rebuilt when the keys change)."""
        for _ in range(100):
            await pilot.pause(0.05)
            text = screen_text(pilot.app)
            if "? Help" in text:
                return text
        return text

    app = TuiFtApp()
    shots = {}
    async with app.run_test(size=SIZE) as pilot:
        while app.scans < 1:
            await pilot.pause(0.05)
        app.sub_title = "~/tui-ft"
        app.presets_pane.select("demo_full.toml")
        await pilot.pause(0.5)
        shots["presets.txt"] = await screen(pilot)
        app.show_run(demo)
        await pilot.pause()
        app.runs_pane.action_toggle_overlay()
        app.show_run(full)
        await pilot.pause(1.0)
        shots["runs.txt"] = await screen(pilot)
        app.runs_pane.log_scale = True
        await pilot.pause(0.5)
        shots["runs-log-scale.txt"] = await screen(pilot)
        app.runs_pane.log_scale = False
        app.runs_pane.action_next_chart()
        await pilot.pause(0.5)
        shots["runs-parity.txt"] = await screen(pilot)
        app.runs_pane.query_one("#chart-tabs").active = "tab-curve"  # back to the learning curve
        app.runs_pane.action_compare()  # demo is pinned (overlaid), demo_full selected
        for _ in range(40):
            await pilot.pause(0.05)
        shots["runs-compare.txt"] = screen_text(app)
        app.pop_screen()
        await pilot.pause()
        app.runs_pane.action_filter()
        app.runs_pane.query_one("#runs-filter").value = "finetune.mode = full"
        app.runs_pane.apply_filter("finetune.mode = full")
        await pilot.pause(0.5)
        shots["runs-filter.txt"] = await screen(pilot)
        app.runs_pane.apply_filter("")
        await pilot.pause()
        app.action_show_tab("library")
        await pilot.pause()
        app.library_pane.select(f"{full}@best")
        await pilot.pause(0.5)
        shots["library-lineage.txt"] = await screen(pilot)
    return shots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="make the project here and keep it (default: a temporary folder); runs already there are reused")
    args = ap.parse_args()
    root = (args.keep or Path(tempfile.mkdtemp(prefix="tui-ft-shots-"))) / "tui-ft"
    (root / "presets").mkdir(parents=True, exist_ok=True)
    for p in sorted((REPO / "presets").glob("*.toml")):
        shutil.copy(p, root / "presets" / p.name)
    runs = sorted(os.listdir(root / "logs")) if (root / "logs").is_dir() else []
    demo = next((r for r in runs if r.startswith("demo-")), None) or train(root, "demo")
    full = next((r for r in runs if r.startswith("demo_full-")), None) or train(root, "demo_full")
    os.environ["TUI_FT_HOME"] = str(root)
    os.chdir(root)
    shots = asyncio.run(shoot(root, demo, full))
    for name, text in shots.items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    if args.keep is None:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
