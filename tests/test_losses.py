"""Losses and bottlenecks (ae_jax.models.losses, ae_jax.models' bottleneck classes) against numpy references,
all under jax.jit.

Every test here runs with jax_numpy_rank_promotion="raise": an accidental
broadcast in ae_jax/models/losses.py fails loudly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import bce_numpy, bernoulli_kl_numpy, mse_numpy, sigmoid_numpy
from ae_jax.models import losses
from ae_jax.models.losses import Hparams
from ae_jax.models import Gaussian, Identity, Sparse, VQ
from ae_jax.models.vq import quantise

identity_bottleneck, sparse_bottleneck, gaussian_bottleneck = Identity(), Sparse(), Gaussian()


def vq_bottleneck(h, key, hp, codebook, mask=None):
    return VQ(codebook.shape[1])(h, key, hp, {"codebook": codebook}, mask)


@pytest.fixture(autouse=True)
def strict_ranks():
    with jax.numpy_rank_promotion("raise"):
        yield


def hp(beta=1.0, noise_std=0.0, sparsity=0.25, lr=1e-3) -> Hparams:
    return Hparams(*(jnp.float32(v) for v in (beta, noise_std, sparsity, lr)))


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ references
def gaussian_kl_numpy(mu, log_sigma):
    """KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, per dim, summed."""
    s = np.exp(log_sigma.astype(np.float64))
    return np.sum(-np.log(s) + (s**2 + mu.astype(np.float64) ** 2) / 2 - 0.5, axis=-1)


# ------------------------------------------------------------------ BCE
def test_bce_matches_pytorch_style_reference_on_moderate_logits():
    r = rng(1)
    logits = r.uniform(-8, 8, size=(5, 32, 32)).astype(np.float32)
    x = r.uniform(0, 1, size=(5, 32, 32)).astype(np.float32)
    x[:, :4] = 0.0  # the zero border of real images
    x[:, -4:] = 1.0
    got = jax.jit(losses.bce_from_logits)(logits, x)
    assert got.shape == (5,)  # one value per image, summed over all 1024 pixels
    np.testing.assert_allclose(np.asarray(got), bce_numpy(logits, x), rtol=1e-5)


def test_bce_is_summed_over_pixels_not_averaged():
    logits = np.zeros((2, 32, 32), np.float32)  # p = 0.5 everywhere
    x = np.zeros((2, 32, 32), np.float32)
    got = jax.jit(losses.bce_from_logits)(logits, x)
    np.testing.assert_allclose(np.asarray(got), [1024 * np.log(2)] * 2, rtol=1e-6)


def test_bce_log_clamp_at_minus_100_like_pytorch():
    # p = sigmoid(±200) saturates to exactly 0/1 in float32: PyTorch clamps log(0) to -100 per pixel.
    logits = np.array([[200.0, -200.0, 200.0, -200.0]], np.float32)
    x = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    got = jax.jit(losses.bce_from_logits)(logits, x)
    np.testing.assert_allclose(np.asarray(got), [200.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got), bce_numpy(logits, x), rtol=1e-6)


def test_bce_gradient_is_finite_where_sigmoid_saturates():
    logits = jnp.array([[60.0, -60.0, 5.0]])
    x = jnp.array([[0.0, 1.0, 0.3]])
    g = jax.jit(jax.grad(lambda l: losses.bce_from_logits(l, x).sum()))(logits)
    assert np.all(np.isfinite(np.asarray(g)))
    # away from the clamp the gradient is sigmoid(l) - x
    np.testing.assert_allclose(float(g[0, 2]), 1 / (1 + np.exp(-5.0)) - 0.3, rtol=1e-5)


# ------------------------------------------------------------------ MSE
def test_mse_matches_numpy_reference():
    r = rng(11)
    logits = r.uniform(-8, 8, size=(5, 32, 32)).astype(np.float32)
    x = r.uniform(0, 1, size=(5, 32, 32)).astype(np.float32)
    x[:, :4] = 0.0
    x[:, -4:] = 1.0
    got = jax.jit(losses.mse_from_logits)(logits, x)
    assert got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), mse_numpy(logits, x), rtol=1e-5)


def test_mse_is_summed_over_pixels_not_averaged():
    half = jax.jit(losses.mse_from_logits)(np.zeros((2, 32, 32), np.float32), np.zeros((2, 32, 32), np.float32))
    np.testing.assert_allclose(np.asarray(half), [1024 * 0.25] * 2, rtol=1e-6)  # (0.5 - 0)^2 per pixel
    wrong = jax.jit(losses.mse_from_logits)(np.full((1, 32, 32), 50.0, np.float32), np.zeros((1, 32, 32), np.float32))
    np.testing.assert_allclose(np.asarray(wrong), [1024.0], rtol=1e-6)  # saturated and wrong: 1 per pixel


def test_mse_gradient_is_that_of_the_squared_sigmoid_error():
    r = rng(12)
    logits = r.uniform(-4, 4, size=(3, 6)).astype(np.float32)
    x = r.uniform(0, 1, size=(3, 6)).astype(np.float32)
    g = jax.jit(jax.grad(lambda l: losses.mse_from_logits(l, x).sum()))(logits)
    p = sigmoid_numpy(logits)
    np.testing.assert_allclose(np.asarray(g), 2 * (p - x) * p * (1 - p), rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ KL terms
def test_gaussian_kl_closed_form():
    r = rng(2)
    mu = r.normal(0, 1.5, size=(6, 7)).astype(np.float32)
    log_sigma = r.normal(0, 0.7, size=(6, 7)).astype(np.float32)
    got = jax.jit(losses.gaussian_kl)(mu, log_sigma)
    assert got.shape == (6,)
    np.testing.assert_allclose(np.asarray(got), gaussian_kl_numpy(mu, log_sigma), rtol=1e-5, atol=1e-5)
    zero = jax.jit(losses.gaussian_kl)(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    np.testing.assert_allclose(np.asarray(zero), 0.0, atol=1e-7)  # the prior itself


def test_bernoulli_kl_reference_and_edges():
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.9, 0.999], np.float32)
    got = jax.jit(losses.bernoulli_kl)(0.25, q)
    np.testing.assert_allclose(np.asarray(got), bernoulli_kl_numpy(0.25, q), rtol=1e-4)
    assert float(got[2]) == pytest.approx(0.0, abs=1e-7)  # KL(p || p) = 0
    assert np.all(np.asarray(got) >= 0)


@pytest.mark.parametrize("q", [0.0, 1.0])
def test_bernoulli_kl_is_finite_when_the_mean_activation_saturates(q):
    # A sparse unit whose sigmoid saturates for the whole batch has mean activation exactly 0 or 1
    # (float32 sigmoid(h) == 1.0 for h > ~17). The eps clip exists to keep the penalty finite there.
    got = np.asarray(jax.jit(losses.bernoulli_kl)(0.25, jnp.array([q], jnp.float32)))
    assert np.isfinite(got).all(), f"KL(0.25 || {q}) = {got[0]}"
    assert got[0] > 1.0


def test_masked_mean_ignores_masked_rows():
    v = jnp.array([[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]])
    got = jax.jit(losses.masked_mean)(v, jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(np.asarray(got), [2.0, 3.0])
    np.testing.assert_allclose(np.asarray(losses.masked_mean(v, None)), np.asarray(v).mean(0), rtol=1e-6)


# ------------------------------------------------------------------ bottlenecks
def test_identity_bottleneck():
    h = jnp.arange(6.0).reshape(2, 3)
    b = jax.jit(identity_bottleneck)(h, jax.random.key(0), hp())
    np.testing.assert_array_equal(np.asarray(b.z), np.asarray(h))
    assert float(b.extra) == 0.0


def test_sparse_codes_in_unit_interval_and_penalty_value():
    r = rng(3)
    h = r.normal(0, 3, size=(16, 5)).astype(np.float32)
    h[0, 0], h[1, 1] = 80.0, -80.0  # saturating
    b = jax.jit(sparse_bottleneck)(h, jax.random.key(0), hp(beta=2.0, sparsity=0.25))
    z = np.asarray(b.z)
    assert z.min() >= 0.0 and z.max() <= 1.0
    np.testing.assert_allclose(z, sigmoid_numpy(h), rtol=1e-5, atol=1e-7)
    rho = np.clip(z.astype(np.float64).mean(0), 1e-10, 1 - 1e-10)
    np.testing.assert_allclose(float(b.extra), 2.0 * bernoulli_kl_numpy(0.25, rho).sum(), rtol=1e-4)


def test_sparse_penalty_stays_finite_when_a_unit_saturates_over_the_batch():
    h = np.zeros((8, 3), np.float32)
    h[:, 1] = 30.0  # sigmoid(30) == 1.0 in float32 for every image
    b = jax.jit(sparse_bottleneck)(h, jax.random.key(0), hp(beta=1.0, sparsity=0.25))
    assert np.isfinite(float(b.extra)), "one saturated unit makes the sparse loss (and the run) non-finite"


def test_gaussian_bottleneck_zero_log_sigma_gives_mu_plus_eps():
    key = jax.random.key(42)
    mu = jnp.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])
    h = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=-1)
    b = jax.jit(gaussian_bottleneck)(h, key, hp(beta=1.0))
    eps = jax.random.normal(key, mu.shape)
    np.testing.assert_allclose(np.asarray(b.z), np.asarray(mu + eps), rtol=1e-6, atol=1e-6)
    # KL with sigma = 1: 1/2 sum mu^2, averaged over the batch
    np.testing.assert_allclose(float(b.extra), np.mean(0.5 * np.sum(np.asarray(mu) ** 2, -1)), rtol=1e-6)


def test_gaussian_bottleneck_scale_and_kl_with_beta_and_mask():
    key = jax.random.key(7)
    r = rng(4)
    mu = r.normal(size=(4, 3)).astype(np.float32)
    log_sigma = r.normal(0, 0.5, size=(4, 3)).astype(np.float32)
    h = np.concatenate([mu, log_sigma], -1)
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    b = jax.jit(gaussian_bottleneck)(h, key, hp(beta=3.0), None, mask)
    eps = np.asarray(jax.random.normal(key, mu.shape))
    np.testing.assert_allclose(np.asarray(b.z), mu + np.exp(log_sigma) * eps, rtol=1e-5, atol=1e-6)
    ref = 3.0 * gaussian_kl_numpy(mu, log_sigma)[:3].mean()  # the masked row does not count
    np.testing.assert_allclose(float(b.extra), ref, rtol=1e-5)


def _codebook(n=4, k=512, seed=5):
    return rng(seed).uniform(-1 / k, 1 / k, size=(n, k)).astype(np.float32)


def test_vq_outputs_are_drawn_from_each_dimensions_codebook():
    cb = _codebook()
    h = rng(6).uniform(-3 / 512, 3 / 512, size=(32, 4)).astype(np.float32)
    z = np.asarray(jax.jit(quantise)(h, cb))
    for j in range(4):
        assert np.isin(z[:, j], cb[j]).all(), f"dimension {j} used a value outside its own codebook"
        nearest = cb[j][np.argmin(np.abs(h[:, j, None] - cb[j][None]), -1)]
        np.testing.assert_array_equal(z[:, j], nearest)
    b = jax.jit(vq_bottleneck)(h, jax.random.key(0), hp(), cb)
    np.testing.assert_allclose(np.asarray(b.z), z, atol=1e-7)  # forward value is the quantised one


def test_vq_loss_value():
    cb = _codebook()
    h = rng(7).uniform(-0.01, 0.01, size=(8, 4)).astype(np.float32)
    q = cb[np.arange(4)[None, :], np.argmin(np.abs(h[:, :, None] - cb[None]), -1)]
    per_ex = ((h - q).astype(np.float64) ** 2).sum(-1)
    beta = 0.25
    b = jax.jit(vq_bottleneck)(h, jax.random.key(0), hp(beta=beta), cb)
    np.testing.assert_allclose(float(b.extra), (1 + beta) * per_ex.mean(), rtol=1e-5)
    mask = jnp.array([1.0] * 5 + [0.0] * 3)
    bm = jax.jit(vq_bottleneck)(h, jax.random.key(0), hp(beta=beta), cb, mask)
    np.testing.assert_allclose(float(bm.extra), (1 + beta) * per_ex[:5].mean(), rtol=1e-5)


def test_vq_straight_through_and_commitment_gradients():
    cb = jnp.asarray(_codebook())
    h = jnp.asarray(rng(8).uniform(-0.01, 0.01, size=(8, 4)).astype(np.float32))
    beta = 0.5

    def z_sum(h, cb):
        return vq_bottleneck(h, None, hp(beta=beta), cb).z.sum()

    def extra(h, cb):
        return vq_bottleneck(h, None, hp(beta=beta), cb).extra

    gz_h, gz_cb = jax.jit(jax.grad(z_sum, argnums=(0, 1)))(h, cb)
    np.testing.assert_array_equal(np.asarray(gz_h), np.ones((8, 4)))  # straight-through
    np.testing.assert_array_equal(np.asarray(gz_cb), 0.0)  # z's gradient never reaches the codebook
    ge_h, ge_cb = jax.jit(jax.grad(extra, argnums=(0, 1)))(h, cb)
    q = np.asarray(quantise(h, cb))
    # commitment term beta*(h - sg(q))^2 moves h; codebook term (sg(h) - q)^2 moves the codebook
    np.testing.assert_allclose(np.asarray(ge_h), 2 * beta * (np.asarray(h) - q) / 8, rtol=1e-4, atol=1e-9)
    assert np.count_nonzero(np.asarray(ge_cb)) > 0
    np.testing.assert_allclose(np.asarray(ge_cb).sum(), (2 * (q - np.asarray(h)) / 8).sum(), rtol=1e-4, atol=1e-9)


def test_add_input_noise_is_clipped_and_keyed():
    x = jnp.asarray(rng(9).uniform(0, 1, size=(4, 32, 32)).astype(np.float32))
    key = jax.random.key(3)
    noisy = jax.jit(losses.add_input_noise)(key, x, jnp.float32(0.5))
    n = np.asarray(noisy)
    assert n.min() >= 0.0 and n.max() <= 1.0
    assert (n == 0.0).any() and (n == 1.0).any()  # std 0.5 certainly pushes some pixels past the ends
    ref = np.clip(np.asarray(x) + 0.5 * np.asarray(jax.random.normal(key, x.shape)), 0, 1)
    np.testing.assert_allclose(n, ref, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(losses.add_input_noise(key, x, jnp.float32(0.0))), np.asarray(x))
