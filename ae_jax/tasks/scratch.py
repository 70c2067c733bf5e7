"""Baseline for the probe: the encoder plus a linear layer trained from scratch on the labelled images alone."""
from __future__ import annotations

import functools
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
from .probe import (PROBE_BATCH, PROBE_EPOCHS, PROBE_LR, PROBE_PATIENCE, _accuracy, _early_stopping_scan, _xent,
                    LabelLayout, epoch_order, epoch_steps, label_layout, orders_for, pad_rows)


class ScratchClassifier(nn.Module):
    """The dense encoder (n = 20 sizes) plus a linear layer, trained from scratch."""
    latent_dim: int = 20

    @nn.compact
    def __call__(self, x, train: bool):
        h = DenseStack(encoder_units(self.latent_dim), name="enc")(x.reshape(x.shape[0], -1), train_bn=(train,) * 3)
        return TorchDense(10, name="head")(h)


def batch_size(n: int) -> int:
    """The baselines' batch: 32, or all n labelled images when there are fewer (BatchNorm needs whole batches)."""
    return min(PROBE_BATCH, n)


def classifier_orders(key, n: int, n_max: int, epochs: int = PROBE_EPOCHS) -> jax.Array:
    """[epochs, S × batch_size(n)]: each epoch's ``epoch_order`` of a baseline on n labelled images padded to
    n_max (the permutation key of epoch e: fold_in(k_run, e), where key splits to (k_init, k_run))."""
    _, k_run = jax.random.split(key)
    return jax.vmap(lambda e: epoch_order(jax.random.fold_in(k_run, e), n, batch_size(n), True, n_max))(
        jnp.arange(epochs))


def classifier_program(key, orders, n, x_tr, y_tr, batch: int, latent_dim: int = 20, head_only: bool = False):
    """(model, initial carry, train_epoch) of a labelled baseline, for one key.

    x_tr, y_tr: the n labelled images first, then padding; orders: ``classifier_orders``; batch:
    ``batch_size(n)`` (static; n may be traced). carry = (params {"enc", "head"}, batch_stats, Adam state);
    train_epoch(carry, epoch) -> carry runs one shuffled epoch of Adam steps with BatchNorm in training mode.
    ``head_only``: the optimiser holds only the linear layer's parameters, so the encoder keeps its random
    initial weights (``random_encoder``); otherwise every parameter learns (``scratch``). BatchNorm needs
    whole batches, so the last partial batch of each shuffled epoch is dropped (it differs every epoch).
    """
    model = ScratchClassifier(latent_dim)
    k_init, _ = jax.random.split(key)
    v = model.init(k_init, x_tr[:2], train=False)
    opt = optax.adam(PROBE_LR)
    trained = (lambda p: p["head"]) if head_only else (lambda p: p)
    whole = (lambda p, t: {"enc": p["enc"], "head": t}) if head_only else (lambda p, t: t)

    def train_epoch(carry, e):
        def step(c, bi, m, s):
            p, bs, o = c

            def loss_fn(t):  # parameters outside t are constants here: no gradient reaches them
                logits, upd = model.apply({"params": whole(p, t), "batch_stats": bs}, x_tr[bi], train=True,
                                          mutable=["batch_stats"])
                return _xent(logits, y_tr[bi], m), upd["batch_stats"]
            g, bs = jax.grad(loss_fn, has_aux=True)(trained(p))
            u, o = opt.update(g, o)
            return whole(p, optax.apply_updates(trained(p), u)), bs, o
        return epoch_steps(step, carry, orders[e], n, batch, drop_last=True)

    return model, (v["params"], v["batch_stats"], opt.init(trained(v["params"]))), train_epoch


def classifier_baseline_one(key, orders, n, x_tr, y_tr, x_val, y_val, x_te, y_te, batch: int, latent_dim: int = 20,
                            head_only: bool = False) -> dict:
    """A labelled baseline for one key, with the probe's optimiser and stopping rule.

    x_*: [N, 32, 32], y_*: [N] int (x_tr, y_tr: n labelled rows, then padding read by no order). Returns
    {"val_accuracy", "test_accuracy", "best_epoch"} (scalars): the test accuracy of the best validation epoch,
    evaluated with BatchNorm's running statistics.
    """
    model, init, train_epoch = classifier_program(key, orders, n, x_tr, y_tr, batch, latent_dim, head_only)

    def epoch_fn(carry, e):
        carry = train_epoch(carry, e)
        vs = {"params": carry[0], "batch_stats": carry[1]}
        predict = lambda x: model.apply(vs, x, train=False)  # noqa: E731
        return carry, (_accuracy(predict(x_val), y_val), _accuracy(predict(x_te), y_te))

    return _early_stopping_scan(epoch_fn, init, PROBE_EPOCHS, PROBE_PATIENCE)


@functools.lru_cache(maxsize=16)
def baseline_program(batch: int, head_only: bool, latent_dim: int = 20):
    """Every seed of a labelled baseline in one program: the data (padded) and the label count are arguments,
    so it is one program per batch size (``batch_size``) for every label count."""
    fn = functools.partial(classifier_baseline_one, batch=batch, latent_dim=latent_dim, head_only=head_only)
    return jax.jit(jax.vmap(fn, in_axes=(0, 0) + (None,) * 7))


def labelled_baseline(keys, x_tr, y_tr, x_val, y_val, x_te, y_te, *, layout: LabelLayout | None = None,
                      head_only: bool = False) -> dict[str, np.ndarray]:
    """A labelled baseline for every key [R] in one program; the labelled images padded to the layout's rows
    (default: their own), so every label count up to them with the same batch size shares the program."""
    n = len(x_tr)
    n_max = n if layout is None else layout.n_max
    orders = orders_for(classifier_orders, keys, n, layout)
    return map_runs(baseline_program(batch_size(n), head_only), (keys, orders),
                    (np.int32(n), *pad_rows(n_max, x_tr, y_tr), x_val, y_val, x_te, y_te))


def scratch_baseline(seeds: Sequence[int], x_tr, y_tr, x_val, y_val, x_te, y_te, *,
                     layout: LabelLayout | None = None) -> dict[str, np.ndarray]:
    """Encoder + linear layer, every parameter trained, on the labelled images alone; every seed in one
    program."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], 2) for s in seeds])
    return labelled_baseline(keys, x_tr, y_tr, x_val, y_val, x_te, y_te, layout=layout)


class LabelledBaseline(Task):
    """A classifier trained on the labelled split alone (no autoencoder), scored like the probe."""
    needs_run = False
    what = ""

    def baseline(self, seeds, *data, layout: LabelLayout | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, ctx: EvalContext) -> TaskResult:
        lab = ctx.splits("labelled")
        ctx.log(f"[{self.name}] {self.what}, {len(lab.x_train)} labelled images")
        r = self.baseline(ctx.seeds, lab.x_train, lab.y_train, lab.x_val, lab.y_val, lab.x_test, lab.y_test,
                          layout=label_layout(ctx))
        return TaskResult({"probe_accuracy": r["test_accuracy"], "probe_best_epoch": r["best_epoch"]})


class Scratch(LabelledBaseline):
    """Baseline: the same encoder plus a linear layer, trained from scratch on the labelled images alone."""
    name = "scratch"
    what = "encoder + linear layer from scratch"

    def baseline(self, seeds, *data, layout=None):
        return scratch_baseline(seeds, *data, layout=layout)
