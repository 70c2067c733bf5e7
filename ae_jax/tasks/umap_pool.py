"""UMAP fits in worker processes: the seeds of a run are embedded side by side.

A UMAP fit with a fixed ``random_state`` runs on one core (umap-learn turns its
own parallelism off for reproducibility): about 10 s for 10 000 MNIST codes,
after the first fit in a process has compiled umap's numba code (about 50 s,
about 20 s once that code is on disk: below).
On an accelerator a 5-seed model trains in seconds, so fitting its seeds one
after another on the host would dominate a study. ``embed`` hands the fits to
worker processes instead, one per fit up to the number of CPU cores
(``AE_JAX_UMAP_WORKERS`` overrides the count; 1 fits in the calling process).

On an accelerator a study does not wait for them at all: ``submit`` hands a
run's fits to the workers and returns, the study goes on to its next task and
run, and the task is finished (``Pending.result``) after the last run
(``ae_jax.studies.driver``). Measured on one H200 host, a fit took 17 to 32 s
on one core, on the study's path 35 to 98 s per run while the GPU waited
(``benchmarks/README.md``). The pool then has a worker per fit of the whole
study up to all cores but one (``background_workers``), and the fits of
successive runs spread over all of them.

The workers are plain ``python -m ae_jax.tasks.umap_pool`` processes that import
numpy and umap only (never jax or tensorflow, so they hold no accelerator
memory and start in seconds) and talk
over their standard input and output in ``.npy`` records. They live as long
as the calling process, so each compiles umap's code once per study. A fit is
the same single-threaded computation wherever it runs, so the embeddings are
identical to an in-process fit.

Compiled once per machine, not once per process: pynndescent marks most of its
numba functions ``cache=True``, umap-learn few of its own, so every new process
(each worker, each study invocation) compiled umap's part again. Measured on
this project's 2-core VM (numba 0.68.1, umap-learn 0.5.12, pynndescent 0.7.0;
``benchmarks/README.md``): a new process's compiling for 10 000 codes (the
NN-descent path umap takes from 4 096 points up) went from 40 to 48 s to about
17 s once umap's code was stored; for 240 codes the first fit went from 13.9 s
to 0.3 s. So ``_import_umap`` turns numba's own on-disk cache
on for every numba function of the two packages, where numba keeps
``cache=True`` code (beside the package's source, or numba's user-wide cache
folder where that is read-only; ``NUMBA_CACHE_DIR`` chooses another). A
stored function is the machine code a fresh compile makes, so the embeddings
are the same bit for bit. What numba cannot store (pynndescent's
``nn_descent`` uses dynamic globals) is still compiled in every process.
``AE_JAX_COMPILATION_CACHE=off``, the setting that turns the XLA program
cache off, leaves numba's caching as the packages set it.
"""
from __future__ import annotations

import atexit
import functools
import io
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from ..cache import compilation_cache_off

ENV_WORKERS = "AE_JAX_UMAP_WORKERS"
COMPILE_NOTE = "the first fit in a process compiles umap's numba code: ~50 s, ~20 s once stored on disk"
WORKER_COMMAND = (sys.executable, "-m", "ae_jax.tasks.umap_pool")


class UmapWorkerError(RuntimeError):
    """A worker process died or could not be started."""


