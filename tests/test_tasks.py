"""The gauntlet's building blocks (ae_jax.tasks) on hand-made inputs, and run_task's bookkeeping.

AUC against hand counts and the rank-sum formula, early stopping on a scripted sequence of validation
accuracies, the GIF's frames and timing, interpolation frames against an independent forward pass,
prior samples (the conditional model's too), the latent-structure scores on synthetic clusters, the
linear probe on a synthetic separable problem, per-class reconstruction errors against numpy, and
diverged seeds left out of every task's numbers. Models are freshly initialised (no training): these
tests check the plumbing, not what a model learns. The probe and the from-scratch baseline on real
data are in test_bakeoff.py, which reuses the models the end-to-end bake-off trains.
"""
from __future__ import annotations

import functools
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ae_jax import figures
from ae_jax.data import load_splits
from ae_jax.io import read_json, write_json
from ae_jax.models import NUM_CLASSES, Autoencoder, MODELS, ModelSpec
from ae_jax.models.bottleneck import Bottleneck, Code
from ae_jax.tasks import TASKS, EvalContext, run_task, task_path
from ae_jax.tasks import samples as samples_task
from ae_jax.tasks.anomaly import anomaly_labels, roc_auc
from ae_jax.tasks.interpolation import N_FRAMES, interpolate_h, interpolation_frames
from ae_jax.tasks.latent_structure import embed_2d, structure_scores
from ae_jax.tasks import probe
from ae_jax.tasks.probe import PROBE_EPOCHS, PROBE_PATIENCE, _early_stopping_scan, linear_probe
from ae_jax.trainer import ExperimentConfig, map_runs, stack_hparams
from ae_jax.trainer.program import TrainConfig, init_state, run_keys, spec_hparams
from _helpers import bce_numpy, mse_numpy
from ae_jax.trainer.results import per_class

LATENT = 20
CFG = TrainConfig(latent_dim=LATENT, epochs=1, batch_size=64)


