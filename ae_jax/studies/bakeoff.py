"""The bake-off: the nine contestants under one protocol, through the same gauntlet.

Plan: every model at n = 20 on the full split (reconstruction, interpolation,
samples where the model has a prior, latent structure, the linear probe,
sample quality, interpolation quality, the probe at every label budget) and
at n = 2 on the anomaly split (reconstruction, latent structure, anomaly
detection), plus two baselines for the probe, each also at every label budget:
the encoder trained from scratch on the labels (``scratch``), and the random
encoder with a trained linear head (``random_encoder``, what the original's
baseline code ran). Summary: ``{model: {metric: {mean, std, values}}}`` with
the anomaly run's metrics prefixed "anomaly_". Its summary, report and
figures (``bakeoff_figures``) go to the results root itself
(``runs/<dataset>/`` unless ``--out`` names another; the committed one is
``results/<dataset>/``).

Best against runner-up: a paired t-test over seeds when both columns are runs
trained on the same seeds by the same source revision (a seed fixes the
minibatch order and the noise draws for every model alike, so seed s of one
model and seed s of another are a pair); Welch's t-test otherwise (the
baselines use other key streams than the probe, so they pair with nothing).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from ..data import SPLIT_SIZES
from ..io import atomic_write_text, fmt_mean_std, read_json
from ..models import CONTESTANTS, get_model
from ..tasks.quality_measures import CONFIDENT
from ..tasks import interp_quality, sample_quality
from ..tasks.reference import REFERENCE_DIR
from ..tasks.label_subsets import BUDGET_PERMILLE
from ..trainer import ExperimentConfig
from ..trainer.results import device_text
from . import bakeoff_figures as bf
from .driver import PlannedRun, RunResult, SplitCache, Study, StudyOptions
from .report import (PAIRED_NAME, SIGNIFICANCE, WELCH_NAME, _fmt, pairs_note, provenance_notes, run_pair_key,
                     task_table)

QUALITY_TASKS = ("sample_quality", "interp_quality", "label_budget")
FULL_TASKS = ("reconstruction", "interpolation", "samples", "latent_structure", "probe") + QUALITY_TASKS
ANOMALY_TASKS = ("reconstruction", "latent_structure", "anomaly")
SCRATCH = "scratch"
RANDOM_ENCODER = "random_encoder"
BASELINE_TASKS = {SCRATCH: (SCRATCH, "scratch_budget"), RANDOM_ENCODER: (RANDOM_ENCODER, "random_encoder_budget")}

PUBLISHED_SCRATCH = 0.4364  # the original's "from scratch" number, which its code computed as random_encoder

# (title, [(metric, label, higher is better (None: shown, not ranked)[, decimals])], note)
TABLES = [
    ("Reconstruction", [("test_bce", "test BCE (summed per image)", False)],
     "Mean over the test set of the per-image BCE summed over the 1024 pixels (n = 20); "
     "the VAE family samples z here too."),
    ("Classification (linear probe, {n_labelled} labels)",
     [("probe_accuracy", "test accuracy", True), ("probe_best_epoch", "best validation epoch", None)],
     "Frozen encoder + bottleneck, linear layer 20 → 10, Adam 1e-3, batch 32 ({steps} steps per epoch), "
     "≤ 20 epochs, early stopping (patience 3) on validation accuracy. Two baselines use no autoencoder: "
     "`scratch` trains the same dense encoder plus a linear layer from scratch on the same labels (every weight "
     "learns); `random_encoder` is what the original study's baseline code ran: the encoder keeps its random "
     "initial weights with BatchNorm in training mode (running statistics updated by the training passes, used "
     "at evaluation) and only the linear layer learns. The published 0.4364 belongs to the second."),
    ("Latent structure (n = 20, UMAP to 2-D)",
     [("knn_accuracy", "5-NN accuracy in 2-D (5-fold)", True), ("silhouette", "silhouette by label", True)],
     "UMAP with default parameters (random_state = seed) of the test-set codes."),
    ("Latent structure (n = 2, anomaly split, raw codes)",
     [("anomaly_knn_accuracy", "5-NN accuracy (5-fold)", True), ("anomaly_silhouette", "silhouette by label", True)],
     "The 2-D codes of the test set as they are."),
    ("Anomaly detection (n = 2, class 1 unseen in training)",
     [("anomaly_auc", "ROC AUC, score = summed BCE", True),
      ("anomaly_auc_signed_bug", "ROC AUC, original's buggy signed score", None)],
     "Positive class: test images of class 1. See the note below on the published AUCs."),
    ("Training time",
     [("train_time_s", "n = 20: wall-clock s, all seeds together", None, 1),
      ("compile_time_s", "n = 20: compile s", None, 1),
      ("seed_samples_per_s", "n = 20: seed-samples per s", None, 0),
      ("anomaly_train_time_s", "n = 2: wall-clock s, all seeds together", None, 1)],
     "All seeds of a model train together in one compiled program, so they share one wall-clock "
     "(the std across seeds is therefore 0); vae and the two β-VAEs, one program up to β, train together and "
     "share theirs. Each program trained at its own time, under whatever else the "
     "machine was running then, so these figures are shown, not ranked: `benchmarks/` times models on an "
     "idle machine."),
]

# (title, [(metric, label, higher is better)], [(metric, one sentence: what it measures and its known limits)])
QUALITY_TABLES = [
    ("Sample quality (n = 20, {n_samples} samples per seed, judged by the reference classifier)",
     [("sample_frechet", "Fréchet distance to the test set", False),
      ("sample_class_entropy", "entropy of the predicted digits (nats; log 10 = 2.303)", True),
      ("sample_confidence", "mean top-class probability", True),
      ("cvae_label_accuracy", "fraction read as the digit asked for", True)],
     [("sample_frechet", "the distance between Gaussians fitted to the reference classifier's 64 penultimate "
       "features of the samples and of the real test images, which rewards realism and variety together; it "
       "sees only means and covariances of one small classifier's features, is biased upwards when either set "
       "is small (here {n_test} test images), and is comparable only between runs judged by the same "
       "classifier. Real training images score {fd_real} against the same test set."),
      ("sample_class_entropy", "how evenly the samples cover the ten digits, from the histogram of the "
       "classifier's predicted classes; it ignores quality, so noise the classifier reads as random digits "
       "scores as high as good samples."),
      ("sample_confidence", "how clearly the samples read as some digit (the mean top-class probability); a "
       "classifier can be confidently wrong on images unlike its training data, and a model that draws one "
       "clean digit over and over scores high."),
      ("cvae_label_accuracy", "for a conditional model, the fraction of samples the classifier reads as the "
       "digit they were conditioned on; capped by the classifier's own test accuracy ({ref_acc}).")]),
    ("Interpolation quality (n = 20, {n_pairs} fixed test pairs of different digits, {n_frames} frames each)",
     [("interp_confident_frac", f"fraction of frames read with confidence ≥ {CONFIDENT}", True),
      ("interp_max_step", "largest step / distance between the ends", False)],
     [("interp_confident_frac", f"the fraction of all frames along the paths that the classifier reads as some "
       f"digit with top-class probability at least {CONFIDENT}, i.e. how much of the path stays among "
       "digit-like images; a path that jumps abruptly from one digit to the other scores high too, so read it "
       "beside the step size."),
      ("interp_max_step", "the largest frame-to-frame pixel change (L2) of a path relative to the distance "
       "between its decoded end images, mean over pairs: 1/{steps} ≈ {even:.4f} for an evenly paced path, near "
       "1 for a jump; it measures smoothness in pixel space only, so a path that cross-fades two blurry digits "
       "scores well.")]),
]
QUALITY_PATH_NOTE = (
    "Paths: the straight line between the two test images' encoder outputs, decoded without sampling noise "
    "(the VAE family decodes μ, vq quantises every frame); the same pairs for every model and seed. Judge: the "
    "reference classifier, a small CNN trained once on the real training split (`{ref_dir}/`, test accuracy "
    "{ref_acc}), never on generated images.")
SAMPLER_NOTE = (
    "Sampler: the models with a prior ({priors}) draw codes from it; the models without one ({fits}) decode "
    "codes drawn from a Gaussian fitted (mean and full covariance) to each seed's own training codes: a "
    "**baseline**, not a sampler those models were trained for (row 'sampler').")
BUDGET_NOTE = (
    "The linear probe (each model's frozen codes) and the two baselines, retrained on {budgets} labelled "
    "training images: {fractions} of the {n_train}-image training split, rounded down, keeping "
    "the budgets that give every digit at least one label{skipped}. Each budget's images are a class-balanced prefix of "
    "one fixed order of the training split, so the smaller sets are inside the larger ones; everything else is "
    "the probe's recipe (validation split, keys, early stopping). `probe_accuracy_<k>labels` holds the "
    "baselines' accuracies too. Limits: one fixed subset per budget, so the spread over seeds leaves out the "
    "variation from which images are labelled; with few labels, early stopping still reads the full "
    "validation split.")

ANOMALY_NOTE = (
    "**On the published anomaly AUCs.** The original study scored each test image by the *signed* sum of "
    "(reconstruction − input), so pixels reconstructed too bright and too dark cancel instead of adding up; "
    "its code switched to a non-negative error after publication, and its AUCs (shallow 0.91 best, the rest "
    "0.78–0.83) are therefore not a target. The first AUC row uses the correct score, the summed BCE; the "
    "second row recomputes the original's signed score on the same models, so the effect of the bug can be "
    "read off directly.")




class Bakeoff(Study):
    name = "bake-off"
    folder = ""
    baselines = (SCRATCH, RANDOM_ENCODER)

    def baseline_tasks(self, name: str) -> tuple[str, ...]:
        return BASELINE_TASKS.get(name, (name,))

    def plan(self, opts: StudyOptions) -> list[PlannedRun]:
        models = list(opts.models) if opts.models else list(CONTESTANTS)
        return [PlannedRun(ExperimentConfig(model=m, dataset=opts.dataset, anomaly=anomaly, seeds=opts.seeds,
                                            epochs=opts.epochs), ANOMALY_TASKS if anomaly else FULL_TASKS)
                for m in models for anomaly in (False, True)]

    def summarize(self, results: list[RunResult], baselines: dict[str, dict]) -> dict:
        summary: dict[str, dict] = {}
        order = [m for m in CONTESTANTS if any(r.planned.cfg.model == m for r in results)]
        order += [r.planned.cfg.model for r in results if r.planned.cfg.model not in order]
        for m in dict.fromkeys(order):
            entry = {}
            for r in results:
                if r.planned.cfg.model != m:
                    continue
                prefix = "anomaly_" if r.planned.cfg.anomaly else ""
                for k, v in r.entry().items():
                    entry[k if k.startswith("anomaly_") or not prefix else prefix + k] = v
            summary[m] = entry
        for name, b in baselines.items():
            summary[name] = {k: {"mean": v["mean"], "std": v["std"], "values": v["values"]}
                             for k, v in b["metrics"].items()}
        return summary

    def report(self, out_dir: Path, summary: dict, results: list[RunResult], opts: StudyOptions,
               session_s: float) -> None:
        dirs: dict[str, dict[str, str]] = {}
        for r in results:
            dirs.setdefault(r.planned.cfg.model, {})[r.planned.cfg.variant] = r.run_dir.name
        write_report(out_dir, summary, results, opts, dirs, session_s)

    def headline(self, summary: dict) -> str:
        return summary_table(summary)


def published_table(summary: dict) -> str:
    """Each published single-run number against our seeds, with the verdict on "an ordinary seed of this model
    gives it" (``more_seeds.ordinary_seed_part``: confirmed inside our seeds' range, refuted outside the seeds'
    95 % prediction interval, not shown in between)."""
    from .more_seeds import ordinary_seed_part, placement
    out = ["| model | published test BCE | ours | an ordinary seed gives it? | published probe acc. | ours "
           "| an ordinary seed gives it? |", "|---|---|---|---|---|---|---|"]

    def cell(m, metric, pub):
        e = summary.get(m, {}).get(metric)
        if not e or e["mean"] is None:
            return "not run", ""
        v = np.asarray([np.nan if x is None else x for x in e["values"]], float)
        part = ordinary_seed_part(placement(v, pub, higher=metric != "test_bce"))
        return _fmt(e["mean"], e["std"]), f"**{part.verdict}** ({part.why})"

    for m in CONTESTANTS:
        pub = get_model(m).published  # the original study's single-run MNIST numbers (docs/protocol.md)
        b, bi = cell(m, "test_bce", pub["test_bce"])
        p, pi = cell(m, "probe_accuracy", pub["probe_accuracy"])
        out.append(f"| {m} | {pub['test_bce']} | {b} | {bi} | {pub['probe_accuracy']} | {p} | {pi} |")
    p, pi = cell(RANDOM_ENCODER, "probe_accuracy", PUBLISHED_SCRATCH)
    out.append(f"| random_encoder (the published 'from scratch') | | | | {PUBLISHED_SCRATCH} | {p} | {pi} |")
    return "\n".join(out)


def pairing_keys(results: Sequence[RunResult], summary: dict) -> dict[str, tuple | None]:
    """{column: key}: equal keys mark columns whose seeds are paired (see the module docstring).

    A model's key is its seed list and the source revisions of its runs
    (config.json; ``report.run_pair_key``): two models are pairs only when
    their runs were trained by the same revisions. A model whose runs disagree
    on the seeds, or one of whose runs has no committed revision recorded, gets
    None. The baselines draw their own key streams, so each gets a key of its own.
    """
    keys: dict[str, tuple | None] = {}
    for r in results:
        m = r.planned.cfg.model
        k = run_pair_key(r)
        if k is None or (m in keys and (keys[m] is None or keys[m][0] != k[0])):
            keys[m] = None
            continue
        seeds, rev = k
        keys[m] = (seeds, tuple(sorted(set((keys.get(m) or ((), ()))[1]) | {rev})))
    for b in (SCRATCH, RANDOM_ENCODER):
        if b in summary:
            keys[b] = ("baseline", b)
    return keys


def _tests_used(table: str) -> str:
    used = [t for t in (PAIRED_NAME, WELCH_NAME) if f": {t} p = " in table]
    if used == [PAIRED_NAME]:
        return ("Best vs runner-up: paired t-test over seeds (both trained on the same seeds by the same source "
                "revision, so each seed gives both the same minibatch order and noise draws).")
    if used == [WELCH_NAME]:
        return "Best vs runner-up: Welch's t-test (the two columns are not paired by seed)."
    if used:
        return ("Best vs runner-up: a paired t-test over seeds between models trained on the same seeds by the "
                "same source revision, Welch's t-test where a baseline or an unpaired run is involved; each cell "
                "names its test.")
    return ""


def _info(results: Sequence[RunResult], task: str, key: str):
    """The first value of tasks/<task>.json's info[key] among the runs, or None."""
    for r in results:
        v = (r.tasks.get(task) or {}).get("info", {}).get(key)
        if v is not None:
            return v
    return None


