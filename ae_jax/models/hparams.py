"""The traced hyperparameters: one declarative table, from which everything else is derived.

A traced hyperparameter changes no shape: it is an argument of the compiled
program (``Hparams``, one float per run), so every value of a grid over it
trains in the same program as the seeds. Each row of ``TRACED`` says

- ``name``: the field of ``Hparams`` the losses read (``hp.<name>``);
- ``flag``: the command-line flag of ``run.py`` and ``sweep.py`` (a number or a comma list);
- ``tag``: how a run folder's name spells a grid over it (``beta0.5,1``);
- ``default``: the per-model default, a function of the model's spec (or one number for every model);
- ``applies``: which models it changes (a flag for a model it does not apply to is refused);
- ``help``: the flag's help text;
- ``valid`` / ``valid_text``: which values it takes (the refusal of any other names them).

Adding one is one line here plus its use in a loss (``hp.<name>``): the
``Hparams`` tuple, the flags, the config's grid, the folder names, the
identity and metrics.json's grid blocks all follow this table.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Union

import jax

Default = Union[float, Callable[[Any], float]]


@dataclasses.dataclass(frozen=True)
class Traced:
    name: str
    flag: str
    tag: str
    default: Default
    applies: Callable[[Any], bool]
    help: str
    valid: Callable[[float], bool] = lambda v: v >= 0
    valid_text: str = ">= 0"

    def default_for(self, spec) -> float:
        """This hyperparameter's value for a model that does not set it otherwise."""
        return float(self.default(spec) if callable(self.default) else self.default)


LR_DEFAULT = 1e-3

TRACED: tuple[Traced, ...] = (
    Traced("beta", "--beta", "beta", lambda s: s.beta, lambda s: s.bottleneck.has_beta,
           "weight of the bottleneck term (the Gaussian's KL, the sparse penalty, vq's commitment term); "
           "default: the model's own"),
    Traced("noise_std", "--noise-std", "noise", lambda s: s.noise_std, lambda s: s.denoise,
           "std of the Gaussian input noise of a denoising model; default: the model's own (0.5)"),
    Traced("sparsity", "--sparsity", "sparsity", lambda s: s.sparsity,
           lambda s: getattr(s.bottleneck, "name", "") == "sparse",
           "target mean activation p of the sparse model's code units; default: the model's own (0.25)",
           lambda v: 0 < v < 1, "between 0 and 1 (both excluded)"),
    Traced("lr", "--lr", "lr", LR_DEFAULT, lambda s: True, f"Adam learning rate (default {LR_DEFAULT:g})",
           lambda v: v > 0, "> 0"),
)
BY_NAME: dict[str, Traced] = {t.name: t for t in TRACED}

# One float per run for every row of the table, in its order (a NamedTuple, so a pytree jax can trace).
Hparams = NamedTuple("Hparams", [(t.name, jax.Array) for t in TRACED])
Hparams.__doc__ = "Hyperparameters that change no shape (the rows of ``hparams.TRACED``): traced, so a sweep is a vmap."


def get(name: str) -> Traced:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown hyperparameter {name!r}; traced ones: {', '.join(BY_NAME)}") from None


def applies_to(spec) -> list[str]:
    """The traced hyperparameters that change this model's training."""
    return [t.name for t in TRACED if t.applies(spec)]
