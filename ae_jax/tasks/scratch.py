"""Baseline for the probe: the encoder plus a linear layer trained from scratch on the labelled images alone."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..models import encoder_units
from ..models.modules import DenseStack, TorchDense
from ..trainer import map_runs, run_keys
from .base import EvalContext, Task, TaskResult
from .probe import PROBE_BATCH, PROBE_EPOCHS, PROBE_LR, PROBE_PATIENCE, _accuracy, _batches, _early_stopping_scan, _xent


class ScratchClassifier(nn.Module):
    """The dense encoder (n = 20 sizes) plus a linear layer, trained from scratch."""
    latent_dim: int = 20

    @nn.compact
    def __call__(self, x, train: bool):
        h = DenseStack(encoder_units(self.latent_dim), name="enc")(x.reshape(x.shape[0], -1), train_bn=(train,) * 3)
        return TorchDense(10, name="head")(h)


def classifier_program(key, x_tr, y_tr, latent_dim: int = 20, head_only: bool = False):
    """(model, initial carry, train_epoch) of a labelled baseline, for one key.

    carry = (params {"enc", "head"}, batch_stats, Adam state);
    train_epoch(carry, epoch) -> carry runs one shuffled epoch of Adam steps
    with BatchNorm in training mode. ``head_only``: the optimiser holds only
    the linear layer's parameters, so the encoder keeps its random initial
    weights (``random_encoder``); otherwise every parameter learns
    (``scratch``). BatchNorm needs whole batches, so the last partial batch
    of each shuffled epoch is dropped (it differs every epoch).
    """
    model = ScratchClassifier(latent_dim)
    k_init, k_run = jax.random.split(key)
    v = model.init(k_init, x_tr[:2], train=False)
    opt = optax.adam(PROBE_LR)
    batch = min(PROBE_BATCH, x_tr.shape[0])
    trained = (lambda p: p["head"]) if head_only else (lambda p: p)
    whole = (lambda p, t: {"enc": p["enc"], "head": t}) if head_only else (lambda p, t: t)

    def train_epoch(carry, e):
        params, bstats, o = carry
        idx, mask = _batches(jax.random.fold_in(k_run, e), x_tr.shape[0], batch, drop_last=True)

        def step(c, inp):
            p, bs, o = c
            bi, m = inp

            def loss_fn(t):  # parameters outside t are constants here: no gradient reaches them
                logits, upd = model.apply({"params": whole(p, t), "batch_stats": bs}, x_tr[bi], train=True,
                                          mutable=["batch_stats"])
                return _xent(logits, y_tr[bi], m), upd["batch_stats"]
            g, bs = jax.grad(loss_fn, has_aux=True)(trained(p))
            u, o = opt.update(g, o)
            return (whole(p, optax.apply_updates(trained(p), u)), bs, o), None
        (params, bstats, o), _ = jax.lax.scan(step, (params, bstats, o), (idx, mask))
        return params, bstats, o

    return model, (v["params"], v["batch_stats"], opt.init(trained(v["params"]))), train_epoch


def classifier_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim: int = 20,
                            head_only: bool = False) -> dict:
    """A labelled baseline for one key, with the probe's optimiser and stopping rule.

    x_*: [N, 32, 32], y_*: [N] int. Returns {"val_accuracy", "test_accuracy",
    "best_epoch"} (scalars): the test accuracy of the best validation epoch,
    evaluated with BatchNorm's running statistics.
    """
    model, init, train_epoch = classifier_program(key, x_tr, y_tr, latent_dim, head_only)

    def epoch_fn(carry, e):
        carry = train_epoch(carry, e)
        vs = {"params": carry[0], "batch_stats": carry[1]}
        predict = lambda x: model.apply(vs, x, train=False)  # noqa: E731
        return carry, (_accuracy(predict(x_val), y_val), _accuracy(predict(x_te), y_te))

    return _early_stopping_scan(epoch_fn, init, PROBE_EPOCHS, PROBE_PATIENCE)


def scratch_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim: int = 20) -> dict:
    """Encoder + linear layer, every parameter trained, on the labelled images alone."""
    return classifier_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim)


_SCRATCH_PROGRAM = jax.jit(jax.vmap(scratch_baseline_one, in_axes=(0,) + (None,) * 6))


def scratch_baseline(seeds: Sequence[int], x_tr, y_tr, x_val, y_val, x_te, y_te) -> dict[str, np.ndarray]:
    """Every seed in one program; the data are arguments, not baked-in constants."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], 2) for s in seeds])
    return map_runs(_SCRATCH_PROGRAM, (keys,), (x_tr, y_tr, x_val, y_val, x_te, y_te))


class LabelledBaseline(Task):
    """A classifier trained on the labelled split alone (no autoencoder), scored like the probe."""
    needs_run = False
    what = ""

    def baseline(self, seeds, *data) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, ctx: EvalContext) -> TaskResult:
        lab = ctx.splits("labelled")
        ctx.log(f"[{self.name}] {self.what}, {len(lab.x_train)} labelled images")
        r = self.baseline(ctx.seeds, lab.x_train, lab.y_train, lab.x_val, lab.y_val, lab.x_test, lab.y_test)
        return TaskResult({"probe_accuracy": r["test_accuracy"], "probe_best_epoch": r["best_epoch"]})


class Scratch(LabelledBaseline):
    """Baseline: the same encoder plus a linear layer, trained from scratch on the labelled images alone."""
    name = "scratch"
    what = "encoder + linear layer from scratch"

    def baseline(self, seeds, *data):
        return scratch_baseline(seeds, *data)
