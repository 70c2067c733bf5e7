"""Classification with few labels: a linear probe on a trained encoder's frozen codes.

The probe trains every seed in one compiled program (vmapped, sharded over the
devices like training). The helpers here (shuffled masked batches, early
stopping inside a scan) also serve the from-scratch baseline.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Data
from ..losses import Hparams
from ..models import ModelSpec
from ..trainer import map_runs, run_keys, stack_hparams
from .base import EvalContext, Task, TaskResult

PROBE_BATCH, PROBE_EPOCHS, PROBE_PATIENCE, PROBE_LR = 32, 20, 3, 1e-3


def _batches(key, n: int, batch: int, drop_last: bool):
    """Shuffled index batches [S, batch] and a validity mask [S, batch] (partial last batch masked)."""
    perm = jax.random.permutation(key, n)
    steps = n // batch if drop_last else -(-n // batch)
    pad = steps * batch - n
    if pad > 0:
        perm = jnp.concatenate([perm, jnp.zeros(pad, perm.dtype)])
    mask = (jnp.arange(steps * batch) < n).astype(jnp.float32)
    return perm[: steps * batch].reshape(steps, batch), mask[: steps * batch].reshape(steps, batch)


def _early_stopping_scan(epoch_fn, init_carry, max_epochs: int, patience: int):
    """Run epoch_fn up to max_epochs; keep the test accuracy of the best validation epoch.

    epoch_fn(carry, epoch) -> (carry, (val_acc, test_acc)). Training stops after
    `patience` epochs without a validation improvement (later epochs still run
    inside the fixed-length scan but can no longer change the result).
    """
    def body(c, e):
        inner, best_val, best_test, best_epoch, since, stopped = c
        inner, (va, te) = epoch_fn(inner, e)
        improved = (va > best_val) & ~stopped
        best_val = jnp.where(improved, va, best_val)
        best_test = jnp.where(improved, te, best_test)
        best_epoch = jnp.where(improved, e + 1, best_epoch)
        since = jnp.where(improved, 0, since + 1)
        stopped = stopped | (since >= patience)
        return (inner, best_val, best_test, best_epoch, since, stopped), va
    c0 = (init_carry, jnp.float32(-1), jnp.float32(0), jnp.int32(0), jnp.int32(0), jnp.bool_(False))
    (_, best_val, best_test, best_epoch, _, _), _ = jax.lax.scan(body, c0, jnp.arange(max_epochs))
    return {"val_accuracy": best_val, "test_accuracy": best_test, "best_epoch": best_epoch}


def _xent(logits, y, mask):
    per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _accuracy(logits, y):
    return (logits.argmax(-1) == y).mean()


def linear_probe_one(spec: ModelSpec, key, hp: Hparams, bparams, h_tr, h_val, h_te, y_tr, y_val, y_te):
    """Linear layer n -> 10 on frozen bottleneck codes of precomputed encoder outputs h.

    The bottleneck is applied per batch with fresh keys (the VAE family samples
    z for training, validation and test alike). Adam lr 1e-3, batch 32 (the
    last partial batch is kept, masked), <= 20 epochs, early stopping on
    validation accuracy with patience 3; reports the test accuracy of the best
    validation epoch.
    """
    n_feat = spec.bottleneck(h_tr[:1], key, hp, bparams).z.shape[-1]
    k_init, k_run = jax.random.split(key)
    lim = 1.0 / np.sqrt(n_feat)  # PyTorch's nn.Linear initialisation
    kw, kb = jax.random.split(k_init)
    params = {"w": jax.random.uniform(kw, (n_feat, 10), minval=-lim, maxval=lim),
              "b": jax.random.uniform(kb, (10,), minval=-lim, maxval=lim)}
    opt = optax.adam(PROBE_LR)

    def feats(h, k):
        return spec.bottleneck(h, k, hp, bparams).z

    def epoch_fn(carry, e):
        params, opt_state = carry
        ke = jax.random.fold_in(k_run, e)
        k_perm, k_steps, k_val, k_te = jax.random.split(ke, 4)
        idx, mask = _batches(k_perm, h_tr.shape[0], PROBE_BATCH, drop_last=False)

        def step(c, inp):
            p, o = c
            bi, m, k = inp
            loss_fn = lambda p: _xent(feats(h_tr[bi], k) @ p["w"] + p["b"][None], y_tr[bi], m)
            g = jax.grad(loss_fn)(p)
            u, o = opt.update(g, o)
            return (optax.apply_updates(p, u), o), None
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (idx, mask, jax.random.split(k_steps, len(idx))))
        va = _accuracy(feats(h_val, k_val) @ params["w"] + params["b"][None], y_val)
        te = _accuracy(feats(h_te, k_te) @ params["w"] + params["b"][None], y_te)
        return (params, opt_state), (va, te)

    return _early_stopping_scan(epoch_fn, (params, opt.init(params)), PROBE_EPOCHS, PROBE_PATIENCE)


def bottleneck_params(spec: ModelSpec, params: dict, latent_dim: int) -> dict:
    """The bottleneck's own parameters (vq's codebook) out of a model's parameter tree."""
    return {name: params[name] for name, _, _ in spec.bottleneck.extra_params(latent_dim)}


@functools.lru_cache(maxsize=16)
def _probe_program(spec: ModelSpec):
    fn = functools.partial(linear_probe_one, spec)
    return jax.jit(jax.vmap(fn, in_axes=(0,) * 6 + (None,) * 3))


def linear_probe(spec: ModelSpec, latent_dim: int, params: dict, seeds, hparams, h: dict[str, np.ndarray],
                 y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All seeds in one program. params: the batched parameter tree; h[split]: [R, N, e]; y[split]: [N]."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], 1) for s in seeds])
    per_run = (keys, stack_hparams(hparams), bottleneck_params(spec, params, latent_dim),
               h["train"], h["val"], h["test"])
    return map_runs(_probe_program(spec), per_run, (y["train"], y["val"], y["test"]))


class LinearProbe(Task):
    """Frozen encoder + bottleneck, a linear layer n -> 10 trained on the labelled split; test accuracy."""
    name = "probe"

    def run(self, ctx: EvalContext) -> TaskResult:
        lab = ctx.splits("labelled")
        ctx.log(f"    linear probe on {len(lab.x_train)} labels (all seeds in one program)")
        h = {"train": ctx.evaluate(Data(lab.x_train, lab.y_train))["h"],
             "val": ctx.evaluate(Data(lab.x_val, lab.y_val))["h"], "test": ctx.test["h"]}
        out = linear_probe(ctx.spec, ctx.cfg.latent, ctx.state.params, ctx.seeds, ctx.hps, h,
                           {"train": lab.y_train, "val": lab.y_val, "test": lab.y_test})
        return TaskResult({"probe_accuracy": out["test_accuracy"], "probe_best_epoch": out["best_epoch"]})
