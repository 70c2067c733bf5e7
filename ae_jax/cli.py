"""Command-line helpers shared by the scripts in experiments/ and benchmarks/."""
from __future__ import annotations

import argparse
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
    from .data import DATASETS
    if name not in DATASETS:
        fail(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


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
    from .trainer import distributed
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except distributed.DistributedError as e:
        fail(str(e))
    return True


def guarded(body: Callable[[], int], on_interrupt: str) -> int:
    """Run a script's body: bad input -> one-line error, exit 2; Ctrl-C -> a note on what was kept, exit 130.

    Running out of device memory is answered the same way: the trainer's
    ``OutOfMemory`` names the largest run count that fits; any other XLA
    out-of-memory error gets a one-line hint without one.
    """
    from .data import DataError
    from .trainer import ConfigError
    from .trainer.memory import OutOfMemory, is_out_of_memory
    try:
        return body()
    except (ConfigError, DataError, OutOfMemory) as e:
        fail(str(e))
    except KeyboardInterrupt:
        print(f"\ninterrupted: {on_interrupt}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into a hint; the rest re-raises
        if not is_out_of_memory(e):
            raise
        fail(f"out of device memory ({type(e).__name__}); every seed x beta run trains at once, so use fewer "
             f"--seeds or --beta values, or a smaller --batch-size; {on_interrupt}")
