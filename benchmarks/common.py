"""What the benchmark scripts share: list flags, the recorded environment, one timed training, the JSON write.

Imported by benchmarks/throughput.py, run_count.py and umap_workers.py (Python puts a script's own folder on
sys.path; ae_jax is the installed package).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from typing import Sequence


def _number_list(text: str, kind, what: str) -> list:
    """argparse type: a non-empty comma list of `kind` (int or float)."""
    try:
        vals = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"expected a comma list of {what}, got {text!r}")
    return vals


def int_list(text: str) -> list[int]:
    """argparse type: a comma list of integers."""
    return _number_list(text, int, "integers")


def float_list(text: str) -> list[float]:
    """argparse type: a comma list of numbers."""
    return _number_list(text, float, "numbers")


def command_text(argv=None) -> str:
    """The command line as run: 'python benchmarks/<script> <args>'."""
    args = argv if argv is not None else sys.argv[1:]
    return "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + list(args))


def cpu_description() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(command: str, started: datetime.datetime) -> dict:
    """Where and how the figures were taken: date, command, devices, CPU, versions, load."""
    import jax
    return {
        "date_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def busy(env: dict) -> bool:
    """Whether another job was running at the start (1-minute load above half the cores)."""
    la = env.get("load_average_at_start")
    return bool(la) and la[0] > 0.5 * (env.get("cpu_count") or 1)


def write_json(path: str, result: dict) -> None:
    """Atomically: a reader (or an interruption) never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def train_timed(model: str, latent: int, batch: int, epochs: int, seeds: Sequence[int], hparams: Sequence,
                train, val, verbose: bool = False) -> dict:
    """Train the runs (seed i with hparams i) in one program with ae_jax's trainer; its own timings, as a dict.

    epoch_time_s are the trainer's per-epoch wall-clocks (each waits for the
    epoch's losses); compilation is timed apart (compile_time_s).
    """
    import numpy as np
    from ae_jax.models import get_model
    from ae_jax.trainer import TrainConfig, train_runs

    spec = get_model(model)
    cfg = TrainConfig(latent_dim=latent, epochs=epochs, batch_size=batch)
    out = train_runs(spec, cfg, list(seeds), list(hparams), train, val,
                     log=(lambda s: print(s, flush=True)) if verbose else (lambda s: None))
    return {
        "epoch_time_s": [float(t) for t in out.epoch_time],
        "compile_time_s": float(out.compile_time_s),
        "samples_per_epoch_per_seed": int(out.samples_per_epoch),
        "final_train_loss_mean": float(np.nanmean(out.train_curve[-1])),
        "final_val_loss_mean": float(np.nanmean(out.val_curve[-1])),
        "diverged_runs": len(out.diverged),
        "devices": out.device,
    }
