"""The bake-off's comparison figures: each ONE matplotlib figure drawn from arrays the tasks saved.

Every figure goes to the results root as ``fig_<name>.png`` with the arrays it
shows in ``fig_<name>.npz`` (the same stem), so it can be checked or redrawn
without the run folders. One title per panel, one shared colour bar or legend,
shared scales where the quantities are comparable, images tiled without
padding beyond a one-pixel seam.

A run that saved no arrays (one made by older code, before the tasks saved
them) is left out of a figure and named beneath it. When no run of a figure
saved arrays (a study made entirely by older code), the runs' own PNGs are
tiled into ``grid_<name>.png`` as older reports did, and the report says so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import figures
from ..io import write_npz
from ..models import get_model
from ..tasks import interp_quality, sample_quality

plt = figures.plt
GREY = dict(cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")


def _load(path: Path):
    return np.load(path) if path.exists() else None


def _first_finite(a: np.ndarray) -> int:
    """Index along the leading axis of the first all-finite entry (the first seed that did not diverge), else 0."""
    for i in range(a.shape[0]):
        if np.isfinite(a[i]).all():
            return i
    return 0


def _mean_std(summary: dict, model: str, metric: str) -> tuple[float, float]:
    e = summary.get(model, {}).get(metric)
    if not e or e["mean"] is None:
        return float("nan"), float("nan")
    return float(e["mean"]), float(e["std"]) if e["std"] is not None else float("nan")


def _strip(images: np.ndarray) -> np.ndarray:
    """[k, H, W] -> one row [H + 2, k (W + 2)] with a one-pixel white seam around each image."""
    return figures.tile(np.asarray(images)[None], pad=1)


def _save(root: Path, stem: str, fig, **arrays) -> str:
    figures.save(fig, root / f"{stem}.png")
    write_npz(root / f"{stem}.npz", **arrays)
    (root / f"grid_{stem.removeprefix('fig_')}.png").unlink(missing_ok=True)  # what older reports pasted
    return f"{stem}.png"


def _lines(title: str, png: str | None, note: str = "", missing: Sequence[str] = ()) -> list[str]:
    if png is None:
        return []
    out = [f"### {title}", "", f"![{title}]({png})", ""]
    if note:
        out += [note, ""]
    if missing:
        out += [f"Not in this figure (their runs saved no arrays: older code): {', '.join(missing)}.", ""]
    return out


def _legacy_grid(root: Path, name: str, items: list[tuple[str, str]], cols: int) -> str | None:
    """Older runs' own PNGs tiled (figures.compose) into grid_<name>.png; None when there are none."""
    paths = [root / d / f for d, f in items]
    if not any(p.exists() for p in paths):
        return None
    out = root / f"grid_{name}.png"
    figures.compose(paths, [d for d, _ in items], out, cols=cols)
    return out.name


LEGACY_NOTE = ("These runs were made by older code that saved images, not arrays: their own PNGs are tiled here "
               "as they are.")


# --------------------------------------------------------------------------- reconstructions
def fig_reconstructions(root: Path, models: Sequence[str], dirs: dict) -> list[str]:
    title = "Reconstructions (the first 16 test images; one seed per model)"
    data = {m: _load(root / dirs[m]["full"] / "reconstructions.npz") for m in models}
    have = [m for m in models if data[m] is not None]
    if not have:
        png = _legacy_grid(root, "reconstructions", [(dirs[m]["full"], "reconstructions.png") for m in models], 1)
        return _lines(title, png, LEGACY_NOTE if png else "")
    x = data[have[0]]["x"]
    recon = np.stack([data[m]["recon"] for m in have])
    seeds = [int(data[m]["seed"]) for m in have]
    rows = [("test images", x)] + [(f"{m} (seed {s})", r) for m, s, r in zip(have, seeds, recon)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.42 * len(x), 0.62 * len(rows)), squeeze=False)
    for ax, (t, imgs) in zip(axes[:, 0], rows):
        ax.imshow(_strip(imgs), **GREY)
        ax.set_axis_off()
        ax.set_title(t, fontsize=8, loc="left", pad=2)
    fig.subplots_adjust(hspace=0.45)
    png = _save(root, "fig_reconstructions", fig, x=x, recon=recon, models=np.asarray(have), seeds=np.asarray(seeds))
    return _lines(title, png, missing=[m for m in models if m not in have])


# --------------------------------------------------------------------------- samples beside their Fréchet distance
def sampler_label(model: str) -> str:
    """How a model's samples are drawn, for figure titles and tables."""
    return "its prior" if get_model(model).can_sample else "Gaussian fit to its training codes (baseline)"


