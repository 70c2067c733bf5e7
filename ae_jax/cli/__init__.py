"""Command-line helpers shared by the scripts in experiments/ and benchmarks/."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable


def fail(message: str, status: int = 2):
    """One line on stderr, no traceback, non-zero exit."""
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "ae_jax"
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


class ArgParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) with exit status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        fail(f"{message} (see --help)")


def recorded_command(script: str, argv=None) -> str:
    """The exact command line, as results record it: 'python experiments/<script> <args>'."""
    import shlex
    args = argv if argv is not None else sys.argv[1:]
    return f"python experiments/{script} " + " ".join(shlex.quote(a) for a in args)


def check_dataset(name: str) -> None:
    """One-line error (exit 2) for a dataset name ae_jax does not know."""
    from ..data import DATASETS
    if name not in DATASETS:
        fail(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def float_list(text: str) -> list[float]:
    """A number or a comma list of numbers; an empty item (``1,,2``, ``2,``) is refused, not skipped."""
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


def user_path(text: str) -> str:
    """A path flag's value with ``~`` expanded: the shell leaves the ``~`` of ``--out=~/x`` as it is."""
    return os.path.expanduser(text)


def out_dir(text: str) -> str:
    """An --out folder (``~`` expanded), refused before any work when it is a file or cannot be written."""
    path = user_path(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder; give a folder for the results")
    _check_writable(path, path)
    return path


def out_file(text: str) -> str:
    """An --out file (``~`` expanded), refused before any work when it is a folder or cannot be written."""
    path = user_path(text)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name for the JSON")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist")
    _check_writable(path, folder)
    return path


def _check_writable(path: str, folder: str) -> None:
    """The folder path goes into (its nearest existing ancestor when it does not exist yet) must be writable."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {existing} is not writable (read-only or "
                                         "another user's); choose another --out")


def name_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """The flags that join several processes (hosts) into one run: see ``join_processes``."""
    g = p.add_argument_group("more than one host (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="join the other processes found from the environment (every worker of a TPU pod slice, "
                        "a SLURM job); process 0 writes the run folder")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="join explicitly: the address of process 0 (with --num-processes and --process-id)")
    g.add_argument("--num-processes", type=int, default=None, help="how many processes take part")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 to --num-processes - 1")
    g.add_argument("--join-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long the processes wait for each other to join (default 120); a process that has not "
                        "joined by then ends the run, exit status 75")


def join_processes(args) -> bool:
    """Join jax.distributed as the flags ask (before anything touches a device); False when not asked.

    Impossible flag combinations and a failed join end in a one-line error, exit status 2.
    """
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if all(v is None for v in explicit):
        if not args.distributed:
            return False
    elif any(v is None for v in explicit):
        fail("--coordinator=HOST:PORT, --num-processes and --process-id go together (or use --distributed alone "
             "where the environment says who the processes are)")
    else:
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit():
            fail(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
        if args.num_processes < 1:
            fail(f"--num-processes must be at least 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            fail(f"--process-id must be between 0 and {args.num_processes - 1}, got {args.process_id}")
    from ..trainer import distributed
    timeout = join_timeout(args)
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=timeout)
    except distributed.DistributedError as e:
        fail(str(e))
    return True


def join_timeout(args) -> float:
    """--join-timeout, or its default; refused (exit 2) unless a positive number of seconds."""
    from ..supervisor import JOIN_TIMEOUT_S
    value = getattr(args, "join_timeout", None)
    if value is None:
        return JOIN_TIMEOUT_S
    if not 0 < value < float("inf"):
        fail(f"--join-timeout must be a positive number of seconds, got {value:g}")
    return value


def joins_processes(args) -> bool:
    """Whether the flags ask to join other processes (the run then goes through ``supervised``)."""
    return bool(getattr(args, "distributed", False) or getattr(args, "coordinator", None) is not None
                or getattr(args, "num_processes", None) is not None or getattr(args, "process_id", None) is not None)


def supervised(script_path: str, argv=None) -> int | None:
    """In the process a user started with flags that join processes: run the script again as its worker under
    ``ae_jax.supervisor`` and return the status to end with. None where there is nothing to supervise (no such
    flags, or this is the worker). Call it first: it reads only those flags, imports nothing of JAX, and leaves
    every other flag to the worker (which refuses bad input with its one-line error, passed through)."""
    from .. import supervisor
    if supervisor.is_worker():
        return None
    argv = list(sys.argv[1:] if argv is None else argv)
    p = ArgParser(prog=os.path.basename(script_path), add_help=False, allow_abbrev=False)
    add_distributed_args(p)
    p.add_argument("--force", action="store_true")
    args, _ = p.parse_known_args(argv)
    if not joins_processes(args):
        return None
    timeout = join_timeout(args)  # refused here, before a worker starts
    explicit = args.coordinator is not None
    process = (args.process_id, args.num_processes) if explicit and args.process_id is not None else None
    return supervisor.supervise(script_path, argv, explicit=explicit, process=process, coordinator=args.coordinator,
                                join_timeout=timeout, force=args.force)


def check_environment() -> None:
    """Settings read from the environment, checked before any work starts (``ConfigError`` when impossible)."""
    from ..tasks.umap_pool import workers_setting
    workers_setting()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, ``kill``), answered like Ctrl-C: what was kept is said, nothing half-written."""


