"""Classification with few labels: a linear probe on a trained encoder's frozen codes.

The probe trains every seed in one compiled program (vmapped, sharded over the
devices like training). That program holds no model: it reads each image's
code as a mean and a scale (``Bottleneck.code_moments``, computed once per
split), so every model with the same code size shares it, and a study
compiles it once per code size instead of once per model.

Label counts share it too: the labelled images are padded to one row count
(``n_max``: the full training split's, so the probe and every label budget
read the same shapes), and the program takes the real count ``n`` as a value.
Each epoch's shuffled order is the one ``jax.random.permutation`` draws for
``n`` items (``epoch_order``), computed outside the large program by one small
program for all of a study's label counts (``LabelLayout``), so a padded probe
draws the batches, keys and codes of the unpadded one; its steps run in a loop
of ``n``'s length, so the padding costs no training steps. The numbers are
those of the unpadded programs bit for bit on a CPU (tests/test_label_budget.py;
the whole digits bake-off's 592 numbers, benchmarks/README.md); elsewhere the
suite's tolerance holds them: accuracies within one test image, best epochs
equal. The cost: every labelled set is as large as the full training split
in memory (on MNIST-sized data a baseline's padded images are 225 MB).

The helpers here (shuffled orders, a loop over one epoch's real batches,
early stopping inside a scan) also serve the baselines trained on labels.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Data
from ..models.losses import Hparams
from ..models import ModelSpec
from ..models.bottleneck import gaussian_code
from ..trainer import map_runs, run_keys, stack_hparams
from . import label_subsets
from .base import EvalContext, Task, TaskResult

PROBE_BATCH, PROBE_EPOCHS, PROBE_PATIENCE, PROBE_LR = 32, 20, 3, 1e-3


def n_steps(n: int, batch: int, drop_last: bool) -> int:
    """Batches in one epoch of n items (a partial last batch kept, masked, unless drop_last); n may be traced."""
    return n // batch if drop_last else -(-n // batch)


def epoch_order(perm_key, n: int, batch: int, drop_last: bool, n_max: int) -> jax.Array:
    """One epoch's shuffled batches of n items, flat: jax.random.permutation(perm_key, n), padded with index 0
    to the n_steps(n_max, ...) batches of n_max items ([that many × batch] int32). Only the first
    n_steps(n, ...) batches are read (``epoch_steps``), so n_max changes no index that is."""
    perm = jax.random.permutation(perm_key, n).astype(jnp.int32)
    size = n_steps(n_max, batch, drop_last) * batch
    return jnp.concatenate([perm, jnp.zeros(max(size - n, 0), jnp.int32)])[:size]


def epoch_steps(step, carry, order, n, batch: int, drop_last: bool):
    """carry after one epoch: step(carry, idx [batch], mask [batch], s) over the n_steps(n, ...) real batches of
    order (``epoch_order``); n may be a traced count, so one program serves every count up to the padding.
    The mask is 0 on the rows past n of a partial last batch."""
    steps = n_steps(n, batch, drop_last)

    def body(s, c):
        rows = s * batch + jnp.arange(batch)
        return step(c, jax.lax.dynamic_slice_in_dim(order, s * batch, batch), (rows < n).astype(jnp.float32), s)
    return jax.lax.fori_loop(0, steps, body, carry)


def pad_rows(n_max: int, *arrays, axis: int = 0) -> tuple:
    """Each array padded with zeros along `axis` to n_max rows (the rows the orders never read)."""
    def pad(a):
        a = np.asarray(a)
        extra = n_max - a.shape[axis]
        if extra < 0:
            raise ValueError(f"{a.shape[axis]} rows do not fit the padding to {n_max}")
        width = [(0, 0)] * a.ndim
        width[axis] = (0, extra)
        return np.pad(a, width) if extra else a
    return tuple(pad(a) for a in arrays)


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


def probe_epoch_keys(k_run, e):
    """Epoch e's (permutation, steps, validation, test) keys of a probe whose key split to (k_init, k_run)."""
    return jax.random.split(jax.random.fold_in(k_run, e), 4)


def probe_orders(key, n: int, n_max: int):
    """(orders [E, S_max × batch], step keys [E, S_max]) of a probe on n labelled items padded to n_max: each
    epoch's ``epoch_order`` and its batches' keys (the first n_steps(n, ...) of them as
    jax.random.split(k_steps, that many) gives them; the rest are never read)."""
    _, k_run = jax.random.split(key)
    steps, s_max = n_steps(n, PROBE_BATCH, False), n_steps(n_max, PROBE_BATCH, False)

    def per_epoch(e):
        k_perm, k_steps, _, _ = probe_epoch_keys(k_run, e)
        keys = jax.random.split(k_steps, steps)
        if s_max > steps:
            keys = jnp.concatenate([keys, jax.random.split(k_steps, s_max - steps)])
        return epoch_order(k_perm, n, PROBE_BATCH, False, n_max), keys
    return jax.vmap(per_epoch)(jnp.arange(PROBE_EPOCHS))


