"""The tui-ft core: presets, data, engine, events, checkpoint library.

Nothing in this package imports Textual; the CLI and the dashboard are thin
front ends over it.
"""
