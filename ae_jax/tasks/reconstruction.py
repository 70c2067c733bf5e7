"""Reconstruction: test error per image (BCE and MSE, overall and per class) and a figure.

Arrays of the figure seed (``reconstructions.npz``): "index", "x", "recon" for
the first 16 test images (the figure), and "digit_index", "digit_x",
"digit_recon" for the first test image of each digit 0..9 (codes z as
evaluation forms them: sampled for the VAE family).

A model with a Gaussian code (the VAE family) is trained and evaluated on a
sampled z, whose noise adds to its error; ``test_mse_mu`` is the same test MSE
from the mean code μ (``mean_code_mse``), so a report can say which error a
claim uses.
"""
from __future__ import annotations

import numpy as np

from .. import figures
from ..io import write_npz
from ..models import NUM_CLASSES
from ..models.gaussian import Gaussian
from ..trainer.results import per_class
from .base import EvalContext, Task, TaskResult

N_SHOW = 16
CHUNK = 2048  # test images decoded at once for the error from μ


def mean_code_mse(ctx: EvalContext) -> np.ndarray:
    """[R] per seed: the test MSE (summed over pixels, averaged over images) of the decode of the mean code μ,
    BatchNorm in evaluation mode; NaN for a diverged seed."""
    x, y = ctx.data.x_test, ctx.data.y_test
    out = np.full(len(ctx.seeds), np.nan)
    for i in range(len(ctx.seeds)):
        if not ctx.valid[i]:
            continue
        err = []
        for a in range(0, len(x), CHUNK):
            mu = ctx.mean_code(ctx.test["h"][i, a:a + CHUNK], i)
            rec = ctx.decode(mu, y[a:a + CHUNK], index=i)
            err.append(((rec.astype(np.float64) - x[a:a + CHUNK]) ** 2).sum((-2, -1)))
        out[i] = float(np.concatenate(err).mean())
    return out


class Reconstruction(Task):
    """Mean over the test set of each image's error summed over its pixels; the first 16 test images redrawn."""
    name = "reconstruction"
    files = ("reconstructions.npz",)

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log("    reconstructing the test set")
        ev, data = ctx.test, ctx.data
        err = {k: np.asarray(ev[k], np.float64) for k in ("bce", "mse")}  # as metrics.json averages them
        metrics = {f"test_{k}": e.mean(axis=1) for k, e in err.items()}
        for k, e in err.items():
            metrics.update(per_class(e, data.y_test, f"test_{k}"))
        if isinstance(ctx.spec.bottleneck, Gaussian):
            ctx.log("    reconstructing the test set from the mean code μ")
            metrics["test_mse_mu"] = mean_code_mse(ctx)
        recon = ctx.decode(ev["z"][ctx.fig, :N_SHOW], data.y_test[:N_SHOW])
        digits = np.asarray([np.flatnonzero(data.y_test == d)[0] for d in range(NUM_CLASSES)
                             if np.any(data.y_test == d)])
        write_npz(ctx.run_dir / "reconstructions.npz", index=np.arange(N_SHOW), x=data.x_test[:N_SHOW], recon=recon,
                  digit_index=digits, digit_x=data.x_test[digits],
                  digit_recon=ctx.decode(ev["z"][ctx.fig, digits], data.y_test[digits]), seed=ctx.seeds[ctx.fig])
        figures.image_rows([data.x_test[:N_SHOW], recon], ctx.run_dir / "reconstructions.png",
                           [f"{ctx.cfg.model}: test images", "reconstructions (seed %d)" % ctx.seeds[ctx.fig]])
        return TaskResult(metrics, {"reconstructions": "reconstructions.png"})
