"""Drive the compiled programs: all runs at once, over every device, with progress, checkpoints, resume.

A "run" is one (seed, hyperparameters) pair; all runs of a call share one
compiled program with a leading run axis. Checkpoints (orbax) hold the whole
batched train state plus the loss curves and timings, so a resumed run ends
with the same numbers as an uninterrupted one.

Devices: the run axis is sharded over every visible device whatever the
number of runs. ``RunAxis`` pads it to a multiple of the device count by
repeating the last run (the copies compute the same thing and are dropped
before anything is reported or saved). Padding was chosen over a sub-mesh of
as many devices as divide the runs: with a sub-mesh, 5 seeds on 8 cores would
use 5 and 7 seeds would use 7, but 10 seeds on 8 cores could use only 5, while
padding keeps every core busy for any count at the price of at most
(devices − 1) duplicate runs, which cost no wall-clock when there are idle
cores to run them.

More than one process (``jax.distributed``): ``jax.devices()`` then lists
every process's devices, the mesh spans them all, and each process computes
its own share of the runs; ``RunAxis.host`` gathers results back and
``distributed`` holds everything else that crosses between processes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Data
from ..io import DamagedFile, stderr_silenced
from ..models.losses import Hparams
from ..models import ModelSpec
from ..cache import compilation as compile_cache
from . import distributed
from .memory import ProgramMemory, hint_out_of_memory, is_out_of_memory, program_memory, refuse_what_cannot_fit
from .program import (Phase, TrainConfig, TrainState, init_state, make_epoch, make_eval, make_model, phase_at,
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
    device: dict                # {"platform", "kind", "count"}: the devices that took part
    snapshots: np.ndarray | None = None  # [E, R, K, e] encoder outputs of the K snapshot images after each epoch


def stack_hparams(hps: Sequence[Hparams]) -> Hparams:
    return Hparams(*(np.stack([np.float32(getattr(h, f)) for h in hps]) for f in Hparams._fields))


class RunAxis:
    """The run axis laid out over the devices: pad, place, and drop the padding again.

    One run, or one device, needs no sharding. Otherwise every leaf with a
    leading run axis is padded to a multiple of the device count (repeating
    the last run) and sharded along that axis; shared inputs (the data) are
    replicated on every device.
    """

    def __init__(self, n_runs: int, devices: Sequence | None = None):
        devs = list(devices if devices is not None else jax.devices())
        self.n_runs = n_runs
        self.devices = devs if n_runs > 1 and len(devs) > 1 else devs[:1]
        d = len(self.devices)
        self.padded = -(-n_runs // d) * d
        if d > 1:
            mesh = jax.sharding.Mesh(np.array(self.devices), ("runs",))
            P = jax.sharding.PartitionSpec
            self._runs = jax.sharding.NamedSharding(mesh, P("runs"))
            self._shared = jax.sharding.NamedSharding(mesh, P())
        else:
            self._runs = self._shared = None

    def pad(self, tree):
        extra = self.padded - self.n_runs
        if not extra:
            return tree
        return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), tree)

    def place(self, tree):
        """Leaves with a (padded) leading run axis -> sharded along it."""
        return distributed.put(tree, self._runs) if self._runs is not None else tree

    def put(self, tree):
        """Per-run leaves [R, ...] -> padded and sharded over the devices."""
        return self.place(self.pad(tree))

    def share(self, tree):
        """Inputs every run reads (the data) -> replicated on each device."""
        return distributed.put(tree, self._shared) if self._shared is not None else jax.device_put(tree)

    def unpad(self, tree):
        """The real runs only. Runs spread over several processes come back as host arrays, in one exchange
        waited for (slicing each leaf would put one exchange per leaf in flight at once: see distributed)."""
        if self.padded == self.n_runs:
            return tree
        if distributed.multi_process():
            return self.host(tree)
        return jax.tree.map(lambda a: a[: self.n_runs], tree)

    def host(self, tree):
        """Per-run leaves on the devices -> numpy arrays of the real runs (waits for them; gathers them from
        every process when the runs span several)."""
        return jax.tree.map(lambda a: np.asarray(a)[: self.n_runs], distributed.to_host(tree))

    def describe(self) -> dict:
        """{"platform", "kind", "count"}: the devices that took part."""
        d = self.devices[0]
        kind = d.device_kind if d.platform != "cpu" else (platform.processor() or platform.machine() or "cpu")
        record = {"platform": d.platform, "kind": kind, "count": len(self.devices)}
        if distributed.multi_process():  # single-process records stay as they were
            record["processes"] = len({dev.process_index for dev in self.devices})
        return record


def map_runs(program, per_run: tuple, shared: tuple = ()):
    """program(*per_run, *shared), a jitted vmap over runs, run on every device; host arrays [R, ...] back."""
    axis = RunAxis(len(jax.tree.leaves(per_run)[0]))
    out = program(*axis.put(jax.device_put(per_run)), *axis.share(jax.device_put(shared)))
    return axis.host(out)


# Every run's optimiser state set back to Adam's start: one program, not a zeros operation per parameter's shape.
_reset_optimizers = jax.jit(jax.vmap(reset_optimizer))


def epoch_program(spec: ModelSpec, cfg: TrainConfig, phase: Phase, n_train: int, n_shared: int):
    """The jitted epoch of every run at once: vmapped over (state, key, hparams), the state donated."""
    fn = jax.vmap(make_epoch(spec, cfg, phase, n_train), in_axes=(0, 0, None, 0) + (None,) * n_shared)
    return jax.jit(fn, donate_argnums=0)


def _abstract(tree):
    """Shapes and dtypes as the device would hold them (float64 -> float32), nothing copied."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jax.dtypes.canonicalize_dtype(np.result_type(a))),
                        tree)


