"""Interpolation: decode the straight line between two test images' encoder outputs, as an animated GIF.

The GIFs' arrays (``interpolation.npz``): "seed" (the figure seed), "x"
[2, 32, 32] and "y" [2], the two test images and labels, and per GIF its 130 frames
[130, 32, 32] under the GIF's name ("interpolation", and
"interpolation_fixed_noise" for a stochastic code).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import figures
from ..io import write_npz
from .base import EvalContext, Task, TaskResult

N_FRAMES = 130


@functools.lru_cache(maxsize=4)
def _weights(n_frames: int) -> np.ndarray:
    """[n_frames] float32: jnp.linspace(0, 1, n_frames), the weights every frame has always used."""
    return np.asarray(jnp.linspace(0.0, 1.0, n_frames))


def interpolate_h(h_a, h_b, n_frames: int = N_FRAMES) -> np.ndarray:
    """The straight line between encoder outputs: h_a, h_b [..., e] -> [..., n_frames, e] (float32, on the host).

    Frame k is (1 - w_k) h_a + w_k h_b with w_k = k / (n_frames - 1), so the
    first frame is h_a and the last h_b. Computed in numpy: the same numbers as
    the operations dispatched one by one, without a compiled program for each.
    """
    h_a, h_b = np.asarray(h_a, np.float32)[..., None, :], np.asarray(h_b, np.float32)[..., None, :]   # [..., 1, e]
    w = _weights(n_frames).reshape((1,) * (h_a.ndim - 2) + (n_frames, 1))  # [..., T, 1]
    return (np.float32(1) - w) * h_a + w * h_b


def interpolation_frames(ctx: EvalContext, x_pair: np.ndarray, y_pair: np.ndarray, key,
                         fixed_noise: bool = False, index: int | None = None) -> np.ndarray:
    """Interpolate the encoder outputs h of two images (130 weights in [0, 1]), bottleneck, decode.

    A stochastic bottleneck draws fresh noise per frame, or one draw for every
    frame when fixed_noise (which removes the frame-to-frame jitter). A
    conditional model decodes every frame with the first image's label.
    ``index`` picks the seed (default: the figure seed). Returns [130, 32, 32].
    """
    h = ctx.encode_h(x_pair, y_pair, index=index)                   # [2, e]
    hs = interpolate_h(h[0], h[1])                                 # [130, e]
    keys = jnp.broadcast_to(key, (N_FRAMES,)) if fixed_noise else jax.random.split(key, N_FRAMES)
    z = jax.vmap(lambda hh, k: ctx.bottleneck(hh[None], k, index=index)[0])(hs, keys)
    return ctx.decode(z, np.full(N_FRAMES, y_pair[0]), index=index)


class Interpolation(Task):
    """The first two test images (a 2 and a 7 in MNIST), 130 frames forward and back; figures only."""
    name = "interpolation"

    def run(self, ctx: EvalContext) -> TaskResult:
        ctx.log("    interpolating")
        figs, arrays = {}, {}
        x, y = ctx.data.x_test[:2], ctx.data.y_test[:2]
        for fixed in ([False, True] if ctx.spec.bottleneck.stochastic else [False]):
            frames = interpolation_frames(ctx, x, y, jax.random.fold_in(ctx.fig_key, 4), fixed)
            name = "interpolation_fixed_noise.gif" if fixed else "interpolation.gif"
            figures.write_gif(frames, ctx.run_dir / name)
            figs[name.removesuffix(".gif")] = name
            arrays[name.removesuffix(".gif")] = np.asarray(frames, np.float32)
        write_npz(ctx.run_dir / "interpolation.npz", x=x, y=y, seed=ctx.seeds[ctx.fig], **arrays)
        return TaskResult({}, figs)
