"""The whole bake-off end to end, once, on digits; what it writes (summary.json, the report, each run's
tasks/<task>.json, the figures and their arrays); reuse; the linear probe and the baselines on real labels;
the quality tasks (samples, interpolation paths, label budgets) wired to the reference classifier; paired and
Welch tests; runs from older code; the CLI's bad-input errors.

The module-scoped ``bakeoff`` fixture runs ``experiments/bakeoff.py``'s ``main`` in this process
(sharing the compilation cache and numba's UMAP warm-up with the rest of the suite) with two models,
two seeds and three epochs, few samples and interpolation pairs, then runs it a second time to check that
everything is reused. The tests read what it wrote; the anomaly, probe and quality tests reload its trained
models.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from _helpers import REPO, assert_one_line_error, invoke_script, read_curves, subprocess_env
from ae_jax import figures
from ae_jax.tasks import label_subsets as lb
from ae_jax.tasks import classifier as rc
from ae_jax.tasks import quality_measures as sq
from ae_jax.data import Data, load_splits
from ae_jax.io import read_json, write_json
from ae_jax.models import MODELS
from ae_jax.studies import STUDIES, StudyOptions
from ae_jax.studies import bakeoff as bakeoff_mod
from ae_jax.studies import report
from ae_jax.studies.bakeoff import (ANOMALY_NOTE, ANOMALY_TASKS, BASELINE_TASKS, FULL_TASKS, QUALITY_TABLES,
                                    RANDOM_ENCODER, SCRATCH, TABLES)
from ae_jax.studies.driver import LEGACY_TASKS, TimeLedger
from ae_jax.tasks import TASKS, EvalContext, interp_quality, task_path
from ae_jax.tasks.reference import REFERENCE_DIR
from ae_jax.tasks import sample_quality as sample_quality_task
from ae_jax.tasks.probe import PROBE_EPOCHS, linear_probe
from ae_jax.tasks.scratch import scratch_baseline
from ae_jax.trainer import ExperimentConfig, evaluate_runs, load_final_state
from ae_jax.trainer.program import TrainConfig, init_state, make_model, run_keys, spec_hparams

BAKEOFF_PY = REPO / "experiments" / "bakeoff.py"
SEEDS, EPOCHS, RUN_MODELS = 2, 3, ("vanilla", "vae")
ARGS = ["--dataset=digits", f"--seeds={SEEDS}", f"--epochs={EPOCHS}", "--models=" + ",".join(RUN_MODELS)]
BASELINES = (SCRATCH, RANDOM_ENCODER)
BATCH = 256  # the bake-off trains with ExperimentConfig's default batch size
SAMPLES, PAIRS = 300, 12  # per seed, instead of 10 000 samples and 100 pairs
BUDGETS = (13, 135, 1350)  # digits' label budgets (1 350 training images)


def file_state(root):
    """{relative path: mtime_ns} of every per-model file the bake-off writes (checkpoints included)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(("grid_", "fig_")) and p.name not in ("README.md", "summary.json")}


def run_dirs(root, models):
    """{model: {"full": folder, "anomaly": folder}} and {folder: tasks planned} from the study's own plan."""
    plan = STUDIES["bakeoff"].plan(StudyOptions(dataset="digits", models=models, seeds=SEEDS, epochs=EPOCHS,
                                                out=root))
    dirs: dict[str, dict[str, str]] = {}
    for p in plan:
        dirs.setdefault(p.cfg.model, {})[p.cfg.variant] = p.cfg.name()
    return dirs


@pytest.fixture(scope="module")
def bakeoff(tmp_path_factory):
    root = tmp_path_factory.mktemp("bakeoff") / "digits"
    argv = ARGS + [f"--out={root}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sample_quality_task, "N_SAMPLES", SAMPLES)
        mp.setattr(interp_quality, "N_PAIRS", PAIRS)
        rc, log1 = invoke_script(BAKEOFF_PY, argv)
        assert rc == 0, log1[-3000:]
        readme1 = (root / "README.md").read_text()
        summary1 = read_json(root / "summary.json")
        before = file_state(root)
        rc2, log2 = invoke_script(BAKEOFF_PY, argv)  # everything is done: nothing may be retrained or re-evaluated
        assert rc2 == 0, log2[-3000:]
    return types.SimpleNamespace(root=root, argv=argv, log1=log1, log2=log2, readme1=readme1, summary1=summary1,
                                 before=before, after=file_state(root), dirs=run_dirs(root, RUN_MODELS))


@pytest.fixture(scope="module")
def summary(bakeoff):
    return read_json(bakeoff.root / "summary.json")


@pytest.fixture(scope="module")
def labelled():
    return load_splits("digits", "labelled")


def finite(values):
    return [v for v in values if v is not None and math.isfinite(v)]


# ------------------------------------------------------------------ summary.json
def test_summary_json_has_every_model_and_metric_with_mean_std_and_one_value_per_seed(summary):
    assert set(summary) == set(RUN_MODELS) | set(BASELINES)
    budget_keys = {f"probe_accuracy_{k}labels" for k in BUDGETS}
    required = ("test_bce", "test_mse", "probe_accuracy", "knn_accuracy", "silhouette", "anomaly_auc",
                "anomaly_test_bce", "train_time_s", "sample_frechet", "sample_class_entropy", "sample_confidence",
                "interp_confident_frac", "interp_max_step", *sorted(budget_keys))
    for m in RUN_MODELS:
        missing = [k for k in required if k not in summary[m]]
        assert not missing, f"{m} lacks {missing}"
        assert "cvae_label_accuracy" not in summary[m]  # conditional models only
        assert not {k for k in summary[m] if "labels" in k} - budget_keys, m
    for b in BASELINES:
        assert set(summary[b]) == {"probe_accuracy", "probe_best_epoch"} | budget_keys
    for m, entry in summary.items():
        for k, v in entry.items():
            where = f"{m}/{k}"
            assert set(v) == {"mean", "std", "values"}, where
            assert isinstance(v["values"], list) and len(v["values"]) == SEEDS, where
            vals = finite(v["values"])
            if vals:
                assert isinstance(v["mean"], float), where
                assert v["mean"] == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12), where
            if len(vals) >= 2:
                assert v["std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9, abs=1e-12), where


def test_summary_is_assembled_from_each_runs_files(bakeoff, summary):
    """Every number in summary.json is the one its run wrote: metrics.json and tasks/<task>.json of the n = 20
    run as they are, the anomaly run's with the prefix "anomaly_"; the baselines' from their own task files."""
    for m in RUN_MODELS:
        expect = {}
        for variant, tasks in (("full", FULL_TASKS), ("anomaly", ANOMALY_TASKS)):
            d = bakeoff.root / bakeoff.dirs[m][variant]
            metrics = read_json(d / "metrics.json")
            found = dict(metrics["metrics"])
            for t in tasks:
                if (d / "tasks" / f"{t}.json").exists():
                    found.update(read_json(task_path(d, t))["metrics"])
            assert found["train_time_s"]["values"] == [metrics["timing"]["train_time_s"]] * SEEDS
            for k, v in found.items():
                key = k if variant == "full" or k.startswith("anomaly_") else "anomaly_" + k
                expect[key] = v["values"]
        timing = {p + k for p in ("", "anomaly_") for k in ("compile_time_s", "seed_samples_per_s")}
        assert set(summary[m]) == set(expect) | timing, m
        for k, vals in expect.items():
            np.testing.assert_allclose(np.array(summary[m][k]["values"], float), np.array(vals, float), rtol=1e-12,
                                       err_msg=f"{m}/{k}")
    for b in BASELINES:
        for t in BASELINE_TASKS[b]:
            saved = read_json(task_path(bakeoff.root / b, t))
            assert saved["seeds"] == list(range(SEEDS))
            for k, v in saved["metrics"].items():
                assert summary[b][k]["values"] == v["values"], (b, t, k)


def test_summary_numbers_say_the_models_learnt(summary, bakeoff):
    """Floors an untrained or mis-wired run would miss: every seed's training loss falls from epoch to epoch;
    a test BCE below a constant grey image's (1024 ln 2; 3 epochs are too few to beat the mean image's);
    vanilla's 2-D embedded codes separate the digits (5-NN accuracy well above chance, 0.1; after 3 epochs
    the VAE's sampled codes are still too noisy for that); different numbers per seed."""
    for m in RUN_MODELS:
        e = summary[m]
        for variant, folder in bakeoff.dirs[m].items():
            train = np.array([c["train_loss"] for c in read_curves(bakeoff.root / folder)])  # (epochs, seeds)
            assert train.shape == (EPOCHS, SEEDS) and (np.diff(train, axis=0) < 0).all(), (m, variant, train)
        assert all(v < 1024 * math.log(2) for v in e["test_bce"]["values"]), m
        assert len(set(e["train_time_s"]["values"])) == 1  # one wall-clock shared by the seeds
        assert all(1 <= v <= PROBE_EPOCHS for v in e["probe_best_epoch"]["values"])
    assert all(v > 0.5 for v in summary["vanilla"]["knn_accuracy"]["values"])
    assert len(set(summary["vanilla"]["test_bce"]["values"])) == SEEDS  # the seeds are different runs


# ------------------------------------------------------------------ README.md
def sections(readme: str) -> dict[str, str]:
    parts = re.split(r"^## ", readme, flags=re.M)
    return {p.splitlines()[0].strip(): p for p in parts[1:]}


def table(section: str) -> list[list[str]]:
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not set(r) <= set("|-")]


