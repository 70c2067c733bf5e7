"""Training: every model learns, vmapped runs equal separate runs, stacked phases, resume, nan, sharding,
labels that stay with their images, and evaluation that depends on nothing but the image.

All runs use a 512-image slice of digits, 3 epochs of 8 batches of 64, latent 8:
enough for the loss to fall, small enough for CI. Trained results are shared
between tests through the session-scoped ``train`` fixture.
"""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import (REPO, assert_runs_equal, assert_trees_close, bce_numpy, bernoulli_kl_numpy, forced_devices_env,
                      leaves_with_paths, mse_numpy, sigmoid_numpy)
from ae_jax.data import Data
from ae_jax.models.losses import add_input_noise
from ae_jax.models import MODELS
from ae_jax.trainer import (ExperimentConfig, evaluate_runs, format_table, has_final_checkpoint, load_final_state,
                            train_runs)
from ae_jax.trainer import program
from ae_jax.trainer.loop import _eval_program
from ae_jax.trainer.program import (FULL, TrainConfig, init_state, make_epoch, make_eval, make_loss, make_model,
                                    phase_at, phase_schedule, reset_optimizer, run_keys, spec_hparams, stacked_phases)
from ae_jax.trainer.results import result_metrics

CFG = TrainConfig(latent_dim=8, epochs=3, batch_size=64)
SEEDS = (3, 7)


@pytest.fixture(scope="session")
def train(tiny):
    """train(name, seeds=SEEDS, hparams=None) -> TrainOutput, memoised for the session.

    hparams: one losses.Hparams per run (default: the model's own). The log
    lines of each fresh run are kept in ``out.logs``.
    """
    cache = {}

    def run(name, seeds=SEEDS, hparams=None):
        spec = MODELS[name]
        hps = list(hparams) if hparams is not None else [spec_hparams(spec)] * len(seeds)
        key = (name, tuple(seeds), tuple(tuple(float(v) for v in h) for h in hps))
        if key not in cache:
            logs = []
            out = train_runs(spec, CFG, list(seeds), hps, *tiny, log=logs.append)
            out.logs = logs
            cache[key] = out
        return cache[key]

    return run


# ------------------------------------------------------------------ every model learns
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_and_its_loss_falls(train, name):
    out = train(name)
    assert out.train_curve.shape == out.val_curve.shape == (CFG.epochs, 2)
    assert np.isfinite(out.train_curve).all() and np.isfinite(out.val_curve).all()
    assert out.diverged == {} and out.resumed_from == 0
    assert out.samples_per_epoch == 512
    first, last = out.train_curve[0], out.train_curve[-1]
    assert np.all(last < first), f"{name}: train loss per seed went {first} -> {last}"
    assert not np.allclose(out.train_curve[:, 0], out.train_curve[:, 1]), "the two seeds trained identically"
    for leaf in jax.tree.leaves(out.state.params):
        assert leaf.shape[0] == 2  # a leading run axis
        assert np.isfinite(leaf).all()


def test_training_moves_parameters_away_from_their_initialisation(train):
    out = train("vanilla")
    init = jax.jit(jax.vmap(lambda k: init_state(MODELS["vanilla"], CFG, k)))(
        jnp.stack([run_keys(s)["init"] for s in SEEDS]))
    before, after = leaves_with_paths(init.params), leaves_with_paths(out.state.params)
    for k in before:
        assert not np.allclose(before[k], after[k]), f"{k} did not train"


# ------------------------------------------------------------------ vmap == separate runs
# vae (keys for z, KL) and sparse (batch-mean penalty) cover the machinery. vanilla, denoising and
# stacked are left out on purpose: their last encoder bias feeds a bias-free Linear followed by a
# batch-statistics BatchNorm, so its true gradient is 0, and Adam (which normalises by the gradient's
# size) turns float rounding noise - different in a batched and an unbatched program - into steps
# of size lr. The training losses still agree; that one bias and, through BatchNorm's running
# mean, the validation loss do not (~1e-2 and ~0.1 after 3 epochs). vq's argmin amplifies rounding
# in the same way. Neither is a bug in the vmap.
@pytest.mark.parametrize("name", ["vae", "sparse"])
def test_vmapped_seeds_equal_separate_runs(train, name):
    both = train(name, SEEDS)
    for i, seed in enumerate(SEEDS):
        alone = train(name, (seed,))
        assert_runs_equal(both, i, alone, 0)


