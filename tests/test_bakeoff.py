"""The whole bake-off end to end, once, on digits; what it writes; reuse; the linear probe and the
from-scratch baseline on real labels; the CLI's bad-input errors.

The module-scoped ``bakeoff`` fixture runs ``experiments/bakeoff.py``'s ``main`` in this process
(sharing the compilation cache and numba's UMAP warm-up with the rest of the suite) with two models,
two seeds and three epochs, then runs it a second time to check that everything is reused. The
tests read what it wrote; the probe and baseline tests reload its trained models.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import re
import shlex
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from _helpers import REPO, assert_one_line_error, subprocess_env
from ae_jax import figures, report, tasks
from ae_jax.bakeoff import SCRATCH, BakeoffConfig, run_dirs
from ae_jax.data import load_splits
from ae_jax.io import read_json
from ae_jax.registry import MODELS
from ae_jax.runner import evaluate_runs, load_final_state
from ae_jax.train import TrainConfig, spec_hparams

BAKEOFF_PY = REPO / "experiments" / "bakeoff.py"
SEEDS, EPOCHS, RUN_MODELS = 2, 3, ("vanilla", "vae")
ARGS = ["--dataset=digits", f"--seeds={SEEDS}", f"--epochs={EPOCHS}", "--models=" + ",".join(RUN_MODELS)]
REQUIRED = ("test_bce", "probe_accuracy", "knn_accuracy", "silhouette", "anomaly_auc", "train_time_s")
BATCH = 256  # the bake-off trains with ExperimentConfig's default batch size


def load_script():
    spec = importlib.util.spec_from_file_location("bakeoff_script", BAKEOFF_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def invoke(script, argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = script.main(argv)
    return rc, out.getvalue()


def file_state(root):
    """{relative path: mtime_ns} of every per-model file the bake-off writes (checkpoints included)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("grid_") and p.name not in ("README.md", "summary.json")}


@pytest.fixture(scope="module")
def bakeoff(tmp_path_factory):
    root = tmp_path_factory.mktemp("bakeoff") / "digits"
    argv = ARGS + [f"--out={root}"]
    script = load_script()
    rc, log1 = invoke(script, argv)
    assert rc == 0, log1[-3000:]
    readme1 = (root / "README.md").read_text()
    summary1 = read_json(root / "summary.json")
    before = file_state(root)
    rc2, log2 = invoke(script, argv)  # everything is done: nothing may be retrained or re-evaluated
    assert rc2 == 0, log2[-3000:]
    cfg = BakeoffConfig(dataset="digits", models=RUN_MODELS, seeds=SEEDS, epochs=EPOCHS, out=root)
    return types.SimpleNamespace(root=root, argv=argv, log1=log1, log2=log2, readme1=readme1, summary1=summary1,
                                 before=before, after=file_state(root), dirs=run_dirs(cfg, RUN_MODELS))


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
    assert set(summary) == set(RUN_MODELS) | {SCRATCH}
    for m in RUN_MODELS:
        missing = [k for k in REQUIRED if k not in summary[m]]
        assert not missing, f"{m} lacks {missing}"
    assert "probe_accuracy" in summary[SCRATCH]
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


def test_summary_values_are_in_their_ranges(summary):
    for m in RUN_MODELS:
        e = summary[m]
        assert all(0 < v < 1024 * 100 for v in e["test_bce"]["values"])
        for k in ("probe_accuracy", "knn_accuracy", "anomaly_auc"):
            assert all(0.0 <= v <= 1.0 for v in e[k]["values"]), (m, k)
        assert all(-1.0 <= v <= 1.0 for v in e["silhouette"]["values"])
        assert all(v > 0 for v in e["train_time_s"]["values"])
        assert len(set(e["train_time_s"]["values"])) == 1  # one wall-clock shared by the seeds
        assert all(1 <= v <= tasks.PROBE_EPOCHS for v in e["probe_best_epoch"]["values"])
    # the seeds are different runs, not copies of one
    assert len(set(summary["vanilla"]["test_bce"]["values"])) == SEEDS


