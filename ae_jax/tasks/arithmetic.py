"""Latent arithmetic: an attribute vector (stroke thickness) added to codes, and a conditional model's style transfer.

Attribute vector, per seed: with ink = the sum of an image's pixels, v = (mean
code of the quarter of training images with the most ink) − (mean code of
the quarter with the least ink). Codes are mean codes (the VAE's μ). Each of
the first N_TEST test codes c is decoded at c + w v for w in WEIGHTS (a
conditional model decodes with the image's own label).

Numbers per seed:

- ``arith_ink_gain``: how much of the attribute carries over:
  mean over the images of [ink(c + v) − ink(c − v)] / 2, divided by the ink gap
  between the two quarters (1: adding v adds as much ink as separates the thick
  quarter from the thin one);
- ``arith_offdata_fraction``: the fraction of the |w| = 2 decodes that are off
  the data (``pixels``: further from every training image than the model's own
  reconstructions are), i.e. whether the shifted codes stay on the data manifold;
- ``arith_digit_kept``: the fraction of the |w| = 2 decodes that the reference classifier
  (``reference``) still reads as the source image's digit, and ``arith_digit_kept_w<w>`` the same at each w,
  ``arith_digit_conf``: its mean probability of the source digit over the |w| = 2 decodes. Ink gain and
  "off the data" cannot see a change of class; this can: the attribute carries over only where the
  digit is kept (``digit_kept``);
- conditional models: ``style_label_accuracy``, the fraction of the first
  N_TEST test images' codes, decoded with each of the ten labels, whose
  nearest-neighbour label is the one asked for.

Arrays of the figure seed (``arithmetic.npz``): "weights" [W], "x" [F, 32, 32]
(the first N_FIGURE test images), "images" [F, W, 32, 32], "ink_gap"; a
conditional model adds "style" [F, 10, 32, 32] (image f's code decoded with
label d).
"""
from __future__ import annotations

import numpy as np

from .. import figures
from ..data import Data
from ..io import write_npz
from ..models import NUM_CLASSES
from . import pixels, reference
from .base import EvalContext, Task, TaskResult

WEIGHTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
N_TEST = 100
N_FIGURE = 6
FILE = "arithmetic.npz"


def ink(images: np.ndarray) -> np.ndarray:
    """[..., 32, 32] -> [...]: the sum of the pixels."""
    return images.sum((-2, -1))


def digit_kept(probs: np.ndarray, labels: np.ndarray, weights) -> dict[str, float]:
    """How often decodes of code + w·v still show the source digit, by the reference classifier.

    probs: [N, W, 10], the classifier's probabilities of each decode; labels: [N] the source digits; weights: [W].
    Returns "kept" (fraction of |w| = 2 decodes read as the source digit), "conf" (their mean probability of the
    source digit), and "kept_w<w>" for each w.
    """
    w = np.asarray(weights, float)
    probs, labels = np.asarray(probs), np.asarray(labels)
    read = probs.argmax(-1) == labels[:, None]                                              # [N, W]
    p_src = np.take_along_axis(probs, labels[:, None, None].repeat(probs.shape[1], 1), -1)[..., 0]
    far = np.abs(w) == 2.0
    out = {"kept": float(read[:, far].mean()), "conf": float(p_src[:, far].mean())}
    out.update({f"kept_w{a:g}": float(read[:, j].mean()) for j, a in enumerate(w)})
    return out


