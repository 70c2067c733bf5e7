"""The reference classifier as the quality tasks use it: one per results folder, loaded once per process.

The classifier (``ae_jax.tasks.classifier``) is trained on the dataset's
real training images (the "full" split) and cached in
``<results root>/reference_classifier/`` (``REFERENCE_DIR``), beside the run
folders: a run folder's parent is its results root. Every quality task of
every run under that root reads the same classifier; within one process it
is loaded once, and so are its features of the test set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .classifier import RefClassifier, get_reference_classifier

REFERENCE_DIR = "reference_classifier"

_LOADED: dict[tuple[str, str], RefClassifier] = {}
_TEST: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_TRAIN_FD: dict[tuple, float] = {}


def reference_dir(run_dir) -> Path:
    """Where the classifier of a run folder's results root is cached."""
    return Path(run_dir).parent / REFERENCE_DIR


def _key(ctx) -> tuple[str, str]:
    return ctx.cfg.dataset, str(reference_dir(ctx.run_dir).resolve())


def reference_classifier(ctx) -> RefClassifier:
    """The classifier of ctx's dataset and results root (trained on its full training split the first time)."""
    k = _key(ctx)
    if k not in _LOADED:
        _LOADED[k] = get_reference_classifier(ctx.cfg.dataset, ctx.splits("full"), reference_dir(ctx.run_dir),
                                              log=ctx.log, command=ctx.command)
    return _LOADED[k]


def real_test_features(ctx) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's (features [T, F], probabilities [T, 10]) of the dataset's test images, computed once."""
    k = _key(ctx)
    if k not in _TEST:
        _TEST[k] = reference_classifier(ctx).features_and_probs(ctx.splits("full").x_test)
    return _TEST[k]


def real_train_frechet(ctx, n: int) -> float:
    """Fréchet distance between the first min(n, N) real training images and the test set (the classifier's
    features): what a generator that reproduced the training data would score. Computed once per n."""
    from .quality_measures import frechet_distance
    k = _key(ctx) + (int(n),)
    if k not in _TRAIN_FD:
        x = ctx.splits("full").x_train[:n]
        _TRAIN_FD[k] = frechet_distance(reference_classifier(ctx).features(x), real_test_features(ctx)[0])
    return _TRAIN_FD[k]


def forget() -> None:
    """Drop the loaded classifiers (a test that rewrites a cache folder starts afresh)."""
    _LOADED.clear()
    _TEST.clear()
    _TRAIN_FD.clear()
