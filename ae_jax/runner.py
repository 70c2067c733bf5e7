"""Drive the compiled trainer: all runs at once, progress, checkpoints, resume.

A "run" is one (seed, hyperparameters) pair; all runs of a call share one
compiled program with a leading run axis. Checkpoints (orbax) hold the whole
batched train state plus the loss curves and timings, so a resumed run ends
with the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .losses import Hparams
from .registry import ModelSpec
from .train import (TrainConfig, TrainState, init_state, make_epoch, make_eval, phase_at,
                    phase_schedule, reset_optimizer, run_keys)


@dataclasses.dataclass
class TrainOutput:
    state: TrainState           # every leaf [R, ...]
    train_curve: np.ndarray     # [E, R] mean training loss per epoch
    val_curve: np.ndarray       # [E, R]
    epoch_time: np.ndarray      # [E] wall-clock seconds of each epoch (all runs together)
    compile_time_s: float
    diverged: dict[int, int]    # run index -> first epoch (1-based) with a non-finite loss
    resumed_from: int           # epoch the run resumed from (0 = fresh)
    samples_per_epoch: int      # training images seen per run per epoch


def stack_hparams(hps: Sequence[Hparams]) -> Hparams:
    return Hparams(*(np.stack([np.float32(getattr(h, f)) for h in hps]) for f in Hparams._fields))


def run_sharding(n_runs: int):
    """(per-run sharding, replicated sharding) when several devices divide the runs, else (None, None)."""
    devs = jax.devices()
    if len(devs) < 2 or n_runs % len(devs):
        return None, None
    mesh = jax.sharding.Mesh(np.array(devs), ("runs",))
    P = jax.sharding.PartitionSpec
    return jax.sharding.NamedSharding(mesh, P("runs")), jax.sharding.NamedSharding(mesh, P())


def _checkpoint_manager(path: Path):
    import orbax.checkpoint as ocp
    opts = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(path.absolute(), options=opts)


def _ckpt_tree(state: TrainState, epochs: int, n_runs: int) -> dict:
    """What a checkpoint holds: the batched state, the epoch reached, curves and timings."""
    return {"state": state, "epoch": np.asarray(0, np.int32), "train_curve": np.full((epochs, n_runs), np.nan, np.float32),
            "val_curve": np.full((epochs, n_runs), np.nan, np.float32), "epoch_time": np.zeros(epochs, np.float32),
            "compile_time": np.asarray(0.0, np.float32)}


def _restore(manager, template: dict) -> dict:
    import orbax.checkpoint as ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    ckpt = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    return {k: (v if k == "state" else np.asarray(v)) for k, v in ckpt.items()}


def has_final_checkpoint(cfg: TrainConfig, ckpt_dir: Path) -> bool:
    """Whether ckpt_dir holds the checkpoint of the last epoch (reads no arrays)."""
    if not Path(ckpt_dir).is_dir():
        return False
    manager = _checkpoint_manager(Path(ckpt_dir))
    try:
        return manager.latest_step() == cfg.epochs
    finally:
        manager.close()


def load_final_state(spec: ModelSpec, cfg: TrainConfig, n_runs: int, ckpt_dir: Path) -> TrainState | None:
    """The batched state of a finished run's last checkpoint, or None if there is no complete one."""
    if not has_final_checkpoint(cfg, ckpt_dir):
        return None
    manager = _checkpoint_manager(Path(ckpt_dir))
    try:
        shapes = jax.eval_shape(jax.vmap(lambda k: init_state(spec, cfg, k)),
                                jnp.stack([run_keys(0)["init"]] * n_runs))
        template = _ckpt_tree(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes), cfg.epochs, n_runs)
        return jax.device_get(_restore(manager, template)["state"])
    finally:
        manager.close()


def _finite_first(curves: np.ndarray, diverged: dict, epoch: int, log, labels: Sequence[str]) -> None:
    for r in np.nonzero(~np.isfinite(curves).all(0))[0]:
        if int(r) not in diverged:
            diverged[int(r)] = epoch
            log(f"  WARNING: {labels[r]} produced a non-finite loss at epoch {epoch}; "
                "it is left out of every mean and std")


