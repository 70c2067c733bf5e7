"""Losses: small pure functions, explicit reductions.

Per-example functions return one value per image ([B]); the caller reduces.
The bottlenecks' own terms live with each model (``ae_jax.models``) and use
the divergences defined here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .hparams import Hparams  # noqa: F401  (the traced hyperparameters, built from hparams.TRACED)

LOG_CLAMP = -100.0


def bce_from_logits(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Binary cross-entropy summed over pixels, one value per image.

    BCE(p, x) = -Σ_i [x_i log p_i + (1 - x_i) log(1 - p_i)],  p = sigmoid(logits),
    with each log clamped at -100 as PyTorch's BCELoss does. The logs are taken
    as log-sigmoid of the logits, which is exact where PyTorch's value is finite
    and keeps the gradient finite where sigmoid saturates.

    logits, x: [B, ...] -> [B]
    """
    ls = jax.nn.log_sigmoid(logits)
    log_p = jnp.maximum(ls, LOG_CLAMP)
    log_1mp = jnp.maximum(ls - logits, LOG_CLAMP)  # log(1 - sigmoid(l)) = log_sigmoid(l) - l: one transcendental pass
    per_pixel = -(x * log_p + (1.0 - x) * log_1mp)
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(-1)


def mse_from_logits(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Squared error of the sigmoid output summed over pixels, one value per image.

    MSE(p, x) = Σ_i (sigmoid(logits_i) − x_i)²; averaged over the batch by the
    caller, like BCE, so β weighs the bottleneck term against the same scale.

    logits, x: [B, ...] -> [B]
    """
    d = jax.nn.sigmoid(logits) - x
    return jnp.square(d).reshape(d.shape[0], -1).sum(-1)


RECON_LOSSES = {"bce": bce_from_logits, "mse": mse_from_logits}


def gaussian_kl(mu: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent dims: ½Σ(σ² + μ² − 1 − 2 log σ). [B, n] -> [B]"""
    return 0.5 * jnp.sum(jnp.exp(2 * log_sigma) + mu**2 - 1.0 - 2 * log_sigma, axis=-1)


def bernoulli_kl(p: float | jax.Array, q: jax.Array, eps: float = 1e-6) -> jax.Array:
    """KL(Bern(p) || Bern(q)) = p log(p/q) + (1-p) log((1-p)/(1-q)), elementwise.

    q is clipped to [eps, 1 - eps]; eps must survive float32 rounding (1 - 1e-10 == 1
    in float32), or a saturated unit makes the penalty infinite.
    """
    q = jnp.clip(q, eps, 1 - eps)
    return p * jnp.log(p / q) + (1 - p) * jnp.log((1 - p) / (1 - q))


def masked_mean(v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over the leading (batch) axis, counting only rows where mask is 1."""
    if mask is None:
        return v.mean(0)
    w = mask.reshape((-1,) + (1,) * (v.ndim - 1))
    return (v * w).sum(0) / jnp.maximum(mask.sum(), 1.0)


def add_input_noise(key, x: jax.Array, std: jax.Array) -> jax.Array:
    """Denoising corruption x' = clip(x + std·ε, 0, 1), ε ~ N(0, I)."""
    return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)

