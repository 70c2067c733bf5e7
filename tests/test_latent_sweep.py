"""The latent-size sweep end to end on digits, its reuse of finished runs, and the rules that judge the claims.

The sweep: ``experiments/latent_sweep.py`` (its main() in this process) with
vanilla and vae, both width settings, 2 seeds and 2 epochs into a temporary
results folder: first at n = 20 alone, then at n = 2 and 20 (only the n = 2
runs may train), then the same command again with the trainer replaced by one
that fails (nothing may train). The claim rules are checked on made-up
summaries whose verdict is known; bad flags give one line and exit 2.
"""
from __future__ import annotations

import functools
import types

import numpy as np
import pytest
from PIL import Image

from _helpers import REPO, assert_script_refuses, invoke_ok
from ae_jax.io import read_json
from ae_jax.studies import STUDIES, StudyOptions, driver
from ae_jax.studies.ae_vs_vae import AeVsVae
from ae_jax.studies.latent_sweep import (_beyond_direction, chosen_n, claim_digits, claim_falls, claim_flat,
                                         param_count, width_section)
from ae_jax.trainer.provenance import config_record, differences

STUDY_PY = REPO / "experiments" / "latent_sweep.py"
SEEDS, EPOCHS = 2, 2
KEYS = ("vanilla", "vae", "vanilla_w20", "vae_w20")
RUNS = {"vanilla_n2_e2_mse", "vanilla_e2_mse", "vanilla_n2_e2_mse_w20", "vae_n2_e2_mse", "vae_e2_mse",
        "vae_n2_e2_mse_w20"}  # at n = 20 the fixed widths are the protocol's: one run serves both
FIGURES = ("error_vs_latent", "per_class", "reconstructions")


_invoke = functools.partial(invoke_ok, STUDY_PY)


