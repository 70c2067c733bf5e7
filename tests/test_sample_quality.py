"""ae_jax.tasks.quality_measures on hand-made arrays: Fréchet distance against scipy and closed forms,
class statistics counted by hand, the Gaussian code sampler, interpolation pairs and metrics.

The same metrics on the digits reference classifier's features are in
test_reference_classifier.py.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.linalg

from ae_jax.tasks import quality_measures as sq


def frechet_scipy(a, b) -> float:
    """Direct reference: ||mu_a - mu_b||^2 + Tr(Ca + Cb - 2 sqrtm(Ca Cb)), imaginary part dropped."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(ca @ cb).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * covmean))


# ------------------------------------------------------------------ Fréchet distance
@pytest.mark.parametrize("seed", [0, 1])
def test_frechet_distance_matches_a_direct_scipy_computation(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(80, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)[None]
    d = sq.frechet_distance(a, b)
    assert d > 0.1
    assert d == pytest.approx(frechet_scipy(a, b), rel=1e-6)
    assert sq.frechet_distance(b, a) == pytest.approx(d, rel=1e-9)  # symmetric


def test_frechet_distance_of_one_dimensional_gaussians_is_the_closed_form():
    # d = (m_a - m_b)^2 + (s_a - s_b)^2 for 1-D Gaussians with standard deviations s_a, s_b
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 2.0, size=(500, 1)), rng.normal(-0.5, 0.5, size=(400, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + (sa - sb) ** 2
    assert sq.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_a_shift_adds_its_squared_length():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 8))
    assert sq.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = rng.normal(size=8)
    assert sq.frechet_distance(a, a + shift[None]) == pytest.approx(np.sum(shift ** 2), rel=1e-7)


def test_frechet_distance_stays_finite_and_exact_with_singular_covariances():
    # dead feature units (constant zero, as ReLU features often have) make both covariances singular
    rng = np.random.default_rng(4)
    a = np.concatenate([rng.normal(size=(50, 3)), np.zeros((50, 2))], axis=1)
    b = np.concatenate([rng.normal(2.0, 1.5, size=(70, 3)), np.zeros((70, 2))], axis=1)
    d = sq.frechet_distance(a, b)
    assert np.isfinite(d)
    assert d == pytest.approx(sq.frechet_distance(a[:, :3], b[:, :3]), rel=1e-7)
    assert d == pytest.approx(frechet_scipy(a[:, :3], b[:, :3]), rel=1e-6)


@pytest.mark.parametrize("a, b, fragment", [
    (np.zeros((1, 3)), np.zeros((5, 3)), "N >= 2"),
    (np.zeros((4, 3)), np.zeros((5, 2)), "feature sizes differ"),
    (np.full((4, 3), np.nan), np.zeros((5, 3)), "nan"),
])
def test_frechet_distance_refuses_unusable_features(a, b, fragment):
    with pytest.raises(ValueError, match=fragment):
        sq.frechet_distance(a, b)


# ------------------------------------------------------------------ class statistics
def one_hot_probs(classes, p_top=1.0):
    """[N, 10] probabilities with p_top on the given class and the rest spread evenly."""
    classes = np.asarray(classes)
    p = np.full((classes.size, 10), (1 - p_top) / 9)
    p[np.arange(classes.size), classes] = p_top
    return p


def test_class_entropy_of_a_uniform_histogram_is_log_10_and_of_one_class_zero():
    assert sq.class_entropy(one_hot_probs(np.repeat(np.arange(10), 7))) == pytest.approx(np.log(10), abs=1e-12)
    assert sq.class_entropy(one_hot_probs(np.full(50, 3))) == 0.0
    assert sq.class_entropy(one_hot_probs([2, 5, 2, 5])) == pytest.approx(np.log(2), abs=1e-12)
    # reads the argmax, not the probabilities: soft but clear predictions count the same
    assert sq.class_entropy(one_hot_probs(np.repeat(np.arange(10), 3), p_top=0.3)) == pytest.approx(np.log(10))


def test_class_entropy_of_an_uneven_histogram_matches_the_formula():
    classes = np.array([0] * 6 + [1] * 3 + [7])
    q = np.array([0.6, 0.3, 0.1])
    assert sq.class_entropy(one_hot_probs(classes)) == pytest.approx(-(q * np.log(q)).sum(), abs=1e-12)


def test_mean_confidence_and_label_accuracy_on_hand_counts():
    p = np.concatenate([one_hot_probs([1, 2], p_top=0.9), one_hot_probs([3, 4], p_top=0.5)])
    assert sq.mean_confidence(p) == pytest.approx(0.7)
    assert sq.label_accuracy(p, [1, 2, 3, 9]) == pytest.approx(0.75)
    assert sq.label_accuracy(p, [0, 0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="labels"):
        sq.label_accuracy(p, [1, 2, 3])
    with pytest.raises(ValueError, match="10"):
        sq.mean_confidence(np.ones((3, 4)) / 4)


# ------------------------------------------------------------------ Gaussian code sampler
def test_gaussian_draw_reproduces_the_fitted_mean_and_covariance():
    rng = np.random.default_rng(5)
    codes = rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 4)) + np.array([1.0, -2.0, 0.5, 3.0])[None]
    mean, cov = sq.gaussian_fit_sampler(codes)
    np.testing.assert_allclose(mean, codes.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(codes, rowvar=False), rtol=1e-12)
    z = np.asarray(sq.gaussian_draw(jax.random.key(0), mean, cov, 20000), np.float64)
    assert z.shape == (20000, 4)
    scale = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(z.mean(0), mean, atol=0.05 * scale.max())
    np.testing.assert_allclose(np.cov(z, rowvar=False), cov, atol=0.05 * scale.max() ** 2)
    # the key decides the draw
    z2 = np.asarray(sq.gaussian_draw(jax.random.key(1), mean, cov, 10))
    assert not np.allclose(z[:10], z2)
    np.testing.assert_array_equal(np.asarray(sq.gaussian_draw(jax.random.key(0), mean, cov, 10)),
                                  np.asarray(sq.gaussian_draw(jax.random.key(0), mean, cov, 10)))


