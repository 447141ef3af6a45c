"""The task seam: what the engine asks of a task, step by step of a run.

A task owns what a model is trained to predict: how the data is read and its labels
kept, which forward object runs CHGNet, how the loss is formed, which metrics are
computed each epoch (named, each with its unit, see :mod:`tui_ft.core.task.metrics`),
which of them "best" minimises (``selection``), and what the test predictions look
like on disk. The engine (:mod:`tui_ft.core.train.engine`) calls, in order:

``load_data(t)``        the dataset ``t.ds``, ``t.n_held_out``, ``t.data_sha``, ``t.splits``
``make_splits(t, ex)``  the splits again without rows whose graphs failed (only when some did)
``labels(t)``           once the graphs are built: the labels of every row
``make_forward(t)``     the object that runs the model on a batch (``t.forward``)
``refit_atomref(t)``    AtomRef fitted to the training labels, before epoch 1
``evaluate(t, part)``   ``{metric: value}`` on ``"val"`` (epoch 0 and after every epoch)
``train_epoch(t, e)``   one pass over the training split: ``({metric: value}, structures)``
``test(t)``             the best weights on the test split: a :class:`TestResult`

``t`` is the :class:`~tui_ft.core.train.engine.Trainer` (preset ``t.p``, model,
device, graphs, splits, optimizer, DDP ``t.dist``, ``t.say``). Adding a task is one
module with one subclass, and a name in :func:`tui_ft.core.task.task_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class TestResult:
    value: float | None  # the selection metric's test counterpart (the run's test_mae)
    metrics: dict[str, float | None] = field(default_factory=dict)  # every named test metric
    predictions: str | None = None  # the predictions file (rank 0), None under DDP's other ranks
    n_test: int = 0


class Task:
    name = "task"
    selection = "val_mae"  # the validation metric whose lowest value is "best"

    def load_data(self, t) -> None:
        raise NotImplementedError

    def make_splits(self, t, exclude=()):
        """The run's splits with the rows ``exclude`` left out (graphs the converter refused)."""
        return t._make_splits(exclude=exclude)

    def resplit(self, t, failed):
        """``t.splits`` again without the rows ``failed``: the task's own split rule with them left
        out, kept to rows of the first split (only those have graphs; a ``test_limit`` would otherwise
        pull in test rows never built). The engine and ``eval``'s rebuilt split both call this."""
        import numpy as np

        gone = {int(r) for r in failed}
        first = t.splits
        built = {int(r) for part in (first.train, first.val, first.test) for r in part} - gone
        s = self.make_splits(t, exclude=sorted(gone))
        keep = lambda a: np.array([int(r) for r in a if int(r) in built], dtype=np.int64)  # noqa: E731
        return replace(s, train=keep(s.train), val=keep(s.val), test=keep(s.test))

    def labels(self, t) -> None:
        raise NotImplementedError

    def make_forward(self, t):
        raise NotImplementedError

    def refit_atomref(self, t) -> None:
        raise NotImplementedError

    def evaluate(self, t, part: str) -> dict[str, float]:
        raise NotImplementedError

    def train_epoch(self, t, epoch: int) -> tuple[dict[str, float], int]:
        raise NotImplementedError

    def predict(self, t, part: str, progress=None):
        raise NotImplementedError

    def test(self, t) -> TestResult:
        raise NotImplementedError

    def train_value(self, metrics: dict[str, float]) -> float | None:
        """The training counterpart of the selection metric (``epoch_end.train_mae``)."""
        return metrics.get("train_" + self.selection.removeprefix("val_"))

    def test_value(self, metrics: dict[str, float]) -> float | None:
        """The test counterpart of the selection metric, from :meth:`evaluate` on ``"test"``."""
        return metrics.get("test_" + self.selection.removeprefix("val_"))
