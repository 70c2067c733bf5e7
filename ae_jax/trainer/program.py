"""The compiled programs: one epoch of training, and evaluation, for one run.

The shape follows "a whole training run is a pure function": ``make_epoch``
builds, at Python level with static shapes, the function that trains one run
for one epoch (a ``lax.scan`` over minibatch steps, then the validation loss).
``jax.vmap`` turns it into a function of a batch of runs: each run has its own
key (init, shuffle, noise) and its own hyperparameters (``losses.Hparams`` are
traced arrays, so a sweep over beta is the same program, not a recompile). The
data is an argument, never a closure constant.

One host dispatch per epoch: the compiled epoch is called once per epoch; the
host then reads the per-run losses (a few floats) to print progress and to
checkpoint every few epochs.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Data
from ..models.hparams import LR_DEFAULT, TRACED
from ..models.losses import RECON_LOSSES, Hparams, add_input_noise, bce_from_logits, mse_from_logits
from ..models import Autoencoder, Code, ModelSpec

EVAL_CHUNK = 1000
# --precision: the matmul precision the programs are traced with. "float32" is full float32 on every
# platform (the default: the same numbers on CPU, GPU and TPU); "fast" is the platform's default, which
# uses bfloat16 passes on TPU and TF32 on recent NVIDIA GPUs (on a CPU it is full float32 too).
PRECISIONS = {"float32": "float32", "fast": "default"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What shapes (or changes) the compiled program: static."""
    latent_dim: int = 20
    epochs: int = 60
    batch_size: int = 256
    loss: str = "bce"                 # reconstruction loss the model trains with: a key of losses.RECON_LOSSES
    width_latent: int | None = None   # hidden widths of this latent size (None: the protocol's, from latent_dim)
    precision: str = "float32"        # a key of PRECISIONS
    snapshots: int = 0                # > 0: each epoch also returns the encoder outputs of this many test images


def traced_with_precision(cfg: TrainConfig, fn):
    """fn, traced under cfg's matmul precision (the choice is read when jit traces the function)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(PRECISIONS[cfg.precision]):
            return fn(*args, **kwargs)
    return wrapped


class TrainState(NamedTuple):
    params: Any       # flax params; every leaf gets a leading run axis when vmapped
    batch_stats: Any  # BatchNorm running statistics
    opt_state: Any    # Adam moments


class Phase(NamedTuple):
    """Which layers run and train. One phase for most models, three for stacked."""
    enc_layers: tuple[int, ...] = (0, 1, 2)
    dec_layers: tuple[int, ...] = (0, 1, 2)
    trainable: tuple[str, ...] | None = None  # parameter path prefixes; None = all
    enc_bn: tuple[bool, ...] = (True, True, True)
    dec_bn: tuple[bool, ...] = (True, True, True)

    @property
    def full(self) -> bool:
        return self.enc_layers == (0, 1, 2) and self.dec_layers == (0, 1, 2)


FULL = Phase()
EVAL = Phase(enc_bn=(False,) * 3, dec_bn=(False,) * 3)


def stacked_phases() -> tuple[Phase, Phase, Phase]:
    """Phase k trains encoder layer k and decoder layer 2-k; earlier layers frozen, BN in eval."""
    phases = []
    for k in range(3):
        d = 2 - k
        phases.append(Phase(
            enc_layers=tuple(range(k + 1)), dec_layers=tuple(range(d, 3)),
            trainable=(f"enc/dense{k}", f"enc/bn{k}", f"dec/dense{d}", f"dec/bn{d}"),
            enc_bn=tuple(i == k for i in range(3)), dec_bn=tuple(i == d for i in range(3))))
    return tuple(phases)


def phase_schedule(spec: ModelSpec, epochs: int) -> list[tuple[Phase, int]]:
    """[(phase, first epoch)]: stacked splits the epochs in three (the remainder goes last)."""
    if not spec.stacked:
        return [(FULL, 0)]
    if epochs < 3:
        raise ValueError("the stacked model trains in 3 phases and needs --epochs >= 3")
    per = epochs // 3
    return [(p, k * per) for k, p in enumerate(stacked_phases())]


def phase_at(schedule, epoch: int) -> tuple[int, Phase]:
    idx = max(i for i, (_, start) in enumerate(schedule) if start <= epoch)
    return idx, schedule[idx][0]


def make_model(spec: ModelSpec, cfg: TrainConfig) -> Autoencoder:
    return spec.module(cfg.latent_dim, cfg.width_latent)


def spec_hparams(spec: ModelSpec, beta: float | None = None, lr: float | None = LR_DEFAULT, **values) -> Hparams:
    """The model's traced hyperparameters (``hparams.TRACED``), each replaced by the value given here (None: the
    model's own)."""
    given = {"beta": beta, "lr": lr, **values}
    unknown = set(given) - set(Hparams._fields)
    if unknown:
        raise KeyError(f"unknown hyperparameter(s) {', '.join(sorted(unknown))}; traced ones: {', '.join(Hparams._fields)}")
    return Hparams(**{t.name: np.float32(t.default_for(spec) if given.get(t.name) is None else given[t.name])
                      for t in TRACED})


