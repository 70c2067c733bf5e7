"""One experiment = one model, one dataset variant, several seeds (x betas).

Layout of a run directory (default ``results/<dataset>/<name>``)::

    config.json      what was asked for, and the command
    curves.jsonl     one line per epoch: per-run train and validation loss, seconds
    metrics.json     per metric: per-run values, mean, std (written last: it marks the run done)
    checkpoints/     orbax checkpoints of the batched train state (not committed)

Re-running the same command resumes from the last checkpoint; a finished run is
reported, not retrained, unless ``force``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from .data import Splits, load_splits
from .io import aggregate, atomic_write_text, clean_json, fmt_mean_std, read_json, write_json
from .registry import get_model
from .runner import TrainOutput, evaluate_runs, train_runs
from .train import TrainConfig, spec_hparams

DEFAULT_EPOCHS = 60
DEFAULT_LATENT = {"full": 20, "anomaly": 2}


class ConfigError(Exception):
    """A request that cannot be run as asked; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: str
    dataset: str = "mnist"
    anomaly: bool = False
    latent_dim: int | None = None
    seeds: int = 5
    first_seed: int = 0
    betas: tuple[float, ...] | None = None  # None = the model's own
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 256
    lr: float = 1e-3

    @property
    def variant(self) -> str:
        return "anomaly" if self.anomaly else "full"

    @property
    def latent(self) -> int:
        return self.latent_dim if self.latent_dim is not None else DEFAULT_LATENT[self.variant]

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def runs(self) -> list[tuple[int, float | None]]:
        """(seed, beta) for every run: the seeds x betas grid, seed-major within each beta."""
        betas = self.betas if self.betas is not None else (None,)
        return [(s, b) for b in betas for s in self.seed_list]

    def name(self) -> str:
        """Directory name: the model plus whatever differs from the protocol."""
        parts = [self.model]
        if self.betas is not None:
            parts.append("beta" + ",".join(f"{b:g}" for b in self.betas))
        if self.latent != DEFAULT_LATENT[self.variant]:
            parts.append(f"n{self.latent}")
        if self.epochs != DEFAULT_EPOCHS:
            parts.append(f"e{self.epochs}")
        if self.batch_size != 256:
            parts.append(f"bs{self.batch_size}")
        if self.lr != 1e-3:
            parts.append(f"lr{self.lr:g}")
        if self.anomaly:
            parts.append("anomaly")
        return "_".join(parts)

    def validate(self) -> None:
        spec = get_model_or_error(self.model)
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if spec.stacked and self.epochs < 3:
            raise ConfigError("the stacked model trains in 3 phases: use --epochs of at least 3")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not 1 <= self.latent * spec.encoder_factor <= 1024:
            raise ConfigError(f"--latent-dim must be between 1 and {1024 // spec.encoder_factor} for {self.model}, "
                              f"got {self.latent}")
        if self.betas is not None:
            if not self.betas:
                raise ConfigError("--beta needs at least one value")
            if spec.bottleneck == "identity":
                raise ConfigError(f"model {self.model} has no bottleneck term for --beta to weigh; "
                                  "use it with vae, beta_vae, sparse or vq")
            bad = [b for b in self.betas if not (np.isfinite(b) and b >= 0)]
            if bad:
                raise ConfigError(f"--beta must be a finite number >= 0, got {bad[0]:g}")


