"""How good are generated images? Numbers read off the reference classifier.

Pure functions on arrays (numpy in, Python floats or numpy out); the features
and probabilities come from ``ae_jax.tasks.classifier.RefClassifier``.

Samples:
- ``frechet_distance``: Fréchet distance between Gaussians fitted to two feature
  sets (the FID recipe, on the reference classifier's features);
- ``class_entropy``: entropy in nats of the histogram of predicted classes
  (log 10 ≈ 2.303 when every class is drawn equally often, 0 for one class);
- ``mean_confidence``: the mean top-class probability;
- ``label_accuracy``: the fraction classified as the label the conditional VAE
  was asked for;
- ``gaussian_fit_sampler`` / ``gaussian_draw``: the plain autoencoders have no
  prior, so their baseline samples decode codes drawn from a Gaussian fitted to
  their training codes.

Interpolation:
- ``interpolation_pairs``: fixed pairs of test images of different digits, the
  same for every model and seed;
- ``interpolation_metrics``: how many frames the classifier reads confidently,
  and the largest single step of a path relative to the distance between its
  two decoded end frames.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

N_CLASSES = 10
INTERP_PAIRS = 100
INTERP_PAIR_SEED = 0
CONFIDENT = 0.9


# ------------------------------------------------------------------ Gaussians
def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0): [F, F] -> [F, F]."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))[None, :]) @ v.T


def _mean_cov(feat: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feat, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name}: expected [N >= 2, F] features, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: features hold nan or inf")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance between N(mu_a, C_a) and N(mu_b, C_b) fitted to two feature sets.

    feat_a: [N, F], feat_b: [M, F] (N, M >= 2); means and sample covariances
    (ddof 1) in float64. d = ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}).
    The trace of (C_a C_b)^{1/2} equals that of (S C_b S)^{1/2} with
    S = C_a^{1/2}, a symmetric PSD matrix: it is the sum of the square roots of
    its eigenvalues (clipped at 0), which stays real and stable when the
    covariances are singular. The result is clipped at 0 (rounding).
    """
    mu_a, c_a = _mean_cov(feat_a, "feat_a")
    mu_b, c_b = _mean_cov(feat_b, "feat_b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    s = _psd_sqrt(c_a)
    m = s @ c_b @ s
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    d = np.sum(np.square(mu_a - mu_b)) + np.trace(c_a) + np.trace(c_b) - 2.0 * tr_sqrt
    return float(max(d, 0.0))


def gaussian_fit_sampler(codes) -> tuple[np.ndarray, np.ndarray]:
    """Mean [n] and sample covariance (ddof 1) [n, n], float64, of training codes [N, n]."""
    return _mean_cov(codes, "codes")


def gaussian_draw(key: jax.Array, mean, cov, n: int) -> jax.Array:
    """n codes z = mean + A e with e ~ N(0, I) and A A^T = cov: [n, d] float32.

    A = V diag(sqrt(max(w, 0))) from the eigen-decomposition cov = V diag(w) V^T,
    so a singular covariance (dead code units) is fine.
    """
    mean = np.asarray(mean, np.float64)
    cov = np.asarray(cov, np.float64)
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    a = jnp.asarray(v * np.sqrt(np.clip(w, 0.0, None))[None, :], jnp.float32)  # [d, d]
    e = jax.random.normal(key, (n, mean.shape[0]))
    return jnp.asarray(mean, jnp.float32)[None] + e @ a.T


# ------------------------------------------------------------------ class statistics
def _check_probs(probs) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[1] != N_CLASSES:
        raise ValueError(f"expected probabilities [N, {N_CLASSES}], got shape {p.shape}")
    return p


def class_entropy(probs) -> float:
    """Entropy in nats of the predicted-class histogram: -sum_k q_k log q_k, q_k = #{argmax = k} / N.

    probs: [N, 10]. 0 when every image is read as one class, log 10 ≈ 2.3026
    when all ten are equally frequent (0 log 0 = 0).
    """
    p = _check_probs(probs)
    q = np.bincount(p.argmax(-1), minlength=N_CLASSES) / max(p.shape[0], 1)
    nz = q[q > 0]
    return float(0.0 - (nz * np.log(nz)).sum())  # 0.0 - x: a single class gives 0.0, not -0.0


def mean_confidence(probs) -> float:
    """Mean over images of the top-class probability: probs [N, 10] -> float in [0.1, 1]."""
    return float(_check_probs(probs).max(-1).mean())


def label_accuracy(probs, labels) -> float:
    """Fraction of images whose predicted class is the label they were generated for.

    probs: [N, 10]; labels: [N] ints (the conditional VAE's conditioning labels).
    """
    p = _check_probs(probs)
    y = np.asarray(labels)
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape [{p.shape[0]}], got {y.shape}")
    return float((p.argmax(-1) == y).mean())


# ------------------------------------------------------------------ interpolation
def interpolation_pairs(y_test, n_pairs: int = INTERP_PAIRS, seed: int = INTERP_PAIR_SEED) -> np.ndarray:
    """n_pairs distinct pairs of test indices [n_pairs, 2] whose labels differ.

    Drawn with numpy's default_rng(seed) from the labels alone, so every model
    and every training seed interpolates between the same images. Each pair
    (i, j) has y[i] != y[j]; no unordered pair repeats.
    """
    y = np.asarray(y_test)
    n = y.shape[0]
    n_possible = (n * n - np.sum(np.square(np.bincount(y)))) // 2 if n else 0
    if n_pairs > n_possible:
        raise ValueError(f"only {n_possible} pairs of differently labelled images, asked for {n_pairs}")
    rng = np.random.default_rng(seed)
    pairs, seen = [], set()
    while len(pairs) < n_pairs:
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        if y[i] != y[j] and (min(i, j), max(i, j)) not in seen:
            seen.add((min(i, j), max(i, j)))
            pairs.append((i, j))
    return np.asarray(pairs, np.int64).reshape(n_pairs, 2)


def interpolation_metrics(frames, probs, threshold: float = CONFIDENT) -> dict:
    """Quality of interpolation paths: frames [P, T, 32, 32] (T >= 2), probs [P, T, 10].

    - interp_confident_frac: fraction of all P T frames whose top class
      probability is >= threshold (the classifier reads a clear digit);
    - interp_max_step: per pair, max_t ||x_{t+1} - x_t||_2 / ||x_{T-1} - x_0||_2,
      the largest frame-to-frame change relative to the distance between the
      path's own decoded end frames, averaged over pairs. A straight, evenly
      paced path scores 1/(T-1); a path that jumps scores up to 1 or more.
      Pairs whose end frames coincide are left out of the mean (nan if all).
    Also returns interp_max_step_per_pair [P] (numpy).
    """
    f = np.asarray(frames, np.float64)
    p = np.asarray(probs, np.float64)
    if f.ndim < 3 or f.shape[1] < 2:
        raise ValueError(f"expected frames [P, T >= 2, ...], got shape {f.shape}")
    if p.shape != f.shape[:2] + (N_CLASSES,):
        raise ValueError(f"probs must have shape {f.shape[:2] + (N_CLASSES,)}, got {p.shape}")
    flat = f.reshape(f.shape[0], f.shape[1], -1)                          # [P, T, D]
    steps = np.linalg.norm(np.diff(flat, axis=1), axis=-1)                # [P, T-1]
    span = np.linalg.norm(flat[:, -1] - flat[:, 0], axis=-1)              # [P]
    per_pair = np.where(span > 0, steps.max(1) / np.where(span > 0, span, 1.0), np.nan)  # [P]
    ok = np.isfinite(per_pair)
    return {"interp_confident_frac": float((p.max(-1) >= threshold).mean()),
            "interp_max_step": float(per_pair[ok].mean()) if ok.any() else float("nan"),
            "interp_max_step_per_pair": per_pair}