def workers_setting() -> int | None:
    """``$AE_JAX_UMAP_WORKERS`` as a count (None when unset); anything but a positive integer is an error."""
    text = os.environ.get(ENV_WORKERS, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        from ..trainer import ConfigError
        raise ConfigError(f"{ENV_WORKERS} must be a whole number of processes, at least 1 (1: fit UMAP in the "
                          f"study's own process), got {text!r}")
    return int(text)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(fits: int) -> int:
    """How many processes `fits` fits use: the setting, else one per fit up to the CPU cores."""
    return max(1, min(fits, workers_setting() or cpu_cores()))


def _import_umap():
    """umap without tensorflow: umap imports it, when installed, for ParametricUMAP alone, which costs seconds
    and memory and (tensorflow 2.21) prints start-up lines. tensorflow already imported (by TFDS) is reused.
    It also has numba keep umap's compiled code on disk (the module docstring says why)."""
    if "umap" in sys.modules or "tensorflow" in sys.modules:
        import umap
    else:
        sys.modules["tensorflow"] = None  # import tensorflow -> ImportError, which umap expects when it is missing
        try:
            import umap
        finally:
            del sys.modules["tensorflow"]
    if not compilation_cache_off():
        _store_compiled_code(("umap", "pynndescent"))
    return umap


@functools.cache  # once per process
def _store_compiled_code(packages: tuple[str, ...]) -> None:
    """Turn numba's on-disk cache on for every numba function that the `packages`' imported modules define. A
    function numba finds no place to store it for is left to compile in each process, as before."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # another numba layout: compiled in each process, as before
        return
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and getattr(obj.py_func, "__module__", None) == name:
                try:
                    obj.enable_caching()
                except (RuntimeError, OSError):  # numba's "no locator available" for this function's file
                    pass


def fit(z: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """One UMAP fit (default parameters, random_state = seed) to 2-D: the embedding and its seconds."""
    umap = _import_umap()
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": the price of reproducibility
        warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
        # numba, on storing a function it cannot keep (dynamic globals): compiled in each process, as before
        warnings.filterwarnings("ignore", message=".*Cannot cache compiled function")
        emb = umap.UMAP(random_state=seed).fit_transform(np.asarray(z, np.float32))
    return np.asarray(emb, np.float32), time.perf_counter() - t0


# ----------------------------------------------------------------------------- the records on the pipes
def _send(f, *arrays: np.ndarray) -> None:
    buf = io.BytesIO()  # np.lib.format writes a real file with tofile(), which needs a seekable file
    for a in arrays:
        np.lib.format.write_array(buf, a, allow_pickle=False)
    f.write(buf.getvalue())
    f.flush()


class _Reader:
    """A pipe seen as a plain stream: np.lib.format then reads it with read() (fromfile() needs seeking)."""

    def __init__(self, f):
        self.read = f.read


def _recv(reader: _Reader) -> np.ndarray:
    return np.lib.format.read_array(reader, allow_pickle=False)


# ----------------------------------------------------------------------------- the calling side
class _Worker:
    def __init__(self):
        try:
            self.proc = subprocess.Popen(WORKER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as e:
            raise UmapWorkerError(f"could not start a UMAP worker process: {e}") from None
        self.out = _Reader(self.proc.stdout)
        self.lock = threading.Lock()  # one exchange at a time: a warm-up fit, then the study's

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fit(self, z: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        with self.lock:
            return self._exchange(z, seed)

    def _exchange(self, z: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        try:
            _send(self.proc.stdin, np.asarray(seed, np.int64), np.asarray(z, np.float32))
            emb = _recv(self.out)
            if emb.dtype.kind == "U":  # the worker's fit raised: its message
                raise RuntimeError(f"UMAP failed in a worker process: {emb}")
            secs = _recv(self.out)
        except (OSError, ValueError, EOFError) as e:  # a closed pipe or a truncated record: the worker is gone
            status = self.proc.poll()
            how = "stopped answering" if status is None else f"exited with status {status}"
            raise UmapWorkerError(f"a UMAP worker process {how} ({type(e).__name__})") from None
        return emb, float(secs)

    def end_input(self) -> None:
        """Close the worker's input: it ends once its fit under way (if any) is done."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def close(self, kill: bool = False, timeout: float = 5.0) -> None:
        """Stop the worker: at once (`kill`), or once it ends its fit, killed after `timeout` seconds."""
        if not self.alive():
            return
        if kill:
            self.proc.kill()
        else:
            self.end_input()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


class _Pool:
    """Worker processes kept for the life of the calling process."""

    def __init__(self):
        self.workers: list[_Worker] = []

    def drop_dead(self) -> None:
        self.workers = [w for w in self.workers if w.alive()]

    def ensure(self, n: int) -> bool:
        """At least n live workers; True when new ones were started (they compile on their first fit)."""
        self.drop_dead()
        new = max(0, n - len(self.workers))
        for _ in range(new):
            self.workers.append(_Worker())
        return new > 0

    def close(self, kill: bool = False) -> None:
        """Stop every worker: at once (`kill`), or each given until one shared deadline (5 s) to end its fit."""
        if kill:
            for w in self.workers:
                w.close(kill=True)
        else:
            for w in self.workers:
                w.end_input()
            deadline = time.monotonic() + 5
            for w in self.workers:
                w.close(timeout=max(0.0, deadline - time.monotonic()))
        self.workers = []


_POOL = _Pool()
_COMPILED_HERE = False  # whether a fit in this process has compiled umap's code yet


def close_workers(kill: bool = False) -> None:
    """Stop the worker processes (the next fits start new ones); also done when the process exits. `kill`:
    at once, fits under way or not (otherwise each worker is given 5 s to finish its fit)."""
    _POOL.close(kill)


atexit.register(close_workers)


def warm_up(workers: int, points: int, log: Callable[[str], None] = print) -> None:
    """Start `workers` worker processes now, each compiling umap's code on a throwaway fit in the background.

    For a study that trains on an accelerator: the CPU is idle while the first
    run trains, and the compilation (~50 s, ~20 s once stored) is paid there
    instead of when the first run's seeds are embedded. `points` codes per fit
    (the test set's size: umap takes another code path below 4 096 points). A
    failed warm-up is left to ``embed`` to notice.
    """
    if workers <= 1:
        return
    try:
        _POOL.ensure(workers)
    except UmapWorkerError:
        return
    log(f"UMAP: {workers} worker processes compile umap's code in the background while the first run trains")
    z = np.random.default_rng(0).normal(size=(points, 3)).astype(np.float32)

    def throwaway(w: _Worker) -> None:
        try:
            w.fit(z, 0)
        except (UmapWorkerError, RuntimeError):
            pass

    for w in _POOL.workers[:workers]:
        threading.Thread(target=throwaway, args=(w,), daemon=True).start()


def _fitted(z: np.ndarray, seed: int, secs: float) -> str:
    return f"    UMAP of {z.shape[0]} x {z.shape[1]} codes (seed {seed}) in {secs:.1f} s"


def _fit_here(z: np.ndarray, seed: int, log: Callable[[str], None]) -> np.ndarray:
    global _COMPILED_HERE
    if not _COMPILED_HERE:
        log(f"    ({COMPILE_NOTE})")
    emb, secs = fit(z, seed)
    _COMPILED_HERE = True
    log(_fitted(z, seed, secs))
    return emb


class Pending:
    """UMAP fits under way in the worker processes; ``result()`` waits for them.

    Each fit runs in a thread of its own that hands it to one worker (fit i of
    a submission to the pool's worker (offset + i) mod workers, the offset
    moving on with each submission, so fits submitted while others run spread
    over every worker); a worker does its fits one at a time.
    """

    def __init__(self, codes: Sequence[np.ndarray], seeds: Sequence[int], workers: Sequence[_Worker],
                 offset: int = 0):
        self.codes, self.seeds = list(codes), list(seeds)
        self._workers = [workers[(offset + i) % len(workers)] for i in range(len(codes))]
        self._out: list = [None] * len(codes)
        self._done = [threading.Event() for _ in codes]
        for i in range(len(codes)):
            threading.Thread(target=self._fit, args=(i,), daemon=True).start()

    def _fit(self, i: int) -> None:
        try:
            self._out[i] = self._workers[i].fit(self.codes[i], self.seeds[i])
        except BaseException as e:  # noqa: BLE001 - handed to result()
            self._out[i] = e
        finally:
            self._done[i].set()

    def result(self, log: Callable[[str], None] = print) -> list[np.ndarray]:
        """The embeddings, in order. A fit that failed raises its error, and so does an interrupt: either stops
        every worker, leaving no fit running behind. A fit whose worker died goes to the pool's other workers
        (the dead one is stopped and dropped), or is redone here when none is left: the same embedding."""
        try:
            for done in self._done:
                done.wait()
            failed = next((o for o in self._out if isinstance(o, BaseException)
                           and not isinstance(o, UmapWorkerError)), None)
            if failed is not None:
                raise failed
        except BaseException:
            _POOL.close(kill=True)
            raise
        lost = [i for i, o in enumerate(self._out) if isinstance(o, UmapWorkerError)]
        if lost:
            for i in lost:
                self._workers[i].close(kill=True)
            _POOL.drop_dead()
            log(f"    {self._out[lost[0]]}; " + ("its fits go to the other worker processes" if _POOL.workers
                                                  else "fitting in this process"))
            codes, seeds = [self.codes[i] for i in lost], [self.seeds[i] for i in lost]
            redone = (Pending(codes, seeds, _POOL.workers).result(log) if _POOL.workers
                      else [_fit_here(z, sd, log) for z, sd in zip(codes, seeds)])
            for i, emb in zip(lost, redone):
                self._out[i] = (emb, None)
        embs = []
        for z, sd, (emb, secs) in zip(self.codes, self.seeds, self._out):
            if secs is not None:  # (a fit redone elsewhere was logged there)
                log(_fitted(z, sd, secs))
            embs.append(emb)
        return embs


def submit(codes: Sequence[np.ndarray], seeds: Sequence[int], log: Callable[[str], None] = print,
           workers: int | None = None) -> Pending | None:
    """Start the fits of each codes [N, n] with its seed in worker processes and return at once (None when
    there would be one worker or none can be started: fit with ``embed`` then). At least `workers` processes
    (default ``worker_count(len(codes))``) are used, every live one of the pool when it has more."""
    global _OFFSET
    workers = worker_count(len(codes)) if workers is None else workers
    if workers <= 1 or not codes:
        return None
    try:
        new = _POOL.ensure(workers)
    except UmapWorkerError as e:
        log(f"    {e}; fitting in this process")
        return None
    live = _POOL.workers
    log(f"    UMAP of {len(codes)} seeds in {min(len(codes), len(live))} worker processes"
        + (f" ({COMPILE_NOTE})" if new else ""))
    pending = Pending(codes, seeds, live, _OFFSET)
    _OFFSET = (_OFFSET + len(codes)) % len(live)
    return pending


_OFFSET = 0  # the worker that the next submission's first fit goes to


def embed(codes: Sequence[np.ndarray], seeds: Sequence[int],
          log: Callable[[str], None] = print) -> list[np.ndarray]:
    """UMAP embeddings of each codes [N, n] with its seed, the fits spread over ``worker_count`` processes.

    With one worker (or when a worker fails) the fits run in this process.
    """
    pending = submit(codes, seeds, log)
    if pending is None:
        return [_fit_here(z, sd, log) for z, sd in zip(codes, seeds)]
    return pending.result(log)


def background_workers(fits: int) -> int:
    """Worker processes for `fits` fits that run while the study goes on (on an accelerator): one per fit up
    to the setting, else to all the cores but one (the study's own process compiles and feeds the device);
    two at least, since even one fit is worth taking off the study's path. A setting of 1: none (1)."""
    setting = workers_setting()
    if setting == 1:
        return 1
    return max(2, min(fits, setting or cpu_cores() - 1))


# ----------------------------------------------------------------------------- the worker side
def _serve() -> None:
    """Read (seed, codes) records from stdin until it closes; answer each with (embedding, seconds)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it closes the pipes
    inp = _Reader(sys.stdin.buffer)
    out = os.fdopen(os.dup(1), "wb")  # the records go here; anything else printed, even by C code, to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        try:
            seed, z = int(_recv(inp)), _recv(inp)
        except (ValueError, EOFError):  # the caller closed the pipe
            return
        try:
            emb, secs = fit(z, seed)
            records = (emb, np.asarray(secs))
        except Exception as e:  # noqa: BLE001 - reported to the caller, which raises it
            records = (np.asarray(f"{type(e).__name__}: {e}"),)
        try:
            _send(out, *records)
        except BrokenPipeError:  # the caller is gone
            return


if __name__ == "__main__":
    _serve()