def ink_quarters(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the quarter of images with the most ink and of the quarter with the least. x: [N, 32, 32]."""
    order = np.argsort(ink(x), kind="stable")
    q = len(x) // 4
    return order[-q:], order[:q]


class Arithmetic(Task):
    """Stroke-thickness arithmetic on every seed; style transfer for a conditional model."""
    name = "arithmetic"

    def run(self, ctx: EvalContext) -> TaskResult:
        data, cond = ctx.data, ctx.spec.conditional
        thick, thin = ink_quarters(data.x_train)
        ink_gap = float(ink(data.x_train[thick]).mean() - ink(data.x_train[thin]).mean())
        idx = np.concatenate([thick, thin])
        ctx.log(f"    latent arithmetic: encoding {len(idx)} training images ({len(ctx.seeds)} seeds)")
        h_train = ctx.evaluate(Data(data.x_train[idx], data.y_train[idx]))["h"]    # [R, 2q, e]
        x, y = data.x_test[:N_TEST], data.y_test[:N_TEST]
        w = np.asarray(WEIGHTS, np.float32)
        R = len(ctx.seeds)
        kept_names = ["arith_digit_kept", "arith_digit_conf"] + [f"arith_digit_kept_w{a:g}" for a in WEIGHTS]
        names = (("arith_ink_gain", "arith_offdata_fraction", *kept_names)
                 + (("style_label_accuracy",) if cond else ()))
        ref = reference.reference_classifier(ctx)
        metrics = {k: np.full(R, np.nan) for k in names}
        fig = None
        for i in range(R):
            if not ctx.valid[i]:
                continue
            c_train = ctx.mean_code(h_train[i], i)
            v = c_train[: len(thick)].mean(0) - c_train[len(thick):].mean(0)                # [n]
            c = ctx.mean_code(ctx.test["h"][i, :N_TEST], i)                                  # [N_TEST, n]
            shifted = c[:, None, :] + w[:, None] * v[None, None, :]                          # [N_TEST, W, n]
            imgs = ctx.decode(shifted.reshape(-1, c.shape[1]), np.repeat(y, len(w)), index=i)
            imgs = imgs.reshape(len(x), len(w), 32, 32)
            ink_w = ink(imgs)                                                                # [N_TEST, W]
            metrics["arith_ink_gain"][i] = np.mean((ink_w[:, w == 1.0] - ink_w[:, w == -1.0]) / 2) / ink_gap
            off, _ = pixels.judge(ctx, i, imgs[:, np.abs(w) == 2.0].reshape(-1, 32, 32))
            metrics["arith_offdata_fraction"][i] = off.mean()
            kept = digit_kept(ref.probs(imgs.reshape(-1, 32, 32)).reshape(len(x), len(w), -1), y, w)
            for k, val in kept.items():
                metrics["arith_digit_" + k][i] = val
            style = None
            if cond:
                labels = np.tile(np.arange(NUM_CLASSES), len(x))
                style = ctx.decode(np.repeat(c, NUM_CLASSES, axis=0), labels, index=i)
                _, nn_label = pixels.judge(ctx, i, style)
                metrics["style_label_accuracy"][i] = (nn_label == labels).mean()
                style = style.reshape(len(x), NUM_CLASSES, 32, 32)
            if i == ctx.fig:
                fig = dict(weights=w, x=x[:N_FIGURE], images=imgs[:N_FIGURE], ink_gap=ink_gap, vector=v,
                           seed=ctx.seeds[i])
                if style is not None:
                    fig["style"] = style[:N_FIGURE]
        if fig is None:
            return TaskResult(metrics, {})
        write_npz(ctx.run_dir / FILE, **fig)
        rows = [np.concatenate([[xi], im]) for xi, im in zip(fig["x"], fig["images"])]
        figures.image_rows(rows, ctx.run_dir / "arithmetic.png",
                           [f"{ctx.cfg.model}: test image, then code + w·v (thick − thin), w = "
                            + ", ".join(f"{a:g}" for a in WEIGHTS)] + [None] * (len(rows) - 1))
        figs = {"arithmetic": "arithmetic.png"}
        if "style" in fig:
            rows = [np.concatenate([[xi], im]) for xi, im in zip(fig["x"], fig["style"])]
            figures.image_rows(rows, ctx.run_dir / "style_transfer.png",
                               [f"{ctx.cfg.model}: test image, then its code decoded with labels 0-9"]
                               + [None] * (len(rows) - 1))
            figs["style_transfer"] = "style_transfer.png"
        return TaskResult(metrics, figs)
