"""The whole bake-off end to end, once, on digits; what it writes (summary.json, the report, each run's
tasks/<task>.json); reuse; the linear probe and the baselines on real labels; the CLI's bad-input errors.

The module-scoped ``bakeoff`` fixture runs ``experiments/bakeoff.py``'s ``main`` in this process
(sharing the compilation cache and numba's UMAP warm-up with the rest of the suite) with two models,
two seeds and three epochs, then runs it a second time to check that everything is reused. The
tests read what it wrote; the anomaly and probe tests reload its trained models.
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
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from _helpers import REPO, assert_one_line_error, subprocess_env
from ae_jax import figures
from ae_jax.data import Data, load_splits
from ae_jax.io import read_json
from ae_jax.models import MODELS
from ae_jax.studies import STUDIES, StudyOptions
from ae_jax.studies import report
from ae_jax.studies.bakeoff import ANOMALY_NOTE, ANOMALY_TASKS, FULL_TASKS, RANDOM_ENCODER, SCRATCH, TABLES
from ae_jax.tasks import task_path
from ae_jax.tasks.probe import PROBE_EPOCHS, linear_probe
from ae_jax.tasks.scratch import scratch_baseline
from ae_jax.trainer import evaluate_runs, load_final_state
from ae_jax.trainer.program import TrainConfig, make_model, spec_hparams

BAKEOFF_PY = REPO / "experiments" / "bakeoff.py"
SEEDS, EPOCHS, RUN_MODELS = 2, 3, ("vanilla", "vae")
ARGS = ["--dataset=digits", f"--seeds={SEEDS}", f"--epochs={EPOCHS}", "--models=" + ",".join(RUN_MODELS)]
BASELINES = (SCRATCH, RANDOM_ENCODER)
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
    script = load_script()
    rc, log1 = invoke(script, argv)
    assert rc == 0, log1[-3000:]
    readme1 = (root / "README.md").read_text()
    summary1 = read_json(root / "summary.json")
    before = file_state(root)
    rc2, log2 = invoke(script, argv)  # everything is done: nothing may be retrained or re-evaluated
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
    required = ("test_bce", "test_mse", "probe_accuracy", "knn_accuracy", "silhouette", "anomaly_auc",
                "anomaly_test_bce", "train_time_s")
    for m in RUN_MODELS:
        missing = [k for k in required if k not in summary[m]]
        assert not missing, f"{m} lacks {missing}"
    for b in BASELINES:
        assert set(summary[b]) == {"probe_accuracy", "probe_best_epoch"}
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
        saved = read_json(task_path(bakeoff.root / b, b))
        assert saved["seeds"] == list(range(SEEDS))
        for k, v in saved["metrics"].items():
            assert summary[b][k]["values"] == v["values"], (b, k)


def test_summary_numbers_say_the_models_learnt(summary):
    """Floors an untrained or mis-wired run would miss: a test BCE below a constant grey image's (1024 ln 2);
    vanilla's 2-D embedded codes separate the digits (5-NN accuracy well above chance, 0.1; after 3 epochs
    the VAE's sampled codes are still too noisy for that); different numbers per seed."""
    for m in RUN_MODELS:
        e = summary[m]
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


def test_readme_has_a_table_per_task_with_the_models_as_columns_and_the_best_in_bold(bakeoff, summary):
    secs = sections((bakeoff.root / "README.md").read_text())
    for title, rows in report_tables():
        assert title in secs, f"no section {title!r}; have {list(secs)}"
        t = table(secs[title])
        expect = list(RUN_MODELS) + (list(BASELINES) if rows[0][0] == "probe_accuracy" else [])
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
            cols = [c for c in (*RUN_MODELS, *BASELINES) if metric in summary[c]]
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


def test_readme_says_no_seed_diverged_when_none_did(bakeoff):
    diverged = [d for m in RUN_MODELS for v in ("full", "anomaly")
                for d in read_json(bakeoff.root / bakeoff.dirs[m][v] / "metrics.json")["diverged"]]
    assert diverged == []
    assert "- Diverged seeds: none." in (bakeoff.root / "README.md").read_text()


def test_readme_states_the_anomaly_scoring_note(bakeoff):
    secs = sections((bakeoff.root / "README.md").read_text())
    anomaly = [s for t, s in secs.items() if t.startswith("Anomaly")]
    assert len(anomaly) == 1 and ANOMALY_NOTE in anomaly[0]


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
        assert set(task_files(bakeoff.root / b)) == {b}


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


def test_the_scratch_baseline_learns_from_labels_and_not_from_shuffled_ones(bakeoff, labelled):
    lab = labelled
    recorded = read_json(task_path(bakeoff.root / SCRATCH, SCRATCH))
    assert recorded["seeds"] == list(range(SEEDS))
    assert all(a > 0.75 for a in recorded["metrics"]["probe_accuracy"]["values"]), recorded["metrics"]
    bad = scratch_baseline(list(range(SEEDS)), lab.x_train, np.random.default_rng(0).permutation(lab.y_train),
                           lab.x_val, lab.y_val, lab.x_test, lab.y_test)
    assert bad["test_accuracy"].mean() < 0.25, bad


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