def fig_samples(root: Path, models: Sequence[str], dirs: dict, summary: dict) -> list[str]:
    title = "Samples and their Fréchet distance to the test set"
    data = {m: _load(root / dirs[m]["full"] / sample_quality.FILE) for m in models}
    have = [m for m in models if data[m] is not None]
    if not have:
        png = _legacy_grid(root, "samples", [(dirs[m]["full"], "samples.png") for m in models
                                             if get_model(m).can_sample], 2)
        return _lines("Samples from the prior", png, LEGACY_NOTE if png else "")
    idx = [_first_finite(data[m]["images"]) for m in have]
    images = np.stack([data[m]["images"][i] for m, i in zip(have, idx)])              # [M, k, 32, 32]
    seeds = [int(data[m]["seeds"][i]) for m, i in zip(have, idx)]
    fd = np.asarray([_mean_std(summary, m, "sample_frechet") for m in have])          # [M, 2]
    k = images.shape[1]
    fig = plt.figure(figsize=(0.42 * k + 3.2, 0.62 * len(have) + 0.6))
    gs = fig.add_gridspec(len(have), 2, width_ratios=[0.42 * k, 2.8], wspace=0.04, hspace=0.5)
    top = np.nanmax(fd[:, 0] + np.nan_to_num(fd[:, 1])) if np.isfinite(fd[:, 0]).any() else 1.0
    bar0 = None
    for r, m in enumerate(have):
        ax = fig.add_subplot(gs[r, 0])
        ax.imshow(_strip(images[r]), **GREY)
        ax.set_axis_off()
        ax.set_title(f"{m}: samples from {sampler_label(m)}, seed {seeds[r]}", fontsize=8, loc="left", pad=2)
        bx = fig.add_subplot(gs[r, 1], sharex=bar0)
        bar0 = bar0 or bx
        mean, std = fd[r]
        if math.isfinite(mean):
            bx.barh([0], [mean], xerr=[0 if not math.isfinite(std) else std], height=0.6,
                    color="tab:gray" if not get_model(m).can_sample else "tab:blue", error_kw=dict(lw=0.8))
            bx.text(mean + (std if math.isfinite(std) else 0) + 0.02 * top, 0,
                    f"{mean:.1f}" + (f" ± {std:.1f}" if math.isfinite(std) else ""), va="center", fontsize=7)
        else:
            bx.text(0.02 * top, 0, "n/a", va="center", fontsize=7)
        bx.set_yticks([]), bx.set_ylim(-0.6, 0.6)
        for side in ("top", "right", "left") + (("bottom",) if r < len(have) - 1 else ()):
            bx.spines[side].set_visible(False)
        if r < len(have) - 1:
            bx.tick_params(bottom=False, labelbottom=False)
    bar0.set_xlim(0, top * 1.45)
    bx.set_xlabel("Fréchet distance (mean ± std over seeds; lower is closer to the test set)", fontsize=7)
    bx.tick_params(labelsize=7)
    png = _save(root, "fig_samples", fig, images=images, models=np.asarray(have), seeds=np.asarray(seeds),
                frechet_mean=fd[:, 0], frechet_std=fd[:, 1],
                gaussian_fit=np.asarray([not get_model(m).can_sample for m in have]))
    note = ("Blue bars: samples from the model's prior; grey bars: models without a prior, whose samples decode "
            "codes drawn from a Gaussian fitted to their own training codes (a baseline they were not trained for).")
    return _lines(title, png, note, [m for m in models if m not in have])


