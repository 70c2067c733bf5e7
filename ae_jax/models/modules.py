"""Flax modules shared by every model: dense encoder and decoder.

Sizes follow the protocol (docs/protocol.md): with input size D and output
size e, the shrink factor is ``s = int((D // e) ** (1/3))`` (a float cube root,
so 512 gives 7) and the hidden layers have D//s and D//s**2 units.

Conditional models (``num_classes`` > 0) see a one-hot label beside their
input: the encoder reads concat(x, onehot(y)) (D = 1024 + 10) and the decoder
concat(z, onehot(y)) (n + 10 inputs). The same formula is applied to those
actual input sizes: encoder units from shrink(1034, e), decoder units from
shrink(1024, n + 10).

``width_latent`` sizes the hidden layers as if the latent size were that
number (the n = 20 widths held at every n, for latent-size sweeps that must
not vary width along with n); None uses the protocol's widths for n itself.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

D_PIXELS = 1024


def shrink(d: int, e: int) -> int:
    """docs/protocol.md's shrink factor, float cube root and all: shrink(1024, 2) == 7."""
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
    Linear(n -> D). ``extra_params`` are the bottleneck's own parameters (vq's
    codebook), created at the top level of the parameter tree.
    """
    latent_dim: int
    encoder_out: int
    shallow: bool = False
    num_classes: int = 0           # > 0: conditional on a one-hot label
    width_latent: int | None = None
    extra_params: tuple = ()       # (name, shape, init) of the bottleneck's own parameters (vq's codebook)

    def setup(self):
        d_in = D_PIXELS + self.num_classes
        if self.shallow:
            self.enc = TorchDense(self.latent_dim, name="enc")
            self.dec = TorchDense(D_PIXELS, name="dec")
        else:
            enc = encoder_units(self.encoder_out, d_in)
            dec = decoder_units(self.latent_dim + self.num_classes)
            if self.width_latent is not None:  # hidden widths of another latent size, same in/out sizes
                w = self.width_latent * self.encoder_out // self.latent_dim
                enc = encoder_units(w, d_in)[:2] + (self.encoder_out,)
                dec = decoder_units(self.width_latent + self.num_classes)
            self.enc = DenseStack(enc, name="enc")
            self.dec = DenseStack(dec, name="dec")
        self.bottleneck_params = {name: self.param(name, init, shape) for name, shape, init in self.extra_params}

    def _with_label(self, a, cond):
        if not self.num_classes:
            return a
        if cond is None:
            raise ValueError("a conditional model needs the label (cond) to encode and decode")
        return jnp.concatenate([a, jax.nn.one_hot(cond, self.num_classes, dtype=a.dtype)], axis=-1)

    def encode(self, x, cond=None, train: bool = False, layers=(0, 1, 2), train_bn=None):
        """x: [B, 32, 32], cond: [B] int labels or None -> h: [B, encoder_out] (or a hidden layer's output)."""
        x = self._with_label(x.reshape(x.shape[0], -1), cond)
        if self.shallow:
            return nn.relu(self.enc(x))
        return self.enc(x, layers, train_bn if train_bn is not None else (train,) * 3)

    def decode(self, z, cond=None, train: bool = False, layers=(0, 1, 2), train_bn=None):
        """z: [B, n], cond: [B] int labels or None -> logits: [B, 32, 32]."""
        z = self._with_label(z, cond) if layers and layers[0] == 0 else z
        if self.shallow:
            y = self.dec(z)
        else:
            y = self.dec(z, layers, train_bn if train_bn is not None else (train,) * 3)
        return y.reshape(y.shape[0], 32, 32)

    def __call__(self, x, cond=None, train: bool = False):  # used for init: touches every parameter
        h = self.encode(x, cond, train)
        return self.decode(h[:, : self.latent_dim], cond, train)
