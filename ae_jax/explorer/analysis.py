"""The training set's codes: violins for the page, range tables, and a PCA scatter per model.

Codes are the encoder's outputs (the mean mu for the VAE family) of every
training image, per model and seed: arrays [S, N, n].
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import aggregate, atomic_write_bytes, fmt_mean_std

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
VIOLIN_POINTS = 64
KDE_SAMPLE = 4000


def kde_on_grid(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of 1-D values at the grid points, bandwidth by Silverman's rule of thumb.

    h = 1.06 * std * m^(-1/5) for m values; density(g) = mean_i N(g; values_i, h^2).
    """
    v = np.asarray(values, np.float64)
    std = v.std()
    h = 1.06 * std * len(v) ** (-0.2) if std > 0 else max(abs(float(v.mean())), 1.0) * 1e-3
    u = (grid[:, None] - v[None, :]) / h
    return np.exp(-0.5 * u * u).mean(1) / (h * np.sqrt(2 * np.pi))


def code_summary(codes: np.ndarray, points: int = VIOLIN_POINTS, sample: int = KDE_SAMPLE, seed: int = 0) -> dict:
    """What the page needs about one seed's training codes [N, n].

    violins: per dimension a grid of ``points`` values from its 0.1 to its
    99.9 percentile ("lo", "hi") and the kernel density there, scaled to a
    maximum of 1 (``density`` [n, points]; estimated from at most ``sample``
    codes drawn with a fixed seed). train_range: [min lo, max hi] over the
    dimensions. pct: the 1 and 99 percentiles per dimension.
    """
    codes = np.asarray(codes, np.float64)
    rng = np.random.default_rng(seed)
    sub = codes[rng.choice(len(codes), size=min(sample, len(codes)), replace=False)]
    lo = np.percentile(codes, 0.1, axis=0)
    hi = np.percentile(codes, 99.9, axis=0)
    dens = []
    for d in range(codes.shape[1]):
        g = np.linspace(lo[d], hi[d], points) if hi[d] > lo[d] else np.linspace(lo[d] - 0.5, hi[d] + 0.5, points)
        k = kde_on_grid(sub[:, d], g)
        dens.append(np.round(k / k.max(), 4) if k.max() > 0 else np.zeros(points))
        lo[d], hi[d] = g[0], g[-1]
    return {"violins": {"lo": lo.tolist(), "hi": hi.tolist(), "density": np.array(dens).tolist()},
            "train_range": [float(lo.min()), float(hi.max())],
            "pct": {"p1": np.percentile(codes, 1, axis=0).tolist(), "p99": np.percentile(codes, 99, axis=0).tolist()}}


def _stats(v: np.ndarray) -> dict:
    """min, max and PERCENTILES of v (any shape, flattened)."""
    v = np.asarray(v, np.float64).ravel()
    out = {"min": float(v.min()), "max": float(v.max())}
    out.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
    return out


STAT_KEYS = ("min",) + tuple(f"p{p}" for p in PERCENTILES) + ("max",)


def range_table(codes: Mapping[str, np.ndarray], seeds: Sequence[int],
                shown: Mapping[str, np.ndarray] | None = None,
                original: Mapping[str, tuple[float, float]] | None = None) -> dict:
    """Per model: per seed and dimension, min / percentiles / max of the training codes, and over seeds.

    codes[model]: [S, N, n]; shown[model]: [S, k, n], the codes of the inputs
    shown on the page. Dimensions of different seeds are unrelated, so the
    over-seed means (mean ± std, sample std) are of the values pooled over all
    dimensions ("all dimensions"), and of the dimensions ranked by their 1-99
    percentile spread within each seed ("by_spread": index 0 = the widest, the README's rank 1).
    """
    out = {"percentiles": list(PERCENTILES), "models": {}}
    for name, c in codes.items():
        c = np.asarray(c)
        per_seed, ranked = [], []
        for i, s in enumerate(seeds):
            dims = [_stats(c[i, :, d]) for d in range(c.shape[2])]
            entry = {"seed": int(s), "dims": dims, "all": _stats(c[i])}
            if shown is not None:
                entry["shown_inputs"] = [float(np.min(shown[name][i])), float(np.max(shown[name][i]))]
            per_seed.append(entry)
            ranked.append(sorted(dims, key=lambda st: st["p1"] - st["p99"]))
        over = {"all": {k: aggregate([e["all"][k] for e in per_seed]) for k in STAT_KEYS},
                "by_spread": [{k: aggregate([r[d][k] for r in ranked]) for k in STAT_KEYS}
                              for d in range(c.shape[2])]}
        if shown is not None:
            over["shown_inputs"] = {"lo": aggregate([e["shown_inputs"][0] for e in per_seed]),
                                    "hi": aggregate([e["shown_inputs"][1] for e in per_seed])}
        model = {"seeds": [int(s) for s in seeds], "per_seed": per_seed, "over_seeds": over}
        if original is not None and name in original:
            model["original_shown_range"] = list(original[name])
        out["models"][name] = model
    return out