def _unavailable_note(results: Sequence[RunResult]) -> list[str]:
    old = [f"{r.run_dir.name} ({', '.join(r.unavailable)})" for r in results if r.unavailable]
    if not old:
        return []
    return ["**Not available for runs from older code.** These runs were finished by an older version whose "
            "trained parameters are not in the repository, so the tasks added since could not run on them; their "
            "cells are empty: " + "; ".join(old) + ".", ""]


def _judges(results: Sequence[RunResult]) -> dict[str, list[str]]:
    """The reference classifiers (params.npz SHA-256) that judged the quality tasks, each with its runs' names.

    Runs from before the hash was recorded are left out: which judge they had is not known.
    """
    judges: dict[str, list[str]] = {}
    for r in results:
        for t in ("sample_quality", "interp_quality"):
            h = (r.tasks.get(t) or {}).get("info", {}).get("reference_params_sha256")
            if h and r.run_dir.name not in judges.setdefault(h, []):
                judges[h].append(r.run_dir.name)
    return judges


def _judges_note(results: Sequence[RunResult]) -> list[str]:
    judges = _judges(results)
    if len(judges) < 2:
        return []
    which = "; ".join(f"`{h[:12]}`: {', '.join(runs)}" for h, runs in judges.items())
    return [f"**More than one judge.** These runs' quality numbers come from {len(judges)} different reference "
            f"classifiers (the SHA-256 of their parameters, then the runs): {which}. A classifier retrained "
            f"elsewhere (another machine, another JAX) judges slightly differently, so compare across them with "
            f"care; rerun the study with --force to judge every run by the one in `{REFERENCE_DIR}/`.", ""]


