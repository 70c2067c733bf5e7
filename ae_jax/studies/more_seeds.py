"""More seeds for the published numbers that fell outside the bake-off's band.

With five seeds, two published single-run MNIST numbers lay outside our
seeds' 95 % prediction interval: shallow's test BCE (123.2) and
beta_vae_strict's probe accuracy (0.4536). Five seeds say little about a distribution's tails, so this study
trains each of those models once more at the protocol's n = 20, with 20 seeds
in one program, and reports where every published number of the model falls
among the 20 seeds (rank, range). A ReLU code can lose units for good: a unit
that never fires on any training image gets no gradient again. The
``code_units`` task counts such dead units per seed (and the inactive ones,
variance < 0.01, which is how a VAE's collapsed units show), and the report
relates the counts to each seed's error and probe accuracy.

The runs are ordinary run folders, but under this study's own results root
(``<results root>/more_seeds/<run name>``, by default under ``runs/<dataset>``): a 20-seed run has the same
name as the bake-off's 5-seed one, and a folder holds one set of seeds.
``summary.json`` and ``README.md`` go to that root; the figure is
``seeds.png`` with its arrays in ``seeds.npz``.
"""
from __future__ import annotations

import math
import platform
from pathlib import Path

import jax
import numpy as np

from .. import figures
from ..io import RUNS_ROOT, read_json, write_npz
from ..models import MODELS as REGISTRY, PUBLISHED_DATASET
from ..trainer import ExperimentConfig
from ..trainer.results import device_text
from .driver import PlannedRun, RunResult, Study, StudyOptions
from .report import Part, _fmt, provenance_notes

MODELS = ("shallow", "beta_vae_strict")
SEEDS = 20
FOLDER = "more_seeds"
TASKS = ("reconstruction", "probe", "code_units")
# (metric, label, higher is better)
METRICS = (("test_bce", "test BCE", False), ("probe_accuracy", "probe accuracy", True))
UNITS = (("dead_units", "dead code units"), ("inactive_units", "inactive code units"))
# per model: the metric its published outlier is about, and the unit count that might explain it
FOCUS = {"shallow": ("test_bce", "dead_units"), "beta_vae_strict": ("probe_accuracy", "inactive_units")}


def default_root(dataset: str) -> Path:
    return RUNS_ROOT / dataset / FOLDER


def published(dataset: str, model: str, metric: str) -> float | None:
    """The original study's single-run number, where it published one (MNIST only)."""
    spec = REGISTRY.get(model)
    return spec.published.get(metric) if spec is not None and dataset == PUBLISHED_DATASET else None


def values(entry: dict, metric: str) -> np.ndarray:
    """Per-seed values of one metric, NaN where a seed diverged or the metric is missing."""
    e = entry.get(metric)
    return np.asarray([np.nan if v is None else v for v in (e or {}).get("values", [])], np.float64)


def placement(v: np.ndarray, pub: float, higher: bool) -> dict:
    """Where pub falls among the finite seeds of v.

    "rank": pub's place among the seeds from best to worst (1 = better than
    every seed, S + 1 = worse than every seed; ties count in pub's favour);
    "better" / "worse": how many seeds are strictly better / worse than pub;
    "min", "max", "mean", "std" of the seeds; "z": (pub - mean) / std.
    """
    v = v[np.isfinite(v)]
    if not len(v):
        return {"seeds": 0}
    better = int((v > pub).sum() if higher else (v < pub).sum())
    worse = int((v < pub).sum() if higher else (v > pub).sum())
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"published": pub, "seeds": int(len(v)), "better": better, "worse": worse, "rank": better + 1,
            "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "std": std,
            "z": (pub - float(v.mean())) / std if std > 0 else float("nan"), "inside_range": bool(v.min() <= pub <= v.max())}