def test_summary_test_bce_is_the_one_training_recorded(bakeoff, summary):
    for m in RUN_MODELS:
        metrics = read_json(bakeoff.root / bakeoff.dirs[m]["full"] / "metrics.json")
        np.testing.assert_allclose(summary[m]["test_bce"]["values"], metrics["metrics"]["test_bce"]["values"],
                                   rtol=1e-6)
        anomaly = read_json(bakeoff.root / bakeoff.dirs[m]["anomaly"] / "metrics.json")
        np.testing.assert_allclose(summary[m]["anomaly_test_bce"]["values"],
                                   anomaly["metrics"]["test_bce"]["values"], rtol=1e-6)


# ------------------------------------------------------------------ README.md
def sections(readme: str) -> dict[str, str]:
    parts = re.split(r"^## ", readme, flags=re.M)
    return {p.splitlines()[0].strip(): p for p in parts[1:]}


def table(section: str) -> list[list[str]]:
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not set(r) <= set("|-")]


def report_tables():
    """(title, rows) of report.TABLES with the digits label count filled in."""
    fill = {"n_labelled": 135, "steps": 5}
    return [(title.format(**fill), rows) for title, rows, _ in report.TABLES]


def test_readme_names_the_command_that_reproduces_it(bakeoff):
    readme = (bakeoff.root / "README.md").read_text()
    lines = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("python experiments/bakeoff.py")]
    assert lines, "no command line in the README"
    assert shlex.split(lines[0])[2:] == bakeoff.argv


def test_readme_has_a_table_per_task_with_the_models_as_columns_and_the_best_in_bold(bakeoff, summary):
    secs = sections((bakeoff.root / "README.md").read_text())
    for title, rows in report_tables():
        assert title in secs, f"no section {title!r}; have {list(secs)}"
        t = table(secs[title])
        expect = list(RUN_MODELS) + ([SCRATCH] if rows[0][0] == "probe_accuracy" else [])
        assert t[0] == ["metric"] + expect + ["best vs runner-up"], title
        by_label = {r[0]: r[1:] for r in t[1:]}
        for metric, label, higher in rows:
            cells = by_label[label]
            assert len(cells) == len(expect) + 1
            bold = [c for c, cell in zip(expect, cells) if cell.startswith("**")]
            if higher is None:
                assert bold == [] and cells[-1] == "", label
                continue
            means = {c: summary[c][metric]["mean"] for c in expect}
            best = (max if higher else min)(means, key=means.get)
            assert bold == [best], f"{label}: bold {bold}, best by mean {best} ({means})"
            # the printed number is the summary's mean
            assert cells[expect.index(best)].strip("*").split(" ± ")[0] == report._fmt(means[best]), label


def test_readme_welch_p_values_are_those_of_the_best_two_models(bakeoff, summary):
    from scipy import stats
    secs = sections((bakeoff.root / "README.md").read_text())
    seen = 0
    for title, rows in report_tables():
        by_label = {r[0]: r[1:] for r in table(secs[title])[1:]}
        for metric, label, higher in rows:
            if higher is None:
                continue
            cols = [c for c in (*RUN_MODELS, SCRATCH) if metric in summary[c]]
            order = sorted(cols, key=lambda c: summary[c][metric]["mean"], reverse=higher)
            a, b = order[0], order[1]
            va, vb = finite(summary[a][metric]["values"]), finite(summary[b][metric]["values"])
            last = by_label[label][-1]
            if np.std(va) == 0 and np.std(vb) == 0:  # a shared wall-clock: no test
                assert last == f"{a} ahead of {b} (no test possible)", label
                continue
            p = stats.ttest_ind(va, vb, equal_var=False).pvalue
            verdict = "significant" if p < report.SIGNIFICANCE else "not significant"
            assert last == f"{a} vs {b}: Welch p = {p:.2g} ({verdict})", label
            seen += 1
    assert seen >= 5


def test_readme_states_the_anomaly_scoring_note(bakeoff):
    secs = sections((bakeoff.root / "README.md").read_text())
    anomaly = [s for t, s in secs.items() if t.startswith("Anomaly")]
    assert len(anomaly) == 1 and report.ANOMALY_NOTE in anomaly[0]


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


