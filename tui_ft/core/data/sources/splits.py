"""Splits besides Matbench's folds: a seeded random split, and a separate test file.

Both return :class:`tui_ft.core.data.dataset.Splits` with the same conventions as
``data.make_splits``: the validation rows are ``round(val_fraction * len(train
part))`` rows drawn with ``seed``; ``fraction`` keeps that share of the rest for
training; ``exclude`` rows (bad rows, failed graphs) are removed from every
part; the parts are checked to be disjoint.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Sequence

import numpy as np

from tui_ft.core.data.dataset import Dataset, DataError, Splits


def _finish(train_part: np.ndarray, test: np.ndarray, *, fraction: float, val_fraction: float, seed: int,
            exclude: Sequence[int]) -> Splits:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(train_part, dtype=np.int64))
    n_val = max(1, int(round(val_fraction * len(perm)))) if len(perm) > 1 else 0
    val, rest = perm[:n_val], perm[n_val:]
    n_train = max(1, int(round(fraction * len(rest)))) if len(rest) else 0
    train = rest[:n_train]
    bad = set(int(i) for i in exclude)
    keep = lambda rows: np.array([int(r) for r in rows if int(r) not in bad], dtype=np.int64)  # noqa: E731
    s = Splits(np.sort(keep(train)), np.sort(keep(val)), np.sort(keep(test)), tuple(sorted(bad)))
    s.check_disjoint()
    return s


def random_split(
    n: int, test_fraction: float, seed: int = 0, *, val_fraction: float = 0.1, fraction: float = 1.0,
    exclude: Sequence[int] = (),
) -> Splits:
    """A seeded random train/val/test split of ``n`` rows: ``round(test_fraction * n)`` test rows
    (drawn with ``seed``), validation and training rows from the rest as in ``make_splits``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if n < 3:
        raise DataError(f"need at least 3 rows for a train/validation/test split, got {n}")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_test = min(n - 2, max(1, int(round(test_fraction * n))))
    return _finish(perm[n_test:], perm[:n_test], fraction=fraction, val_fraction=val_fraction, seed=seed,
                   exclude=exclude)


def held_out_splits(
    n_train_rows: int, n_test_rows: int, *, val_fraction: float = 0.1, fraction: float = 1.0, seed: int = 0,
    exclude: Sequence[int] = (),
) -> Splits:
    """Splits over :func:`concat_datasets` rows: the test part is the test file's rows
    (``n_train_rows ..``), validation and training rows come from the training file's."""
    if n_train_rows < 2 or n_test_rows < 1:
        raise DataError(f"need at least 2 training rows and 1 test row, got {n_train_rows} and {n_test_rows}")
    return _finish(np.arange(n_train_rows), np.arange(n_train_rows, n_train_rows + n_test_rows),
                   fraction=fraction, val_fraction=val_fraction, seed=seed, exclude=exclude)


class _Concat(collections.abc.Sequence):
    """The structures of two datasets end to end; a structure that fails to parse lands in ``bad``."""

    def __init__(self, a: Dataset, b: Dataset, bad: dict[int, str]):
        self._a, self._b, self._bad = a, b, bad

    def __len__(self) -> int:
        return len(self._a) + len(self._b)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        ds, j = (self._a, i) if i < len(self._a) else (self._b, i - len(self._a))
        s = ds.structures[j]
        if s is None and j in ds.bad_rows:
            self._bad.setdefault(i, ds.bad_rows[j])
        return s

    @property
    def _dicts(self) -> list[Any]:
        return list(getattr(self._a.structures, "_dicts", [])) + list(getattr(self._b.structures, "_dicts", []))


def concat_datasets(train: Dataset, test: Dataset) -> Dataset:
    """The training file's rows then the test file's, as one dataset (use :func:`held_out_splits`).

    Raises ``DataError`` listing the ids found in both files: the held-out set must be disjoint.
    """
    import hashlib

    both = sorted(set(train.ids) & set(test.ids))
    if both:
        shown = ", ".join(both[:10]) + (f" ... ({len(both)} in all)" if len(both) > 10 else "")
        raise DataError(f"{test.path}: ids also in the training data {train.path}: {shown}")
    if train.target != test.target:
        raise DataError(f"{test.path}: target {test.target!r} differs from the training data's {train.target!r}")
    bad = dict(train.bad_structures)
    bad.update({len(train) + r: why for r, why in test.bad_structures.items()})
    bad_targets = dict(train.bad_targets)
    bad_targets.update({len(train) + r: why for r, why in test.bad_targets.items()})
    sha = hashlib.sha256(f"{train.sha256}+{test.sha256}".encode()).hexdigest()
    ds = Dataset(train.path, train.target, list(train.ids) + list(test.ids), None,  # type: ignore[arg-type]
                 np.concatenate([train.targets, test.targets]), sha, bad_structures=bad, bad_targets=bad_targets)
    ds.structures = _Concat(train, test, bad)
    return ds