def get_model_or_error(name: str):
    try:
        return get_model(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold ``folder/.lock`` while writing into a run or study folder.

    A second process asking for the same folder gets a ConfigError naming the
    holder. A lock left by a process that no longer runs (killed, machine
    restarted) on this host is taken over.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    host = socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder_host, holder_pid = lock.read_text().split()
                holder = int(holder_pid)
            except FileNotFoundError:  # released meanwhile
                continue
            except ValueError:  # being written by its holder this instant
                time.sleep(0.1)
                continue
            if holder_host == host and holder != os.getpid() and not _pid_alive(holder):
                lock.unlink(missing_ok=True)  # left by a process that is gone
                continue
            raise ConfigError(f"{folder} is in use by process {holder} on {holder_host}; wait for it to finish, "
                              f"or delete {lock} if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{host} {os.getpid()}\n")
        break
    else:
        raise ConfigError(f"could not lock {folder}; delete {lock} if no other process is using it")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def run_dir_for(cfg: ExperimentConfig, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("results") / cfg.dataset / cfg.name()


def _config_record(cfg: ExperimentConfig, command: str) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(cfg.betas) if cfg.betas is not None else None
    d.update(latent_dim=cfg.latent, variant=cfg.variant, seed_list=cfg.seed_list,
             runs=[{"seed": s, "beta": b} for s, b in cfg.runs()], command=command)
    return d


_COMPARED = ("model", "dataset", "anomaly", "latent_dim", "seeds", "first_seed", "betas", "epochs",
             "batch_size", "lr")


def _same_config(a: dict, b: dict) -> list[str]:
    return [k for k in _COMPARED if a.get(k) != b.get(k)]


def check_same_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse a run folder whose config.json asked for something else than cfg (no-op without one)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    diff = _same_config(read_json(path), _config_record(cfg, ""))
    if diff:
        raise ConfigError(f"{run_dir} holds a run with a different {', '.join(diff)}; "
                          "pass --force to replace it or --out to write elsewhere")


def result_metrics(cfg: ExperimentConfig, out: TrainOutput, test_bce: np.ndarray) -> dict:
    """metrics.json content: per run group (one per beta), each metric's values, mean and std."""
    runs = cfg.runs()
    E = cfg.epochs
    per_run = {  # copies: the NaN-masking below must not write into the curves
        "final_train_loss": out.train_curve[E - 1].copy(),
        "final_val_loss": out.val_curve[E - 1].copy(),
        "test_bce": np.array(test_bce, dtype=np.float64),
    }
    for r in out.diverged:  # a diverged run is not averaged in, even if its last loss is finite again
        for v in per_run.values():
            v[r] = np.nan
    train_time = float(out.epoch_time.sum())
    samples = len(runs) * out.samples_per_epoch * E
    groups = []
    betas = cfg.betas if cfg.betas is not None else (None,)
    for b in betas:
        idx = [i for i, (_, rb) in enumerate(runs) if rb == b]
        g = {"beta": b, "seeds": [runs[i][0] for i in idx],
             "metrics": {k: aggregate(v[idx]) for k, v in per_run.items()}}
        g["metrics"]["train_time_s"] = aggregate([train_time] * len(idx))
        groups.append(g)
    return {
        "model": cfg.model, "dataset": cfg.dataset, "variant": cfg.variant, "latent_dim": cfg.latent,
        "runs": [{"seed": s, "beta": b} for s, b in runs],
        "diverged": [{"run": r, "seed": runs[r][0], "beta": runs[r][1], "epoch": e} for r, e in out.diverged.items()],
        "groups": groups,
        "metrics": groups[0]["metrics"] if len(groups) == 1 else None,
        "timing": {"train_time_s": train_time, "compile_time_s": out.compile_time_s,
                   "train_time_per_seed_s": train_time / len(runs),
                   "seed_samples_per_s": samples / train_time if train_time > 0 else None,
                   "note": "all runs train together in one compiled program, so they share one wall-clock"},
        "device": describe_device(),
    }


def describe_device() -> str:
    d = jax.devices()
    kind = d[0].device_kind if d[0].platform != "cpu" else (platform.processor() or platform.machine())
    return f"{len(d)} x {d[0].platform} ({kind})"


def format_table(metrics: dict) -> str:
    """metric | mean ± std | per-seed values, one block per beta."""
    lines = []
    for g in metrics["groups"]:
        head = f"{metrics['model']} on {metrics['dataset']} ({metrics['variant']}, n = {metrics['latent_dim']})"
        if g["beta"] is not None:
            head += f", beta = {g['beta']:g}"
        lines.append(head + f", seeds {g['seeds']}")
        rows = [("metric", "mean ± std", "per-seed values")]
        for k, m in g["metrics"].items():
            vals = ", ".join("nan" if v is None or not np.isfinite(v) else f"{v:.4g}" for v in m["values"])
            rows.append((k, fmt_mean_std(m), vals))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        for i, r in enumerate(rows):
            lines.append(" | ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                lines.append("-+-".join("-" * x for x in w))
        lines.append("")
    t = metrics["timing"]
    lines.append(f"train {t['train_time_s']:.1f} s for all runs together (+ {t['compile_time_s']:.1f} s compile), "
                 f"{t['seed_samples_per_s'] or 0:,.0f} seed-samples/s on {metrics['device']}")
    for d in metrics["diverged"]:
        lines.append(f"WARNING: seed {d['seed']}" + (f" (beta {d['beta']:g})" if d["beta"] is not None else "")
                     + f" diverged at epoch {d['epoch']}: excluded from mean and std")
    return "\n".join(lines)


def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, data_dir: str | None = None,
                   force: bool = False, command: str | None = None, log: Callable[[str], None] = print,
                   splits: Splits | None = None, reuse_complete: bool = True) -> tuple[dict, Path]:
    """Train (or resume, or reuse) one experiment; return (metrics, run dir).

    ``reuse_complete=False`` trains again (resuming any checkpoint) even when
    metrics.json exists, replacing it only when the new one is written; unlike
    ``force`` it deletes nothing first. Raises ConfigError / data.DataError
    before anything is written.
    """
    cfg.validate()
    spec = get_model(cfg.model)
    run_dir = run_dir_for(cfg, out)
    command = command or "python " + " ".join(sys.argv)
    record = _config_record(cfg, command)
    if (run_dir / "config.json").exists() and not force:
        check_same_config(run_dir, cfg)
        if (run_dir / "metrics.json").exists() and reuse_complete:
            log(f"{run_dir} is already complete (--force retrains)")
            return read_json(run_dir / "metrics.json"), run_dir
    if splits is None:
        splits = load_splits(cfg.dataset, cfg.variant, data_dir)
    if splits.x_train.shape[0] < cfg.batch_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {splits.x_train.shape[0]} training images")
    with folder_lock(run_dir):
        if force and run_dir.exists():
            for p in ("metrics.json", "curves.jsonl", "config.json", "tasks.json"):  # tasks.json: of the old models
                (run_dir / p).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        write_json(run_dir / "config.json", record)

        runs = cfg.runs()
        hps = [spec_hparams(spec, b, cfg.lr) for _, b in runs]
        seeds = [s for s, _ in runs]
        tcfg = TrainConfig(latent_dim=cfg.latent, epochs=cfg.epochs, batch_size=cfg.batch_size)
        log(f"training {cfg.model} on {cfg.dataset} ({cfg.variant}: {splits.x_train.shape[0]} train / "
            f"{splits.x_val.shape[0]} val images), n = {cfg.latent}, {len(runs)} run(s) "
            f"{'(seeds x betas) ' if cfg.betas and len(cfg.betas) > 1 else ''}for {cfg.epochs} epochs -> {run_dir}")
        t0 = time.perf_counter()
        load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        labels = [f"seed {s}" + (f" (beta {b:g})" if b is not None else "") for s, b in runs]
        result = train_runs(spec, tcfg, seeds, hps, splits.x_train, splits.x_val, ckpt_dir=run_dir / "checkpoints",
                            log=log, run_labels=labels)
        test = evaluate_runs(spec, tcfg, result.state, seeds, hps, splits.x_test)
        metrics = result_metrics(cfg, result, test["bce"].mean(axis=1))
        metrics["timing"]["session_wall_s"] = time.perf_counter() - t0
        metrics["timing"]["load_average_at_start"] = load_at_start  # > core count: timings were contended
        curves = "".join(json.dumps(clean_json({"epoch": e + 1, "train_loss": result.train_curve[e],
                                                "val_loss": result.val_curve[e], "seconds": result.epoch_time[e]}))
                         + "\n" for e in range(cfg.epochs))  # non-finite losses become null
        atomic_write_text(run_dir / "curves.jsonl", curves)
        write_json(run_dir / "metrics.json", metrics)
        return metrics, run_dir
