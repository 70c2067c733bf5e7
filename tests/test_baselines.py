"""The random-encoder baseline: only the head learns, BatchNorm's running statistics follow the
training batches, every seed runs in one program, and on digits it lands between chance and
the trained from-scratch encoder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax.tasks import probe, scratch
from ae_jax.tasks import random_encoder as baselines
from ae_jax.trainer import run_keys

from _helpers import leaves_with_paths


def test_training_moves_the_head_and_running_statistics_but_not_one_encoder_weight(digits):
    x, y = jnp.asarray(digits.x_train[:300]), jnp.asarray(digits.y_train[:300])
    v0, v1 = jax.jit(lambda k: baselines.random_encoder_train(k, x, y, epochs=2))(jax.random.key(5))
    p0, p1 = leaves_with_paths(v0["params"]), leaves_with_paths(v1["params"])
    enc = [k for k in p0 if k.startswith("enc/")]
    head = [k for k in p0 if k.startswith("head/")]
    assert enc and head and len(enc) + len(head) == len(p0)
    for k in enc:  # kernels, BatchNorm scales and biases: bit for bit as initialised
        np.testing.assert_array_equal(p1[k], p0[k], err_msg=k)
    for k in head:
        assert np.abs(p1[k] - p0[k]).max() > 1e-3, k
    s0, s1 = leaves_with_paths(v0["batch_stats"]), leaves_with_paths(v1["batch_stats"])
    for k in s0:
        assert np.abs(s1[k] - s0[k]).max() > 1e-3, k


def test_running_statistics_are_the_momentum_average_of_the_training_batches(digits):
    """bn0's running mean and variance after one epoch, recomputed from the epoch's batches by hand."""
    n, key = 200, jax.random.key(11)
    x, y = jnp.asarray(digits.x_train[:n]), jnp.asarray(digits.y_train[:n])
    v0, v1 = baselines.random_encoder_train(key, x, y, epochs=1)
    w0 = np.asarray(v0["params"]["enc"]["dense0"]["kernel"], np.float64)  # no bias before bn0
    _, k_run = jax.random.split(key)
    order = probe.epoch_order(jax.random.fold_in(k_run, 0), n, probe.PROBE_BATCH, True, n)
    idx = np.asarray(order).reshape(-1, probe.PROBE_BATCH)
    assert len(idx) == n // probe.PROBE_BATCH and sorted(np.asarray(order)) == sorted(np.asarray(
        jax.random.permutation(jax.random.fold_in(k_run, 0), n))[: len(order)])  # whole batches of one shuffle
    mean, var = np.zeros(w0.shape[1]), np.ones(w0.shape[1])
    for bi in idx:
        a = np.asarray(digits.x_train[:n][bi], np.float64).reshape(len(bi), -1) @ w0
        mean = 0.9 * mean + 0.1 * a.mean(0)
        var = 0.9 * var + 0.1 * a.var(0, ddof=1)
    np.testing.assert_allclose(v1["batch_stats"]["enc"]["bn0"]["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v1["batch_stats"]["enc"]["bn0"]["var"], var, rtol=1e-4, atol=1e-5)


def test_all_seeds_in_one_program_equal_each_seed_alone(digits):
    d = digits
    args = (d.x_train[:256], d.y_train[:256], d.x_val, d.y_val, d.x_test[:100], d.y_test[:100])
    both = baselines.random_encoder_baseline([3, 7], *args)
    assert both["test_accuracy"].shape == (2,)
    key = jax.random.fold_in(run_keys(7)["task"], baselines.TASK_STREAM)
    alone = scratch.labelled_baseline(key[None], *args, head_only=True)
    for k in ("val_accuracy", "test_accuracy", "best_epoch"):
        np.testing.assert_allclose(both[k][1], alone[k][0], rtol=1e-6, err_msg=k)


def test_a_random_encoder_beats_chance_but_not_a_trained_encoder(digits):
    d = digits  # all 1 350 training images: 42 head updates per epoch
    args = (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test)
    seeds = [0, 1]
    rand = baselines.random_encoder_baseline(seeds, *args)
    trained = scratch.scratch_baseline(seeds, *args)
    assert (rand["test_accuracy"] > 0.3).all(), rand  # chance is 0.1
    assert rand["test_accuracy"].mean() < trained["test_accuracy"].mean() - 0.1, (rand, trained)
    assert ((rand["best_epoch"] >= 1) & (rand["best_epoch"] <= probe.PROBE_EPOCHS)).all()
