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
import optax

from ..trainer import map_runs, run_keys
from .probe import PROBE_BATCH, PROBE_EPOCHS, PROBE_LR, PROBE_PATIENCE, _accuracy, _batches, _early_stopping_scan, _xent
from .scratch import LabelledBaseline, ScratchClassifier

TASK_STREAM = 3  # fold_in index of run_keys(seed)["task"]: the probe uses 1, the scratch baseline 2


def _random_encoder_program(key, x_tr, y_tr, latent_dim: int):
    """(model, initial carry, train_epoch) for one key.

    carry = (params {"enc", "head"}, batch_stats, Adam state of the head);
    train_epoch(carry, epoch) -> carry runs one shuffled epoch of head-only
    Adam steps with the encoder's BatchNorm in training mode.
    """
    model = ScratchClassifier(latent_dim)
    k_init, k_run = jax.random.split(key)
    v = model.init(k_init, x_tr[:2], train=False)
    opt = optax.adam(PROBE_LR)
    batch = min(PROBE_BATCH, x_tr.shape[0])

    def train_epoch(carry, e):
        params, bstats, o = carry
        idx, mask = _batches(jax.random.fold_in(k_run, e), x_tr.shape[0], batch, drop_last=True)

        def step(c, inp):
            p, bs, o = c
            bi, m = inp

            def loss_fn(head):  # the encoder's parameters are constants here: no gradient reaches them
                logits, upd = model.apply({"params": {"enc": p["enc"], "head": head}, "batch_stats": bs},
                                          x_tr[bi], train=True, mutable=["batch_stats"])
                return _xent(logits, y_tr[bi], m), upd["batch_stats"]
            g, bs = jax.grad(loss_fn, has_aux=True)(p["head"])
            u, o = opt.update(g, o)
            return ({"enc": p["enc"], "head": optax.apply_updates(p["head"], u)}, bs, o), None
        (params, bstats, o), _ = jax.lax.scan(step, (params, bstats, o), (idx, mask))
        return params, bstats, o

    init = (v["params"], v["batch_stats"], opt.init(v["params"]["head"]))
    return model, init, train_epoch


def random_encoder_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim: int = 20) -> dict:
    """Random (untrained) dense encoder + trained linear layer on the labelled images, one key.

    x_*: [N, 32, 32], y_*: [N] int. Returns {"val_accuracy", "test_accuracy",
    "best_epoch"} (scalars): the test accuracy of the best validation epoch,
    evaluated with BatchNorm's running statistics.
    """
    model, init, train_epoch = _random_encoder_program(key, x_tr, y_tr, latent_dim)

    def epoch_fn(carry, e):
        carry = train_epoch(carry, e)
        vs = {"params": carry[0], "batch_stats": carry[1]}
        predict = lambda x: model.apply(vs, x, train=False)  # noqa: E731
        return carry, (_accuracy(predict(x_val), y_val), _accuracy(predict(x_te), y_te))

    return _early_stopping_scan(epoch_fn, init, PROBE_EPOCHS, PROBE_PATIENCE)


def random_encoder_train(key, x_tr, y_tr, epochs: int, latent_dim: int = 20) -> tuple[dict, dict]:
    """(initial, final) variables {"params", "batch_stats"} after `epochs` epochs of the baseline's training.

    The same training steps as random_encoder_baseline_one without the
    stopping rule: for checking what the training changes (the head and the
    running statistics) and what it leaves alone (every encoder parameter).
    """
    _, init, train_epoch = _random_encoder_program(key, x_tr, y_tr, latent_dim)
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
