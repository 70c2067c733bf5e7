"""The VAE family (vae, beta-VAEs, the conditional VAE): a Gaussian code with a N(0, I) prior."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .losses import gaussian_kl, masked_mean
from .bottleneck import Bottleneck, Code, gaussian_code


def moments(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The encoder output h = [μ, log σ] of a Gaussian code as (μ, σ): [..., 2n] -> ([..., n], [..., n])."""
    mu, log_sigma = jnp.split(h, 2, axis=-1)
    return mu, jnp.exp(log_sigma)


class Gaussian(Bottleneck):
    """h = [μ, log σ]; z = μ + σ ε, ε ~ N(0, I); extra = β mean_batch ½Σ_j(σ² + μ² − 1 − 2 log σ).

    Evaluation samples z as training does (the protocol's choice), so
    reconstructions, probe features and interpolations are stochastic.
    """
    name = "gaussian"
    encoder_factor = 2
    stochastic = True
    has_beta = True
    can_sample = True

    def __call__(self, h, key, hp, params=None, mask=None) -> Code:
        mu, log_sigma = jnp.split(h, 2, axis=-1)
        z = gaussian_code(mu, jnp.exp(log_sigma), key)
        return Code(z, hp.beta * masked_mean(gaussian_kl(mu, log_sigma), mask))

    def mean_code(self, h, params=None):
        """μ, the first half of h: [B, 2n] -> [B, n]."""
        return moments(h)[0]

    def code_moments(self, h, params=None):
        """(μ, σ): z = μ + σ ε, as __call__ draws it."""
        return moments(h)

    def sample_prior(self, key, n, latent_dim, params):
        return jax.random.normal(key, (n, latent_dim))
