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
    dimensions. pct: the 1 and 99 percentiles per dimension. mean, std: per
    dimension (std with ddof 1); cov_inv: the inverse (pseudo-inverse) of the
    codes' covariance [n, n], for ``mahalanobis``.
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
    centre, cov = codes.mean(0), np.atleast_2d(np.cov(codes, rowvar=False))
    return {"violins": {"lo": lo.tolist(), "hi": hi.tolist(), "density": np.array(dens).tolist()},
            "train_range": [float(lo.min()), float(hi.max())],
            "pct": {"p1": np.percentile(codes, 1, axis=0).tolist(), "p99": np.percentile(codes, 99, axis=0).tolist()},
            "mean": centre.tolist(), "std": codes.std(0, ddof=1).tolist(), "cov_inv": np.linalg.pinv(cov).tolist()}


def _stats(v: np.ndarray) -> dict:
    """min, max and PERCENTILES of v (any shape, flattened)."""
    v = np.asarray(v, np.float64).ravel()
    out = {"min": float(v.min()), "max": float(v.max())}
    out.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
    return out


def mahalanobis(codes: np.ndarray, train_codes: np.ndarray) -> np.ndarray:
    """Each code's distance from the training codes' mean in the training codes' own units [k].

    d(z) = sqrt((z - m)^T C^-1 (z - m)), m and C the mean and covariance of
    train_codes [N, n] (pseudo-inverse where C is singular). Any invertible
    affine map of the code (z -> A z + b) leaves it unchanged, so it is
    comparable between models whose code scale, offset or mixing is arbitrary.
    """
    t = np.asarray(train_codes, np.float64)
    c = np.asarray(codes, np.float64) - t.mean(0)
    inv = np.linalg.pinv(np.atleast_2d(np.cov(t, rowvar=False)))
    return np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", c, inv, c), 0))


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
    With ``shown``, each seed also has "shown_inputs" ([min, max] over the
    shown codes) and "shown_mahalanobis" (each shown code's ``mahalanobis``
    distance), and the over-seed part "farthest_mahalanobis" (the largest one
    per seed, aggregated).
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
                entry["shown_mahalanobis"] = mahalanobis(shown[name][i], c[i]).tolist()
            per_seed.append(entry)
            ranked.append(sorted(dims, key=lambda st: st["p1"] - st["p99"]))
        over = {"all": {k: aggregate([e["all"][k] for e in per_seed]) for k in STAT_KEYS},
                "by_spread": [{k: aggregate([r[d][k] for r in ranked]) for k in STAT_KEYS}
                              for d in range(c.shape[2])]}
        if shown is not None:
            over["shown_inputs"] = {"lo": aggregate([e["shown_inputs"][0] for e in per_seed]),
                                    "hi": aggregate([e["shown_inputs"][1] for e in per_seed])}
            over["farthest_mahalanobis"] = aggregate([max(e["shown_mahalanobis"]) for e in per_seed])
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
    """Per seed: the width of the shown inputs' code range, or of the training codes' 1-99 % range (raw units)."""
    if kind == "shown":
        return [e["shown_inputs"][1] - e["shown_inputs"][0] for e in model["per_seed"]]
    return [e["all"]["p99"] - e["all"]["p1"] for e in model["per_seed"]]


# Why a raw code range says nothing about the AE here: the decoder's first layer has no bias and BatchNorm follows
# it, so z -> A z + b (undone by that layer's weights; BatchNorm removes the shift) leaves every output unchanged.
UNIDENTIFIED = ("the AE's raw code values are arbitrary here: the decoder's first layer is Linear without bias "
                "followed by BatchNorm, so scaling, shifting or mixing the code (undone by that layer's weights) "
                "changes nothing the loss sees")
VERDICTS = ("confirmed", "refuted", "not shown", "not testable here")


def verdict_of(a: Sequence[float], b: Sequence[float], p: float) -> str:
    """The verdict on "a is larger than b" from per-seed values and a test's p: confirmed (a above, p < 0.05),
    refuted (a below, p < 0.05), not shown (p >= 0.05), not testable here (no test possible)."""
    from ..studies.report import SIGNIFICANCE
    if not np.isfinite(p):
        return "not testable here"
    if p >= SIGNIFICANCE:
        return "not shown"
    return "confirmed" if np.mean(a) > np.mean(b) else "refuted"


