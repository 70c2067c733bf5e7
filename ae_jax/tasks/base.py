"""What a task is, and the context every task of one trained run shares."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from ..data import Data, Splits, test_data
from ..io import read_json
from ..models.losses import Hparams
from ..models import ModelSpec
from ..trainer import ExperimentConfig, TrainConfig, TrainState, evaluate_runs, make_model, run_keys
from ..trainer.program import traced_with_precision


@dataclasses.dataclass
class TaskResult:
    metrics: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> per-seed values [R]
    figures: dict[str, str] = dataclasses.field(default_factory=dict)        # name -> file in the run folder
    info: dict = dataclasses.field(default_factory=dict)                     # settings and numbers shared by all seeds


class Task:
    """One task of the gauntlet. Subclasses set ``name`` and implement ``run``."""
    name = ""
    needs_run = True  # False: a baseline, computed from the data alone
    files: tuple[str, ...] = ()  # arrays the task saves in the run folder for the studies' figures (*.npz)

    def applies(self, spec: ModelSpec) -> bool:
        """Whether the task makes sense for this model (the spec may opt out by name)."""
        return self.name not in spec.skip_tasks

    def run(self, ctx: "EvalContext") -> TaskResult:
        raise NotImplementedError

    def start(self, ctx: "EvalContext", background: bool = False) -> Callable[[], TaskResult]:
        """The task begun now, finished by calling what this returns. `background`: the study goes on in
        between (on an accelerator), so a task with work for other processes may leave it running until then;
        the rest run whole here. What it returns must not hold `ctx` (the run's state and encoded test set);
        its attribute ``waits``, when True, says that work is still running."""
        result = self.run(ctx)
        return lambda: result


@dataclasses.dataclass
class EvalContext:
    """A trained run's seeds, state and data, with the test set encoded once for every task.

    ``state`` has a leading seed axis on every leaf. ``valid`` [R] is False for
    a seed whose training diverged (a non-finite loss at any epoch, or
    non-finite parameters): tasks may skip its work, and ``run_task`` nulls
    its numbers. Figures are drawn from the first valid seed (``fig``).
    """
    spec: ModelSpec | None     # None for a baseline
    cfg: ExperimentConfig
    state: TrainState | None   # None for a baseline
    run_dir: Path
    splits: Callable[[str], Splits]  # variant -> splits ("full", "anomaly", "labelled")
    log: Callable[[str], None] = print
    command: str = ""  # the command line of the study, for what a task records beside its numbers

    @property
    def seeds(self) -> list[int]:
        return self.cfg.seed_list

    @functools.cached_property
    def tcfg(self) -> TrainConfig:
        return self.cfg.train_config()

    @functools.cached_property
    def hps(self) -> list[Hparams]:
        """Each seed's hyperparameters: the run's values where it set them (--beta, --noise-std, ...), else the
        model's own."""
        if self.cfg.grid_size != 1:  # the state holds seeds x grid points runs; tasks key everything by seed
            raise ValueError(f"tasks evaluate one run per seed; {self.run_dir} trained {len(self.cfg.runs())} runs "
                             f"({self.cfg.grid_size} grid points): evaluate each point with its own context "
                             "(ExperimentConfig.at, as sweep.py does)")
        return self.cfg.run_hparams(self.spec)

    @functools.cached_property
    def data(self) -> Splits:
        """The splits of the run's own variant."""
        return self.splits(self.cfg.variant)

    @functools.cached_property
    def test(self) -> dict[str, np.ndarray]:
        """The test set through every seed once: {"bce", "mse", "loss", "h", "z", "signed_error"} [R, N, ...]."""
        return self.evaluate(test_data(self.data))

    def evaluate(self, data: Data) -> dict[str, np.ndarray]:
        return evaluate_runs(self.spec, self.tcfg, self.state, self.seeds, self.hps, data)

    @functools.cached_property
    def valid(self) -> np.ndarray:
        ok = np.ones(len(self.seeds), bool)
        if self.state is None:  # a baseline: no trained model
            return ok
        m = self.run_dir / "metrics.json"
        if m.exists():
            for d in read_json(m, ("diverged",))["diverged"]:
                if d["seed"] in self.seeds:
                    ok[self.seeds.index(d["seed"])] = False
        for leaf in jax.tree.leaves(self.state.params):
            ok &= np.isfinite(np.asarray(leaf)).reshape(len(self.seeds), -1).all(axis=1)
        return ok

    @property
    def fig(self) -> int:
        """Index of the seed the figures show: the first that did not diverge."""
        idx = np.flatnonzero(self.valid)
        return int(idx[0]) if idx.size else 0

    @functools.cached_property
    def one(self) -> TrainState:
        return jax.tree.map(lambda a: a[self.fig], self.state)

    @property
    def fig_key(self) -> jax.Array:
        return run_keys(self.seeds[self.fig])["task"]

    # ------------------------------------------------------- one seed's model (default: the figure seed's)
    def state_of(self, index: int | None = None) -> TrainState:
        """The trained state of seed index `index` (an index into ``seeds``; None: the figure seed)."""
        return self.one if index is None or index == self.fig else jax.tree.map(lambda a: a[index], self.state)

    def _run(self, what: str, *args, index: int | None = None):
        """One of the trained model's calls (``_model_program``), compiled once per model program and shape."""
        st = self.state_of(index)
        return _model_program(self.spec.program, self.tcfg, what)(st.params, st.batch_stats, *args)

    def decode(self, z, cond=None, index: int | None = None) -> np.ndarray:
        """z: [B, n] (labels [B] for a conditional model) -> images [B, 32, 32] in [0, 1], BatchNorm in eval mode."""
        return np.asarray(self._run("decode", z, _cond(self.spec, cond), index=index))

    def encode_h(self, x, cond=None, index: int | None = None) -> jax.Array:
        """x: [B, 32, 32] -> encoder outputs h [B, e] (before the bottleneck)."""
        return self._run("encode", x, _cond(self.spec, cond), index=index)

    def bottleneck(self, h, key, index: int | None = None) -> jax.Array:
        """h -> the code z, as training and evaluation form it (samples for the VAE family)."""
        return self._run("bottleneck", h, key, self.hps[0], index=index)

    def mean_code(self, h, index: int | None = None) -> np.ndarray:
        """h [B, e] -> the code without its noise [B, n] (the VAE's μ; z itself for a plain autoencoder)."""
        return np.asarray(self._run("mean_code", h, index=index))


@functools.lru_cache(maxsize=64)
def _model_program(spec: ModelSpec, tcfg: TrainConfig, what: str):
    """fn(params, batch_stats, *args), jitted: one compiled program per (model program, shapes) instead of one
    dispatch per operation (each its own small program, and a kernel compile each on an accelerator). Keyed
    on ``ModelSpec.program``, so every model of one program shares them (vae, beta_vae_strict, ...)."""
    model = make_model(spec, tcfg)
    params_of = lambda p, b: {"params": p, "batch_stats": b}  # noqa: E731
    if what == "decode":
        def fn(p, b, z, c):
            return jax.nn.sigmoid(model.apply(params_of(p, b), z, c, method=lambda m, z, c: m.decode(z, c, train=False)))
    elif what == "encode":
        def fn(p, b, x, c):
            return model.apply(params_of(p, b), x, c, method=lambda m, x, c: m.encode(x, c, train=False))
    elif what == "bottleneck":
        def fn(p, b, h, key, hp):
            return spec.bottleneck(h, key, hp, p).z
    elif what == "mean_code":
        def fn(p, b, h):
            return spec.bottleneck.mean_code(h, p)
    else:
        raise ValueError(what)
    return traced_with_precision(tcfg, jax.jit(fn))


def _cond(spec: ModelSpec, cond):
    if not spec.conditional:
        return None
    if cond is None:
        raise ValueError(f"{spec.name} is conditional: pass the labels")
    return np.asarray(cond, np.int32)  # a host array: the program takes it without a copy program of its own