def run_keys(seed: int) -> dict[str, jax.Array]:
    """Keys named for their purpose, derived from the seed alone."""
    key = jax.random.key(seed)
    return {name: jax.random.fold_in(key, i) for i, name in enumerate(("init", "train", "eval", "task"))}


def condition(spec: ModelSpec, data: Data):
    """The label a conditional model sees; None for the others (they ignore labels)."""
    return data.y if spec.conditional else None


def _forward(module: Autoencoder, x, cond, key, hp: Hparams, spec: ModelSpec, phase: Phase, mask=None):
    """x -> (h, code, logits). The bottleneck applies only when every layer runs."""
    h = module.encode(x, cond, layers=phase.enc_layers, train_bn=phase.enc_bn)
    if phase.full:
        b = spec.bottleneck(h, key, hp, module.bottleneck_params, mask)
    else:
        b = Code(h, jnp.zeros((), h.dtype))
    logits = module.decode(b.z, cond, layers=phase.dec_layers, train_bn=phase.dec_bn)
    return h, b, logits


def _trainable_mask(params, phase: Phase):
    if phase.trainable is None:
        return jax.tree.map(lambda _: True, params)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    def path_str(path):
        return "/".join(str(getattr(p, "key", p)) for p in path)
    masks = [any(path_str(p).startswith(t) for t in phase.trainable) for p, _ in flat]
    return jax.tree_util.tree_unflatten(jax.tree.structure(params), masks)


OPTIMIZER = optax.scale_by_adam()  # the learning rate is applied by hand: it is a traced hparam


def init_state(spec: ModelSpec, cfg: TrainConfig, key) -> TrainState:
    model = make_model(spec, cfg)
    cond = jnp.zeros((2,), jnp.int32) if spec.conditional else None
    variables = model.init(key, jnp.zeros((2, 32, 32), jnp.float32), cond, train=False)
    params = variables["params"]
    return TrainState(params, variables.get("batch_stats", {}), OPTIMIZER.init(params))


def reset_optimizer(state: TrainState) -> TrainState:
    return state._replace(opt_state=OPTIMIZER.init(state.params))


def make_loss(spec: ModelSpec, cfg: TrainConfig, phase: Phase):
    model = make_model(spec, cfg)
    recon = RECON_LOSSES[cfg.loss]

    def loss_fn(params, batch_stats, batch: Data, key, hp: Hparams):
        """batch.x: [B, 32, 32] -> (loss, (new batch_stats, reconstruction term))."""
        k_noise, k_z = jax.random.split(key)
        x = batch.x
        x_in = add_input_noise(k_noise, x, hp.noise_std) if spec.denoise else x
        (h, b, logits), upd = model.apply(
            {"params": params, "batch_stats": batch_stats}, x_in, condition(spec, batch), k_z, hp, spec, phase,
            method=_forward, mutable=["batch_stats"])
        rec = recon(logits, x).mean()
        return rec + b.extra, (upd["batch_stats"], rec)

    return loss_fn