# ------------------------------------------------------------------ AUC
def pair_auc(scores, positive) -> float:
    """AUC by its definition: P(score of a positive > score of a negative), ties count 1/2."""
    s, p = np.asarray(scores, np.float64), np.asarray(positive).astype(bool)
    pos, neg = s[p][:, None], s[~p][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_auc_of_a_perfectly_separating_score_is_1_and_of_its_reverse_0():
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    s = np.where(y == 1, 5.0, 1.0) + np.arange(8) * 0.01
    auc, fpr, tpr = roc_auc(s, y)
    assert auc == 1.0
    assert roc_auc(-s, y)[0] == 0.0
    # a perfect score's ROC curve passes through the top-left corner
    assert np.any((fpr == 0.0) & (tpr == 1.0))


@pytest.mark.parametrize("scores, positive, expected", [
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3 of 4
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    # a tie counts one half: positives {2, 3}, negatives {1, 2} -> 1 + 0.5 + 1 + 1 of 4
    ([1.0, 2.0, 2.0, 3.0], [0, 1, 0, 1], 0.875),
    # one positive ranked above 2 of 4 negatives
    ([5.0, 1.0, 2.0, 7.0, 9.0], [1, 0, 0, 0, 0], 0.5),
], ids=["three_of_four_pairs", "tie_counts_half", "middle_of_the_pack"])
def test_auc_on_small_examples_counted_by_hand(scores, positive, expected):
    auc, fpr, tpr = roc_auc(np.array(scores), np.array(positive))
    assert auc == pytest.approx(expected, abs=1e-12)
    assert pair_auc(scores, positive) == pytest.approx(expected, abs=1e-12)  # the helper agrees with the hand count
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert trapezoid_area(fpr, tpr) == pytest.approx(expected, abs=1e-12)  # the curve is the one the AUC is of


def trapezoid_area(x, y) -> float:
    """The area under the polyline through (x, y), by the trapezoid rule (numpy 1.x has no np.trapezoid)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def rank_sum_auc(scores, positive) -> float:
    """AUC by the Mann-Whitney formula: (sum of the positives' mid-ranks - P(P+1)/2) / (P N)."""
    from scipy.stats import rankdata
    r = rankdata(np.asarray(scores, np.float64))  # ties get their average rank
    p = np.asarray(positive).astype(bool)
    n_pos, n_neg = p.sum(), (~p).sum()
    return float((r[p].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_the_pair_count_and_the_rank_sum_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.15).astype(np.int32)
    s = rng.normal(size=300) + 0.8 * y
    s[::7] = np.round(s[::7], 1)  # some ties
    auc, fpr, tpr = roc_auc(s, y)
    assert isinstance(auc, float)
    assert auc == pytest.approx(pair_auc(s, y), abs=1e-12)
    assert auc == pytest.approx(rank_sum_auc(s, y), abs=1e-12)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert trapezoid_area(fpr, tpr) == pytest.approx(auc, abs=1e-9)
    # the positive class is the one given: swapping it mirrors the AUC
    assert roc_auc(s, 1 - y)[0] == pytest.approx(1.0 - auc, abs=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_auc_of_non_finite_scores_is_nan(bad):
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, bad, 0.7])
    auc, fpr, tpr = roc_auc(s, y)
    assert np.isnan(auc)
    assert np.isfinite(fpr).all() and np.isfinite(tpr).all()  # still a drawable (diagonal) curve


def test_the_anomaly_task_scores_by_bce_with_class_1_positive(tmp_path):
    """The task on hand-made errors: seed 0 gives every 1 the larger BCE (AUC 1), seed 1 the smaller (AUC 0);
    the signed score, the original's, is reported beside it, and roc.npz keeps the scores it ranked."""
    y = np.array([0, 1, 2, 1, 3, 4, 1, 5])
    ones = y == 1
    bce = np.stack([np.where(ones, 90.0, 50.0), np.where(ones, 10.0, 50.0) + np.arange(8)])
    signed = -bce
    ctx = types.SimpleNamespace(seeds=[0, 1], test={"bce": bce, "signed_error": signed},
                                data=types.SimpleNamespace(y_test=y), valid=np.array([True, True]),
                                run_dir=tmp_path, cfg=types.SimpleNamespace(model="stub"), log=lambda s: None)
    out = TASKS["anomaly"].run(ctx)
    np.testing.assert_array_equal(out.metrics["anomaly_auc"], [1.0, 0.0])
    np.testing.assert_array_equal(out.metrics["anomaly_auc_signed_bug"], [0.0, 1.0])
    with np.load(tmp_path / "roc.npz") as z:
        np.testing.assert_array_equal(z["scores"], bce)
        np.testing.assert_array_equal(z["positive"], ones.astype(np.int32))


def test_the_anomaly_positives_are_the_test_images_of_the_class_left_out_of_training():
    s = load_splits("digits", "anomaly")
    absent = set(range(NUM_CLASSES)) - set(np.unique(s.y_train).tolist())
    assert len(absent) == 1
    lab = anomaly_labels(s.y_test)
    assert lab.dtype.kind == "i" and set(np.unique(lab).tolist()) == {0, 1}
    np.testing.assert_array_equal(np.unique(s.y_test[lab == 1]), sorted(absent))
    assert not np.isin(s.y_test[lab == 0], sorted(absent)).any()


# ------------------------------------------------------------------ early stopping
def scripted(vals, tests):
    """epoch_fn returning (vals[e], tests[e]) and counting its calls in the carry."""
    vals, tests = jnp.asarray(vals, jnp.float32), jnp.asarray(tests, jnp.float32)

    def epoch_fn(carry, e):
        return carry + 1, (vals[e], tests[e])
    return epoch_fn


def reference_early_stopping(vals, patience):
    """Plain Python: (best epoch 1-based, its index) under 'stop after `patience` epochs without improvement'."""
    best, best_i, since = -np.inf, None, 0
    for i, v in enumerate(vals):
        if v > best:
            best, best_i, since = v, i, 0
        else:
            since += 1
            if since >= patience:
                break
    return best_i + 1, best_i


PADDED = PROBE_EPOCHS


@pytest.mark.parametrize("vals, best_epoch", [
    # 0.3 at epoch 2, then 3 epochs without improvement: stopped, so the 0.9 at epoch 6 is NOT picked
    ([0.1, 0.3, 0.2, 0.25, 0.28, 0.9], 2),
    # two epochs without improvement and then one: the counter resets, 0.5 at epoch 5 is picked
    ([0.1, 0.3, 0.2, 0.25, 0.5, 0.4, 0.45, 0.3, 0.95], 5),
    # an equal value is no improvement: the first 0.4 wins, then 3 epochs without improvement
    ([0.2, 0.4, 0.4, 0.4, 0.4, 0.9], 2),
    # always improving: the last epoch
    (list(np.linspace(0.1, 0.8, PADDED)), PADDED),
    # best at the first epoch
    ([0.7, 0.1, 0.2, 0.3, 0.99], 1),
], ids=["stops_before_late_peak", "counter_resets", "ties_do_not_improve", "always_improving", "first_epoch"])
def test_early_stopping_keeps_the_best_validation_epoch_and_stops_after_3_without_improvement(vals, best_epoch):
    vals = list(vals) + [0.99] * (PADDED - len(vals))  # late high values that must never be picked after a stop
    tests = 0.5 + np.arange(PADDED) / 100.0             # a distinct test accuracy per epoch
    assert reference_early_stopping(vals, PROBE_PATIENCE)[0] == best_epoch
    out = jax.jit(lambda: _early_stopping_scan(scripted(vals, tests), jnp.int32(0), PADDED,
                                                     PROBE_PATIENCE))()
    assert int(out["best_epoch"]) == best_epoch
    assert float(out["val_accuracy"]) == pytest.approx(vals[best_epoch - 1])
    assert float(out["test_accuracy"]) == pytest.approx(tests[best_epoch - 1])  # the test accuracy OF that epoch


def test_early_stopping_matches_a_plain_reference_on_random_sequences():
    rng = np.random.default_rng(0)
    tests = rng.random(PADDED)
    for patience in (1, 3, 5):
        for _ in range(8):
            vals = np.round(rng.random(PADDED), 2)  # rounding makes ties
            ep, idx = reference_early_stopping(vals, patience)
            out = _early_stopping_scan(scripted(vals, tests), jnp.int32(0), PADDED, patience)
            assert int(out["best_epoch"]) == ep, (patience, vals)
            assert float(out["test_accuracy"]) == pytest.approx(tests[idx], abs=1e-6)


# ------------------------------------------------------------------ GIF
def distinct_frames(t=130):
    """t different [32, 32] frames in [0, 1]: a gradient with one white pixel that walks the image."""
    base = np.tile(np.linspace(0.0, 0.6, 32, dtype=np.float32), (32, 1))
    frames = np.repeat(base[None], t, axis=0)
    for i in range(t):
        frames[i, i // 32, i % 32] = 1.0
    return frames


def read_gif(path):
    """(frames as uint8 [K, H, W], per-frame durations in ms, loop) read back with Pillow."""
    with Image.open(path) as im:
        assert im.format == "GIF"
        loop = im.info.get("loop")
        frames, durations = [], []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("L")))
            durations.append(im.info["duration"])
    return np.stack(frames), durations, loop


def test_gif_plays_130_frames_forward_and_128_back_enlarged_looping(tmp_path):
    frames = distinct_frames()
    path = tmp_path / "interp.gif"
    n = figures.write_gif(frames, path)
    assert n == 258
    got, durations, loop = read_gif(path)
    px = 32 * figures.GIF_SCALE
    assert got.shape == (258, px, px)
    assert loop == 0  # loops forever
    assert durations == [30] * 258 and sum(durations) == 258 * 30
    # content and order: 0..129 forward, then 128..1 back (neither end repeated), each enlarged
    order = list(range(130)) + list(range(128, 0, -1))
    expected = (frames * 255).astype(np.uint8)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(got[k], np.kron(expected[i], np.ones((figures.GIF_SCALE,) * 2, np.uint8)), err_msg=f"frame {k}")


def test_gif_total_duration_survives_merged_identical_frames(tmp_path):
    """Pillow merges consecutive identical frames; the sequence still lasts (2T - 2) x ms_per_frame."""
    frames = distinct_frames(10)
    frames[3:6] = frames[3]  # three identical frames in a row
    n = figures.write_gif(frames, tmp_path / "g.gif", ms_per_frame=40)
    assert n == 18
    got, durations, _ = read_gif(tmp_path / "g.gif")
    assert sum(durations) == 18 * 40
    assert len(got) < 18


# ------------------------------------------------------------------ interpolation
@pytest.fixture(scope="module")
def x_pair(digits):
    return digits.x_test[:2]


@functools.lru_cache(maxsize=None)
def digits_splits(variant: str):
    return load_splits("digits", variant)


def context(name: str, state, run_dir, seeds=(0,)) -> EvalContext:
    """An EvalContext for model `name` at n = 20 on digits; state has a leading seed axis."""
    cfg = ExperimentConfig(model=name, dataset="digits", latent_dim=LATENT, seeds=len(seeds), first_seed=seeds[0],
                           epochs=CFG.epochs, batch_size=CFG.batch_size)
    return EvalContext(MODELS[name], cfg, state, run_dir, digits_splits, log=lambda m: None)


def batched(state):
    return jax.tree.map(lambda a: a[None], state)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """fresh(name) -> (spec, unbatched initial TrainState, Hparams, its one-seed EvalContext) at n = 20."""
    cache = {}
    run_dir = tmp_path_factory.mktemp("fresh")

    def get(name):
        if name not in cache:
            spec = MODELS[name]
            st = init_state(spec, CFG, run_keys(0)["init"])
            cache[name] = (spec, st, spec_hparams(spec), context(name, batched(st), run_dir))
        return cache[name]
    return get


def test_tasks_evaluate_with_the_runs_own_beta_and_refuse_a_grid_of_betas(tmp_path):
    """A run trained with --beta=2 is evaluated at beta 2 (not the model's default); a seeds x betas run, whose
    state holds more runs than seeds, is refused rather than evaluated with misaligned keys."""
    spec = MODELS["beta_vae"]
    one = ExperimentConfig(model="beta_vae", dataset="digits", seeds=3, betas=(2.0,))
    hps = EvalContext(spec, one, None, tmp_path, digits_splits).hps
    assert [float(h.beta) for h in hps] == [2.0] * 3 and spec.beta != 2.0
    default = ExperimentConfig(model="beta_vae", dataset="digits", seeds=2)
    assert [float(h.beta) for h in EvalContext(spec, default, None, tmp_path, digits_splits).hps] == [spec.beta] * 2
    grid = ExperimentConfig(model="beta_vae", dataset="digits", seeds=2, betas=(0.5, 4.0))
    with pytest.raises(ValueError, match="one run per seed"):
        EvalContext(spec, grid, None, tmp_path, digits_splits).hps


def module_vars(state):
    return {"params": state.params, "batch_stats": state.batch_stats}


def frames_of(name, fresh, x, key, fixed_noise=False, y=(0, 0)):
    ctx = fresh(name)[3]
    return interpolation_frames(ctx, x, np.asarray(y), key, fixed_noise)


def test_interpolation_frames_of_a_deterministic_model_run_from_one_reconstruction_to_the_other(fresh, x_pair):
    spec, st, _, _ = fresh("vanilla")
    frames = frames_of("vanilla", fresh, x_pair, run_keys(0)["task"])
    assert frames.shape == (N_FRAMES, 32, 32)
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    # independent forward pass: Autoencoder.__call__ decodes h directly (vanilla's bottleneck is the identity)
    model = Autoencoder(latent_dim=LATENT, encoder_out=LATENT)
    recon = np.asarray(jax.nn.sigmoid(model.apply(module_vars(st), jnp.asarray(x_pair), train=False)))
    np.testing.assert_allclose(frames[0], recon[0], atol=1e-5)
    np.testing.assert_allclose(frames[-1], recon[1], atol=1e-5)
    # the ends differ (untrained, by little) by far more than the 1e-5 the checks allow, so they mean something
    assert np.abs(frames[0] - frames[-1]).max() > 1e-3
    # frame k decodes (1 - k/129) h0 + (k/129) h1
    h = model.apply(module_vars(st), jnp.asarray(x_pair), method=Autoencoder.encode)
    for k in (1, 43, 100):
        w = k / 129
        hk = (1 - w) * h[0:1] + w * h[1:2]
        ref = np.asarray(jax.nn.sigmoid(model.apply(module_vars(st), hk, method=Autoencoder.decode)))[0]
        np.testing.assert_allclose(frames[k], ref, atol=1e-5, err_msg=f"frame {k}")


def test_interpolate_h_starts_at_one_code_ends_at_the_other_in_equal_steps():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    got = np.asarray(interpolate_h(a.astype(np.float32), b.astype(np.float32)))
    assert got.shape == (3, N_FRAMES, 6)
    np.testing.assert_array_equal(got[:, 0], a.astype(np.float32))
    np.testing.assert_allclose(got[:, -1], b, rtol=0, atol=1e-6)
    w = np.arange(N_FRAMES)[None, :, None] / (N_FRAMES - 1)
    np.testing.assert_allclose(got, (1 - w) * a[:, None] + w * b[:, None], rtol=0, atol=1e-6)


def vae_reference(st, x, eps):
    """sigmoid(decode(mu + sigma * eps)) for each image, with the given noise [1, n]."""
    model = Autoencoder(latent_dim=LATENT, encoder_out=2 * LATENT)
    h = model.apply(module_vars(st), jnp.asarray(x), method=Autoencoder.encode)
    mu, log_sigma = h[:, :LATENT], h[:, LATENT:]
    z = mu + jnp.exp(log_sigma) * eps
    return np.asarray(jax.nn.sigmoid(model.apply(module_vars(st), z, method=Autoencoder.decode)))


def test_vae_interpolation_with_fixed_noise_shares_one_noise_draw(fresh, x_pair):
    _, st, _, _ = fresh("vae")
    key = jax.random.fold_in(run_keys(0)["task"], 4)
    fixed = frames_of("vae", fresh, x_pair, key, fixed_noise=True)
    assert fixed.shape == (N_FRAMES, 32, 32) and fixed.min() >= 0.0 and fixed.max() <= 1.0
    np.testing.assert_array_equal(fixed, frames_of("vae", fresh, x_pair, key, fixed_noise=True))  # same key, same frames
    # both ends decode mu + sigma * eps with the SAME eps
    ref = vae_reference(st, x_pair, jax.random.normal(key, (1, LATENT)))
    np.testing.assert_allclose(fixed[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(fixed[-1], ref[1], atol=1e-5)
    # another key gives other noise
    other = frames_of("vae", fresh, x_pair, jax.random.fold_in(key, 1), fixed_noise=True)
    assert np.abs(other[0] - fixed[0]).max() > 1e-3


def test_vae_interpolation_noise_is_shared_only_when_fixed(fresh, x_pair):
    """Same image at both ends: with fixed noise every frame is the same; with per-frame noise they differ."""
    key = jax.random.fold_in(run_keys(0)["task"], 4)
    same = np.stack([x_pair[0], x_pair[0]])
    fixed = frames_of("vae", fresh, same, key, fixed_noise=True)
    np.testing.assert_allclose(fixed, np.broadcast_to(fixed[0], fixed.shape), atol=1e-6)
    jitter = frames_of("vae", fresh, same, key, fixed_noise=False)
    np.testing.assert_array_equal(jitter, frames_of("vae", fresh, same, key, fixed_noise=False))  # deterministic
    step = np.abs(np.diff(jitter, axis=0)).reshape(129, -1).max(1)
    assert np.all(step > 1e-3), "consecutive frames with fresh noise should differ"


# ------------------------------------------------------------------ prior samples
def test_vae_prior_samples_are_standard_normal(fresh):
    spec, st, _, ctx = fresh("vae")
    key = run_keys(0)["task"]
    z = np.asarray(samples_task.prior_samples(ctx, key, samples_task.N_SHOW))  # the Samples task's draw
    assert z.shape == (16, LATENT) and np.isfinite(z).all()
    assert np.asarray(spec.bottleneck.sample_prior(key, 16, 7, st.params)).shape == (16, 7)
    np.testing.assert_array_equal(z, spec.bottleneck.sample_prior(key, 16, LATENT, st.params))
    assert not np.allclose(z, spec.bottleneck.sample_prior(jax.random.fold_in(key, 1), 16, LATENT, st.params))
    big = np.asarray(spec.bottleneck.sample_prior(key, 4096, LATENT, st.params))
    assert abs(big.mean()) < 0.03 and abs(big.std() - 1.0) < 0.03
    assert np.all(np.abs(big.mean(0)) < 0.1) and np.all(np.abs(big.std(0) - 1.0) < 0.1)  # every dimension


def test_vq_prior_samples_draw_each_dimension_from_its_own_codebook_row(fresh):
    spec, st, _, _ = fresh("vq")
    K = spec.bottleneck.codebook_size
    # a codebook whose entries tell their row and column apart: cb[j, k] = j + (k + 0.5) / K
    cb = np.arange(LATENT, dtype=np.float32)[:, None] + (np.arange(K, dtype=np.float32)[None] + 0.5) / K
    assert st.params["codebook"].shape == cb.shape
    st = st._replace(params={**st.params, "codebook": jnp.asarray(cb)})
    z = np.asarray(spec.bottleneck.sample_prior(run_keys(0)["task"], 16, LATENT, st.params))
    assert z.shape == (16, LATENT)
    for j in range(LATENT):
        assert np.isin(z[:, j], cb[j]).all(), f"dimension {j} drew values outside its codebook row"
    assert len(np.unique(z[:, 0])) > 8  # 16 draws out of 512 are (almost) all different
    # categories are uniform over all K entries, both ends included
    big = np.asarray(spec.bottleneck.sample_prior(run_keys(1)["task"], 2048, LATENT, st.params))
    k = np.rint((big - np.arange(LATENT)[None]) * K - 0.5).astype(int)
    np.testing.assert_allclose(cb[np.arange(LATENT)[None], k], big)
    assert k.min() == 0 and k.max() == K - 1
    counts = np.bincount(k.ravel(), minlength=K)
    assert counts.min() > 0 and abs(k.mean() - (K - 1) / 2) < 5


def test_models_without_a_prior_refuse_to_sample(fresh):
    spec, st, _, ctx = fresh("vanilla")
    assert not spec.can_sample and not TASKS["samples"].applies(spec)
    with pytest.raises(ValueError, match="no prior"):
        spec.bottleneck.sample_prior(run_keys(0)["task"], 16, LATENT, st.params)


# ------------------------------------------------------------------ latent structure
def clusters(n_per=40, k=10, dim=2, spread=0.3, seed=0):
    """k tight clusters (labels 0..k-1): on a circle of radius 10 in 2-D, at 10 x the unit vectors otherwise."""
    rng = np.random.default_rng(seed)
    if dim == 2:
        a = 2 * np.pi * np.arange(k) / k
        centres = 10 * np.stack([np.cos(a), np.sin(a)], axis=1)
    else:
        centres = 10 * np.eye(k, dim)
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + spread * rng.normal(size=(k * n_per, dim))).astype(np.float32), labels


def test_structure_scores_on_well_separated_clusters_are_near_perfect():
    emb, y = clusters()
    s = structure_scores(emb, y, seed=0)
    assert set(s) == {"knn_accuracy", "silhouette"}
    assert s["knn_accuracy"] > 0.98
    assert s["silhouette"] > 0.5


def test_structure_scores_on_random_labels_are_near_chance():
    emb, y = clusters()
    y = np.random.default_rng(1).permutation(y)
    s = structure_scores(emb, y, seed=0)
    assert s["knn_accuracy"] < 0.25  # chance is 0.1
    assert s["silhouette"] < 0.1


def knn_reference(emb, labels, k=5, folds=5):
    """k-NN accuracy by majority vote over Euclidean neighbours, in plain numpy, averaged over scikit-learn's
    stratified (unshuffled) 5 folds; two classes and odd k, so no ties."""
    from sklearn.model_selection import StratifiedKFold
    fold = np.empty(len(labels), int)
    for f, (_, te) in enumerate(StratifiedKFold(folds).split(emb, labels)):
        fold[te] = f
    accs = []
    for f in range(folds):
        tr, te = fold != f, fold == f
        d = ((emb[te][:, None] - emb[tr][None]) ** 2).sum(-1)
        votes = labels[tr][np.argsort(d, axis=1, kind="stable")[:, :k]]
        pred = (votes.mean(1) > 0.5).astype(labels.dtype)
        accs.append((pred == labels[te]).mean())
    return float(np.mean(accs))


def test_knn_accuracy_is_5_fold_5_nn_as_a_numpy_reference_counts_it():
    """Two overlapping blobs with 20 % of the labels flipped: 5 neighbours vote the noise down, one would not."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 100)
    emb = (rng.normal(size=(200, 2)) + 2.5 * labels[:, None]).astype(np.float32)
    flip = rng.random(200) < 0.2
    labels = np.where(flip, 1 - labels, labels)
    got = structure_scores(emb, labels)["knn_accuracy"]
    assert got == pytest.approx(knn_reference(emb, labels), abs=1e-9)
    assert abs(knn_reference(emb, labels, k=1) - got) > 0.02  # the neighbour count is visible here


def test_structure_scores_of_a_non_finite_embedding_are_nan():
    emb, y = clusters()
    emb[3, 1] = np.nan
    s = structure_scores(emb, y)
    assert np.isnan(s["knn_accuracy"]) and np.isnan(s["silhouette"])


@pytest.mark.parametrize("n", [1, 2])
def test_embed_2d_returns_codes_of_at_most_2_dimensions_as_they_are(monkeypatch, n):
    monkeypatch.setitem(sys.modules, "umap", None)  # any attempt to import umap now fails
    z = np.random.default_rng(0).normal(size=(50, n)).astype(np.float64)
    logs = []
    emb = embed_2d(z, seed=0, log=logs.append)
    assert emb.shape == (50, n) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, z, rtol=1e-6)
    assert logs == []


def test_embed_2d_reduces_higher_dimensional_codes_with_umap():
    """One small UMAP fit (the first in a process compiles numba code; the bake-off test pays it otherwise)."""
    z, y = clusters(n_per=30, k=5, dim=10)
    emb = embed_2d(z, seed=0, log=lambda s: None)
    assert emb.shape == (150, 2) and np.isfinite(emb).all()
    assert structure_scores(emb, y)["knn_accuracy"] > 0.95  # clusters survive the reduction


def test_embed_2d_gives_nan_for_non_finite_codes_instead_of_crashing_umap():
    """A diverged seed's codes: UMAP would raise; the scores come out nan and the study goes on."""
    z = np.ones((50, 20), np.float32)
    z[3, 4] = np.nan
    emb = embed_2d(z, 0, log=lambda s: None)
    assert emb.shape == (50, 2) and np.isnan(emb).all()
    assert all(np.isnan(v) for v in structure_scores(emb, np.arange(50) % 10).values())


# ------------------------------------------------------------------ probe (on digits: test_bakeoff.py)
def separable_codes(rng, n, per_class=20):
    """A linearly separable 10-class problem: h [n, 10 * per_class], class c lights its own block of
    per_class coordinates at 1 (plus noise of std 0.1); y [n] int32."""
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    h = 0.1 * rng.normal(size=(n, NUM_CLASSES * per_class))
    for c in range(NUM_CLASSES):
        h[y == c, c * per_class:(c + 1) * per_class] += 1.0
    return h.astype(np.float32), y


def test_linear_probe_solves_a_linearly_separable_problem():
    """The probe (vanilla: the identity bottleneck) on synthetic codes of the digits' split sizes (135 labelled,
    150 validation, 297 test) reaches ~perfect test accuracy for every seed; with the training labels shuffled
    it cannot beat chance by much."""
    spec = MODELS["vanilla"]
    rng = np.random.default_rng(0)
    seeds = [0, 1]
    h, y = {}, {}
    for split, n in (("train", 135), ("val", 150), ("test", 297)):
        codes, y[split] = separable_codes(rng, n)
        h[split] = np.repeat(codes[None], len(seeds), axis=0)  # [R, N, e]: the same codes for both seeds
    hps = [spec_hparams(spec)] * len(seeds)
    out = linear_probe(spec, h["train"].shape[-1], {}, seeds, hps, h, y)
    assert out["test_accuracy"].shape == (2,)
    assert np.all(out["test_accuracy"] >= 0.98), out
    assert np.all(out["val_accuracy"] >= 0.98), out
    assert np.all((out["best_epoch"] >= 1) & (out["best_epoch"] <= PROBE_EPOCHS))
    shuffled = linear_probe(spec, h["train"].shape[-1], {}, seeds, hps, h, dict(y, train=rng.permutation(y["train"])))
    assert np.all(shuffled["test_accuracy"] < 0.35), shuffled
    # early stopping reads the validation split, never the test split: test labels shuffled, validation intact
    blind = linear_probe(spec, h["train"].shape[-1], {}, seeds, hps, h, dict(y, test=rng.permutation(y["test"])))
    assert np.all(blind["val_accuracy"] >= 0.98) and np.all(blind["test_accuracy"] < 0.35), blind


def test_linear_probe_learns_from_fewer_labels_than_one_batch():
    """20 labels, fewer than the probe's batch of 32: the one partial batch of each epoch is trained on (the
    smallest label budgets are this case), so the probe beats chance (0.1) by far."""
    spec = MODELS["vanilla"]
    rng = np.random.default_rng(1)
    h, y = {}, {}
    for split, n in (("train", 20), ("val", 150), ("test", 297)):
        codes, y[split] = separable_codes(rng, n)
        h[split] = codes[None]
    out = linear_probe(spec, h["train"].shape[-1], {}, [0], [spec_hparams(spec)], h, y)
    assert out["test_accuracy"][0] >= 0.6, out


PROBE_KINDS = ("vanilla", "sparse", "vae", "vq")  # one model per built-in bottleneck


def probe_inputs(spec, seeds, rng, sizes=(1350, 150, 297), per_class=2):
    """Encoder outputs h[split] [R, N, e] that separate the classes (+4 on the class's own coordinates, -4
    elsewhere, a different noise per seed; the Gaussian's log σ around -1 beside them), labels y[split], and
    the bottleneck's own parameters (a vq codebook spread over [-2, 2], so quantising keeps the classes apart):
    (n, bparams, h, y)."""
    n = NUM_CLASSES * per_class
    h, y = {}, {}
    for split, size in zip(("train", "val", "test"), sizes):
        codes, y[split] = separable_codes(rng, size, per_class)
        runs = np.stack([8 * codes - 4 + 0.3 * rng.normal(size=codes.shape) for _ in seeds])
        if spec.bottleneck.encoder_factor == 2:
            runs = np.concatenate([runs, -1 + 0.3 * rng.normal(size=runs.shape)], -1)
        h[split] = runs.astype(np.float32)
    bparams = {name: jax.random.uniform(jax.random.key(i), (len(seeds), *shape), minval=-2, maxval=2)
               for i, (name, shape, _) in enumerate(spec.bottleneck.extra_params(n))}
    return n, bparams, h, y


@pytest.mark.parametrize("model", PROBE_KINDS)
def test_the_probe_shared_by_every_model_gives_the_numbers_of_the_models_own_bottleneck(model):
    """The probe on precomputed code moments (one program for every model) against the probe that draws each
    batch's codes through the model's own bottleneck (one program per model): the same codes bit for bit, for
    the same key, and so the same accuracies and best epochs for every seed."""
    spec, seeds = MODELS[model], [0, 1]
    n, bparams, h, y = probe_inputs(spec, seeds, np.random.default_rng(2))
    hps = [spec_hparams(spec)] * len(seeds)
    assert probe.code_form(spec, n) is not None  # mean + scale · ε, or deterministic: the shared program
    key = jax.random.key(5)
    own_codes = jax.jit(jax.vmap(lambda hh, bp: spec.bottleneck(hh, key, hps[0], bp).z))(h["train"], bparams)
    moments = map_runs(probe._moments_program(spec), (bparams, h["train"]))
    codes = jax.jit(jax.vmap(lambda m: probe.code_of_moments(m, key, probe.code_form(spec, n))))(moments)
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(own_codes))
    assert np.any(moments[1] > 0) == spec.bottleneck.stochastic  # the VAE's codes are drawn, the others' not

    shared = linear_probe(spec, n, bparams, seeds, hps, h, y)
    keys, n_train = probe.probe_keys(seeds), h["train"].shape[1]
    orders, step_keys = probe.orders_for(probe.probe_orders, keys, n_train, None)
    own = map_runs(probe._probe_program(spec), (keys, orders, step_keys, stack_hparams(hps), bparams, h["train"],
                                                 h["val"], h["test"]), (np.int32(n_train), y["train"], y["val"], y["test"]))
    assert shared.keys() == own.keys()
    for k in own:
        np.testing.assert_array_equal(shared[k], own[k], err_msg=k)
    assert np.all(shared["test_accuracy"] > 0.5), shared  # the codes carry the classes, through every bottleneck


class _UniformNoise(Bottleneck):
    """z = h + U(-0.1, 0.1): random, but not as mean + scale · ε."""
    name = "uniform_noise"
    stochastic = True

    def __call__(self, h, key, hp, params=None, mask=None):
        return Code(h + jax.random.uniform(key, h.shape, minval=-0.1, maxval=0.1), jnp.zeros(()))

    def mean_code(self, h, params=None):
        return h


def test_models_with_the_same_code_size_share_one_probe_program_and_other_codes_get_their_own():
    """Every built-in model's probe at one code size and split sizes is one compiled program; a bottleneck
    whose random code is not mean + scale · ε (code_moments None) is probed through itself, still learning."""
    seeds, sizes = [0, 1], (1001, 103, 107)  # split sizes no other test uses, so the program is new here
    before = probe._MOMENTS_PROBE._cache_size()
    for model in PROBE_KINDS:
        spec = MODELS[model]
        n, bparams, h, y = probe_inputs(spec, seeds, np.random.default_rng(3), sizes)
        linear_probe(spec, n, bparams, seeds, [spec_hparams(spec)] * len(seeds), h, y)
    assert probe._MOMENTS_PROBE._cache_size() == before + 1

    spec = ModelSpec("uniform_noise", _UniformNoise())
    n, bparams, h, y = probe_inputs(spec, seeds, np.random.default_rng(4), sizes)
    assert probe.code_form(spec, n) is None  # not mean + scale · ε: a program of its own
    programs = probe._probe_program.cache_info().misses
    out = linear_probe(spec, n, bparams, seeds, [spec_hparams(spec)] * len(seeds), h, y)
    assert probe._probe_program.cache_info().misses == programs + 1  # its own program
    assert probe._MOMENTS_PROBE._cache_size() == before + 1
    assert np.all(out["test_accuracy"] > 0.5), out


# ------------------------------------------------------------------ the conditional model's samples
def test_cvae_samples_one_row_per_label_decoded_with_that_label(fresh, tmp_path, monkeypatch):
    """The Samples task on a cvae: 8 prior codes per label 0..9 (80 images, 8 per row), each decoded with its
    row's label; decoding the same codes with other labels gives other images."""
    spec, st, _, _ = fresh("cvae")
    ctx = context("cvae", batched(st), tmp_path)
    drawn = {}
    monkeypatch.setattr(samples_task.figures, "image_grid",
                        lambda images, path, cols, title: drawn.update(images=images, cols=cols, path=path))
    out = run_task(TASKS["samples"], ctx)
    assert out["figures"] == {"samples": "samples.png"} and drawn["path"] == tmp_path / "samples.png"
    images, k = drawn["images"], drawn["cols"]
    assert images.shape == (NUM_CLASSES * k, 32, 32) and k == 8
    assert images.min() >= 0.0 and images.max() <= 1.0
    z = samples_task.prior_samples(ctx, jax.random.fold_in(ctx.fig_key, 3), NUM_CLASSES * k)
    assert z.shape == (NUM_CLASSES * k, LATENT)
    labels = np.repeat(np.arange(NUM_CLASSES), k)
    np.testing.assert_allclose(images, ctx.decode(z, labels), atol=1e-6)
    shifted = ctx.decode(z, (labels + 1) % NUM_CLASSES)
    assert np.abs(shifted - images).reshape(len(images), -1).max(1).min() > 1e-3  # every image depends on its label
    with pytest.raises(ValueError, match="conditional"):
        ctx.decode(z)  # a conditional model needs the labels


# ------------------------------------------------------------------ per-class errors


def test_per_class_means_match_a_loop_and_average_back_to_the_overall_mean():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 30.0, size=(3, 200))
    labels = rng.integers(0, NUM_CLASSES, 200)
    labels[labels == 4] = 5  # class 4 absent: no entry for it
    got = per_class(values, labels, "test_mse")
    assert sorted(got) == sorted(f"test_mse_class{d}" for d in range(NUM_CLASSES) if d != 4)
    for d in set(range(NUM_CLASSES)) - {4}:
        ref = [np.mean([values[r, i] for i in range(200) if labels[i] == d]) for r in range(3)]
        np.testing.assert_allclose(got[f"test_mse_class{d}"], ref, rtol=1e-12)
    counts = {d: np.sum(labels == d) for d in range(NUM_CLASSES)}
    weighted = sum(counts[d] * got[f"test_mse_class{d}"] for d in range(NUM_CLASSES) if d != 4) / 200
    np.testing.assert_allclose(weighted, values.mean(1), rtol=1e-12)


