"""Latent structure: the test-set codes in 2-D (UMAP when n > 2), scored by how well they separate the digits.

Arrays of the figure seed (``latent.npz``): "emb" [N, 2], the test set's 2-D
embedding; "labels" [N]; "seed"; "umap" (True when the codes were embedded
with UMAP, False when they are the raw n = 2 codes).

The seeds' UMAP fits run side by side in worker processes (``ae_jax.tasks.umap_pool``:
one per seed up to the CPU cores, ``AE_JAX_UMAP_WORKERS`` to change it); the
embeddings are the same as fitting them one by one here.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import figures
from . import umap_pool
from ..io import write_npz
from .base import EvalContext, Task, TaskResult


def embed_2d(z: np.ndarray, seed: int, log: Callable[[str], None] = print) -> np.ndarray:
    """UMAP (default parameters, random_state = seed) to 2-D when n > 2; raw codes when n <= 2."""
    if z.shape[1] <= 2:
        return np.asarray(z, np.float32)
    if not np.isfinite(z).all():  # a diverged seed: UMAP would raise; its scores become nan
        log(f"    seed {seed}: non-finite codes, no UMAP embedding")
        return np.full((z.shape[0], 2), np.nan, np.float32)
    return umap_pool.embed([z], [seed], log)[0]


def embed_all(codes: Sequence[np.ndarray], seeds: Sequence[int],
              log: Callable[[str], None] = print) -> list[np.ndarray]:
    """``embed_2d`` of every seed's codes, the UMAP fits side by side in worker processes (``umap_pool``)."""
    return start_embed_all(codes, seeds, log)()


def start_embed_all(codes: Sequence[np.ndarray], seeds: Sequence[int], log: Callable[[str], None] = print,
                    background: bool = False) -> Callable[[], list[np.ndarray]]:
    """``embed_all`` in two steps. In the `background` the UMAP fits are handed to the worker processes now
    (``umap_pool.submit``) and the returned call waits for them; otherwise that call does all the work. The
    call's ``waits`` is True when fits are under way."""
    fits = [i for i, z in enumerate(codes) if z.shape[1] > 2 and np.isfinite(z).all()]
    fit_codes, fit_seeds = [codes[i] for i in fits], [seeds[i] for i in fits]
    pending = (umap_pool.submit(fit_codes, fit_seeds, log, umap_pool.background_workers(len(fits)))
               if background else None)

    def wait() -> list[np.ndarray]:
        embs = pending.result(log) if pending is not None else umap_pool.embed(fit_codes, fit_seeds, log)
        embs = dict(zip(fits, embs))
        return [embs[i] if i in embs else embed_2d(z, sd, log) for i, (z, sd) in enumerate(zip(codes, seeds))]
    wait.waits = pending is not None
    return wait


def structure_scores(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Comparable numbers for a 2-D embedding: 5-fold 5-NN accuracy and silhouette score by label."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    if not np.isfinite(emb).all():
        return {"knn_accuracy": float("nan"), "silhouette": float("nan")}
    knn = cross_val_score(KNeighborsClassifier(5), emb, labels, cv=5).mean()
    sample = min(len(emb), 5000)
    sil = silhouette_score(emb, labels, sample_size=sample if sample < len(emb) else None, random_state=seed)
    return {"knn_accuracy": float(knn), "silhouette": float(sil)}


class LatentStructure(Task):
    """Per seed: 5-fold 5-NN accuracy and silhouette of the 2-D embedding; the first seed's scatter."""
    name = "latent_structure"
    files = ("latent.npz",)

    def run(self, ctx: EvalContext) -> TaskResult:
        return self.start(ctx)()

    def start(self, ctx: EvalContext, background: bool = False) -> Callable[[], TaskResult]:
        """In the `background`, the seeds' UMAP fits are handed to the worker processes and the study goes on
        (the device would wait for the CPU otherwise); the scores and the figure follow when they are done."""
        seeds, z, y = ctx.seeds, ctx.test["z"], ctx.data.y_test
        ctx.log(f"    latent structure ({len(seeds)} seeds)")
        valid = [i for i in range(len(seeds)) if ctx.valid[i]]  # a diverged seed: no embedding, numbers nulled
        embed = start_embed_all([np.asarray(z[i]) for i in valid], [seeds[i] for i in valid], ctx.log,
                                background)
        fig, run_dir = ctx.fig, ctx.run_dir
        latent, title = ctx.cfg.latent, f"{ctx.cfg.model} ({ctx.cfg.variant})"

        def finish() -> TaskResult:
            embs = dict(zip(valid, embed()))
            metrics: dict[str, list] = {"knn_accuracy": [], "silhouette": []}
            for i, sd in enumerate(seeds):
                if i not in embs:
                    for v in metrics.values():
                        v.append(float("nan"))
                    continue
                emb = embs[i]
                for k, v in structure_scores(emb, y, sd).items():
                    metrics[k].append(v)
                if i == fig:
                    write_npz(run_dir / "latent.npz", emb=emb, labels=y, seed=sd, umap=latent > 2)
                    how = "UMAP of" if latent > 2 else "raw"
                    figures.latent_scatter(emb, y, run_dir / "latent.png",
                                           f"{title}: {how} n = {latent} codes, seed {sd}")
            return TaskResult({k: np.asarray(v) for k, v in metrics.items()}, {"latent": "latent.png"})
        finish.waits = embed.waits
        return finish