def _mtimes(root):
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """n = 20 alone first; then n = 2 and 20 (only the n = 2 runs may train); then the same again (nothing may)."""
    root = tmp_path_factory.mktemp("sweep") / "digits"
    base = ["--dataset=digits", f"--seeds={SEEDS}", f"--epochs={EPOCHS}", f"--out={root}"]
    log0 = _invoke([*base, "--latent-dims=20"])
    mtimes0 = _mtimes(root)

    trained = []
    real = driver.run_experiment

    def counting(cfg, *a, **k):
        trained.append(cfg.name())
        return real(cfg, *a, **k)

    argv = [*base, "--latent-dims=20,2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "run_experiment", counting)
        log1 = _invoke(argv)
    folder = root / "latent_sweep"
    summary1, mtimes1 = read_json(folder / "summary.json"), _mtimes(root)

    log2 = invoke_ok(STUDY_PY, argv, train=False)
    return types.SimpleNamespace(root=root, folder=folder, log0=log0, log1=log1, log2=log2, summary1=summary1,
                                 summary2=read_json(folder / "summary.json"), mtimes0=mtimes0, mtimes1=mtimes1,
                                 mtimes2=_mtimes(root), trained=trained)


def test_sweep_summary_has_every_model_size_and_metric(sweep):
    s = sweep.summary1
    assert list(s) == list(KEYS)
    need = (["test_mse", "test_bce", "final_val_loss", "train_time_s", "compile_time_s"]
            + [f"test_mse_class{d}" for d in range(10)])
    for key in KEYS:
        assert list(s[key]) == ["2", "20"], key  # sizes ascending, whatever order the flag gave
        for n in ("2", "20"):
            for m in need:
                e = s[key][n][m]
                assert set(e) == {"mean", "std", "values"}, (key, n, m)
                assert len(e["values"]) == SEEDS and all(np.isfinite(e["values"])), (key, n, m)
                assert e["mean"] == pytest.approx(np.mean(e["values"]))
            assert s[key][n]["compile_time_s"]["mean"] > 0
    # one run per folder; both width settings read the same n = 20 run
    assert set(sweep.mtimes1) == RUNS
    assert s["vae_w20"]["20"] == s["vae"]["20"] and s["vanilla_w20"]["20"] == s["vanilla"]["20"]
    assert s["vae_w20"]["2"]["test_mse"]["values"] != s["vae"]["2"]["test_mse"]["values"]


def test_sweep_per_digit_errors_average_back_to_the_overall_error(sweep, digits):
    counts = np.bincount(digits.y_test, minlength=10)
    for key in KEYS:
        for n, e in sweep.summary1[key].items():
            per = np.asarray([e[f"test_mse_class{d}"]["values"] for d in range(10)])   # [10, S]
            np.testing.assert_allclose(counts @ per / counts.sum(), e["test_mse"]["values"], rtol=1e-5,
                                       err_msg=f"{key} n = {n}")


def test_sweep_reuses_finished_runs_and_trains_only_new_sizes(sweep):
    assert set(sweep.mtimes0) == {"vanilla_e2_mse", "vae_e2_mse"}  # n = 20: one run for both width settings
    assert sorted(sweep.trained) == sorted(RUNS - set(sweep.mtimes0))  # then the n = 2 runs alone
    assert all(sweep.mtimes1[r] == t for r, t in sweep.mtimes0.items())
    assert sweep.log1.count("done already") == 2
    assert "] training" not in sweep.log2 and sweep.log2.count("done already") == len(RUNS)
    assert sweep.mtimes2 == sweep.mtimes1 and sweep.summary2 == sweep.summary1


def test_sweep_plan_shares_the_ae_vs_vae_runs():
    opts = StudyOptions(dataset="digits", models=["vanilla", "vae", "cvae"], seeds=5, epochs=60)
    sweep_cfgs = {p.cfg.name(): p.cfg for p in STUDIES["latent_sweep"].plan(opts)}
    sweep_names = set(sweep_cfgs)
    ae_vs_vae = {p.cfg.name(): p.cfg for p in AeVsVae().plan(opts) if p.cfg.betas is None}
    assert set(ae_vs_vae) == {"vanilla_mse", "vae_mse", "cvae_mse", "vanilla_n2_mse", "vae_n2_mse", "cvae_n2_mse"}
    assert set(ae_vs_vae) <= sweep_names
    for name, cfg in ae_vs_vae.items():  # the same identity, so the folder's config.json is accepted as it is
        assert differences(config_record(cfg, ""), config_record(sweep_cfgs[name], "")) == [], name
    assert {"vanilla_n5_mse", "vae_n50_mse_w20", "vae_n100_mse"} <= sweep_names
    assert len(sweep_names) == 3 * (6 + 5)  # six sizes per width setting, n = 20 shared


def test_sweep_writes_every_figure_with_its_arrays(sweep):
    for stem in FIGURES:
        with Image.open(sweep.folder / f"{stem}.png") as im:
            assert im.size[0] > 100 and im.size[1] > 100
    err = np.load(sweep.folder / "error_vs_latent.npz")
    assert list(err["keys"]) == list(KEYS) and list(err["n"]) == [2, 20]
    assert err["test_mse_values"].shape == (4, 2, SEEDS) and np.isfinite(err["final_val_loss_mean"]).all()
    np.testing.assert_allclose(err["test_mse_mean"], [[sweep.summary1[k][n]["test_mse"]["mean"] for n in ("2", "20")]
                                                      for k in KEYS])
    per = np.load(sweep.folder / "per_class.npz")["mse"]
    assert per.shape == (4, 10, 2)
    np.testing.assert_allclose(per[1, 7, 0], sweep.summary1["vae"]["2"]["test_mse_class7"]["mean"])
    rec = np.load(sweep.folder / "reconstructions.npz")
    assert rec["x"].shape == (10, 32, 32) and rec["recon"].shape == (4, 2, 10, 32, 32)
    assert np.isfinite(rec["recon"]).all() and rec["recon"].min() >= 0 and rec["recon"].max() <= 1
    np.testing.assert_array_equal(rec["recon"][1, 1], rec["recon"][3, 1])  # n = 20: one run for both widths
    assert not np.array_equal(rec["recon"][1, 0], rec["recon"][3, 0])


def test_sweep_report_states_the_command_claims_compile_time_and_choice(sweep):
    text = (sweep.folder / "README.md").read_text()
    assert "python experiments/latent_sweep.py --dataset=digits" in text
    assert "## Compilation" in text and "its own compiled program" in text
    assert "## Which n the VAE's validation error picks" in text
    for row in ("| 1 | plain AE", "| 2 | VAE", "| 3 | 1 and 7"):
        assert text.count("\n" + row) == 2, f"{row}: one row per width setting"
    assert "**The two width settings**" in text and "Welch" in text
    for stem in FIGURES:
        assert f"({stem}.png)" in text
    assert "`vanilla_n2_e2_mse_w20`" in text


# ------------------------------------------------------------------ the claim rules on made-up numbers
def _entry(mse: float, classes=None, val=None, spread=0.01) -> dict:
    def ms(v):
        vals = [v - spread, v, v + spread]
        return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)), "values": vals}
    classes = classes if classes is not None else [mse] * 10
    e = {"test_mse": ms(mse), "final_val_loss": ms(val if val is not None else mse)}
    e.update({f"test_mse_class{d}": ms(c) for d, c in enumerate(classes)})
    return e


