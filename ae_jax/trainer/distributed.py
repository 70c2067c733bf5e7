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
    Watch            every process's heartbeat: a process lost (or stopped by a signal) ends the run in every
                     process with one line (the mechanism, and why, is described where it is defined)

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
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .. import supervisor
from ..supervisor import JOIN_TIMEOUT_S


class DistributedError(Exception):
    """The processes could not be joined as asked; the message says what to do."""


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: float = JOIN_TIMEOUT_S, watch: bool = True) -> None:
    """Join this process to the others; call before anything touches a device.

    With no arguments JAX finds coordinator, process count and index itself
    where the platform provides them (TPU pod slices, SLURM, Open MPI, GKE).
    CPU processes exchange data over gloo (the default of the installed JAX;
    set explicitly so it stays so). ``timeout_s``: how long to wait for every
    process to join. With ``watch`` (the scripts), this process then watches the
    others and ends the run when one is lost (``Watch``).
    """
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:  # the join waits for every process: say so, or a missing one looks like a hang
        print(f"process {process_id} of {num_processes}: joining the others at {coordinator} (waiting up to "
              f"{timeout_s:g} s for all of them)", flush=True)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=max(int(round(timeout_s)), 1))
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        if coordinator:
            raise DistributedError(f"could not join {num_processes} processes at {coordinator}: {why}; start every "
                                   "process with the same --coordinator and --num-processes, each with its own "
                                   "--process-id") from None
        raise DistributedError(f"--distributed found no processes to join in the environment ({why}); outside a "
                               "TPU pod slice or SLURM job give --coordinator=HOST:PORT, --num-processes and "
                               "--process-id") from None
    index, count = _process()
    supervisor.report("joined", f"{index} {count}")
    if watch and count > 1:
        Watch.start(index, count)


def _process() -> tuple[int, int]:
    """This process's index and the process count, without starting a backend (jax.process_index() would)."""
    from jax._src import distributed as state
    return int(state.global_state.process_id), int(state.global_state.num_processes)


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
        with _writing:  # a lost peer's watch waits for this before it ends the process (see Watch)
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
        self._path = Path(path)
        if is_writer():
            path = Path(path).absolute()
            path.mkdir(parents=True, exist_ok=True)  # orbax may not create it when limited to some processes
            only_0 = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
            self._manager = ocp.CheckpointManager(
                path, options=dataclasses.replace(options, create=False, multiprocessing_options=only_0))

    def latest_step(self):
        step = on_writer(lambda: self._manager.latest_step())
        _kept(step, self._path)
        return step

    def save(self, step: int, args, force: bool = False):
        import orbax.checkpoint as ocp
        tree = to_host(args.item)  # collective: every process takes part in the gather

        def write():
            saved = self._manager.save(step, args=ocp.args.StandardSave(tree), force=force)
            _kept(step, self._path)  # before the others learn of it: a peer lost meanwhile must not hide it
            return saved
        saved = on_writer(write)
        _kept(step, self._path)
        return saved

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