def ranges_markdown(table: dict, labels: Mapping[str, str] | None = None) -> str:
    """Markdown tables of range_table's over-seed values (mean ± std over seeds)."""
    labels = labels or {}
    head = "| model | " + " | ".join(STAT_KEYS) + " |\n|---|" + "---|" * len(STAT_KEYS) + "\n"
    lines = ["Training-set codes, all dimensions pooled (mean ± std over seeds):", "", head.rstrip("\n")]
    for name, m in table["models"].items():
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(
            fmt_mean_std(m["over_seeds"]["all"][k], 3) for k in STAT_KEYS) + " |")
    lines += ["", "Per dimension, ranked within each seed by its 1-99 % spread (rank 1 = widest; "
              "mean ± std over seeds):", "", ("| model | rank | " + " | ".join(STAT_KEYS) + " |"),
              "|---|---|" + "---|" * len(STAT_KEYS)]
    for name, m in table["models"].items():
        for d, st in enumerate(m["over_seeds"]["by_spread"]):
            lines.append(f"| {labels.get(name, name)} | {d + 1} | " + " | ".join(
                fmt_mean_std(st[k], 3) for k in STAT_KEYS) + " |")
    return "\n".join(lines) + "\n"


def pca_2d(codes: np.ndarray) -> dict:
    """PCA of codes [N, n] by SVD of the centred codes: {"pc" [N, 2], "components" [2, n], "explained" [2], "mean" [n]}.

    ``explained`` is each component's fraction of the total variance; with n = 1
    the second component is zero.
    """
    c = np.asarray(codes, np.float64)
    mean = c.mean(0)
    _, s, vt = np.linalg.svd(c - mean, full_matrices=False)
    var = s**2
    comps = np.zeros((2, c.shape[1]))
    k = min(2, vt.shape[0])
    comps[:k] = vt[:k]
    explained = np.zeros(2)
    explained[:k] = var[:k] / var.sum() if var.sum() > 0 else 0
    return {"pc": ((c - mean) @ comps.T).astype(np.float32), "components": comps, "explained": explained, "mean": mean}


