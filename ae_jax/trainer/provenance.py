"""Where a run came from and what makes it a different run.

A run's config.json records the request, the command, the package version and source revision, the machine and
time, the libraries and a fingerprint of the data (``config_record``). ``IDENTITY`` lists what makes two runs
different: a folder made with another identity is never reused (``check_same_config``).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import socket
import subprocess
from pathlib import Path

import numpy as np

from .. import __version__
from ..data import Splits
from ..io import read_json
from ..models import ModelSpec
from ..models.hparams import TRACED
from .config import ConfigError, ExperimentConfig, get_model_or_error

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
    """Where a result came from: the command, the package version and source revision, the machine and the time,
    the libraries, the data."""
    d = {"command": command, "version": __version__, "revision": source_revision(), "host": socket.gethostname(),
         "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "libraries": library_versions()}
    if splits is not None:
        d["data"] = {"source": getattr(splits, "source", None), "fingerprint": data_fingerprint(splits)}
    return d


def config_record(cfg: ExperimentConfig, command: str, splits: Splits | None = None,
                  spec: ModelSpec | None = None) -> dict:
    """config.json's content: what was asked for, as trained, and where it came from (spec: cfg's model, when
    the caller has resolved it already)."""
    spec = spec or get_model_or_error(cfg.model)
    d = dataclasses.asdict(cfg)
    d["betas"] = list(cfg.betas) if cfg.betas is not None else None
    d["lr"] = list(cfg.lr) if isinstance(cfg.lr, tuple) else cfg.lr
    d["grid"] = {k: list(v) for k, v in cfg.grid}
    d.update(latent_dim=cfg.latent, variant=cfg.variant, seed_list=cfg.seed_list,
             runs=[run_entry(s, p) for s, p in cfg.point_runs()], width_latent=cfg.width_latent,
             # the model's own hyperparameters (the grid's axes replace theirs): "betas": null alone would leave
             # a reader to look the default up in today's registry
             model_hparams={t.name: t.default_for(spec) for t in TRACED if t.name != "lr"})  # lr is a run flag
    return {**d, **provenance(command, splits)}


def run_entry(seed: int, point: dict) -> dict:
    """One run as config.json and metrics.json list it: its seed, its beta (None: the model's own) and the
    other axes of its grid point (only those given, so a run without them reads as older code wrote it)."""
    return {"seed": seed, "beta": point.get("beta"), **{k: v for k, v in point.items() if k != "beta"}}


# What makes two runs different. A config.json written before a key existed counts as the value that
# code always used (an older run trained with BCE, the protocol's widths, full float32 on a CPU, no snapshots,
# and no grid over a traced hyperparameter other than beta and lr: the model's own values).
IDENTITY = {"model": None, "dataset": None, "anomaly": None, "latent_dim": None, "seeds": None, "first_seed": None,
            "betas": None, "epochs": None, "batch_size": None, "lr": None, "loss": "bce", "width_latent": None,
            "precision": "float32", "snapshots": 0, "grid": {}}


def differences(old: dict, new: dict) -> list[str]:
    """The identity keys (and the data) where two config records differ."""
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
    diff = differences(read_json(path, keys=()), config_record(cfg, "", splits))
    if diff:
        raise ConfigError(f"{run_dir} holds a run that differs in {', '.join(diff)}; "
                          "pass --force to replace it or --out to write elsewhere")


def made_by(run_dir: Path) -> str:
    """'revision 1a2b3c4d on host h, 2026-12-07 16:00 UTC' from a run folder's config.json: who made a run that
    is reused (what a missing or damaged record does not say is named as not recorded)."""
    try:
        record = read_json(Path(run_dir) / "config.json", keys=())
    except (OSError, ValueError):  # DamagedFile is a ValueError
        record = {}
    rev = record.get("revision")
    parts = [f"revision {rev[:12]}" if rev else "an unrecorded revision"]
    parts.append(f"on {record['host']}" if record.get("host") else "(machine not recorded)")
    parts.append(record["created"] if record.get("created") else "(date not recorded)")
    return " ".join(parts[:2]) + ", " + parts[2]

