"""Test rows that are training rows under another id: a held-out file must hold other structures.

Ids are not enough: the same structures copied into a test file under new ids would be
scored as if unseen (a test MAE far below the honest one). :func:`find_leaks` compares the
structures themselves, in two steps:

1. an exact key (:func:`structure_key`): the reduced formula, the lattice parameters and the
   sorted, wrapped fractional coordinates with their species, rounded; equal keys are the
   same structure written again (in any site order);
2. with ``matcher=True`` (property data: relaxed crystals), pymatgen's ``StructureMatcher``
   on the remaining pairs with the same reduced formula and a volume per atom within 5 %,
   which also finds a shifted origin, a rotated or permuted cell, a supercell. At most
   ``max_pairs`` pairs are compared (the rest keep the exact check only).

Potential frames use the exact key only: frames of one trajectory are similar by nature,
and the group split keeps those apart; what is refused is the same frame in both files.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np

MAX_MATCH_PAIRS = 500


def _as_dict(s: Any) -> dict[str, Any] | None:
    if s is None:
        return None
    if hasattr(s, "value") and callable(s.value):  # a compacted Matbench entry
        s = s.value()
    if isinstance(s, dict):
        return s
    try:
        return s.as_dict()
    except Exception:  # noqa: BLE001 - not a structure: no key
        return None


def _parts(sd: dict[str, Any]) -> tuple[np.ndarray, list[str], np.ndarray]:
    matrix = np.asarray(sd["lattice"]["matrix"], dtype=float).reshape(3, 3)
    species = []
    coords = []
    for site in sd["sites"]:
        sp = site["species"]
        species.append(",".join(f"{x['element']}{float(x.get('occu', 1)):g}" for x in sp))
        coords.append(site["abc"])
    return matrix, species, np.asarray(coords, dtype=float).reshape(-1, 3)


def reduced_formula(species: Sequence[str]) -> str:
    counts = Counter(species)
    g = reduce(math.gcd, counts.values())
    return " ".join(f"{k}{v // g}" for k, v in sorted(counts.items()))


def structure_key(s: Any, *, length_decimals: int = 3, coord_decimals: int = 3) -> tuple | None:
    """An exact, hashable key of a structure (a pymatgen ``Structure`` or its dict), or None when it
    is not one. Equal keys: the same lattice (to 10^-``length_decimals`` Å and 0.01°) and the same
    species at the same fractional coordinates (to 10^-``coord_decimals``), in any site order."""
    sd = _as_dict(s)
    try:
        matrix, species, frac = _parts(sd)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not len(species) or not np.isfinite(matrix).all() or not np.isfinite(frac).all():
        return None
    lengths = np.linalg.norm(matrix, axis=1)
    cos = [matrix[1] @ matrix[2] / (lengths[1] * lengths[2]), matrix[0] @ matrix[2] / (lengths[0] * lengths[2]),
           matrix[0] @ matrix[1] / (lengths[0] * lengths[1])]
    angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    step = 10.0 ** -coord_decimals
    wrapped = np.round(frac % 1.0, coord_decimals) % 1.0  # 0.99999 and 0.0 land together
    wrapped[np.isclose(wrapped, 1.0, atol=step / 2)] = 0.0
    sites = tuple(sorted((sp, *map(float, xyz)) for sp, xyz in zip(species, wrapped)))
    lattice = tuple(np.round(lengths, length_decimals).tolist()) + tuple(np.round(angles, 2).tolist())
    return (reduced_formula(species), len(species), lattice, sites)


def _volume_per_atom(sd: dict[str, Any]) -> float:
    matrix = np.asarray(sd["lattice"]["matrix"], dtype=float).reshape(3, 3)
    return abs(float(np.linalg.det(matrix))) / max(1, len(sd["sites"]))


def find_leaks(
    train: Sequence[Any], test: Sequence[Any], *, matcher: bool = True, max_pairs: int = MAX_MATCH_PAIRS,
) -> dict[int, int]:
    """``{test index: training index}`` for each test structure that is a training structure
    (see the module docstring); entries that are not structures (None) are skipped."""
    keys: dict[tuple, int] = {}
    for i, s in enumerate(train):
        k = structure_key(s)
        if k is not None:
            keys.setdefault(k, i)
    out: dict[int, int] = {}
    rest: list[int] = []
    for j, s in enumerate(test):
        k = structure_key(s)
        if k is None:
            continue
        if k in keys:
            out[j] = keys[k]
        else:
            rest.append(j)
    if not matcher or not rest:
        return out
    by_formula: dict[str, list[tuple[int, float]]] = {}
    for k, i in keys.items():
        sd = _as_dict(train[i])
        by_formula.setdefault(k[0], []).append((i, _volume_per_atom(sd)))  # type: ignore[arg-type]
    pairs: list[tuple[int, int]] = []
    for j in rest:
        sd = _as_dict(test[j])
        formula = structure_key(sd)[0]  # type: ignore[index]
        vpa = _volume_per_atom(sd)  # type: ignore[arg-type]
        pairs += [(j, i) for i, v in by_formula.get(formula, []) if abs(v - vpa) <= 0.05 * max(v, vpa)]
    if not pairs:
        return out
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    sm = StructureMatcher()
    parsed: dict[tuple[str, int], Any] = {}

    def struct(which: str, idx: int):
        if (which, idx) not in parsed:
            src = train if which == "train" else test
            s = src[idx]
            parsed[(which, idx)] = s if isinstance(s, Structure) else Structure.from_dict(_as_dict(s))
        return parsed[(which, idx)]

    for j, i in pairs[:max_pairs]:
        if j in out:
            continue
        try:
            same = sm.fit(struct("test", j), struct("train", i))
        except Exception:  # noqa: BLE001 - a pair the matcher cannot compare is not called a leak
            same = False
        if same:
            out[j] = i
    return dict(sorted(out.items()))


def leak_message(test_id: str, train_id: str) -> str:
    return (f"the same structure as training id {train_id!r} (a test row must not be in the training data; "
            "remove it from one of the two files)")
