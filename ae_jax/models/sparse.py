"""Sparse autoencoder: sigmoid code units pushed towards a target mean activation."""
from __future__ import annotations

import jax

from .losses import bernoulli_kl, masked_mean
from .bottleneck import Bottleneck, Code


class Sparse(Bottleneck):
    """z = sigmoid(h); extra = β Σ_j KL(Bern(p) || Bern(mean_batch z_j)), p = hp.sparsity.

    The penalty is a function of batch means, so it has no per-example form.
    """
    name = "sparse"
    has_beta = True

    def __call__(self, h, key, hp, params=None, mask=None) -> Code:
        z = jax.nn.sigmoid(h)
        rho = masked_mean(z, mask)
        return Code(z, hp.beta * bernoulli_kl(hp.sparsity, rho).sum())