def quality_sections(summary: dict, results: Sequence[RunResult], order: Sequence[str], opts,
                     pairing: dict) -> list[str]:
    """The sample-quality, interpolation-quality and label-budget tables with their notes."""
    lines: list[str] = []
    judges = _judges_note(results)  # under the first quality heading
    ref_acc = _info(results, "sample_quality", "reference_test_accuracy") \
        or _info(results, "interp_quality", "reference_test_accuracy")
    fd_real = _info(results, "sample_quality", "frechet_train_vs_test")
    n_frames = _info(results, "interp_quality", "frames") or interp_quality.N_FRAMES
    fill = {"n_samples": f"{_info(results, 'sample_quality', 'n_samples') or sample_quality.N_SAMPLES:,}",
            "n_pairs": _info(results, "interp_quality", "pairs") or interp_quality.N_PAIRS,
            "n_frames": n_frames, "steps": n_frames - 1, "even": 1 / (n_frames - 1),
            "ref_acc": _fmt(ref_acc), "fd_real": _fmt(fd_real), "ref_dir": REFERENCE_DIR,
            "n_test": f"{_info(results, 'sample_quality', 'n_test') or 0:,}"}
    for title, rows, notes in QUALITY_TABLES:
        rows = [r for r in rows if any(r[0] in summary.get(m, {}) for m in order)]
        t = task_table(summary, rows, order, pairing)
        if not t:
            continue
        lines += [f"## {title.format(**fill)}", ""] + judges
        judges = []
        if rows[0][0].startswith("sample_"):
            cols = [m for m in order if any(r[0] in summary.get(m, {}) for r in rows)]
            priors = [m for m in cols if get_model(m).can_sample]
            fits = [m for m in cols if not get_model(m).can_sample]
            table = t.splitlines()
            sampler = "| sampler | " + " | ".join("prior" if m in priors else "Gaussian fit (baseline)"
                                                  for m in cols) + " | |"
            t = "\n".join(table[:2] + [sampler] + table[2:])
            lines += [SAMPLER_NOTE.format(priors=", ".join(priors) or "no model",
                                          fits=", ".join(fits) or "no model"), ""]
        else:
            lines += [QUALITY_PATH_NOTE.format(**fill), ""]
        lines += [t, ""] + ([_tests_used(t), ""] if _tests_used(t) else [])
        lines += [f"- `{metric}`: {text.format(**fill)}" for metric, text in notes if any(metric == r[0] for r in rows)]
        lines += [""]
    budgets, _ = bf.budget_curves(summary, list(order) + [SCRATCH, RANDOM_ENCODER])
    if budgets:
        cols = list(order) + [b for b in (SCRATCH, RANDOM_ENCODER) if b in summary]
        rows = [(f"probe_accuracy_{b}labels", f"{b:,} labels", True) for b in budgets]
        t = task_table(summary, rows, cols, pairing)
        n_train = _info(results, "label_budget", "n_train")
        if n_train is None:
            n_train = SPLIT_SIZES["digits" if opts.dataset == "digits" else "idx"][0] \
                - SPLIT_SIZES["digits" if opts.dataset == "digits" else "idx"][1]
        full = (55, 550, 5_500, 55_000)
        kept = [f"{k / 10:g} %" for k in BUDGET_PERMILLE if n_train * k // 1000 in budgets]  # the fractions shown
        fractions = " and ".join([", ".join(kept[:-1]), kept[-1]] if len(kept) > 1 else kept)
        lines += ["## Label budget (test accuracy at every number of labels)", "",
                  BUDGET_NOTE.format(budgets=", ".join(f"{b:,}" for b in budgets), n_train=f"{n_train:,}",
                                     fractions=fractions,
                                     skipped=(" (on MNIST's 55,000 training images the same fractions give 55, "
                                              "550, 5,500 and 55,000 labels)" if tuple(budgets) != full else "")),
                  "",
                  t, ""] + ([_tests_used(t), ""] if _tests_used(t) else [])
        lines += two_label_sets_note(summary, cols, opts.dataset)
    return lines


def two_label_sets_note(summary: dict, cols: Sequence[str], dataset: str) -> list[str]:
    """Why the classification table and the label-budget row of the same size give two accuracies: two label
    sets (the protocol's labelled split, and the budget study's nested class-balanced prefix); both shown."""
    n = SPLIT_SIZES["digits" if dataset == "digits" else "idx"][2]
    metric = f"probe_accuracy_{n}labels"
    both = [m for m in cols if "probe_accuracy" in summary.get(m, {}) and metric in summary.get(m, {})]
    if not both:
        return []
    pairs = "; ".join(f"{m} {_fmt(summary[m]['probe_accuracy']['mean'])} vs {_fmt(summary[m][metric]['mean'])}"
                      for m in both)
    return [f"**Two label sets of {n:,} images.** The classification table above and the {n:,}-label row here "
            f"use different labelled images: the table, the protocol's labelled split (the first {n:,} images of "
            "the split permutation); this row, the budget study's class-"
            "balanced prefix, which the smaller and larger budgets contain or extend (the protocol's split is not "
            "such a prefix, so it cannot be a point of the nested curve). Everything else is the same recipe, so "
            "the two accuracies differ only by which images carry labels (table vs this row): " + pairs + ". "
            "Neither std includes that variation.", ""]


def figure_sections(root: Path, summary: dict, order: Sequence[str], dirs: dict) -> list[str]:
    lines = bf.fig_reconstructions(root, order, dirs)
    samples = bf.fig_samples(root, order, dirs, summary)
    lines += samples
    if samples and "vq" in order:
        lines += ["vq samples draw one of 512 learned scalars per latent dimension uniformly; entries that "
                  "were never nearest to an encoder output get no gradient and stay near their "
                  "uniform(±1/512) initialisation, near 0. Uniform draws therefore land mostly on codes the decoder "
                  "never saw in training, and the samples come out blurred or near-identical; the VAE family's "
                  "KL term is what pulls its codes towards the prior it is sampled from.", ""]
    lines += bf.fig_interpolations(root, order, dirs, summary)
    lines += bf.fig_latent(root, order, dirs, "full")
    lines += bf.fig_latent(root, [m for m in order if "anomaly" in dirs[m]], dirs, "anomaly")
    lines += bf.fig_roc(root, [m for m in order if "anomaly" in dirs[m]], dirs, summary)
    lines += bf.fig_label_budget(root, order, [b for b in (SCRATCH, RANDOM_ENCODER) if b in summary], summary)
    gifs = [(m, dirs[m]["full"], f) for m in order for f in ("interpolation.gif", "interpolation_fixed_noise.gif")
            if (root / dirs[m]["full"] / f).exists()]
    if gifs:
        lines += ["### Interpolations as animations (first two test images, 130 frames forward and back)", ""]
        lines += [" · ".join(f"[{m}{' (noise fixed)' if 'fixed' in f else ''}]({d}/{f})" for m, d, f in gifs), ""]
    return lines


def load_note(results) -> str:
    """A sentence on the runs that trained on a machine busier than its cores, or "" when none did.

    Each run records its load average and core count when training started; a
    run recorded before core counts were is taken to have trained on this machine.
    """
    loads = [(t["load_average_at_start"], t.get("cpu_count") or os.cpu_count() or 1)
             for t in (r.metrics["timing"] for r in results) if t.get("load_average_at_start") is not None]
    contended = [(load, cores) for load, cores in loads if load > cores]
    if not contended:
        return ""
    load, cores = max(contended, key=lambda lc: lc[0] / lc[1])  # the most contended run
    return (f" Load average when training started: up to {load:.1f} on {cores} cores, so wall-clock figures "
            "include time shared with other jobs; `benchmarks/` has uncontended figures.")


def write_report(root: Path, summary: dict, results, opts, dirs: dict, session_s: float) -> None:
    models = [m for m in summary if m not in (SCRATCH, RANDOM_ENCODER)]
    compute = sum(t["seconds"] for r in results for t in r.tasks.values())
    train = sum(r.metrics["timing"]["train_time_s"] + r.metrics["timing"]["compile_time_s"] for r in results)
    devices = sorted({device_text(r.metrics["device"]) for r in results})
    lines = [f"# Bake-off on {opts.dataset}", "",
             "Produced by (rerun it to reproduce; finished models are reused, `--force` redoes them):", "",
             f"    {opts.command}", "",
             f"- Machine: {platform.machine()} with {jax.device_count()} {jax.devices()[0].platform} device(s); "
             f"training devices recorded: {', '.join(devices) or 'n/a'}",
             f"- Seeds: {opts.seeds}; epochs: {opts.epochs}. Every number is mean ± sample std over seeds.",
             f"- Compute: {train:.0f} s training + compile, {compute:.0f} s tasks, summed over models "
             f"(this invocation: {session_s:.0f} s; models trained earlier were reused)."
             + load_note(results),
             "- Best mean in **bold**; the last column tests the best against the runner-up over seeds "
             f"(significant at p < {SIGNIFICANCE}): a paired t-test where both were trained on the same seeds by "
             "the same source revision (a seed gives every model the same minibatch order and noise draws), "
             "Welch's t-test otherwise (the baselines, and runs of different revisions); each cell names its test and each "
             "table says which it used.",
             "- Per-seed values: `summary.json`; per-model details: `<model>/metrics.json`, "
             "`<model>/tasks/<task>.json`, `<model>/curves.jsonl`."]
    lines += provenance_notes(results)
    lines += _unavailable_note(results)
    order = [m for m in CONTESTANTS if m in models] + [m for m in models if m not in CONTESTANTS]
    pairing = pairing_keys(results, summary)
    lines += pairs_note({m: k for m, k in pairing.items() if m in models or m in summary}) + [""]
    n_labelled = SPLIT_SIZES["digits" if opts.dataset == "digits" else "idx"][2]
    fill = {"n_labelled": n_labelled, "steps": -(-n_labelled // 32)}
    for title, rows, note in TABLES:
        title, note = title.format(**fill), note.format(**fill)
        cols = order + ([b for b in (SCRATCH, RANDOM_ENCODER) if b in summary] if rows[0][0] == "probe_accuracy"
                        else [])
        t = task_table(summary, rows, cols, pairing)
        if t:
            lines += [f"## {title}", "", note, "", t, ""] + ([_tests_used(t), ""] if _tests_used(t) else [])
            if title.startswith("Anomaly"):
                lines += [ANOMALY_NOTE, ""] + below_chance_note(summary, order, anomaly_ink(results, opts))
            if rows[0][0] == "probe_accuracy":
                lines += probe_limit_note(summary, order)
    lines += quality_sections(summary, results, order, opts, pairing)
    if opts.dataset == "mnist":
        lines += ["## Against the published single-run numbers", "",
                  "The original study ran each model once. The claim judged for each published number: an "
                  "ordinary seed of this model, under this protocol, gives it. Confirmed when it lies inside our "
                  "seeds' range; refuted when it lies outside the seeds' 95 % prediction interval (t-test of one "
                  "new draw against the seeds' mean and std, S − 1 degrees of freedom, p < 0.05); not shown "
                  "otherwise (outside the range, not significantly).", "", published_table(summary), ""] + more_seeds_lines(root)
    lines += ["## Figures", ""] + figure_sections(root, summary, order, dirs)
    missing = [m for m in CONTESTANTS if m not in models]
    if missing:
        lines += ["## Not yet run", "", ", ".join(missing), ""]
    atomic_write_text(root / "README.md", "\n".join(lines))


def _means(summary: dict, models: Sequence[str], metric: str) -> dict[str, float]:
    """{model: mean of metric} for the models that have a finite one."""
    out = {}
    for m in models:
        v = (summary.get(m, {}).get(metric) or {}).get("mean")
        if v is not None and np.isfinite(v):
            out[m] = float(v)
    return out


def anomaly_ink(results: Sequence[RunResult], opts: StudyOptions) -> dict | None:
    """The ink (pixel sum) of the anomaly runs' test images against their scores, or None without such runs.

    {"class_ink": [10] mean ink per class, "corr": {model: [each valid seed's correlation between its
    anomaly score (roc.npz) and an image's ink]}}; the images are the test split the scores were computed on.
    """
    runs = [r for r in results if r.planned.cfg.anomaly and (r.run_dir / "roc.npz").exists()]
    if not runs:
        return None
    split = SplitCache(opts.dataset, opts.data_dir)(runs[0].planned.cfg.variant)
    y = np.asarray(split.y_test)
    ink = np.asarray(split.x_test, np.float64).reshape(len(y), -1).sum(axis=1)
    corr = {}
    for r in runs:
        with np.load(r.run_dir / "roc.npz") as d:
            if d["scores"].shape[1] != len(y):
                continue
            corr[r.planned.cfg.model] = [float(np.corrcoef(s, ink)[0, 1])
                                         for s, ok in zip(d["scores"], d["valid"]) if ok and np.isfinite(s).all()]
    return {"class_ink": [float(ink[y == k].mean()) for k in range(10)], "corr": corr}


def below_chance_note(summary: dict, order: Sequence[str], ink: dict | None = None) -> list[str]:
    """What an anomaly AUC below 0.5 means, with the per-class test BCE (and the ink) that show why; [] when
    no model's AUC is below 0.5."""
    from scipy import stats
    auc = _means(summary, order, "anomaly_auc")
    low, counts = [], {}
    for m, v in auc.items():  # below chance where a one-sample t-test over seeds says so, not by the mean alone
        vals = [x for x in (summary[m].get("anomaly_auc") or {}).get("values", []) if x is not None and np.isfinite(x)]
        p = float(stats.ttest_1samp(vals, 0.5).pvalue) if len(vals) > 1 and np.std(vals) > 0 else float("nan")
        if v < 0.5 and p < SIGNIFICANCE:
            low.append(m)
            counts[m] = (sum(x < 0.5 for x in vals), len(vals), p)
    if not low:
        return []
    who = ("Every model ranks" if len(low) == len(auc) else
           f"{', '.join(low)} rank" if len(low) > 1 else f"{low[0]} ranks")
    text = (f"**AUCs below 0.5.** {who} the unseen 1s as *more* typical than the digits seen in training, "
            "not less: the mean AUC over seeds is below 0.5 by a one-sample t-test against 0.5 (p < "
            f"{SIGNIFICANCE}; " + "; ".join(f"{m}: {k} of {n} seeds below 0.5, p = {p:.2g}"
                                            for m, (k, n, p) in counts.items()) + ").")
    gaps = []
    for m in low:
        c = [(summary[m].get(f"anomaly_test_bce_class{k}") or {}).get("mean") for k in range(10)]
        if all(v is not None and np.isfinite(v) for v in c):
            gaps.append(float(np.mean(c[:1] + c[2:])) - c[1])
    below = [g for g in gaps if g > 0]
    if below:
        where = ("On this model" if len(gaps) == 1 else "On each of them" if len(below) == len(gaps)
                 else f"On {len(below)} of them")
        text += (f" {where}, the class-1 test images' mean BCE is lower than the other nine classes' mean, by "
                 + (f"{min(below):.0f} to {max(below):.0f}" if len(below) > 1 else f"{below[0]:.0f}")
                 + " (`anomaly_test_bce_class<k>` in `summary.json`).")
    if ink:
        cls = ink["class_ink"]
        corr = [c for m in low for c in ink["corr"].get(m, [])]
        if int(np.argmin(cls)) == 1 and corr and min(corr) > 0:
            others = cls[:1] + cls[2:]
            text += (f" A 1 has the least ink of any class (mean pixel sum {cls[1]:.0f}, the others "
                     f"{min(others):.0f} to {max(others):.0f}), and the score rises with an image's ink: their "
                     f"correlation is {min(corr):.2f} to {max(corr):.2f} over these models' seeds (each run's "
                     "`roc.npz` against the test images).")
    if len(low) == len(auc):
        text += " The bold marks the highest AUC: here the least inverted ranking, not a working detector."
    return [text, ""]


def probe_limit_note(summary: dict, order: Sequence[str]) -> list[str]:
    """How often the probe's best epoch was its last allowed one (it was still improving); [] when never."""
    from ..tasks.probe import PROBE_EPOCHS
    at_limit = total = 0
    for m in order:
        values = [v for v in (summary.get(m, {}).get("probe_best_epoch") or {}).get("values", [])
                  if v is not None and np.isfinite(v)]
        at_limit += sum(v >= PROBE_EPOCHS for v in values)
        total += len(values)
    if not at_limit:
        return []
    return [f"The probe's best validation epoch was its last allowed one ({PROBE_EPOCHS}) in {at_limit} of {total} "
            "seeds over the models: those probes were still improving when the protocol's epoch limit stopped "
            "them, so their accuracy also reflects how fast a linear layer learns on each model's codes, not only "
            "what the codes hold.", ""]


def more_seeds_lines(root: Path) -> list[str]:
    """Where the published numbers rank among more seeds, when experiments/more_seeds.py has run beside this study."""
    from .more_seeds import FOLDER, METRICS, place_text
    path = root / FOLDER / "summary.json"
    if not path.exists():
        return []
    placed = read_json(path)["analysis"]
    out = [f"- {m}, {label}: published {place_text(p, higher)}" for m, a in placed.items()
           for metric, label, higher in METRICS for p in [a["published"].get(metric)] if p and p.get("seeds")]
    if not out:
        return []
    return [f"With more seeds (`{FOLDER}/`: each model trained again with its own, larger set of seeds; details and "
            "dead code units there):", ""] + out + [""]


SUMMARY_COLUMNS = ("test_bce", "probe_accuracy", "knn_accuracy", "anomaly_auc", "train_time_s")


def summary_table(summary: dict) -> str:
    """The headline numbers, one row per model, mean ± std."""
    rows = [("model",) + SUMMARY_COLUMNS]
    for m, e in summary.items():
        rows.append((m,) + tuple(fmt_mean_std(e[k]) if k in e else "" for k in SUMMARY_COLUMNS))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)