class LabelLayout(NamedTuple):
    """How a study lays out its labelled sets for the shared programs: every set padded to ``n_max`` rows, and
    the label ``counts`` it trains on, whose shuffled orders one small program computes together."""
    n_max: int
    counts: tuple[int, ...]


def label_layout(ctx: EvalContext) -> LabelLayout:
    """ctx's dataset: padded to the full training split (the largest label budget); counts: every budget and the
    labelled split's size. So the probe, its budgets and each baseline compile one program for all of them."""
    n_full = len(ctx.splits("full").y_train)
    try:
        budgets = set(label_subsets.budgets_for(ctx.cfg.dataset, n_full))
    except ValueError:  # too few images for any budget: the probe still runs on what there is
        budgets = set()
    return LabelLayout(n_full, tuple(sorted(budgets | {len(ctx.splits("labelled").y_train)})))


@functools.lru_cache(maxsize=8)
def _orders_program(orders_of, counts: tuple[int, ...], n_max: int):
    """Every run's orders_of(key, n, n_max) for each count: one small program for all of a study's label counts."""
    return jax.jit(jax.vmap(lambda key: tuple(orders_of(key, n, n_max) for n in counts)))


_ORDERS: dict = {}  # the last orders computed, for the next model with the same keys and layout


def orders_for(orders_of, keys, n: int, layout: LabelLayout | None):
    """orders_of(key, n, n_max) for every key [R] (``probe_orders``, ``scratch.classifier_orders``), computed for
    every count of the layout at once and kept for the next call with the same keys (every model of a study
    shares its probe's keys; each baseline's budgets share theirs)."""
    layout = layout or LabelLayout(n, (n,))
    if n > layout.n_max:
        raise ValueError(f"{n} labelled images do not fit the layout's {layout.n_max} rows: pass a LabelLayout whose "
                         "n_max is at least the largest label count")
    counts = tuple(sorted(set(layout.counts) | {n}))
    tag = (orders_of, counts, layout.n_max, np.asarray(jax.random.key_data(keys)).tobytes())
    if tag not in _ORDERS:
        _ORDERS.clear()  # one at a time: a study's models ask for the same orders one after another
        _ORDERS[tag] = _orders_program(orders_of, counts, layout.n_max)(keys)
    return _ORDERS[tag][counts.index(n)]


def _probe_one(codes, n_feat: int, key, orders, step_keys, n, tr, val, te, y_tr, y_val, y_te):
    """Linear layer n -> 10 on frozen codes: codes(rows, key) -> [B, n] turns per-image arrays into codes.

    tr, val, te: pytrees of per-image arrays [N, ...] (encoder outputs, or a
    code's mean and scale); tr's first n rows are the labelled ones, the rest
    padding, read in ``probe_orders``' orders. Codes are drawn per batch with
    fresh keys (the VAE family samples z for training, validation and test
    alike). Adam lr 1e-3, batch 32 (the last partial batch is kept, masked),
    <= 20 epochs, early stopping on validation accuracy with patience 3;
    reports the test accuracy of the best validation epoch.
    """
    k_init, k_run = jax.random.split(key)
    lim = 1.0 / np.sqrt(n_feat)  # PyTorch's nn.Linear initialisation
    kw, kb = jax.random.split(k_init)
    params = {"w": jax.random.uniform(kw, (n_feat, 10), minval=-lim, maxval=lim),
              "b": jax.random.uniform(kb, (10,), minval=-lim, maxval=lim)}
    opt = optax.adam(PROBE_LR)

    def epoch_fn(carry, e):
        _, _, k_val, k_te = probe_epoch_keys(k_run, e)

        def step(c, bi, m, s):
            p, o = c
            rows = jax.tree.map(lambda a: a[bi], tr)
            loss_fn = lambda p: _xent(codes(rows, step_keys[e, s]) @ p["w"] + p["b"][None], y_tr[bi], m)
            g = jax.grad(loss_fn)(p)
            u, o = opt.update(g, o)
            return optax.apply_updates(p, u), o
        params, opt_state = epoch_steps(step, carry, orders[e], n, PROBE_BATCH, drop_last=False)
        va = _accuracy(codes(val, k_val) @ params["w"] + params["b"][None], y_val)
        te_ = _accuracy(codes(te, k_te) @ params["w"] + params["b"][None], y_te)
        return (params, opt_state), (va, te_)

    return _early_stopping_scan(epoch_fn, (params, opt.init(params)), PROBE_EPOCHS, PROBE_PATIENCE)