def _abstract_runs(spec: ModelSpec, cfg: TrainConfig, n_runs: int):
    """Shapes of (state, keys, hparams) of n_runs runs, nothing computed or allocated."""
    keys = jax.ShapeDtypeStruct((n_runs,), jax.random.key(0).dtype)
    state = jax.eval_shape(jax.vmap(lambda k: init_state(spec, cfg, k)), keys)
    hp = Hparams(*(jax.ShapeDtypeStruct((n_runs,), jnp.float32) for _ in Hparams._fields))
    return state, keys, hp


def epoch_memory(spec: ModelSpec, cfg: TrainConfig, n_runs: int, train: Data, val: Data,
                 snap: Data | None = None) -> ProgramMemory | None:
    """XLA's memory analysis of the epoch program for n_runs runs on one device (the largest over phases).

    Compiled from abstract shapes: no device memory is used, so it can size a
    run count that does not fit, or explain one that just failed.
    """
    state, keys, hp = _abstract_runs(spec, cfg, n_runs)
    shared = _abstract((train, val) if snap is None or cfg.snapshots == 0 else (train, val, snap))
    best = None
    for phase, _ in phase_schedule(spec, cfg.epochs):
        m = program_memory(epoch_program(spec, cfg, phase, train.x.shape[0], len(shared)).lower(
            state, keys, jax.ShapeDtypeStruct((), jnp.int32), hp, *shared).compile())
        if m is None:
            return None
        best = m if best is None or m.total > best.total else best
    return best


def eval_memory(spec: ModelSpec, cfg: TrainConfig, n_runs: int, data: Data) -> ProgramMemory | None:
    """XLA's memory analysis of the evaluation program for n_runs runs on one device (abstract shapes)."""
    state, keys, hp = _abstract_runs(spec, cfg, n_runs)
    return program_memory(_eval_program(spec.program, cfg).lower(state, keys, hp, _abstract(data)).compile())


def _devices_for(n_runs: int) -> int:
    return len(RunAxis(n_runs).devices)


def _checkpoint_manager(path: Path):
    import orbax.checkpoint as ocp
    opts = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return distributed.checkpoint_manager(path, opts)


