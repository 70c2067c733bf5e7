"""More than one process: JAX's multi-controller runtime (``jax.distributed``), all in this module.

With N processes (one per host of a TPU pod slice, say) joined by
``initialize``, ``jax.devices()`` lists the devices of every process, so
``loop.RunAxis`` lays the run axis out over all of them and every process runs
the same compiled programs on its own share of the runs. What must cross
between processes happens here and nowhere else:

    initialize()     join the processes (explicit coordinator, or what a TPU pod / SLURM provides)
    put(tree, s)     host arrays -> arrays sharded over every process's devices (each builds its own shards)
    to_host(tree)    arrays sharded over every process -> whole numpy arrays in each process (an all-gather,
                     one program for the whole tree)
    on_writer(fn)    fn runs on process 0 alone, the one that reads and writes the run folder; its result
                     (or its exception) reaches every process, so all of them take the same path; the
                     others wait for it there (the barrier at which they wait for the results to be written)
    everywhere(fn)   fn runs in every process; if it fails in one, it fails in all
    writer_context   a context manager (the folder lock) held by process 0 alone
    checkpoints      orbax used by process 0 alone, on arrays gathered to it

Every exchange is one compiled program that has finished on every local
device before the next one starts, so the processes exchange in the same order.

Why checkpoints are gathered rather than written by every process: the run
folder is a folder on process 0's disk (config.json and metrics.json are
written there), and the hosts of a pod slice share no file system, so orbax's
own multi-process save (each host writing its shards into one path) would
scatter a checkpoint over several disks. The gathered checkpoint is the very
tree a single-process run saves (the real runs, no padding), so a run
interrupted on N processes resumes on one and the other way round. The state
of these models is small (megabytes per run), so gathering it costs little.

With one process (the usual case) every function here is the plain
single-process operation and nothing more.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import pickle
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np


class DistributedError(Exception):
    """The processes could not be joined as asked; the message says what to do."""


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 300) -> None:
    """Join this process to the others; call before anything touches a device.

    With no arguments JAX finds coordinator, process count and index itself
    where the platform provides them (TPU pod slices, SLURM, Open MPI, GKE).
    CPU processes exchange data over gloo (the default of the installed JAX;
    set explicitly so it stays so).
    """
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:  # the join waits for every process: say so, or a missing one looks like a hang
        print(f"process {process_id} of {num_processes}: joining the others at {coordinator} (waiting up to "
              f"{timeout_s} s for all of them)", flush=True)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        if coordinator:
            raise DistributedError(f"could not join {num_processes} processes at {coordinator}: {why}; start every "
                                   "process with the same --coordinator and --num-processes, each with its own "
                                   "--process-id") from None
        raise DistributedError(f"--distributed found no processes to join in the environment ({why}); outside a "
                               "TPU pod slice or SLURM job give --coordinator=HOST:PORT, --num-processes and "
                               "--process-id") from None


def multi_process() -> bool:
    """Whether this is one of several joined processes (asks no device when ``initialize`` was never called)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the run folder (process 0; the only process of a single-process run)."""
    return not multi_process() or jax.process_index() == 0


def to_host(tree):
    """Every leaf as a whole numpy array, in every process (an all-gather when the runs span processes)."""
    if not multi_process():
        return jax.device_get(tree)
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array) and not a.is_fully_addressable]
    whole = dict(zip(spread, _collective(_identity, tuple(leaves[i] for i in spread),
                                         tuple(_replicated_over(leaves[i].sharding) for i in spread))))
    # the rest (host arrays, this process's own arrays) is fetched as it is
    return jax.tree.unflatten(treedef, [whole[i] if i in whole else np.asarray(jax.device_get(a))
                                        for i, a in enumerate(leaves)])


def put(tree, sharding):
    """jax.device_put(tree, sharding), also where the sharding spans several processes.

    Every process holds the same host values (same seeds, same data), so
    each builds its own shards from them without exchanging anything; an
    array already spread over the processes is resharded in place.
    """
    if not multi_process():
        return jax.device_put(tree, sharding)

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:  # resharding may exchange data: waited for
            return jax.block_until_ready(jax.device_put(a, sharding))
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys travel as their raw data
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree)


# Every exchange between processes below is one compiled program, and it has finished on every local device
# before the next is dispatched. JAX's own multihost_utils returns once the first local device's shard is
# ready, and JAX 0.6's CPU client runs programs dispatched one after another at the same time: two exchanges
# in flight at once sent their gloo messages in different orders in two processes, and gloo aborted the
# process ("op.preamble.length <= op.nbytes"). Waiting for each one keeps them in the same order everywhere.

def _identity(tree):
    return tree


def _row(tree, row: int):
    return jax.tree.map(lambda a: a[row], tree)


@functools.lru_cache(maxsize=None)
def _program(fn, out_shardings, n_static: int):
    return jax.jit(fn, out_shardings=out_shardings, static_argnums=tuple(range(1, 1 + n_static)))


def _collective(fn, tree, out_shardings, *static):
    """fn(tree, *static) compiled, laid out as out_shardings (replicated ones), waited for; numpy leaves back."""
    if not jax.tree.leaves(tree):
        return tree
    out = jax.block_until_ready(_program(fn, out_shardings, len(static))(tree, *static))
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), out)


def _replicated_over(sharding):
    """Every device of `sharding` holding the whole array (the trainer lays out its arrays by NamedSharding)."""
    if not isinstance(sharding, jax.sharding.NamedSharding):
        raise TypeError(f"cannot gather an array laid out by {type(sharding).__name__}: place it with a "
                        "NamedSharding (loop.RunAxis does)")
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


def _rows(tree):
    """Each process's host arrays as its row of [process_count, ...] arrays spread over the processes."""
    by_process = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))  # row p: process p's devices
    mesh = jax.sharding.Mesh(np.array(by_process).reshape(jax.process_count(), jax.local_device_count()),
                             ("processes", "local"))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("processes"))

    def one(x):
        mine = np.asarray(x)[None]  # every device of this process holds its row
        return jax.make_array_from_callback((jax.process_count(), *mine.shape[1:]), rows, lambda index: mine)
    return jax.tree.map(one, tree), _replicated_over(rows)