def test_gaussian_draw_with_a_singular_covariance_stays_in_the_codes_subspace():
    rng = np.random.default_rng(6)
    t = rng.normal(size=(300, 1))
    codes = np.concatenate([t, 2 * t, np.zeros_like(t)], axis=1)  # rank 1: z1 = 2 z0, z2 = 0
    mean, cov = sq.gaussian_fit_sampler(codes)
    z = np.asarray(sq.gaussian_draw(jax.random.key(2), mean, cov, 500), np.float64)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 1], 2 * z[:, 0], atol=1e-4)
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-5)
    assert z[:, 0].std() > 0.5


# ------------------------------------------------------------------ interpolation
def test_interpolation_pairs_are_fixed_distinct_and_join_different_digits():
    y = np.random.default_rng(7).integers(0, 10, size=300)
    pairs = sq.interpolation_pairs(y)
    assert pairs.shape == (sq.INTERP_PAIRS, 2)
    assert ((pairs >= 0) & (pairs < 300)).all()
    assert (y[pairs[:, 0]] != y[pairs[:, 1]]).all()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs)
    np.testing.assert_array_equal(pairs, sq.interpolation_pairs(y.copy()))  # deterministic
    assert not np.array_equal(pairs, sq.interpolation_pairs(y, seed=1))
    assert len({int(v) for v in y[pairs].ravel()}) == 10  # 100 random pairs touch every digit


def test_interpolation_pairs_refuses_more_pairs_than_exist():
    y = np.array([0, 0, 1])  # only (0, 2) and (1, 2)
    assert sorted(map(sorted, sq.interpolation_pairs(y, n_pairs=2).tolist())) == [[0, 2], [1, 2]]
    with pytest.raises(ValueError, match="only 2 pairs"):
        sq.interpolation_pairs(y, n_pairs=3)


def blend_path(a, b, t):
    w = np.linspace(0.0, 1.0, t)[:, None, None]
    return (1 - w) * a[None] + w * b[None]


def test_a_linear_pixel_blend_has_max_step_one_over_t_minus_one_and_a_jump_more():
    rng = np.random.default_rng(8)
    a, b = rng.uniform(size=(2, 2, 32, 32))
    t = 13
    smooth = np.stack([blend_path(a[0], b[0], t), blend_path(a[1], b[1], t)])  # [2, T, 32, 32]
    probs = np.broadcast_to(one_hot_probs([0] * t), (2, t, 10))
    m = sq.interpolation_metrics(smooth, probs)
    assert m["interp_max_step"] == pytest.approx(1 / (t - 1), rel=1e-9)
    np.testing.assert_allclose(m["interp_max_step_per_pair"], 1 / (t - 1), rtol=1e-9)
    # a path that holds the first image, then jumps to the second in one frame: max step 1
    jump = np.concatenate([np.repeat(a[:1, None], 6, 1), np.repeat(b[:1, None], t - 6, 1)], axis=1)
    mj = sq.interpolation_metrics(np.concatenate([smooth[:1], jump]), probs)
    np.testing.assert_allclose(mj["interp_max_step_per_pair"], [1 / (t - 1), 1.0], rtol=1e-9)
    assert mj["interp_max_step"] == pytest.approx((1 / (t - 1) + 1) / 2)
    # a detour (a bump halfway) makes a step longer than the evenly paced one
    bump = smooth[:1].copy()
    bump[0, t // 2] += 0.5
    assert sq.interpolation_metrics(bump, probs[:1])["interp_max_step"] > 1 / (t - 1) + 0.1


def test_interpolation_confident_fraction_counts_frames_at_or_above_the_threshold():
    frames = blend_path(np.zeros((4, 4)), np.ones((4, 4)), 5)[None]  # [1, 5, 4, 4]
    tops = np.array([0.95, 0.9, 0.5, 0.89, 1.0])
    probs = np.stack([one_hot_probs([k], p_top=p)[0] for k, p in enumerate(tops)])[None]
    assert sq.interpolation_metrics(frames, probs)["interp_confident_frac"] == pytest.approx(3 / 5)
    assert sq.interpolation_metrics(frames, probs, threshold=0.91)["interp_confident_frac"] == pytest.approx(2 / 5)


def test_interpolation_max_step_leaves_out_pairs_whose_end_frames_coincide():
    a = np.random.default_rng(9).uniform(size=(8, 8))
    loop = np.stack([a, a + 0.1, a])[None]  # ends equal: no span to measure against
    line = blend_path(a, a + 1.0, 3)[None]
    probs = np.broadcast_to(one_hot_probs([0, 0, 0]), (2, 3, 10))
    m = sq.interpolation_metrics(np.concatenate([loop, line]), probs)
    assert np.isnan(m["interp_max_step_per_pair"][0])
    assert m["interp_max_step"] == pytest.approx(0.5)
    assert np.isnan(sq.interpolation_metrics(loop, probs[:1])["interp_max_step"])
    with pytest.raises(ValueError, match="probs"):
        sq.interpolation_metrics(line, probs)
