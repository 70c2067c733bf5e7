"""What one experiment is: a model, a dataset variant, seeds (x betas) and the settings that change a number.

``ExperimentConfig`` names its run folder (the model plus whatever differs from the protocol) and refuses a
request that cannot run as asked with a ``ConfigError`` whose message says what to do.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..io import RUNS_ROOT
from ..models import MODELS, ModelSpec, get_model
from ..models.losses import RECON_LOSSES
from .program import PRECISIONS, TrainConfig

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

    def validate(self) -> ModelSpec:
        """Raise ConfigError for a request that cannot run as asked; return the model's registry entry."""
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
        return spec


def get_model_or_error(name: str):
    try:
        return get_model(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


def run_dir_for(cfg: ExperimentConfig, out: str | Path | None) -> Path:
    """The run folder: ``out`` when given, else ``runs/<dataset>/<name>`` (a user's runs, git-ignored)."""
    return Path(out) if out is not None else RUNS_ROOT / cfg.dataset / cfg.name()