def _ckpt_tree(state: TrainState, epochs: int, n_runs: int, snapshot_shape: tuple[int, ...] | None = None) -> dict:
    """What a checkpoint holds: the batched state, the epoch reached, curves and timings.

    A run with snapshots also keeps them, [E, R, K, e] (NaN for epochs not yet
    trained), so a resumed run still has those of the epochs before the resume.
    Without snapshots the tree is exactly what it always was.
    """
    tree = {"state": state, "epoch": np.asarray(0, np.int32),
            "train_curve": np.full((epochs, n_runs), np.nan, np.float32),
            "val_curve": np.full((epochs, n_runs), np.nan, np.float32), "epoch_time": np.zeros(epochs, np.float32),
            "compile_time": np.asarray(0.0, np.float32)}
    if snapshot_shape is not None:
        tree["snapshots"] = np.full(snapshot_shape, np.nan, np.float32)
    return tree


def _restore(manager, template: dict, ckpt_dir: Path, step: int | None = None) -> dict:
    """The checkpoint of `step` (default: the latest) in template's structure, shapes and dtypes.

    Every array is read onto this process's first device, named in the request: without a sharding there,
    orbax falls back on the one saved with the checkpoint (the devices of the run that wrote it), with a
    warning (orbax 0.11) that this is unsafe on another device count.
    """
    import orbax.checkpoint as ocp
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=here), template)
    step = manager.latest_step() if step is None else step
    with _readable(ckpt_dir, step):
        ckpt = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return {k: (v if k == "state" else np.asarray(v)) for k, v in ckpt.items()}


CKPT_EVERY = 5  # epochs between checkpoints (the last epoch is saved too)
READ_GRACE_S = 0.5  # after a failed read, for the checkpoint reader's other reads to end


@contextlib.contextmanager
def _readable(ckpt_dir: Path, step: int):
    """Turn a failure to read checkpoint `step` (a damaged or partly deleted file) into a ``DamagedFile``.

    stderr is silenced while reading: when one read fails, orbax closes its event loop and the reads still
    in flight print a traceback each (from other threads) before and after the failure reaches here.
    """
    try:
        with stderr_silenced():
            try:
                yield
            except Exception:
                time.sleep(READ_GRACE_S)  # for those reads to end while stderr is still silenced
                raise
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds; out-of-memory is not damage
        if is_out_of_memory(e):
            raise
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise DamagedFile(f"{Path(ckpt_dir) / str(step)}: the checkpoint of epoch {step} cannot be read "
                          f"({type(e).__name__}{': ' + why if why else ''}); delete that folder to resume from the "
                          "one before it, or rerun with --force to train from the start") from None


def _saved_snapshot_shape(ckpt_dir: Path, step: int) -> tuple[int, ...] | None:
    """The shape of the snapshots a checkpoint holds, or None (read from its metadata, no arrays)."""
    import orbax.checkpoint as ocp
    opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(Path(ckpt_dir).absolute(), options=opts,
                                    item_handlers=ocp.StandardCheckpointHandler())
    try:
        with _readable(ckpt_dir, step):
            tree = manager.item_metadata(step).tree
    finally:
        manager.close()
    return tuple(tree["snapshots"].shape) if "snapshots" in tree else None


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
        template = _ckpt_tree(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes), cfg.epochs, n_runs,
                              _saved_snapshot_shape(ckpt_dir, cfg.epochs))
        return jax.device_get(_restore(manager, template, ckpt_dir)["state"])
    finally:
        manager.close()


def _finite_first(curves: np.ndarray, diverged: dict, epoch: int, log, labels: Sequence[str]) -> None:
    for r in np.nonzero(~np.isfinite(curves).all(0))[0]:
        if int(r) not in diverged:
            diverged[int(r)] = epoch
            log(f"  WARNING: {labels[r]} produced a non-finite loss at epoch {epoch}; "
                "it is left out of every mean and std")


@hint_out_of_memory(
    "training", lambda a, r: epoch_memory(a["spec"], a["cfg"], r, a["train"], a["val"], a["snap"]),
    lambda a: len(a["seeds"]), _devices_for)