def make_eval(spec: ModelSpec, cfg: TrainConfig, phase: Phase = EVAL):
    """eval_fn(state, data, key, hp) -> dict of per-image arrays, in chunks of EVAL_CHUNK.

    Returns "bce" and "mse" [N] (each summed over pixels, whatever the model
    trained with), "loss" [N] (the training reconstruction loss plus the
    chunk's bottleneck term, so its mean is the validation loss), "h" [N, e]
    encoder outputs, "z" [N, n] codes and "signed_error" [N], Σ(reconstruction
    − input), the score the original study's anomaly AUCs were computed with by
    mistake. BatchNorm uses running statistics, no input noise; the VAE family
    still samples z.

    Rows of the last chunk past N are padding: masked out of the bottleneck's
    batch means (the sparse penalty, the KL) and dropped from the output. An
    image's bce, mse, h and z depend only on the image (and the chunk's key),
    not on the other images of its chunk.
    """
    model = make_model(spec, cfg)

    def eval_fn(state: TrainState, data: Data, key, hp: Hparams):
        n = data.x.shape[0]
        chunk = min(EVAL_CHUNK, n)
        n_chunks = -(-n // chunk)
        pad = n_chunks * chunk - n
        chunks = jax.tree.map(
            lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)).reshape(n_chunks, chunk, *a.shape[1:]), data)
        mask = (jnp.arange(n_chunks * chunk) < n).astype(data.x.dtype).reshape(n_chunks, chunk)
        keys = jax.random.split(key, n_chunks)

        def one(args):
            dc, mc, kc = args
            h, b, logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                       dc.x, condition(spec, dc), kc, hp, spec, phase, mc, method=_forward)
            out = {"bce": bce_from_logits(logits, dc.x), "mse": mse_from_logits(logits, dc.x)}
            signed = (jax.nn.sigmoid(logits) - dc.x).reshape(dc.x.shape[0], -1).sum(-1)
            out.update(loss=out[cfg.loss] + b.extra, h=h, z=b.z, signed_error=signed)
            return out

        out = jax.lax.map(one, (chunks, mask, keys))
        return jax.tree.map(lambda a: a.reshape(n_chunks * chunk, *a.shape[2:])[:n], out)

    return traced_with_precision(cfg, eval_fn)


def make_epoch(spec: ModelSpec, cfg: TrainConfig, phase: Phase, n_train: int):
    """Return epoch(state, key, epoch, hp, train, val[, snap]) for ONE run (train, val, snap: ``Data``).

    Shuffles with a key folded from (run key, epoch), scans over
    n_train // batch_size full minibatches (the remainder is dropped; a fresh
    permutation each epoch covers it over training), then computes the
    validation loss. Returns (state, train_loss, val_loss).

    With ``cfg.snapshots > 0`` the epoch takes a fourth data argument ``snap``
    (K images, K <= cfg.snapshots) and also returns their encoder outputs
    h [K, e] after the epoch, evaluated as ``evaluate_runs`` would evaluate
    the state (``make_eval`` of the whole model: BatchNorm running statistics,
    all layers, whatever phase is training): (state, train_loss, val_loss, h).
    Snapshots take no key of their own (h does not depend on one), so the
    training numbers are those of the same run without snapshots.
    """
    loss_fn = make_loss(spec, cfg, phase)
    eval_fn = make_eval(spec, cfg, EVAL if phase.full else phase._replace(enc_bn=(False,) * 3, dec_bn=(False,) * 3))
    snap_fn = make_eval(spec, cfg, EVAL) if cfg.snapshots > 0 else None
    bs = cfg.batch_size
    steps = n_train // bs
    if steps < 1:
        raise ValueError(f"the training set has {n_train} images, fewer than one batch of {bs}")

    def epoch_fn(state: TrainState, key, epoch, hp: Hparams, train: Data, val: Data, snap: Data | None = None):
        ekey = jax.random.fold_in(key, epoch)
        k_perm, k_steps, k_val = jax.random.split(ekey, 3)
        idx = jax.random.permutation(k_perm, n_train)[: steps * bs].reshape(steps, bs)
        mask = _trainable_mask(state.params, phase)

        def step(st: TrainState, inp):
            batch_idx, k = inp
            batch = jax.tree.map(lambda a: a[batch_idx], train)  # images and labels stay aligned
            (loss, (bstats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                st.params, st.batch_stats, batch, k, hp)
            grads = jax.tree.map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
            updates, opt_state = OPTIMIZER.update(grads, st.opt_state)
            params = jax.tree.map(lambda p, u: p - hp.lr * u, st.params, updates)
            return TrainState(params, bstats, opt_state), loss

        state, losses = jax.lax.scan(step, state, (idx, jax.random.split(k_steps, steps)))
        val_loss = eval_fn(state, val, k_val, hp)["loss"].mean()
        if snap_fn is None:
            return state, losses.mean(), val_loss
        return state, losses.mean(), val_loss, snap_fn(state, snap, k_val, hp)["h"]

    return traced_with_precision(cfg, epoch_fn)