# --------------------------------------------------------------------------- interpolation paths
def fig_interpolations(root: Path, models: Sequence[str], dirs: dict, summary: dict) -> list[str]:
    title = "Interpolations (the first two fixed test pairs, noise-free paths, one seed per model)"
    data = {m: _load(root / dirs[m]["full"] / interp_quality.FILE) for m in models}
    have = [m for m in models if data[m] is not None]
    if not have:
        return []
    n_pairs = 2
    frames = np.stack([data[m]["frames"][:n_pairs] for m in have])                    # [M, 2, F, 32, 32]
    seeds = [int(data[m]["seed"]) for m in have]
    pairs = data[have[0]]["pairs"][:n_pairs]
    labels = data[have[0]]["pair_labels"][:n_pairs]
    f = frames.shape[2]
    n_all = data[have[0]]["pairs"].shape[0]
    height = 0.66 * len(have) + 0.35
    fig, axes = plt.subplots(len(have), n_pairs, figsize=(0.42 * f * n_pairs + 0.3, height),
                             squeeze=False, gridspec_kw=dict(wspace=0.04, hspace=0.55))
    fig.subplots_adjust(top=1 - 0.42 / height, bottom=0.02)  # the title right above the first row's titles
    for r, m in enumerate(have):
        step, _ = _mean_std(summary, m, "interp_max_step")
        conf, _ = _mean_std(summary, m, "interp_confident_frac")
        for c in range(n_pairs):
            ax = axes[r, c]
            ax.imshow(_strip(frames[r, c]), **GREY)
            ax.set_axis_off()
            if c == 0:
                ax.set_title(f"{m} (seed {seeds[r]}): max step {step:.3f}, confident frames {conf:.2f} "
                             f"(means over seeds and {n_all} pairs)", fontsize=7, loc="left", pad=2)
    fig.suptitle("  ·  ".join(f"pair {c + 1}: test images {int(pairs[c, 0])} (a {int(labels[c, 0])}) → "
                              f"{int(pairs[c, 1])} (a {int(labels[c, 1])})" for c in range(n_pairs)),
                 fontsize=8, y=1 - 0.06 / height, va="top")
    png = _save(root, "fig_interpolations", fig, frames=frames, models=np.asarray(have), seeds=np.asarray(seeds),
                pairs=pairs, pair_labels=labels, frame_index=data[have[0]]["frame_index"])
    return _lines(title, png, missing=[m for m in models if m not in have])


