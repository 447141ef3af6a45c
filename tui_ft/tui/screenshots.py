"""The dashboard's screen as plain text (for tests and docs/screenshots/).

``screen_text(app)`` renders the current screen the way
``App.export_screenshot`` does for SVG, but as text: one line per terminal row.
"""

from __future__ import annotations

import io

from rich.console import Console


def screen_text(app) -> str:
    """The running app's current screen, as text (trailing spaces stripped)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True,
        color_system="truecolor", record=True, legacy_windows=False, safe_box=False,
    )
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    console.print(update)
    text = console.export_text(styles=False)
    return "\n".join(line.rstrip() for line in text.splitlines()[:height]) + "\n"
