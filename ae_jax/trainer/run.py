"""One experiment = one model, one dataset variant, several seeds (x a grid of traced hyperparameters), in one
run folder.

Layout of a run directory (default ``runs/<dataset>/<name>``; ``--out`` names another)::

    config.json      what was asked for, the command, the package version and source revision, the data
    curves.jsonl     one line per epoch: per-run train and validation loss, seconds
    metrics.json     per metric: per-run values, mean, std (written last: it marks the run done)
    snapshots.npz    only with ``snapshots`` > 0: "h" [E, R, K, e], the encoder outputs of the first K test
                     images after every epoch; "labels" [K], "epochs" [E], "seeds" and "betas" [R] of the runs (and
                     one array per other axis of the grid)
    tasks/<task>.json  each task's per-seed numbers (written by the studies, one file per task)
    checkpoints/     orbax checkpoints of the batched train state (not committed)
    replaced/        only while a ``force`` run is unfinished: the results it replaces (restored if it stops
                     before its first checkpoint, removed once its metrics.json is written)

Everything that changes a number is part of a run's identity (``IDENTITY``):
the folder name says where it differs from the protocol, and a folder made
with another identity is never reused.

Re-running the same command resumes from the last checkpoint; a finished run is
reported, not retrained, unless ``force`` (its line names the revision, machine
and date that made it).

The roles, one module each: ``config`` (the request and its folder name),
``provenance`` (config.json and what makes two runs different), ``folder`` (the
lock, the folder's life, every write), ``results`` (metrics.json's content and
the table); this module puts them together.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Callable

from ..data import Splits, load_splits, test_data, train_data, val_data
from . import distributed
from .config import ConfigError, ExperimentConfig, run_dir_for
from .folder import RunFolder
from .loop import evaluate_runs, train_runs
from .provenance import config_record
from .results import point_text, result_metrics, snapshot_data


def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, data_dir: str | None = None,
                   force: bool = False, command: str | None = None, log: Callable[[str], None] = print,
                   splits: Splits | None = None, reuse_complete: bool = True) -> tuple[dict, Path]:
    """Train (or resume, or reuse) one experiment; return (metrics, run dir).

    ``reuse_complete=False`` trains again (resuming any checkpoint) even when
    metrics.json exists, replacing it only when the new one is written; unlike
    ``force`` it deletes nothing first. Raises ConfigError / data.DataError
    before anything is written.

    With several processes (``jax.distributed``) every process calls this with
    the same arguments and trains its share of the runs; process 0 alone reads
    and writes the run folder (``folder.RunFolder``), and every process
    returns the same metrics once the folder is complete.
    """
    spec = cfg.validate()
    run_dir = run_dir_for(cfg, out)
    command = command or "python " + " ".join(sys.argv)
    log = distributed.writer_log(log)
    folder = RunFolder(run_dir, cfg, log)
    finished = folder.finished(force, reuse_complete, splits)
    if finished is not None:
        return finished, run_dir
    if splits is None:
        splits = distributed.everywhere(functools.partial(load_splits, cfg.dataset, cfg.variant, data_dir))
    if not force:
        folder.check(splits)
    record = config_record(cfg, command, splits, spec)
    if splits.x_train.shape[0] < cfg.batch_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {splits.x_train.shape[0]} training images")
    with folder.lock():
        folder.start(record, force)
        runs = cfg.point_runs()
        hps = cfg.run_hparams(spec)
        seeds = [s for s, _ in runs]
        tcfg = cfg.train_config()
        own_beta = f", beta = {spec.beta:g} (the model's own)" if cfg.betas is None and spec.bottleneck.has_beta else ""
        log(f"training {cfg.model} on {cfg.dataset} ({cfg.variant}: {splits.x_train.shape[0]} train / "
            f"{splits.x_val.shape[0]} val images), n = {cfg.latent}{own_beta}, {len(runs)} run(s) "
            f"{'(seeds x grid points) ' if cfg.grid_size > 1 else ''}for {cfg.epochs} epochs -> {run_dir}")
        t0 = time.perf_counter()
        load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        labels = [f"seed {s}" + (f" ({point_text(p)})" if p else "") for s, p in runs]
        snap = snapshot_data(splits, cfg.snapshots) if cfg.snapshots > 0 else None
        try:
            with distributed.if_abandoned(folder.abandon):  # a lost process ends the run mid-way
                result = train_runs(spec, tcfg, seeds, hps, train_data(splits), val_data(splits),
                                    ckpt_dir=run_dir / "checkpoints", log=log, run_labels=labels, snap=snap)
        except BaseException:  # out of memory, Ctrl-C before the first checkpoint, ...: a folder with nothing to
            folder.forget_unstarted()  # resume must not refuse the next command (fewer runs, other settings)
            raise
        test = evaluate_runs(spec, tcfg, result.state, seeds, hps, test_data(splits))
        metrics = result_metrics(cfg, result, test, splits.y_test)
        metrics["timing"]["session_wall_s"] = time.perf_counter() - t0
        metrics["timing"]["load_average_at_start"] = load_at_start  # > core count: timings were contended
        metrics["timing"]["cpu_count"] = os.cpu_count()  # the cores that load was shared by (reports redraw elsewhere)
        # process 0's record (its timings) is the run's; the others return the same
        return folder.write_results(metrics, result, snap, seeds, runs), run_dir
