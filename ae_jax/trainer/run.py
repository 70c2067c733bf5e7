"""One experiment = one model, one dataset variant, several seeds (x betas), in one run folder.

Layout of a run directory (default ``results/<dataset>/<name>``)::

    config.json      what was asked for, the command, the package version and source revision, the data
    curves.jsonl     one line per epoch: per-run train and validation loss, seconds
    metrics.json     per metric: per-run values, mean, std (written last: it marks the run done)
    snapshots.npz    only with ``snapshots`` > 0: "h" [E, R, K, e], the encoder outputs of the first K test
                     images after every epoch; "labels" [K], "epochs" [E], "seeds" and "betas" [R] of the runs
    tasks/<task>.json  each task's per-seed numbers (written by the studies, one file per task)
    checkpoints/     orbax checkpoints of the batched train state (not committed)
    replaced/        only while a ``force`` run is unfinished: the results it replaces (restored if it stops
                     before its first checkpoint, removed once its metrics.json is written)

Everything that changes a number is part of a run's identity (``IDENTITY``):
the folder name says where it differs from the protocol, and a folder made
with another identity is never reused.

Re-running the same command resumes from the last checkpoint; a finished run is
reported, not retrained, unless ``force``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..data import Data, Splits, load_splits, test_data, train_data, val_data
from ..io import METRICS_KEYS, aggregate, atomic_write_text, clean_json, fmt_mean_std, read_json, write_json, write_npz
from ..losses import RECON_LOSSES, Hparams
from ..models import MODELS, NUM_CLASSES, get_model
from . import compile_cache, distributed
from .loop import CKPT_EVERY, TrainOutput, evaluate_runs, train_runs
from .program import PRECISIONS, TrainConfig, spec_hparams

DEFAULT_EPOCHS = 60
DEFAULT_LATENT = {"full": 20, "anomaly": 2}
WIDTHS = ("protocol", "fixed")  # "fixed": the hidden widths of n = FIXED_WIDTH_LATENT at every n
FIXED_WIDTH_LATENT = 20


MAX_SEED = 2 ** 31 - 1  # the largest seed: seeds are stored and compared as 32-bit integers
MAX_EPOCHS = 1_000_000


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
    loss: str = "bce"           # reconstruction loss trained with: bce (the protocol's) or mse
    widths: str = "protocol"    # hidden widths: the protocol's for n, or "fixed" at the n = 20 widths
    precision: str = "float32"  # matmul precision: full float32 everywhere, or "fast" (the platform's default)
    snapshots: int = 0          # > 0: keep the encoder outputs of the first this-many test images after every epoch

    @property
    def variant(self) -> str:
        return "anomaly" if self.anomaly else "full"

    @property
    def latent(self) -> int:
        return self.latent_dim if self.latent_dim is not None else DEFAULT_LATENT[self.variant]

    @property
    def width_latent(self) -> int | None:
        """The latent size the hidden widths are computed from, where it is not n itself."""
        if self.widths == "fixed" and self.latent != FIXED_WIDTH_LATENT:
            return FIXED_WIDTH_LATENT
        return None

    def train_config(self) -> TrainConfig:
        return TrainConfig(latent_dim=self.latent, epochs=self.epochs, batch_size=self.batch_size, loss=self.loss,
                           width_latent=self.width_latent, precision=self.precision, snapshots=self.snapshots)

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
        if self.loss != "bce":
            parts.append(self.loss)
        if self.width_latent is not None:
            parts.append(f"w{self.width_latent}")
        if self.precision != "float32":
            parts.append(self.precision)
        if self.snapshots > 0:
            parts.append(f"snap{self.snapshots}")
        if self.anomaly:
            parts.append("anomaly")
        return "_".join(parts)

    def validate(self) -> None:
        spec = get_model_or_error(self.model)
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if not 0 <= self.first_seed <= MAX_SEED + 1 - self.seeds:
            raise ConfigError(f"--seed must be between 0 and {max(0, MAX_SEED + 1 - self.seeds)} with {self.seeds} "
                              f"seed(s): seeds are 32-bit numbers, the last at most {MAX_SEED}; got {self.first_seed}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"--epochs must be between 1 and {MAX_EPOCHS:,} (the curves and checkpoints keep "
                              f"every epoch's numbers), got {self.epochs}")
        if spec.stacked and self.epochs < 3:
            raise ConfigError("the stacked model trains in 3 phases: use --epochs of at least 3")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a finite number > 0, got {self.lr}")
        f = spec.bottleneck.encoder_factor
        if not 1 <= self.latent * f <= 1024:
            raise ConfigError(f"--latent-dim must be between 1 and {1024 // f} for {self.model}, got {self.latent}")
        if self.loss not in RECON_LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(RECON_LOSSES)}, got {self.loss!r}")
        if self.widths not in WIDTHS:
            raise ConfigError(f"--widths must be one of {', '.join(WIDTHS)}, got {self.widths!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.snapshots < 0:
            raise ConfigError(f"snapshots must be 0 (none) or a number of test images, got {self.snapshots}")
        if self.betas is not None:
            if not self.betas:
                raise ConfigError("--beta needs at least one value")
            if not spec.bottleneck.has_beta:
                weighed = [name for name, s in MODELS.items() if s.bottleneck.has_beta]
                raise ConfigError(f"model {self.model} has no bottleneck term for --beta to weigh; "
                                  f"use it with one of {', '.join(weighed)}")
            bad = [b for b in self.betas if not (np.isfinite(b) and b >= 0)]
            if bad:
                raise ConfigError(f"--beta must be a finite number >= 0, got {bad[0]:g}")
            twice = [b for i, b in enumerate(self.betas) if b in self.betas[:i]]
            if twice:  # the same model twice would pass as two groups (or its seeds as n = 2 with std 0)
                raise ConfigError(f"--beta lists {twice[0]:g} more than once; give each value once")


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
    restarted) on this host is taken over. A folder the lock created, and
    nothing was written into, is removed again on release.
    """
    folder = Path(folder)
    created = not folder.exists()
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
        if created and not any(folder.iterdir()):  # a folder made for nothing is not left behind
            folder.rmdir()


