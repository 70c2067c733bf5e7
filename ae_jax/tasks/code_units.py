"""Code units: how many of the n code units carry anything, per seed.

Every training image is encoded and each unit of the code is read without its
noise (the VAE family's mean; the code itself for the others). Two counts per
seed:

- ``dead_units``: units that take one value on every training image. For a
  ReLU code (shallow) that value is 0: the unit never fires, its decoder
  weights never see a gradient, and the model has fewer than n units.
- ``inactive_units``: units whose variance over the training images is below
  ``ACTIVE_VARIANCE`` (0.01, the activity threshold of Burda et al., 2016).
  Dead units are inactive; a VAE's collapsed units (the posterior equals the
  prior, so the mean hardly moves) are inactive without being dead.

Arrays (``code_units.npz``): "variance" [R, n] each unit's variance over the
training images, "active_fraction" [R, n] the fraction of images on which it
is non-zero, "seeds" [R] (NaN rows for a diverged seed).
"""
from __future__ import annotations

import numpy as np

from ..data import train_data
from ..io import write_npz
from .base import EvalContext, Task, TaskResult

ACTIVE_VARIANCE = 0.01


def unit_counts(codes: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """codes [N, n] -> (dead units, inactive units, variance [n], fraction of images non-zero [n])."""
    codes = np.asarray(codes, np.float64)
    dead = (codes == codes[:1]).all(axis=0)
    var = codes.var(axis=0)
    return int(dead.sum()), int((var < ACTIVE_VARIANCE).sum()), var, (codes != 0).mean(axis=0)


class CodeUnits(Task):
    """Per seed: dead units (one value on every training image) and inactive ones (variance < 0.01)."""
    name = "code_units"
    files = ("code_units.npz",)

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log(f"    code units over the {len(ctx.data.x_train)} training images")
        h = ctx.evaluate(train_data(ctx.data))["h"]  # [R, N, e]
        n, r = ctx.cfg.latent, len(ctx.seeds)
        dead, inactive = np.full(r, np.nan), np.full(r, np.nan)
        var, active = np.full((r, n), np.nan), np.full((r, n), np.nan)
        for i in range(r):
            if not ctx.valid[i]:
                continue
            dead[i], inactive[i], var[i], active[i] = unit_counts(ctx.mean_code(h[i], index=i))
        write_npz(ctx.run_dir / "code_units.npz", variance=var, active_fraction=active, seeds=np.asarray(ctx.seeds))
        return TaskResult({"dead_units": dead, "inactive_units": inactive},
                          info={"active_variance": ACTIVE_VARIANCE, "images": int(len(ctx.data.x_train))})
