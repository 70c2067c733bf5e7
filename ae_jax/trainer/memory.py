"""How many runs fit on a device: XLA's own memory figures for a compiled program, and the out-of-memory hint.

Every run of a call (seeds x betas) trains in one compiled program, so the
program's memory grows with the run count. XLA reports, for any compiled
program and on every backend, the bytes of its arguments, outputs and
temporaries (``Compiled.memory_analysis()``); outputs that reuse a donated
argument's buffer (the train state) are counted once. Compiling the same
program for two run counts from abstract shapes (no device memory is touched)
splits that into a part every run adds and a part shared by all (the data),
and the device's limit (``memory_stats()["bytes_limit"]`` on GPU and TPU, the
machine's RAM on a CPU) then says how many runs fit:

    largest count = devices x floor((limit - shared) / per_run)

(the run axis is padded to a multiple of the device count and split evenly,
so each device holds the same number of runs and its own copy of the data).

When training or evaluation fails with XLA's out-of-memory error,
``hint_out_of_memory`` turns the error into ``OutOfMemory``, a one-line
message that names that count; the scripts print it and exit with status 2.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from typing import Callable, Sequence

import numpy as np

MIB = 2 ** 20
GIB = 2 ** 30


class OutOfMemory(Exception):
    """XLA ran out of device memory; the message names the largest run count that fits, where it is known."""


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """XLA's memory analysis of one compiled program, in bytes (per device for a sharded program)."""
    argument: int
    output: int
    alias: int   # outputs that reuse a (donated) argument's buffer: counted once
    temp: int

    @property
    def total(self) -> int:
        """What the program holds at once at most: its arguments, its new outputs and its temporaries."""
        return self.argument + self.output - self.alias + self.temp


