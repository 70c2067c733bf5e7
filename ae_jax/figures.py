"""Figures: PNG grids, animated GIFs, latent scatters, ROC curves (matplotlib / Pillow)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402

GIF_SCALE = 2  # 64 px frames: viewable, and a 258-frame GIF stays a few hundred kB


def _save_fig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save(fig, path: Path) -> None:
    """A matplotlib figure -> PNG at path (written atomically); closes the figure."""
    _save_fig(fig, path)


def figure_rgb(fig, dpi: int = 80) -> np.ndarray:
    """A matplotlib figure -> its pixels [H, W, 3] uint8; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def write_rgb_gif(frames: Sequence[np.ndarray], path: Path, ms_per_frame: int = 200) -> None:
    """[H, W, 3] uint8 frames (all the same size) -> a looping GIF, each frame with its own 255-colour palette."""
    imgs = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE, colors=255) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms_per_frame, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def image_rows(rows: Sequence[np.ndarray], path: Path, titles: Sequence[str] | None = None, pad: int = 2) -> None:
    """Rows of [k, 32, 32] images in [0, 1] tiled into one grey PNG (titles label the rows)."""
    k = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(k * 0.5, len(rows) * 0.65), squeeze=False)
    for ax, r, t in zip(axes[:, 0], rows, titles or [None] * len(rows)):
        tiles = np.concatenate([np.pad(im, pad, constant_values=1.0) for im in r], axis=1)
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        if t:
            ax.set_title(t, fontsize=8, loc="left")
    _save_fig(fig, path)


def image_grid(images: np.ndarray, path: Path, cols: int = 4, title: str | None = None) -> None:
    """[k, 32, 32] images -> a cols-wide grid PNG."""
    rows = [images[i: i + cols] for i in range(0, len(images), cols)]
    image_rows(rows, path, [title] + [None] * (len(rows) - 1) if title else None)


def tile(images: np.ndarray, pad: int = 0) -> np.ndarray:
    """[A, B, H, W] -> one [A (H + 2 pad), B (W + 2 pad)] image: row a, column b holds images[a, b]."""
    if pad:
        images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=1.0)
    a, b, h, w = images.shape
    return images.transpose(0, 2, 1, 3).reshape(a * h, b * w)


def panels(images: Sequence[np.ndarray], path: Path, titles: Sequence[str], cols: int | None = None,
           size: float = 3.6, suptitle: str | None = None) -> None:
    """Grey [H, W] images in [0, 1], one titled panel each, side by side (cols per row)."""
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, im, t in zip(axes.flat, images, titles):
        ax.imshow(im, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(t, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    _save_fig(fig, path)


def write_gif(frames: np.ndarray, path: Path, ms_per_frame: int = 30) -> int:
    """[T, 32, 32] in [0, 1] -> GIF that plays forward then back, enlarged GIF_SCALE x.

    The sequence is T frames forward and T - 2 back (the end frames are not
    repeated, so the loop is seamless): 258 frames for T = 130. Pillow merges
    consecutive identical frames into one longer frame, so the frame count can
    be lower when the decoder repeats itself; the total duration is always
    (2T - 2) x ms_per_frame. Returns the length of the sequence.
    """
    seq = np.concatenate([frames, frames[-2:0:-1]])
    imgs = [Image.fromarray((np.clip(f, 0, 1) * 255).astype(np.uint8)).resize(
        (f.shape[1] * GIF_SCALE, f.shape[0] * GIF_SCALE), Image.NEAREST) for f in seq]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms_per_frame, loop=0,
                 optimize=False, disposal=1)
    atomic_write_bytes(path, buf.getvalue())
    return len(imgs)


def latent_scatter(emb: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="tab10", s=1.5, alpha=0.7, vmin=-0.5, vmax=9.5,
                    rasterized=True)
    fig.colorbar(sc, ax=ax, ticks=range(10), fraction=0.046)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    _save_fig(fig, path)


def roc_figure(curves: Sequence[tuple[np.ndarray, np.ndarray, float]], seeds: Sequence[int], path: Path,
               title: str) -> None:
    fig, ax = plt.subplots(figsize=(4, 4))
    for (fpr, tpr, auc), s in zip(curves, seeds):
        ax.plot(fpr, tpr, lw=1, label=f"seed {s}: AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    _save_fig(fig, path)


def compose(paths: Sequence[Path], titles: Sequence[str], out: Path, cols: int = 3) -> None:
    """Tile existing PNGs into one figure (the report's per-task grids)."""
    paths = [(p, t) for p, t in zip(paths, titles) if Path(p).exists()]
    if not paths:
        return
    rows = -(-len(paths) // cols)
    images = [plt.imread(p) for p, _ in paths]
    cell_w = 12.0 / cols
    aspect = max(im.shape[0] / im.shape[1] for im in images)  # cells sized to the tallest image
    fig, axes = plt.subplots(rows, cols, figsize=(12.0, rows * (cell_w * aspect + 0.4)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, im, (_, t) in zip(axes.flat, images, paths):
        ax.imshow(im)
        ax.set_title(t, fontsize=10)
    fig.tight_layout()
    _save_fig(fig, out)
