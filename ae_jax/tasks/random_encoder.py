"""The random-encoder classification baseline: the published "from scratch" 0.4364, as it ran.

The original study's from-scratch classifier built the dense encoder plus a
linear layer but gave its optimiser only the linear layer's parameters. With
encoder freezing switched off, the encoder therefore kept its random initial
weights while running in training mode: its BatchNorm layers normalised each
batch with the batch's statistics and updated their running statistics
(PyTorch momentum 0.1) on every training forward pass; evaluation (model in
eval mode) used those running statistics. Only the linear layer learned.

``random_encoder_baseline_one`` reproduces that with the architecture,
initialisation, optimiser (Adam 1e-3 on the head), batches (32, the last
partial batch dropped) and early stopping (<= 20 epochs, patience 3 on
validation accuracy) of ``tasks.scratch_baseline_one``; only the head gets
gradients. Every seed trains in one compiled program (``jax.vmap`` over keys).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..trainer import map_runs, run_keys
from .scratch import LabelledBaseline, classifier_baseline_one, classifier_program

TASK_STREAM = 3  # fold_in index of run_keys(seed)["task"]: the probe uses 1, the scratch baseline 2


def random_encoder_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim: int = 20) -> dict:
    """Random (untrained) dense encoder + trained linear layer on the labelled images, one key.

    Returns {"val_accuracy", "test_accuracy", "best_epoch"} (scalars), as
    ``scratch.classifier_baseline_one`` with only the head trained.
    """
    return classifier_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim, head_only=True)


def random_encoder_train(key, x_tr, y_tr, epochs: int, latent_dim: int = 20) -> tuple[dict, dict]:
    """(initial, final) variables {"params", "batch_stats"} after `epochs` epochs of the baseline's training.

    The same training steps as random_encoder_baseline_one without the
    stopping rule: for checking what the training changes (the head and the
    running statistics) and what it leaves alone (every encoder parameter).
    """
    _, init, train_epoch = classifier_program(key, x_tr, y_tr, latent_dim, head_only=True)
    final, _ = jax.lax.scan(lambda c, e: (train_epoch(c, e), None), init, jnp.arange(epochs))
    as_vars = lambda c: {"params": c[0], "batch_stats": c[1]}  # noqa: E731
    return as_vars(init), as_vars(final)


def random_encoder_baseline(seeds: Sequence[int], x_tr, y_tr, x_val, y_val, x_te, y_te,
                            latent_dim: int = 20) -> dict[str, np.ndarray]:
    """All seeds in one program: {"val_accuracy", "test_accuracy", "best_epoch"}, each [R]."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], TASK_STREAM) for s in seeds])
    return map_runs(_program(latent_dim), (keys,), (x_tr, y_tr, x_val, y_val, x_te, y_te))


@functools.lru_cache(maxsize=4)
def _program(latent_dim: int):
    """Every seed in one program, sharded like training; the data are arguments, not baked-in constants."""
    fn = jax.vmap(lambda k, *d: random_encoder_baseline_one(k, *d, latent_dim=latent_dim), in_axes=(0,) + (None,) * 6)
    return jax.jit(fn)


class RandomEncoder(LabelledBaseline):
    """Baseline: the encoder at its random initialisation (BatchNorm in training mode), only a linear head learns."""
    name = "random_encoder"
    what = "linear head on a random encoder"

    def baseline(self, seeds, *data):
        return random_encoder_baseline(seeds, *data)
