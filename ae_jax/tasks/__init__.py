"""The tasks a trained run is put through, one module each, on one shared evaluation context.

A task is a ``Task``: a name, which models it applies to (``applies``), and
``run(ctx)``, which computes per-seed numbers (and draws figures into the run
folder) from an ``EvalContext``: the trained state of every seed, the test
set encoded once, the splits, the keys. ``run_task`` stores each task's
results in its own file, ``<run folder>/tasks/<name>.json``, so studies that
share a trained run never overwrite each other's results, and a seed whose
training diverged is left out of every task's numbers (its values are null and
its seed is listed under "diverged_seeds").

Baselines are tasks that need no trained autoencoder (``needs_run = False``):
they run once per study on the data alone.

Adding a task: a module here with a ``Task`` subclass, and one line in
``TASKS`` below; a study then names it in its plan.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..io import TASK_KEYS, aggregate, read_json, write_json
from .base import EvalContext, Task, TaskResult
from .anomaly import Anomaly
from .arithmetic import Arithmetic
from .code_units import CodeUnits
from .codes_2d import Codes2D
from .decoded_prior import DecodedPrior
from .interp_quality import InterpQuality
from .interpolation import Interpolation
from .label_budget import LabelBudget, RandomEncoderBudget, ScratchBudget
from .latent_plane import LatentPlane
from .latent_structure import LatentStructure
from .probe import LinearProbe
from .random_encoder import RandomEncoder
from .reconstruction import Reconstruction
from .sample_quality import SampleQuality
from .samples import Samples
from .scratch import Scratch

TASKS: dict[str, Task] = {t.name: t for t in (
    Reconstruction(), Interpolation(), Samples(), LatentStructure(), Anomaly(), LinearProbe(), Scratch(),
    RandomEncoder(), DecodedPrior(), LatentPlane(), Codes2D(), Arithmetic(), SampleQuality(), InterpQuality(),
    LabelBudget(), ScratchBudget(), RandomEncoderBudget(), CodeUnits())}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; one of {', '.join(TASKS)}") from None


def task_path(run_dir, name: str):
    from pathlib import Path
    return Path(run_dir) / "tasks" / f"{name}.json"


def task_done(run_dir, name: str, seeds) -> bool:
    """Whether the task's file is there for these seeds, with every array file the task saves."""
    from pathlib import Path
    p = task_path(run_dir, name)
    files = TASKS[name].files if name in TASKS else ()
    return (p.exists() and read_json(p, TASK_KEYS)["seeds"] == list(seeds)
            and all((Path(run_dir) / f).exists() for f in files))


def run_task(task: Task, ctx: EvalContext) -> dict:
    """Run one task on ctx, mask diverged seeds out, write <run_dir>/tasks/<name>.json; return its content."""
    return start_task(task, ctx)()


def start_task(task: Task, ctx: EvalContext, background: bool = False) -> Callable[[], dict]:
    """``run_task`` in two steps: the task begun now (``Task.start``), and a call that finishes it, writes its
    file and returns its content. Its "seconds" are the time spent in the two, not the time between them. The
    call's ``waits`` is True when the task left work running (call it as late as possible then)."""
    from .. import __version__
    t0 = time.perf_counter()
    finish = task.start(ctx, background)
    begun = time.perf_counter() - t0
    bad = ~ctx.valid
    head = {"task": task.name, "model": ctx.cfg.model, "variant": ctx.cfg.variant, "latent_dim": ctx.cfg.latent,
            "seeds": list(ctx.seeds), "diverged_seeds": [s for s, b in zip(ctx.seeds, bad) if b]}
    run_dir = ctx.run_dir

    def done() -> dict:
        t1 = time.perf_counter()
        result = finish()
        metrics = {}
        for k, v in result.metrics.items():
            v = np.array(v, dtype=np.float64)
            v[bad] = np.nan  # a diverged seed's numbers are not numbers about the model
            metrics[k] = aggregate(v)
        out = {**head, "metrics": metrics, "figures": result.figures,
               "seconds": begun + time.perf_counter() - t1, "version": __version__}
        if result.info:
            out["info"] = result.info
        write_json(task_path(run_dir, task.name), out)
        return out
    done.waits = getattr(finish, "waits", False)  # whether work of the task is still running
    return done


__all__ = ["EvalContext", "TASKS", "Task", "TaskResult", "get_task", "run_task", "start_task", "task_done",
           "task_path"]