def train_runs(spec: ModelSpec, cfg: TrainConfig, seeds: Sequence[int], hparams: Sequence[Hparams],
               train: Data, val: Data, ckpt_dir: Path | None = None, ckpt_every: int = CKPT_EVERY,
               log: Callable[[str], None] = print, run_labels: Sequence[str] | None = None,
               snap: Data | None = None) -> TrainOutput:
    """Train len(seeds) runs (seed i with hparams i) together; resume from ckpt_dir if it holds a checkpoint.

    With ``cfg.snapshots > 0``, ``snap`` holds the K <= cfg.snapshots images
    (the first of the test set, say) whose encoder outputs each epoch program
    also returns; they are gathered into ``TrainOutput.snapshots`` [E, R, K, e]
    and kept in the checkpoints.
    """
    R, E = len(seeds), cfg.epochs
    assert len(hparams) == R
    if cfg.snapshots > 0 and (snap is None or not 0 < snap.x.shape[0] <= cfg.snapshots):
        raise ValueError(f"cfg.snapshots = {cfg.snapshots}: pass snap, 1 to {cfg.snapshots} images")
    schedule = phase_schedule(spec, E)
    n_train = train.x.shape[0]
    axis = RunAxis(R)
    place_runs = axis.put
    refuse_what_cannot_fit("training", lambda r: epoch_memory(spec, cfg, r, train, val, snap), R, len(axis.devices))

    keys = [run_keys(s) for s in seeds]
    init_keys = place_runs(jnp.stack([k["init"] for k in keys]))
    train_keys = place_runs(jnp.stack([k["train"] for k in keys]))
    hp = place_runs(jax.device_put(stack_hparams(hparams)))
    dt_, dv = axis.share(jax.device_put(train)), axis.share(jax.device_put(val))

    # Placed explicitly: leaves that do not depend on the key (biases, BN scales) would come out replicated,
    # and the compiled epoch would then disagree with its own run-sharded output from the second epoch on.
    state = axis.place(jax.jit(jax.vmap(lambda k: init_state(spec, cfg, k)))(init_keys))
    snap_shape = None
    shared = (dt_, dv)
    if cfg.snapshots > 0:
        snap_shape = (E, R, snap.x.shape[0], make_model(spec, cfg).encoder_out)
        shared = (dt_, dv, axis.share(jax.device_put(snap)))
    # checkpoints hold the real runs only: resumable on any device count
    ckpt = _ckpt_tree(axis.unpad(state), E, R, snap_shape)
    manager = _checkpoint_manager(ckpt_dir) if ckpt_dir is not None else None
    start = 0
    if manager is not None and manager.latest_step() is not None:
        ckpt = _restore(manager, ckpt, ckpt_dir)
        state = place_runs(ckpt["state"])
        start = int(ckpt["epoch"])
        log(f"  resuming from the checkpoint after epoch {start}")
    train_curve, val_curve = ckpt["train_curve"].copy(), ckpt["val_curve"].copy()
    snapshots = ckpt["snapshots"].copy() if snap_shape is not None else None
    epoch_time, compile_time = ckpt["epoch_time"].copy(), float(ckpt["compile_time"])
    labels = list(run_labels) if run_labels is not None else [f"seed {s}" for s in seeds]
    groups = _setting_groups(hparams)
    diverged: dict[int, int] = {}
    for e in range(start):  # divergences before a resume keep their epoch
        _finite_first(np.stack([train_curve[e], val_curve[e]]), diverged, e + 1, lambda s: None, labels)

    compiled: dict[int, Callable] = {}
    steps = n_train // cfg.batch_size
    for epoch in range(start, E):
        pi, phase = phase_at(schedule, epoch)
        if pi not in compiled:
            t0, hits = time.perf_counter(), compile_cache.hits()
            compiled[pi] = epoch_program(spec, cfg, phase, n_train, len(shared)).lower(
                state, train_keys, jnp.int32(epoch), hp, *shared).compile()
            dt = time.perf_counter() - t0
            compile_time += dt
            how = "loaded from the compilation cache" if compile_cache.hits() > hits else "compiled"
            log(f"  {how} {'phase %d of 3' % (pi + 1) if spec.stacked else 'the epoch program'} "
                f"for {R} run(s) in {dt:.1f} s")
        if spec.stacked and pi > 0 and epoch == schedule[pi][1]:
            state = axis.place(_reset_optimizers(state))  # a fresh Adam each phase (already padded)
        t0 = time.perf_counter()
        state, tl, vl, *h = compiled[pi](state, train_keys, jnp.int32(epoch), hp, *shared)
        tl, vl = axis.host((tl, vl))  # waits for the epoch; padding runs dropped
        if snapshots is not None:
            snapshots[epoch] = axis.host(h[0])
        dt = time.perf_counter() - t0
        train_curve[epoch], val_curve[epoch], epoch_time[epoch] = tl, vl, dt
        _finite_first(np.stack([tl, vl]), diverged, epoch + 1, log, labels)
        ok = np.isfinite(tl) & np.isfinite(vl)
        sps = R * steps * cfg.batch_size / dt
        if len(groups) == 1:
            log(f"  epoch {epoch + 1:3d}/{E}  train {_ms(tl[ok])}  val {_ms(vl[ok])}  "
                f"{sps:,.0f} seed-samples/s  ({dt:.1f} s)")
        else:  # a grid: one line per hyperparameter setting, never a mean over different models
            log(f"  epoch {epoch + 1:3d}/{E}  {sps:,.0f} seed-samples/s  ({dt:.1f} s)")
            width = max(len(name) for name, _ in groups)
            for name, runs in groups:
                g = runs[ok[runs]]
                log(f"    {name:<{width}}  train {_ms(tl[g])}  val {_ms(vl[g])}")
        done = epoch + 1
        if manager is not None and (done % ckpt_every == 0 or done == E):
            import orbax.checkpoint as ocp
            ckpt = {"state": axis.unpad(state), "epoch": np.asarray(done, np.int32), "train_curve": train_curve,
                    "val_curve": val_curve, "epoch_time": epoch_time,
                    "compile_time": np.asarray(compile_time, np.float32)}
            if snapshots is not None:
                ckpt["snapshots"] = snapshots
            manager.save(done, args=ocp.args.StandardSave(ckpt), force=True)
            manager.wait_until_finished()
    if manager is not None:
        manager.close()
    return TrainOutput(axis.host(state), train_curve, val_curve, epoch_time, compile_time, diverged,
                       start, steps * cfg.batch_size, axis.describe(), snapshots)


