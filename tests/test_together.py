"""Models that are one program up to traced hyperparameters train together: the bake-off's plan groups the
Gaussian models into one epoch program per variant, and runs trained together are the runs trained alone,
each in its own folder with its own identity (reused alone, and reusing what was made alone)."""
from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

from ae_jax.models import CONTESTANTS, MODELS
from ae_jax.studies import StudyOptions
from ae_jax.studies.bakeoff import Bakeoff
from ae_jax.trainer import ExperimentConfig, load_final_state, run_experiment
from ae_jax.trainer.together import group_by_program, train_together

GAUSSIANS = ("vae", "beta_vae_strict", "beta_vae_loose")


def test_the_bakeoff_plans_the_gaussian_models_as_one_program_per_variant():
    plan = Bakeoff().plan(StudyOptions(dataset="digits", seeds=5, epochs=60))
    cfgs = [p.cfg for p in plan]
    assert len(cfgs) == 2 * len(CONTESTANTS)
    groups = group_by_program(cfgs)
    # 18 runs, 14 epoch programs: the three Gaussian models share one at n = 20 and one at n = 2
    assert len(groups) == 2 * (len(CONTESTANTS) - 2) == 14
    shared = sorted(sorted(cfgs[i].model for i in g) for g in groups if len(g) > 1)
    assert shared == [sorted(GAUSSIANS)] * 2
    assert {cfgs[g[0]].anomaly for g in groups if len(g) > 1} == {False, True}
    # the other contestants cannot share: each is a program of its own
    assert all(len(g) == 1 for g in groups if cfgs[g[0]].model not in GAUSSIANS)
    assert MODELS["vae"].program == MODELS["beta_vae_strict"].program == MODELS["beta_vae"].program
    assert MODELS["cvae"].program != MODELS["vae"].program and MODELS["vanilla"].program != MODELS["denoising"].program


def test_models_trained_together_equal_each_trained_alone_and_keep_their_identity(tmp_path, digits):
    """Tolerance: the grids' (tests/test_grid.py): losses and test BCE to rtol 1e-3 of the run trained alone."""
    cfgs = [ExperimentConfig(model=m, dataset="digits", seeds=2, epochs=1) for m in GAUSSIANS]
    together = [tmp_path / "together" / c.name() for c in cfgs]
    logs: list[str] = []
    results = train_together(cfgs, together, digits, tmp_path / "together", "cmd", logs.append)
    assert len(re.findall(r"(compiled|loaded from the compilation cache) the epoch program", "\n".join(logs))) == 1
    assert not (tmp_path / "together" / ".together").exists()  # the group's checkpoints go once each has its own
    for c, d, m in zip(cfgs, together, results):
        rec = json.loads((d / "config.json").read_text())
        assert rec["model"] == c.model and rec["betas"] is None and rec["trained_with"]
        alone, _ = run_experiment(c, out=tmp_path / "alone" / c.name(), splits=digits, log=lambda s: None)
        for k in ("final_train_loss", "final_val_loss", "test_bce"):
            np.testing.assert_allclose(m["metrics"][k]["values"], alone["metrics"][k]["values"], rtol=1e-3, err_msg=k)
        assert m["groups"][0]["seeds"] == [0, 1]
        # the folder is the run a command asking for it alone reuses: the same identity
        reuse_logs: list[str] = []
        again, _ = run_experiment(c, out=d, splits=digits, log=reuse_logs.append)
        assert any("already complete" in line for line in reuse_logs) and again["groups"] == m["groups"]
        # and its own final checkpoint holds its runs' state, for the tasks
        state = load_final_state(MODELS[c.model], c.train_config(), 2, d / "checkpoints")
        assert state is not None and jax.tree.leaves(state.params)[0].shape[0] == 2
    # beta is per model: the three differ
    bce = [r["metrics"]["test_bce"]["mean"] for r in results]
    assert len({round(b, 2) for b in bce}) == 3


def test_a_run_made_alone_is_reused_by_the_group_not_retrained(tmp_path, digits):
    """A committed run (made alone, by older code) stays valid: the study's shared training skips it."""
    from ae_jax.studies.driver import PlannedRun, training_needed
    opts = StudyOptions(dataset="digits", seeds=2, epochs=1, out=tmp_path)
    cfg = ExperimentConfig(model="vae", dataset="digits", seeds=2, epochs=1)
    run_experiment(cfg, out=tmp_path / cfg.name(), splits=digits, log=lambda s: None)
    assert not training_needed(PlannedRun(cfg, ("reconstruction",)), opts)  # its checkpoint is here
    strict = ExperimentConfig(model="beta_vae_strict", dataset="digits", seeds=2, epochs=1)
    assert training_needed(PlannedRun(strict, ("reconstruction",)), opts)
    with pytest.raises(ValueError, match="not one program"):
        train_together([cfg, ExperimentConfig(model="vanilla", dataset="digits", seeds=2, epochs=1)],
                       [tmp_path / "a", tmp_path / "b"], digits, tmp_path, "cmd")
