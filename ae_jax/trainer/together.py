"""Several experiments of one compiled program trained together, each written to its own run folder.

Models that are the same function up to traced hyperparameters (``ModelSpec.program``: vae,
beta_vae_strict and beta_vae_loose are the Gaussian bottleneck at beta 1, 2 and 0.5) train as one grid:
their runs are concatenated along the run axis of one epoch program, exactly as ``run.py --beta=1,2,0.5``
would train them. Which models share a program, and which cannot:

- share: vae, beta_vae_strict, beta_vae_loose, beta_vae (the Gaussian; beta traced);
- cannot: shallow (other layer shapes), stacked (three phases, each its own program), sparse (its own
  bottleneck), vq (a codebook among its parameters), cvae (the label is an input); vanilla and denoising
  differ in whether the input is corrupted at all (vanilla would be denoising at noise 0, but would then pay
  for drawing the noise at every step), so they keep a program each.

Each folder gets what its own run would have written: config.json with its own identity (so a run trained
together is reused by a later command that asks for it alone, and a committed run made alone is reused
here: nothing about a run's identity changes), curves.jsonl, metrics.json (its runs' numbers, with the
wall-clock the group shared) and its own final checkpoint, which the tasks restore. The numbers equal the
separate runs' within the tolerance the suite holds grids to (tests/test_grid.py, tests/test_train.py:
losses to rtol 1e-3; parameters 10 x closer to their twin than to another seed).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from ..data import Splits, test_data, train_data, val_data
from . import distributed
from .config import ConfigError, ExperimentConfig
from .folder import RunFolder
from .loop import TrainOutput, _checkpoint_manager, _ckpt_tree, evaluate_runs, train_runs
from .provenance import config_record
from .results import point_text, result_metrics

TOGETHER_DIR = ".together"  # the group's own checkpoints while it trains (under the results root)


def program_group(cfg: ExperimentConfig) -> tuple:
    """What two experiments must share to train in one program: the model's program, every setting that shapes
    it, the data and the seeds."""
    from ..models import get_model
    return (get_model(cfg.model).program, cfg.train_config(), cfg.dataset, cfg.variant, tuple(cfg.seed_list))


def group_by_program(cfgs: Sequence[ExperimentConfig]) -> list[list[int]]:
    """Indices of cfgs, grouped by ``program_group`` in first-seen order: one list per compiled program."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(program_group(c), []).append(i)
    return list(groups.values())


def _slice(out: TrainOutput, lo: int, hi: int) -> TrainOutput:
    return TrainOutput(jax.tree.map(lambda a: a[lo:hi], out.state), out.train_curve[:, lo:hi],
                       out.val_curve[:, lo:hi], out.epoch_time, out.compile_time_s,
                       {r - lo: e for r, e in out.diverged.items() if lo <= r < hi}, out.resumed_from,
                       out.samples_per_epoch, out.device,
                       None if out.snapshots is None else out.snapshots[:, lo:hi])


def _save_final(run_dir: Path, out: TrainOutput, epochs: int) -> None:
    """The run's own final checkpoint (its slice of the group's state and curves), as ``train_runs`` writes it."""
    import orbax.checkpoint as ocp
    ckpt_dir = run_dir / "checkpoints"
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    n = out.train_curve.shape[1]
    tree = _ckpt_tree(out.state, epochs, n, None if out.snapshots is None else out.snapshots.shape)
    tree.update(epoch=np.asarray(epochs, np.int32), train_curve=out.train_curve, val_curve=out.val_curve,
                epoch_time=out.epoch_time, compile_time=np.asarray(out.compile_time_s, np.float32))
    if out.snapshots is not None:
        tree["snapshots"] = out.snapshots
    manager = _checkpoint_manager(ckpt_dir)
    try:
        manager.save(epochs, args=ocp.args.StandardSave(tree), force=True)
        manager.wait_until_finished()
    finally:
        manager.close()


def train_together(cfgs: Sequence[ExperimentConfig], run_dirs: Sequence[Path], splits: Splits, root: Path,
                   command: str, log: Callable[[str], None] = print, force: bool = False) -> list[dict]:
    """Train cfgs (one ``program_group``) in one program and write each to its run folder; their metrics.

    The folders are checked as ``run_experiment`` checks one (a folder holding another run is refused unless
    ``force``). The group's checkpoints live in ``root/.together/<names>`` while it trains, so an interrupted
    group resumes; they are removed once every folder holds its own.
    """
    from ..models import get_model
    specs = [c.validate() for c in cfgs]
    if len({program_group(c) for c in cfgs}) != 1:
        raise ValueError(f"{', '.join(c.name() for c in cfgs)} are not one program: train them one by one")
    if splits.x_train.shape[0] < cfgs[0].batch_size:
        raise ConfigError(f"--batch-size {cfgs[0].batch_size} exceeds the {splits.x_train.shape[0]} training images")
    log = distributed.writer_log(log)
    folders = [RunFolder(d, c, log) for d, c in zip(run_dirs, cfgs)]
    if not force:
        for f in folders:
            f.check(splits)
    names = [c.name() for c in cfgs]
    records = [{**config_record(c, command, splits, s), "trained_with": [n for n in names if n != c.name()]}
               for c, s in zip(cfgs, specs)]
    ckpt_dir = Path(root) / TOGETHER_DIR / "+".join(names)
    with contextlib.ExitStack() as locks:
        for f in folders:
            locks.enter_context(f.lock())
        for f, rec in zip(folders, records):
            f.start(rec, force)
        seeds, hps, labels, spans = [], [], [], []
        for c, s in zip(cfgs, specs):
            runs = c.point_runs()
            spans.append((len(seeds), len(seeds) + len(runs)))
            seeds += [seed for seed, _ in runs]
            hps += c.run_hparams(s)
            labels += [f"{c.model} seed {seed}" + (f" ({point_text(p)})" if p else "") for seed, p in runs]
        tcfg, spec = cfgs[0].train_config(), get_model(cfgs[0].model)
        log(f"training {', '.join(c.model for c in cfgs)} together on {cfgs[0].dataset} ({cfgs[0].variant}), "
            f"n = {cfgs[0].latent}: {len(seeds)} runs of one program for {tcfg.epochs} epochs")
        t0 = time.perf_counter()
        load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        try:
            out = train_runs(spec, tcfg, seeds, hps, train_data(splits), val_data(splits), ckpt_dir=ckpt_dir,
                             log=log, run_labels=labels)
        except BaseException:
            for f in folders:
                f.forget_unstarted()
            raise
        test = evaluate_runs(spec, tcfg, out.state, seeds, hps, test_data(splits))
        wall = time.perf_counter() - t0
        results = []
        for c, f, (lo, hi) in zip(cfgs, folders, spans):
            part = _slice(out, lo, hi)
            metrics = result_metrics(c, part, {k: v[lo:hi] for k, v in test.items()}, splits.y_test)
            metrics["timing"].update(session_wall_s=wall, load_average_at_start=load_at_start, cpu_count=os.cpu_count(),
                                     trained_with=[n for n in names if n != c.name()],
                                     note="trained in one program together with the runs named in trained_with: "
                                          "the wall-clock and the compile time are the group's")
            if distributed.is_writer():
                _save_final(f.path, part, tcfg.epochs)
            results.append(f.write_results(metrics, part, None, [s for s, _ in c.point_runs()], c.point_runs()))
        if distributed.is_writer():
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                ckpt_dir.parent.rmdir()
    return results
