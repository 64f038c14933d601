"""Seeded, stratified train/val/test splits and few-shot (N per class) subsets.

All indices index the source's *train* set. Splits are sorted, disjoint and
depend only on the targets and the seed.

* The test split is carved (``test_split``, stratified) only when the source
  has no test split of its own (``has_test=False``); otherwise ``test`` is
  empty and ``test_from_source`` is True: evaluate on ``Source.test``.
* The validation split is ``val_split`` of what remains, stratified.
* Few-shot (``per_class=N``): train is exactly N seeded images per class from
  what remains after the test split; val is drawn from the rest, per class
  ``min(20, ceil(val_split * n_c), rest_c)`` images (``n_c``: the class's
  images after the test split), so validation stays balanced and cheap even
  on a large source.
* When scikit-learn cannot stratify (a class with a single image, or fewer
  held-out images than classes), each class is split on its own: it holds
  out ``round(fraction * n_c)`` images but always keeps at least one for
  training. If that holds out nothing, DataError says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from transferkit.errors import DataError

VAL_PER_CLASS_CAP = 20
"""Most validation images per class when ``per_class`` (few-shot) is set."""


@dataclass
class Splits:
    """Index arrays (int64, sorted) into the source's train set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_from_source: bool = False


def make_splits(
    targets: Sequence[int] | np.ndarray,
    *,
    val_split: float = 0.15,
    test_split: float = 0.2,
    seed: int = 0,
    has_test: bool = False,
    per_class: int | None = None,
    classes: Sequence[str] | None = None,
) -> Splits:
    """Split ``targets`` (the source train set's labels) into train/val/test.

    ``classes`` only names classes in error messages. See the module
    docstring for the rules; raises DataError when a split is impossible.
    """
    targets = np.asarray(targets, dtype=np.int64)
    for name, frac in (("val_split", val_split), ("test_split", test_split)):
        if not 0.0 <= frac < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {frac}")
    pool = np.arange(len(targets), dtype=np.int64)
    test = np.empty(0, dtype=np.int64)
    if not has_test and test_split > 0:
        pool, test = _stratified_split(pool, targets, test_split, seed, "test")

    if per_class is None:
        train, val = (
            _stratified_split(pool, targets, val_split, seed, "validation") if val_split > 0
            else (pool, np.empty(0, dtype=np.int64))
        )
    else:
        train = pool[few_shot_indices(targets[pool], per_class, seed, classes=classes)]
        val = _few_shot_val(pool, train, targets, val_split, seed)
    return Splits(train=np.sort(train), val=np.sort(val), test=np.sort(test), test_from_source=has_test)


def few_shot_indices(
    targets: Sequence[int] | np.ndarray,
    per_class: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Positions of exactly ``per_class`` seeded-random images of every class
    present in ``targets`` (sorted). DataError if a class has fewer."""
    targets = np.asarray(targets, dtype=np.int64)
    if per_class < 1:
        raise DataError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        if len(members) < per_class:
            raise DataError(
                f"class {_class_name(c, classes)} has only {len(members)} training image(s), "
                f"fewer than per-class {per_class}; lower --per-class to {len(members)} or add images"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def cap_per_class(indices: Sequence[int] | np.ndarray, targets: Sequence[int] | np.ndarray, cap: int,
                  seed: int) -> np.ndarray:
    """At most ``cap`` seeded-random positions of every class among ``indices`` (sorted);
    ``targets[i]`` is the class of position ``i``. Used to evaluate on a smaller test set."""
    indices, targets = np.asarray(indices, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed + 2)  # independent of the train and val draws
    kept = [rng.permutation(indices[targets[indices] == c])[:cap] for c in np.unique(targets[indices])]
    return np.sort(np.concatenate(kept)) if kept else indices


def _stratified_split(
    pool: np.ndarray, targets: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``pool`` into (kept, held_out), held_out ~ ``fraction``, stratified by class."""
    y = targets[pool]
    try:
        kept, held = train_test_split(pool, test_size=fraction, stratify=y, random_state=seed)
        if np.array_equal(np.unique(targets[kept]), np.unique(y)):
            return kept, held
    except ValueError:
        pass  # too few images for sklearn's stratification: split each class on its own
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(y):
        members = rng.permutation(pool[y == c])
        n_held = min(round(fraction * len(members)), len(members) - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    held_out = np.concatenate(held)
    if len(held_out) == 0:
        raise DataError(
            f"too few images ({len(pool)} in {len(np.unique(y))} classes) to hold out a stratified "
            f"{what} split of {fraction:g}; add images or set that split to 0"
        )
    return np.concatenate(kept), held_out


def _few_shot_val(
    pool: np.ndarray, train: np.ndarray, targets: np.ndarray, val_split: float, seed: int
) -> np.ndarray:
    """Per class, ``min(20, ceil(val_split * n_c), rest_c)`` seeded images not in ``train``."""
    if val_split == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed + 1)  # independent of the few-shot draw
    rest = np.setdiff1d(pool, train)
    val = []
    for c in np.unique(targets[pool]):
        n_c = int(np.sum(targets[pool] == c))
        members = rest[targets[rest] == c]
        k = min(VAL_PER_CLASS_CAP, math.ceil(val_split * n_c), len(members))
        val.append(rng.choice(members, size=k, replace=False))
    return np.concatenate(val) if val else np.empty(0, dtype=np.int64)


def _class_name(c: int, classes: Sequence[str] | None) -> str:
    return f"{classes[c]!r}" if classes is not None else str(int(c))