def _terminate(signum, frame):
    """SIGTERM's handler: raise Terminated where the script will meet it. Python runs a handler between any two
    bytecodes, also inside a garbage-collection callback (jax has one) or a ``__del__``, where an exception is
    printed and dropped and the script would run on; there the signal is sent again a moment later instead."""
    if _dropped_there(frame):
        import signal
        import threading
        again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        again.daemon = True
        again.start()
        return
    raise Terminated()


def _dropped_there(frame) -> bool:
    """Whether an exception raised in this frame would be dropped: it runs inside a gc callback or a __del__."""
    import gc
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


_abandoned = False  # work was left mid-way in other threads: see run_script


def guarded(body: Callable[[], int], on_interrupt: str | Callable[[], str], compilation_cache: bool = True) -> int:
    """Run a script's body: bad input -> one-line error, exit 2; Ctrl-C -> a note on what was kept, exit 130.

    ``on_interrupt``: that note, or a function that writes it from what the work left behind.

    The persistent compilation cache is turned on first (``ae_jax.cache.compilation``) unless
    ``compilation_cache`` is False: a benchmark that times compilation leaves it off. On an NVIDIA GPU,
    XLA's Triton GEMMs are turned off first (``compile_cache.quick_gpu_gemms``: they cost ten times the
    compiling there and saved no training time). SIGTERM is
    answered as Ctrl-C is, with exit status 143. In a run over several
    processes both go to ``distributed.Watch``, which stops every process with
    these lines, and an error met while a peer is being lost waits for the
    watch's one line (``distributed.failed_here``) instead of a traceback.

    Running out of device memory is answered the same way: the trainer's
    ``OutOfMemory`` names the largest run count that fits; any other XLA
    out-of-memory error gets a one-line hint without one. A file the system
    refuses to read or write (a full disk, a folder made read-only) and a
    damaged results file get one line too.
    """
    global _abandoned
    import signal
    import threading

    from ..data import DataError
    from ..io import DamagedFile
    from ..supervisor import STOP_STATUS
    from ..trainer import ConfigError, distributed
    from ..trainer.memory import OutOfMemory, is_out_of_memory
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    # several processes: Ctrl-C and SIGTERM stop every one of them, through the watch (distributed.take_signals)
    watched = main_thread and distributed.take_signals()
    if main_thread and not watched:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        check_environment()
        from ..cache import compilation as compile_cache
        compile_cache.quick_gpu_gemms()  # before the backend starts
        if compilation_cache:
            compile_cache.enable()
        return body()
    except DamagedFile as e:
        _abandoned = True
        fail(str(e))
    except (ConfigError, DataError, OutOfMemory) as e:
        fail(str(e))
    except KeyboardInterrupt as e:
        _abandoned = True
        name = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"\n{name}: {_note(on_interrupt)}", file=sys.stderr)
        return STOP_STATUS[name]
    except MemoryError as e:  # the host's memory (numpy), not the device's
        fail(f"out of host memory ({type(e).__name__}: {e}): fewer or smaller runs, or a smaller dataset or "
             f"--n-train, need less; {_note(on_interrupt)}")
    except OSError as e:  # the file system said no: the path and its reason are the whole story
        if e.filename is None:
            raise
        fail(f"{e.filename}: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into a hint; the rest re-raises
        if watched and not is_out_of_memory(e):  # a lost peer (a failed collective): the watch ends this
            distributed.failed_here(e)  # process with its one line
        if not is_out_of_memory(e):
            raise
        fail(f"out of device memory ({type(e).__name__}); every seed x beta run trains at once, so use fewer "
             f"--seeds or --beta values, or a smaller --batch-size; {_note(on_interrupt)}")
    finally:
        if watched:
            signal.set_wakeup_fd(-1)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _note(on_interrupt: str | Callable[[], str]) -> str:
    return on_interrupt() if callable(on_interrupt) else on_interrupt


def run_script(main: Callable[[], int]) -> None:
    """Run a script's main() and end the process with its status.

    After an interruption or an unreadable checkpoint the interpreter's own teardown is skipped (exit
    handlers still run): XLA's and the checkpoint reader's threads, stopped in the middle of their work,
    can crash it (a segmentation fault instead of exit 130) or print tracebacks after the one-line error.
    """
    try:
        status = main()
    except SystemExit as e:
        status = e.code
    except BrokenPipeError:  # `run.py ... | head`: the reader is gone; stop as a Unix tool stops on SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush of stdout then has nowhere to fail
        print("stopped: the command reading this output closed it (e.g. `| head`); rerun the same command "
              "without it to go on from the last checkpoint, if one was saved", file=sys.stderr)
        status = 128 + 13  # as a process ended by SIGPIPE
    distributed = sys.modules.get("ae_jax.trainer.distributed")
    if distributed is not None and status in (0, 2, None):  # done, or a one-line error (in every process, mostly)
        distributed.finish(status or 0)
    if not _abandoned:
        sys.exit(status)
    import atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status if isinstance(status, int) else 1)