def relation(x: np.ndarray, y: np.ndarray) -> dict:
    """Spearman's rank correlation of y with x over seeds, and the least-squares slope of y on x."""
    from scipy import stats
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"seeds": int(len(x)), "spearman": None, "p": None, "slope": None, "intercept": None}
    r = stats.spearmanr(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    return {"seeds": int(len(x)), "spearman": float(r.statistic), "p": float(r.pvalue),
            "slope": float(slope), "intercept": float(intercept)}


class MoreSeeds(Study):
    name = "more_seeds"
    folder = ""  # the study's own results root (results/<dataset>/more_seeds) holds runs, summary and report

    def plan(self, opts: StudyOptions) -> list[PlannedRun]:
        return [PlannedRun(ExperimentConfig(model=m, dataset=opts.dataset, seeds=opts.seeds, epochs=opts.epochs),
                           TASKS) for m in (opts.models or MODELS)]

    def summarize(self, results: list[RunResult], baselines: dict[str, dict]) -> dict:
        models = {r.planned.cfg.model: r.entry() for r in results}
        dataset = results[0].planned.cfg.dataset if results else ""
        analysis = {}
        for m, e in models.items():
            a = {"published": {}, "relations": {}}
            for metric, _, higher in METRICS:
                pub = published(dataset, m, metric)
                if pub is not None:
                    a["published"][metric] = placement(values(e, metric), pub, higher)
            for unit, _ in UNITS:
                for metric, _, _ in METRICS:
                    a["relations"][f"{metric}~{unit}"] = relation(values(e, unit), values(e, metric))
            analysis[m] = a
        return {"models": models, "analysis": analysis}

    def report(self, out_dir: Path, summary: dict, results: list[RunResult], opts: StudyOptions,
               session_s: float) -> None:
        write_report(out_dir, summary, results, opts, session_s)

    def headline(self, summary: dict) -> str:
        lines = []
        for m, a in summary["analysis"].items():
            for metric, p in a["published"].items():
                if p.get("seeds"):
                    lines.append(f"{m} {metric}: published {p['published']:g} ranks {p['rank']} of "
                                 f"{p['seeds'] + 1} (our seeds {_fmt(p['min'])} to {_fmt(p['max'])})")
            d = summary["models"][m].get("dead_units")
            if d and d["mean"] is not None:
                lines.append(f"{m}: {_units(d)} dead code units per seed")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the report
def place_text(p: dict, higher: bool) -> str:
    """One sentence on where a published number falls among the seeds."""
    s, pub = p["seeds"], p["published"]
    word = "higher" if higher else "lower"
    if p["better"] == s:
        where = f"worse than all {s} seeds"
    elif p["worse"] == s:
        where = f"better than all {s} seeds"
    else:
        where = f"{p['better']} of {s} seeds are better ({word} is better), {p['worse']} worse"
    z = f"{p['z']:+.1f} std from our mean" if math.isfinite(p["z"]) else "no spread to compare with"
    return f"{pub:g}: {where} (rank {p['rank']} of {s + 1}; {z})"


def bakeoff_check(root: Path, models: dict) -> list[str]:
    """Seeds shared with the bake-off's 5-seed runs (one folder up), compared value by value."""
    path = root.parent / "summary.json"
    if not path.exists():
        return []
    base = read_json(path)
    lines = []
    for m, e in models.items():
        for metric, label, _ in METRICS:
            b = (base.get(m) or {}).get(metric)
            if not b or not b.get("values"):
                continue
            k = min(len(b["values"]), len(e.get(metric, {}).get("values", [])))
            ours, theirs = values(e, metric)[:k], np.asarray([np.nan if v is None else v for v in b["values"][:k]])
            diff = np.nanmax(np.abs(ours - theirs)) if k else float("nan")
            lines.append(f"| {m} | {label} | {k} | {_fmt(float(np.nanmean(theirs)))} | {_fmt(float(np.nanmean(ours)))} "
                         f"| {diff:.3g} |")
    if not lines:
        return []
    return ["## The first seeds against the bake-off", "",
            "Seeds 0, 1, … are the bake-off's seeds: same data order, initial weights and noise (`../summary.json`). "
            "A difference comes from the number of seeds in one program (the rounding of a wider batch of runs) "
            "and, where the bake-off's run was trained by an older version of ae_jax, from the code.", "",
            "| model | metric | seeds compared | bake-off mean | same seeds here | largest difference per seed |",
            "|---|---|---|---|---|---|"] + lines + [""]


def fig_seeds(out: Path, summary: dict, dataset: str) -> str:
    """Per model: each metric's seeds as dots with the published value as a line; the units against each metric."""
    models = list(summary["models"])
    cols = len(METRICS) + 1
    fig, axes = figures.plt.subplots(len(models), cols, figsize=(4.2 * cols, 3.2 * len(models)), squeeze=False)
    arrays = {}
    for i, m in enumerate(models):
        e = summary["models"][m]
        for j, (metric, label, higher) in enumerate(METRICS):
            ax, v = axes[i, j], values(e, metric)
            arrays[f"{m}__{metric}"] = v
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(v))
            ax.scatter(v, jitter, s=18, color="C0", label="our seeds")
            if np.isfinite(v).any():
                mu, sd = np.nanmean(v), np.nanstd(v, ddof=1) if np.isfinite(v).sum() > 1 else 0.0
                ax.axvspan(mu - sd, mu + sd, color="C0", alpha=0.15, label="our mean ± std")
            pub = published(dataset, m, metric)
            if pub is not None:
                arrays[f"{m}__{metric}__published"] = np.asarray(pub)
                ax.axvline(pub, color="C3", lw=2, label="published (one run)")
            ax.set_yticks([])
            ax.set_ylim(-0.5, 0.5)
            ax.set_title(f"{m}: {label} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax = axes[i, -1]
        for k, (unit, label) in enumerate(UNITS):
            arrays[f"{m}__{unit}"] = values(e, unit)
        metric, unit = FOCUS.get(m, ("test_bce", "dead_units"))
        ax.scatter(values(e, unit), values(e, metric), s=18, color="C2")
        ax.set_xlabel(dict(UNITS)[unit] + " (per seed)")
        ax.xaxis.get_major_locator().set_params(integer=True)  # a count of units
        ax.set_ylabel(dict((mt, lb) for mt, lb, _ in METRICS)[metric])
        ax.set_title(f"{m}: {dict(UNITS)[unit]} against {dict((mt, lb) for mt, lb, _ in METRICS)[metric]}",
                     fontsize=9)
    legend = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    figures.save(fig, out / "seeds.png")
    write_npz(out / "seeds.npz", **arrays)
    return "seeds.png"


def write_report(out: Path, summary: dict, results: list[RunResult], opts: StudyOptions, session_s: float) -> None:
    from ..io import atomic_write_text
    models, analysis = summary["models"], summary["analysis"]
    made = fig_seeds(out, summary, opts.dataset)
    devices = sorted({device_text(r.metrics["device"]) for r in results})
    lines = [f"# More seeds on {opts.dataset}: where the published single runs fall", "",
             "Two published MNIST numbers lay outside the bake-off's 5-seed 95 % prediction interval (shallow's "
             "test BCE, "
             "beta_vae_strict's probe accuracy). Here each model is trained again at n = 20 with "
             f"{opts.seeds} seeds in one program, under the bake-off's protocol (its linear probe included). Produced by (rerun it to reproduce; "
             "finished runs are reused, `--force` redoes them):", "",
             f"    {opts.command}", "",
             f"- Models: {', '.join(models)}; seeds 0-{opts.seeds - 1}; epochs: {opts.epochs}; BCE, n = 20, "
             "BatchNorm, Adam 1e-3, batch 256, as the bake-off.",
             f"- Machine: {platform.machine()} with {jax.device_count()} {jax.devices()[0].platform} device(s); "
             f"training devices recorded: {', '.join(devices) or 'n/a'}. Compute: "
             + ", ".join(f"{r.planned.cfg.model} {r.metrics['timing'].get('train_time_s', 0):.0f} s"
                         for r in results)
             + f" of training and compiling (all seeds of a model in one program); this invocation took "
               f"{session_s:.0f} s.",
             "- Runs: `<model>/` here (a folder holds one set of seeds, so the 20-seed runs do not share the "
             "bake-off's 5-seed folders). Per-seed values: `summary.json`; the figure's arrays: `seeds.npz`."]
    lines += provenance_notes(results, compile_times=False)
    lines += ["## Where the published numbers fall", ""]
    rows = []
    for m, a in analysis.items():
        for metric, label, higher in METRICS:
            e = models[m].get(metric)
            p = a["published"].get(metric)
            v = values(models[m], metric)
            rng = f"{_fmt(float(np.nanmin(v)))} to {_fmt(float(np.nanmax(v)))}" if np.isfinite(v).any() else "n/a"
            where = place_text(p, higher) if p and p.get("seeds") else "no published number"
            rows.append(f"| {m} | {label} | {_fmt(e['mean'], e['std']) if e else 'n/a'} | {rng} | {where} |")
    if any(a["published"] for a in analysis.values()):
        lines += ["The rank counts the published run among our seeds from best to worst: rank 1 of 21 is better "
                  "than every seed, 21 of 21 worse than every seed.", ""]
    else:
        lines += [f"The original study published numbers for {PUBLISHED_DATASET} only; here are the seeds alone.", ""]
    lines += ["| model | metric | ours, mean ± std | our range (min to max) | the published number |",
              "|---|---|---|---|---|"] + rows + [""]
    lines += ["## Code units", "",
              "Every training image encoded, each of the n = 20 code units read without noise (a VAE's mean). "
              "Dead: one value on every training image (for shallow's ReLU code: never fires, so it gets no "
              "gradient again and the model works with fewer units). Inactive: variance over the training images "
              "below 0.01 (Burda et al.'s activity threshold; a VAE's collapsed units are inactive, not dead). "
              "Spearman's rank correlation over seeds, with the least-squares slope (metric per unit).", "",
              "| model | dead units | inactive units | test BCE vs dead | test BCE vs inactive | probe vs dead "
              "| probe vs inactive |", "|---|---|---|---|---|---|---|"]
    for m, a in analysis.items():
        e = models[m]
        cells = [_units_cell(e.get(u)) for u, _ in UNITS]
        for metric, _, _ in METRICS:
            for u, _ in UNITS:
                cells.append(_relation_cell(a["relations"][f"{metric}~{u}"]))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed:", ""]
    for m in models:
        lines += [f"### {m}", "", "| seed | test BCE | probe accuracy | dead units | inactive units |",
                  "|---|---|---|---|---|"]
        cols = [values(models[m], k) for k in ("test_bce", "probe_accuracy", "dead_units", "inactive_units")]
        seeds = next((r.planned.cfg.seed_list for r in results if r.planned.cfg.model == m), [])
        for i, sd in enumerate(seeds):
            lines.append(f"| {sd} | " + " | ".join(_fmt(c[i]) if i < len(c) and math.isfinite(c[i]) else "n/a"
                                                   for c in cols[:2])
                         + " | " + " | ".join(f"{c[i]:.0f}" if i < len(c) and math.isfinite(c[i]) else "n/a"
                                              for c in cols[2:]) + " |")
        lines.append("")
    lines += [f"![seeds]({made})", "",
              "Left panels: each seed as a dot, our mean ± std shaded, the published run as a red line. Right: each "
              "seed's code units against the metric its published number is about.", ""]
    lines += bakeoff_check(out, models)
    lines += ["## What this says", "",
              "Verdicts: confirmed (the rule met), refuted (a significant effect against the claim), not shown (not "
              "significant, or the measure cannot decide). The claim judged for each published number: an ordinary "
              "seed of this model, under this protocol, gives it. Confirmed when it lies inside our seeds' range; "
              "refuted when it lies outside the seeds' 95 % prediction interval (t-test of one new draw against the "
              "seeds' mean and std, S − 1 degrees of freedom, p < 0.05); not shown otherwise.", ""]
    lines += conclusions(summary) + [""]
    atomic_write_text(out / "README.md", "\n".join(lines))


def _units_cell(e: dict | None) -> str:
    if not e or e["mean"] is None:
        return "n/a"
    v = [x for x in e["values"] if x is not None]
    return f"{_units(e)} ({min(v):.0f} to {max(v):.0f})"


def _units(e: dict) -> str:
    """A count's mean ± std over seeds, to one decimal."""
    return f"{e['mean']:.1f} ± {e['std']:.1f}" if e["std"] is not None else f"{e['mean']:.1f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _relation_cell(r: dict) -> str:
    if r.get("spearman") is None:
        return "n/a (no spread)"
    return f"ρ = {r['spearman']:+.2f} ({_p(r['p'])}), {r['slope']:+.3g}/unit"


def _on_the_line(r: dict, p: dict | None, counts: dict, what: str) -> str:
    """Where a published number lands on the least-squares line of the metric against a unit count."""
    if not p or not p.get("seeds") or not r.get("slope"):
        return ""
    k = (p["published"] - r["intercept"]) / r["slope"]
    v = [x for x in counts["values"] if x is not None]
    beyond = " more than" if k > max(v) else (" fewer than" if k < min(v) else "")
    return (f" On that line the published {p['published']:g} corresponds to about {k:.1f} {what},{beyond} "
            f"{'any of ' if beyond else 'within the range of '}our seeds ({min(v):.0f} to {max(v):.0f}).")


def ordinary_seed_part(p: dict) -> Part:
    """The claim "the published single run is what an ordinary seed of this model gives under this protocol".

    Refuted: outside the seeds' 95 % prediction interval (the t-test of one new draw against the seeds' mean,
    df S − 1: t = (published − mean) / (std √(1 + 1/S)), p < 0.05). Not shown otherwise: inside our seeds'
    range or the interval the number is consistent with an ordinary seed, but a difference that is not
    significant confirms nothing (confirming would need an equivalence test with a stated margin).
    """
    from scipy import stats
    from .report import NOT_SHOWN, REFUTED
    label = "an ordinary seed gives the published number"
    if p["inside_range"]:
        return Part(label, NOT_SHOWN, f"inside our {p['seeds']} seeds' range: consistent with one, which "
                                      "confirms nothing")
    s, std = p["seeds"], p["std"]
    if not (s > 1 and std > 0):
        return Part(label, NOT_SHOWN, "no spread over seeds")
    t = (p["published"] - p["mean"]) / (std * math.sqrt(1 + 1 / s))
    pv = float(2 * stats.t.sf(abs(t), s - 1))
    why = f"outside our {s} seeds' range; prediction-interval t-test p = {pv:.2g}"
    return Part(label, REFUTED if pv < 0.05 else NOT_SHOWN, why + ("" if pv < 0.05 else " ≥ 0.05"))


def conclusions(summary: dict) -> list[str]:
    """A sentence per published number (with its verdict, ``ordinary_seed_part``), and one per model on its code
    units."""
    from .report import verdict_cell
    out = []
    for m, a in summary["analysis"].items():
        for metric, label, higher in METRICS:
            p = a["published"].get(metric)
            if not p or not p.get("seeds"):
                continue
            s = p["seeds"]
            if p["inside_range"]:
                verdict = (f"falls inside our {s} seeds' range ({_fmt(p['min'])} to {_fmt(p['max'])}), so one run "
                           "of this model can give it: an unlucky (or lucky) seed, not a different model")
            else:
                side = "worse" if p["better"] == s else "better"
                verdict = (f"is {side} than every one of our {s} seeds ({_fmt(p['min'])} to {_fmt(p['max'])}, "
                           f"{abs(p['z']):.1f} std away): 0 of {s} seeds, so under this protocol a seed gives it "
                           f"in at most {1 - 0.05 ** (1 / s):.0%} of runs (the binomial 95 % upper bound)")
            out.append(f"- {m}, {label}: the published {p['published']:g} {verdict}. Is it what an ordinary seed "
                       f"gives? {verdict_cell([ordinary_seed_part(p)])}.")
        e = summary["models"][m]
        d = e.get("dead_units")
        if d and d["mean"] is not None and max(x for x in d["values"] if x is not None) > 0:
            r = a["relations"]["test_bce~dead_units"]
            tie = (f"Spearman ρ = {r['spearman']:+.2f} ({_p(r['p'])}) with test BCE, about {r['slope']:+.3g} BCE "
                   "per dead unit" if r.get("spearman") is not None
                   else "the count is the same in every seed, so it cannot explain differences between seeds")
            out.append(f"- {m}: {_units(d)} of its code units are dead per seed; {tie}."
                       + _on_the_line(r, a["published"].get("test_bce"), d, "dead units"))
        elif d and d["mean"] is not None:
            out.append(f"- {m}: no dead code units in any seed.")
        u = e.get("inactive_units")
        if u and d and u["values"] == d["values"]:
            out.append(f"- {m}: its inactive units (variance < 0.01) are exactly its dead ones in every seed.")
        elif u and u["mean"] is not None:
            r = a["relations"]["probe_accuracy~inactive_units"]
            tie = (f"Spearman ρ = {r['spearman']:+.2f} ({_p(r['p'])}) with probe accuracy, about "
                   f"{r['slope']:+.3g} per inactive unit" if r.get("spearman") is not None
                   else "the count is the same in every seed, so it cannot explain differences between seeds")
            out.append(f"- {m}: {_units(u)} code units are inactive "
                       f"(variance < 0.01) per seed; {tie}.")
    return out
