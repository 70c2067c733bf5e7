"""Reconstruction: test error per image (BCE and MSE, overall and per class) and a figure."""
from __future__ import annotations

import numpy as np

from .. import figures
from ..trainer.run import per_class
from .base import EvalContext, Task, TaskResult

N_SHOW = 16


class Reconstruction(Task):
    """Mean over the test set of each image's error summed over its pixels; the first 16 test images redrawn."""
    name = "reconstruction"

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log("    reconstructing the test set")
        ev, data = ctx.test, ctx.data
        metrics = {"test_bce": ev["bce"].mean(1), "test_mse": ev["mse"].mean(1)}
        for k in ("bce", "mse"):
            metrics.update(per_class(np.asarray(ev[k], np.float64), data.y_test, f"test_{k}"))
        recon = ctx.decode(ev["z"][ctx.fig, :N_SHOW], data.y_test[:N_SHOW])
        figures.image_rows([data.x_test[:N_SHOW], recon], ctx.run_dir / "reconstructions.png",
                           [f"{ctx.cfg.model}: test images", "reconstructions (seed %d)" % ctx.seeds[ctx.fig]])
        return TaskResult(metrics, {"reconstructions": "reconstructions.png"})
