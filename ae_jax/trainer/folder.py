"""A run folder's life: its lock, what an interrupted run leaves, and everything written into it.

With several processes, process 0 alone reads and writes the folder: ``RunFolder``'s methods marked
``writer_only`` run there, and every other process gets process 0's answer (or its exception), so all of them
go on, or stop, together.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import Data, Splits
from ..io import METRICS_KEYS, atomic_write_text, clean_json, read_json, write_json, write_npz
from . import distributed
from .config import ConfigError, ExperimentConfig
from .loop import CKPT_EVERY, TrainOutput
from .provenance import check_same_config, made_by

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
        release_lock(folder, remove_empty=created)  # a folder made for nothing is not left behind


def release_lock(folder: Path, remove_empty: bool) -> None:
    """Drop ``folder/.lock``; with remove_empty, remove the folder too when nothing is in it."""
    (folder / LOCK_NAME).unlink(missing_ok=True)
    if remove_empty and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


SNAPSHOTS_FILE = "snapshots.npz"
# What a run writes and ``force`` replaces ("tasks.json": the single task file of older code). The figures
# the tasks draw beside them are overwritten when the tasks run again.
RESULTS = ("metrics.json", "curves.jsonl", "config.json", "tasks.json", SNAPSHOTS_FILE, "checkpoints", "tasks")
REPLACED_DIR = "replaced"
REUSED = "reused_from"  # a reused run's metrics carry who made it (never written to a file)


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


def writer_only(method):
    """The method runs on process 0 alone, which owns the run folder; every process returns its result."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return distributed.on_writer(functools.partial(method, self, *args, **kwargs))
    return call


class RunFolder:
    """One run's folder as the trainer uses it: every read and write of it, on process 0 (``writer_only``)."""

    def __init__(self, path: Path, cfg: ExperimentConfig, log: Callable[[str], None]):
        self.path, self.cfg, self.log = Path(path), cfg, log

    @writer_only
    def finished(self, force: bool, reuse_complete: bool, splits: Splits | None) -> dict | None:
        """The metrics of a complete run to report instead of training, or None; refuses another run's folder."""
        run_dir = self.path
        if (run_dir / "config.json").exists() and not force:
            check_same_config(run_dir, self.cfg, splits)
            if (run_dir / "metrics.json").exists() and reuse_complete:
                metrics = read_json(run_dir / "metrics.json", METRICS_KEYS)  # a damaged file stops here, first
                origin = made_by(run_dir)
                self.log(f"{run_dir} is already complete: reusing the run made by {origin} (--force retrains it)")
                metrics[REUSED] = origin  # in memory only: what the caller says instead of "written to"
                return metrics
        return None

    @writer_only
    def check(self, splits: Splits) -> None:
        """Refuse a folder that holds another run (what ``force`` would replace)."""
        check_same_config(self.path, self.cfg, splits)

    def lock(self):
        """The folder's lock, held by process 0 while the run trains."""
        return distributed.writer_context(functools.partial(folder_lock, self.path))

    @writer_only
    def start(self, record: dict, force: bool) -> None:
        """Set aside what ``force`` replaces and write config.json (under the folder lock)."""
        if force and self.path.exists():
            _set_aside(self.path, self.log)
        write_json(self.path / "config.json", record)

    def forget_unstarted(self) -> None:
        """After a failure, on process 0 (not collective: the other processes may be gone): a folder with nothing
        to resume must not refuse the next command."""
        if distributed.is_writer():
            _forget_unstarted(self.path)

    def abandon(self) -> None:
        """What ``forget_unstarted`` and the lock's release do on the way out, for a process that ends without
        unwinding (``distributed.Watch`` ends it from another thread when a peer is lost)."""
        if distributed.is_writer():
            _forget_unstarted(self.path)
            release_lock(self.path, remove_empty=True)

    @writer_only
    def write_results(self, metrics: dict, result: TrainOutput, snap: Data | None, seeds: list[int],
                      runs: list) -> dict:
        """curves.jsonl, snapshots.npz and, last (it marks the run done), metrics.json; returns the metrics."""
        run_dir, epochs = self.path, self.cfg.epochs
        curves = "".join(json.dumps(clean_json({"epoch": e + 1, "train_loss": result.train_curve[e],
                                                "val_loss": result.val_curve[e], "seconds": result.epoch_time[e]}))
                         + "\n" for e in range(epochs))  # non-finite losses become null
        atomic_write_text(run_dir / "curves.jsonl", curves)
        if result.snapshots is not None:
            others = {k: np.asarray([p[k] for _, p in runs]) for k in self.cfg.axes() if k != "beta"}
            write_npz(run_dir / SNAPSHOTS_FILE, h=result.snapshots, labels=snap.y, epochs=np.arange(1, epochs + 1),
                      seeds=np.asarray(seeds), betas=np.asarray([p.get("beta", np.nan) for _, p in runs]), **others)
        write_json(run_dir / "metrics.json", metrics)
        shutil.rmtree(run_dir / REPLACED_DIR, ignore_errors=True)  # what a ``force`` run set aside: now replaced
        return metrics
