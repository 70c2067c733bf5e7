"""Flax modules shared by every contestant: dense encoder and decoder.

Sizes follow PROTOCOL.md: with input size D and output size e, the shrink
factor is ``s = int((D // e) ** (1/3))`` (a float cube root, so 512 gives 7)
and the hidden layers have D//s and D//s**2 units.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

D_PIXELS = 1024


def shrink(d: int, e: int) -> int:
    """PROTOCOL's shrink factor, float cube root and all: shrink(1024, 2) == 7."""
    return int((d // e) ** (1 / 3))


def encoder_units(e: int, d: int = D_PIXELS) -> tuple[int, int, int]:
    """Output units of the encoder's three layers for encoder output size e."""
    s = shrink(d, e)
    return (d // s, d // s**2, e)


def decoder_units(n: int, d: int = D_PIXELS) -> tuple[int, int, int]:
    """Output units of the decoder's three layers for latent size n."""
    s = shrink(d, n)
    return (d // s**2, d // s, d)


class TorchBatchNorm(nn.Module):
    """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).

    Training normalises with the biased batch variance and updates the running
    variance with the unbiased one, as PyTorch does; evaluation uses the
    running statistics. Flax's own BatchNorm uses the biased variance for both.
    """
    eps: float = 1e-5
    momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # x: [B, F]
        f = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (f,))
        bias = self.param("bias", nn.initializers.zeros, (f,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (f,))
        ra_var = self.variable("batch_stats", "var", jnp.ones, (f,))
        if train:
            mean = x.mean(0)
            var = jnp.mean(jnp.square(x - mean[None]), 0)
            if not self.is_initializing():
                n = x.shape[0]
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean[None]) * jax.lax.rsqrt(var + self.eps)[None] * scale[None] + bias[None]


class TorchDense(nn.Module):
    """Linear layer with PyTorch's default initialisation, as the original study had.

    Weight and bias both ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what nn.Linear's
    kaiming_uniform(a=sqrt(5)) amounts to); Flax's default would be lecun-normal
    weights and zero bias.
    """
    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, fan_in] -> [B, features]
        fan_in = x.shape[-1]
        bound = 1.0 / np.sqrt(fan_in)
        init = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)  # noqa: E731
        y = x @ self.param("kernel", init, (fan_in, self.features))
        if self.use_bias:
            y = y + self.param("bias", init, (self.features,))[None]
        return y


class DenseStack(nn.Module):
    """Three dense layers; the first two are Linear(no bias) -> BatchNorm -> ReLU.

    ``layers`` picks which of the three to run (the stacked autoencoder runs a
    contiguous subset while it is built up); ``train_bn`` says, per layer,
    whether its BatchNorm uses batch statistics (layers frozen by an earlier
    stacked phase keep theirs in evaluation mode).
    """
    units: Sequence[int]
    final_bias: bool = True

    @nn.compact
    def __call__(self, x, layers=(0, 1, 2), train_bn=(False, False, False)):
        for i in layers:
            if i < 2:
                x = TorchDense(self.units[i], use_bias=False, name=f"dense{i}")(x)
                x = TorchBatchNorm(name=f"bn{i}")(x, train=train_bn[i])
                x = nn.relu(x)
            else:
                x = TorchDense(self.units[i], use_bias=self.final_bias, name=f"dense{i}")(x)
        return x


class Autoencoder(nn.Module):
    """Encoder -> (bottleneck, applied outside) -> decoder returning logits.

    ``encoder_out`` is n for plain models and 2n for the VAE family.
    ``shallow`` swaps both halves for single layers: Linear(D -> n) -> ReLU and
    Linear(n -> D). ``codebook_size`` > 0 adds a vq codebook of shape [n, K]
    initialised uniform(-1/K, 1/K).
    """
    latent_dim: int
    encoder_out: int
    shallow: bool = False
    codebook_size: int = 0

    def setup(self):
        if self.shallow:
            self.enc = TorchDense(self.latent_dim, name="enc")
            self.dec = TorchDense(D_PIXELS, name="dec")
        else:
            self.enc = DenseStack(encoder_units(self.encoder_out), name="enc")
            self.dec = DenseStack(decoder_units(self.latent_dim), name="dec")
        if self.codebook_size:
            k = self.codebook_size
            self.codebook = self.param(
                "codebook", lambda key, shape: jax.random.uniform(key, shape, minval=-1 / k, maxval=1 / k),
                (self.latent_dim, k))

    def encode(self, x, train: bool = False, layers=(0, 1, 2), train_bn=None):
        """x: [B, 32, 32] -> h: [B, encoder_out] (or a hidden layer's output)."""
        x = x.reshape(x.shape[0], -1)
        if self.shallow:
            return nn.relu(self.enc(x))
        return self.enc(x, layers, train_bn if train_bn is not None else (train,) * 3)

    def decode(self, z, train: bool = False, layers=(0, 1, 2), train_bn=None):
        """z: [B, n] -> logits: [B, 32, 32]."""
        if self.shallow:
            y = self.dec(z)
        else:
            y = self.dec(z, layers, train_bn if train_bn is not None else (train,) * 3)
        return y.reshape(y.shape[0], 32, 32)

    def __call__(self, x, train: bool = False):  # used for init: touches every parameter
        h = self.encode(x, train)
        return self.decode(h[:, : self.latent_dim], train)
