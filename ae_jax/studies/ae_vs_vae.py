"""Plain autoencoder, VAE and conditional VAE compared (docs/studies.md, part A).

Plan: ``vanilla``, ``vae`` and ``cvae``, all trained with the MSE loss on the
full split, at n = 20 (reconstruction, decoded prior, codes in 2-D, latent
arithmetic) and at n = 2 (reconstruction, latent plane); plus one program
training the n = 2 VAE with β = 0 and β = 1 side by side, which keeps the
codes of the first SNAPSHOTS test images after every epoch (the latent
dynamics). Summary: ``{"<model>_n<n>": {metric: {mean, std, values}}}``, the
β runs as "vae_beta0_n2" and "vae_beta1_n2".

The report (``<results>/ae_vs_vae/README.md``) draws every figure from arrays
the tasks and the trainer saved in the run folders (``*.npz``), and saves each
figure's own arrays beside it under the same stem, so it can be redrawn on a
clone where the checkpoints are gone.
"""
from __future__ import annotations

import math
import platform
from pathlib import Path

import jax
import numpy as np

from .. import figures
from ..io import aggregate, atomic_write_text, fmt_mean_std, write_npz
from ..models import NUM_CLASSES, label as model_label
from ..models.gaussian import moments
from ..trainer import ExperimentConfig
from ..trainer.folder import SNAPSHOTS_FILE
from ..trainer.results import device_text
from .driver import PlannedRun, RunResult, Study, StudyOptions
from .report import (CONFIRMED, NOT_SHOWN, NOT_TESTABLE, PAIRED_NAME, SIGNIFICANCE, WELCH_NAME, Part, _fmt,
                     binomial_below, compare, contrast, directional, overall, p_text, pairs_note, provenance_notes,
                     run_pair_key, significantly_above, task_table, threshold, verdict_cell)

MODELS = ("vanilla", "vae", "cvae")
N_BIG, N_PLANE = 20, 2
BIG_TASKS = ("reconstruction", "decoded_prior", "codes_2d", "arithmetic")
# the CVAE's samples also go to the reference classifier, which reads off the digit each was asked for
CVAE_TASKS = BIG_TASKS + ("sample_quality",)
PLANE_TASKS = ("reconstruction", "latent_plane")
BETAS = (0.0, 1.0)
SNAPSHOTS = 1000


def run_key(cfg: ExperimentConfig, beta: float | None = None) -> str:
    """The summary key of a run (group): "<model>_n<n>", or "vae_beta<β>_n2" for a group of the β run."""
    return f"{cfg.model}_n{cfg.latent}" if beta is None else f"{cfg.model}_beta{beta:g}_n{cfg.latent}"


class AeVsVae(Study):
    name = "ae_vs_vae"
    folder = "ae_vs_vae"

    def plan(self, opts: StudyOptions) -> list[PlannedRun]:
        def cfg(model, n, **kw):
            return ExperimentConfig(model=model, dataset=opts.dataset, latent_dim=n, loss="mse", seeds=opts.seeds,
                                    epochs=opts.epochs, **kw)
        return ([PlannedRun(cfg(m, N_BIG), CVAE_TASKS if m == "cvae" else BIG_TASKS) for m in MODELS]
                + [PlannedRun(cfg(m, N_PLANE), PLANE_TASKS) for m in MODELS]
                + [PlannedRun(cfg("vae", N_PLANE, betas=BETAS, snapshots=SNAPSHOTS), ())])

    def summarize(self, results: list[RunResult], baselines: dict[str, dict]) -> dict:
        summary: dict[str, dict] = {}
        for r in results:
            cfg = r.planned.cfg
            if cfg.betas is None:
                summary[run_key(cfg)] = r.entry()
                continue
            snap = snapshot_metrics(r)
            for g in r.metrics["groups"]:
                entry = {k: {"mean": v["mean"], "std": v["std"], "values": v["values"]}
                         for k, v in g["metrics"].items()}
                entry.update(snap.get(g["beta"], {}))
                summary[run_key(cfg, g["beta"])] = entry
        return summary

    def report(self, out_dir: Path, summary: dict, results: list[RunResult], opts: StudyOptions,
               session_s: float) -> None:
        runs = {run_key(r.planned.cfg) if r.planned.cfg.betas is None else "betas": r for r in results}
        add_judged(out_dir, summary, runs, opts)
        write_report(out_dir, summary, runs, opts, session_s)

    def headline(self, summary: dict) -> str:
        rows = [("run", "test MSE", "test BCE")]
        rows += [(k, fmt_mean_std(e["test_mse"]), fmt_mean_std(e["test_bce"])) for k, e in summary.items()
                 if "test_mse" in e]
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


# --------------------------------------------------------------------------- latent dynamics (claim 7)
def _valid_runs(r: RunResult) -> np.ndarray:
    """[R] False for runs (of metrics.json's "runs") whose training diverged."""
    ok = np.ones(len(r.metrics["runs"]), bool)
    for d in r.metrics.get("diverged", []):
        ok[d["run"]] = False
    return ok


def snapshot_metrics(r: RunResult) -> dict[float, dict]:
    """{beta: {metric: {mean, std, values}}} from the last epoch's snapshot codes μ of each seed.

    ``snap_rms_mu``: sqrt(mean ‖μ‖²) over the K images (how far from the
    origin the codes sit); ``snap_isotropy``: sqrt(λ_min / λ_max) of the μ's
    2 x 2 covariance (1: a round cloud); ``snap_knn_accuracy``: 5-fold 5-NN
    accuracy of the digits from μ (do the digits form clusters).
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    path = r.run_dir / SNAPSHOTS_FILE
    if not path.exists():
        return {}
    snap = np.load(path)
    mu = np.asarray(moments(np.asarray(snap["h"][-1], np.float64))[0])           # [R, K, 2]
    y, ok = snap["labels"], _valid_runs(r)
    per_run = {"snap_rms_mu": [], "snap_isotropy": [], "snap_knn_accuracy": []}
    for i in range(mu.shape[0]):
        m = mu[i]
        if not ok[i] or not np.isfinite(m).all():
            for v in per_run.values():
                v.append(float("nan"))
            continue
        lam = np.linalg.eigvalsh(np.cov(m.T))
        per_run["snap_rms_mu"].append(float(np.sqrt((m ** 2).sum(1).mean())))
        per_run["snap_isotropy"].append(float(np.sqrt(max(lam[0], 0.0) / lam[1])) if lam[1] > 0 else float("nan"))
        folds = min(5, int(np.bincount(y).min())) if len(y) else 0
        acc = cross_val_score(KNeighborsClassifier(5), m, y, cv=folds).mean() if folds >= 2 else float("nan")
        per_run["snap_knn_accuracy"].append(float(acc))
    runs = r.metrics["runs"]
    out = {}
    for b in dict.fromkeys(run["beta"] for run in runs):
        idx = [i for i, run in enumerate(runs) if run["beta"] == b]
        out[b] = {k: _msv([v[i] for i in idx]) for k, v in per_run.items()}
    return out


def _msv(values) -> dict:
    a = aggregate(values)
    return {"mean": a["mean"], "std": a["std"], "values": a["values"]}


# --------------------------------------------------------------------------- judged by the reference classifier
LEGIBLE = 0.9  # a decode is legible when the reference classifier gives one digit at least this probability


def _entry(values, seeds, source: str) -> dict:
    e = _msv(values)
    e.update(seeds=[int(s) for s in seeds], source=source)
    return e


def add_judged(out_dir: Path, summary: dict, runs: dict, opts: StudyOptions) -> None:
    """Add what the reference classifier reads in the runs' saved decodes (``judge_saved``) to the summary, and
    rewrite ``summary.json`` with them. The classifier is the results root's (trained there if missing)."""
    from ..data import load_splits
    from ..io import write_json
    from ..tasks.classifier import get_reference_classifier
    from ..tasks.reference import REFERENCE_DIR
    splits = load_splits(opts.dataset, "full", opts.data_dir)
    ref = get_reference_classifier(opts.dataset, splits, opts.root / REFERENCE_DIR, command=opts.command)
    for key, extra in judge_saved(runs, ref, splits.y_test).items():
        summary.setdefault(key, {}).update(extra)
    write_json(out_dir / "summary.json", summary)


