"""How a run stops early: failed (the message is for the user), interrupted, pruned, refused."""

from __future__ import annotations


class TrainingFailed(Exception):
    """The run cannot go on (divergence, bad data); the message is for the user."""


class Interrupted(Exception):
    pass


class Pruned(Exception):
    """A sweep's pruner stopped the run after an epoch (``RunContext.on_epoch``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RunRefused(Exception):
    """A run that must not start (nothing is written): its lock is held by a live
    process, or a resume of a finished run or of a run without last.pt."""