def pca_figure(codes: Mapping[str, np.ndarray], labels: np.ndarray, png_path: Path, npz_path: Path,
               titles: Mapping[str, str] | None = None, max_points: int = 20000) -> dict:
    """One scatter per model of its codes' first two principal components, coloured by digit.

    Writes png_path and npz_path ("labels" [N] and, per model, "<model>_pc"
    [N, 2], "<model>_components" [2, n], "<model>_explained" [2],
    "<model>_mean" [n]); at most ``max_points`` points (a fixed subset) are
    drawn. Returns the PCA per model.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = titles or {}
    pcas = {name: pca_2d(c) for name, c in codes.items()}
    arrays = {"labels": np.asarray(labels)}
    for name, p in pcas.items():
        arrays.update({f"{name}_{k}": v for k, v in p.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(npz_path, buf.getvalue())

    n_panels = len(pcas)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.0 * n_panels + 0.8, 4.6), squeeze=False, layout="constrained")
    idx = np.random.default_rng(0).permutation(len(labels))[:max_points]
    for ax, (name, p) in zip(axes[0], pcas.items()):
        sc = ax.scatter(p["pc"][idx, 0], p["pc"][idx, 1], c=np.asarray(labels)[idx], cmap="tab10", vmin=-0.5,
                        vmax=9.5, s=2 if len(idx) > 5000 else 6, alpha=0.5, linewidths=0, rasterized=True)
        ax.set_title(titles.get(name, name), fontsize=11)
        ax.set_xlabel(f"PC1 ({100 * p['explained'][0]:.0f} % of variance)")
        ax.set_ylabel(f"PC2 ({100 * p['explained'][1]:.0f} % of variance)")
        ax.axhline(0, color="#ccc", lw=0.6, zorder=0)
        ax.axvline(0, color="#ccc", lw=0.6, zorder=0)
        ax.set_aspect("equal", adjustable="datalim")
    cb = fig.colorbar(sc, ax=list(axes[0]), ticks=range(10), fraction=0.03)
    cb.set_label("digit")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
    return pcas


def _widths(model: dict, kind: str) -> list[float]:
    """Per seed: the width of the shown inputs' code range, or of the training codes' 1-99 % range."""
    if kind == "shown":
        return [e["shown_inputs"][1] - e["shown_inputs"][0] for e in model["per_seed"]]
    return [e["all"]["p99"] - e["all"]["p1"] for e in model["per_seed"]]


SCALE_REASON = ("not testable here: the decoder's first layer is Linear without bias followed by BatchNorm, so "
                "training cannot see a rescaling or shift of the AE's code, and its range is whatever the "
                "initialisation left, not a property of AEs; and the two models differ in width (the VAE's "
                "encoder outputs 2n), where the article compares identical architectures")


def claims_markdown(table: dict, ae: str = "vanilla", vae: str = "vae") -> str:
    """The original article's claims about the AE's and the VAE's code ranges, set against range_table's values.

    The widths are compared by a paired t-test over seeds (the two are trained
    on the same seeds, so seed s of one and seed s of the other share their
    minibatch order), shown for reference; the verdict is "not testable here"
    (``SCALE_REASON``): under this architecture the AE's code scale is not
    identified, so no width of its range can confirm or refute a claim about
    AEs. "" when either model is not in the table.
    """
    from ..studies.report import NOT_TESTABLE, SIGNIFICANCE, Part, p_text, paired, verdict_cell
    models = table["models"]
    if ae not in models or vae not in models:
        return ""
    lines = ["## The article's claims, checked", "",
             f"Each width is per seed, mean ± std over seeds; AE ({ae}) against VAE ({vae}) with a paired t-test "
             f"over seeds (significant at p < {SIGNIFICANCE}). The widths are shown, but they cannot decide a "
             "claim about the range of an AE's code here: " + SCALE_REASON.split(": ", 1)[1] + ". A test would "
             "need models whose code scale is identified (e.g. no BatchNorm next to the code, at equal widths).",
             "", "| claim | the article | ours: AE vs VAE | verdict |", "|---|---|---|---|"]
    checks = [("shown", "over the shown inputs, the AE's codes span a far wider range than the VAE's",
               "widths of the ranges over the shown inputs"),
              ("train", "the AE's training codes are spread out, the VAE's packed around the origin",
               "widths of the training codes' 1-99 % range, all dimensions pooled")]
    orig = {m: models[m].get("original_shown_range") for m in (ae, vae)}
    for kind, claim, what in checks:
        if kind == "shown" and not all("shown_inputs" in e for m in (ae, vae) for e in models[m]["per_seed"]):
            continue  # a table built without the page's inputs
        a, b = _widths(models[ae], kind), _widths(models[vae], kind)
        p = paired(a, b)
        article = "—"
        if kind == "shown" and all(orig.values()):
            wa, wb = (orig[m][1] - orig[m][0] for m in (ae, vae))
            article = f"{wa:.2f} vs {wb:.2f} ({wa / wb:.1f}×)"
        ours = (f"{fmt_mean_std(aggregate(a), 3)} vs {fmt_mean_std(aggregate(b), 3)} "
                f"({np.mean(a) / np.mean(b):.2f}×; {p_text('paired t-test', p)})")
        verdict = verdict_cell([Part("the whole claim", NOT_TESTABLE, "the AE's code scale is not identified")])
        lines.append(f"| {claim} ({what}) | {article} | {ours} | {verdict} |")
    lines += ["| an AE with two latent values reconstructs about as well as the VAE with four | stated, no figure | this "
              "study trains no AE at n = 2 with the explorer's loss; the latent-size sweep "
              "(`experiments/latent_sweep.py`) compares the two across n | "
              + verdict_cell([Part("the whole claim", NOT_TESTABLE, "no n = 2 AE with the explorer's loss here; "
                                   "see latent_sweep")]) + " |", ""]
    return "\n".join(lines)