SNAPSHOTS_FILE = "snapshots.npz"
# What a run writes and ``force`` replaces ("tasks.json": the single task file of older code). The figures
# the tasks draw beside them are overwritten when the tasks run again.
RESULTS = ("metrics.json", "curves.jsonl", "config.json", "tasks.json", SNAPSHOTS_FILE, "checkpoints", "tasks")
REPLACED_DIR = "replaced"


def snapshot_data(splits: Splits, k: int) -> Data:
    """The images whose codes a run with snapshots keeps: the first min(k, test size) test images."""
    return Data(splits.x_test[:k], splits.y_test[:k])


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run folder holds a saved epoch to resume from."""
    ckpt = Path(run_dir) / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def interrupted_note(run_dir: Path, go_on: str) -> str:
    """What an interrupted run left in its folder (once ``run_experiment`` has tidied it), for the line the
    script prints; ``go_on`` is how to carry on from a checkpoint."""
    if (run_dir / "metrics.json").exists():  # never touched, or put back: --force saved no epoch of its own
        return f"the complete results in {run_dir} are as they were"
    if has_checkpoint(run_dir):
        return f"completed epochs are kept in the last checkpoint; {go_on}"
    return (f"no epoch was saved yet (a checkpoint comes every {CKPT_EVERY} epochs), so nothing was kept; rerun "
            "the same command to start again")


def _forget_unstarted(run_dir: Path) -> None:
    """Remove config.json (and an empty checkpoints folder) when no epoch was saved and no result exists;
    results a ``force`` run set aside go back where they were."""
    ckpt = run_dir / "checkpoints"
    if (run_dir / "metrics.json").exists() or has_checkpoint(run_dir):
        return
    shutil.rmtree(ckpt, ignore_errors=True)
    (run_dir / "config.json").unlink(missing_ok=True)
    aside = run_dir / REPLACED_DIR
    if aside.is_dir():
        for p in aside.iterdir():
            p.rename(run_dir / p.name)
        aside.rmdir()


def _abandoned(run_dir: Path) -> None:
    """What ``_forget_unstarted`` and ``folder_lock`` do on the way out, for a process that ends without
    unwinding (``distributed.Watch`` ends it from another thread when a peer is lost)."""
    if distributed.is_writer():
        _forget_unstarted(run_dir)
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def run_dir_for(cfg: ExperimentConfig, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("results") / cfg.dataset / cfg.name()


def source_revision() -> str | None:
    """The git commit of the package's source ("+dirty" when its code has uncommitted changes), if known."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ae_jax", "experiments"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty else "")


