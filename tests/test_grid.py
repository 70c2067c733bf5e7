"""Grids over traced hyperparameters: the table, the config (points, folder names, identity), one program for a
grid equal to the separate runs it replaces, and metrics.json's block per grid point."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _helpers import REPO, assert_runs_equal, run_here
from ae_jax.io import write_json
from ae_jax.models import MODELS
from ae_jax.models.hparams import TRACED, Hparams
from ae_jax.trainer import ConfigError, ExperimentConfig, check_same_config, spec_hparams, train_runs
from ae_jax.trainer.program import TrainConfig
from ae_jax.trainer.provenance import config_record
from ae_jax.trainer.results import format_table

CFG = TrainConfig(latent_dim=8, epochs=2, batch_size=64)
RUN_PY = REPO / "experiments" / "run.py"


def test_hparams_is_the_table():
    assert Hparams._fields == tuple(t.name for t in TRACED)
    assert len({t.flag for t in TRACED}) == len(TRACED) and len({t.tag for t in TRACED}) == len(TRACED)
    # every row's per-model default is what the model trains with when nothing is given
    for spec in MODELS.values():
        hp = spec_hparams(spec)
        assert [float(v) for v in hp] == pytest.approx([t.default_for(spec) for t in TRACED])
    assert float(spec_hparams(MODELS["denoising"]).noise_std) == 0.5
    assert float(spec_hparams(MODELS["beta_vae_strict"]).beta) == 2.0


def test_the_grid_is_the_product_of_the_axes_seed_major_within_each_point():
    cfg = ExperimentConfig(model="denoising", dataset="digits", seeds=2, first_seed=4, epochs=3,
                           grid={"lr": (3e-4, 1e-3), "noise_std": (0.25, 0.5)})
    assert cfg.lr == (3e-4, 1e-3) and cfg.grid == (("noise_std", (0.25, 0.5)),)  # lr has its own field
    assert cfg.points() == [{"noise_std": 0.25, "lr": 3e-4}, {"noise_std": 0.25, "lr": 1e-3},
                            {"noise_std": 0.5, "lr": 3e-4}, {"noise_std": 0.5, "lr": 1e-3}]
    assert [s for s, _ in cfg.point_runs()] == [4, 5] * 4
    hps = cfg.run_hparams(MODELS["denoising"])
    assert [float(h.noise_std) for h in hps] == pytest.approx([0.25] * 4 + [0.5] * 4)
    assert [float(h.lr) for h in hps] == pytest.approx([3e-4, 3e-4, 1e-3, 1e-3] * 2)
    assert cfg.name() == "denoising_noise0.25,0.5_e3_lr0.0003,0.001"
    # one point alone is the separate run it replaces: that run's own folder name and hyperparameters
    one = cfg.at({"noise_std": 0.5, "lr": 1e-3})
    assert one.name() == "denoising_noise0.5_e3" and one.grid_size == 1
    assert [float(v) for v in one.run_hparams(MODELS["denoising"])[0]] == pytest.approx([0, 0.5, 0.25, 1e-3])


def test_a_single_value_keeps_the_folder_and_identity_older_code_gave():
    assert ExperimentConfig(model="beta_vae", betas=(2.0,)).name() == "beta_vae_beta2"
    assert ExperimentConfig(model="beta_vae", grid={"beta": [2]}).name() == "beta_vae_beta2"
    assert ExperimentConfig(model="vae", grid={"lr": (1e-3,)}) == ExperimentConfig(model="vae")
    assert ExperimentConfig(model="vae", lr=(3e-4,)).name() == "vae_lr0.0003"
    a, b = (config_record(ExperimentConfig(model="beta_vae", **kw), "") for kw in ({"betas": (2.0,)},
                                                                                   {"grid": {"beta": (2.0,)}}))
    assert a["betas"] == b["betas"] == [2.0] and a["grid"] == b["grid"] == {}


def test_an_older_record_without_a_grid_counts_as_the_models_own_values(tmp_path, digits):
    run = tmp_path / "run"
    run.mkdir()
    old = config_record(ExperimentConfig(model="denoising", dataset="digits"), "earlier", digits)
    old.pop("grid")
    write_json(run / "config.json", old)
    check_same_config(run, ExperimentConfig(model="denoising", dataset="digits"), digits)  # the same run
    with pytest.raises(ConfigError, match="differs in grid"):
        check_same_config(run, ExperimentConfig(model="denoising", dataset="digits", grid={"noise_std": (0.25,)}),
                          digits)
    with pytest.raises(ConfigError, match="differs in lr"):
        check_same_config(run, ExperimentConfig(model="denoising", dataset="digits", lr=(1e-3, 3e-3)), digits)


@pytest.mark.parametrize("kw,fragments", [
    ({"model": "vanilla", "grid": {"noise_std": (0.1,)}}, ["--noise-std", "vanilla", "denoising"]),
    ({"model": "vae", "grid": {"sparsity": (0.1,)}}, ["--sparsity", "sparse"]),
    ({"model": "sparse", "grid": {"sparsity": (0.05, 1.0)}}, ["--sparsity", "between 0 and 1", "1"]),
    ({"model": "denoising", "grid": {"noise_std": (-0.5,)}}, ["--noise-std", ">= 0"]),
    ({"model": "vae", "lr": (1e-3, 0.0)}, ["--lr", "> 0"]),
    ({"model": "vae", "lr": (1e-3, 1e-3)}, ["--lr", "more than once"]),
    ({"model": "vae", "grid": {"momentum": (0.9,)}}, ["momentum", "beta, noise_std, sparsity, lr"]),
])
def test_a_bad_axis_is_refused_with_what_to_do(kw, fragments):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(dataset="digits", **kw).validate()
    for f in fragments:
        assert f in str(e.value)


def grid_and_alone(tiny, model: str, grid: dict):
    """(the config, the grid trained in one program, [each point trained alone]), 2 seeds per point."""
    spec = MODELS[model]
    cfg = ExperimentConfig(model=model, seeds=2, first_seed=3, grid=grid)
    out = train_runs(spec, CFG, [s for s, _ in cfg.point_runs()], cfg.run_hparams(spec), *tiny, log=lambda m: None)
    alone = []
    for point in cfg.points():
        one = cfg.at(point)
        assert one.seed_list == [3, 4] and one.grid_size == 1
        alone.append(train_runs(spec, CFG, one.seed_list, one.run_hparams(spec), *tiny, log=lambda m: None))
    return cfg, out, alone


def assert_each_point_is_its_own(out, alone):
    """A point's last training loss is at least 3 x the tolerance (rtol 1e-3) from every other point's: its
    hyperparameters are the ones trained."""
    for k, a in enumerate(alone):
        for m in range(len(alone)):
            if m != k:
                gap = abs(out.train_curve[-1, 2 * m] - a.train_curve[-1, 0]) / a.train_curve[-1, 0]
                assert gap > 3e-3, (k, m)


def test_a_grid_in_one_program_equals_each_point_trained_alone(tiny):
    """Tolerance: assert_runs_equal's, the one the seed and beta grids are held to (losses to rtol 1e-3, every
    parameter tensor at least 10 x closer to its twin than to the other seed of its point)."""
    cfg, out, alone = grid_and_alone(tiny, "sparse", {"sparsity": (0.05, 0.25), "lr": (1e-3, 3e-3)})
    for k, a in enumerate(alone):
        for j in range(2):
            assert_runs_equal(out, 2 * k + j, a, j, other=2 * k + 1 - j)
    assert_each_point_is_its_own(out, alone)


def test_a_noise_and_lr_grid_matches_each_point_trained_alone_in_its_losses(tiny):
    """denoising: its last encoder bias has no gradient (it feeds BatchNorm), so Adam turns rounding noise into
    steps (tests/test_train.py); the tolerance is that file's for such models: training losses to rtol 1e-3,
    validation losses to 1e-2."""
    cfg, out, alone = grid_and_alone(tiny, "denoising", {"noise_std": (0.1, 0.8), "lr": (1e-3, 4e-3)})
    for k, a in enumerate(alone):
        for j in range(2):
            np.testing.assert_allclose(out.train_curve[:, 2 * k + j], a.train_curve[:, j], rtol=1e-3)
            np.testing.assert_allclose(out.val_curve[:, 2 * k + j], a.val_curve[:, j], rtol=1e-2)
    assert_each_point_is_its_own(out, alone)


def test_run_py_trains_a_grid_and_reports_one_block_per_point(tmp_path, capsys):
    out = tmp_path / "grid"
    args = ["--model=sparse", "--dataset=digits", "--epochs=1", "--seeds=2", "--sparsity=0.05,0.25",
            "--beta=1,3", f"--out={out}"]
    proc = run_here(RUN_PY, args, capsys)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    points = [g["hparams"] for g in metrics["groups"]]
    assert points == [{"beta": 1.0, "sparsity": 0.05}, {"beta": 1.0, "sparsity": 0.25},
                      {"beta": 3.0, "sparsity": 0.05}, {"beta": 3.0, "sparsity": 0.25}]
    assert [g["beta"] for g in metrics["groups"]] == [1.0, 1.0, 3.0, 3.0]
    assert all(g["seeds"] == [0, 1] and len(g["metrics"]["test_bce"]["values"]) == 2 for g in metrics["groups"])
    assert metrics["runs"][2] == {"seed": 0, "beta": 1.0, "sparsity": 0.25}
    record = json.loads((out / "config.json").read_text())
    assert record["grid"] == {"sparsity": [0.05, 0.25]} and record["betas"] == [1.0, 3.0]
    for p in points:
        assert f"beta = {p['beta']:g}, sparsity = {p['sparsity']:g}, seeds [0, 1]" in proc.stdout
    assert format_table(metrics) in proc.stdout
    # the sparsity target is a traced value: the four points differ
    assert len({round(g["metrics"]["test_bce"]["mean"], 3) for g in metrics["groups"]}) == 4
    assert ExperimentConfig(model="sparse", dataset="digits", epochs=1, seeds=2, betas=(1, 3),
                            grid={"sparsity": (0.05, 0.25)}).name() == "sparse_beta1,3_sparsity0.05,0.25_e1"
