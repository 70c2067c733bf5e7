"""Latent plane (n = 2 runs): a regular grid over the code plane decoded, and where the test set's codes lie.

The grid has G x G points. A model whose prior is N(0, I) (the VAE family)
is read over [-3, 3]^2; any other model over the box its test codes occupy
(the 0.5th to 99.5th percentile on each axis, so a few outliers do not
stretch it). A conditional model decodes one plane per label, d = 0..9.
The codes are the mean codes (the VAE's μ) of the whole test set.

Numbers per seed (see ``pixels`` for the judging): ``plane_offdata_fraction``,
the fraction of grid decodes further from every training image than the
model's own reconstructions are (the "holes and regions of garbage");
``plane_classes``, how many distinct digits the grid decodes on the data show
(an unconditional model); ``plane_label_accuracy``, the fraction of a
conditional model's grid decodes showing the label the plane was decoded with.

Arrays of the figure seed (``latent_plane.npz``): "images" [P, G, G, 32, 32]
(row a, column b decodes (u[b], v[G-1-a]), so the image reads like a plot,
v growing upwards), "plane_labels" [P] (-1 for an unconditional model's single
plane; a conditional model keeps the planes of FIGURE_DIGITS), "u", "v" [G],
"codes" [N, 2] the test codes, "labels" [N] their digits, "seed".
"""
from __future__ import annotations

import numpy as np

from .. import figures
from ..io import write_npz
from ..models import NUM_CLASSES
from ..models.gaussian import Gaussian
from . import pixels
from .base import EvalContext, Task, TaskResult

G = 15
PRIOR_RANGE = 3.0
CODE_PERCENTILES = (0.5, 99.5)
FIGURE_DIGITS = (0, 4, 7)
FILE = "latent_plane.npz"


def plane_axes(spec, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [G] each: [-3, 3] for an N(0, I) prior, else the codes' 0.5..99.5 percentile box. codes: [N, 2]."""
    if isinstance(spec.bottleneck, Gaussian):
        lo, hi = np.full(2, -PRIOR_RANGE), np.full(2, PRIOR_RANGE)
    else:
        lo, hi = np.percentile(codes, CODE_PERCENTILES, axis=0)
    return np.linspace(lo[0], hi[0], G), np.linspace(lo[1], hi[1], G)


def grid_codes(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[G, G, 2]: row a, column b holds (u[b], v[G-1-a])."""
    uu, vv = np.meshgrid(u, v[::-1])
    return np.stack([uu, vv], -1).astype(np.float32)


class LatentPlane(Task):
    """The decoded G x G grid over the plane of an n = 2 model, per seed; the figure seed's arrays and figure."""
    name = "latent_plane"

    def run(self, ctx: EvalContext) -> TaskResult:
        if ctx.cfg.latent != 2:
            ctx.log(f"    latent_plane applies to n = 2 runs only (this one has n = {ctx.cfg.latent}): skipped")
            return TaskResult()
        ctx.log(f"    decoding the latent plane ({len(ctx.seeds)} seeds)")
        cond = ctx.spec.conditional
        planes = list(range(NUM_CLASSES)) if cond else [-1]
        R = len(ctx.seeds)
        names = ("plane_offdata_fraction",) + (("plane_label_accuracy",) if cond else ("plane_classes",))
        metrics = {k: np.full(R, np.nan) for k in names}
        y = ctx.data.y_test
        fig = None
        for i in range(R):
            if not ctx.valid[i]:
                continue
            codes = ctx.mean_code(ctx.test["h"][i], i)
            u, v = plane_axes(ctx.spec, codes)
            z = grid_codes(u, v).reshape(G * G, 2)
            imgs = np.stack([ctx.decode(z, np.full(G * G, d) if cond else None, index=i) for d in planes])
            off, nn_label = pixels.judge(ctx, i, imgs.reshape(-1, 32, 32))
            metrics["plane_offdata_fraction"][i] = off.mean()
            if cond:
                metrics["plane_label_accuracy"][i] = (nn_label == np.repeat(planes, G * G)).mean()
            else:
                metrics["plane_classes"][i] = len(set(nn_label[~off].tolist()))
            if i == ctx.fig:
                keep = [planes.index(d) for d in FIGURE_DIGITS] if cond else [0]
                fig = dict(images=imgs[keep].reshape(len(keep), G, G, 32, 32), u=u, v=v, codes=codes,
                           plane_labels=np.asarray([planes[k] for k in keep]))
        if fig is None:  # every seed diverged
            return TaskResult(metrics, {})
        write_npz(ctx.run_dir / FILE, labels=y, seed=ctx.seeds[ctx.fig], **fig)
        figures.panels([figures.tile(p) for p in fig["images"]], ctx.run_dir / "latent_plane.png",
                       [f"{ctx.cfg.model} n = 2, seed {ctx.seeds[ctx.fig]}" + (f", label {d}" if d >= 0 else "")
                        for d in fig["plane_labels"]])
        return TaskResult(metrics, {"latent_plane": "latent_plane.png"})