def data_fingerprint(splits: Splits) -> str:
    """A short hash of the exact arrays a run trains, validates and tests on (same images, same order)."""
    h = hashlib.sha256()
    for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test, splits.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries that compute a result (those installed), by distribution name."""
    from importlib import metadata
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance(command: str, splits: Splits | None = None) -> dict:
    """Where a result came from: the command, the package version and source revision, the libraries, the data."""
    d = {"command": command, "version": __version__, "revision": source_revision(), "libraries": library_versions()}
    if splits is not None:
        d["data"] = {"source": getattr(splits, "source", None), "fingerprint": data_fingerprint(splits)}
    return d


def _config_record(cfg: ExperimentConfig, command: str, splits: Splits | None = None) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(cfg.betas) if cfg.betas is not None else None
    spec = get_model(cfg.model)
    d.update(latent_dim=cfg.latent, variant=cfg.variant, seed_list=cfg.seed_list,
             runs=[{"seed": s, "beta": b} for s, b in cfg.runs()], width_latent=cfg.width_latent,
             # the model's own hyperparameters as trained (a --beta list replaces its beta): "betas": null alone
             # would leave a reader to look the default up in today's registry
             model_hparams={k: getattr(spec, k) for k in Hparams._fields if k != "lr"})  # lr is a run flag
    return {**d, **provenance(command, splits)}


# What makes two runs different. A config.json written before a key existed counts as the value that
# code always used (an older run trained with BCE, the protocol's widths, full float32 on a CPU, no snapshots).
IDENTITY = {"model": None, "dataset": None, "anomaly": None, "latent_dim": None, "seeds": None, "first_seed": None,
            "betas": None, "epochs": None, "batch_size": None, "lr": None, "loss": "bce", "width_latent": None,
            "precision": "float32", "snapshots": 0}


def _differences(old: dict, new: dict) -> list[str]:
    diff = [k for k, default in IDENTITY.items() if old.get(k, default) != new.get(k, default)]
    a, b = (old.get("data") or {}).get("fingerprint"), (new.get("data") or {}).get("fingerprint")
    if a and b and a != b:  # unknown for runs recorded before fingerprints: those are trusted
        diff.append("data (same dataset name, other images or order)")
    return diff


def check_same_config(run_dir: Path, cfg: ExperimentConfig, splits: Splits | None = None) -> None:
    """Refuse a run folder whose config.json asked for something else than cfg (no-op without one)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    diff = _differences(read_json(path, keys=()), _config_record(cfg, "", splits))
    if diff:
        raise ConfigError(f"{run_dir} holds a run with a different {', '.join(diff)}; "
                          "pass --force to replace it or --out to write elsewhere")