def seeds_state(name, seeds=(0, 1, 2)):
    spec = MODELS[name]
    return jax.jit(jax.vmap(lambda k: init_state(spec, CFG, k)))(jnp.stack([run_keys(s)["init"] for s in seeds]))


def test_reconstruction_reports_bce_and_mse_overall_and_per_class_as_a_direct_forward_pass_gives(tmp_path):
    state = seeds_state("vanilla")  # three seeds, as in the next test: one evaluation program for both
    ctx = context("vanilla", state, tmp_path, seeds=(0, 1, 2))
    out = run_task(TASKS["reconstruction"], ctx)
    saved = read_json(task_path(tmp_path, "reconstruction"))
    assert saved["task"] == "reconstruction" and saved["seeds"] == [0, 1, 2] and saved["metrics"].keys() == out["metrics"].keys()
    for k, v in saved["metrics"].items():
        assert v["values"] == pytest.approx(out["metrics"][k]["values"], rel=1e-12), k
    x, y = ctx.data.x_test, ctx.data.y_test
    model = Autoencoder(latent_dim=LATENT, encoder_out=LATENT)
    m = out["metrics"]
    for i in range(3):
        st = jax.tree.map(lambda a: a[i], state)
        logits = model.apply(module_vars(st), jnp.asarray(x), train=False)
        errors = {"bce": bce_numpy(logits, x), "mse": mse_numpy(logits, x)}
        for k, e in errors.items():
            assert m[f"test_{k}"]["values"][i] == pytest.approx(e.mean(), rel=1e-4)
            for d in range(NUM_CLASSES):
                assert m[f"test_{k}_class{d}"]["values"][i] == pytest.approx(e[y == d].mean(), rel=1e-4), (k, d)
            # the per-class means, weighted by the class counts, give the overall mean back
            back = sum(np.sum(y == d) * m[f"test_{k}_class{d}"]["values"][i] for d in range(NUM_CLASSES)) / len(y)
            assert back == pytest.approx(m[f"test_{k}"]["values"][i], rel=1e-5)
    assert out["diverged_seeds"] == [] and m["test_bce"]["n"] == 3
    assert (tmp_path / "reconstructions.png").is_file()


