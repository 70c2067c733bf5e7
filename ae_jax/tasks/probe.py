"""Classification with few labels: a linear probe on a trained encoder's frozen codes.

The probe trains every seed in one compiled program (vmapped, sharded over the
devices like training). That program holds no model: it reads each image's
code as a mean and a scale (``Bottleneck.code_moments``, computed once per
split), so every model with the same code size shares it, and a study
compiles it once per label count instead of once per model and label count.
The helpers here (shuffled masked batches, early stopping inside a scan) also
serve the from-scratch baseline.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Data
from ..models.losses import Hparams
from ..models import ModelSpec
from ..models.bottleneck import gaussian_code
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


def _probe_one(codes, n_feat: int, key, tr, val, te, y_tr, y_val, y_te):
    """Linear layer n -> 10 on frozen codes: codes(rows, key) -> [B, n] turns per-image arrays into codes.

    tr, val, te: pytrees of per-image arrays [N, ...] (encoder outputs, or a
    code's mean and scale). Codes are drawn per batch with fresh keys (the VAE
    family samples z for training, validation and test alike). Adam lr 1e-3,
    batch 32 (the last partial batch is kept, masked), <= 20 epochs, early
    stopping on validation accuracy with patience 3; reports the test accuracy
    of the best validation epoch.
    """
    k_init, k_run = jax.random.split(key)
    lim = 1.0 / np.sqrt(n_feat)  # PyTorch's nn.Linear initialisation
    kw, kb = jax.random.split(k_init)
    params = {"w": jax.random.uniform(kw, (n_feat, 10), minval=-lim, maxval=lim),
              "b": jax.random.uniform(kb, (10,), minval=-lim, maxval=lim)}
    opt = optax.adam(PROBE_LR)
    n_train = jax.tree.leaves(tr)[0].shape[0]

    def epoch_fn(carry, e):
        params, opt_state = carry
        ke = jax.random.fold_in(k_run, e)
        k_perm, k_steps, k_val, k_te = jax.random.split(ke, 4)
        idx, mask = _batches(k_perm, n_train, PROBE_BATCH, drop_last=False)

        def step(c, inp):
            p, o = c
            bi, m, k = inp
            rows = jax.tree.map(lambda a: a[bi], tr)
            loss_fn = lambda p: _xent(codes(rows, k) @ p["w"] + p["b"][None], y_tr[bi], m)
            g = jax.grad(loss_fn)(p)
            u, o = opt.update(g, o)
            return (optax.apply_updates(p, u), o), None
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (idx, mask, jax.random.split(k_steps, len(idx))))
        va = _accuracy(codes(val, k_val) @ params["w"] + params["b"][None], y_val)
        te_ = _accuracy(codes(te, k_te) @ params["w"] + params["b"][None], y_te)
        return (params, opt_state), (va, te_)

    return _early_stopping_scan(epoch_fn, (params, opt.init(params)), PROBE_EPOCHS, PROBE_PATIENCE)


def linear_probe_one(spec: ModelSpec, key, hp: Hparams, bparams, h_tr, h_val, h_te, y_tr, y_val, y_te):
    """The probe on encoder outputs h [N, e], through the model's own bottleneck: one program per model
    (any bottleneck; ``linear_probe`` takes it for those whose ``code_moments`` is None)."""
    n_feat = spec.bottleneck(h_tr[:1], key, hp, bparams).z.shape[-1]
    codes = lambda h, k: spec.bottleneck(h, k, hp, bparams).z  # noqa: E731
    return _probe_one(codes, n_feat, key, h_tr, h_val, h_te, y_tr, y_val, y_te)


def code_of_moments(moments, key, noisy):
    """The code of (mean, scale) [B, n] each: mean + scale · ε where noisy (ε as the Gaussian bottleneck draws
    it from key), else the mean itself, exactly."""
    mean, scale = moments  # a cond, not a where: a deterministic code draws no ε in the probe's inner loop
    return jax.lax.cond(noisy, lambda: gaussian_code(mean, scale, key), lambda: mean)


def probe_on_moments_one(key, tr, val, te, noisy, y_tr, y_val, y_te):
    """The probe on codes given as (mean, scale) [N, n] each (``code_of_moments``). No model in it, so every
    model with the same code size and split sizes shares its program."""
    codes = lambda c, k: code_of_moments(c, k, noisy)  # noqa: E731
    return _probe_one(codes, tr[0].shape[-1], key, tr, val, te, y_tr, y_val, y_te)


def bottleneck_params(spec: ModelSpec, params: dict, latent_dim: int) -> dict:
    """The bottleneck's own parameters (vq's codebook) out of a model's parameter tree."""
    return {name: params[name] for name, _, _ in spec.bottleneck.extra_params(latent_dim)}


@functools.lru_cache(maxsize=16)
def _probe_program(spec: ModelSpec):
    fn = functools.partial(linear_probe_one, spec)
    return jax.jit(jax.vmap(fn, in_axes=(0,) * 6 + (None,) * 3))


_MOMENTS_PROBE = jax.jit(jax.vmap(probe_on_moments_one, in_axes=(0, 0, 0, 0) + (None,) * 4))


@functools.lru_cache(maxsize=16)
def _moments_program(spec: ModelSpec):
    """Per run: encoder outputs h [N, e] -> (mean, scale) [N, n] each, scale 0 for a deterministic code."""
    def one(bparams, h):
        mean, scale = spec.bottleneck.code_moments(h, bparams)
        return mean, jnp.zeros_like(mean) if scale is None else scale
    return jax.jit(jax.vmap(one))


def code_form(spec: ModelSpec, latent_dim: int) -> bool | None:
    """What the bottleneck's ``code_moments`` answers, read without computing it: None where the code is not
    mean + scale · ε, else whether it has a scale (the code is drawn)."""
    h = jax.ShapeDtypeStruct((1, spec.bottleneck.encoder_factor * latent_dim), jnp.float32)
    bparams = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape, _ in spec.bottleneck.extra_params(latent_dim)}
    moments = jax.eval_shape(spec.bottleneck.code_moments, h, bparams)
    return None if moments is None else moments[1] is not None


def probe_keys(seeds) -> jax.Array:
    """[R] keys: each seed's probe stream (fold_in index 1 of its task key; scratch uses 2, random_encoder 3)."""
    return jnp.stack([jax.random.fold_in(run_keys(s)["task"], 1) for s in seeds])


def linear_probe(spec: ModelSpec, latent_dim: int, params: dict, seeds, hparams, h: dict[str, np.ndarray],
                 y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All seeds in one program. params: the batched parameter tree; h[split]: [R, N, e]; y[split]: [N].

    Where the bottleneck gives its code's moments (every built-in model), they are computed once per split
    and the probe itself is one program for every such model: the same codes, keys and numbers as the
    bottleneck drawing them batch by batch, compiled once per code size and split sizes instead of once
    per model.
    """
    keys = probe_keys(seeds)
    bparams = bottleneck_params(spec, params, latent_dim)
    ys = (y["train"], y["val"], y["test"])
    noisy = code_form(spec, latent_dim)
    if noisy is None:
        per_run = (keys, stack_hparams(hparams), bparams, h["train"], h["val"], h["test"])
        return map_runs(_probe_program(spec.program), per_run, ys)
    moments = {split: map_runs(_moments_program(spec.program), (bparams, h[split])) for split in ("train", "val", "test")}
    per_run = (keys, moments["train"], moments["val"], moments["test"])
    return map_runs(_MOMENTS_PROBE, per_run, (np.bool_(noisy), *ys))


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