# ----------------------------------------------------------------------------- when a process is lost
#
# The mechanism, and why. A process of the run can die (kill -9, a crash, the out-of-memory killer), lose its
# host (a preempted pod worker), or stop answering (a hung host, SIGSTOP). What JAX does by itself is no way to
# end a run: the surviving processes stop in a gloo collective with a traceback (when the peer's connection
# closed) or wait in it indefinitely (when it did not); JAX's coordination service notices a missing peer only
# after its heartbeat timeout (100 s by default), and then the runtime aborts every survivor from C++ with a stack
# trace (its callback for that cannot be a Python function: the installed jaxlib aborts on a std::bad_cast
# converting the error for it); at exit, JAX's shutdown barrier waits for the lost process for minutes. Shortening
# JAX's heartbeat timeout would only bring that abort sooner, and its settings differ between the JAX versions
# this package supports (0.6 takes none through jax.distributed.initialize). So the runtime's own heartbeat is
# left as it is, a backstop, and every process keeps a heartbeat of its own in the coordination service's
# key-value store, which both versions provide: once a second it sets its own counter and reads everyone's
# (one request each). A peer whose counter stood still for LOST_AFTER_S is lost; so is process 0 (which hosts
# the service) when a request to it has not come back in that time. Once a collective has failed in this process
# (a peer's connection closed: it died), LOST_AFTER_FAILED_S of silence names the lost peer. The watch then ends
# this process itself, from its own thread, since the main thread may be stuck in a collective for good: it waits
# for a checkpoint being written to be complete (``_writing``), tidies the run folder (``if_abandoned``), prints
# one line (through the supervisor: ``ae_jax.supervisor``) and leaves with os._exit, skipping JAX's shutdown
# barrier. Before that it writes why it ends in the store, so the others end the same way: the one line names
# the lost process everywhere, and a signal to one process (Ctrl-C, SIGTERM) stops them all with the lines of a
# single-process run. Where process 0 itself dies, the runtime aborts the others at once; their supervisors
# then say so in one line.
#
# The margins: the heartbeat thread needs the interpreter for a moment once a second; a busy main thread yields
# it every 5 ms, and the long native calls (compiling, running a program, waiting for a collective) release
# it. A process that was not scheduled at all for a while (a loaded or swapping host) notices the gap in its own
# clock and judges nobody on that round. 10 s is ten missed heartbeats: the longest gap between a live peer's
# heartbeats seen was 2.0 s (a two-process digits run of 60 epochs on a 2-core machine running a test file beside
# it, 2026-12-07), and 10 s keeps the whole end (the silence, a second or two to act) within 15 s.
HEARTBEAT_S = 1.0
LOST_AFTER_S = 10.0
LOST_AFTER_FAILED_S = 3.0
ACK_WAIT_S = 3.0  # process 0, ending: how long it waits for the others to read why (its exit ends the store)
ERROR_GRACE_S = 3.0  # a peer's one-line error: for this process's own (the same, mostly) to come first
WRITE_WAIT_S = 10.0  # for a checkpoint being written to be complete before ending
_KEYS = "ae_jax/run"

_writing = threading.RLock()  # held by process 0 while it writes into the run folder (on_writer's fn)
_abandon: list[Callable[[], None]] = []  # what to tidy when the watch ends this process (last first)
_story = {"prog": "ae_jax", "resume": "rerun the same command on every host to resume",
          "kept": supervisor.NOTHING_KEPT}


def describe_run(prog: str, resume: str) -> None:
    """What the one line says: the script's name and how to resume (``supervisor.resume_hint``)."""
    _story.update(prog=prog, resume=resume)


def _kept(step: int | None, path: Path) -> None:
    """The checkpoint the run would resume from. Process 0 records it as soon as it is written, the others once
    process 0 has told them (a process stopped in those milliseconds names the checkpoint before)."""
    if step is not None:
        _story["kept"] = f"process 0 kept the checkpoint after epoch {step} in {path}"
        supervisor.report("kept", _story["kept"])


@contextlib.contextmanager
def if_abandoned(fn: Callable[[], None]):
    """Within the block, fn() runs (on the watch's thread) if the watch ends this process."""
    _abandon.append(fn)
    try:
        yield
    finally:
        _abandon.remove(fn)


def finish(status: int = 0) -> None:
    """This process ends by itself: done (status 0), or with a one-line error (2). The others must not take its
    silence for a loss; an error they do not share themselves ends them too (``Watch._follow``)."""
    watch = Watch.current
    if watch is not None and not watch.stopping:
        watch.stopping = True
        watch.record("done" if status == 0 else "error")


def take_signals() -> bool:
    """SIGINT and SIGTERM go to the watch, which stops every process (main thread only); False without a watch.

    Python runs a signal handler in the main thread once it is back in Python, which it may never be (stuck
    in a collective whose peer is gone); the wakeup fd is written at once, from C, and the watch reads it.
    """
    watch = Watch.current
    if watch is None:
        return False
    read, write = os.pipe()
    os.set_blocking(write, False)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: None)
    signal.set_wakeup_fd(write)
    watch.signals = read
    return True


