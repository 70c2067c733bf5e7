"""Training: every model learns, vmapped runs equal separate runs, stacked phases, resume, nan, sharding.

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

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import assert_trees_close, leaves_with_paths, subprocess_env
from ae_jax.experiment import ExperimentConfig, format_table, result_metrics
from ae_jax.registry import MODELS
from ae_jax.runner import _eval_program, evaluate_runs, has_final_checkpoint, load_final_state, train_runs
from ae_jax.train import (FULL, TrainConfig, init_state, make_epoch, phase_at, phase_schedule, reset_optimizer,
                          run_keys, spec_hparams, stacked_phases)

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


def run_slice(out, i):
    """Run i of a batched TrainOutput: (train curve, val curve, params, batch_stats)."""
    pick = lambda t: jax.tree.map(lambda a: np.asarray(a)[i], t)  # noqa: E731
    return out.train_curve[:, i], out.val_curve[:, i], pick(out.state.params), pick(out.state.batch_stats)


def assert_runs_equal(out_a, i, out_b, j, rtol=1e-3, ratio=0.1):
    """Run i of out_a and run j of out_b are the same run trained in two programs.

    Losses agree to rtol. Parameters and BatchNorm statistics: every tensor is at least 1/ratio times
    closer to its twin than to the other run of out_a (another seed or another beta). Exact or
    element-wise equality is not promised: single elements with a near-zero gradient move by whole
    Adam steps of rounding noise (measured <= 4e-4 RMS in parameters, against >= 8e-3 between seeds).
    """
    ta, va, pa, sa = run_slice(out_a, i)
    tb, vb, pb, sb = run_slice(out_b, j)
    _, _, po, so = run_slice(out_a, 1 - i)
    np.testing.assert_allclose(ta, tb, rtol=rtol, err_msg="train curve")
    np.testing.assert_allclose(va, vb, rtol=rtol, err_msg="validation curve")
    for what, (ta_, tb_, to_) in (("params", (pa, pb, po)), ("batch_stats", (sa, sb, so))):
        la, lb, lo = leaves_with_paths(ta_), leaves_with_paths(tb_), leaves_with_paths(to_)
        assert la.keys() == lb.keys()
        for k in la:
            a, b, o = (np.asarray(t[k], np.float64) for t in (la, lb, lo))
            twin, other = np.linalg.norm(a - b), np.linalg.norm(a - o)
            assert twin <= ratio * other + 1e-6, f"{what} {k}: {twin:.3g} from its twin, {other:.3g} from the other run"


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


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ("vae", "sparse")])
def test_vmapped_seeds_match_separate_runs_in_their_losses(train, name):
    """Every other model: the numbers a user reads (per-seed train and validation losses) agree.

    Parameters with a zero true gradient drift by Adam-sized steps of rounding noise (see above),
    which moves the losses by a few 1e-4 relative at most; a seed mix-up would move them by far more.
    """
    both = train(name, SEEDS)
    for i, seed in enumerate(SEEDS):
        alone = train(name, (seed,))
        np.testing.assert_allclose(both.train_curve[:, i], alone.train_curve[:, 0], rtol=1e-3)
        np.testing.assert_allclose(both.val_curve[:, i], alone.val_curve[:, 0], rtol=2e-3)
    assert np.abs(both.train_curve[:, 0] - both.train_curve[:, 1]).max() > 1e-2  # the seeds differ


def test_beta_grid_in_one_program_equals_each_beta_alone(train):
    spec = MODELS["vae"]
    betas = (1.0, 4.0)
    grid = train("vae", (3, 3), [spec_hparams(spec, b) for b in betas])
    for i, b in enumerate(betas):
        assert_runs_equal(grid, i, train("vae", (3,), [spec_hparams(spec, b)]), 0)
    # and beta really is per run: same seed, different beta, different training
    assert np.all(np.abs(grid.train_curve[:, 0] - grid.train_curve[:, 1]) > 1e-3)


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
    """Run the three phases by hand with train.make_epoch (one epoch each, a fresh Adam each
    phase): each phase changes exactly its layers (earlier ones frozen, their BatchNorm
    statistics untouched), and the result equals runner.train_runs' stacked run."""
    spec = MODELS["stacked"]
    x_train, x_val = (jnp.asarray(a) for a in tiny)
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
        # the same vmapped, donated program as runner.train_runs compiles
        fn = jax.vmap(make_epoch(spec, CFG, phase, x_train.shape[0]), in_axes=(0, 0, None, 0, None, None))
        state, tl, vl = jax.jit(fn, donate_argnums=0)(state, train_keys, jnp.int32(epoch), hp, x_train, x_val)
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
    train_runs(spec, short, list(SEEDS), hps, *tiny, ckpt_dir=tmp_path / "ck", ckpt_every=1, log=lambda m: None)
    assert has_final_checkpoint(short, tmp_path / "ck")
    assert not has_final_checkpoint(dataclasses.replace(CFG, epochs=3), tmp_path / "ck")  # stopped short of 3
    assert load_final_state(spec, dataclasses.replace(CFG, epochs=3), 2, tmp_path / "ck") is None
    assert load_final_state(spec, short, 2, tmp_path / "ck") is not None