# ------------------------------------------------------------------ figures and tasks.json
def test_every_figure_each_tasks_json_lists_exists_and_is_a_valid_image(bakeoff):
    seen = 0
    for m in RUN_MODELS:
        for variant in ("full", "anomaly"):
            d = bakeoff.root / bakeoff.dirs[m][variant]
            figs = read_json(d / "tasks.json")["figures"]
            if variant == "full":  # interpolation belongs to the n = 20 runs; roc to the anomaly runs
                expect = {"reconstructions", "interpolation", "latent"} | ({"samples"} if MODELS[m].has_prior else set()) \
                    | ({"interpolation_fixed_noise"} if MODELS[m].is_vae else set())
            else:
                expect = {"reconstructions", "latent", "roc"} | ({"samples"} if MODELS[m].has_prior else set())
            assert set(figs) == expect, (m, variant)
            for name in figs.values():
                with Image.open(d / name) as im:
                    im.verify()
                    assert im.format == ("GIF" if name.endswith(".gif") else "PNG"), name
                seen += 1
    assert seen == 3 + 3 + 5 + 4  # vanilla, vanilla anomaly, vae (samples, fixed-noise GIF), vae anomaly (samples)


def test_bakeoff_gifs_are_258_frames_of_30_ms_enlarged(bakeoff):
    for m in RUN_MODELS:
        d = bakeoff.root / bakeoff.dirs[m]["full"]
        for name in read_json(d / "tasks.json")["figures"].values():
            if not name.endswith(".gif"):
                continue
            with Image.open(d / name) as im:
                assert im.size == (32 * figures.GIF_SCALE,) * 2 and im.info.get("loop") == 0
                total = 0
                for k in range(im.n_frames):  # identical consecutive frames may be merged: count time
                    im.seek(k)
                    total += im.info["duration"]
                assert total == 258 * 30, (m, name)


def test_anomaly_tasks_report_aucs_from_the_bce_score_with_class_1_positive(bakeoff):
    """Recompute the AUC of the vanilla anomaly models from their checkpoints with scikit-learn."""
    from sklearn.metrics import roc_auc_score
    d = bakeoff.root / bakeoff.dirs["vanilla"]["anomaly"]
    t = read_json(d / "tasks.json")
    assert t["variant"] == "anomaly" and t["latent_dim"] == 2 and "probe_accuracy" not in t["metrics"]
    assert (d / t["figures"]["roc"]).is_file()
    aucs = t["metrics"]["anomaly_auc"]["values"]
    assert len(aucs) == SEEDS and all(0.0 <= a <= 1.0 for a in aucs)
    spec, cfg = MODELS["vanilla"], TrainConfig(latent_dim=2, epochs=EPOCHS, batch_size=BATCH)
    state = load_final_state(spec, cfg, SEEDS, d / "checkpoints")
    s = load_splits("digits", "anomaly")
    assert (s.y_test == 1).sum() > 0 and (s.y_train != 1).all()
    ev = evaluate_runs(spec, cfg, state, list(range(SEEDS)), [spec_hparams(spec)] * SEEDS, s.x_test)
    for i in range(SEEDS):
        assert aucs[i] == pytest.approx(roc_auc_score(s.y_test == 1, ev["bce"][i]), abs=1e-6)
        assert t["metrics"]["anomaly_auc_signed_bug"]["values"][i] == pytest.approx(
            roc_auc_score(s.y_test == 1, ev["signed_error"][i]), abs=1e-6)
    full = read_json(bakeoff.root / bakeoff.dirs["vanilla"]["full"] / "tasks.json")
    assert "anomaly_auc" not in full["metrics"] and "probe_accuracy" in full["metrics"]


# ------------------------------------------------------------------ reuse
def test_a_second_invocation_reuses_every_model(bakeoff, summary):
    done = [ln for ln in bakeoff.log2.splitlines() if "done already" in ln]
    assert len(done) == 2 * len(RUN_MODELS), bakeoff.log2
    assert not re.search(r"\] (training|tasks)$", bakeoff.log2, flags=re.M)
    assert "compiled" not in bakeoff.log2 and "UMAP of" not in bakeoff.log2
    assert bakeoff.after == bakeoff.before  # no tasks.json, metrics.json, figure or checkpoint rewritten
    assert any(p.endswith("tasks.json") for p in bakeoff.before) and any("checkpoints" in p for p in bakeoff.before)
    assert summary == bakeoff.summary1
    assert "--force" in bakeoff.readme1
    # the first invocation did train and evaluate each model
    for m in RUN_MODELS:
        for variant in ("full", "anomaly"):
            assert f"[{bakeoff.dirs[m][variant]}] training" in bakeoff.log1