def same_program_as_vae(name: str) -> bool:
    """Models that are vae with another beta value: one compiled program, beta a traced hyperparameter (the
    beta-grid test below checks that each run gets its own)."""
    spec, vae = MODELS[name], MODELS["vae"]
    return name != "vae" and spec == dataclasses.replace(vae, name=name, beta=spec.beta, description=spec.description)


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("vae", "sparse") and not same_program_as_vae(n)])
def test_vmapped_seeds_match_separate_runs_in_their_losses(train, name):
    """Every other model: the numbers a user reads (per-seed train and validation losses) agree.

    Parameters with a zero true gradient drift by Adam-sized steps of rounding noise (see above). That
    moves the training losses by a few 1e-4 relative at most; the validation losses, through
    BatchNorm's running statistics, by up to 3e-3 (vanilla, with JAX 0.12's XLA; a few 1e-4 with
    JAX 0.10). So each curve is also held to its purpose: a seed's separate run must be several
    times closer to its own batched run than to the other seed's (at most a tenth seen), which a
    seed mix-up cannot be.
    """
    both = train(name, SEEDS)
    for i, seed in enumerate(SEEDS):
        alone = train(name, (seed,))
        np.testing.assert_allclose(both.train_curve[:, i], alone.train_curve[:, 0], rtol=1e-3)
        np.testing.assert_allclose(both.val_curve[:, i], alone.val_curve[:, 0], rtol=1e-2)
        for curve in ("train_curve", "val_curve"):
            b, a = getattr(both, curve), getattr(alone, curve)[:, 0]
            own, other = np.abs(b[:, i] - a).sum(), np.abs(b[:, 1 - i] - a).sum()
            assert own < other / 4, f"seed {seed}'s {curve}: {own:.3g} from its own batched run, {other:.3g} from the other's"
    assert np.abs(both.train_curve[:, 0] - both.train_curve[:, 1]).max() > 1e-2  # the seeds differ


def test_beta_grid_in_one_program_equals_each_beta_alone(train):
    spec = MODELS["vae"]
    betas = (1.0, 4.0)
    grid = train("vae", (3, 3), [spec_hparams(spec, b) for b in betas])
    for i, b in enumerate(betas):
        assert_runs_equal(grid, i, train("vae", (3,), [spec_hparams(spec, b)]), 0)
    # and beta really is per run: same seed, different beta, different training
    assert np.all(np.abs(grid.train_curve[:, 0] - grid.train_curve[:, 1]) > 1e-3)
    # the epoch log gives each beta its own line, never a mean over the two models
    lines = [m.split() for m in grid.logs if m.lstrip().startswith("beta ")]
    assert len(lines) == CFG.epochs * len(betas)
    for k, words in enumerate(lines):
        e, i = divmod(k, len(betas))
        assert words[:2] == ["beta", f"{betas[i]:g}"] and words[2] == "train" and words[4] == "val"
        assert float(words[3]) == pytest.approx(grid.train_curve[e, i], abs=1e-3)
        assert float(words[5]) == pytest.approx(grid.val_curve[e, i], abs=1e-3)


def test_the_epoch_log_groups_runs_by_the_hyperparameters_that_differ():
    from ae_jax.trainer.loop import _setting_groups
    spec = MODELS["beta_vae"]
    grid = [spec_hparams(spec, b) for b in (0.5, 2.0) for _ in range(3)]  # seeds x betas, as ExperimentConfig.runs
    assert [(n, list(r)) for n, r in _setting_groups(grid)] == [("beta 0.5", [0, 1, 2]), ("beta 2", [3, 4, 5])]
    one = _setting_groups([spec_hparams(spec)] * 4)
    assert len(one) == 1 and list(one[0][1]) == [0, 1, 2, 3]
    mixed = [spec_hparams(spec, 1.0, lr) for lr in (1e-3, 1e-2)]
    assert [n for n, _ in _setting_groups(mixed)] == ["lr 0.001", "lr 0.01"]


# ------------------------------------------------------------------ stacked
def test_stacked_phase_schedule():
    spec = MODELS["stacked"]
    sched = phase_schedule(spec, 7)
    assert [start for _, start in sched] == [0, 2, 4]  # the remainder goes to the last phase
    assert [p for p, _ in sched] == list(stacked_phases())
    assert phase_at(sched, 6)[0] == 2 and phase_at(sched, 3)[0] == 1 and phase_at(sched, 0)[0] == 0
    assert phase_schedule(MODELS["vanilla"], 7) == [(FULL, 0)]
    with pytest.raises(ValueError, match="epochs >= 3"):
        phase_schedule(spec, 2)
    p1, p2, p3 = stacked_phases()
    assert (p1.enc_layers, p1.dec_layers) == ((0,), (2,))  # 1024 -> 341 -> 1024
    assert (p2.enc_layers, p2.dec_layers) == ((0, 1), (1, 2))
    assert (p3.enc_layers, p3.dec_layers) == ((0, 1, 2), (0, 1, 2)) and p3.full