def failed_here(error: BaseException) -> None:
    """The main thread met an error in a run over several processes. If a peer was lost (the usual reason: a
    collective failed), the watch ends this process with its one line, and this never returns; otherwise it
    returns after the watch has had time to tell, and the error is reported as any other."""
    watch = Watch.current
    if watch is None:
        return
    watch.failed = True
    until = time.monotonic() + LOST_AFTER_S + 3 * HEARTBEAT_S
    while time.monotonic() < until or watch.ending.locked():
        time.sleep(0.1)


class Watch:
    """This process's heartbeat and its watch over the others (see above); one per process, ``Watch.current``."""

    current: Watch | None = None

    def __init__(self, index: int, count: int):
        from jax._src import distributed as state
        self.client = state.global_state.client
        self.index, self.count = index, count
        self.peers = [p for p in range(count) if p != index]
        now = time.monotonic()
        self.seen = {p: now for p in self.peers}  # when each peer's counter last moved
        self.beats: dict[int, str] = {}
        self.ends: dict[int, str] = {}  # why a peer ended, as it wrote it
        self.errors: dict[int, float] = {}  # when this process learnt of a peer's one-line error
        self.in_call: float | None = None  # when the pending request to the store was sent
        self.failed = False  # a collective failed in this process
        self.stopping = False
        self.ending = threading.Lock()
        self.signals: int | None = None
        self.parent = os.getppid()

    @classmethod
    def start(cls, index: int, count: int) -> None:
        cls.current = watch = cls(index, count)
        threading.Thread(target=watch._heartbeat, name="ae_jax heartbeat", daemon=True).start()
        threading.Thread(target=watch._watch, name="ae_jax watch", daemon=True).start()

    def record(self, why: str) -> None:
        """Write why this process ends in the store (given up after half a second: the store may be gone)."""
        def write():
            try:
                self.client.key_value_set(f"{_KEYS}/end/{self.index}", why, allow_overwrite=True)
            except Exception:  # noqa: BLE001 - the service is gone: the others learn it their own way
                pass
        t = threading.Thread(target=write, daemon=True)
        t.start()
        t.join(0.5)

    def _heartbeat(self) -> None:
        beat, last = 0, time.monotonic()
        while not self.stopping:
            beat += 1
            self.in_call = time.monotonic()
            try:
                self.client.key_value_set(f"{_KEYS}/alive/{self.index}", str(beat), allow_overwrite=True)
                entries = self.client.key_value_dir_get(f"{_KEYS}/")
            except Exception:  # noqa: BLE001 - the service did not answer: _watch judges how long that lasts
                entries = None
            now = time.monotonic()
            self.in_call = None
            starved, last = now - last > 3 * HEARTBEAT_S, now
            if entries is not None and not self.stopping:
                self._read(entries, now, starved)
            time.sleep(HEARTBEAT_S)

    def _read(self, entries, now: float, starved: bool) -> None:
        for key, value in entries:
            kind, _, who = key[len(_KEYS) + 1:].partition("/")
            if not who.isdigit() or int(who) == self.index:
                continue
            if kind == "alive" and (self.beats.get(int(who)) != value or starved):
                self.beats[int(who)], self.seen[int(who)] = value, now
            elif kind == "end":
                self.ends[int(who)] = value
        if starved:  # this process was not scheduled for a while: its view of the others is stale, not theirs
            self.seen = {p: now for p in self.peers}
        for who, why in sorted(self.ends.items()):
            if why == "error":  # most often shared by every process: this one's own line comes first, then
                self.errors.setdefault(who, now)  # finish() stops the watch; otherwise the line says where it was
                if now - self.errors[who] < ERROR_GRACE_S:
                    continue
            if why != "done":
                return self._follow(who, why)
        limit = LOST_AFTER_FAILED_S if self.failed else LOST_AFTER_S
        lost = [p for p in self.peers if p not in self.ends and now - self.seen[p] > limit]
        if lost:
            self._lost(lost, f"no sign of life for {limit:g} s"
                       + (" after an exchange with it failed (it died or its host is gone)" if self.failed
                          else " (it died, was preempted or hangs)"))

    def _watch(self) -> None:
        import select
        last = time.monotonic()
        while not self.stopping:
            got = b""
            if self.signals is not None:
                if select.select([self.signals], [], [], 0.25)[0]:
                    got = os.read(self.signals, 64)
            else:
                time.sleep(0.25)
            if self.stopping:
                return
            now = time.monotonic()
            starved, last = now - last > 2.0, now
            if got:
                return self._signalled(got[0])
            if supervisor.is_worker() and os.getppid() != self.parent:  # the supervisor was killed: so is this
                os._exit(128 + signal.SIGKILL)
            pending = self.in_call
            if (not starved and self.index != 0 and pending is not None
                    and now - pending > LOST_AFTER_S):
                self._lost([0], f"no answer from it for {LOST_AFTER_S:g} s (it died, was preempted or hangs)")

    def _name(self, processes) -> str:
        names = ", ".join(str(p) for p in processes)
        coordinator = " (the coordinator)" if 0 in processes else ""
        return f"process{'es' if len(processes) > 1 else ''} {names} of {self.count}{coordinator}"

    def _lost(self, processes, why: str) -> None:
        line = supervisor.lost_line(_story["prog"], self._name(processes), why, _story["kept"], _story["resume"])
        self._end("lost " + ",".join(map(str, processes)), supervisor.EXIT_LOST, line, lost=processes)

    def _signalled(self, signum: int) -> None:
        why = supervisor.STOPS.get(signum, "terminated")
        self._end(why, supervisor.STOP_STATUS[why], f"{why}: {_story['kept']}; {_story['resume']}")

    def _follow(self, who: int, why: str) -> None:
        """Another process ended: end the same way."""
        if why.startswith("lost "):
            lost = [int(p) for p in why[5:].split(",") if p.isdigit()]
            if self.index in lost:  # this process was stopped or starved for longer than the others would wait
                line = (f"{_story['prog']}: error: process {who} gave this process ({self._name([self.index])}) up: "
                        f"it did not answer for {LOST_AFTER_S:g} s (a stopped or overloaded host); {_story['kept']}; "
                        f"{_story['resume']}")
                return self._end(why, supervisor.EXIT_LOST, line, lost=lost)
            line = supervisor.lost_line(_story["prog"], self._name(lost), f"process {who} lost it",
                                        _story["kept"], _story["resume"])
            return self._end(why, supervisor.EXIT_LOST, line, lost=lost)
        if why == "error":
            return self._end(why, 2, f"{_story['prog']}: error: process {who} of {self.count} stopped with an error "
                                      f"(its output says which); {_story['kept']}")
        status = supervisor.STOP_STATUS.get(why, supervisor.EXIT_LOST)
        self._end(why, status, f"{why} (on process {who}): {_story['kept']}; {_story['resume']}")

    def _end(self, why: str, status: int, line: str, lost=()) -> None:
        """End this process: the others told, the run folder tidied, one line, ``status``. Never returns."""
        if not self.ending.acquire(blocking=False):
            return  # another thread is ending this process
        self.stopping = True
        self.record(why)
        took = _writing.acquire(timeout=WRITE_WAIT_S)  # a checkpoint being written is complete first
        for fn in reversed(_abandon if took else []):
            try:
                fn()
            except Exception:  # noqa: BLE001 - tidying is best effort; the line matters more
                pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        if supervisor.is_worker():
            supervisor.report("ending", f"{status} {line}")
        else:
            print(line, file=sys.stderr, flush=True)
        if self.index == 0:  # the store lives in this process: the others read why before it goes
            waiting = set(self.peers) - set(lost) - set(self.ends)
            until = time.monotonic() + ACK_WAIT_S
            while waiting and time.monotonic() < until:
                try:
                    waiting -= {int(k.rsplit("/", 1)[1]) for k, _ in self.client.key_value_dir_get(f"{_KEYS}/end/")}
                except Exception:  # noqa: BLE001
                    break
                time.sleep(0.1)
        os._exit(status)
