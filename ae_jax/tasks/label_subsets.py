"""Label budgets: nested, class-balanced subsets of the training split.

The classification study repeats the probe and the baselines with more and
fewer labels. Budgets are fractions 0.1 %, 1 %, 10 % and 100 % of the
training split, rounded down, keeping those with at least one label per class:
MNIST-sized data (55 000 training images) gets (55, 550, 5 500, 55 000);
digits (1 350) gets (13, 135, 1 350) — 1.35 labels would not cover ten classes.

Subsets are nested and as class-balanced as a budget allows: one fixed order
of the training indices is built by round-robin over the classes (in every
round each class that still has images contributes its next one, in a per-round
shuffled class order), and the subset of budget b is the first b indices of
that order. So every smaller subset is a prefix of every larger one, and any
prefix has class counts that differ by at most one until a class runs out
(55 labels: five classes with 6, five with 5).

These subsets are for the budget study; the protocol's 550-label "labelled"
variant (the first 550 images of the split permutation) is left as it is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import DATASETS

BUDGET_PERMILLE = (1, 10, 100, 1000)  # 0.1 %, 1 %, 10 %, 100 % of the training split
BUDGET_SEED = 0
N_CLASSES = 10


def budgets_for(dataset: str, n_train: int) -> tuple[int, ...]:
    """Label budgets for a training split of n_train images: floor(n_train * f) for
    f in (0.001, 0.01, 0.1, 1), keeping those >= 10 (one label per class)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    out = tuple(b for b in (n_train * k // 1000 for k in BUDGET_PERMILLE) if b >= N_CLASSES)
    if not out:
        raise ValueError(f"{dataset}: {n_train} training images are too few for a label budget (need 10)")
    return out


def balanced_order(y, seed: int = BUDGET_SEED) -> np.ndarray:
    """All indices of y [N] in round-robin class order (see the module docstring): [N] int64."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(y.shape[0])
    queues = {int(c): list(perm[y[perm] == c]) for c in np.unique(y)}
    order: list[int] = []
    depth = 0
    while len(order) < y.shape[0]:
        classes = [c for c in sorted(queues) if len(queues[c]) > depth]
        order += [int(queues[int(c)][depth]) for c in rng.permutation(classes)]
        depth += 1
    return np.asarray(order, np.int64)


def nested_label_subsets(y_train_pool, budgets: Sequence[int] = (55, 550, 5500, 55000),
                         seed: int = BUDGET_SEED) -> dict[int, np.ndarray]:
    """{budget: indices into the training split [budget]}: prefixes of one class-balanced order.

    Nested (each smaller subset is a prefix of each larger one) and balanced:
    class counts differ by at most 1 while every class still has images left.
    Deterministic given (labels, seed). Index arrays are in that order, not sorted.
    """
    y = np.asarray(y_train_pool)
    bad = [b for b in budgets if not 1 <= int(b) <= y.shape[0]]
    if bad:
        raise ValueError(f"label budgets {bad} are outside 1..{y.shape[0]} (the training split's size)")
    order = balanced_order(y, seed)
    return {int(b): order[: int(b)] for b in sorted(budgets)}


def budget_subsets(dataset: str, y_train, seed: int = BUDGET_SEED) -> dict[int, np.ndarray]:
    """nested_label_subsets at budgets_for(dataset, len(y_train))."""
    return nested_label_subsets(y_train, budgets_for(dataset, len(y_train)), seed)


def take_labelled(idx, *arrays, axis: int = 0) -> tuple[np.ndarray, ...]:
    """The labelled rows of each array: np.take(a, idx, axis) for a in arrays.

    For the scratch baselines, take_labelled(idx, x_train, y_train); for the
    linear probe, whose encoder outputs have a leading seed axis [R, N, e],
    take_labelled(idx, h_train, axis=1) and take_labelled(idx, y_train).
    """
    idx = np.asarray(idx)
    return tuple(np.take(np.asarray(a), idx, axis=axis) for a in arrays)