SPLITS = ("matbench", "random")


def make_source_splits(
    n: int, *, n_held_out: int = 0, split: str = "matbench", fold: int = 0, fraction: float = 1.0,
    val_fraction: float = 0.1, seed: int = 0, test_limit: int = 0, test_fraction: float = 0.2,
    exclude: Sequence[int] = (),
) -> Splits:
    """The one entry point for a run's splits over ``n`` rows.

    ``n_held_out`` > 0: the last ``n_held_out`` rows are a separate test file
    (:func:`concat_datasets`) and are the test set; otherwise ``split``
    ``"matbench"`` (the default: ``data.make_splits``, fold ``fold``) or
    ``"random"`` (:func:`random_split` with ``test_fraction``). ``test_limit``
    keeps the first rows of the test set, as in ``make_splits``.
    """
    from tui_ft.core.data.dataset import make_splits

    if n_held_out:
        s = held_out_splits(n - n_held_out, n_held_out, val_fraction=val_fraction, fraction=fraction, seed=seed,
                            exclude=exclude)
    elif split == "matbench":
        return make_splits(n, fold=fold, fraction=fraction, val_fraction=val_fraction, seed=seed,
                           test_limit=test_limit, exclude=exclude)
    elif split == "random":
        s = random_split(n, test_fraction, seed, val_fraction=val_fraction, fraction=fraction, exclude=exclude)
    else:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if test_limit:
        s = Splits(s.train, s.val, s.test[:test_limit], s.excluded)
    return s


def check_source_splits(
    ds: Dataset, *, n_held_out: int = 0, split: str = "matbench", fold: int = 0, fraction: float = 1.0,
    val_fraction: float = 0.1, seed: int = 0, test_limit: int = 0, test_fraction: float = 0.2,
) -> Splits:
    """The run's splits (:func:`make_source_splits`, every bad row left out), made before a run folder
    exists, with the minimum of ``data.check_dataset`` for Matbench files: some row usable, at least
    ``MIN_TRAIN_ROWS`` training rows, a validation and a test row, each of them a structure that
    parses (structures are parsed until that many are found, so a file whose every structure is
    unreadable is refused here, not after the run folder exists). ``DataError`` naming the file."""
    from tui_ft.core.data.dataset import MIN_TRAIN_ROWS, _examples, parse_enough

    n = len(ds)
    where = f"{ds.path}" + (" and its test_source" if n_held_out else "")

    def make() -> Splits:
        bad = sorted(ds.bad_rows)
        if n and len(bad) == n:
            raise DataError(f"{where}: none of the {n} rows is usable ({_examples(ds, bad)})")
        try:
            return make_source_splits(n, n_held_out=n_held_out, split=split, fold=fold, fraction=fraction,
                                      val_fraction=val_fraction, seed=seed, test_limit=test_limit,
                                      test_fraction=test_fraction, exclude=bad)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None

    s = make()
    if parse_enough(ds, s):
        s = make()  # structures found unreadable just now are left out too
    bad = ds.bad_rows
    left = f"; {len(bad)} of {n} rows left out ({_examples(ds, sorted(bad))})" if bad else f" of {n} rows"
    how = "the test_source split" if n_held_out else f"fold {fold}" if split == "matbench" else f"the {split} split"
    if len(s.train) < MIN_TRAIN_ROWS:
        raise DataError(f"{where}: only {len(s.train)} usable training rows in {how} "
                        f"(at least {MIN_TRAIN_ROWS} are needed){left}")
    for name, part in (("validation", s.val), ("test", s.test)):
        if len(part) == 0:
            raise DataError(f"{where}: no usable {name} rows in {how}{left}")
    return s