def per_class(values: np.ndarray, labels: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """{"<name>_class<d>": [R]}: the mean of values [R, N] over the images of each class d."""
    return {f"{name}_class{d}": values[:, labels == d].mean(axis=1) for d in range(NUM_CLASSES)
            if np.any(labels == d)}


def result_metrics(cfg: ExperimentConfig, out: TrainOutput, test: dict[str, np.ndarray], y_test: np.ndarray) -> dict:
    """metrics.json content: per run group (one per beta), each metric's values, mean and std.

    ``test`` holds per-run, per-image "bce" and "mse" [R, N]; both are
    reported overall and per class, whatever the model trained with.
    """
    runs = cfg.runs()
    E = cfg.epochs
    per_run = {  # copies: the NaN-masking below must not write into the curves
        "final_train_loss": out.train_curve[E - 1].copy(),
        "final_val_loss": out.val_curve[E - 1].copy(),
        "test_bce": np.asarray(test["bce"], np.float64).mean(axis=1),
        "test_mse": np.asarray(test["mse"], np.float64).mean(axis=1),
    }
    for k in ("bce", "mse"):
        per_run.update(per_class(np.asarray(test[k], np.float64), y_test, f"test_{k}"))
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
                   "note": "all runs train together in one compiled program, so they share one wall-clock",
                   # with a persistent cache, a program compiled before is loaded and compile_time_s is the load's
                   "compilation_cache": compile_cache.in_use() is not None},
        "device": out.device,
    }


def device_text(device: dict | str) -> str:
    """'8 x tpu (TPU v2)' from a metrics.json device record (older runs stored the text)."""
    if isinstance(device, str):
        return device
    return f"{device['count']} x {device['platform']} ({device['kind']})"


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
                 f"{t['seed_samples_per_s'] or 0:,.0f} seed-samples/s on {device_text(metrics['device'])}")
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

    With several processes (``jax.distributed``) every process calls this with
    the same arguments and trains its share of the runs; process 0 alone reads
    and writes the run folder (``distributed.on_writer``), and every process
    returns the same metrics once the folder is complete.
    """
    cfg.validate()
    spec = get_model(cfg.model)
    run_dir = run_dir_for(cfg, out)
    command = command or "python " + " ".join(sys.argv)
    log = distributed.writer_log(log)
    finished = distributed.on_writer(lambda: _finished(run_dir, cfg, force, reuse_complete, splits, log))
    if finished is not None:
        return finished, run_dir
    if splits is None:
        splits = distributed.everywhere(lambda: load_splits(cfg.dataset, cfg.variant, data_dir))
    if not force:
        distributed.on_writer(lambda: check_same_config(run_dir, cfg, splits))
    record = _config_record(cfg, command, splits)
    if splits.x_train.shape[0] < cfg.batch_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {splits.x_train.shape[0]} training images")
    with distributed.writer_context(lambda: folder_lock(run_dir)):
        distributed.on_writer(lambda: _start(run_dir, record, force, log))

        runs = cfg.runs()
        hps = [spec_hparams(spec, b, cfg.lr) for _, b in runs]
        seeds = [s for s, _ in runs]
        tcfg = cfg.train_config()
        own_beta = f", beta = {spec.beta:g} (the model's own)" if cfg.betas is None and spec.bottleneck.has_beta else ""
        log(f"training {cfg.model} on {cfg.dataset} ({cfg.variant}: {splits.x_train.shape[0]} train / "
            f"{splits.x_val.shape[0]} val images), n = {cfg.latent}{own_beta}, {len(runs)} run(s) "
            f"{'(seeds x betas) ' if cfg.betas and len(cfg.betas) > 1 else ''}for {cfg.epochs} epochs -> {run_dir}")
        t0 = time.perf_counter()
        load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        labels = [f"seed {s}" + (f" (beta {b:g})" if b is not None else "") for s, b in runs]
        snap = snapshot_data(splits, cfg.snapshots) if cfg.snapshots > 0 else None
        try:
            with distributed.if_abandoned(lambda: _abandoned(run_dir)):  # a lost process ends the run mid-way
                result = train_runs(spec, tcfg, seeds, hps, train_data(splits), val_data(splits),
                                    ckpt_dir=run_dir / "checkpoints", log=log, run_labels=labels, snap=snap)
        except BaseException:  # out of memory, Ctrl-C before the first checkpoint, ...: a folder with nothing to
            if distributed.is_writer():  # resume must not refuse the next command (fewer runs, other settings)
                _forget_unstarted(run_dir)
            raise
        test = evaluate_runs(spec, tcfg, result.state, seeds, hps, test_data(splits))
        metrics = result_metrics(cfg, result, test, splits.y_test)
        metrics["timing"]["session_wall_s"] = time.perf_counter() - t0
        metrics["timing"]["load_average_at_start"] = load_at_start  # > core count: timings were contended
        metrics["timing"]["cpu_count"] = os.cpu_count()  # the cores that load was shared by (reports redraw elsewhere)
        # process 0's record (its timings) is the run's; the others return the same
        metrics = distributed.on_writer(lambda: _write_results(run_dir, cfg, metrics, result, snap, seeds, runs))
        return metrics, run_dir


def _finished(run_dir: Path, cfg: ExperimentConfig, force: bool, reuse_complete: bool, splits: Splits | None,
              log: Callable[[str], None]) -> dict | None:
    """The metrics of a complete run to report instead of training, or None; refuses another run's folder."""
    if (run_dir / "config.json").exists() and not force:
        check_same_config(run_dir, cfg, splits)
        if (run_dir / "metrics.json").exists() and reuse_complete:
            log(f"{run_dir} is already complete (--force retrains)")
            return read_json(run_dir / "metrics.json", METRICS_KEYS)
    return None


