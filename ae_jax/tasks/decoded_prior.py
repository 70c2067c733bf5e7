"""Decoded prior: codes drawn from N(0, I) decoded, for any model (the plain autoencoder too: that is the point).

Unlike ``samples`` (each model's own prior, only models that have one), every
model here decodes the same kind of draw, z ~ N(0, I_n): a VAE was trained so
that such codes decode to digits; a plain autoencoder never was. A conditional
model decodes ROWS x K draws with row d given label d (d = 0..9), for every
seed, so a study can show and check the class-conditional grid.

Numbers per seed (``pixels`` explains the judging): ``prior_offdata_fraction``,
the fraction of decodes further from every training image than the model's own
reconstructions are; ``prior_classes``, how many distinct digits (nearest-
neighbour labels) the decodes on the data show; for a conditional model also
``prior_label_accuracy``, the fraction of decodes whose nearest-neighbour label
is the one asked for, beside ``pixel_knn_test_accuracy``, how often that
labeller is right on the first 1000 real test images (the same for every seed).

Arrays (``decoded_prior.npz`` in the run folder): "images" [R, ROWS, K, 32, 32]
in [0, 1] (NaN for a diverged seed), "z" [R, ROWS, K, n], "labels" [ROWS]
(the label of each row; -1 for an unconditional model, whose rows are just
draws), "seeds" [R].
"""
from __future__ import annotations

import jax
import numpy as np

from .. import figures
from ..io import write_npz
from ..models import NUM_CLASSES
from ..trainer import run_keys
from . import pixels
from .base import EvalContext, Task, TaskResult

ROWS, K = NUM_CLASSES, 10
FILE = "decoded_prior.npz"


def prior_draws(seed: int, n: int) -> np.ndarray:
    """[ROWS, K, n] standard-normal codes from the seed's task key (the same draws for every model of a seed)."""
    key = jax.random.fold_in(run_keys(seed)["task"], 11)
    return np.asarray(jax.random.normal(key, (ROWS, K, n)))


class DecodedPrior(Task):
    """z ~ N(0, I) decoded by every seed; a conditional model gets label d on row d."""
    name = "decoded_prior"

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log(f"    decoding N(0, I) draws ({len(ctx.seeds)} seeds)")
        cond = ctx.spec.conditional
        n, R = ctx.cfg.latent, len(ctx.seeds)
        row_labels = np.arange(ROWS) if cond else np.full(ROWS, -1)
        images = np.full((R, ROWS, K, 32, 32), np.nan, np.float32)
        zs = np.zeros((R, ROWS, K, n), np.float32)
        metrics = {k: np.full(R, np.nan) for k in ("prior_offdata_fraction", "prior_classes")
                   + (("prior_label_accuracy", "pixel_knn_test_accuracy") if cond else ())}
        for i, seed in enumerate(ctx.seeds):
            zs[i] = prior_draws(seed, n)
            if not ctx.valid[i]:
                continue
            labels = np.repeat(row_labels, K) if cond else None
            flat = ctx.decode(zs[i].reshape(ROWS * K, n), labels, index=i)
            images[i] = flat.reshape(ROWS, K, 32, 32)
            off, nn_label = pixels.judge(ctx, i, flat)
            metrics["prior_offdata_fraction"][i] = off.mean()
            metrics["prior_classes"][i] = len(set(nn_label[~off].tolist()))
            if cond:
                metrics["prior_label_accuracy"][i] = (nn_label == labels).mean()
                metrics["pixel_knn_test_accuracy"][i] = pixels.labeller_accuracy(ctx.data)
        write_npz(ctx.run_dir / FILE, images=images, z=zs, labels=row_labels, seeds=np.asarray(ctx.seeds))
        title = (f"{ctx.cfg.model}: z ~ N(0, I) decoded, row d with label d" if cond
                 else f"{ctx.cfg.model}: z ~ N(0, I) decoded") + f" (seed {ctx.seeds[ctx.fig]})"
        figures.image_rows(list(images[ctx.fig]), ctx.run_dir / "decoded_prior.png", [title] + [None] * (ROWS - 1))
        return TaskResult(metrics, {"decoded_prior": "decoded_prior.png"})
