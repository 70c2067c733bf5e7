"""What one experiment is: a model, a dataset variant, seeds (x a grid of traced hyperparameters) and the settings
that change a number.

The grid: every traced hyperparameter (``models.hparams.TRACED``: beta, noise std, sparsity, learning rate) takes
one value or a list; the runs are seeds x the product of the lists, all in one compiled program. ``betas`` and
``lr`` are the fields older callers set; ``grid`` holds the others ({name: values}), and a ``grid`` entry for
beta or lr is moved into those fields, so each value has one spelling.

``ExperimentConfig`` names its run folder (the model plus whatever differs from the protocol) and refuses a
request that cannot run as asked with a ``ConfigError`` whose message says what to do.
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Mapping

import numpy as np

from ..io import RUNS_ROOT
from ..models import MODELS, ModelSpec, get_model
from ..models.losses import RECON_LOSSES
from ..models.hparams import BY_NAME, LR_DEFAULT, TRACED
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
    lr: float | tuple[float, ...] = LR_DEFAULT  # one value, or a grid axis
    loss: str = "bce"           # reconstruction loss trained with: bce (the protocol's) or mse
    widths: str = "protocol"    # hidden widths: the protocol's for n, or "fixed" at the n = 20 widths
    precision: str = "float32"  # matmul precision: full float32 everywhere, or "fast" (the platform's default)
    snapshots: int = 0          # > 0: keep the encoder outputs of the first this-many test images after every epoch
    # the other traced hyperparameters given explicitly: ((name, values), ...) in TRACED's order (a dict is accepted)
    grid: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def __post_init__(self):
        grid = dict(self.grid.items() if isinstance(self.grid, Mapping) else self.grid)
        grid = {k: tuple(float(v) for v in (vs if isinstance(vs, (list, tuple)) else (vs,))) for k, vs in grid.items()}
        if "beta" in grid:
            object.__setattr__(self, "betas", grid.pop("beta"))
        if "lr" in grid:
            object.__setattr__(self, "lr", grid.pop("lr"))
        if self.betas is not None and not isinstance(self.betas, tuple):
            object.__setattr__(self, "betas", tuple(self.betas))
        if isinstance(self.lr, (list, tuple)):  # one value is the scalar it always was (same folder, same identity)
            object.__setattr__(self, "lr", float(self.lr[0]) if len(self.lr) == 1 else tuple(float(v) for v in self.lr))
        order = {t.name: i for i, t in enumerate(TRACED)}
        object.__setattr__(self, "grid", tuple(sorted(grid.items(), key=lambda kv: order.get(kv[0], len(order)))))

    def axes(self) -> dict[str, tuple[float, ...]]:
        """The traced hyperparameters given explicitly, {name: values} in TRACED's order (a single value is an axis
        of one); the others take the model's defaults."""
        given = dict(self.grid)
        if self.betas is not None:
            given["beta"] = self.betas
        if isinstance(self.lr, tuple):
            given["lr"] = self.lr
        return {t.name: given[t.name] for t in TRACED if t.name in given} | \
            {k: v for k, v in given.items() if k not in BY_NAME}

    def points(self) -> list[dict[str, float]]:
        """Every grid point, {name: value} of the explicit axes, the first axis slowest ([{}] without a grid)."""
        ax = self.axes()
        return [dict(zip(ax, combo)) for combo in itertools.product(*ax.values())]

    def point_runs(self) -> list[tuple[int, dict[str, float]]]:
        """(seed, grid point) for every run: seed-major within each point."""
        return [(s, p) for p in self.points() for s in self.seed_list]

    def run_hparams(self, spec: ModelSpec) -> list:
        """Each run's traced hyperparameters (``Hparams``), in ``point_runs`` order."""
        from .program import spec_hparams
        lr = None if isinstance(self.lr, tuple) else self.lr
        return [spec_hparams(spec, **{"lr": lr, **p}) for _, p in self.point_runs()]

    @property
    def grid_size(self) -> int:
        return len(self.points())

    def at(self, point: Mapping[str, float]) -> "ExperimentConfig":
        """The configuration of one grid point alone (its seeds, one value per axis of the grid)."""
        return dataclasses.replace(self, betas=None, lr=LR_DEFAULT if isinstance(self.lr, tuple) else self.lr,
                                   grid={**{k: (v,) for k, v in self.axes().items()},
                                         **{k: (v,) for k, v in point.items()}})

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
        """(seed, beta) for every run (beta None: the model's own), in ``point_runs`` order."""
        return [(s, p.get("beta")) for s, p in self.point_runs()]

    def name(self) -> str:
        """Directory name: the model plus whatever differs from the protocol."""
        parts = [self.model]
        if self.betas is not None:
            parts.append("beta" + ",".join(f"{b:g}" for b in self.betas))
        for name, values in self.grid:
            parts.append((BY_NAME[name].tag if name in BY_NAME else name) + ",".join(f"{v:g}" for v in values))
        if self.latent != DEFAULT_LATENT[self.variant]:
            parts.append(f"n{self.latent}")
        if self.epochs != DEFAULT_EPOCHS:
            parts.append(f"e{self.epochs}")
        if self.batch_size != 256:
            parts.append(f"bs{self.batch_size}")
        if isinstance(self.lr, tuple):
            parts.append("lr" + ",".join(f"{v:g}" for v in self.lr))
        elif self.lr != LR_DEFAULT:
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
        axes = self.axes()
        for name, values in ({"lr": (self.lr,)} | axes if "lr" not in axes else axes).items():
            check_axis(spec, name, values)
        return spec


def check_axis(spec: ModelSpec, name: str, values) -> None:
    """Refuse a grid axis that is unknown, does not apply to the model, or holds an impossible or repeated value."""
    if name not in BY_NAME:
        raise ConfigError(f"{name!r} is not a traced hyperparameter; use one of {', '.join(BY_NAME)}")
    t = BY_NAME[name]
    if not values:
        raise ConfigError(f"{t.flag} needs at least one value")
    if not t.applies(spec):
        users = [m for m, s in MODELS.items() if t.applies(s)]
        raise ConfigError(f"{t.flag} does not apply to model {spec.name} (its training has no {name}); "
                          f"use it with one of {', '.join(users)}")
    bad = [v for v in values if not (np.isfinite(v) and t.valid(v))]
    if bad:
        raise ConfigError(f"{t.flag} must be a finite number {t.valid_text}, got {bad[0]:g}")
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:  # the same setting twice would pass as two groups (or its seeds as n = 2 with std 0)
        raise ConfigError(f"{t.flag} lists {twice[0]:g} more than once; give each value once")


def get_model_or_error(name: str):
    try:
        return get_model(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None


def run_dir_for(cfg: ExperimentConfig, out: str | Path | None) -> Path:
    """The run folder: ``out`` when given, else ``runs/<dataset>/<name>`` (a user's runs, git-ignored)."""
    return Path(out) if out is not None else RUNS_ROOT / cfg.dataset / cfg.name()