def _start(run_dir: Path, record: dict, force: bool, log: Callable[[str], None]) -> None:
    """Set aside what ``force`` replaces and write config.json (under the folder lock)."""
    if force and run_dir.exists():
        _set_aside(run_dir, log)
    write_json(run_dir / "config.json", record)


def _set_aside(run_dir: Path, log: Callable[[str], None]) -> None:
    """Move the folder's results into replaced/, where they wait until the new run is complete.

    Deleting them first would lose a finished run to a retraining that is
    interrupted. A replaced/ left by an earlier ``force`` run that did not
    finish holds the last complete results: it stays, and what that run left
    beside it is what this one replaces.
    """
    aside = run_dir / REPLACED_DIR
    present = [run_dir / name for name in RESULTS if (run_dir / name).exists()]
    if aside.is_dir() and not (run_dir / "metrics.json").exists():
        for p in present:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        return
    shutil.rmtree(aside, ignore_errors=True)  # older than the complete run beside it
    if present:
        aside.mkdir()
        for p in present:
            p.rename(aside / p.name)
        log(f"the results this run replaces wait in {aside} until it is complete")


def _write_results(run_dir: Path, cfg: ExperimentConfig, metrics: dict, result: TrainOutput, snap: Data | None,
                   seeds: list[int], runs: list) -> dict:
    """curves.jsonl, snapshots.npz and, last (it marks the run done), metrics.json; returns the metrics."""
    curves = "".join(json.dumps(clean_json({"epoch": e + 1, "train_loss": result.train_curve[e],
                                            "val_loss": result.val_curve[e], "seconds": result.epoch_time[e]}))
                     + "\n" for e in range(cfg.epochs))  # non-finite losses become null
    atomic_write_text(run_dir / "curves.jsonl", curves)
    if result.snapshots is not None:
        write_npz(run_dir / SNAPSHOTS_FILE, h=result.snapshots, labels=snap.y, epochs=np.arange(1, cfg.epochs + 1),
                  seeds=np.asarray(seeds), betas=np.asarray([np.nan if b is None else b for _, b in runs]))
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / REPLACED_DIR, ignore_errors=True)  # what a ``force`` run set aside: now replaced
    return metrics