def test_stacked_phases_train_only_their_own_layers(train, tiny):
    """Run the three phases by hand with program.make_epoch (one epoch each, a fresh Adam each
    phase): each phase changes exactly its layers (earlier ones frozen, their BatchNorm
    statistics untouched), and the result equals loop.train_runs' stacked run."""
    spec = MODELS["stacked"]
    d_train, d_val = (jax.tree.map(jnp.asarray, d) for d in tiny)
    keys = [run_keys(s) for s in SEEDS]
    hp = jax.tree.map(jnp.asarray, jax.tree.map(lambda *v: np.stack(v), *[spec_hparams(spec)] * 2))
    train_keys = jnp.stack([k["train"] for k in keys])
    state = jax.jit(jax.vmap(lambda k: init_state(spec, CFG, k)))(jnp.stack([k["init"] for k in keys]))
    expected = [
        {"enc/dense0/kernel", "enc/bn0/scale", "enc/bn0/bias", "dec/dense2/kernel", "dec/dense2/bias"},
        {"enc/dense1/kernel", "enc/bn1/scale", "enc/bn1/bias", "dec/dense1/kernel", "dec/bn1/scale", "dec/bn1/bias"},
        {"enc/dense2/kernel", "enc/dense2/bias", "dec/dense0/kernel", "dec/bn0/scale", "dec/bn0/bias"},
    ]
    expected_stats = [{"enc/bn0/mean", "enc/bn0/var"}, {"enc/bn1/mean", "enc/bn1/var", "dec/bn1/mean", "dec/bn1/var"},
                      {"dec/bn0/mean", "dec/bn0/var"}]
    for epoch, phase in enumerate(stacked_phases()):
        if epoch:
            state = jax.vmap(reset_optimizer)(state)
        before_p, before_s = leaves_with_paths(state.params), leaves_with_paths(state.batch_stats)
        # the same vmapped, donated program as loop.train_runs compiles
        fn = jax.vmap(make_epoch(spec, CFG, phase, d_train.x.shape[0]), in_axes=(0, 0, None, 0, None, None))
        state, tl, vl = jax.jit(fn, donate_argnums=0)(state, train_keys, jnp.int32(epoch), hp, d_train, d_val)
        assert np.isfinite(np.asarray(tl)).all()
        after_p, after_s = leaves_with_paths(state.params), leaves_with_paths(state.batch_stats)
        changed = {k for k in before_p if not np.array_equal(before_p[k], after_p[k])}
        changed_stats = {k for k in before_s if not np.array_equal(before_s[k], after_s[k])}
        assert changed == expected[epoch], f"phase {epoch + 1}"
        assert changed_stats == expected_stats[epoch], f"phase {epoch + 1} batch statistics"
    ref = train("stacked")
    assert_trees_close(jax.device_get(state.params), ref.state.params, what="stacked params vs train_runs")
    assert_trees_close(jax.device_get(state.batch_stats), ref.state.batch_stats, what="stacked stats vs train_runs")


