"""Interpolation quality: many fixed pairs of test images, every seed, judged by the reference classifier.

Pairs: ``N_PAIRS`` (100) pairs of test images showing different digits,
drawn from the test labels alone (``sample_quality.interpolation_pairs``,
seed 0), so every model and every seed interpolates between the same images.

Path: the straight line between the two images' encoder outputs h
(``interpolation.interpolate_h``, ``N_FRAMES`` = 130 frames, as the
interpolation GIFs), every frame through the bottleneck without its noise
(``mean_code``: the VAE family decodes μ, so the path is straight in μ; vq
quantises every frame), decoded with BatchNorm in evaluation mode. A
conditional model decodes every frame with the first image's label, as the GIF
does. Leaving the noise out keeps sampling jitter from counting as a step (the
GIF with fresh noise shows that jitter).

Numbers per seed (``sample_quality.interpolation_metrics``):

- ``interp_confident_frac``: the fraction of all frames the classifier reads
  as some digit with top-class probability at least ``CONFIDENT`` (0.9);
- ``interp_max_step``: per pair, the largest frame-to-frame L2 change divided
  by the L2 distance between the path's two decoded end frames, averaged over
  pairs. An evenly paced path scores 1/129 ≈ 0.0078; a path that holds one
  image and then jumps to the other scores about 1.

Arrays (``interp_quality.npz``): "pairs" [P, 2] test indices and
"pair_labels" [P, 2]; "max_step" and "confident" [R, P], each pair's step
ratio and fraction of confident frames per seed (NaN for a diverged seed);
"frames" [N_SHOW_PAIRS, N_SHOW_FRAMES, 32, 32], evenly spaced frames of the
first pairs for the figure seed, at "frame_index" [N_SHOW_FRAMES]; "seed".
"""
from __future__ import annotations

import numpy as np

from . import quality_measures as sq
from ..io import write_npz
from . import reference
from .base import EvalContext, Task, TaskResult
from .interpolation import N_FRAMES, interpolate_h
from .sample_quality import decode_chunked

N_PAIRS = sq.INTERP_PAIRS  # 100; tests use fewer (the first pairs of the same fixed sequence)
N_SHOW_PAIRS, N_SHOW_FRAMES = 4, 10
FILE = "interp_quality.npz"
METRICS = ("interp_confident_frac", "interp_max_step")


def fixed_pairs(y_test: np.ndarray) -> np.ndarray:
    """The pairs every model and seed interpolates: [N_PAIRS, 2] test indices of different digits."""
    return sq.interpolation_pairs(y_test, N_PAIRS, sq.INTERP_PAIR_SEED)


def pair_paths(ctx: EvalContext, index: int, pairs: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Decoded noise-free paths of seed `index` for pairs [P, 2] of test indices: [P, n_frames, 32, 32]."""
    h = ctx.test["h"][index]                                               # [T_test, e]
    hs = np.asarray(interpolate_h(h[pairs[:, 0]], h[pairs[:, 1]], n_frames))  # [P, F, e]
    p, f, e = hs.shape
    z = ctx.mean_code(hs.reshape(p * f, e), index)
    labels = np.repeat(ctx.data.y_test[pairs[:, 0]], f)
    return decode_chunked(ctx, z, labels, index).reshape(p, f, *ctx.data.x_test.shape[1:])


class InterpQuality(Task):
    """INTERP_PAIRS fixed test pairs per seed: how many frames read as a digit, and how evenly the path moves."""
    name = "interp_quality"
    files = (FILE,)

    def run(self, ctx: EvalContext) -> TaskResult:
        y = ctx.data.y_test
        pairs = fixed_pairs(y)
        P, R = len(pairs), len(ctx.seeds)
        ctx.log(f"    interpolation quality: {P} pairs x {N_FRAMES} frames per seed")
        ref = reference.reference_classifier(ctx)
        metrics = {k: np.full(R, np.nan) for k in METRICS}
        max_step, confident = np.full((R, P), np.nan), np.full((R, P), np.nan)
        show = np.linspace(0, N_FRAMES - 1, N_SHOW_FRAMES).round().astype(int)
        frames_shown = np.full((N_SHOW_PAIRS, N_SHOW_FRAMES) + ctx.data.x_test.shape[1:], np.nan, np.float32)
        for i in range(R):
            if not ctx.valid[i]:
                continue
            frames = pair_paths(ctx, i, pairs)
            probs = ref.probs(frames.reshape(-1, *frames.shape[2:])).reshape(P, N_FRAMES, -1)
            m = sq.interpolation_metrics(frames, probs)
            metrics["interp_confident_frac"][i] = m["interp_confident_frac"]
            metrics["interp_max_step"][i] = m["interp_max_step"]
            max_step[i] = m["interp_max_step_per_pair"]
            confident[i] = (probs.max(-1) >= sq.CONFIDENT).mean(-1)
            if i == ctx.fig:
                frames_shown = frames[:N_SHOW_PAIRS][:, show]
        write_npz(ctx.run_dir / FILE, pairs=pairs, pair_labels=y[pairs], max_step=max_step, confident=confident,
                  frames=frames_shown, frame_index=show, seed=ctx.seeds[ctx.fig])
        info = {"pairs": P, "frames": N_FRAMES, "confident_threshold": sq.CONFIDENT,
                "reference_test_accuracy": ref.test_accuracy,
                "reference_params_sha256": ref.params_sha256}
        return TaskResult(metrics, {}, info)
