"""The AE vs VAE vs CVAE study end to end on digits, and the trainer's per-epoch snapshots it relies on.

Snapshots: each epoch program of a run with ``snapshots = K`` also returns the
encoder outputs of K images; they must equal what evaluation computes from the
checkpoint of that very epoch, survive a resume, and leave the training itself
unchanged; ``snapshots = 0`` keeps the old program (three outputs, no
snapshots in the checkpoint, the old run name and identity).

The study: ``experiments/ae_vs_vae.py`` with 2 seeds and 2 epochs into a
temporary results folder (its main() in this process); then again after every
checkpoint is deleted, which must train nothing and redraw the report from the
saved arrays alone. Bad input: one line, exit 2, nothing written.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from _helpers import REPO, assert_one_line_error, invoke_ok, subprocess_env
from ae_jax.data import train_data, val_data
from ae_jax.io import read_json
from ae_jax.models import get_model
from ae_jax.trainer import ExperimentConfig, TrainConfig, evaluate_runs, init_state, spec_hparams, train_runs
from ae_jax.trainer.loop import _checkpoint_manager, _ckpt_tree, _restore
from ae_jax.trainer.program import FULL, make_epoch
from ae_jax.trainer.provenance import config_record, differences
from ae_jax.trainer.results import snapshot_data

SNAP_CFG = TrainConfig(latent_dim=2, epochs=2, loss="mse", snapshots=40)
SEEDS = [0, 1]
BETAS = [0.0, 1.0]


def _train(digits, cfg, ckpt_dir=None, log=lambda m: None):
    spec = get_model("vae")
    hps = [spec_hparams(spec, b) for b in BETAS]
    snap = snapshot_data(digits, cfg.snapshots) if cfg.snapshots else None
    return train_runs(spec, cfg, SEEDS, hps, train_data(digits), val_data(digits), ckpt_dir=ckpt_dir, ckpt_every=1,
                      log=log, snap=snap)


@pytest.fixture(scope="module")
def snapped(digits, tmp_path_factory):
    """The n = 2 VAE, β = 0 and β = 1 as two runs, 2 epochs with snapshots of 40 test images, a checkpoint per epoch."""
    ckpt = tmp_path_factory.mktemp("snap") / "ck"
    return types.SimpleNamespace(out=_train(digits, SNAP_CFG, ckpt), ckpt=ckpt)


def _state_after(ckpt_dir, cfg, epoch):
    """The batched train state saved after `epoch` (1-based)."""
    spec = get_model("vae")
    shapes = jax.eval_shape(jax.vmap(lambda k: init_state(spec, cfg, k)), jax.numpy.stack([jax.random.key(0)] * 2))
    template = _ckpt_tree(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes), cfg.epochs, 2,
                          (cfg.epochs, 2, cfg.snapshots, 4))
    manager = _checkpoint_manager(ckpt_dir)
    try:
        return _restore(manager, template, ckpt_dir, step=epoch)
    finally:
        manager.close()


def test_snapshots_equal_evaluation_of_each_epochs_checkpoint(snapped, digits):
    out, spec = snapped.out, get_model("vae")
    K = SNAP_CFG.snapshots
    assert out.snapshots.shape == (SNAP_CFG.epochs, 2, K, 4)  # [E, R, K, e], e = 2n for the Gaussian code
    hps = [spec_hparams(spec, b) for b in BETAS]
    for epoch in (1, 2):
        ck = _state_after(snapped.ckpt, SNAP_CFG, epoch)
        assert int(ck["epoch"]) == epoch
        h = evaluate_runs(spec, SNAP_CFG, ck["state"], SEEDS, hps, snapshot_data(digits, K))["h"]
        np.testing.assert_allclose(out.snapshots[epoch - 1], h, rtol=1e-5, atol=1e-5,
                                   err_msg=f"snapshot of epoch {epoch} vs evaluation of its checkpoint")
        # the checkpoint keeps the snapshots of the epochs so far, NaN for those still to come
        np.testing.assert_array_equal(ck["snapshots"][:epoch], out.snapshots[:epoch])
        assert np.isnan(ck["snapshots"][epoch:]).all()
    assert np.abs(out.snapshots[1] - out.snapshots[0]).max() > 1e-3, "the codes did not move between epochs"


class Interrupt(Exception):
    pass


def test_resumed_run_keeps_the_snapshots_of_earlier_epochs(snapped, digits, tmp_path):
    def stop_in_epoch_2(msg):
        if msg.strip().startswith("epoch   2/"):
            raise Interrupt(msg)

    with pytest.raises(Interrupt):
        _train(digits, SNAP_CFG, tmp_path / "ck", log=stop_in_epoch_2)
    logs = []
    resumed = _train(digits, SNAP_CFG, tmp_path / "ck", log=logs.append)
    assert resumed.resumed_from == 1 and not any(m.strip().startswith("epoch   1/") for m in logs)
    np.testing.assert_array_equal(resumed.snapshots[0], snapped.out.snapshots[0])  # restored, not recomputed
    np.testing.assert_allclose(resumed.snapshots[1], snapped.out.snapshots[1], rtol=1e-4, atol=1e-4)


def test_snapshots_leave_training_unchanged_and_zero_keeps_the_old_program(snapped, digits, tmp_path):
    plain_cfg = dataclasses.replace(SNAP_CFG, snapshots=0)
    plain = _train(digits, plain_cfg, tmp_path / "ck")
    assert plain.snapshots is None
    np.testing.assert_allclose(plain.train_curve, snapped.out.train_curve, rtol=1e-5)
    np.testing.assert_allclose(plain.val_curve, snapped.out.val_curve, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(snapped.out.state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the checkpoint tree of a run without snapshots is what it always was
    restored = _restore(_checkpoint_manager(tmp_path / "ck"), _ckpt_tree(plain.state, 2, 2), tmp_path / "ck")
    assert set(restored) == {"state", "epoch", "train_curve", "val_curve", "epoch_time", "compile_time"}
    # the epoch program: three outputs without snapshots, four with
    spec, d = get_model("vae"), train_data(digits)
    state = init_state(spec, plain_cfg, jax.random.key(0))
    args = (state, jax.random.key(1), 0, spec_hparams(spec), d, val_data(digits))
    assert len(jax.eval_shape(make_epoch(spec, plain_cfg, FULL, len(d.x)), *args)) == 3
    out4 = jax.eval_shape(make_epoch(spec, SNAP_CFG, FULL, len(d.x)), *args, snapshot_data(digits, 40))
    assert len(out4) == 4 and out4[3].shape == (40, 4)


def test_snapshots_are_part_of_a_runs_name_and_identity():
    cfg = ExperimentConfig("vae", "digits", latent_dim=2, loss="mse", betas=(0.0, 1.0))
    snap = dataclasses.replace(cfg, snapshots=1000)
    assert cfg.name() == "vae_beta0,1_n2_mse" and snap.name() == "vae_beta0,1_n2_mse_snap1000"
    old = config_record(cfg, "")
    old.pop("snapshots")  # a config.json written before snapshots existed
    assert differences(old, config_record(cfg, "")) == []
    assert differences(old, config_record(snap, "")) == ["snapshots"]
    with pytest.raises(Exception, match="snapshots"):
        dataclasses.replace(cfg, snapshots=-1).validate()


def test_mean_code_is_mu_for_the_vae_and_z_for_the_plain_autoencoder():
    h = jax.random.normal(jax.random.key(0), (5, 6))
    np.testing.assert_array_equal(get_model("vae").bottleneck.mean_code(h), h[:, :3])
    np.testing.assert_array_equal(get_model("vanilla").bottleneck.mean_code(h), h)


# ------------------------------------------------------------------ the study end to end
STUDY_PY = REPO / "experiments" / "ae_vs_vae.py"
STUDY_SEEDS, STUDY_EPOCHS = 2, 2
KEYS = ("vanilla_n20", "vae_n20", "cvae_n20", "vanilla_n2", "vae_n2", "cvae_n2", "vae_beta0_n2", "vae_beta1_n2")
FIGURES = ("reconstructions", "prior_samples", "cvae_samples", "latent_plane", "codes_2d", "dynamics", "arithmetic",
           "style_transfer")


_invoke = functools.partial(invoke_ok, STUDY_PY)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "digits"
    argv = ["--dataset=digits", f"--seeds={STUDY_SEEDS}", f"--epochs={STUDY_EPOCHS}", f"--out={root}"]
    log1 = _invoke(argv)
    folder = root / "ae_vs_vae"
    summary1 = read_json(folder / "summary.json")
    for ck in root.glob("*/checkpoints"):  # a fresh clone: run folders without their checkpoints
        shutil.rmtree(ck)
    for f in folder.iterdir():
        f.unlink()
    log2 = _invoke(argv)
    return types.SimpleNamespace(root=root, folder=folder, log1=log1, log2=log2, summary1=summary1,
                                 summary=read_json(folder / "summary.json"))


def test_study_summary_has_every_run_and_metric(study):
    s = study.summary
    assert set(s) == set(KEYS)
    need = ["test_mse", "test_bce"] + [f"test_{k}_class{d}" for k in ("mse", "bce") for d in range(10)]
    for key in KEYS:
        for m in need:
            e = s[key][m]
            assert len(e["values"]) == STUDY_SEEDS and all(np.isfinite(e["values"])), (key, m)
            assert e["mean"] == pytest.approx(np.mean(e["values"]))
    for key in ("vanilla_n20", "vae_n20", "cvae_n20"):
        assert {"prior_offdata_fraction", "code_silhouette", "code_gauss_ks", "arith_ink_gain"} <= set(s[key])
    assert "prior_label_accuracy" in s["cvae_n20"] and "style_label_accuracy" in s["cvae_n20"]
    # the reference classifier reads the CVAE's samples: a fraction of them per seed
    acc = s["cvae_n20"]["cvae_label_accuracy"]["values"]
    assert len(acc) == STUDY_SEEDS and all(0.0 <= v <= 1.0 for v in acc)
    assert "cvae_label_accuracy" not in s["vae_n20"]
    assert "plane_offdata_fraction" in s["vae_n2"] and "plane_label_accuracy" in s["cvae_n2"]
    for key in ("vae_beta0_n2", "vae_beta1_n2"):
        assert {"snap_rms_mu", "snap_isotropy", "snap_knn_accuracy"} <= set(s[key])
    # the beta groups come from the one seeds x betas run, and differ
    assert s["vae_beta0_n2"]["test_mse"]["values"] != s["vae_beta1_n2"]["test_mse"]["values"]


def test_study_cvae_samples_are_a_seeds_by_labels_grid_of_images(study):
    a = np.load(study.folder / "cvae_samples.npz")["images"]
    assert a.ndim == 5 and a.shape[:2] == (STUDY_SEEDS, 10) and a.shape[2] >= 10 and a.shape[3:] == (32, 32)
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0


def test_study_writes_every_figure_with_its_arrays(study):
    for stem in FIGURES:
        assert (study.folder / f"{stem}.png").is_file(), stem
        assert (study.folder / f"{stem}.npz").is_file(), stem
        with Image.open(study.folder / f"{stem}.png") as im:
            assert im.size[0] > 100 and im.size[1] > 100
    with Image.open(study.folder / "dynamics.gif") as gif:
        assert gif.n_frames == STUDY_EPOCHS  # one frame per epoch
    dyn = np.load(study.folder / "dynamics.npz")
    K = min(1000, 297)  # the first 1000 test images; digits has 297
    assert dyn["mu"].shape == (STUDY_EPOCHS, 2, K, 2) and list(dyn["betas"]) == [1.0, 0.0]


def test_study_figure_arrays_hold_the_images_and_labels_they_name(study, digits):
    """Each figure's .npz holds what its caption says: the test images and labels it was drawn from, in order,
    and decoded images in [0, 1]."""
    npz = {stem: dict(np.load(study.folder / f"{stem}.npz")) for stem in FIGURES}
    rec = npz["reconstructions"]
    first = [int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)]  # "the first of each digit"
    assert rec["index"].tolist() == first
    np.testing.assert_array_equal(rec["x"], digits.x_test[first])
    assert rec["models"].tolist() == ["vanilla", "vae", "cvae"] and rec["recon"].shape == (3, 10, 32, 32)
    for stem in ("latent_plane", "codes_2d"):
        labels = npz[stem]["labels"]
        np.testing.assert_array_equal(labels, digits.y_test[:len(labels)], err_msg=stem)
    assert npz["codes_2d"]["pca"].shape == (3, len(npz["codes_2d"]["labels"]), 2)
    assert npz["latent_plane"]["codes"].shape[1:] == (len(npz["latent_plane"]["labels"]), 2)
    assert npz["style_transfer"]["labels"].tolist() == list(range(10))
    for stem, key in (("reconstructions", "recon"), ("prior_samples", "images"), ("arithmetic", "images"),
                      ("style_transfer", "images")):
        a = npz[stem][key]
        assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1 and a.std() > 0, stem


def test_study_snapshots_of_the_beta_run(study, digits):
    run = study.root / f"vae_beta0,1_n2_e{STUDY_EPOCHS}_mse_snap1000"
    snap = np.load(run / "snapshots.npz")
    K = len(digits.y_test[:1000])
    assert snap["h"].shape == (STUDY_EPOCHS, 2 * STUDY_SEEDS, K, 4)
    np.testing.assert_array_equal(snap["labels"], digits.y_test[:K])
    np.testing.assert_array_equal(snap["epochs"], np.arange(1, STUDY_EPOCHS + 1))
    assert list(snap["betas"]) == [0.0] * STUDY_SEEDS + [1.0] * STUDY_SEEDS


def test_study_report_states_every_claim_and_the_command(study):
    text = (study.folder / "README.md").read_text()
    assert "python experiments/ae_vs_vae.py --dataset=digits" in text
    for n in range(1, 10):
        assert f"\n| {n} | " in text, f"claim {n} missing"
    assert text.count("not testable here** (needs the latent-size sweep: see latent_sweep's report)") == 2
    assert "## Test MSE per digit" in text and "Welch" in text
    # wall-clock is shown, not ranked: no bold and no test in its rows
    clock = [ln for ln in text.splitlines() if ln.startswith("| training wall-clock s")]
    assert len(clock) == 2 and all("**" not in ln and ln.endswith("|  |") for ln in clock)
    for stem in FIGURES:
        if stem != "dynamics":
            assert f"({stem}.png)" in text, stem


def test_study_reuses_its_runs_and_redraws_from_saved_arrays(study):
    assert "training" in study.log1
    assert "] training" not in study.log2 and "training again" not in study.log2, study.log2[-2000:]
    assert study.log2.count("done already") == len(KEYS) - 1  # seven runs: the beta run holds two keys
    assert study.summary == study.summary1


@pytest.mark.parametrize("args,fragment", [
    (["--dataset=nope"], "unknown dataset"),
    (["--dataset=digits", "--seeds=0"], "--seeds"),
    (["--dataset=digits", "--epochs=0"], "--epochs"),
    (["--dataset=mnist", "--data-dir={tmp}/absent"], "absent"),
])
def test_study_refuses_bad_input_in_one_line_writing_nothing(tmp_path, args, fragment):
    out = tmp_path / "results"
    args = [a.format(tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, str(STUDY_PY), *args, f"--out={out}"], cwd=tmp_path,
                          env=subprocess_env(AE_JAX_MIRRORS=""), capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, fragment)
    assert not out.exists()


def test_same_model_note_states_the_measured_agreement():
    from ae_jax.studies.ae_vs_vae import same_model_note
    s = {"a": {"test_mse": {"values": [10.0, 20.0]}}, "b": {"test_mse": {"values": [10.0, 20.2]}}}
    assert "at most 1.0e-02 relatively" in same_model_note(s, "a", "b")
    s["b"]["test_mse"]["values"] = [float("nan"), 20.0]  # a diverged seed: no figure is claimed
    assert "relatively" not in same_model_note(s, "a", "b")


def test_study_report_pairs_its_runs_by_seed(study):
    """Every run of the study shares its seeds and source revision: the tables and claims use the paired t-test."""
    text = (study.folder / "README.md").read_text()
    assert "paired t-test p = " in text and "Welch p = " not in text


def test_comparisons_are_paired_exactly_between_runs_of_the_same_seeds_and_code(tmp_path):
    """A pair key is a run's seed list and source revision (the β groups share their run's); _cmp then gives scipy's
    paired p-value, and Welch's when the keys differ."""
    from scipy import stats
    from ae_jax.io import write_json
    from ae_jax.studies.ae_vs_vae import _cmp, pairing_keys

    def run(name, seeds, revision, betas=None):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", {"version": "0.2.0", "revision": revision})
        cfg = types.SimpleNamespace(seed_list=seeds, betas=betas, model="vae", latent=2)
        return types.SimpleNamespace(run_dir=tmp_path / name, planned=types.SimpleNamespace(cfg=cfg))

    keys = pairing_keys({"vanilla_n2": run("a", [0, 1, 2], "1"), "vae_n2": run("b", [0, 1, 2], "1"),
                         "cvae_n2": run("c", [0, 1, 2], "0.9"), "betas": run("d", [0, 1, 2], "1", [0.0, 1.0])})
    assert keys["vanilla_n2"] == keys["vae_n2"] == keys["vae_beta0_n2"] == keys["vae_beta1_n2"] != keys["cvae_n2"]
    a, b, c = [0.50, 0.61, 0.40], [0.30, 0.42, 0.19], [0.30, 0.42, 0.19]
    s = {k: {"m": {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}}
         for k, v in (("vanilla_n2", a), ("vae_n2", b), ("cvae_n2", c))}
    above, said = _cmp(s, "vanilla_n2", "vae_n2", "m", keys)
    p = stats.ttest_rel(a, b).pvalue
    assert f"paired t-test p = {p:.2g}" in said and above == (p < 0.05)
    above, said = _cmp(s, "vanilla_n2", "cvae_n2", "m", keys)
    assert f"Welch p = {stats.ttest_ind(a, c, equal_var=False).pvalue:.2g}" in said


