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
    from .data import DATASETS
    if name not in DATASETS:
        fail(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


def user_path(text: str) -> str:
    """A path flag's value with ``~`` expanded: the shell leaves the ``~`` of ``--out=~/x`` as it is."""
    return os.path.expanduser(text)


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


def check_environment() -> None:
    """Settings read from the environment, checked before any work starts (``ConfigError`` when impossible)."""
    from .umap_pool import workers_setting
    workers_setting()


def guarded(body: Callable[[], int], on_interrupt: str, compilation_cache: bool = True) -> int:
    """Run a script's body: bad input -> one-line error, exit 2; Ctrl-C -> a note on what was kept, exit 130.

    The persistent compilation cache is turned on first (``ae_jax.trainer.compile_cache``) unless
    ``compilation_cache`` is False: a benchmark that times compilation leaves it off.

    Running out of device memory is answered the same way: the trainer's
    ``OutOfMemory`` names the largest run count that fits; any other XLA
    out-of-memory error gets a one-line hint without one.
    """
    from .data import DataError
    from .trainer import ConfigError
    from .trainer.memory import OutOfMemory, is_out_of_memory
    try:
        check_environment()
        if compilation_cache:
            from .trainer import compile_cache
            compile_cache.enable()
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


# ----------------------------------------------------------------------------- the study scripts
DATA_DIR_HELP = "folder with the four IDX .gz files (or set AE_JAX_DATA_DIR)"


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=user_path, default=None, metavar="DIR", help=DATA_DIR_HELP)


def study_parser(prog: str, doc: str | None, *, seeds: int = 5, models: list[str] | None = None,
                 models_help: str = "", out_help: str = "results root (default results/<dataset>)",
                 force_help: str = "retrain and re-evaluate every run of the study") -> ArgParser:
    """The flags every study script takes: --dataset, --seeds, --epochs, (--models), --data-dir, --out, --force."""
    from .data import DATASETS
    p = ArgParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--seeds", type=int, default=seeds)
    p.add_argument("--epochs", type=int, default=60)
    if models is not None:
        p.add_argument("--models", type=name_list, default=list(models),
                       help=models_help or f"comma list of registered models (default {','.join(models)})")
    add_data_dir_arg(p)
    p.add_argument("--out", type=user_path, default=None, help=out_help)
    p.add_argument("--force", action="store_true", help=force_help)
    return p


def check_study_args(args, min_seeds: int = 1, seeds_why: str = "", min_epochs: int = 1, epochs_why: str = "") -> None:
    """One-line errors (exit 2) for the shared flags: dataset, models, seeds and epochs."""
    from .models import MODELS
    check_dataset(args.dataset)
    if hasattr(args, "models"):
        bad = [m for m in args.models if m not in MODELS]
        if bad or not args.models:
            fail(f"unknown model {bad[0]!r}; choose from {', '.join(MODELS)}" if bad else "--models is empty")
    if args.seeds < min_seeds:
        fail(f"--seeds must be at least {min_seeds}{seeds_why}, got {args.seeds}")
    if args.epochs < min_epochs:
        fail(f"--epochs must be at least {min_epochs}{epochs_why}, got {args.epochs}")


def run_study_script(name: str, opts, kept: str = "finished runs and checkpoints are kept") -> int:
    """Run study `name` with opts: bad input and Ctrl-C answered as every script answers them (``guarded``)."""
    from .studies import STUDIES, run_study

    def body() -> int:
        run_study(STUDIES[name], opts)
        return 0

    return guarded(body, f"{kept}; rerun the same command to go on")