def judge_saved(runs: dict, ref, y_test: np.ndarray) -> dict[str, dict]:
    """{summary key: {metric: entry}}: what the reference classifier reads in decodes the runs saved.

    - ``prior_ref_legible`` / ``prior_ref_classes`` (every seed, ``decoded_prior.npz``): the fraction of the
      N(0, I) decodes the classifier reads with probability ≥ LEGIBLE, and how many digits those show;
    - ``plane_ref_legible`` / ``plane_ref_classes`` (the figure seed's grid, ``latent_plane.npz``), and for a
      conditional model ``plane_ref_label`` (decodes read as the plane's label);
    - ``arith_digit_kept``, ``arith_digit_conf``, ``arith_digit_kept_w<w>`` (the figure seed's rows,
      ``arithmetic.npz``; ``tasks.arithmetic.digit_kept``), with ``arith_digit_counts`` (kept, decodes) at
      |w| = 2, where the run's task did not already record them for every seed.

    Entries carry ``seeds`` (which seeds were judged) and ``source``; a figure seed's entry has one value.
    """
    from ..tasks.arithmetic import digit_kept
    out: dict[str, dict] = {}
    for key, r in runs.items():
        if key == "betas":
            continue
        e: dict[str, dict] = {}
        d = _load(r, "decoded_prior.npz")
        if d is not None:
            imgs = d["images"]                                                      # [S, 10, k, 32, 32]
            ok = [i for i in range(imgs.shape[0]) if np.isfinite(imgs[i]).all()]
            leg, cls = [], []
            for i in ok:
                pr = ref.probs(imgs[i].reshape(-1, 32, 32))
                good = pr.max(-1) >= LEGIBLE
                leg.append(float(good.mean()))
                cls.append(float(len(set(pr.argmax(-1)[good].tolist()))))
            seeds = [int(d["seeds"][i]) for i in ok]
            e["prior_ref_legible"] = _entry(leg, seeds, "every seed's N(0, I) decodes")
            e["prior_ref_classes"] = _entry(cls, seeds, "every seed's N(0, I) decodes")
        d = _load(r, "latent_plane.npz")
        if d is not None:
            imgs, labs = d["images"], d["plane_labels"]                             # [P, G, G, 32, 32]
            pr = ref.probs(imgs.reshape(-1, 32, 32)).reshape(len(labs), -1, 10)
            good = pr.max(-1) >= LEGIBLE
            src, seed = "the figure seed's grid (the other seeds' grids were not saved)", [int(d["seed"])]
            e["plane_ref_legible"] = _entry([float(good.mean())], seed, src)
            if labs[0] < 0:
                e["plane_ref_classes"] = _entry([float(len(set(pr[0].argmax(-1)[good[0]].tolist())))], seed, src)
            else:
                e["plane_ref_label"] = _entry([float((pr.argmax(-1) == labs[:, None]).mean())], seed, src)
        d = _load(r, "arithmetic.npz")
        if d is not None:
            w, imgs = d["weights"], d["images"]                                     # [F, W, 32, 32]
            y = y_test[:imgs.shape[0]]
            pr = ref.probs(imgs.reshape(-1, 32, 32)).reshape(imgs.shape[0], len(w), -1)
            e["arith_reads"] = pr.argmax(-1).tolist()     # [F, W], for the figure
            e["arith_labels"] = [int(v) for v in y]
        if d is not None and "arith_digit_kept" not in r.entry():  # the run's task did not measure every seed
            kept = digit_kept(pr, y, w)
            src = (f"the figure seed's first {imgs.shape[0]} test images (the other seeds' decodes were not saved "
                   "and no checkpoint is kept)")
            seed = [int(d["seed"])]
            for k, v in kept.items():
                e["arith_digit_" + k] = _entry([v], seed, src)
            far = int((np.abs(w) == 2.0).sum()) * imgs.shape[0]
            e["arith_digit_counts"] = {"kept": int(round(kept["kept"] * far)), "n": far, "seeds": seed,
                                       "source": src}
        if e:
            out[key] = e
    return out


# --------------------------------------------------------------------------- figures
def _load(run: RunResult | None, name: str):
    if run is None or not (run.run_dir / name).exists():
        return None
    return np.load(run.run_dir / name)


def _first_finite(a: np.ndarray) -> int:
    """Index of the first seed (leading axis) whose array is all finite (the first valid seed), else 0."""
    for i in range(a.shape[0]):
        if np.isfinite(a[i]).all():
            return i
    return 0


def fig_reconstructions(out: Path, runs: dict) -> str | None:
    data = {m: _load(runs.get(f"{m}_n{N_BIG}"), "reconstructions.npz") for m in MODELS}
    have = [m for m in MODELS if data[m] is not None]
    if not have:
        return None
    x = data[have[0]]["digit_x"]
    recon = np.stack([data[m]["digit_recon"] for m in have])
    write_npz(out / "reconstructions.npz", x=x, recon=recon, models=np.asarray(have),
              index=data[have[0]]["digit_index"], seeds=np.asarray([int(data[m]["seed"]) for m in have]))
    figures.image_rows([x] + list(recon), out / "reconstructions.png",
                       ["test images (the first of each digit)"]
                       + [f"{model_label(m)} (n = {N_BIG}), seed {int(data[m]['seed'])}" for m in have])
    return "reconstructions.png"


def fig_prior(out: Path, runs: dict) -> list[str]:
    data = {m: _load(runs.get(f"{m}_n{N_BIG}"), "decoded_prior.npz") for m in MODELS}
    have = [m for m in MODELS if data[m] is not None]
    made = []
    if have:
        seeds = [_first_finite(data[m]["images"]) for m in have]
        imgs = np.stack([data[m]["images"][s] for m, s in zip(have, seeds)])            # [M, 10, k, 32, 32]
        seed_ids = [int(data[m]["seeds"][s]) for m, s in zip(have, seeds)]
        write_npz(out / "prior_samples.npz", images=imgs, models=np.asarray(have), seeds=np.asarray(seed_ids))
        titles = [f"{model_label(m)}: z ~ N(0, I), seed {s}" + (" (row d: label d)" if m == "cvae" else "")
                  for m, s in zip(have, seed_ids)]
        figures.panels([figures.tile(i, pad=1) for i in imgs], out / "prior_samples.png", titles, size=4.2)
        made.append("prior_samples.png")
    if data["cvae"] is not None:
        imgs = data["cvae"]["images"]                                                     # [S, 10, k, 32, 32]
        write_npz(out / "cvae_samples.npz", images=imgs, seeds=data["cvae"]["seeds"], labels=np.arange(NUM_CLASSES))
        s = _first_finite(imgs)
        figures.image_rows(list(imgs[s]), out / "cvae_samples.png",
                           [f"CVAE (n = {N_BIG}), seed {int(data['cvae']['seeds'][s])}: row d decodes z ~ N(0, I) "
                            "with label d = 0..9"] + [None] * (NUM_CLASSES - 1))
        made.append("cvae_samples.png")
    return made