def test_claim_7_scale_parts_are_not_testable_here_and_clusters_are_judged():
    """Without the KL term the code's per-axis scale and shift are not identified (Linear without bias → BatchNorm
    after the code): "further out" and "rounder" are not testable here, whatever the paired tests say; the 5-NN
    clusters are judged."""
    from ae_jax.studies.ae_vs_vae import claims

    def entry(values):
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": list(values)}

    b0, b1 = "vae_beta0_n2", "vae_beta1_n2"
    s = {b0: {"snap_rms_mu": entry([1.9, 2.1, 1.7, 2.2, 1.8]), "snap_knn_accuracy": entry([0.70] * 4 + [0.71]),
              "snap_isotropy": entry([0.80, 0.70, 0.85, 0.90, 0.75])},
         b1: {"snap_rms_mu": entry([1.3, 1.4, 1.35, 1.45, 1.3]), "snap_knn_accuracy": entry([0.69] * 4 + [0.70]),
              "snap_isotropy": entry([0.95, 0.90, 0.96, 0.97, 0.92])}}
    pairing = {b0: "k", b1: "k"}
    [row] = [r for r in claims(s, pairing) if r[0] == "7"]
    assert row[3].startswith("**not shown**") and "paired t-test" in row[2]
    assert row[3].count("not testable here (the β = 0 code's per-axis scale") == 2
    assert "measured: paired t-test p = " in row[3] and "clusters with or without β: confirmed" in row[3]
    assert "measured: confirmed" not in row[3]  # one verdict word per part
    s[b0]["snap_knn_accuracy"] = entry([0.10, 0.12, 0.11, 0.09, 0.10])  # no clusters without β: refuted
    [row] = [r for r in claims(s, pairing) if r[0] == "7"]
    assert row[3].startswith("**refuted**")