def test_evaluation_compiles_once_per_model_and_shape(train, digits):
    spec = MODELS["vae"]
    out = train("vae")
    hps = [spec_hparams(spec)] * 2
    program = _eval_program(spec, CFG)
    first = evaluate_runs(spec, CFG, out.state, list(SEEDS), hps, digits.x_test)
    compiled = program._cache_size()
    again = evaluate_runs(spec, CFG, out.state, list(SEEDS), hps, digits.x_test)
    assert _eval_program(spec, CFG) is program
    assert compiled >= 1 and program._cache_size() == compiled  # the second call traced nothing new
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

    test_bce = evaluate_runs(spec, CFG, out.state, list(seeds), hps, digits.x_test)["bce"].mean(axis=1)
    cfg = ExperimentConfig(model="vae", dataset="digits", latent_dim=8, seeds=2, first_seed=3, epochs=3,
                           batch_size=64)
    metrics = result_metrics(cfg, out, test_bce)
    assert metrics["diverged"] == [{"run": 1, "seed": 4, "beta": None, "epoch": 1}]
    for key in ("final_train_loss", "final_val_loss", "test_bce"):
        m = metrics["metrics"][key]
        assert m["n"] == 1 and math.isnan(m["values"][1])
        assert m["mean"] == pytest.approx(m["values"][0]) and math.isfinite(m["mean"])
    assert metrics["metrics"]["final_train_loss"]["mean"] == pytest.approx(float(out.train_curve[-1, 0]))
    assert "WARNING: seed 4 diverged at epoch 1" in format_table(metrics)


def test_sharded_runs_on_two_devices_equal_one_device(tmp_path):
    """4 runs over 2 (forced host) devices in a subprocess: run_sharding places the runs, and the
    numbers equal the one-device program's (seeds 3,7,3,7 sharded vs seeds 3,7 unsharded, both
    in the subprocess, so the comparison holds whatever backend pytest itself runs on)."""
    script = textwrap.dedent(f"""
        import sys
        import jax, numpy as np
        assert len(jax.devices()) == 2, jax.devices()
        from ae_jax import runner
        from ae_jax.data import load_splits
        from ae_jax.registry import MODELS
        from ae_jax.train import TrainConfig, spec_hparams
        placed = []
        real = runner.run_sharding
        def spy(n):
            placed.append(real(n))
            return placed[-1]
        spec = MODELS["vae"]
        s = load_splits("digits")
        cfg = TrainConfig(latent_dim={CFG.latent_dim}, epochs={CFG.epochs}, batch_size={CFG.batch_size})
        def train(seeds):
            return runner.train_runs(spec, cfg, seeds, [spec_hparams(spec)] * len(seeds), s.x_train[:512],
                                     s.x_val[:128], log=lambda m: None)
        runner.run_sharding = spy
        sharded = train([3, 7, 3, 7])
        run_sh = placed[0][0]
        assert run_sh is not None and len(run_sh.mesh.devices.flat) == 2, placed
        runner.run_sharding = lambda n: (None, None)  # the one-device program
        single = train([3, 7])
        arrays = {{}}
        for tag, out in (("sharded", sharded), ("single", single)):
            arrays[tag + "/train"], arrays[tag + "/val"] = out.train_curve, out.val_curve
            for k, v in jax.tree_util.tree_flatten_with_path(out.state.params)[0]:
                arrays[tag + "/p" + jax.tree_util.keystr(k)] = np.asarray(v)
        np.savez(sys.argv[1], **arrays)
    """)
    path = tmp_path / "sharded.npz"
    env = subprocess_env(cache=False, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(path))

    def run_of(tag, k, r):  # curves are [E, R], parameters [R, ...]
        a = got[f"{tag}/{k}"]
        return a[:, r] if k in ("train", "val") else a[r]

    keys = ["train", "val"] + [k.split("/", 1)[1] for k in got if k.startswith("single/p")]
    assert len(keys) > 10
    for run, ref_run in enumerate([0, 1, 0, 1]):
        for k in keys:
            np.testing.assert_allclose(run_of("sharded", k, run), run_of("single", k, ref_run), rtol=1e-4, atol=1e-4,
                                       err_msg=f"run {run}: {k}")
