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