def fig_latent_plane(out: Path, runs: dict) -> str | None:
    """Top: each model's decoded grid (a conditional model: one per label kept); bottom: each model's test codes
    once, over its first grid's box (a conditional model's codes do not depend on the plane's label)."""
    plt = figures.plt
    panels = []  # (title, image [G*32, G*32], extent, codes, labels, model)
    for m in MODELS:
        d = _load(runs.get(f"{m}_n{N_PLANE}"), "latent_plane.npz")
        if d is None:
            continue
        u, v = d["u"], d["v"]
        step_u, step_v = (u[1] - u[0]) / 2, (v[1] - v[0]) / 2
        extent = (u[0] - step_u, u[-1] + step_u, v[0] - step_v, v[-1] + step_v)
        for p, lab in zip(d["images"], d["plane_labels"]):
            title = f"{model_label(m)}, seed {int(d['seed'])}" + (f", label {lab}" if lab >= 0 else "")
            panels.append((title, figures.tile(p), extent, d["codes"], d["labels"], m))
    if not panels:
        return None
    scatters = [next(p for p in panels if p[5] == m) for m in dict.fromkeys(p[5] for p in panels)]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.0 * len(panels) + 0.8, 8.6), squeeze=False,
                             layout="constrained")
    for j, (title, img, ext, codes, y, m) in enumerate(panels):
        axes[0, j].imshow(img, cmap="gray", vmin=0, vmax=1, extent=ext, interpolation="nearest", aspect="auto")
        axes[0, j].set_title(title, fontsize=9)
        axes[0, j].set_box_aspect(1)
        axes[0, j].set_xlabel("z1", fontsize=8), axes[0, j].set_ylabel("z2", fontsize=8)
        axes[0, j].tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_axis_off()
    for j, (title, img, ext, codes, y, m) in enumerate(scatters):
        ax = axes[1, j]
        ax.set_axis_on()
        sc = ax.scatter(codes[:, 0], codes[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=1.5, alpha=0.6,
                        rasterized=True)
        ax.set_xlim(ext[0], ext[1]), ax.set_ylim(ext[2], ext[3])
        ax.set_box_aspect(1)
        ax.set_title(f"{model_label(m)}: test codes (μ) by digit", fontsize=9)
        ax.set_xlabel("z1", fontsize=8), ax.set_ylabel("z2", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(sc, ax=axes.ravel().tolist(), ticks=range(10), fraction=0.015, shrink=0.45, anchor=(0.0, 0.1)
                 ).set_label("digit of the test image (bottom row)", fontsize=9)
    fig.suptitle(f"n = {N_PLANE}: a regular grid over the latent plane decoded (top; AE over its codes' 0.5-99.5 "
                 "percentile box, VAE and CVAE over [−3, 3]²) and each model's test codes over the same box (bottom)",
                 fontsize=10)
    figures.save(fig, out / "latent_plane.png")
    write_npz(out / "latent_plane.npz", titles=np.asarray([p[0] for p in panels]),
              images=np.stack([p[1] for p in panels]), extents=np.asarray([p[2] for p in panels]),
              codes=np.stack([p[3] for p in panels]), labels=panels[0][4])
    return "latent_plane.png"


def fig_codes(out: Path, runs: dict) -> str | None:
    plt = figures.plt
    data = {m: _load(runs.get(f"{m}_n{N_BIG}"), "codes_2d.npz") for m in MODELS}
    have = [m for m in MODELS if data[m] is not None]
    if not have:
        return None
    seeds = [int(np.argmax(data[m]["seeds"] == data[m]["tsne_seed"])) for m in have]  # the task's figure seed
    pca = np.stack([data[m]["pca"][s] for m, s in zip(have, seeds)])                   # [M, N, 2]
    ratio = np.stack([data[m]["pca_ratio"][s] for m, s in zip(have, seeds)])
    tsne = np.stack([data[m]["tsne"] for m in have])                                   # [M, T, 2]
    y, yt = data[have[0]]["labels"], data[have[0]]["labels"][data[have[0]]["tsne_index"]]
    fig, axes = plt.subplots(3, len(have), figsize=(4.4 * len(have) + 0.8, 13.5), squeeze=False,
                             layout="constrained")
    for j, m in enumerate(have):
        sd = int(data[m]["tsne_seed"])
        ax = axes[0, j]
        sc = ax.scatter(pca[j, :, 0], pca[j, :, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=1, alpha=0.5,
                        rasterized=True)
        ax.set_title(f"{model_label(m)} (n = {N_BIG}), seed {sd}: PCA of the test codes\n"
                     f"PC1 {ratio[j, 0]:.0%}, PC2 {ratio[j, 1]:.0%} of the variance", fontsize=9)
        ax.set_xlabel("PC1", fontsize=8), ax.set_ylabel("PC2", fontsize=8)
        ax = axes[1, j]
        for c, name, style in ((0, "PC1", "-"), (1, "PC2", "--")):  # black and grey: the digit colours are above
            z = pca[j, :, c] / pca[j, :, c].std()
            ax.hist(z, bins=int(np.clip(len(z) // 10, 10, 80)), density=True, histtype="step", label=name,
                    color="black" if c == 0 else "dimgrey", linestyle=style)
        g = np.linspace(-4, 4, 200)
        ax.plot(g, np.exp(-g ** 2 / 2) / np.sqrt(2 * np.pi), "k:", lw=1, label="N(0, 1)")
        ax.set_xlim(-4, 4)
        ax.set_title("density of PC1 and PC2, each standardised", fontsize=9)
        ax.set_xlabel("component / its std", fontsize=8), ax.set_ylabel("density", fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[2, j]
        ax.scatter(tsne[j, :, 0], tsne[j, :, 1], c=yt, cmap="tab10", vmin=-0.5, vmax=9.5, s=2, alpha=0.7,
                   rasterized=True)
        ax.set_title(f"t-SNE of the first {len(yt)} test codes\n(random_state = {sd})", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0, :].tolist(), ticks=range(10), fraction=0.02).set_label("digit", fontsize=9)
    figures.save(fig, out / "codes_2d.png")
    write_npz(out / "codes_2d.npz", pca=pca, pca_ratio=ratio, tsne=tsne, labels=y, tsne_labels=yt,
              models=np.asarray(have), seeds=np.asarray([int(data[m]["tsne_seed"]) for m in have]))
    return "codes_2d.png"


def fig_dynamics(out: Path, run: RunResult | None) -> list[str]:
    """The n = 2 VAE's test codes after every epoch, β = 1 beside β = 0: a GIF and a still of four epochs."""
    from matplotlib.collections import EllipseCollection
    plt = figures.plt
    d = _load(run, SNAPSHOTS_FILE)
    if d is None:
        return []
    h, y, epochs = d["h"], d["labels"], d["epochs"]
    mu_all, sigma_all = moments(np.asarray(h, np.float64))                                # [E, R, K, 2]
    runs = run.metrics["runs"]
    ok = _valid_runs(run)
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    pick = next((s for s in seeds if all(ok[i] for i, r in enumerate(runs) if r["seed"] == s)), seeds[0])
    order = [1.0, 0.0]  # β = 1 on the left
    idx = [next(i for i, r in enumerate(runs) if r["seed"] == pick and r["beta"] == b) for b in order]
    mu, sigma = np.asarray(mu_all[:, idx]), np.asarray(sigma_all[:, idx])                # [E, 2, K, 2]
    radius = np.sqrt((sigma ** 2).sum(-1))                                                # [E, 2, K]
    write_npz(out / "dynamics.npz", mu=mu, sigma=sigma, radius=radius, labels=y, epochs=epochs,
              betas=np.asarray(order), seed=pick)
    # one range for both panels and every epoch (β = 1 and β = 0 on the same axes): at least the prior's [-3, 3]^2
    m = mu[np.isfinite(mu).all(-1)]
    lims = [max(float(np.percentile(np.abs(m), 99.5)) * 1.15 if m.size else 0.0, 3.0)] * 2
    colours = plt.get_cmap("tab10")(y % 10)

    def draw(axes, e):
        for j, ax in enumerate(axes):
            ok_e = np.isfinite(mu[e, j]).all(-1) & np.isfinite(radius[e, j])
            ax.add_collection(EllipseCollection(2 * radius[e, j][ok_e], 2 * radius[e, j][ok_e], 0,
                                                units="xy", offsets=mu[e, j][ok_e], offset_transform=ax.transData,
                                                facecolors="none", edgecolors=colours[ok_e], linewidths=0.4,
                                                alpha=0.35))
            ax.scatter(mu[e, j][ok_e, 0], mu[e, j][ok_e, 1], c=colours[ok_e], s=1.5)
            ax.set_xlim(-lims[j], lims[j]), ax.set_ylim(-lims[j], lims[j])
            ax.set_aspect("equal")
            ax.set_title(f"β = {order[j]:g}, epoch {int(epochs[e])}", fontsize=9)
            ax.tick_params(labelsize=7)

    from matplotlib.lines import Line2D
    digits = sorted(set(int(v) for v in y))
    handles = [Line2D([], [], ls="", marker="o", ms=4, color=plt.get_cmap("tab10")(d % 10)) for d in digits]

    def legend(fig):
        fig.legend(handles, [str(d) for d in digits], loc="lower center", ncol=len(digits), fontsize=7,
                   frameon=False, handletextpad=0.1, columnspacing=0.8)

    frames = []
    for e in range(len(epochs)):
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
        draw(axes, e)
        legend(fig)
        fig.suptitle(f"n = 2 VAE, seed {pick}: μ of the first {len(y)} test images, circle radius "
                     "sqrt(σ1² + σ2²), colour = digit", fontsize=8)
        frames.append(figures.figure_rgb(fig))
    figures.write_rgb_gif(frames, out / "dynamics.gif", ms_per_frame=250)
    pick_e = sorted(set(int(round(x)) for x in np.linspace(0, len(epochs) - 1, 4)))
    fig, axes = plt.subplots(2, len(pick_e), figsize=(3.3 * len(pick_e), 6.8), squeeze=False)
    for c, e in enumerate(pick_e):
        draw(axes[:, c], e)
    legend(fig)
    fig.suptitle(f"n = 2 VAE, seed {pick}: μ of the first {len(y)} test images with circles of radius "
                 "sqrt(σ1² + σ2²), colour = digit", fontsize=9)
    figures.save(fig, out / "dynamics.png")
    return ["dynamics.gif", "dynamics.png"]


def _kept_text(summary: dict, key: str) -> str:
    """"digit kept at |w| = 2: seed 0 0.33, seed 1 …" from the summary's arith_digit_kept (every seed it holds)."""
    e = (summary or {}).get(key, {}).get("arith_digit_kept")
    if not e:
        return "digit kept: not measured"
    seeds = e.get("seeds") or list(range(len(e["values"])))
    vals = ", ".join(f"seed {sd}: {v:.2f}" for sd, v in zip(seeds, e["values"]) if v is not None)
    return f"source digit kept at |w| = 2 ({'figure seed only' if len(e['values']) == 1 else 'every seed'}): {vals}"


def fig_arithmetic(out: Path, runs: dict, summary: dict | None = None) -> list[str]:
    plt = figures.plt
    data = {m: _load(runs.get(f"{m}_n{N_BIG}"), "arithmetic.npz") for m in MODELS}
    have = [m for m in MODELS if data[m] is not None]
    made = []
    if have:
        w = data[have[0]]["weights"]
        x = data[have[0]]["x"]
        imgs = np.stack([data[m]["images"] for m in have])                                 # [M, F, W, 32, 32]
        reads = np.stack([np.asarray((summary or {}).get(f"{m}_n{N_BIG}", {}).get("arith_reads",
                                                                                  np.full(imgs.shape[1:3], -1)))
                          for m in have])                                                  # [M, F, W]
        write_npz(out / "arithmetic.npz", x=x, images=imgs, weights=w, models=np.asarray(have),
                  seeds=np.asarray([int(data[m]["seed"]) for m in have]), reads=reads)
        F, W = imgs.shape[1:3]
        labels = [(summary or {}).get(f"{m}_n{N_BIG}", {}).get("arith_labels") or [-2] * F for m in have]
        fig, axes = plt.subplots(1, len(have), figsize=(4.6 * len(have), 5.6), squeeze=False, layout="constrained")
        for j, m in enumerate(have):
            ax = axes[0, j]
            ax.imshow(figures.tile(np.concatenate([x[:, None], imgs[j]], axis=1), pad=1), cmap="gray", vmin=0,
                      vmax=1, interpolation="nearest")
            ax.set_xticks([34 * (c + 0.5) for c in range(W + 1)], ["test\nimage"] + [f"w = {a:+g}" for a in w],
                          fontsize=8)
            ax.xaxis.tick_top()
            ax.set_yticks([])
            for f in range(F):   # what the reference classifier reads in each decode (green: the source digit)
                for c in range(W):
                    r = int(reads[j, f, c])
                    if r >= 0:
                        ax.text(34 * (c + 2) - 4, 34 * (f + 1) - 4, str(r), ha="right", va="bottom", fontsize=8,
                                color="limegreen" if r == labels[j][f] else "red", fontweight="bold")
            ax.set_xlabel(f"{model_label(m)} (n = {N_BIG}), seed {int(data[m]['seed'])}\n"
                          + _kept_text(summary, f"{m}_n{N_BIG}"), fontsize=8)
        fig.suptitle("each row: a test image, then its code + w·v decoded; v = mean code of the thickest quarter − "
                     "the thinnest quarter of training images;\nnumber in a corner: the digit the reference classifier "
                     "reads (green: the source digit, red: another)", fontsize=9)
        figures.save(fig, out / "arithmetic.png")
        made.append("arithmetic.png")
    d = data.get("cvae")
    if d is not None and "style" in d:
        write_npz(out / "style_transfer.npz", x=d["x"], images=d["style"], labels=np.arange(NUM_CLASSES),
                  seed=d["seed"])
        figures.image_rows([np.concatenate([[xi], st]) for xi, st in zip(d["x"], d["style"])],
                           out / "style_transfer.png",
                           [f"CVAE, seed {int(d['seed'])}: a test image, then its code decoded with labels 0-9"]
                           + [None] * (len(d["x"]) - 1))
        made.append("style_transfer.png")
    return made


# --------------------------------------------------------------------------- the report
def _get(summary, key, metric):
    e = summary.get(key, {}).get(metric)
    return None if e is None or e["mean"] is None or not math.isfinite(e["mean"]) else e


def _ms(summary, key, metric) -> str:
    e = _get(summary, key, metric)
    return _fmt(e["mean"], e["std"]) if e else "n/a"


def _cmp(summary, a, b, metric, pairing: dict | None = None) -> tuple[bool | None, str]:
    """Is a's mean above b's, significantly? (verdict, or None when no test is possible; text naming the test).

    Paired over seeds when ``pairing`` gives a and b the same key, else Welch (``report.compare``).
    """
    ea, eb = _get(summary, a, metric), _get(summary, b, metric)
    if not ea or not eb:
        return None, "not run"
    test, p = compare(summary, a, b, metric, pairing)
    return (significantly_above(ea["mean"], eb["mean"], p),
            f"{_ms(summary, a, metric)} vs {_ms(summary, b, metric)} ({p_text(test, p)})")


def pairing_keys(runs: dict) -> dict[str, tuple]:
    """{summary key: pair key} of every column (the β groups share their run's key), for ``report.compare``."""
    keys = {}
    for k, r in runs.items():
        if k == "betas":
            keys.update({run_key(r.planned.cfg, b): run_pair_key(r) for b in r.planned.cfg.betas})
        else:
            keys[k] = run_pair_key(r)
    return keys


def _all_at_least(e: dict | None, bound: float) -> bool | None:
    vals = [v for v in (e or {}).get("values", []) if v is not None and math.isfinite(v)]
    return all(v >= bound for v in vals) if vals else None


def digit_ranking(summary: dict, key: str) -> list[int] | None:
    """Digits from the lowest to the highest mean per-class test MSE of a run."""
    means = [(_get(summary, key, f"test_mse_class{d}") or {}).get("mean") for d in range(NUM_CLASSES)]
    if any(m is None for m in means):
        return None
    return [int(d) for d in np.argsort(means, kind="stable")]


def _dir(summary, a, b, metric, label: str, pairing: dict | None = None) -> tuple[Part, str]:
    """The part "a's metric is above b's", judged by the paired t-test over seeds (Welch's where the runs are not
    pairs), and the text naming both means and the test."""
    ea, eb = _get(summary, a, metric), _get(summary, b, metric)
    if not ea or not eb:
        return Part(label, NOT_SHOWN, "not run"), "not run"
    test, p = compare(summary, a, b, metric, pairing)
    return (directional(label, ea["mean"], eb["mean"], p, test),
            f"{_ms(summary, a, metric)} vs {_ms(summary, b, metric)} ({p_text(test, p)})")


def _one_sample(e: dict | None, bound: float) -> float:
    """Two-sided one-sample t-test p of the seeds' values against ``bound`` (nan below two values or no spread)."""
    from scipy import stats
    vals = np.asarray([v for v in (e or {}).get("values", []) if v is not None and math.isfinite(v)], float)
    if len(vals) < 2 or np.ptp(vals) == 0:
        return float("nan")
    return float(stats.ttest_1samp(vals, bound).pvalue)


def _seed_note(e: dict | None) -> str:
    return f" ({e['source']})" if e and e.get("source") else ""


def difficulty_part(summary: dict, key: str, side: str, pairing: dict | None = None, name: str | None = None) -> Part:
    """Claim 3 for one run: {1, 7} the two easiest digits (side "easy") or {2, 8} the two hardest ("hard").

    The worse of the claimed pair is compared with the nearest other digit by a paired t-test over seeds (one
    model, so seed s's per-digit errors are pairs): confirmed when the pair is on its side and that gap is
    significant, refuted when another digit is significantly past it, not shown otherwise."""
    from scipy import stats
    label = f"{name or model_label(key.split('_')[0])}: " + ("1 and 7 easiest" if side == "easy" else "2 and 8 hardest")
    pair = (1, 7) if side == "easy" else (2, 8)
    vals = {d: (_get(summary, key, f"test_mse_class{d}") or {}).get("values") for d in range(NUM_CLASSES)}
    if any(v is None for v in vals.values()):
        return Part(label, NOT_SHOWN, "not run")
    mean = {d: float(np.mean(v)) for d, v in vals.items()}
    sign = 1 if side == "easy" else -1   # easy: the pair's highest error must be below every other digit's
    inner = max(pair, key=lambda d: sign * mean[d])
    other = min((d for d in mean if d not in pair), key=lambda d: sign * mean[d])
    a, b = np.asarray(vals[other], float), np.asarray(vals[inner], float)
    p = float(stats.ttest_rel(a, b).pvalue) if len(a) > 1 and np.ptp(a - b) > 0 else float("nan")
    # "other is worse than inner" in the claim's direction
    part = directional(label, sign * mean[other], sign * mean[inner], p, PAIRED_NAME)
    return Part(label, part.verdict, f"{inner} vs {other}, the nearest other digit: " + part.why)


def combine(label: str, parts: list[Part]) -> Part:
    """One part from several (e.g. one per model): its overall verdict, the sub-parts named in why."""
    return Part(label, overall(parts), "; ".join(f"{p.label}: {p.verdict}" + (f", {p.why}" if p.why else "")
                                                 for p in parts))


SILHOUETTE_STRONG, SILHOUETTE_NONE = 0.5, 0.25  # Kaufman and Rousseeuw's scale: > 0.5 strong, < 0.25 no structure


def claims(summary: dict, pairing: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(#, claim, what our numbers say and the rule, verdict) for claims 1-9 of docs/studies.md part A.

    Every verdict is one of report.VERDICTS, per part and overall (``report.verdict_cell``). Two-sided
    comparisons are paired over seeds between columns that ``pairing`` pairs, Welch otherwise. Measures read by
    the reference classifier (``judge_saved``) are in the summary as ``*_ref_*`` and ``arith_digit_*``.
    """
    ae, vae, cvae = (f"{m}_n{N_BIG}" for m in MODELS)
    ae2, vae2, cvae2 = (f"{m}_n{N_PLANE}" for m in MODELS)
    b0, b1 = f"vae_beta0_n{N_PLANE}", f"vae_beta1_n{N_PLANE}"
    sweep = [Part("the whole claim", NOT_TESTABLE, "needs the latent-size sweep: see latent_sweep's report")]
    rows = [("1", "plain AE: test error falls as n grows, for every digit", "needs the latent-size sweep",
             verdict_cell(sweep)),
            ("2", "VAE: test error hardly changes with n, may rise beyond about 20", "needs the latent-size sweep",
             verdict_cell(sweep))]
    # 3: per-digit difficulty
    texts = []
    for k in (ae, vae, cvae):
        r = digit_ranking(summary, k)
        if r is not None:
            texts.append(f"{model_label(k.split('_')[0])}: easiest → hardest {r[0]}, {r[1]}, …, {r[-2]}, {r[-1]}")
    easy = combine("1 and 7 easiest", [difficulty_part(summary, k, "easy", pairing) for k in (ae, vae, cvae)])
    hard = combine("2 and 8 hardest", [difficulty_part(summary, k, "hard", pairing) for k in (ae, vae, cvae)])
    rows.append(("3", "1 and 7 are the easiest digits to reconstruct, 2 and 8 the hardest",
                 ("; ".join(texts) + " (mean per-class test MSE, n = 20). Rule: in every model {1, 7} are the two "
                  "lowest and {2, 8} the two highest, and the gap to the nearest other digit is significant (paired "
                  "t-test over seeds); another digit significantly past the pair refutes") if texts else "not run",
                 verdict_cell([easy, hard])))
    # 4: samples from N(0, I)
    off, off_txt = _dir(summary, ae, vae, "prior_offdata_fraction", "AE's decodes more off the data", pairing)
    leg, leg_txt = _dir(summary, vae, ae, "prior_ref_legible", "AE's decodes less legible than the VAE's", pairing)
    cls = _get(summary, vae, "prior_ref_classes")
    cls_vals = [v for v in (cls or {}).get("values", []) if v is not None and math.isfinite(v)]
    classes = threshold("VAE: digits of random class", cls["mean"] if cls else None,
                        all(v >= 8 for v in cls_vals) if cls_vals else None, bool(cls) and cls["mean"] < 5,
                        f"digits among its legible decodes: {_ms(summary, vae, 'prior_ref_classes')}")
    acc = _get(summary, cvae, "cvae_label_accuracy")
    asked = threshold("CVAE: the digit asked for", acc["mean"] if acc else None,
                      acc["mean"] >= 0.8 if acc else None, bool(acc) and acc["mean"] < 0.5,
                      f"read as the label asked for: {_ms(summary, cvae, 'cvae_label_accuracy')}")
    rows.append(("4", "z ~ N(0, I) decoded: AE unreadable; VAE legible digits of random class; CVAE the digit asked for",
                 "every model decodes the same kind of draw z ~ N(0, I), so both measures cover one region for all "
                 f"(the prior's); decodes the reference classifier reads with probability ≥ {LEGIBLE}, VAE vs AE: "
                 f"{leg_txt} "
                 f"(CVAE {_ms(summary, cvae, 'prior_ref_legible')}); digits among the VAE's legible decodes: "
                 f"{_ms(summary, vae, 'prior_ref_classes')}; fraction of decodes off the data (nearest training "
                 f"images), AE vs VAE: {off_txt}; CVAE samples the classifier reads as the label asked for: "
                 f"{_ms(summary, cvae, 'cvae_label_accuracy')}. Rule: the AE's decodes significantly less legible "
                 "and more off the data than the VAE's (the opposite, significant, refutes); ≥ 8 digits among the "
                 "VAE's legible decodes in every seed (< 5 refutes); the CVAE's read as asked ≥ 0.8 (< 0.5 refutes).",
                 verdict_cell([leg, off, classes, asked])))
    # 5: latent plane
    p_off, p_txt = _dir(summary, ae2, vae2, "plane_offdata_fraction", "AE has holes and garbage", pairing)
    holes = Part(p_off.label, NOT_TESTABLE,
                 "the AE's code scale is not identified (its decoder starts Linear without bias → BatchNorm), so no "
                 "region of its plane corresponds to the VAE's [−3, 3]²: \"off the data\" was measured over its own "
                 f"0.5-99.5 percentile box, which a rescaling of the code moves at will; measured: {p_off.why}")
    pc_v, pc_a = _get(summary, vae2, "plane_classes"), _get(summary, ae2, "plane_classes")
    digits = contrast("VAE shows every digit (the AE's plane not)", _all_at_least(pc_v, NUM_CLASSES),
                      _all_at_least(pc_a, NUM_CLASSES), "the VAE", "the AE")
    style = Part("CVAE with a fixed label: the plane encodes style", NOT_SHOWN,
                 "no measure of style here; the label is kept in "
                 f"{_ms(summary, cvae2, 'plane_label_accuracy')} of the decodes")
    rows.append(("5", "n = 2 plane decoded: AE has holes and garbage; VAE shows every digit around (0, 0), "
                      "neighbours blending; CVAE with a fixed label: the plane encodes style",
                 f"fraction of grid decodes off the data, AE vs VAE: {p_txt}; digits on the plane (nearest training "
                 f"images): AE {_ms(summary, ae2, 'plane_classes')}, VAE {_ms(summary, vae2, 'plane_classes')}; "
                 f"grid decodes the reference classifier reads with probability ≥ {LEGIBLE}: AE "
                 f"{_ms(summary, ae2, 'plane_ref_legible')}, VAE {_ms(summary, vae2, 'plane_ref_legible')}"
                 f"{_seed_note(_get(summary, vae2, 'plane_ref_legible'))}; CVAE planes showing their label: "
                 f"{_ms(summary, cvae2, 'plane_label_accuracy')}. Rule: the AE's grid significantly more off the "
                 "data than the VAE's over one region for both; every digit on the VAE's plane and not on the AE's.",
                 verdict_cell([holes, digits, style])))
    # 6: PCA / t-SNE
    sil = _get(summary, ae, "code_silhouette")
    gap, gap_txt = _dir(summary, ae, vae, "code_silhouette", "AE above the VAE", pairing)
    sil_vals = [v for v in (sil or {}).get("values", []) if v is not None and math.isfinite(v)]
    none = bool(sil_vals) and all(v < SILHOUETTE_NONE for v in sil_vals)
    wide = threshold("AE codes form per-digit clusters with wide gaps", sil["mean"] if sil else None,
                     (all(v > SILHOUETTE_STRONG for v in sil_vals) and gap.verdict == CONFIRMED) if sil_vals else None,
                     False,
                     f"silhouette {_ms(summary, ae, 'code_silhouette')}"
                     + (": below 0.25 in every seed in the raw code coordinates (the article's PCA scatter uses the "
                        "same)" if none else ", between the bounds") + f"; AE vs VAE {gap_txt}")
    # A silhouette is a Euclidean measure: a linear map of the AE's code changes it, and such a map is invisible to a
    # decoder that starts Linear without bias → BatchNorm, so its value cannot decide "gaps" either way here.
    wide = Part(wide.label, NOT_TESTABLE, "the silhouette of the AE's raw code coordinates is not identified (any "
                                          "linear map of its code is invisible to a decoder that starts Linear without "
                                          "bias → BatchNorm) and no identified measure of gaps is computed here; "
                                          f"measured: {wide.why}")
    ks_v, ks_v_txt = _dir(summary, vae, cvae, "code_gauss_ks", "CVAE below the VAE", pairing)
    ks_a, ks_a_txt = _dir(summary, ae, cvae, "code_gauss_ks", "CVAE below the AE", pairing)
    gauss = combine("CVAE codes closest to one Gaussian", [ks_v, ks_a])
    rows.append(("6", "AE codes form per-digit clusters with wide gaps; CVAE codes are the closest to one Gaussian",
                 f"silhouette by digit of the n = 20 codes: AE {_ms(summary, ae, 'code_silhouette')}, "
                 f"VAE {_ms(summary, vae, 'code_silhouette')}, CVAE {_ms(summary, cvae, 'code_silhouette')} "
                 f"(AE vs VAE: {gap_txt}); mean KS distance of the standardised principal components to N(0, 1): "
                 f"AE {_ms(summary, ae, 'code_gauss_ks')}, VAE {_ms(summary, vae, 'code_gauss_ks')}, "
                 f"CVAE {_ms(summary, cvae, 'code_gauss_ks')} (VAE vs CVAE: {ks_v_txt}; AE vs CVAE: {ks_a_txt}). "
                 f"Rule: wide gaps need a silhouette above {SILHOUETTE_STRONG} in every seed (strong structure, Kaufman "
                 f"and Rousseeuw's scale) and significantly above the VAE's, in coordinates the architecture identifies (the "
                 "AE's are not: that part is not testable here); the CVAE's KS distance significantly below both others' "
                 "(`codes_2d.png`).",
                 verdict_cell([wide, gauss])))
    # 7: dynamics
    out, r_txt = _dir(summary, b0, b1, "snap_rms_mu", "β = 0 codes further out", pairing)
    rnd, round_txt = _dir(summary, b1, b0, "snap_isotropy", "β = 1 cloud rounder", pairing)
    # Without the KL term nothing pins the code's per-axis scale and shift: the decoder starts Linear (no bias) →
    # BatchNorm, so z → D z + c (D diagonal, μ and σ alike) leaves training unchanged. How far out and how round
    # the β = 0 cloud is, is then whatever the initialisation left; a comparison with β = 1 cannot decide.
    unpinned = ("the β = 0 code's per-axis scale and shift are not identified (the decoder starts Linear without "
                "bias → BatchNorm, and without the KL term nothing else pins them); measured: ")
    out = Part(out.label, NOT_TESTABLE, unpinned + (out.why or "nothing"))
    rnd = Part(rnd.label, NOT_TESTABLE, unpinned + (rnd.why or "nothing"))
    k0, k1 = _get(summary, b0, "snap_knn_accuracy"), _get(summary, b1, "snap_knn_accuracy")
    clusters = threshold("clusters with or without β", k0["mean"] if k0 and k1 else None,
                         (k0["mean"] > 0.5 and k1["mean"] > 0.5) if k0 and k1 else None,
                         bool(k0 and k1) and min(k0["mean"], k1["mean"]) < 0.2,
                         "5-NN accuracy above 0.5 for both" if k0 and k1 and min(k0["mean"], k1["mean"]) > 0.5
                         else "")
    rows.append(("7", "the KL term draws the n = 2 codes into a round region about the origin; clusters appear "
                      "with or without it",
                 f"after the last epoch, RMS ‖μ‖ with β = 0 vs β = 1: {r_txt}; roundness sqrt(λmin/λmax), "
                 f"β = 1 vs β = 0: {round_txt}; 5-NN digit "
                 f"accuracy from μ: β = 1 {_ms(summary, b1, 'snap_knn_accuracy')}, β = 0 "
                 f"{_ms(summary, b0, 'snap_knn_accuracy')} (chance 0.1). Rule: β = 0 codes significantly further "
                 "out and β = 1 codes significantly rounder, where the code's scale is identified (it is not at "
                 "β = 0: those two parts are not testable here); 5-NN accuracy above 0.5 for both, below 0.2 "
                 "refutes (`dynamics.gif`).",
                 verdict_cell([out, rnd, clusters])))
    # 8: arithmetic
    parts8, kept_txt = [], []
    for k in (ae, vae):
        g = _get(summary, k, "arith_ink_gain")
        p = _one_sample(g, 0.0)
        parts8.append(directional(f"{model_label(k.split('_')[0])}: the vector adds ink", g["mean"] if g else None,
                                  0.0, p, "one-sample t-test against 0") if g else Part("ink", NOT_SHOWN, "not run"))
    for k in (ae, vae, cvae):
        name = model_label(k.split('_')[0])
        e = _get(summary, k, "arith_digit_kept")
        kept_txt.append(f"{name} {_ms(summary, k, 'arith_digit_kept')} (mean probability of the source digit "
                        f"{_ms(summary, k, 'arith_digit_conf')}; at w = −2 / +2: "
                        f"{_ms(summary, k, 'arith_digit_kept_w-2')} / {_ms(summary, k, 'arith_digit_kept_w2')})")
        if k == cvae:
            continue
        label = f"{name}: the digit is kept"
        if not e:
            parts8.append(Part(label, NOT_SHOWN, "not measured"))
            continue
        counts = (summary.get(k) or {}).get("arith_digit_counts")
        if counts:   # one seed's decodes: an exact binomial test of "kept in fewer than half"
            p_low = binomial_below(counts["kept"], counts["n"], 0.5)
            why = f"{counts['kept']} of {counts['n']} decodes at |w| = 2 kept; binomial p (kept < 0.5) = {p_low:.2g}"
        else:        # every seed: a one-sample t-test of the seeds' rates against 0.5
            p_low = _one_sample(e, 0.5) if e["mean"] < 0.5 else float("nan")
            why = f"kept {_ms(summary, k, 'arith_digit_kept')}; one-sample t-test against 0.5 p = {p_low:.2g}"
        parts8.append(threshold(label, e["mean"], e["mean"] >= 0.9,
                                e["mean"] < 0.5 and math.isfinite(p_low) and p_low < SIGNIFICANCE,
                                why + _seed_note(e)))
    on, m_txt = _dir(summary, ae, vae, "arith_offdata_fraction", "the VAE keeps the result on the data", pairing)
    parts8.append(on)
    rows.append(("8", "an attribute vector carries over; the VAE keeps the result on the data manifold",
                 f"ink added per unit of the thickness vector, as a fraction of the thick-thin ink gap: AE "
                 f"{_ms(summary, ae, 'arith_ink_gain')}, VAE {_ms(summary, vae, 'arith_ink_gain')}; decodes at "
                 f"|w| = 2 the reference classifier still reads as the source digit: {'; '.join(kept_txt)}"
                 f"{_seed_note(_get(summary, vae, 'arith_digit_kept'))}; decodes at w = ±2 off the data, AE vs "
                 f"VAE: {m_txt}. Rule: the attribute carries over only where the digit is kept: ink gain "
                 "significantly above 0 and the source digit read in ≥ 0.9 of the |w| = 2 decodes; kept in fewer "
                 "than half (significantly) refutes; AE significantly more off the data than the VAE "
                 "(`arithmetic.png`). The CVAE decodes with the source's label, so it keeps the digit by "
                 "construction and is not a test of the claim.",
                 verdict_cell(parts8)))
    rows.append(("9", "a single-layer linear autoencoder spans the same subspace as PCA",
                 "this study trains no linear (activation-free) autoencoder; ae_jax's shallow model has a ReLU",
                 verdict_cell([Part("the whole claim", NOT_TESTABLE,
                                    "no activation-free single-layer autoencoder among ae_jax's models")])))
    return rows


# Wall-clock is shown, not ranked: the runs trained at different times on a machine other jobs shared, and a
# β group's columns share one program's time.
TIME_ROW = ("train_time_s", "training wall-clock s, all seeds together (depends on the machine's load: not ranked)",
            None, 0)
MSE_ROWS = [("test_mse", "test MSE (summed per image; VAE and CVAE: from a sampled z, as trained)", False),
            ("test_mse_mu", "test MSE from the mean code μ (VAE and CVAE)", False)]
N20_ROWS = [*MSE_ROWS, ("test_bce", "test BCE (summed per image)", False),
            ("prior_offdata_fraction", "N(0, I) decodes off the data", False),
            ("prior_classes", "digits among N(0, I) decodes", True),
            ("prior_label_accuracy", "N(0, I) decodes showing the label asked for", True),
            ("cvae_label_accuracy", "samples the reference classifier reads as the label asked for", True),
            ("prior_ref_legible", f"N(0, I) decodes the reference classifier reads with probability ≥ {LEGIBLE}",
             True),
            ("code_silhouette", "silhouette of the codes by digit", None),
            ("code_gauss_ks", "KS distance of the codes' components to N(0, 1)", None),
            ("arith_ink_gain", "thickness arithmetic: ink gain", None),
            ("arith_offdata_fraction", "thickness arithmetic: decodes at w = ±2 off the data", False),
            ("arith_digit_kept", "thickness arithmetic: decodes at w = ±2 the reference classifier reads as the "
             "source digit (where one value: the figure seed's 6 images)", None),
            ("style_label_accuracy", "style transfer: decodes showing the label asked for", True),
            TIME_ROW]
N2_ROWS = [*MSE_ROWS, ("test_bce", "test BCE (summed per image)", False),
           ("plane_offdata_fraction", "plane decodes off the data", False),
           ("plane_classes", "digits on the plane", True),
           ("plane_label_accuracy", "plane decodes showing their label", True),
           ("plane_ref_legible", f"plane decodes the reference classifier reads with probability ≥ {LEGIBLE} (the "
            "figure seed's grid; AE over its own box, the others over [−3, 3]²)", None),
           ("snap_rms_mu", "last epoch: RMS ‖μ‖ of 1000 test codes", None),
           ("snap_isotropy", "last epoch: roundness of the μ cloud", None),
           ("snap_knn_accuracy", "last epoch: 5-NN digit accuracy from μ", True),
           TIME_ROW]


def per_class_table(summary: dict, keys) -> str:
    out = ["| run | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " | easiest → hardest |",
           "|---|" + "---|" * (NUM_CLASSES + 1)]
    for k in keys:
        if k not in summary:
            continue
        r = digit_ranking(summary, k)
        out.append(f"| {k} | " + " | ".join(_ms(summary, k, f"test_mse_class{d}") for d in range(NUM_CLASSES))
                   + f" | {' '.join(map(str, r)) if r else ''} |")
    return "\n".join(out)


FIGURES = [
    ("reconstructions.png", "Reconstructions (n = 20)",
     "The first test image of each digit and its reconstruction by each model (z as evaluation forms it: "
     "sampled for the VAE and CVAE; the CVAE also gets the true label)."),
    ("prior_samples.png", "Decoding z ~ N(0, I) (n = 20)",
     "The same kind of draw for every model. The plain autoencoder was never asked to make N(0, I) codes mean "
     "anything; the VAE's KL term was. The CVAE's row d is decoded with label d."),
    ("cvae_samples.png", "The CVAE's class-conditional samples",
     "Row d: ten draws z ~ N(0, I) decoded with label d. Every seed's grid is in `cvae_samples.npz` "
     "(images [seeds, 10, k, 32, 32])."),
    ("latent_plane.png", "The latent plane (n = 2)",
     "Top: a 15 × 15 grid decoded, over the box the AE's test codes occupy (0.5th to 99.5th percentile) and "
     "over [−3, 3]² for the VAE and for the CVAE (one plane per label shown). Bottom: each model's test codes (μ) "
     "once, over the same box, coloured by digit (the colour bar). The two boxes are different regions, which is "
     "why claim 5's \"off the data\" cannot compare the AE with the VAE."),
    ("codes_2d.png", "PCA and t-SNE of the n = 20 codes",
     "Top: the test codes (μ) on their first two principal components. Middle: the density of each of the two, "
     "standardised, against N(0, 1). Bottom: t-SNE of the first 2000 test codes."),
    ("dynamics.png", "Latent dynamics (n = 2 VAE, β = 1 above, β = 0 below)",
     "Four epochs of the animation [dynamics.gif](dynamics.gif): μ of the first 1000 test images after each epoch, "
     "a circle of radius sqrt(σ1² + σ2²) around it, coloured by digit. The codes come out of the compiled epoch "
     "program (the trainer's snapshots), evaluated with BatchNorm's running statistics."),
    ("arithmetic.png", "Latent arithmetic: stroke thickness (n = 20)",
     "v = mean code of the quarter of training images with the most ink − that of the quarter with the least; "
     "each row is a test image, then its code + w·v decoded for w = −2, −1, 0, 1, 2 (column headers). The digit "
     "in each decode's corner is what the reference classifier reads (green: the source digit, red: another); "
     "below each panel, the fraction of |w| = 2 decodes still read as the source digit for every seed measured "
     "(these runs saved the figure seed's decodes only)."),
    ("style_transfer.png", "The CVAE's style transfer",
     "A test image's code decoded with each of the ten labels: the code carries the style, the label the digit."),
]


def same_model_note(summary: dict, a: str, b: str, metric: str = "test_mse") -> str:
    """What the report says of two rows that are one model trained by two programs (a run and a β group)."""
    text = (f"`{b}` is the same model as `{a}` (same seeds, same data order), trained in the β pair's program, "
            "which rounds differently.")
    va, vb = (np.asarray((summary.get(k) or {}).get(metric, {}).get("values") or [], float) for k in (a, b))
    if va.size == 0 or va.shape != vb.shape or not np.all(np.isfinite(va) & np.isfinite(vb)):
        return text
    rel = float(np.max(np.abs(va - vb) / np.abs(va)))
    return text + f" Per seed, their {metric.replace('_', ' ')} differs by at most {rel:.1e} relatively."


def write_report(out: Path, summary: dict, runs: dict, opts: StudyOptions, session_s: float) -> None:
    made = []
    for f in (fig_reconstructions(out, runs), *fig_prior(out, runs), fig_latent_plane(out, runs),
              fig_codes(out, runs), *fig_dynamics(out, runs.get("betas")), *fig_arithmetic(out, runs, summary)):
        if f:
            made.append(f)
    results = list(runs.values())
    pairing = pairing_keys(runs)
    devices = sorted({device_text(r.metrics["device"]) for r in results})
    n20 = [f"{m}_n{N_BIG}" for m in MODELS]
    n2 = [f"{m}_n{N_PLANE}" for m in MODELS] + [f"vae_beta{b:g}_n{N_PLANE}" for b in BETAS]
    lines = [f"# Plain AE, VAE and conditional VAE on {opts.dataset}", "",
             "The claims of docs/studies.md part A, checked under ae_jax's protocol (BatchNorm, Adam 1e-3, "
             "batch 256) with the squared-error loss the articles use. Produced by (rerun it to reproduce; "
             "finished runs are reused, `--force` redoes them):", "",
             f"    {opts.command}", "",
             f"- Machine: {platform.machine()} with {jax.device_count()} {jax.devices()[0].platform} device(s); "
             f"training devices recorded: {', '.join(devices) or 'n/a'}",
             f"- Seeds: {opts.seeds}; epochs: {opts.epochs}; loss: MSE (squared error of the sigmoid output summed "
             "over the 1024 pixels, averaged over the batch; β = 1 for the VAE and CVAE). Every number is "
             "mean ± sample std over seeds.",
             f"- Runs: {', '.join(f'`{r.run_dir.name}`' for r in results)}. The β = 0 / β = 1 pair trains in one "
             "program and keeps the codes of the first 1000 test images after every epoch (`snapshots.npz`).",
             f"- This invocation took {session_s:.0f} s (runs finished earlier were reused).",
             f"- Best mean in **bold**; the last column tests the best against the runner-up, significant at "
             f"p < {SIGNIFICANCE}. Each cell and claim names its test: a {PAIRED_NAME} over seeds between runs "
             "trained on the same seeds by the same source revision (a seed fixes the minibatch order and the noise "
             f"draws for every model alike, so seed s of one run and seed s of another are a pair), {WELCH_NAME}'s "
             "t-test otherwise.",
             "- \"Off the data\", \"digits among\" and \"showing the label\" judge decoded images by their nearest "
             "training images in pixel space (the first 10 000, or all if fewer), relative to the model's own "
             "reconstructions (`ae_jax/tasks/pixels.py`).",
             "- Per-seed values: `summary.json`; each figure's arrays: the `.npz` of the same name.",
             "- Which error: the VAE and the CVAE are trained and evaluated on a sampled z, whose noise adds to "
             "their error; every error in this report is that one unless a row says \"from the mean code μ\". "
             + ("The error from μ is shown where the runs recorded it." if any(
                 "test_mse_mu" in summary.get(k, {}) for k in summary) else
                "The error from μ is not recorded for these runs: they were evaluated before the reconstruction task "
                "recorded it, and their checkpoints are not kept, so it would need the runs trained again.")]
    lines += pairs_note(pairing)
    lines += provenance_notes(results, compile_times=False)
    t = task_table({k: summary[k] for k in n20 if k in summary}, N20_ROWS, n20, pairing)
    if t:
        lines += ["## n = 20", "", t, ""]
    t = task_table({k: summary[k] for k in n2 if k in summary}, N2_ROWS, n2, pairing)
    if t:
        lines += ["## n = 2", "", same_model_note(summary, "vae_n2", "vae_beta1_n2"), "", t, ""]
    lines += ["## Test MSE per digit", "", per_class_table(summary, n20 + n2), ""]
    lines += ["## The claims of docs/studies.md part A", "",
              "| # | claim | what our runs say | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in claims(summary, pairing)]
    lines += ["", "## Figures", ""]
    for f, title, note in FIGURES:
        if f in made:
            lines += [f"### {title}", "", note, "", f"![{title}]({f})", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