# --------------------------------------------------------------------------- latent scatters
def fig_latent(root: Path, models: Sequence[str], dirs: dict, variant: str) -> list[str]:
    name = "latent" if variant == "full" else "latent_anomaly"
    title = ("Latent structure, n = 20 (UMAP of the test codes)" if variant == "full"
             else "Latent structure, n = 2 (anomaly split, raw test codes)")
    data = {m: _load(root / dirs[m][variant] / "latent.npz") for m in models}
    have = [m for m in models if data[m] is not None]
    if not have:
        png = _legacy_grid(root, name, [(dirs[m][variant], "latent.png") for m in models], 3)
        return _lines(title, png, LEGACY_NOTE if png else "")
    cols = min(3, len(have))
    rows = -(-len(have) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 0.8, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    sc = None
    for ax, m in zip(axes.flat, have):
        d = data[m]
        emb = d["emb"]
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=d["labels"], cmap="tab10", vmin=-0.5, vmax=9.5, s=1.2, alpha=0.7,
                        rasterized=True)
        ax.set_axis_on()
        if bool(d["umap"]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel("UMAP 1", fontsize=8), ax.set_ylabel("UMAP 2", fontsize=8)
        else:
            ax.tick_params(labelsize=8)
            ax.set_xlabel("code value z1", fontsize=8), ax.set_ylabel("code value z2", fontsize=8)
        ax.set_title(f"{m} (seed {int(d['seed'])})", fontsize=9)
    fig.colorbar(sc, ax=axes.ravel().tolist(), ticks=range(10), fraction=0.025, label="digit")
    png = _save(root, f"fig_{name}", fig, emb=np.stack([data[m]["emb"] for m in have]),
                labels=data[have[0]]["labels"], models=np.asarray(have),
                seeds=np.asarray([int(data[m]["seed"]) for m in have]))
    note = ("UMAP coordinates have no common scale, so each panel has its own." if variant == "full" else
            "Each panel keeps its codes' own scale: the plain models' codes span ranges that would flatten the "
            "VAE family's on shared axes.")
    return _lines(title, png, note, [m for m in models if m not in have])


# --------------------------------------------------------------------------- ROC curves
def fig_roc(root: Path, models: Sequence[str], dirs: dict, summary: dict) -> list[str]:
    from sklearn.metrics import roc_curve
    title = "Anomaly ROC curves (n = 2, class 1 unseen; every seed)"
    have = [m for m in models if "anomaly" in dirs[m] and (root / dirs[m]["anomaly"] / "roc.npz").exists()]
    if not have:
        png = _legacy_grid(root, "roc", [(dirs[m]["anomaly"], "roc.png") for m in models if "anomaly" in dirs[m]], 3)
        return _lines(title, png, LEGACY_NOTE if png else "")
    data = {m: np.load(root / dirs[m]["anomaly"] / "roc.npz") for m in have}
    seeds = sorted({int(s) for m in have for s in data[m]["seeds"]})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(seeds)}
    cols = min(3, len(have))
    rows = -(-len(have) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.4), squeeze=False, sharex=True,
                             sharey=True, gridspec_kw=dict(hspace=0.35, wspace=0.15))
    for ax in axes.flat[len(have):]:
        ax.set_axis_off()
    for ax, m in zip(axes.flat, have):
        d = data[m]
        for s, sc, ok in zip(d["seeds"], d["scores"], d["valid"]):
            if ok and np.isfinite(sc).all():
                fpr, tpr, _ = roc_curve(d["positive"], sc)
                ax.plot(fpr, tpr, lw=0.9, color=colours[int(s)])
        ax.plot([0, 1], [0, 1], "k:", lw=0.7)
        mean, std = _mean_std(summary, m, "anomaly_auc")
        ax.set_title(f"{m}: AUC {mean:.3f} ± {std:.3f}", fontsize=9)
        ax.tick_params(labelsize=8, labelbottom=True, labelleft=True)
    for ax in axes[-1, :]:
        ax.set_xlabel("false positive rate", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("true positive rate", fontsize=8)
    from matplotlib.lines import Line2D
    fig.legend([Line2D([], [], color=colours[s]) for s in seeds], [f"seed {s}" for s in seeds], loc="lower center",
               ncol=len(seeds), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.12 / rows + 0.05)
    png = _save(root, "fig_roc", fig, models=np.asarray(have),
                scores=np.stack([data[m]["scores"].astype(np.float32) for m in have]),
                positive=data[have[0]]["positive"], seeds=data[have[0]]["seeds"],
                valid=np.stack([data[m]["valid"] for m in have]))
    return _lines(title, png, missing=[m for m in models if m not in have])


# --------------------------------------------------------------------------- label-budget curves
def budget_curves(summary: dict, names: Sequence[str]) -> tuple[list[int], dict[str, np.ndarray]]:
    """(budgets, {name: values [B, R] (NaN where missing)}) from the probe_accuracy_<k>labels entries."""
    import re
    budgets = sorted({int(g.group(1)) for n in names for k in summary.get(n, {})
                      if (g := re.fullmatch(r"probe_accuracy_(\d+)labels", k))})
    out = {}
    for n in names:
        rows = [summary.get(n, {}).get(f"probe_accuracy_{b}labels") for b in budgets]
        if not any(rows):
            continue
        r = max(len(e["values"]) for e in rows if e)
        out[n] = np.asarray([[np.nan if v is None else v for v in e["values"]] if e else [np.nan] * r for e in rows],
                            np.float64)
    return budgets, out


def fig_label_budget(root: Path, models: Sequence[str], baselines: Sequence[str], summary: dict) -> list[str]:
    title = "Test accuracy against the number of labels (mean ± std over seeds)"
    budgets, curves = budget_curves(summary, list(models) + list(baselines))
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    # every model its own colour and marker (tab10 without its grey, then tab20's darker shades); the baselines
    # black, dashed and dotted; each series shifted sideways a little so equal accuracies stay apart
    palette = [c for j, c in enumerate(plt.get_cmap("tab10").colors) if j != 7] + list(plt.get_cmap("Dark2").colors)
    markers = "osD^vP*Xhp<>"
    n_series = len(curves)
    for i, (n, v) in enumerate(curves.items()):
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(v, 1)
            std = np.asarray([np.std(r[np.isfinite(r)], ddof=1) if np.isfinite(r).sum() > 1 else 0.0 for r in v])
        base = n in baselines
        colour = "black" if base else palette[i % len(palette)]
        x = np.asarray(budgets, float) * 1.02 ** (i - (n_series - 1) / 2)  # at most ±10 % of a budget
        ax.errorbar(x, mean, yerr=std, ls=(("--" if n == baselines[0] else ":") if base else "-"),
                    marker=markers[i % len(markers)], ms=4, lw=1.2, color=colour, capsize=2, elinewidth=0.8,
                    label=f"{n} (baseline)" if base else n)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (class-balanced, nested)", fontsize=8)
    ax.set_ylabel("test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    names = list(curves)
    width = max(v.shape[1] for v in curves.values())
    values = np.full((len(names), len(budgets), width), np.nan)
    for i, n in enumerate(names):
        values[i, :, :curves[n].shape[1]] = curves[n]
    png = _save(root, "fig_label_budget", fig, budgets=np.asarray(budgets), names=np.asarray(names), values=values,
                baseline=np.asarray([n in baselines for n in names]))
    return _lines(title, png, "Solid: linear probe on each model's frozen codes; dashed and dotted: the baselines "
                              "(no autoencoder). Bars: ± one std over seeds. Each series is shifted sideways a "
                              "little so that models with equal accuracy stay apart; the points "
                              "are at the budgets on the axis.")