# ------------------------------------------------------------------ diverged seeds
def test_a_diverged_seed_is_left_out_of_every_task_number(tmp_path, monkeypatch):
    """Three seeds: seed 0's parameters hold a NaN, seed 2 is listed as diverged in metrics.json (its
    parameters are finite). Each task's file nulls both, lists them under diverged_seeds, and its means are
    seed 1's alone; the figures show seed 1. The probe of the NaN seed would otherwise report a finite
    accuracy (the argmax of NaN logits is class 0)."""
    state = seeds_state("vanilla")
    kernel = np.array(state.params["dec"]["dense2"]["kernel"])
    kernel[0, 3, 5] = np.nan
    state = state._replace(params={**state.params, "dec": {**state.params["dec"], "dense2": {
        **state.params["dec"]["dense2"], "kernel": jnp.asarray(kernel)}}})
    write_json(tmp_path / "metrics.json", {"diverged": [{"run": 2, "seed": 2, "beta": None, "epoch": 1}]})
    ctx = context("vanilla", state, tmp_path, seeds=(0, 1, 2))
    np.testing.assert_array_equal(ctx.valid, [False, True, False])
    assert ctx.fig == 1
    shown = {}
    monkeypatch.setattr(figures, "image_rows", lambda rows, path, titles=None: shown.update(rows=rows, titles=titles))

    raw_probe = TASKS["probe"].run(ctx).metrics["probe_accuracy"]
    assert np.isfinite(raw_probe[0]), "the hazard this test guards against: a NaN model gets a finite accuracy"
    for name in ("reconstruction", "probe"):
        run_task(TASKS[name], ctx)
        saved = read_json(task_path(tmp_path, name))
        assert saved["diverged_seeds"] == [0, 2] and saved["seeds"] == [0, 1, 2]
        assert saved["metrics"], name
        for metric, agg in saved["metrics"].items():
            assert agg["values"][0] is None and agg["values"][2] is None, (name, metric)
            assert agg["n"] == 1 and agg["mean"] == pytest.approx(agg["values"][1]), (name, metric)
    # seed 1's reconstruction error, from a direct forward pass
    x = ctx.data.x_test
    logits = Autoencoder(latent_dim=LATENT, encoder_out=LATENT).apply(
        module_vars(jax.tree.map(lambda a: a[1], state)), jnp.asarray(x), train=False)
    rec = read_json(task_path(tmp_path, "reconstruction"))["metrics"]
    assert rec["test_bce"]["mean"] == pytest.approx(bce_numpy(logits, x).mean(), rel=1e-4)
    assert "seed 1" in shown["titles"][1] and np.isfinite(shown["rows"][1]).all()  # the figure shows seed 1


def test_anomaly_task_refuses_conditional_models_whose_label_would_leak_the_answer():
    from ae_jax.models import MODELS
    from ae_jax.tasks import TASKS
    assert not TASKS["anomaly"].applies(MODELS["cvae"])
    assert TASKS["anomaly"].applies(MODELS["vae"]) and TASKS["anomaly"].applies(MODELS["vanilla"])


def test_the_error_from_the_mean_code_is_the_evaluated_error_for_a_plain_autoencoder(fresh, digits):
    """A plain autoencoder's code has no noise: its error from the mean code is the evaluated test MSE; a VAE's
    differs from its sampled-z error (its noise), and the task records it as test_mse_mu."""
    from ae_jax.tasks.reconstruction import mean_code_mse
    *_, ctx = fresh("vanilla")
    np.testing.assert_allclose(mean_code_mse(ctx), np.asarray(ctx.test["mse"], np.float64).mean(1), rtol=1e-4)
    *_, vctx = fresh("vae")
    mu = mean_code_mse(vctx)
    assert np.isfinite(mu).all() and not np.allclose(mu, np.asarray(vctx.test["mse"], np.float64).mean(1))