def _from_every_process(tree):
    """[process_count, ...] numpy arrays in every process: row p holds process p's `tree` (same shapes)."""
    rows, whole = _rows(tree)
    return _collective(_identity, rows, whole)


def _from_process(tree, source: int):
    """Process `source`'s host arrays in every process (the others pass arrays of the same shapes)."""
    rows, whole = _rows(tree)
    return _collective(_row, rows, whole, source)


def _broadcast_object(obj: Any, source: int = 0) -> Any:
    """Process `source`'s `obj` (anything picklable) in every process; collective: every process calls it."""
    mine = jax.process_index() == source
    data = np.frombuffer(pickle.dumps(obj), np.uint8) if mine else np.zeros(0, np.uint8)
    n = int(_from_process(np.asarray(data.size, np.int32), source))
    size = 1 << max(n - 1, 1).bit_length()  # a few buffer sizes, so a few compiled broadcasts
    buf = np.zeros(size, np.uint8)
    buf[: data.size] = data
    return pickle.loads(_from_process(buf, source)[:n].tobytes())


def _picklable(e: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
        return RuntimeError(f"process {jax.process_index()}: {type(e).__name__}: {e}")


def everywhere(fn: Callable[[], Any]) -> Any:
    """fn() in every process (loading the data, say); if it fails in any, the same exception in all.

    Collective. Without it, a process that cannot find its data would stop
    while the others wait for it in the next collective.
    """
    if not multi_process():
        return fn()
    try:
        result, error = fn(), None
    except Exception as e:  # noqa: BLE001 - every process must learn of it before any raises
        result, error = None, e
    failed = _from_every_process(np.asarray(error is not None, np.int32))
    if not failed.any():
        return result
    first = int(np.argmax(failed))
    shared = _broadcast_object(_picklable(error) if jax.process_index() == first else None, source=first)
    if error is not None:
        raise error
    raise shared


_FAILED = "ae_jax.distributed: failed on process 0"


def on_writer(fn: Callable[[], Any]) -> Any:
    """fn() on process 0 alone; its result, or the exception it raised, in every process.

    Collective: every process calls it at the same point. A process other
    than 0 re-raises process 0's exception (a ConfigError stays a
    ConfigError), so a refused run stops everywhere instead of leaving the
    others waiting in the next collective.
    """
    if not multi_process():
        return fn()
    if not is_writer():
        outcome = _broadcast_object(None)
        if isinstance(outcome, tuple) and len(outcome) == 2 and outcome[0] == _FAILED:
            raise outcome[1]
        return outcome
    try:
        result = fn()
    except Exception as e:  # shared with the other processes, then raised here too
        _broadcast_object((_FAILED, _picklable(e)))
        raise
    _broadcast_object(result)
    return result


@contextlib.contextmanager
def writer_context(make: Callable[[], contextlib.AbstractContextManager]):
    """Enter make() on process 0 alone (every process waits for it, and all stop if it refuses)."""
    with contextlib.ExitStack() as stack:
        def enter() -> None:
            stack.enter_context(make())
        on_writer(enter)
        yield


def writer_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """log on process 0; the other processes train silently (one progress report, not N interleaved)."""
    return log if is_writer() else (lambda message: None)


def checkpoint_manager(path: Path, options):
    """An orbax CheckpointManager for `path`: the plain one with one process, else ``WriterCheckpoints``."""
    import orbax.checkpoint as ocp
    if not multi_process():
        return ocp.CheckpointManager(Path(path).absolute(), options=options)
    return WriterCheckpoints(Path(path), options)


class WriterCheckpoints:
    """The CheckpointManager methods the trainer uses, collective across processes.

    Process 0 alone holds an orbax manager (restricted to itself, so orbax
    waits for no other process); ``save`` gathers the tree to host arrays in
    every process and process 0 writes it; ``restore`` is read by process 0
    and broadcast to the others; ``latest_step`` is process 0's answer.
    """

    def __init__(self, path: Path, options):
        import orbax.checkpoint as ocp
        self._manager = None
        if is_writer():
            path = Path(path).absolute()
            path.mkdir(parents=True, exist_ok=True)  # orbax may not create it when limited to some processes
            only_0 = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
            self._manager = ocp.CheckpointManager(
                path, options=dataclasses.replace(options, create=False, multiprocessing_options=only_0))

    def latest_step(self):
        return on_writer(lambda: self._manager.latest_step())

    def save(self, step: int, args, force: bool = False):
        import orbax.checkpoint as ocp
        tree = to_host(args.item)  # collective: every process takes part in the gather
        return on_writer(lambda: self._manager.save(step, args=ocp.args.StandardSave(tree), force=force))

    def restore(self, step: int, args):
        """The checkpoint as host arrays of the template's shapes and dtypes, in every process."""
        template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), args.item)
        read = {}
        # process 0 reads (a failure stops every process), then the arrays travel as arrays, not pickled
        on_writer(lambda: read.update(tree=self._manager.restore(step, args=args)))
        return _from_process(read.get("tree", template), 0)

    def wait_until_finished(self):
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self):
        if self._manager is not None:
            self._manager.close()