def linear_probe_one(spec: ModelSpec, key, orders, step_keys, hp: Hparams, bparams, h_tr, h_val, h_te, n, y_tr,
                     y_val, y_te):
    """The probe on encoder outputs h [N, e], through the model's own bottleneck: one program per model
    (any bottleneck; ``linear_probe`` takes it for those whose ``code_moments`` is None)."""
    n_feat = spec.bottleneck(h_tr[:1], key, hp, bparams).z.shape[-1]
    codes = lambda h, k: spec.bottleneck(h, k, hp, bparams).z  # noqa: E731
    return _probe_one(codes, n_feat, key, orders, step_keys, n, h_tr, h_val, h_te, y_tr, y_val, y_te)


def code_of_moments(moments, key, noisy):
    """The code of (mean, scale) [B, n] each: mean + scale · ε where noisy (ε as the Gaussian bottleneck draws
    it from key), else the mean itself, exactly."""
    mean, scale = moments  # a cond, not a where: a deterministic code draws no ε in the probe's inner loop
    return jax.lax.cond(noisy, lambda: gaussian_code(mean, scale, key), lambda: mean)


def probe_on_moments_one(key, orders, step_keys, tr, val, te, n, noisy, y_tr, y_val, y_te):
    """The probe on codes given as (mean, scale) [N, n] each (``code_of_moments``). No model in it, so every
    model with the same code size and split sizes shares its program."""
    codes = lambda c, k: code_of_moments(c, k, noisy)  # noqa: E731
    return _probe_one(codes, tr[0].shape[-1], key, orders, step_keys, n, tr, val, te, y_tr, y_val, y_te)


def bottleneck_params(spec: ModelSpec, params: dict, latent_dim: int) -> dict:
    """The bottleneck's own parameters (vq's codebook) out of a model's parameter tree."""
    return {name: params[name] for name, _, _ in spec.bottleneck.extra_params(latent_dim)}


@functools.lru_cache(maxsize=16)
def _probe_program(spec: ModelSpec):
    fn = functools.partial(linear_probe_one, spec)
    return jax.jit(jax.vmap(fn, in_axes=(0,) * 8 + (None,) * 4))


_MOMENTS_PROBE = jax.jit(jax.vmap(probe_on_moments_one, in_axes=(0,) * 6 + (None,) * 5))


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
                 y: dict[str, np.ndarray], layout: LabelLayout | None = None) -> dict[str, np.ndarray]:
    """All seeds in one program. params: the batched parameter tree; h[split]: [R, N, e]; y[split]: [N].

    layout (``label_layout``): the rows the labelled images are padded to (default: their own) and the counts
    whose orders are computed together; calls with the same padding and the same validation and test sizes
    share one program whatever their label count. Where the bottleneck
    gives its code's moments (every built-in model), they are computed once per split and the probe itself
    is one program for every such model: the same codes, keys and numbers as the bottleneck drawing them
    batch by batch, compiled once per code size and split sizes instead of once per model.
    """
    keys = probe_keys(seeds)
    n = h["train"].shape[1]
    n_max = n if layout is None else layout.n_max
    orders, step_keys = orders_for(probe_orders, keys, n, layout)
    (h_train,) = pad_rows(n_max, h["train"], axis=1)
    ys = (np.int32(n), *pad_rows(n_max, y["train"]), y["val"], y["test"])
    bparams = bottleneck_params(spec, params, latent_dim)
    noisy = code_form(spec, latent_dim)
    if noisy is None:
        per_run = (keys, orders, step_keys, stack_hparams(hparams), bparams, h_train, h["val"], h["test"])
        return map_runs(_probe_program(spec.program), per_run, ys)
    moments = map_runs(_moments_program(spec.program), (bparams, np.concatenate([h_train, h["val"], h["test"]], 1)))
    cut = np.cumsum([h_train.shape[1], h["val"].shape[1]])
    train, val, test = (tuple(np.split(m, cut, axis=1)[i] for m in moments) for i in range(3))
    per_run = (keys, orders, step_keys, train, val, test)
    return map_runs(_MOMENTS_PROBE, per_run, (ys[0], np.bool_(noisy), *ys[1:]))


class LinearProbe(Task):
    """Frozen encoder + bottleneck, a linear layer n -> 10 trained on the labelled split; test accuracy."""
    name = "probe"

    def run(self, ctx: EvalContext) -> TaskResult:
        lab = ctx.splits("labelled")
        ctx.log(f"    linear probe on {len(lab.x_train)} labels (all seeds in one program)")
        h = {"train": ctx.evaluate(Data(lab.x_train, lab.y_train))["h"],
             "val": ctx.evaluate(Data(lab.x_val, lab.y_val))["h"], "test": ctx.test["h"]}
        out = linear_probe(ctx.spec, ctx.cfg.latent, ctx.state.params, ctx.seeds, ctx.hps, h,
                           {"train": lab.y_train, "val": lab.y_val, "test": lab.y_test}, label_layout(ctx))
        return TaskResult({"probe_accuracy": out["test_accuracy"], "probe_best_epoch": out["best_epoch"]})