def claims(table: dict, ae: str = "vanilla", vae: str = "vae", hidden: Mapping[str, str] | None = None) -> list[dict]:
    """The original article's claims about the AE's and the VAE's codes, each with a verdict on range_table's values.

    Rows {"claim", "measure", "article", "ours", "verdict", "why"}; verdicts are
    VERDICTS. A claim about raw code ranges is "not testable here" (see
    UNIDENTIFIED); its form in identified units, the farthest shown input's
    Mahalanobis distance from the training codes' mean, is a paired t-test over
    seeds (seed s of both models shares its minibatch order): confirmed when the
    AE's is significantly larger, refuted when significantly smaller, else not
    shown. ``hidden`` gives each model's hidden widths as text (the two encoders
    differ: the VAE's also outputs log sigma). [] when either model is missing.
    """
    from ..studies.report import SIGNIFICANCE, p_text, paired
    models = table["models"]
    if ae not in models or vae not in models:
        return []
    a_m, v_m = models[ae], models[vae]
    n_seeds = len(a_m["per_seed"])
    why_raw = UNIDENTIFIED + (f"; and the two encoders differ in width ({hidden[ae]} against {hidden[vae]} hidden "
                              "units)" if hidden and ae in hidden and vae in hidden else "")

    def cmp(a, b, digits=3):
        p = paired(a, b)
        ratio = f"{np.mean(a) / np.mean(b):.2f}×" if np.mean(b) else "—"
        return (f"{fmt_mean_std(aggregate(a), digits)} vs {fmt_mean_std(aggregate(b), digits)} "
                f"({ratio}; {p_text('paired t-test', p)})"), p

    rows = []
    shown = all("shown_inputs" in e for m in (a_m, v_m) for e in m["per_seed"])
    if shown:
        orig = [models[m].get("original_shown_range") for m in (ae, vae)]
        article = "—"
        if all(orig):
            wa, wb = (o[1] - o[0] for o in orig)
            article = f"{wa:.2f} vs {wb:.2f} ({wa / wb:.1f}×)"
        a, b = _widths(a_m, "shown"), _widths(v_m, "shown")
        rows.append({"claim": "over the shown inputs, the AE's codes span a far wider range than the VAE's",
                     "measure": "width of the range of the shown inputs' codes, raw code units",
                     "article": article, "ours": cmp(a, b)[0] + ", not comparable",
                     "verdict": "not testable here", "why": why_raw})
        a = [max(e["shown_mahalanobis"]) for e in a_m["per_seed"]]
        b = [max(e["shown_mahalanobis"]) for e in v_m["per_seed"]]
        ours, p = cmp(a, b)
        verdict = verdict_of(a, b, p)
        why = {"confirmed": f"the AE's is significantly larger (p < {SIGNIFICANCE})",
               "refuted": f"the VAE's is significantly larger (p < {SIGNIFICANCE})",
               "not shown": f"the difference is not significant (p ≥ {SIGNIFICANCE}), so it neither holds nor fails",
               "not testable here": f"no test is possible with {n_seeds} seed(s) or no spread across seeds"}[verdict]
        rows.append({"claim": "the same in units this architecture pins down: the shown inputs' codes reach farther "
                              "out from the training codes for the AE than for the VAE",
                     "measure": "the farthest shown input's Mahalanobis distance from the training codes' mean "
                                "(in the training codes' own standard deviations; no affine change of the code "
                                "alters it)",
                     "article": "—", "ours": ours, "verdict": verdict,
                     "why": why + "; confirmed needs the AE's significantly larger, refuted the VAE's"})
    a, b = _widths(a_m, "train"), _widths(v_m, "train")
    rows.append({"claim": "the AE's training codes are spread out, the VAE's packed around the origin",
                 "measure": "width of the training codes' 1-99 % range, all dimensions pooled, raw code units",
                 "article": "—", "ours": cmp(a, b)[0] + ", not comparable", "verdict": "not testable here",
                 "why": why_raw + "; in units it pins down every dimension's spread is 1 and the AE's origin is "
                                  "arbitrary"})
    rows.append({"claim": "an AE with two latent values reconstructs about as well as the VAE with four",
                 "measure": "reconstruction of an AE at n = 2 against the VAE at n = 4", "article": "stated, no figure",
                 "ours": "—", "verdict": "not testable here",
                 "why": "the explorer trains no AE at n = 2; the latent-size sweep (`experiments/latent_sweep.py`) "
                        "compares the two across n"})
    return rows


def claims_markdown(table: dict, ae: str = "vanilla", vae: str = "vae", hidden: Mapping[str, str] | None = None) -> str:
    """``claims`` as a markdown section ("" when either model is missing)."""
    from ..studies.report import SIGNIFICANCE
    rows = claims(table, ae, vae, hidden)
    if not rows:
        return ""
    lines = ["## The article's claims, checked", "",
             f"AE ({ae}) against VAE ({vae}), each value per seed, mean ± std over seeds, paired t-test over seeds. "
             f"A claim is confirmed when its measure is significantly larger for the AE (p < {SIGNIFICANCE}), "
             "refuted when significantly smaller, not shown when the test is not significant; a claim about raw "
             "code values is not testable here (the reason is in its row).", "",
             "| claim | measure | the article | ours: AE vs VAE | verdict | why |", "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] in ("confirmed", "refuted") else r["verdict"]
        lines.append(f"| {r['claim']} | {r['measure']} | {r['article']} | {r['ours']} | {verdict} | {r['why']} |")
    return "\n".join(lines + [""])