def report_tables():
    """(title, rows) of the bake-off's TABLES with the digits label count filled in."""
    n = len(load_splits("digits", "labelled").x_train)
    fill = {"n_labelled": n, "steps": -(-n // 32)}
    return [(title.format(**fill), rows) for title, rows, _ in TABLES]


def test_readme_names_the_command_that_reproduces_it(bakeoff):
    readme = (bakeoff.root / "README.md").read_text()
    lines = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("python experiments/bakeoff.py")]
    assert lines, "no command line in the README"
    assert shlex.split(lines[0])[2:] == bakeoff.argv
    revs = {read_json(bakeoff.root / bakeoff.dirs[m][v] / "config.json")["revision"] for m in RUN_MODELS
            for v in ("full", "anomaly")}
    [line] = [ln for ln in readme.splitlines() if ln.startswith("- Trained by source revision")]
    assert all(f"`{r[:7]}" in line for r in revs if r) and bakeoff.dirs[RUN_MODELS[0]]["full"] in line


def test_readme_has_a_table_per_task_with_the_models_as_columns_and_the_best_in_bold(bakeoff, summary):
    secs = sections((bakeoff.root / "README.md").read_text())
    for title, rows in report_tables():
        assert title in secs, f"no section {title!r}; have {list(secs)}"
        t = table(secs[title])
        expect = list(RUN_MODELS) + (list(BASELINES) if rows[0][0] == "probe_accuracy" else [])
        assert t[0] == ["metric"] + expect + ["best vs runner-up"], title
        by_label = {r[0]: r[1:] for r in t[1:]}
        for metric, label, higher, *_ in rows:
            cells = by_label[label]
            assert len(cells) == len(expect) + 1
            bold = [c for c, cell in zip(expect, cells) if cell.startswith("**")]
            if higher is None:
                assert bold == [] and cells[-1] == "", label
                continue
            means = {c: summary[c][metric]["mean"] for c in expect}
            best = (max if higher else min)(means, key=means.get)
            tied = [c for c in expect if means[c] == means[best]]  # a shared best mean: all of them bold
            assert bold == tied, f"{label}: bold {bold}, best by mean {tied} ({means})"
            # the printed number is the summary's mean
            assert cells[expect.index(best)].strip("*").split(" ± ")[0] == report._fmt(means[best]), label


def all_report_tables(summary):
    """(title prefix, rows, columns) of every table of the report: TABLES, the quality tables, the label budgets."""
    out = [(title, rows, list(RUN_MODELS) + (list(BASELINES) if rows[0][0] == "probe_accuracy" else []))
           for title, rows in report_tables()]
    for title, rows, _ in QUALITY_TABLES:
        rows = [r for r in rows if any(r[0] in summary[m] for m in RUN_MODELS)]
        out.append((title.split(" (")[0], rows, list(RUN_MODELS)))
    out.append(("Label budget", [(f"probe_accuracy_{k}labels", f"{k:,} labels", True) for k in BUDGETS],
                list(RUN_MODELS) + list(BASELINES)))
    return out


def test_readme_tests_best_against_runner_up_paired_between_models_and_welch_against_a_baseline(bakeoff, summary):
    """Two models trained on the same seeds by the same code are compared with a paired t-test over seeds; a
    baseline (its own key streams) with Welch's; the cell names the test and the table says which it used."""
    from scipy import stats
    secs = sections((bakeoff.root / "README.md").read_text())
    seen = {"paired t-test": 0, "Welch": 0}
    for prefix, rows, cols in all_report_tables(summary):
        [sec] = [s for t, s in secs.items() if t.startswith(prefix)]
        by_label = {r[0]: r[1:] for r in table(sec)[1:]}
        used = set()
        for metric, label, higher, *_ in rows:
            if higher is None:
                continue
            have = [c for c in cols if metric in summary[c]]
            order = sorted(have, key=lambda c: summary[c][metric]["mean"], reverse=higher)
            a, b = order[0], order[1]
            va, vb = summary[a][metric]["values"], summary[b][metric]["values"]
            last = by_label[label][-1]
            tied = [c for c in order if summary[c][metric]["mean"] == summary[a][metric]["mean"]]
            if len(tied) > 1:  # no best to test
                assert last == f"{', '.join(tied[:-1])} and {tied[-1]} tie", label
                continue
            if np.std(finite(va)) == 0 or np.std(finite(vb)) == 0:  # a shared wall-clock, or tied seeds: no test
                assert last == f"{a} ahead of {b} (no test possible)", label
                continue
            if a in RUN_MODELS and b in RUN_MODELS:
                test, p = "paired t-test", stats.ttest_rel(va, vb).pvalue
            else:
                test, p = "Welch", stats.ttest_ind(finite(va), finite(vb), equal_var=False).pvalue
            verdict = "significant" if p < report.SIGNIFICANCE else "not significant"
            assert last == f"{a} vs {b}: {test} p = {p:.2g} ({verdict})", label
            seen[test] += 1
            used.add(test)
        says = [ln for ln in sec.splitlines() if ln.startswith("Best vs runner-up:")]
        if used:
            assert len(says) == 1, prefix
            assert (("paired t-test" in says[0]) == ("paired t-test" in used)
                    and ("Welch" in says[0]) == ("Welch" in used)), (prefix, says, used)
    assert seen["paired t-test"] >= 5 and seen["Welch"] >= 1, seen


def test_readme_says_no_seed_diverged_when_none_did(bakeoff):
    diverged = [d for m in RUN_MODELS for v in ("full", "anomaly")
                for d in read_json(bakeoff.root / bakeoff.dirs[m][v] / "metrics.json")["diverged"]]
    assert diverged == []
    assert "- Diverged seeds: none." in (bakeoff.root / "README.md").read_text()


def test_readme_states_the_anomaly_scoring_note(bakeoff):
    secs = sections((bakeoff.root / "README.md").read_text())
    anomaly = [s for t, s in secs.items() if t.startswith("Anomaly")]
    assert len(anomaly) == 1 and ANOMALY_NOTE in anomaly[0]


def test_a_spread_that_would_round_to_zero_is_shown_with_two_significant_digits():
    assert report._fmt(0.013, 4.85e-5) == "0.0130 ± 0.000048"   # not "± 0.0000"
    assert report._fmt(57387.0, 0.3) == "57387 ± 0.30"
    assert report._fmt(0.013, 0.0) == "0.0130 ± 0.0000"          # a zero spread stays zero
    assert report._fmt(105.5, 0.4321) == "105.50 ± 0.43"          # a visible spread keeps the mean's decimals


def _anomaly_summary(aucs, class1, others):
    """A summary with each model's anomaly AUC (a mean, spread over five seeds by ±0.02) and per-class test BCE
    (class 1 at class1, the rest at others)."""
    def auc(a):
        v = [a + d for d in (-0.02, -0.01, 0.0, 0.01, 0.02)] if np.isscalar(a) else list(a)
        return {"mean": float(np.mean(v)), "values": v}
    return {m: {"anomaly_auc": auc(a),
                **{f"anomaly_test_bce_class{k}": {"mean": c1 if k == 1 else o} for k in range(10)}}
            for m, a, c1, o in zip(("vanilla", "vae"), aucs, class1, others)}


def test_aucs_below_chance_get_a_note_with_the_per_class_error_and_the_ink_that_explain_them():
    summary = _anomaly_summary((0.3, 0.4), (120.0, 130.0), (150.0, 140.0))
    ink = {"class_ink": [130.0, 60.0] + [100.0] * 8, "corr": {"vanilla": [0.4, 0.5], "vae": [0.3]}}
    (text, blank) = bakeoff_mod.below_chance_note(summary, ["vanilla", "vae"], ink)
    assert blank == "" and text.startswith("**AUCs below 0.5.** Every model ranks the unseen 1s as *more* typical")
    assert "one-sample t-test against 0.5" in text and "vanilla: 5 of 5 seeds below 0.5, p = " in text
    assert "lower than the other nine classes' mean, by 10 to 30" in text
    assert "mean pixel sum 60, the others 100 to 130" in text and "correlation is 0.30 to 0.50" in text
    assert "not a working detector" in text
    # one model below chance: named, no claim about the bold; ink not least for class 1: no ink sentence
    (text, _) = bakeoff_mod.below_chance_note(_anomaly_summary((0.45, 0.8), (120.0, 130.0), (150.0, 140.0)),
                                              ["vanilla", "vae"], {"class_ink": [50.0] * 10, "corr": {}})
    assert text.startswith("**AUCs below 0.5.** vanilla ranks") and "On this model" in text
    assert "ink" not in text and "detector" not in text
    assert bakeoff_mod.below_chance_note(_anomaly_summary((0.6, 0.9), (1, 1), (2, 2)), ["vanilla", "vae"]) == []
    # a mean below 0.5 that the seeds do not tell from chance (p >= 0.05) is not named
    mixed = _anomaly_summary(([0.2, 0.7, 0.45, 0.6, 0.3], 0.9), (120.0, 130.0), (150.0, 140.0))
    assert mixed["vanilla"]["anomaly_auc"]["mean"] < 0.5
    assert bakeoff_mod.below_chance_note(mixed, ["vanilla", "vae"]) == []


def test_the_ink_evidence_pairs_each_seeds_anomaly_scores_with_the_pixel_sums_of_the_same_test_images(bakeoff):
    runs = [types.SimpleNamespace(planned=types.SimpleNamespace(cfg=ExperimentConfig(model=m, dataset="digits",
                                                                                     anomaly=True)),
                                  run_dir=bakeoff.root / bakeoff.dirs[m]["anomaly"]) for m in RUN_MODELS]
    ink = bakeoff_mod.anomaly_ink(runs, StudyOptions(dataset="digits"))
    split = load_splits("digits", "anomaly")
    sums = split.x_test.reshape(len(split.y_test), -1).astype(np.float64).sum(axis=1)
    assert np.allclose(ink["class_ink"], [sums[split.y_test == k].mean() for k in range(10)])
    for m, run in zip(RUN_MODELS, runs):
        with np.load(run.run_dir / "roc.npz") as d:
            expect = [np.corrcoef(s, sums)[0, 1] for s, ok in zip(d["scores"], d["valid"]) if ok]
        assert len(expect) > 0 and np.allclose(ink["corr"][m], expect), m
    assert bakeoff_mod.anomaly_ink([], StudyOptions(dataset="digits")) is None


def test_the_probe_note_counts_the_seeds_whose_best_epoch_was_the_last_allowed():
    summary = {"vanilla": {"probe_best_epoch": {"values": [PROBE_EPOCHS, 3.0, PROBE_EPOCHS]}},
               "vae": {"probe_best_epoch": {"values": [PROBE_EPOCHS, None]}}}
    (text, _) = bakeoff_mod.probe_limit_note(summary, ["vanilla", "vae"])
    assert f"its last allowed one ({PROBE_EPOCHS}) in 3 of 4 seeds" in text
    summary["vanilla"]["probe_best_epoch"]["values"] = [4.0]
    summary["vae"]["probe_best_epoch"]["values"] = [5.0]
    assert bakeoff_mod.probe_limit_note(summary, ["vanilla", "vae"]) == []


def test_every_link_in_the_readme_points_to_a_file_that_exists(bakeoff):
    readme = (bakeoff.root / "README.md").read_text()
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", readme)
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert len(images) >= 5  # reconstructions, samples, both latent grids, ROC
    gifs = [ln for ln in links if ln.endswith(".gif")]
    assert len(gifs) == 3  # vanilla; vae with fresh and with fixed noise
    for link in links:
        p = bakeoff.root / link
        assert p.is_file(), f"README links {link}, which does not exist"
        with Image.open(p) as im:
            im.verify()
            assert im.format == ("GIF" if link.endswith(".gif") else "PNG"), link


# ------------------------------------------------------------------ figures and tasks/<task>.json
def task_files(run_dir) -> dict[str, dict]:
    return {p.stem: read_json(p) for p in sorted((run_dir / "tasks").glob("*.json"))}


def test_each_run_has_one_file_per_applicable_task_and_no_old_single_file(bakeoff):
    for m in RUN_MODELS:
        spec = MODELS[m]
        for variant, planned in (("full", FULL_TASKS), ("anomaly", ANOMALY_TASKS)):
            d = bakeoff.root / bakeoff.dirs[m][variant]
            files = task_files(d)
            assert set(files) == {t for t in planned if t != "samples" or spec.can_sample}, (m, variant)
            assert not (d / "tasks.json").exists()
            for t, f in files.items():
                assert f["task"] == t and f["model"] == m and f["variant"] == variant
                assert f["seeds"] == list(range(SEEDS)) and f["diverged_seeds"] == []
                assert f["latent_dim"] == (20 if variant == "full" else 2)
    for b in BASELINES:
        assert set(task_files(bakeoff.root / b)) == set(BASELINE_TASKS[b]) == {b, f"{b}_budget"}


def test_every_figure_the_task_files_list_exists_and_is_a_valid_image(bakeoff):
    seen = 0
    for m in RUN_MODELS:
        spec = MODELS[m]
        for variant in ("full", "anomaly"):
            d = bakeoff.root / bakeoff.dirs[m][variant]
            figs = {}
            for f in task_files(d).values():
                figs.update(f["figures"])
            if variant == "full":  # interpolation and samples belong to the n = 20 runs; roc to the anomaly runs
                expect = {"reconstructions", "interpolation", "latent"} | ({"samples"} if spec.can_sample else set()) \
                    | ({"interpolation_fixed_noise"} if spec.bottleneck.stochastic else set())
            else:
                expect = {"reconstructions", "latent", "roc"}
            assert set(figs) == expect, (m, variant)
            for name in figs.values():
                with Image.open(d / name) as im:
                    im.verify()
                    assert im.format == ("GIF" if name.endswith(".gif") else "PNG"), name
                seen += 1
    assert seen == 3 + 3 + 5 + 3  # vanilla, vanilla anomaly, vae (samples, fixed-noise GIF), vae anomaly


def test_the_samples_and_interpolation_figures_have_their_arrays_beside_them(bakeoff):
    """samples.png and each interpolation GIF are drawn from the arrays saved beside them: the GIF's first frame
    is the first saved frame at 8 bits, enlarged; the samples are images in [0, 1], one per code."""
    for m in RUN_MODELS:
        d = bakeoff.root / bakeoff.dirs[m]["full"]
        gifs = read_json(task_path(d, "interpolation"))["figures"]
        with np.load(d / "interpolation.npz") as z:
            assert set(z.files) == {"x", "y", "seed", *gifs}, m
            np.testing.assert_array_equal(z["y"], splits_of("full").y_test[:2])
            for key, name in gifs.items():
                assert z[key].shape == (130, 32, 32), (m, key)
                with Image.open(d / name) as im:
                    im.seek(0)
                    first = np.asarray(im.convert("L"))[::figures.GIF_SCALE, ::figures.GIF_SCALE]
                np.testing.assert_array_equal(first, (np.clip(z[key][0], 0, 1) * 255).astype(np.uint8))
        if MODELS[m].can_sample:
            with np.load(d / "samples.npz") as z:
                assert z["images"].shape == (16, 32, 32) and z["z"].shape[0] == 16
                assert 0 <= z["images"].min() and z["images"].max() <= 1 and z["images"].std() > 0
        else:
            assert not (d / "samples.npz").exists()


def test_bakeoff_gifs_are_258_frames_of_30_ms_enlarged(bakeoff):
    for m in RUN_MODELS:
        d = bakeoff.root / bakeoff.dirs[m]["full"]
        for name in read_json(task_path(d, "interpolation"))["figures"].values():
            assert name.endswith(".gif")
            with Image.open(d / name) as im:
                assert im.size == (32 * figures.GIF_SCALE,) * 2 and im.info.get("loop") == 0
                total = 0
                for k in range(im.n_frames):  # identical consecutive frames may be merged: count time
                    im.seek(k)
                    total += im.info["duration"]
                assert total == 258 * 30, (m, name)


def pair_auc(scores, positive) -> float:
    """AUC by its definition: P(score of a positive > score of a negative), ties count 1/2."""
    s, p = np.asarray(scores, np.float64), np.asarray(positive).astype(bool)
    pos, neg = s[p][:, None], s[~p][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_anomaly_aucs_are_those_of_the_bce_score_with_the_unseen_class_positive(bakeoff):
    """The vanilla anomaly runs' AUCs, recomputed from their checkpoints by a plain forward pass (BatchNorm on
    running statistics), a numpy BCE and signed error, and the AUC counted pair by pair."""
    d = bakeoff.root / bakeoff.dirs["vanilla"]["anomaly"]
    t = read_json(task_path(d, "anomaly"))
    assert t["variant"] == "anomaly" and t["latent_dim"] == 2
    assert (d / t["figures"]["roc"]).is_file()
    spec, cfg = MODELS["vanilla"], TrainConfig(latent_dim=2, epochs=EPOCHS, batch_size=BATCH)
    state = load_final_state(spec, cfg, SEEDS, d / "checkpoints")
    s = load_splits("digits", "anomaly")
    unseen = sorted(set(range(10)) - set(np.unique(s.y_train).tolist()))
    assert len(unseen) == 1 and (s.y_test == unseen[0]).sum() > 0
    positive = s.y_test == unseen[0]
    model = make_model(spec, cfg)
    for i in range(SEEDS):
        v = jax.tree.map(lambda a: a[i], {"params": state.params, "batch_stats": state.batch_stats})
        p = 1 / (1 + np.exp(-np.asarray(model.apply(v, jnp.asarray(s.x_test), train=False), np.float64)))
        x = s.x_test.astype(np.float64)
        with np.errstate(divide="ignore"):
            bce = -(x * np.maximum(np.log(p), -100) + (1 - x) * np.maximum(np.log(1 - p), -100)).sum((1, 2))
        signed = (p - x).sum((1, 2))
        assert t["metrics"]["anomaly_auc"]["values"][i] == pytest.approx(pair_auc(bce, positive), abs=1e-4)
        assert t["metrics"]["anomaly_auc_signed_bug"]["values"][i] == pytest.approx(pair_auc(signed, positive),
                                                                                    abs=1e-4)


# ------------------------------------------------------------------ reuse
def test_a_second_invocation_reuses_every_model(bakeoff, summary):
    done = [ln for ln in bakeoff.log2.splitlines() if "done already" in ln]
    assert len(done) == 2 * len(RUN_MODELS), bakeoff.log2
    assert not re.search(r"\] (training|task \w+)$", bakeoff.log2, flags=re.M)
    assert "compiled" not in bakeoff.log2 and "UMAP of" not in bakeoff.log2
    assert bakeoff.after == bakeoff.before  # no task file, metrics.json, figure or checkpoint rewritten
    assert any("/tasks/" in p for p in bakeoff.before) and any("checkpoints" in p for p in bakeoff.before)
    assert summary == bakeoff.summary1
    assert "--force" in bakeoff.readme1
    # the first invocation did train and evaluate each model
    for m in RUN_MODELS:
        for variant in ("full", "anomaly"):
            assert f"[{bakeoff.dirs[m][variant]}] training" in bakeoff.log1
            assert f"[{bakeoff.dirs[m][variant]}] task reconstruction" in bakeoff.log1


TIME_LINE = re.compile(r"^time: ([\d.]+) s in this invocation \(compiling ([\d.]+) s\): (.*)$", re.M)
COMPILE_LINE = re.compile(r"^compilation: (\d+) XLA programs, (\d+) s", re.M)


def time_parts(log: str) -> tuple[float, float, dict[str, dict]]:
    """The closing time line of a study's log: total s, compiling s, {part: {"s", "times", "compiling"}}."""
    (total, compiling, rest), = TIME_LINE.findall(log)
    parts = {}
    for item in rest.split(", "):
        m = re.fullmatch(r"(.+?) ([\d.]+) s(?: \((?:×(\d+))?(?:; )?(?:compiling ([\d.]+) s)?\))?", item)
        assert m, item
        parts[m[1]] = {"s": float(m[2]), "times": int(m[3] or 1), "compiling": float(m[4] or 0)}
    return float(total), float(compiling), parts


def test_each_invocation_ends_with_where_its_time_went(bakeoff):
    total, compiling, parts = time_parts(bakeoff.log1)
    assert list(parts)[-1] == "other"
    assert parts["training"]["times"] == 2 * len(RUN_MODELS)  # each model, full and anomaly

    def rounding(key):
        """What the sum of the printed parts may be off from the printed total: 0.05 s for a figure under
        10 s, else 0.5 s, each; and 0.5 s for the parts under 0.05 s that the line leaves out."""
        printed = [p[key] for p in parts.values()] + [total if key == "s" else compiling]
        return sum(0.05 if v < 10 else 0.5 for v in printed) + 0.5

    assert sum(p["s"] for p in parts.values()) == pytest.approx(total, abs=rounding("s"))
    # compiling: the compile line's seconds, split over the parts, each inside its part's seconds
    (_, compile_s), = COMPILE_LINE.findall(bakeoff.log1)
    assert compiling == pytest.approx(float(compile_s), abs=1.0) and compiling > 1
    assert sum(p["compiling"] for p in parts.values()) == pytest.approx(compiling, abs=rounding("compiling"))
    assert parts["training"]["compiling"] > 0 and parts["task probe"]["compiling"] > 0
    assert all(p["compiling"] <= p["s"] + 0.1 for p in parts.values()), parts
    # each task's part is the seconds its files record, summed over runs and baselines
    recorded: dict[str, float] = {}
    runs: dict[str, int] = {}
    for f in bakeoff.root.glob("*/tasks/*.json"):
        t = read_json(f)
        recorded[t["task"]] = recorded.get(t["task"], 0.0) + t["seconds"]
        runs[t["task"]] = runs.get(t["task"], 0) + 1
    assert {"reconstruction", "latent_structure", "probe", SCRATCH, RANDOM_ENCODER} <= set(recorded)
    for task, seconds in recorded.items():
        if f"task {task}" not in parts:  # left out under 0.05 s
            assert seconds < 0.2, task
            continue
        assert parts[f"task {task}"]["times"] == runs[task], task
        assert parts[f"task {task}"]["s"] == pytest.approx(seconds, rel=0.05, abs=1.0), task
    # the second invocation reuses everything: no training and no task, only reading and the report
    total2, _, parts2 = time_parts(bakeoff.log2)
    assert not [p for p in parts2 if p == "training" or p.startswith("task ")], parts2
    assert total2 < total


def test_time_ledger_counts_a_block_inside_another_once():
    now, compiled = [0.0], [100.0]  # the compile meter starts wherever the process stands

    def spend(seconds, compiling=0.0):
        now[0] += seconds
        compiled[0] += compiling

    ledger = TimeLedger(clock=lambda: now[0], compiled=lambda: compiled[0])
    with ledger.timed("training"):
        spend(3.0, 1.0)
        with ledger.timed("loading data"):
            spend(2.0, 0.5)
        spend(1.0)
    with ledger.timed("task probe"):
        spend(20.0, 6.0)
    with ledger.timed("task probe"), ledger.timed("task probe"):  # the same time, once
        spend(5.0)
    with ledger.timed("starting UMAP workers"):
        spend(0.01)
    spend(4.0, 0.25)
    (total, compiling), parts = ledger.parts()  # largest first, "other" last; a nested block counts for itself
    assert (total, compiling) == pytest.approx((35.01, 7.75))
    assert list(parts) == ["task probe", "training", "loading data", "starting UMAP workers", "other"]
    want = {"task probe": (25.0, 6.0), "training": (4.0, 1.0), "loading data": (2.0, 0.5),
            "starting UMAP workers": (0.01, 0.0), "other": (4.0, 0.25)}
    for i in (0, 1):  # seconds, compiling
        assert {k: v[i] for k, v in parts.items()} == pytest.approx({k: v[i] for k, v in want.items()})
    assert ledger.describe() == ("time: 35 s in this invocation (compiling 7.8 s): task probe 25 s (×2; compiling "
                                 "6.0 s), training 4.0 s (compiling 1.0 s), loading data 2.0 s (compiling 0.5 s), "
                                 "other 4.0 s (compiling 0.2 s)")


def test_a_second_invocation_with_other_seeds_does_not_silently_reuse_the_old_ones(bakeoff, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(bakeoff.root, root, ignore=shutil.ignore_patterns("checkpoints", "*.gif"))
    argv = [a if not a.startswith("--seeds=") else "--seeds=1" for a in ARGS] + [f"--out={root}"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc, _ = invoke_script(BAKEOFF_PY, argv)
    except SystemExit as e:
        rc = e.code
    if rc == 0:  # redone with the seeds asked for
        s = read_json(root / "summary.json")
        counts = {len(v["values"]) for entry in s.values() for v in entry.values()}
        assert counts == {1}, f"asked for 1 seed; summary.json holds {counts} values per metric"
    else:  # or refused, saying why (as experiments/run.py does for a run directory with another config)
        assert rc == 2 and "seeds" in err.getvalue(), err.getvalue()


# ------------------------------------------------------------------ probe and baselines on digits
def test_the_recorded_probe_beats_chance_clearly_and_shuffled_labels_do_not(bakeoff, labelled):
    """The vanilla models' recorded probe accuracies (3 epochs of training) are well above chance (0.1); the
    same probe on the same codes with shuffled training labels stays near chance, so the margin is the codes'."""
    d = bakeoff.root / bakeoff.dirs["vanilla"]["full"]
    recorded = read_json(task_path(d, "probe"))["metrics"]
    assert all(a >= 0.3 for a in recorded["probe_accuracy"]["values"]), recorded
    spec, cfg = MODELS["vanilla"], TrainConfig(latent_dim=20, epochs=EPOCHS, batch_size=BATCH)
    seeds, hps = list(range(SEEDS)), [spec_hparams(spec)] * SEEDS
    state = load_final_state(spec, cfg, SEEDS, d / "checkpoints")
    lab = labelled
    h = {k: evaluate_runs(spec, cfg, state, seeds, hps, Data(x, y))["h"]
         for k, x, y in (("train", lab.x_train, lab.y_train), ("val", lab.x_val, lab.y_val),
                         ("test", lab.x_test, lab.y_test))}
    y = {"train": np.random.default_rng(0).permutation(lab.y_train), "val": lab.y_val, "test": lab.y_test}
    shuffled = linear_probe(spec, 20, state.params, seeds, hps, h, y)
    assert shuffled["test_accuracy"].mean() <= 0.2, shuffled


def test_each_baseline_folder_records_the_command_that_made_it(bakeoff):
    for name in BASELINES:
        folder = bakeoff.root / name
        rec = read_json(folder / "config.json")
        assert rec["baseline"] == name and rec["seed_list"] == list(range(SEEDS))
        assert "bakeoff.py" in rec["command"] and "--dataset=digits" in rec["command"]
        assert sorted(rec["tasks"]) == sorted(f.stem for f in (folder / "tasks").glob("*.json"))
        assert rec["data"]["fingerprint"]


def test_the_reference_classifier_records_the_command_that_trained_it_and_every_quality_task_names_it(bakeoff):
    meta = read_json(bakeoff.root / REFERENCE_DIR / rc.META_FILE)
    assert "bakeoff.py" in meta["command"] and "--dataset=digits" in meta["command"] and meta["data"]["fingerprint"]
    judged = [read_json(f)["info"]["reference_params_sha256"] for t in ("sample_quality", "interp_quality")
              for f in bakeoff.root.glob(f"*/tasks/{t}.json")]
    assert judged and set(judged) == {meta["params_sha256"]}
    assert "More than one judge" not in bakeoff.readme1


def test_the_scratch_baseline_learns_from_labels_and_not_from_shuffled_ones(bakeoff, labelled):
    lab = labelled
    recorded = read_json(task_path(bakeoff.root / SCRATCH, SCRATCH))
    assert recorded["seeds"] == list(range(SEEDS))
    assert all(a > 0.75 for a in recorded["metrics"]["probe_accuracy"]["values"]), recorded["metrics"]
    bad = scratch_baseline(list(range(SEEDS)), lab.x_train, np.random.default_rng(0).permutation(lab.y_train),
                           lab.x_val, lab.y_val, lab.x_test, lab.y_test)
    assert bad["test_accuracy"].mean() < 0.25, bad


# ------------------------------------------------------------------ quality tasks
@functools.lru_cache(maxsize=None)
def splits_of(variant: str):
    return load_splits("digits", variant)


def trained_context(bakeoff, model: str, run_dir) -> EvalContext:
    """An EvalContext on the fixture's trained n = 20 run of `model` (every seed), writing into run_dir."""
    plan = STUDIES["bakeoff"].plan(StudyOptions(dataset="digits", models=[model], seeds=SEEDS, epochs=EPOCHS,
                                                out=bakeoff.root))
    cfg = next(p.cfg for p in plan if not p.cfg.anomaly)
    state = load_final_state(MODELS[model], cfg.train_config(), SEEDS, bakeoff.root / cfg.name() / "checkpoints")
    return EvalContext(MODELS[model], cfg, state, run_dir, splits_of, log=lambda m: None)


def judged_root(bakeoff, tmp_path):
    """A results root holding a copy of the fixture's reference classifier (loaded, not trained again)."""
    root = tmp_path / "digits"
    shutil.copytree(bakeoff.root / REFERENCE_DIR, root / REFERENCE_DIR)
    return root


def test_the_reference_classifier_is_trained_once_beside_the_results_on_real_images(bakeoff):
    meta = read_json(bakeoff.root / REFERENCE_DIR / rc.META_FILE)
    assert meta["dataset"] == "digits" and meta["n_train"] == len(splits_of("full").y_train)
    assert meta["data_sha256"] == rc.data_hash(splits_of("full"))  # the real training split, nothing generated
    assert meta["test_accuracy"] > 0.9
    assert bakeoff.log1.count("[reference classifier] digits: training") == 1
    for m in RUN_MODELS:
        for t in ("sample_quality", "interp_quality"):
            info = read_json(task_path(bakeoff.root / bakeoff.dirs[m]["full"], t))["info"]
            assert info["reference_test_accuracy"] == pytest.approx(meta["test_accuracy"])


def test_sample_quality_records_its_sampler_and_numbers_in_range(bakeoff, summary):
    """vanilla has no prior: its samples come from the Gaussian fitted to its codes, recorded as such; the VAE
    samples its prior. Three epochs of training are far from real images: both score a Fréchet distance well
    above that of real training images, which is recorded beside it."""
    for m in RUN_MODELS:
        d = bakeoff.root / bakeoff.dirs[m]["full"]
        info = read_json(task_path(d, "sample_quality"))["info"]
        assert info["sampler"] == ("prior" if MODELS[m].can_sample else "gaussian_fit")
        assert info["n_samples"] == SAMPLES and info["n_test"] == len(splits_of("full").y_test)
        e = summary[m]
        assert all(0 <= v <= np.log(10) + 1e-9 for v in e["sample_class_entropy"]["values"])
        assert all(0.1 <= v <= 1 for v in e["sample_confidence"]["values"])
        assert all(v > 2 * info["frechet_train_vs_test"] > 0 for v in e["sample_frechet"]["values"])
        arrays = np.load(d / sample_quality_task.FILE)
        assert arrays["images"].shape == (SEEDS, sample_quality_task.N_SHOW, 32, 32)
        assert str(arrays["sampler"]) == info["sampler"]
        np.testing.assert_array_equal(arrays["class_counts"].sum(1), [SAMPLES] * SEEDS)
        assert not np.array_equal(arrays["images"][0], arrays["images"][1])  # each seed draws its own


def test_sample_quality_judges_exactly_what_the_decoder_returns(bakeoff, tmp_path, monkeypatch):
    """Known cases through the whole task: a 'decoder' that returns real training images scores the Fréchet
    distance, entropy and confidence the classifier gives those images directly, and the same distance the
    task records for real training images; uniform noise scores a distance many times larger."""
    root = judged_root(bakeoff, tmp_path)
    ctx = trained_context(bakeoff, "vanilla", root / "vanilla")
    full = splits_of("full")
    n = 200
    real = full.x_train[:n]
    noise = np.random.default_rng(0).uniform(size=real.shape).astype(np.float32)
    monkeypatch.setattr(sample_quality_task, "N_SAMPLES", n)
    monkeypatch.setattr(sample_quality_task, "decode_chunked",
                        lambda ctx, z, labels, index: (real, noise)[index])
    out = TASKS["sample_quality"].run(ctx)
    ref = rc.get_reference_classifier("digits", full, root / REFERENCE_DIR, log=lambda m: None)
    f, p = ref.features_and_probs(real)
    m = out.metrics
    assert m["sample_frechet"][0] == pytest.approx(sq.frechet_distance(f, ref.features(full.x_test)), rel=1e-6)
    assert m["sample_frechet"][0] == pytest.approx(out.info["frechet_train_vs_test"], rel=1e-9)
    assert out.info["reference_params_sha256"] == ref.params_sha256  # the task names its judge
    assert m["sample_class_entropy"][0] == pytest.approx(sq.class_entropy(p), abs=1e-12)
    assert m["sample_confidence"][0] == pytest.approx(sq.mean_confidence(p), rel=1e-6)
    assert m["sample_frechet"][1] > 10 * m["sample_frechet"][0]
    assert set(m) == {"sample_frechet", "sample_class_entropy", "sample_confidence"}
    arrays = np.load(root / "vanilla" / sample_quality_task.FILE)
    np.testing.assert_array_equal(arrays["images"][0], real[:sample_quality_task.N_SHOW])
    np.testing.assert_array_equal(arrays["class_counts"][0], np.bincount(p.argmax(-1), minlength=10))


def test_cvae_label_accuracy_is_the_fraction_read_as_the_digit_asked_for(bakeoff, tmp_path, monkeypatch):
    """A conditional model asks for 0, 1, ..., 9, 0, ... in turn. Seed 0's 'decoder' returns a real image of the
    digit asked for, seed 1's one of the next digit: the label accuracy is the classifier's accuracy on those
    images against the labels asked for, high for seed 0 and low for seed 1."""
    root = judged_root(bakeoff, tmp_path)
    spec, n = MODELS["cvae"], 100
    cfg = ExperimentConfig(model="cvae", dataset="digits", seeds=SEEDS, epochs=EPOCHS)
    tc = cfg.train_config()
    state = jax.tree.map(lambda *a: jnp.stack(a), *[init_state(spec, tc, run_keys(s)["init"]) for s in range(SEEDS)])
    ctx = EvalContext(spec, cfg, state, root / "cvae", splits_of, log=lambda m: None)
    full = splits_of("full")
    asked = sample_quality_task.sample_labels(n)
    np.testing.assert_array_equal(asked[:12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])

    def images_of(digits):
        pools = {d: np.flatnonzero(full.y_test == d) for d in range(10)}
        return full.x_test[[pools[d][j // 10] for j, d in enumerate(digits)]]
    right, wrong = images_of(asked), images_of((asked + 1) % 10)
    seen = {}

    def decode(ctx, z, labels, index):
        seen[index] = labels
        return (right, wrong)[index]
    monkeypatch.setattr(sample_quality_task, "N_SAMPLES", n)
    monkeypatch.setattr(sample_quality_task, "decode_chunked", decode)
    out = TASKS["sample_quality"].run(ctx)
    np.testing.assert_array_equal(seen[0], asked)  # the decoder is given the labels asked for
    ref = rc.get_reference_classifier("digits", full, root / REFERENCE_DIR, log=lambda m: None)
    acc = out.metrics["cvae_label_accuracy"]
    assert acc[0] == pytest.approx((ref.probs(right).argmax(-1) == asked).mean())
    assert acc[1] == pytest.approx((ref.probs(wrong).argmax(-1) == asked).mean())
    assert acc[0] > 0.8 and acc[1] < 0.2
    assert out.info["sampler"] == "prior"
    np.testing.assert_array_equal(np.load(root / "cvae" / sample_quality_task.FILE)["labels"],
                                  asked[:sample_quality_task.N_SHOW])


def test_models_without_a_prior_sample_a_gaussian_fitted_to_each_seeds_training_codes(bakeoff, tmp_path):
    ctx = trained_context(bakeoff, "vanilla", tmp_path / "vanilla")
    full = splits_of("full")
    codes = np.asarray(ctx.evaluate(Data(full.x_train, full.y_train))["z"], np.float64)     # [R, N, n]
    draws = [np.asarray(sample_quality_task.draw_codes(ctx, i, 20_000, codes[i]), np.float64) for i in range(SEEDS)]
    for i, z in enumerate(draws):
        scale = codes[i].std(0).max()
        np.testing.assert_allclose(z.mean(0), codes[i].mean(0), atol=0.05 * scale)
        np.testing.assert_allclose(np.cov(z, rowvar=False), np.cov(codes[i], rowvar=False), atol=0.05 * scale ** 2)
    assert not np.allclose(draws[0].mean(0), draws[1].mean(0), atol=1e-3)  # each seed its own fit
    again = sample_quality_task.draw_codes(ctx, 0, 10, codes[0])
    np.testing.assert_array_equal(again, sample_quality_task.draw_codes(ctx, 0, 10, codes[0]))


def test_interpolation_pairs_are_the_same_for_every_model_and_seed_and_join_different_digits(bakeoff, summary):
    y = splits_of("full").y_test
    want = sq.interpolation_pairs(y, PAIRS, sq.INTERP_PAIR_SEED)
    np.testing.assert_array_equal(sq.interpolation_pairs(y)[:PAIRS], want)  # the first of the 100 of a full run
    assert (y[want[:, 0]] != y[want[:, 1]]).all()
    for m in RUN_MODELS:
        d = np.load(bakeoff.root / bakeoff.dirs[m]["full"] / interp_quality.FILE)
        np.testing.assert_array_equal(d["pairs"], want)
        np.testing.assert_array_equal(d["pair_labels"], y[want])
        assert d["max_step"].shape == d["confident"].shape == (SEEDS, PAIRS)  # every seed ran every pair
        np.testing.assert_allclose(d["max_step"].mean(1), summary[m]["interp_max_step"]["values"], rtol=1e-9)
        np.testing.assert_allclose(d["confident"].mean(1), summary[m]["interp_confident_frac"]["values"], rtol=1e-9)
        assert all(1 / 129 - 1e-9 <= v for v in summary[m]["interp_max_step"]["values"])
        assert all(0 <= v <= 1 for v in summary[m]["interp_confident_frac"]["values"])


def test_interpolation_quality_measures_the_straight_noise_free_path_of_each_seed(bakeoff):
    """The VAE's recorded max step of pair 0 for seed 1, recomputed by a plain forward pass: encode the pair,
    the straight line between the two μ in 130 steps, decode, largest step over the distance of the ends."""
    d = bakeoff.root / bakeoff.dirs["vae"]["full"]
    saved = np.load(d / interp_quality.FILE)
    spec, cfg = MODELS["vae"], TrainConfig(latent_dim=20, epochs=EPOCHS, batch_size=BATCH)
    state = load_final_state(spec, cfg, SEEDS, d / "checkpoints")
    v = jax.tree.map(lambda a: a[1], {"params": state.params, "batch_stats": state.batch_stats})
    model = make_model(spec, cfg)
    x = splits_of("full").x_test[saved["pairs"][0]]
    mu = np.asarray(model.apply(v, jnp.asarray(x), method=type(model).encode))[:, :20]
    w = np.linspace(0, 1, 130)[:, None]
    path = (1 - w) * mu[0] + w * mu[1]
    frames = np.asarray(jax.nn.sigmoid(model.apply(v, jnp.asarray(path, jnp.float32), method=type(model).decode)),
                        np.float64).reshape(130, -1)
    ratio = np.linalg.norm(np.diff(frames, axis=0), axis=1).max() / np.linalg.norm(frames[-1] - frames[0])
    assert saved["max_step"][1, 0] == pytest.approx(ratio, rel=1e-3)
    assert saved["max_step"][0, 0] != pytest.approx(ratio, rel=1e-3)  # seed 0 is another model


def test_label_budgets_give_every_model_and_baseline_one_accuracy_per_budget_and_more_labels_help(bakeoff, summary):
    assert lb.budgets_for("digits", len(splits_of("full").y_train)) == BUDGETS
    for m in RUN_MODELS:
        info = read_json(task_path(bakeoff.root / bakeoff.dirs[m]["full"], "label_budget"))["info"]
        assert info["budgets"] == list(BUDGETS) and info["n_train"] == len(splits_of("full").y_train)
    for name in (*RUN_MODELS, *BASELINES):
        e = summary[name]
        acc = {k: np.asarray(e[f"probe_accuracy_{k}labels"]["values"]) for k in BUDGETS}
        assert all(len(v) == SEEDS and ((v >= 0) & (v <= 1)).all() for v in acc.values()), name
        if name != RANDOM_ENCODER:  # a random encoder stays near chance until it gets many labels
            assert acc[1350].mean() > acc[13].mean() + 0.1, (name, acc)
    assert summary[SCRATCH]["probe_accuracy_1350labels"]["mean"] > 0.85


def test_a_budgets_labelled_images_are_its_class_balanced_subset(bakeoff):
    """scratch at 135 labels, recomputed on the nested class-balanced subset of the training split: the same
    accuracies as recorded, and not those of the protocol's labelled split (another 135 images)."""
    full, lab = splits_of("full"), splits_of("labelled")
    idx = lb.budget_subsets("digits", full.y_train)[135]
    assert sorted(np.bincount(full.y_train[idx], minlength=10).tolist()) == [13] * 5 + [14] * 5
    x, y = full.x_train[idx], full.y_train[idx]
    again = scratch_baseline(list(range(SEEDS)), x, y, full.x_val, full.y_val, full.x_test, full.y_test)
    recorded = read_json(task_path(bakeoff.root / SCRATCH, "scratch_budget"))["metrics"]["probe_accuracy_135labels"]
    np.testing.assert_allclose(again["test_accuracy"], recorded["values"], rtol=1e-6)
    protocol = read_json(task_path(bakeoff.root / SCRATCH, SCRATCH))["metrics"]["probe_accuracy"]["values"]
    assert not np.array_equal(np.sort(idx), np.arange(len(lab.y_train)))
    assert recorded["values"] != protocol


# ------------------------------------------------------------------ report: figures and the quality sections
def test_the_quality_sections_label_the_sampler_and_say_what_each_metric_measures(bakeoff):
    secs = sections((bakeoff.root / "README.md").read_text())
    [samples] = [s for t, s in secs.items() if t.startswith("Sample quality")]
    rows = {r[0]: r[1:] for r in table(samples)}
    assert rows["metric"][:len(RUN_MODELS)] == list(RUN_MODELS)
    assert rows["sampler"][:2] == ["Gaussian fit (baseline)", "prior"]  # vanilla, vae
    assert "**baseline**" in samples and "Gaussian fitted" in samples
    for metric in ("sample_frechet", "sample_class_entropy", "sample_confidence"):
        assert f"- `{metric}`: " in samples
    assert "cvae_label_accuracy" not in samples  # no conditional model ran
    [interp] = [s for t, s in secs.items() if t.startswith("Interpolation quality")]
    assert f"{PAIRS} fixed test pairs" in interp
    assert "- `interp_confident_frac`: " in interp and "- `interp_max_step`: " in interp
    [budget] = [s for t, s in secs.items() if t.startswith("Label budget")]
    assert [r[0] for r in table(budget)] == ["metric"] + [f"{k:,} labels" for k in BUDGETS]
    assert table(budget)[0][1:-1] == list(RUN_MODELS) + list(BASELINES)


FIGURES = ("fig_reconstructions", "fig_samples", "fig_interpolations", "fig_latent", "fig_latent_anomaly", "fig_roc",
           "fig_label_budget")


def test_every_comparison_figure_is_drawn_from_arrays_saved_beside_it(bakeoff, summary):
    readme = (bakeoff.root / "README.md").read_text()
    assert "grid_" not in readme and not list(bakeoff.root.glob("grid_*"))  # nothing pasted
    for stem in FIGURES:
        assert f"]({stem}.png)" in readme, stem
        assert (bakeoff.root / f"{stem}.npz").is_file(), stem
    d = np.load(bakeoff.root / "fig_samples.npz")
    assert d["models"].tolist() == list(RUN_MODELS)
    np.testing.assert_allclose(d["frechet_mean"], [summary[m]["sample_frechet"]["mean"] for m in RUN_MODELS])
    assert d["gaussian_fit"].tolist() == [not MODELS[m].can_sample for m in RUN_MODELS]
    for j, m in enumerate(RUN_MODELS):
        own = np.load(bakeoff.root / bakeoff.dirs[m]["full"] / sample_quality_task.FILE)["images"]
        np.testing.assert_array_equal(d["images"][j], own[0])
    b = np.load(bakeoff.root / "fig_label_budget.npz")
    assert b["budgets"].tolist() == list(BUDGETS) and b["names"].tolist() == list(RUN_MODELS) + list(BASELINES)
    for i, n in enumerate(b["names"]):
        for k, budget in enumerate(BUDGETS):
            np.testing.assert_allclose(b["values"][i, k], summary[n][f"probe_accuracy_{budget}labels"]["values"])
    r = np.load(bakeoff.root / "fig_reconstructions.npz")
    assert r["recon"].shape == (len(RUN_MODELS), 16, 32, 32)
    np.testing.assert_array_equal(r["x"], splits_of("full").x_test[:16])


# ------------------------------------------------------------------ paired or Welch
def test_a_paired_test_is_chosen_exactly_when_the_columns_are_paired():
    from scipy import stats
    a, b = [0.80, 0.82, 0.79, 0.85, 0.81], [0.78, 0.81, 0.77, 0.83, 0.80]  # b is a little below a on every seed
    s = {"x": {"m": {"values": a}}, "y": {"m": {"values": b}}}
    test, p = report.compare(s, "x", "y", "m", {"x": ((0, 1, 2, 3, 4), ("0.2.0",)), "y": ((0, 1, 2, 3, 4), ("0.2.0",))})
    assert test == report.PAIRED_NAME and p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert p < 0.01  # pairing sees the consistent difference ...
    for pairing in (None, {"x": ("k",), "y": ("other",)}, {"x": None, "y": None}, {"x": ("k",)}):
        test, p = report.compare(s, "x", "y", "m", pairing)
        assert test == report.WELCH_NAME and p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert p > 0.3  # ... that the seed-to-seed spread hides from Welch
    # a seed missing on one side leaves that pair out of the paired test
    s["y"]["m"]["values"] = [None, *b[1:]]
    test, p = report.compare(s, "x", "y", "m", {"x": "k", "y": "k"})
    assert p == pytest.approx(stats.ttest_rel(a[1:], b[1:]).pvalue)
    # no spread on a side (a wall-clock shared by the seeds): no test
    assert math.isnan(report.paired([1.0, 1.0, 1.0], [2.0, 2.5, 3.0]))
    with pytest.raises(ValueError, match="one value per seed"):
        report.paired([1.0, 2.0], [1.0, 2.0, 3.0])


def test_a_tied_best_is_bold_in_every_column_that_shares_it_and_named_a_tie_not_a_winner():
    s = {"x": {"m": {"mean": 10.0, "std": 0.0, "values": [10.0, 10.0]}},
         "y": {"m": {"mean": 10.0, "std": 0.0, "values": [10.0, 10.0]}},
         "z": {"m": {"mean": 9.5, "std": 0.7071, "values": [9.0, 10.0]}}}
    rows = [("m", "digits found", True)]
    line = report.task_table(s, rows, ["z", "x", "y"]).splitlines()[-1]
    assert line == "| digits found | 9.5000 ± 0.7071 | **10.00** | **10.00** | x and y tie |"
    s["y"]["m"].update(mean=9.9, std=0.1414, values=[9.8, 10.0])  # no longer a tie: one winner, and no test against a constant
    line = report.task_table(s, rows, ["z", "x", "y"]).splitlines()[-1]
    assert line.endswith("| **10.00** | 9.9000 ± 0.1414 | x ahead of y (no test possible) |")


def test_an_unranked_row_has_no_bold_and_no_test_and_its_own_decimals():
    s = {"x": {"t": {"mean": 847.27, "std": 0.0, "values": [847.27] * 3}},
         "y": {"t": {"mean": 1573.2, "std": 0.0, "values": [1573.2] * 3}}}
    assert report.task_table(s, [("t", "wall-clock s", None, 0)], ["x", "y"]).splitlines()[-1] == \
        "| wall-clock s | 847 | 1573 |  |"
    assert report.task_table(s, [("t", "wall-clock s", False)], ["x", "y"]).splitlines()[-1] == \
        "| wall-clock s | **847.27** | 1573 | x ahead of y (no test possible) |"


def test_the_report_names_runs_trained_from_uncommitted_code(tmp_path):
    from ae_jax import __version__
    runs = []
    for name, rev in (("clean", "abc123"), ("dirty", "abc123+dirty"), ("unknown", None)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", {"version": __version__, "revision": rev})
        runs.append(types.SimpleNamespace(run_dir=tmp_path / name))
    text = "\n".join(report.older_code_note(runs))
    assert "From uncommitted code" in text and "dirty (revision abc123+dirty)" in text
    assert "clean" not in text and "unknown" not in text and "From older code" not in text
    assert report.older_code_note(runs[:1]) == []


def test_the_load_note_uses_the_core_count_each_run_recorded_not_the_machine_redrawing_the_report():
    from ae_jax.studies.bakeoff import load_note

    def run(load, cores=None):
        timing = {"load_average_at_start": load} if cores is None else {"load_average_at_start": load,
                                                                        "cpu_count": cores}
        return types.SimpleNamespace(metrics={"timing": timing})

    assert load_note([run(2.3, 2), run(1.0, 2)]).startswith(" Load average when training started: up to 2.3 on 2 cores")
    assert load_note([run(2.3, 16), run(0.5, 2)]) == ""  # 2.3 on 16 cores was no contention
    assert load_note([run(40.0, 16), run(2.5, 2)]).startswith(" Load average when training started: up to 40.0 on 16")
    assert load_note([run(20.0, 16), run(3.0, 2)]).startswith(" Load average when training started: up to 3.0 on 2")
    assert load_note([types.SimpleNamespace(metrics={"timing": {}})]) == ""  # before loads were recorded
    many = os.cpu_count() or 1  # a run recorded before core counts were: this machine's
    assert load_note([run(many + 0.5)]) != "" and load_note([run(many - 0.5)]) == ""


def test_the_report_names_each_runs_source_revision_grouped(tmp_path):
    runs = []
    for name, rev in (("a", "1234567890abcdef"), ("b", "fedcba0987654321+dirty"), ("c", "1234567890abcdef"), ("d", None)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", {"revision": rev} if rev else {})
        runs.append(types.SimpleNamespace(run_dir=tmp_path / name))
    assert report.revisions_note(runs) == ["- Trained by source revision (each run's `config.json`): `1234567` a, c; "
                                           "`fedcba0+dirty` b; `not recorded` d."]
    assert report.revisions_note([]) == []


def test_pairing_keys_pair_models_of_the_same_seeds_and_code_and_no_baseline(bakeoff, summary, tmp_path):
    from ae_jax.studies.bakeoff import pairing_keys
    from ae_jax.studies.driver import PlannedRun, RunResult
    plan = STUDIES["bakeoff"].plan(StudyOptions(dataset="digits", models=RUN_MODELS, seeds=SEEDS, epochs=EPOCHS,
                                                out=bakeoff.root))
    results = [RunResult(p, bakeoff.root / p.cfg.name(), {}, {}) for p in plan]
    keys = pairing_keys(results, summary)
    assert keys["vanilla"] == keys["vae"] is not None
    assert keys[SCRATCH] != keys[RANDOM_ENCODER] and keys[SCRATCH] != keys["vanilla"]
    # a model whose run was made by another source revision (of the same version) is not paired with the others
    other = tmp_path / "vae_old"
    other.mkdir()
    cfg = read_json(bakeoff.root / bakeoff.dirs["vae"]["full"] / "config.json")
    write_json(other / "config.json", {**cfg, "revision": "0" * 40})
    moved = [RunResult(r.planned, other, {}, {}) if r.run_dir.name == bakeoff.dirs["vae"]["full"] else r
             for r in results]
    keys = pairing_keys(moved, summary)
    assert keys["vanilla"] != keys["vae"]
    # a model planned with other seeds is not paired either
    fewer = [RunResult(PlannedRun(dataclasses.replace(r.planned.cfg, seeds=1), r.planned.tasks), r.run_dir, {}, {})
             if r.planned.cfg.model == "vae" else r for r in results]
    assert pairing_keys(fewer, summary)["vae"] != pairing_keys(fewer, summary)["vanilla"]


def test_the_report_warns_when_the_runs_were_judged_by_different_reference_classifiers(tmp_path):
    """A classifier retrained elsewhere judges slightly differently: the quality section says which runs had which
    judge. One judge, or runs that recorded none (older code), give no warning."""
    from ae_jax.studies.bakeoff import _judges_note
    from ae_jax.studies.driver import PlannedRun, RunResult

    def run(name, **judge_of_task):
        tasks = {t: {"info": {"reference_params_sha256": h}} for t, h in judge_of_task.items()}
        cfg = ExperimentConfig(model="vanilla", dataset="digits", seeds=SEEDS, epochs=EPOCHS)
        return RunResult(PlannedRun(cfg, tuple(tasks)), tmp_path / name, {}, tasks)

    a, b = "a" * 64, "b" * 64
    assert _judges_note([run("vanilla", sample_quality=a, interp_quality=a), run("vae", sample_quality=a),
                         run("old")]) == []
    note = _judges_note([run("vanilla", sample_quality=a, interp_quality=a), run("vae", sample_quality=b),
                         run("vq", interp_quality=b)])
    assert len(note) == 2 and note[0].startswith("**More than one judge.**") and "2 different" in note[0]
    assert f"`{a[:12]}`: vanilla;" in note[0] and f"`{b[:12]}`: vae, vq." in note[0]


# ------------------------------------------------------------------ runs from older code
def make_legacy(run_dir) -> None:
    """Turn a finished run folder into what version 0.1 left: one tasks.json (its tasks' metrics), no per-task
    files, no arrays, no checkpoints, no version in config.json."""
    metrics = {}
    for f in sorted((run_dir / "tasks").glob("*.json")):
        if f.stem in LEGACY_TASKS:
            metrics.update(read_json(f)["metrics"])
    shutil.rmtree(run_dir / "tasks")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for f in run_dir.glob("*.npz"):
        f.unlink()
    cfg = read_json(run_dir / "config.json")
    cfg.pop("version", None)
    cfg.pop("revision", None)
    write_json(run_dir / "config.json", cfg)
    write_json(run_dir / "tasks.json", {"seeds": list(range(SEEDS)), "metrics": metrics, "task_time_s": 1.0})


def test_runs_from_older_code_are_reported_as_they_are_with_the_new_tasks_not_available(bakeoff, tmp_path):
    root = tmp_path / "digits"
    for d in (bakeoff.dirs["vanilla"]["full"], bakeoff.dirs["vanilla"]["anomaly"], SCRATCH, RANDOM_ENCODER):
        shutil.copytree(bakeoff.root / d, root / d, ignore=shutil.ignore_patterns("*.gif"))
    for v in ("full", "anomaly"):
        make_legacy(root / bakeoff.dirs["vanilla"][v])
    argv = [a if not a.startswith("--models=") else "--models=vanilla" for a in ARGS] + [f"--out={root}"]
    rc, log = invoke_script(BAKEOFF_PY, argv)
    assert rc == 0, log[-3000:]
    assert not re.search(r"\] (training|task \w+)", log), log  # nothing trained or evaluated again
    full = bakeoff.dirs["vanilla"]["full"]
    assert f"[{full}] done by older code" in log
    assert "not available for it: sample_quality, interp_quality, label_budget" in log
    assert not (root / full / "tasks").exists() and not (root / REFERENCE_DIR).exists()
    s = read_json(root / "summary.json")
    old = read_json(bakeoff.root / "summary.json")["vanilla"]
    for k in ("test_bce", "probe_accuracy", "knn_accuracy", "anomaly_auc"):
        assert s["vanilla"][k]["values"] == old[k]["values"], k
    assert not {k for k in s["vanilla"] if k.startswith(("sample_", "interp_")) or k.endswith("labels")}
    assert "probe_accuracy_13labels" in s[SCRATCH]  # the baselines have theirs
    readme = (root / "README.md").read_text()
    assert "Not available for runs from older code" in readme and "sample_quality, interp_quality, label_budget" in readme
    assert "From older code" in readme
    # no run saved arrays: their own PNGs are tiled, and said to be
    assert "grid_reconstructions.png" in readme and "saved images, not arrays" in readme
    for link in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", readme):
        assert (root / link).is_file(), link


# ------------------------------------------------------------------ bad input
CLI_ERRORS = {
    "unknown_model": (["--models=vanilla,nope"], ["unknown model 'nope'"]),
    "seeds_0": (["--seeds=0"], ["--seeds"]),
    "epochs_2": (["--epochs=2"], ["--epochs", "3"]),
    "unknown_dataset": (["--dataset=cifar", "--force"], ["unknown dataset 'cifar'"]),  # --force itself is accepted
    "missing_data_dir": (["--dataset=mnist", "--data-dir={tmp}/no_such_dir"], ["no such folder"]),
}


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_bakeoff_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    args, fragments = CLI_ERRORS[case]
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    args = [a.format(tmp=tmp_path) for a in args] + [f"--out={out}"]
    proc = subprocess.run([sys.executable, str(BAKEOFF_PY), *args], cwd=work, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()
    assert list(work.iterdir()) == []  # no results/ in the working directory either