def train_runs(spec: ModelSpec, cfg: TrainConfig, seeds: Sequence[int], hparams: Sequence[Hparams],
               x_train: np.ndarray, x_val: np.ndarray, ckpt_dir: Path | None = None, ckpt_every: int = 5,
               log: Callable[[str], None] = print, run_labels: Sequence[str] | None = None) -> TrainOutput:
    """Train len(seeds) runs (seed i with hparams i) together; resume from ckpt_dir if it holds a checkpoint."""
    R, E = len(seeds), cfg.epochs
    assert len(hparams) == R
    schedule = phase_schedule(spec, E)
    n_train = x_train.shape[0]
    run_sh, rep_sh = run_sharding(R)
    place_runs = (lambda t: jax.device_put(t, run_sh)) if run_sh else (lambda t: t)
    place_rep = (lambda t: jax.device_put(t, rep_sh)) if rep_sh else jax.device_put

    keys = [run_keys(s) for s in seeds]
    init_keys = place_runs(jnp.stack([k["init"] for k in keys]))
    train_keys = place_runs(jnp.stack([k["train"] for k in keys]))
    hp = place_runs(jax.tree.map(jnp.asarray, stack_hparams(hparams)))
    xt, xv = place_rep(jnp.asarray(x_train)), place_rep(jnp.asarray(x_val))

    # Placed explicitly: leaves that do not depend on the key (biases, BN scales) would come out replicated,
    # and the compiled epoch would then disagree with its own run-sharded output from the second epoch on.
    state = place_runs(jax.jit(jax.vmap(lambda k: init_state(spec, cfg, k)))(init_keys))
    ckpt = _ckpt_tree(state, E, R)
    manager = _checkpoint_manager(ckpt_dir) if ckpt_dir is not None else None
    start = 0
    if manager is not None and manager.latest_step() is not None:
        ckpt = _restore(manager, ckpt)
        state = place_runs(ckpt["state"])
        start = int(ckpt["epoch"])
        log(f"  resuming from the checkpoint after epoch {start}")
    train_curve, val_curve = ckpt["train_curve"].copy(), ckpt["val_curve"].copy()
    epoch_time, compile_time = ckpt["epoch_time"].copy(), float(ckpt["compile_time"])
    labels = list(run_labels) if run_labels is not None else [f"seed {s}" for s in seeds]
    diverged: dict[int, int] = {}
    for e in range(start):  # divergences before a resume keep their epoch
        _finite_first(np.stack([train_curve[e], val_curve[e]]), diverged, e + 1, lambda s: None, labels)

    compiled: dict[int, Callable] = {}
    vepoch_in_axes = (0, 0, None, 0, None, None)
    steps = n_train // cfg.batch_size
    for epoch in range(start, E):
        pi, phase = phase_at(schedule, epoch)
        if pi not in compiled:
            fn = jax.vmap(make_epoch(spec, cfg, phase, n_train), in_axes=vepoch_in_axes)
            t0 = time.perf_counter()
            compiled[pi] = jax.jit(fn, donate_argnums=0).lower(state, train_keys, jnp.int32(epoch), hp, xt, xv).compile()
            dt = time.perf_counter() - t0
            compile_time += dt
            log(f"  compiled {'phase %d of 3' % (pi + 1) if spec.stacked else 'the epoch program'} "
                f"for {R} run(s) in {dt:.1f} s")
        if spec.stacked and pi > 0 and epoch == schedule[pi][1]:
            state = place_runs(jax.vmap(reset_optimizer)(state))  # a fresh Adam each phase
        t0 = time.perf_counter()
        state, tl, vl = compiled[pi](state, train_keys, jnp.int32(epoch), hp, xt, xv)
        tl, vl = np.asarray(tl), np.asarray(vl)  # waits for the epoch
        dt = time.perf_counter() - t0
        train_curve[epoch], val_curve[epoch], epoch_time[epoch] = tl, vl, dt
        _finite_first(np.stack([tl, vl]), diverged, epoch + 1, log, labels)
        ok = np.isfinite(tl) & np.isfinite(vl)
        sps = R * steps * cfg.batch_size / dt
        log(f"  epoch {epoch + 1:3d}/{E}  train {_ms(tl[ok])}  val {_ms(vl[ok])}  "
            f"{sps:,.0f} seed-samples/s  ({dt:.1f} s)")
        done = epoch + 1
        if manager is not None and (done % ckpt_every == 0 or done == E):
            import orbax.checkpoint as ocp
            ckpt = {"state": state, "epoch": np.asarray(done, np.int32), "train_curve": train_curve, "val_curve": val_curve,
                    "epoch_time": epoch_time, "compile_time": np.asarray(compile_time, np.float32)}
            manager.save(done, args=ocp.args.StandardSave(ckpt), force=True)
            manager.wait_until_finished()
    if manager is not None:
        manager.close()
    return TrainOutput(jax.device_get(state), train_curve, val_curve, epoch_time, compile_time, diverged, start,
                       steps * cfg.batch_size)


def _ms(v: np.ndarray) -> str:
    if v.size == 0:
        return "nan"
    return f"{v.mean():8.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():8.3f}"


def evaluate_runs(spec: ModelSpec, cfg: TrainConfig, state: TrainState, seeds: Sequence[int],
                  hparams: Sequence[Hparams], x: np.ndarray, purpose: str = "eval") -> dict[str, np.ndarray]:
    """Per-run, per-image evaluation in one program: {"bce": [R, N], "loss", "h", "z"}."""
    keys = jnp.stack([run_keys(s)[purpose] for s in seeds])
    hp = jax.tree.map(jnp.asarray, stack_hparams(hparams))
    return jax.device_get(_eval_program(spec, cfg)(state, jnp.asarray(x), keys, hp))


@functools.lru_cache(maxsize=32)
def _eval_program(spec: ModelSpec, cfg: TrainConfig):
    """One jitted evaluation per (model, config): later calls with the same shapes reuse its compilation."""
    return jax.jit(jax.vmap(make_eval(spec, cfg), in_axes=(0, None, 0, 0)))