def _series(values: dict) -> dict:
    return {str(n): _entry(v) for n, v in values.items()}


def test_claim_1_rules():
    falling = {"vanilla": _series({2: 40, 5: 30, 10: 20, 20: 15})}
    assert claim_falls(falling, "vanilla")[1].startswith("**confirmed**")
    plateau = {"vanilla": _series({2: 40, 5: 30, 10: 20, 20: 20})}  # a flat step: not shown, never refuted
    v = claim_falls(plateau, "vanilla")[1]
    assert v.startswith("**not shown**") and "10 → 20: not shown" in v and "refuted" not in v
    rising = {"vanilla": _series({2: 20, 20: 30})}
    assert claim_falls(rising, "vanilla")[1].startswith("**refuted**")
    noisy = {"vanilla": {"2": _entry(20, spread=5), "20": _entry(19, spread=5)}}
    assert claim_falls(noisy, "vanilla")[1].startswith("**not shown**")
    one_digit_rises = {"vanilla": {"2": _entry(40, classes=[40] * 9 + [10]), "20": _entry(15, classes=[10] * 9 + [20])}}
    text, verdict = claim_falls(one_digit_rises, "vanilla")
    assert verdict.startswith("**refuted**") and "for every digit: refuted" in verdict and "9 (2 → 20)" in text


def test_claim_2_rules():
    """The VAE's error halving from n = 2 to 20 (Welch p ~ 1e-15) refutes "hardly changes"; a change not told apart
    from noise is not shown; a change shown to be small (its 95 % interval within ±5 %) confirms."""
    ae = _series({2: 40, 20: 20, 100: 10})
    flat = {"vae": _series({2: 30.5, 20: 30, 100: 30.2}), "vanilla": ae}
    text, verdict = claim_flat(flat, "vae", "vanilla")
    assert verdict.startswith("**confirmed**") and "sampled z" in text
    falls_early = {"vae": _series({2: 40, 20: 30, 100: 30.2}), "vanilla": ae}
    text, verdict = claim_flat(falls_early, "vae", "vanilla")
    assert verdict.startswith("**refuted**") and "hardly changes from n = 2 to 20: refuted" in verdict
    assert "the AE's: -50.0%" in text
    falls_late = {"vae": _series({2: 30, 20: 30, 100: 20})}
    assert claim_flat(falls_late, "vae", None)[1].startswith("**refuted**")
    noisy = {"vae": {"2": _entry(33, spread=4), "20": _entry(30, spread=4)}}  # -9 %, but Welch p > 0.05
    v = claim_flat(noisy, "vae", None)[1]
    assert v.startswith("**not shown**") and "refuted" not in v
    assert claim_flat({"vae": _series({2: 30, 5: 30})}, "vae", None)[1].startswith("**not testable here**")