# ------------------------------------------------------------------ resume
class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name,stop_at", [("vae", 2), ("stacked", 3)])
def test_interrupted_run_resumes_to_the_same_result(train, tiny, tmp_path, name, stop_at):
    """Interrupt during epoch `stop_at` (checkpoints every epoch), rerun: same result as uninterrupted.
    For stacked, epoch 3 starts phase 3: the resumed run must compile it and start a fresh Adam."""
    spec = MODELS[name]
    hps = [spec_hparams(spec)] * 2

    def interrupting_log(msg):
        if msg.strip().startswith(f"epoch {stop_at:3d}/"):
            raise Interrupt(msg)

    with pytest.raises(Interrupt):
        train_runs(spec, CFG, list(SEEDS), hps, *tiny, ckpt_dir=tmp_path / "ck", ckpt_every=1, log=interrupting_log)
    assert (tmp_path / "ck" / str(stop_at - 1)).is_dir()
    assert not (tmp_path / "ck" / str(stop_at)).exists()

    logs = []
    resumed = train_runs(spec, CFG, list(SEEDS), hps, *tiny, ckpt_dir=tmp_path / "ck", ckpt_every=1, log=logs.append)
    assert resumed.resumed_from == stop_at - 1
    assert any(f"resuming from the checkpoint after epoch {stop_at - 1}" in m for m in logs)
    assert not any(m.strip().startswith("epoch   1/") for m in logs), "a finished epoch was trained again"
    ref = train(name)
    np.testing.assert_allclose(resumed.train_curve, ref.train_curve, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(resumed.val_curve, ref.val_curve, rtol=1e-4, atol=1e-4)
    for i in range(2):
        assert_runs_equal(resumed, i, ref, i)
    assert_trees_close(resumed.state.opt_state, ref.state.opt_state, what="adam state")


def test_final_checkpoint_is_recognised_only_after_the_last_epoch(tiny, tmp_path):
    spec = MODELS["vanilla"]
    hps = [spec_hparams(spec)] * 2
    short = dataclasses.replace(CFG, epochs=2)
    assert not has_final_checkpoint(short, tmp_path / "absent")
    out = train_runs(spec, short, list(SEEDS), hps, *tiny, ckpt_dir=tmp_path / "ck", ckpt_every=1,
                     log=lambda m: None)
    assert has_final_checkpoint(short, tmp_path / "ck")
    assert not has_final_checkpoint(dataclasses.replace(CFG, epochs=3), tmp_path / "ck")  # stopped short of 3
    assert load_final_state(spec, dataclasses.replace(CFG, epochs=3), 2, tmp_path / "ck") is None
    final = load_final_state(spec, short, 2, tmp_path / "ck")
    for part in ("params", "batch_stats", "opt_state"):  # the state the last epoch ended with, not the first's
        assert_trees_close(getattr(final, part), getattr(out.state, part), rtol=0, atol=0, what=part)


def test_evaluation_compiles_once_per_model_and_shape(train, digits):
    spec = MODELS["vae"]
    out = train("vae")
    hps = [spec_hparams(spec)] * 2
    evaluation = _eval_program(spec.program, CFG)
    first = evaluate_runs(spec, CFG, out.state, list(SEEDS), hps, Data(digits.x_test, digits.y_test))
    compiled = evaluation._cache_size()
    again = evaluate_runs(spec, CFG, out.state, list(SEEDS), hps, Data(digits.x_test, digits.y_test))
    assert _eval_program(spec.program, CFG) is evaluation
    assert compiled >= 1 and evaluation._cache_size() == compiled  # the second call traced nothing new
    np.testing.assert_array_equal(first["bce"], again["bce"])  # same keys, same draws


# ------------------------------------------------------------------ divergence
def test_a_nan_in_one_run_is_reported_and_left_out_of_the_mean(train, digits):
    """Run 1 gets a nan learning rate; run 0 (same program) must be untouched by its neighbour."""
    spec = MODELS["vae"]
    seeds = (3, 4)
    hps = [spec_hparams(spec), spec_hparams(spec, lr=float("nan"))]
    out = train("vae", seeds, hps)
    assert out.diverged == {1: 1}
    assert any("WARNING: seed 4" in m and "at epoch 1;" in m for m in out.logs), out.logs
    np.testing.assert_allclose(out.train_curve[:, 0], train("vae").train_curve[:, 0], rtol=1e-6)
    assert not np.isfinite(out.train_curve[:, 1]).all()

    test = evaluate_runs(spec, CFG, out.state, list(seeds), hps, Data(digits.x_test, digits.y_test))
    cfg = ExperimentConfig(model="vae", dataset="digits", latent_dim=8, seeds=2, first_seed=3, epochs=3,
                           batch_size=64)
    metrics = result_metrics(cfg, out, test, digits.y_test)
    assert metrics["diverged"] == [{"run": 1, "seed": 4, "beta": None, "epoch": 1}]
    for key in ("final_train_loss", "final_val_loss", "test_bce", "test_mse", "test_bce_class0", "test_mse_class9"):
        m = metrics["metrics"][key]
        assert m["n"] == 1 and math.isnan(m["values"][1])
        assert m["mean"] == pytest.approx(m["values"][0]) and math.isfinite(m["mean"])
    assert metrics["metrics"]["final_train_loss"]["mean"] == pytest.approx(float(out.train_curve[-1, 0]))
    assert "WARNING: seed 4 diverged at epoch 1" in format_table(metrics)
    # the devices that took part: every visible one for more than one run
    assert metrics["device"] == out.device and out.device["count"] == jax.device_count()
    assert out.device["platform"] == jax.devices()[0].platform


# ------------------------------------------------------------------ the reconstruction loss


def test_the_configured_loss_is_the_one_the_trainer_minimises(digits):
    """make_loss with loss=bce / loss=mse: its reconstruction term is the batch mean of that loss of the
    training-mode forward pass (numpy reference), so --loss=mse really trains on the squared error."""
    spec = MODELS["vanilla"]
    st = init_state(spec, CFG, run_keys(0)["init"])
    x = digits.x_train[:64]
    batch = Data(jnp.asarray(x), jnp.asarray(digits.y_train[:64]))
    model = make_model(spec, CFG)
    logits, _ = model.apply({"params": st.params, "batch_stats": st.batch_stats}, jnp.asarray(x), train=True,
                            mutable=["batch_stats"])  # __call__: encode -> decode, BatchNorm on batch statistics
    hp = jax.tree.map(jnp.asarray, spec_hparams(spec))
    got = {}
    for loss in ("bce", "mse"):
        fn = jax.jit(make_loss(spec, dataclasses.replace(CFG, loss=loss), FULL))
        total, (_, rec) = fn(st.params, st.batch_stats, batch, run_keys(0)["train"], hp)
        assert float(total) == pytest.approx(float(rec), rel=1e-6)  # vanilla: no bottleneck term
        got[loss] = float(rec)
    assert got["bce"] == pytest.approx(bce_numpy(logits, x).mean(), rel=1e-4)
    assert got["mse"] == pytest.approx(mse_numpy(logits, x).mean(), rel=1e-4)


def test_each_epoch_draws_its_own_order_of_the_training_images(monkeypatch, tiny):
    """100 images, batches of 32: each epoch trains on 96 and leaves 4 out. With a stand-in loss that is the
    batch's mean image id, an epoch's train loss tells the sum of the ids it left out; a fresh permutation each
    epoch leaves out different images, which the docstring of make_epoch relies on to cover the remainder."""
    def id_loss(spec, cfg, phase):
        def loss_fn(params, batch_stats, batch, key, hp):
            zero = 0.0 * sum(jnp.sum(p) for p in jax.tree.leaves(params))  # a gradient of zeros
            return batch.y.astype(jnp.float32).mean() + zero, (batch_stats, zero)
        return loss_fn

    monkeypatch.setattr(program, "make_loss", id_loss)
    spec, n, epochs = MODELS["vanilla"], 100, 6
    cfg = dataclasses.replace(CFG, batch_size=32, epochs=epochs)
    train_data = Data(jnp.asarray(tiny[0].x[:n]), jnp.arange(n, dtype=jnp.int32))
    epoch = jax.jit(make_epoch(spec, cfg, FULL, n))
    st, hp = init_state(spec, cfg, run_keys(0)["init"]), jax.tree.map(jnp.asarray, spec_hparams(spec))
    left_out = []
    for e in range(epochs):
        st, train_loss, _ = epoch(st, run_keys(0)["train"], e, hp, train_data, tiny[1])
        left_out.append(n * (n - 1) / 2 - 96 * float(train_loss))  # sum of the 4 ids not trained on
    assert all(0 + 1 + 2 + 3 - 0.1 <= v <= 96 + 97 + 98 + 99 + 0.1 for v in left_out), left_out
    assert len({round(v) for v in left_out}) >= epochs - 1, left_out  # (a repeat by chance is allowed once)


def test_the_denoising_loss_reconstructs_the_clean_image_from_the_noisy_one(train, digits):
    """denoising's training loss: the trained network is fed clip(x + 0.5 ε, 0, 1), with ε from the first half
    of the step's key, and scored against the clean x (numpy reference), not against its noisy input."""
    spec = MODELS["denoising"]
    st = one_run(train("denoising"), 0)
    x = jnp.asarray(digits.x_train[:64])
    hp = jax.tree.map(jnp.asarray, spec_hparams(spec))
    key = run_keys(0)["train"]
    noisy = add_input_noise(jax.random.split(key)[0], x, hp.noise_std)
    logits, _ = make_model(spec, CFG).apply({"params": st.params, "batch_stats": st.batch_stats}, noisy,
                                            train=True, mutable=["batch_stats"])
    _, (_, rec) = jax.jit(make_loss(spec, CFG, FULL))(st.params, st.batch_stats, Data(x, jnp.zeros(64, jnp.int32)),
                                                      key, hp)
    clean, against_noisy = bce_numpy(logits, np.asarray(x)).mean(), bce_numpy(logits, np.asarray(noisy)).mean()
    assert float(rec) == pytest.approx(clean, rel=1e-4)
    assert abs(against_noisy - clean) > 100 * 1e-4 * clean  # the two targets are told apart


def test_evaluation_reports_both_errors_and_the_trained_loss(train, digits):
    """Whatever a model trained with, evaluation gives per-image BCE and MSE; "loss" is the trained one."""
    spec = MODELS["vanilla"]
    out = train("vanilla")
    data = Data(digits.x_test[:50], digits.y_test[:50])
    hps = [spec_hparams(spec)] * 2
    ev = {loss: evaluate_runs(spec, dataclasses.replace(CFG, loss=loss), out.state, list(SEEDS), hps, data)
          for loss in ("bce", "mse")}
    np.testing.assert_array_equal(ev["bce"]["bce"], ev["mse"]["bce"])
    np.testing.assert_allclose(ev["bce"]["loss"], ev["bce"]["bce"], rtol=1e-6)
    np.testing.assert_allclose(ev["mse"]["loss"], ev["mse"]["mse"], rtol=1e-6)
    model = make_model(spec, CFG)
    for i in range(2):
        v = {"params": jax.tree.map(lambda a: a[i], out.state.params),
             "batch_stats": jax.tree.map(lambda a: a[i], out.state.batch_stats)}
        logits = model.apply(v, jnp.asarray(data.x), train=False)
        np.testing.assert_allclose(ev["bce"]["bce"][i], bce_numpy(logits, data.x), rtol=1e-4)
        np.testing.assert_allclose(ev["bce"]["mse"][i], mse_numpy(logits, data.x), rtol=1e-4)


# ------------------------------------------------------------------ evaluation is about the image alone
def one_run(out, i):
    return jax.tree.map(lambda a: a[i], out.state)


def test_denoising_input_noise_is_off_at_evaluation(train, digits):
    """The denoising model's evaluation equals a plain forward pass of the clean image (BatchNorm on running
    statistics), and is unchanged when its noise_std is set to 0; noise like training's would change it."""
    spec = MODELS["denoising"]
    out = train("denoising")
    data = Data(digits.x_test[:64], digits.y_test[:64])
    hps = [spec_hparams(spec)] * 2
    assert float(hps[0].noise_std) > 0
    ev = evaluate_runs(spec, CFG, out.state, list(SEEDS), hps, data)
    quiet = evaluate_runs(spec, CFG, out.state, list(SEEDS), [h._replace(noise_std=np.float32(0)) for h in hps], data)
    for k in ("bce", "mse", "h", "z"):
        np.testing.assert_allclose(ev[k], quiet[k], rtol=1e-6, atol=1e-6, err_msg=k)
    model = make_model(spec, CFG)
    x = jnp.asarray(data.x)
    for i in range(2):
        st = one_run(out, i)
        v = {"params": st.params, "batch_stats": st.batch_stats}
        h = model.apply(v, x, train=False, method=model.encode)
        logits = model.apply(v, h, train=False, method=model.decode)
        np.testing.assert_allclose(ev["h"][i], h, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ev["bce"][i], bce_numpy(logits, data.x), rtol=1e-4)
        noisy = add_input_noise(run_keys(SEEDS[i])["eval"], x, hps[i].noise_std)
        noisy_logits = model.apply(v, model.apply(v, noisy, train=False, method=model.encode), train=False,
                                   method=model.decode)
        assert np.abs(bce_numpy(noisy_logits, data.x) - ev["bce"][i]).mean() > 1.0  # the check can see noise


@pytest.mark.parametrize("name", ["vanilla", "sparse", "cvae"])
def test_an_images_evaluation_does_not_depend_on_the_other_images_of_its_chunk(train, digits, monkeypatch, name):
    """Evaluate 10 test images in chunks of 4 (the last chunk padded), then the same images reversed, repeated
    among other neighbours, and 5 of them (one alone with 3 padding rows): each image's bce, mse, h and z are
    the same every time.
    The sparse penalty is a batch mean (masked over padding) and must not leak into the per-image numbers;
    cvae samples z, so only its encoder output h is compared, which also checks that labels travel with their
    images through the chunking."""
    spec = MODELS[name]
    st = one_run(train(name), 0)
    hp = jax.tree.map(jnp.asarray, spec_hparams(spec))
    key = run_keys(SEEDS[0])["eval"]
    keys = ("h",) if spec.bottleneck.stochastic else ("bce", "mse", "h", "z")
    monkeypatch.setattr(program, "EVAL_CHUNK", 4)  # read when make_eval's function is traced
    fn = jax.jit(make_eval(spec, CFG))
    x, y = digits.x_test[:10], digits.y_test[:10]

    def evaluate(idx):
        out = fn(st, Data(jnp.asarray(x[idx]), jnp.asarray(y[idx])), key, hp)
        return {k: np.asarray(out[k]) for k in (*keys, "loss")}

    ref = evaluate(np.arange(10))  # chunks [0-3] [4-7] [8, 9, pad, pad]
    if name == "sparse":  # "loss" carries its chunk's penalty, from the chunk's real images alone (numpy)
        sp, beta = float(hp.sparsity), float(hp.beta)
        for chunk in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9]):
            q = np.clip(sigmoid_numpy(ref["h"][chunk]).mean(0), 1e-6, 1 - 1e-6)
            want = beta * bernoulli_kl_numpy(sp, q).sum()
            np.testing.assert_allclose(ref["loss"][chunk] - ref["bce"][chunk], want, rtol=1e-3, atol=1e-4)
    # reversed; duplicates among other neighbours; 5 images: chunks [2, 9, 9, 0] [7, pad, pad, pad]
    for idx in (np.arange(10)[::-1], np.array([9, 9, 9, 9, 2, 2, 5, 5, 5, 1]), np.array([2, 9, 9, 0, 7])):
        got = evaluate(idx)
        for k in keys:
            np.testing.assert_allclose(got[k], ref[k][idx], rtol=1e-5, atol=1e-5, err_msg=f"{k} of images {idx}")
    assert np.abs(ref["h"][0] - ref["h"][1]).max() > 1e-3  # different images, different numbers