def test_a_second_invocation_with_other_seeds_does_not_silently_reuse_the_old_ones(bakeoff, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(bakeoff.root, root, ignore=shutil.ignore_patterns("checkpoints", "*.gif"))
    argv = [a if not a.startswith("--seeds=") else "--seeds=1" for a in ARGS] + [f"--out={root}"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc, _ = invoke(load_script(), argv)
    except SystemExit as e:
        rc = e.code
    if rc == 0:  # redone with the seeds asked for
        s = read_json(root / "summary.json")
        counts = {len(v["values"]) for entry in s.values() for v in entry.values()}
        assert counts == {1}, f"asked for 1 seed; summary.json holds {counts} values per metric"
    else:  # or refused, saying why (as experiments/run.py does for a run directory with another config)
        assert rc == 2 and "seeds" in err.getvalue(), err.getvalue()


# ------------------------------------------------------------------ probe and baseline on digits
def test_linear_probe_on_digits_beats_chance_clearly_and_shuffled_labels_do_not(bakeoff, labelled):
    """The bake-off's vanilla models (3 epochs) probed again: the same accuracies as tasks.json, well
    above chance (0.1); the same probe on shuffled training labels stays near chance."""
    spec, cfg = MODELS["vanilla"], TrainConfig(latent_dim=20, epochs=EPOCHS, batch_size=BATCH)
    seeds, hps = list(range(SEEDS)), [spec_hparams(spec)] * SEEDS
    state = load_final_state(spec, cfg, SEEDS, bakeoff.root / bakeoff.dirs["vanilla"]["full"] / "checkpoints")
    assert state is not None
    lab = labelled
    h = {k: evaluate_runs(spec, cfg, state, seeds, hps, x)["h"]
         for k, x in (("train", lab.x_train), ("val", lab.x_val), ("test", lab.x_test))}
    y = {"train": lab.y_train, "val": lab.y_val, "test": lab.y_test}
    r = tasks.linear_probe(spec, cfg, state, seeds, hps, h, y)
    shuffled = tasks.linear_probe(spec, cfg, state, seeds, hps, h,
                                  dict(y, train=np.random.default_rng(0).permutation(y["train"])))
    acc = r["test_accuracy"]
    assert acc.shape == (SEEDS,)
    assert np.all(acc >= 0.3), acc
    assert shuffled["test_accuracy"].mean() <= 0.2, shuffled
    assert np.all((r["best_epoch"] >= 1) & (r["best_epoch"] <= tasks.PROBE_EPOCHS))
    assert np.all(r["val_accuracy"] > 0.2)
    recorded = read_json(bakeoff.root / bakeoff.dirs["vanilla"]["full"] / "tasks.json")["metrics"]
    np.testing.assert_allclose(acc, recorded["probe_accuracy"]["values"], atol=1e-6)
    np.testing.assert_allclose(r["best_epoch"], recorded["probe_best_epoch"]["values"])


def test_scratch_baseline_on_digits_beats_chance_clearly_and_shuffled_labels_do_not(bakeoff, labelled):
    lab = labelled
    assert len(lab.x_train) == 135
    r = tasks.scratch_baseline(list(range(SEEDS)), lab.x_train, lab.y_train, lab.x_val, lab.y_val,
                               lab.x_test, lab.y_test)
    assert np.all(r["test_accuracy"] > 0.75), r
    assert np.all((r["best_epoch"] >= 1) & (r["best_epoch"] <= tasks.PROBE_EPOCHS))
    bad = tasks.scratch_baseline(list(range(SEEDS)), lab.x_train, np.random.default_rng(0).permutation(lab.y_train),
                                 lab.x_val, lab.y_val, lab.x_test, lab.y_test)
    assert bad["test_accuracy"].mean() < 0.25, bad
    scratch = read_json(bakeoff.root / SCRATCH / "tasks.json")
    assert scratch["n_labelled"] == 135 and scratch["seeds"] == list(range(SEEDS))
    np.testing.assert_allclose(r["test_accuracy"], scratch["metrics"]["probe_accuracy"]["values"], atol=1e-6)


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
