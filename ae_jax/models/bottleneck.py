"""What every bottleneck provides: the base class of the per-model modules.

A bottleneck maps the encoder output h to the code z the decoder reads and
adds its own loss term. It is also where a model's other behaviour lives:
whether its codes are stochastic, how to sample codes from its prior, and
which parameters of its own it has (vq's codebook). Tasks ask these questions
of the bottleneck instead of branching on model names.

Each method is a pure function of its arguments: ``h`` is [B, e], ``key`` a
PRNG key, ``hp`` the traced hyperparameters (``losses.Hparams``), ``params``
the dict of the bottleneck's own parameters (empty for most), ``mask`` [B]
marks the rows that count in batch means (padding rows are 0) or is None.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .losses import Hparams


class Code(NamedTuple):
    z: jax.Array      # [B, n] code passed to the decoder
    extra: jax.Array  # [] bottleneck loss term, reduced over the batch, beta applied


def gaussian_code(mean: jax.Array, scale: jax.Array, key: jax.Array) -> jax.Array:
    """z = mean + scale · ε, ε ~ N(0, I) of mean's shape drawn from key: every Gaussian code's one draw."""
    return mean + scale * jax.random.normal(key, mean.shape, mean.dtype)


class Bottleneck:
    """The plain autoencoder's bottleneck: z = h, no extra loss, no prior."""
    name = "identity"
    encoder_factor = 1     # encoder output size e = factor * n (2 for [mu, log sigma])
    stochastic = False     # z depends on a random draw at evaluation too (interpolation shows it twice)
    has_beta = False       # has a loss term that --beta weighs
    can_sample = False     # has a prior to draw codes from

    def extra_params(self, latent_dim: int) -> tuple[tuple[str, tuple[int, ...], Callable], ...]:
        """(name, shape, init(key, shape)) of parameters the bottleneck owns; none here."""
        return ()

    def __call__(self, h: jax.Array, key: jax.Array, hp: Hparams, params: dict[str, Any] | None = None,
                 mask: jax.Array | None = None) -> Code:
        return Code(h, jnp.zeros((), h.dtype))

    def mean_code(self, h: jax.Array, params: dict[str, Any] | None = None) -> jax.Array:
        """The code without its noise, [B, e] -> [B, n]: z itself for a deterministic bottleneck.

        A stochastic bottleneck returns the mean of z given h (the VAE's μ).
        Deterministic codes do not depend on the key or on the hyperparameters
        (those weigh only the loss term), so fixed ones are passed.
        """
        if self.stochastic:
            raise NotImplementedError(f"the {self.name} bottleneck must define mean_code")
        hp = Hparams(*(jnp.ones((), h.dtype),) * len(Hparams._fields))
        return self(h, jax.random.key(0), hp, params).z

    def code_moments(self, h: jax.Array, params: dict[str, Any] | None = None) -> tuple[jax.Array, Any] | None:
        """The code as z = mean + scale · ε, ε drawn by ``gaussian_code``: (mean, scale), [B, n] each.

        A deterministic code is its mean, with scale None. A stochastic
        bottleneck whose code has this form overrides it (the Gaussian); one
        whose code is random in another way keeps None. Tasks that draw codes
        of precomputed encoder outputs many times over (the linear probe) use
        it to share one compiled program among models whose bottlenecks differ;
        a bottleneck that answers None gets a program of its own.
        """
        if self.stochastic:
            return None
        return self.mean_code(h, params), None

    def sample_prior(self, key: jax.Array, n: int, latent_dim: int, params: dict[str, Any]) -> jax.Array:
        """[n, latent_dim] codes drawn from the model's prior."""
        raise ValueError(f"the {self.name} bottleneck has no prior to sample from")