def _setting_groups(hparams: Sequence[Hparams]) -> list[tuple[str, np.ndarray]]:
    """The runs of each hyperparameter setting, in first-seen order, named by the fields that differ
    ("beta 2"): the epoch line's mean ± std is over seeds, so a grid gets one per setting."""
    rows = np.asarray([[float(v) for v in h] for h in hparams], np.float64)
    varying = [i for i in range(rows.shape[1]) if len(np.unique(rows[:, i])) > 1]
    keys = [tuple(r[varying]) for r in rows]
    order = list(dict.fromkeys(keys))
    names = [", ".join(f"{Hparams._fields[i]} {v:g}" for i, v in zip(varying, k)) for k in order]
    return [(n, np.flatnonzero([key == k for key in keys])) for n, k in zip(names, order)]


def _ms(v: np.ndarray) -> str:
    if v.size == 0:
        return "nan"
    return f"{v.mean():8.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():8.3f}"


@hint_out_of_memory("evaluating", lambda a, r: eval_memory(a["spec"], a["cfg"], r, a["data"]),
                    lambda a: len(a["seeds"]), _devices_for)
def evaluate_runs(spec: ModelSpec, cfg: TrainConfig, state: TrainState, seeds: Sequence[int],
                  hparams: Sequence[Hparams], data: Data, purpose: str = "eval") -> dict[str, np.ndarray]:
    """Per-run, per-image evaluation in one program: {"bce": [R, N], "mse", "loss", "h", "z", "signed_error"}."""
    keys = jnp.stack([run_keys(s)[purpose] for s in seeds])
    hp = stack_hparams(hparams)
    return map_runs(_eval_program(spec.program, cfg), (state, keys, hp), (data,))


@functools.lru_cache(maxsize=32)
def _eval_program(spec: ModelSpec, cfg: TrainConfig):
    """One jitted evaluation per (model's program, config): later calls with the same shapes reuse its
    compilation, for every model of that program (``ModelSpec.program``)."""
    fn = make_eval(spec, cfg)
    return jax.jit(jax.vmap(lambda state, key, hp, data: fn(state, data, key, hp), in_axes=(0, 0, 0, None)))
