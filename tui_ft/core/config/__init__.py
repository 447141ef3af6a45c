"""Presets: TOML reading with line numbers, the pydantic schema and its checks,
and the pre-run checks of what a preset points at (files, checkpoints, devices)."""
