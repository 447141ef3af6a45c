"""Command-palette entries (ctrl+p): launch a preset, show a run, continue from a checkpoint."""

from __future__ import annotations

from functools import partial
from typing import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui_ft.tui.launcher import resumable


class TuiFtCommands(Provider):
    """Presets, runs and checkpoints by name."""

    async def startup(self) -> None:
        app = self.app  # the TuiFtApp (tui_ft.tui.app), which imports this module
        self.items: list[tuple[str, str, Callable[[], None]]] = [
            ("Show studies", "tui-ft matbench studies: folds, curves, mean ± std", partial(app.action_show_tab, "studies")),
            ("Show sweeps", "Optuna sweeps: trials, best curve, parameter scatter", partial(app.action_show_tab, "sweeps")),
        ]
        for entry in app.model.preset_entries:
            if entry.ok:
                kind = "plan" if entry.is_plan else "preset"
                self.items.append(
                    (f"Launch {kind} {entry.name}", f"start presets/{entry.path.name} now", partial(app.launch_entry, entry))
                )
                self.items.append(
                    (f"Enqueue {kind} {entry.name}", "add it to the queue: it starts when no run is training", partial(app.enqueue_entry, entry))
                )
        for st in sorted(app.model.runs.values(), key=lambda s: s.sort_key, reverse=True):
            s = st.summary
            self.items.append((f"Show run {s.run_id}", f"{s.status} · preset {s.preset_name}", partial(app.show_run, s.run_id)))
            ours_running = st.launched is not None and st.launched.poll() is None
            if not st.active and not ours_running and resumable(s.run_id, s.status, app.paths) is None:
                self.items.append(
                    (f"Resume run {s.run_id}", f"{s.status}: continue from its last.pt (tui-ft resume)", partial(app.resume, s.run_id))
                )
        for c in app.model.checkpoints:
            self.items.append(
                (f"Continue from {c.ref}", f"pick a preset and train from this checkpoint (val {app.model.checkpoint_val_text(c)})", partial(app.continue_from, c.ref))
            )

    async def discover(self) -> Hits:
        for title, help_text, callback in self.items:
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self.items:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
