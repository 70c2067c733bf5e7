"""Samples: codes drawn from the model's prior, decoded (class by class for a conditional model).

The figure's arrays (``samples.npz``): "seed" (the figure seed), "z" [k, n],
"images" [k, 32, 32] and, for a conditional model, "labels" [k].
"""
from __future__ import annotations

import jax
import numpy as np

from .. import figures
from ..io import write_npz
from ..models import NUM_CLASSES, ModelSpec
from .base import EvalContext, Task, TaskResult

N_SHOW = 16


def prior_samples(ctx: EvalContext, key, n: int) -> np.ndarray:
    """[n, latent] codes from the prior of the figure seed's model."""
    return np.asarray(ctx.spec.bottleneck.sample_prior(key, n, ctx.cfg.latent, ctx.one.params))


class Samples(Task):
    """16 prior codes decoded (a conditional model: rows of one label each, digits 0..9)."""
    name = "samples"

    def applies(self, spec: ModelSpec) -> bool:
        return spec.can_sample and super().applies(spec)

    def run(self, ctx: EvalContext) -> TaskResult:
        key = jax.random.fold_in(ctx.fig_key, 3)
        labels = {}
        if ctx.spec.conditional:
            k = 8
            z = prior_samples(ctx, key, NUM_CLASSES * k)
            labels = {"labels": np.repeat(np.arange(NUM_CLASSES), k)}
            images, cols = ctx.decode(z, labels["labels"]), k
            title = f"{ctx.cfg.model} samples, one label per row (0-9)"
        else:
            z = prior_samples(ctx, key, N_SHOW)
            images, cols, title = ctx.decode(z), 4, f"{ctx.cfg.model} samples"
        # not in ``files``: runs made before the arrays were saved still count as done
        write_npz(ctx.run_dir / "samples.npz", z=z, images=np.asarray(images, np.float32), seed=ctx.seeds[ctx.fig],
                  **labels)
        figures.image_grid(images, ctx.run_dir / "samples.png", cols=cols, title=title)
        return TaskResult({}, {"samples": "samples.png"})
