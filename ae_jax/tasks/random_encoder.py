"""The random-encoder classification baseline: the published "from scratch" 0.4364, as it ran.

The original study's from-scratch classifier built the dense encoder plus a
linear layer but gave its optimiser only the linear layer's parameters. With
encoder freezing switched off, the encoder therefore kept its random initial
weights while running in training mode: its BatchNorm layers normalised each
batch with the batch's statistics and updated their running statistics
(PyTorch momentum 0.1) on every training forward pass; evaluation (model in
eval mode) used those running statistics. Only the linear layer learned.

``random_encoder_baseline`` reproduces that with the architecture,
initialisation, optimiser (Adam 1e-3 on the head), batches (32, the last
partial batch dropped) and early stopping (<= 20 epochs, patience 3 on
validation accuracy) of ``tasks.scratch``'s baseline; only the head gets
gradients. Every seed trains in one compiled program (``jax.vmap`` over keys).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..trainer import run_keys
from .probe import LabelLayout
from .scratch import LabelledBaseline, batch_size, classifier_orders, classifier_program, labelled_baseline

TASK_STREAM = 3  # fold_in index of run_keys(seed)["task"]: the probe uses 1, the scratch baseline 2


def random_encoder_train(key, x_tr, y_tr, epochs: int, latent_dim: int = 20) -> tuple[dict, dict]:
    """(initial, final) variables {"params", "batch_stats"} after `epochs` epochs of the baseline's training.

    The same training steps as the baseline without the stopping rule: for checking what the training
    changes (the head and the running statistics) and what it leaves alone (every encoder parameter).
    """
    n = x_tr.shape[0]
    orders = classifier_orders(key, n, n, epochs)
    _, init, train_epoch = classifier_program(key, orders, n, x_tr, y_tr, batch_size(n), latent_dim, head_only=True)
    final, _ = jax.lax.scan(lambda c, e: (train_epoch(c, e), None), init, jnp.arange(epochs))
    as_vars = lambda c: {"params": c[0], "batch_stats": c[1]}  # noqa: E731
    return as_vars(init), as_vars(final)


def random_encoder_baseline(seeds: Sequence[int], x_tr, y_tr, x_val, y_val, x_te, y_te, *,
                            layout: LabelLayout | None = None) -> dict[str, np.ndarray]:
    """All seeds in one program (``scratch.labelled_baseline``, head only): {"val_accuracy", "test_accuracy",
    "best_epoch"}, each [R]."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], TASK_STREAM) for s in seeds])
    return labelled_baseline(keys, x_tr, y_tr, x_val, y_val, x_te, y_te, layout=layout, head_only=True)


class RandomEncoder(LabelledBaseline):
    """Baseline: the encoder at its random initialisation (BatchNorm in training mode), only a linear head learns."""
    name = "random_encoder"
    what = "linear head on a random encoder"

    def baseline(self, seeds, *data, layout=None):
        return random_encoder_baseline(seeds, *data, layout=layout)
