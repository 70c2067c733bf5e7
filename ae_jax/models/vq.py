"""vq autoencoder: every latent dimension quantised on its own to a learned scalar codebook."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .losses import masked_mean
from .bottleneck import Bottleneck, Code

CODEBOOK_SIZE = 512


def quantise(h: jax.Array, codebook: jax.Array) -> jax.Array:
    """Each latent dim j independently to its nearest scalar in codebook[j]. h: [B, n], codebook: [n, K]."""
    idx = jnp.argmin(jnp.abs(h[:, :, None] - codebook[None]), axis=-1)  # [B, n]
    return jnp.take_along_axis(codebook[None], idx[:, :, None], axis=-1)[..., 0]


class VQ(Bottleneck):
    """z = h + sg(q − h) (straight-through); extra = mean_batch Σ_j[(sg(h) − q)² + β(h − sg(q))²].

    The codebook has shape [n, K], initialised uniform(−1/K, 1/K); its prior
    draws one of the K entries per dimension uniformly.
    """
    name = "vq"
    has_beta = True
    can_sample = True

    def __init__(self, codebook_size: int = CODEBOOK_SIZE):
        self.codebook_size = codebook_size

    def extra_params(self, latent_dim):
        k = self.codebook_size
        init = lambda key, shape: jax.random.uniform(key, shape, minval=-1 / k, maxval=1 / k)  # noqa: E731
        return (("codebook", (latent_dim, k), init),)

    def __call__(self, h, key, hp, params=None, mask=None) -> Code:
        q = quantise(h, params["codebook"])
        sg = jax.lax.stop_gradient
        per_ex = jnp.sum((sg(h) - q) ** 2 + hp.beta * (h - sg(q)) ** 2, axis=-1)
        return Code(h + sg(q - h), masked_mean(per_ex, mask))

    def sample_prior(self, key, n, latent_dim, params):
        cb = params["codebook"]  # [latent, K]
        idx = jax.random.randint(key, (n, latent_dim), 0, cb.shape[1])
        return jnp.take_along_axis(cb[None].repeat(n, 0), idx[..., None], axis=-1)[..., 0]