# ------------------------------------------------------------------ labels
def test_a_conditional_model_trains_and_validates_on_each_image_with_its_own_label(tiny, monkeypatch):
    """Record, from inside the compiled epoch, every (images, labels) batch the cvae is conditioned on (the
    shuffled training minibatches and the validation chunks, both seeds): each image carries its own label."""
    seen = []
    real = program.condition

    def spy(spec, data):
        jax.debug.callback(lambda x, y: seen.append((np.asarray(x), np.asarray(y))), data.x, data.y)
        return real(spec, data)

    monkeypatch.setattr(program, "condition", spy)
    spec = MODELS["cvae"]
    out = train_runs(spec, dataclasses.replace(CFG, epochs=1), list(SEEDS), [spec_hparams(spec)] * 2, *tiny,
                     log=lambda m: None)
    assert np.isfinite(out.train_curve).all()
    label_of: dict[bytes, set] = {}
    for d in tiny:
        for xi, yi in zip(d.x, d.y):
            label_of.setdefault(xi.tobytes(), set()).add(int(yi))
    checked, labels = 0, set()
    for x, y in seen:
        for xi, yi in zip(x.reshape(-1, 32, 32), y.reshape(-1)):
            if not xi.any():  # a padding row of an evaluation chunk
                continue
            assert int(yi) in label_of[xi.tobytes()], "an image was conditioned on another image's label"
            checked += 1
            labels.add(int(yi))
    # 2 seeds x 8 shuffled batches of 64, and the 128 validation images (shared by the seeds: recorded once)
    assert checked == 2 * 512 + 128 and labels == set(range(10))