def program_memory(compiled) -> ProgramMemory | None:
    """XLA's memory analysis of a ``jax.stages.Compiled``, or None where the backend gives none."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - best effort across backends and jax versions
        return None
    if isinstance(ma, (list, tuple)):
        ma = ma[0] if ma else None
    if ma is None:
        return None
    return ProgramMemory(int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes),
                         int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes))


def device_memory_limit(device) -> int | None:
    """Bytes one device can hold: its allocator's ``bytes_limit`` (GPU, TPU), else the machine's RAM (CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if getattr(device, "platform", None) == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return None


def device_peak_bytes(device) -> int | None:
    """The device allocator's peak bytes in use so far in this process (GPU, TPU), else None."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def fit_per_run(runs: Sequence[int], total_bytes: Sequence[float]) -> tuple[float, float]:
    """(shared bytes, bytes per run): the least-squares line through (runs, bytes), two counts at least.

    A line that would give a run no cost (the counts too close to tell)
    falls back to charging everything to the runs of the largest count.
    """
    r = np.asarray(runs, np.float64)
    b = np.asarray(total_bytes, np.float64)
    if r.size < 2 or np.ptp(r) == 0:
        raise ValueError("fit_per_run needs at least two different run counts")
    per_run, shared = np.polyfit(r, b, 1)
    if not per_run > 1e-9 * np.abs(b).max():  # flat (up to rounding) or falling
        i = int(np.argmax(r))
        return 0.0, float(b[i] / r[i])
    return float(max(shared, 0.0)), float(per_run)


def largest_run_count(shared: float, per_run: float, limit: float, devices: int = 1) -> int:
    """The most runs whose program fits: per device floor((limit - shared) / per_run), times the devices."""
    if not per_run > 0:
        raise ValueError(f"per_run must be positive, got {per_run}")
    return max(0, math.floor((limit - shared) / per_run)) * max(1, devices)


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def out_of_memory_message(what: str, n_runs: int, devices: int, shared: float | None, per_run: float | None,
                          limit: int | None, before: bool = False) -> str:
    """The one line an out-of-memory error becomes: the measured cost per run and the largest count that fits.

    ``before``: the count was refused before it started (``refuse_what_cannot_fit``), not after a failure.
    """
    head = (f"{what} {n_runs} run(s) (seeds x betas, all in one program) cannot fit in device memory" if before
            else f"out of device memory {what} {n_runs} run(s) (seeds x betas, all in one program)")
    advice = "use fewer --seeds or --beta values (or a smaller --batch-size)"
    if per_run is None or limit is None:
        return f"{head}; XLA gave no memory figures to size it by, so {advice}"
    fit = largest_run_count(shared, per_run, limit, devices)
    dev = f"{devices} devices of {_size(limit)}" if devices > 1 else f"a device of {_size(limit)}"
    cost = (f"each run needs about {_size(per_run)} plus {_size(shared)} shared per device "
            "(XLA's memory analysis of the compiled program)")
    if fit == 0:
        return (f"{head}: {cost}, so not even one run fits {dev}; use a smaller --batch-size, or a device "
                "with more memory")
    if fit >= n_runs:
        return (f"{head}: {cost}, so up to {fit} runs would fit {dev}, but other buffers hold the rest "
                f"(another process, or data kept on the device); free them, or use fewer than {n_runs} runs "
                "(--seeds x the number of --beta values)")
    return (f"{head}: {cost}, so at most {fit} runs fit {dev}; use --seeds and fewer --beta values so that "
            f"seeds x betas <= {fit} (or a smaller --batch-size)")


def is_out_of_memory(e: BaseException) -> bool:
    """An allocation failure from XLA (any backend) rather than a bug."""
    if isinstance(e, (MemoryError, OutOfMemory)):
        return True
    import jax
    return isinstance(e, jax.errors.JaxRuntimeError) and ("RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e))


def runs_per_device(n_runs: int, devices: int) -> int:
    """How many runs each device holds once the run axis is padded to a multiple of the device count."""
    return -(-n_runs // max(1, devices))


CHECK_ABOVE_RUNS = 64  # runs per device above which a count is sized before it starts


def refuse_what_cannot_fit(what: str, measure: Callable[[int], ProgramMemory | None], n_runs: int,
                           devices: int) -> None:
    """``OutOfMemory`` before any work when XLA's figures say n_runs cannot fit on the devices.

    Only a large count (over ``CHECK_ABOVE_RUNS`` per device) is sized: measuring compiles the program twice
    from abstract shapes (``measure(r)`` for 1 and 2 runs), seconds that a small count does not need, while a
    huge one would otherwise spend minutes setting up before the device refuses it. The line through two small
    counts slightly underestimates the cost per run, so a count near the limit is let through and, if it fails,
    answered by ``hint_out_of_memory``.
    """
    if runs_per_device(n_runs, devices) <= CHECK_ABOVE_RUNS:
        return
    try:
        import jax
        limit = device_memory_limit(jax.devices()[0])
        totals = [measure(r) for r in (1, 2)]
        if limit is None or any(t is None for t in totals):
            return
        shared, per_run = fit_per_run((1, 2), [t.total for t in totals])
    except Exception:  # noqa: BLE001 - sizing is best effort; the run itself will say if it does not fit
        return
    if largest_run_count(shared, per_run, limit, devices) < n_runs:
        raise OutOfMemory(out_of_memory_message(what, n_runs, devices, shared, per_run, limit, before=True))


def hint_out_of_memory(what: str, measure: Callable[[dict, int], ProgramMemory | None],
                       n_runs: Callable[[dict], int], devices: Callable[[int], int]):
    """Decorator: XLA's out-of-memory error inside the function becomes ``OutOfMemory`` naming a run count.

    ``measure(arguments, r)`` compiles the function's program for r runs on one
    device from abstract shapes and returns its memory; ``n_runs(arguments)``
    is the call's run count and ``devices(n_runs)`` how many devices it spreads
    over. The program is measured at one run and at the failing call's runs per
    device (two if that is one), and the line through them gives the cost per
    run; if measuring fails too, the message says so without a count.
    """
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is translated; the rest re-raises
                if isinstance(e, OutOfMemory) or not is_out_of_memory(e):
                    raise
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                R = n_runs(arguments)
                d = devices(R)
                shared = per_run = limit = None
                try:
                    import jax
                    per_dev = runs_per_device(R, d)
                    counts = (1, max(2, per_dev))
                    totals = [measure(arguments, r) for r in counts]
                    if all(t is not None for t in totals):
                        shared, per_run = fit_per_run(counts, [t.total for t in totals])
                    limit = device_memory_limit(jax.devices()[0])
                except Exception:  # noqa: BLE001 - the hint is best effort; the error itself must get out
                    pass
                raise OutOfMemory(out_of_memory_message(what, R, d, shared, per_run, limit)) from e
        return wrapped
    return decorate
