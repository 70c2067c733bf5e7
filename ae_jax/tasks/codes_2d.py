"""Codes in 2-D: PCA and t-SNE of the test set's mean codes, with how clustered and how Gaussian they are.

Per seed, on the mean codes c (the VAE's μ; z for a plain autoencoder) of the
test set:

- PCA (sklearn, centred, not whitened) of all N test codes: the first two
  components' scores, and every component's explained-variance ratio;
- t-SNE (sklearn.manifold.TSNE, 2-D, default perplexity 30, PCA init,
  random_state = seed) of the first TSNE_N test codes, for the figure seed
  only (a t-SNE of 2000 codes takes tens of seconds on a CPU);
- ``code_silhouette``: silhouette score by digit of the raw codes (Euclidean,
  the first TSNE_N images): high when each digit forms its own cluster, near
  0 when the code does not separate digits;
- ``code_gauss_ks``: how far the codes are from one Gaussian, as the mean over
  the n principal components of the Kolmogorov-Smirnov distance between the
  component's standardised scores and N(0, 1) (0 for Gaussian marginals; a
  mixture of separated clusters makes it large). It reads marginals only;

Arrays (``codes_2d.npz``): "pca" [R, N, 2], "pca_ratio" [R, n] (NaN for a
diverged seed), "labels" [N], "seeds" [R]; the figure seed's "tsne" [M, 2] of
the first M = min(TSNE_N, N) test images ("tsne_index" [M]) and "tsne_seed".
"""
from __future__ import annotations

import time

import numpy as np

from .. import figures
from ..io import write_npz
from .base import EvalContext, Task, TaskResult

TSNE_N = 2000
FILE = "codes_2d.npz"


def gauss_ks(codes: np.ndarray) -> float:
    """Mean over principal components of the KS distance of standardised scores to N(0, 1). codes: [N, n]."""
    from scipy import stats
    from sklearn.decomposition import PCA
    scores = PCA().fit_transform(codes)
    scores = scores[:, scores.std(0) > 0]
    scores = (scores - scores.mean(0)) / scores.std(0)
    return float(np.mean([stats.kstest(s, "norm").statistic for s in scores.T]))


def tsne(codes: np.ndarray, seed: int) -> np.ndarray:
    """[M, n] -> [M, 2]: sklearn's t-SNE with its defaults, PCA initialisation, random_state = seed."""
    from sklearn.manifold import TSNE
    perplexity = min(30.0, (len(codes) - 1) / 3)  # sklearn needs perplexity < M
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes).astype(np.float32)


class Codes2D(Task):
    """PCA of the test codes and their clustering and Gaussianity numbers for every seed; t-SNE for the figure seed."""
    name = "codes_2d"

    def run(self, ctx: EvalContext) -> TaskResult:
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score
        y = ctx.data.y_test
        R, N, n = len(ctx.seeds), len(y), ctx.cfg.latent
        M = min(TSNE_N, N)
        pca = np.full((R, N, 2), np.nan, np.float32)
        ratio = np.full((R, n), np.nan, np.float32)
        emb = np.full((M, 2), np.nan, np.float32)
        metrics = {k: np.full(R, np.nan) for k in ("code_silhouette", "code_gauss_ks")}
        for i, seed in enumerate(ctx.seeds):
            if not ctx.valid[i]:
                continue
            codes = ctx.mean_code(ctx.test["h"][i], i).astype(np.float64)
            p = PCA().fit(codes)
            pca[i] = p.transform(codes)[:, :2]
            ratio[i] = p.explained_variance_ratio_
            metrics["code_silhouette"][i] = silhouette_score(codes[:M], y[:M])
            metrics["code_gauss_ks"][i] = gauss_ks(codes)
            if i == ctx.fig:
                t0 = time.perf_counter()
                emb = tsne(codes[:M], seed)
                ctx.log(f"    seed {seed}: t-SNE of {M} codes in {time.perf_counter() - t0:.1f} s")
        f = ctx.fig
        write_npz(ctx.run_dir / FILE, pca=pca, pca_ratio=ratio, tsne=emb, tsne_index=np.arange(M), labels=y,
                  seeds=np.asarray(ctx.seeds), tsne_seed=ctx.seeds[f])
        figures.latent_scatter(emb, y[:M], ctx.run_dir / "codes_tsne.png",
                               f"{ctx.cfg.model}: t-SNE of {M} test codes, seed {ctx.seeds[f]}")
        return TaskResult(metrics, {"codes_tsne": "codes_tsne.png"})