# ----------------------------------------------------------------------------- the study scripts
DATA_DIR_HELP = "folder with the four IDX .gz files (or set AE_JAX_DATA_DIR)"


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=user_path, default=None, metavar="DIR", help=DATA_DIR_HELP)


def study_parser(prog: str, doc: str | None, *, seeds: int = 5, models: list[str] | None = None,
                 models_help: str = "", out_help: str = "results root (default runs/<dataset>; the committed reference results are in results/<dataset>)",
                 force_help: str = "retrain and re-evaluate every run of the study") -> ArgParser:
    """The flags every study script takes: --dataset, --seeds, --epochs, (--models), --data-dir, --out, --force."""
    from ..data import DATASETS
    p = ArgParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--seeds", type=int, default=seeds)
    p.add_argument("--epochs", type=int, default=60)
    if models is not None:
        p.add_argument("--models", type=name_list, default=list(models),
                       help=models_help or f"comma list of registered models (default {','.join(models)})")
    add_data_dir_arg(p)
    p.add_argument("--out", type=out_dir, default=None, help=out_help)
    p.add_argument("--force", action="store_true", help=force_help)
    return p


def check_study_args(args, min_seeds: int = 1, seeds_why: str = "", min_epochs: int = 1, epochs_why: str = "") -> None:
    """One-line errors (exit 2) for the shared flags: dataset, models, seeds and epochs."""
    from ..models import MODELS
    check_dataset(args.dataset)
    if hasattr(args, "models"):
        bad = [m for m in args.models if m not in MODELS]
        if bad or not args.models:
            fail(f"unknown model {bad[0]!r}; choose from {', '.join(MODELS)}" if bad else "--models is empty")
    if args.seeds < min_seeds:
        fail(f"--seeds must be at least {min_seeds}{seeds_why}, got {args.seeds}")
    if args.epochs < min_epochs:
        fail(f"--epochs must be at least {min_epochs}{epochs_why}, got {args.epochs}")


def go_on_hint(force: bool, go_on: str = "resume") -> str:
    """What to type after an interrupt: the same command, less --force (which would start over)."""
    if not force:
        return f"rerun the same command to {go_on}"
    return (f"rerun it without --force to {go_on} (with --force it starts over); the results --force replaces "
            "wait in each run's replaced/ folder until its new run is complete")


def run_study_script(name: str, opts, kept: str = "finished runs and checkpoints are kept") -> int:
    """Run study `name` with opts: bad input and Ctrl-C answered as every script answers them (``guarded``)."""
    from ..studies import STUDIES, run_study

    def body() -> int:
        run_study(STUDIES[name], opts)
        return 0

    return guarded(body, f"{kept}; {go_on_hint(opts.force, 'go on')}")