def _noisy(classes, seed=0) -> dict:
    """Per-class errors over 5 seeds with independent noise (so differences between digits vary by seed)."""
    rng = np.random.default_rng(seed)
    e = {}
    for d, c in enumerate(classes):
        vals = [float(c + x) for x in rng.normal(0, 0.05, 5)]
        e[f"test_mse_class{d}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)), "values": vals}
    return e


def test_claim_3_rules_and_the_chosen_size():
    easy_hard = [5, 1, 9, 5, 5, 5, 5, 2, 9.5, 5]  # 1 and 7 lowest, 2 and 8 highest
    good = {"vae": {"2": _noisy(easy_hard), "20": _noisy(easy_hard, 1)}}
    assert claim_digits(good, ["vae"])[1].startswith("**confirmed**")
    bad = {"vae": {"2": _noisy(list(range(10)))}}  # 0 and 1 easiest, 8 and 9 hardest, each significantly
    assert claim_digits(bad, ["vae"])[1].startswith("**refuted**")
    close = [5, 1, 9, 5, 5, 5, 5, 2, 9.5, 2.01]  # 9 as easy as 7 (not told apart): not shown, never refuted
    v = claim_digits({"vae": {"2": _noisy(close)}}, ["vae"])[1]
    assert v.startswith("**not shown**") and "1 and 7 easiest: not shown" in v
    picks = {"vae": {"10": _entry(5, val=31), "20": _entry(5, val=30), "50": _entry(5, val=25)}}
    best, text = chosen_n(picks, "vae")
    assert best == 50 and "would not pick" in text
    assert chosen_n({"vae": {"20": _entry(5, val=3), "50": _entry(5, val=4)}}, "vae")[0] == 20


def test_width_comparison_credits_the_setting_with_more_parameters():
    # below n = 20 the held n = 20 widths are the larger model, above it the protocol's
    assert param_count("vanilla", 2, "fixed") > param_count("vanilla", 2, "protocol")
    assert param_count("vanilla", 50, "protocol") > param_count("vanilla", 50, "fixed")
    assert param_count("vanilla", 20, "protocol") == param_count("vanilla", 20, "fixed")
    larger_wins = {"vanilla": _series({2: 30, 20: 5, 50: 2.6}), "vanilla_w20": _series({2: 29, 20: 5, 50: 2.7})}
    text = "\n".join(width_section(larger_wins, ["vanilla"], [2, 20, 50]))
    assert "| AE | 2 |" in text and "| AE | 50 |" in text and "| AE | 20 |" not in text
    assert "more parameters has the lower error at 2 of 2 sizes" in text
    smaller_wins = {"vanilla": _series({2: 29, 20: 5, 50: 2.6}), "vanilla_w20": _series({2: 30, 20: 5, 50: 2.6})}
    text = "\n".join(width_section(smaller_wins, ["vanilla"], [2, 20, 50]))
    assert "at 0 of 1 sizes" in text and "neither (not told apart)" in text


def test_direction_past_20_is_reported_only_where_the_settings_disagree():
    falls = {"vae": _series({20: 15.3, 50: 14.9}), "vae_w20": _series({20: 15.3, 50: 15.6})}
    text = _beyond_direction(falls, ["vae"], ["protocol", "fixed"])
    assert "falls from n = 20 to 50" in text and "rises from n = 20 to 50" in text
    same = {"vae": _series({20: 15.3, 50: 15.6}), "vae_w20": _series({20: 15.3, 50: 15.7})}
    assert _beyond_direction(same, ["vae"], ["protocol", "fixed"]) == ""


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args,fragment", [
    (["--dataset=nope"], "unknown dataset"),
    (["--models=nope"], "unknown model 'nope'"),
    (["--models="], "--models is empty"),
    (["--latent-dims=0,2"], "--latent-dims must be positive"),
    (["--latent-dims=2,x"], "whole numbers"),
    (["--latent-dims=600"], "too large for vae"),
    (["--widths=wide"], "--widths"),
    (["--loss=l1"], "--loss"),
    (["--seeds=0"], "--seeds"),
    (["--epochs=0"], "--epochs"),
    (["--models=stacked", "--epochs=2"], "3 phases"),
    (["--dataset=mnist", "--data-dir={tmp}/absent"], "absent"),
])
def test_sweep_refuses_bad_input_in_one_line_writing_nothing(tmp_path, capsys, args, fragment):
    out = tmp_path / "results"
    argv = [a.format(tmp=tmp_path) for a in args]
    if not any(a.startswith("--dataset") for a in argv):
        argv.append("--dataset=digits")
    assert_script_refuses(STUDY_PY, argv, out, capsys, fragment)