# ------------------------------------------------------------------ devices
def on_forced_cpu_devices(devices: int, script: str, path):
    """Run `script` (it saves an .npz at sys.argv[1]) in a CPU process with `devices` host devices: the arrays."""
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                          env=forced_devices_env(devices, cache=False), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(path)


def test_runs_sharded_over_8_devices_equal_the_one_device_program(tmp_path):
    """5 seeds over 8 forced host devices (padded to 8 runs) in a subprocess: training (2 epochs of 4 batches),
    evaluation and the linear probe give the numbers of the one-device program (``loop.RunAxis`` limited to
    one device, in the same subprocess, so the comparison holds whatever backend pytest itself runs on).
    Evaluation and probe are compared on the same (8-device) trained state, so they are checked on their own."""
    script = textwrap.dedent(f"""
        import sys
        import jax, numpy as np
        assert len(jax.devices()) == 8, jax.devices()
        from ae_jax.data import Data, load_splits
        from ae_jax.models import MODELS
        from ae_jax.tasks.probe import linear_probe
        from ae_jax.trainer import TrainConfig, evaluate_runs, loop, spec_hparams, train_runs
        spec = MODELS["vae"]
        s = load_splits("digits")
        cfg = TrainConfig(latent_dim={CFG.latent_dim}, epochs=2, batch_size={CFG.batch_size})
        seeds = [0, 1, 2, 3, 4]
        hps = [spec_hparams(spec)] * 5
        tr, va = Data(s.x_train[:256], s.y_train[:256]), Data(s.x_val[:128], s.y_val[:128])
        parts = {{"train": slice(0, 150), "val": slice(150, 220), "test": slice(220, None)}}
        y = {{k: s.y_test[part] for k, part in parts.items()}}
        arrays = {{}}

        def everything(tag, evaluated=None):
            out = train_runs(spec, cfg, seeds, hps, tr, va, log=lambda m: None)
            arrays[tag + "/devices"] = np.array(out.device["count"])
            arrays[tag + "/train"], arrays[tag + "/val"] = out.train_curve, out.val_curve
            for part in ("params", "batch_stats"):
                for k, v in jax.tree_util.tree_flatten_with_path(getattr(out.state, part))[0]:
                    arrays[tag + "/" + part + "/" + "/".join(str(p.key) for p in k)] = np.asarray(v)
            state = evaluated if evaluated is not None else out.state  # evaluate the 8-device runs both ways
            ev = evaluate_runs(spec, cfg, state, seeds, hps, Data(s.x_test, s.y_test))
            # the probe on the test set's codes, split in three (one evaluation program is enough)
            h = {{k: ev["h"][:, part] for k, part in parts.items()}}
            probe = linear_probe(spec, cfg.latent_dim, state.params, seeds, hps, h, y)
            for k in ("bce", "h"):
                arrays[tag + "/eval_" + k] = ev[k]
            for k in ("test_accuracy", "best_epoch"):
                arrays[tag + "/probe_" + k] = probe[k]
            return out.state

        sharded = everything("sharded")
        Real = loop.RunAxis
        loop.RunAxis = lambda n, devices=None: Real(n, jax.devices()[:1])  # the one-device program
        everything("single", evaluated=sharded)
        np.savez(sys.argv[1], **arrays)
    """)
    got = dict(on_forced_cpu_devices(8, script, tmp_path / "sharded.npz"))
    assert int(got["sharded/devices"]) == 8 and int(got["single/devices"]) == 1

    def as_output(tag):
        def tree(part):
            return {k.split("/", 2)[2]: v for k, v in got.items() if k.startswith(f"{tag}/{part}/")}
        state = types.SimpleNamespace(params=tree("params"), batch_stats=tree("batch_stats"))
        return types.SimpleNamespace(train_curve=got[f"{tag}/train"], val_curve=got[f"{tag}/val"], state=state)

    sharded, single = as_output("sharded"), as_output("single")
    assert sharded.train_curve.shape == (2, 5) and len(sharded.state.params) > 10
    assert all(v.shape[0] == 5 for v in sharded.state.params.values())  # the padding runs are dropped
    for r in range(5):
        assert_runs_equal(sharded, r, single, r, other=(r + 1) % 5)
    for k in ("eval_bce", "eval_h"):
        np.testing.assert_allclose(got[f"sharded/{k}"], got[f"single/{k}"], rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(got["sharded/probe_test_accuracy"], got["single/probe_test_accuracy"], atol=1.5 / 77)
    np.testing.assert_array_equal(got["sharded/probe_best_epoch"], got["single/probe_best_epoch"])


def test_stacked_phases_sharded_with_padding_equal_the_one_device_program(tmp_path):
    """3 stacked runs padded to 4 forced devices: the fresh optimiser of each new phase keeps the padded run
    axis (it once padded it a second time, and the phase change failed) and the curves equal one device's."""
    script = textwrap.dedent("""
        import sys
        import jax, numpy as np
        from ae_jax.data import Data, load_splits
        from ae_jax.models import MODELS
        from ae_jax.trainer import TrainConfig, loop, spec_hparams, train_runs
        spec, s = MODELS["stacked"], load_splits("digits")
        args = (spec, TrainConfig(latent_dim=4, epochs=3, batch_size=64), [0, 1, 2], [spec_hparams(spec)] * 3,
                Data(s.x_train[:128], s.y_train[:128]), Data(s.x_val[:64], s.y_val[:64]))
        sharded = train_runs(*args, log=lambda m: None)
        Real = loop.RunAxis
        loop.RunAxis = lambda n, devices=None: Real(n, jax.devices()[:1])
        single = train_runs(*args, log=lambda m: None)
        np.savez(sys.argv[1], devices=[sharded.device["count"], single.device["count"]],
                 sharded=sharded.train_curve, single=single.train_curve)
    """)
    got = on_forced_cpu_devices(4, script, tmp_path / "stacked.npz")
    assert list(got["devices"]) == [4, 1] and got["sharded"].shape == (3, 3)
    np.testing.assert_allclose(got["sharded"], got["single"], rtol=1e-3)
