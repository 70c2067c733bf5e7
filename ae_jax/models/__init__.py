"""The models: one registry of specs over shared Flax modules and per-model bottlenecks.

A model is a ``ModelSpec``: its bottleneck (a module of its own in this
package: ``plain``, ``sparse``, ``gaussian``, ``vq``), the few switches that
change how it trains (shallow, stacked, denoising, conditional), its
default hyperparameters, its display label and the original study's published
numbers for it. Nothing else in the package branches on a model's
name: the trainer and the tasks ask the spec and its bottleneck.

Adding a model: write its bottleneck (a subclass of ``bottleneck.Bottleneck``
in a new module here) if none of the existing ones fits, add one
``register(ModelSpec(...))`` line below, and add it to the registry-wide tests
(they are parametrised over ``MODELS``).
"""
from __future__ import annotations

import dataclasses

from .bottleneck import Bottleneck, Code
from .gaussian import Gaussian
from .modules import Autoencoder, D_PIXELS, decoder_units, encoder_units, shrink
from .plain import Identity
from .sparse import Sparse
from .vq import CODEBOOK_SIZE, VQ

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    bottleneck: Bottleneck = dataclasses.field(default_factory=Identity)
    shallow: bool = False           # one layer each way instead of three
    stacked: bool = False           # greedy layer-wise training in three phases
    denoise: bool = False           # corrupt the input while training
    conditional: bool = False       # encoder and decoder also see the one-hot label
    beta: float = 0.0               # weight of the bottleneck term
    noise_std: float = 0.0
    sparsity: float = 0.25
    skip_tasks: tuple[str, ...] = ()  # tasks that would apply by the bottleneck's properties but make no sense here
    description: str = ""
    label: str = ""                 # the name figures and reports show (default: the registry name)
    code_words: str = ""            # what its code is, in words a student reads (the latent explorer shows it)
    # The original study's single-run numbers on PUBLISHED_DATASET (docs/protocol.md), by metric name
    published: dict[str, float] = dataclasses.field(default_factory=dict, hash=False, compare=False)

    @property
    def display(self) -> str:
        """The model's name as figures and reports show it."""
        return self.label or self.name

    @property
    def can_sample(self) -> bool:
        return self.bottleneck.can_sample

    @property
    def program(self) -> "ModelSpec":
        """This model as its compiled programs see it: its name, words and traced hyperparameters' defaults
        cleared. Two models with the same ``program`` are the same function up to traced hyperparameters
        (vae, beta_vae_strict, beta_vae_loose, beta_vae: the Gaussian bottleneck with another beta), so they
        train in one program and share every compiled program of evaluation (the caches key on it)."""
        return dataclasses.replace(self, name="", beta=0.0, noise_std=0.0, sparsity=0.0, skip_tasks=(),
                                   description="", label="", code_words="", published={})

    def module(self, latent_dim: int, width_latent: int | None = None) -> Autoencoder:
        """The Flax module of this model at latent size n."""
        return Autoencoder(latent_dim=latent_dim, encoder_out=self.bottleneck.encoder_factor * latent_dim,
                           shallow=self.shallow, num_classes=NUM_CLASSES if self.conditional else 0,
                           width_latent=width_latent, extra_params=self.bottleneck.extra_params(latent_dim))


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is registered already")
    MODELS[spec.name] = spec
    return spec


PUBLISHED_DATASET = "mnist"  # the only dataset the original study published numbers for


def _published(test_bce: float, probe_accuracy: float) -> dict[str, float]:
    return {"test_bce": test_bce, "probe_accuracy": probe_accuracy}


_gauss = Gaussian()
for _spec in (
    ModelSpec("shallow", shallow=True, description="one ReLU layer each way", published=_published(123.2, 0.4511)),
    ModelSpec("vanilla", description="deep dense autoencoder", label="AE", published=_published(63.92, 0.7835),
              code_words="plain autoencoder: the code is the encoder's output"),
    ModelSpec("stacked", stacked=True, description="greedy layer-wise, 3 phases", published=_published(87.87, 0.6107)),
    ModelSpec("sparse", Sparse(), beta=1.0, sparsity=0.25, description="sigmoid code, Bernoulli KL",
              published=_published(64.27, 0.2221)),
    ModelSpec("denoising", denoise=True, noise_std=0.5, description="Gaussian input noise std 0.5",
              published=_published(75.15, 0.8049)),
    ModelSpec("vae", _gauss, beta=1.0, description="beta = 1", label="VAE", published=_published(76.12, 0.6016),
              code_words="variational autoencoder: the code is the encoder's mean \u03bc, pulled towards N(0, 1)"),
    ModelSpec("beta_vae_strict", _gauss, beta=2.0, description="beta = 2", label="\u03b2-VAE (\u03b2 = 2)",
              published=_published(86.12, 0.4536), code_words="\u03b2-VAE with \u03b2 = 2: the code is the mean \u03bc"),
    ModelSpec("beta_vae_loose", _gauss, beta=0.5, description="beta = 0.5", label="\u03b2-VAE (\u03b2 = 0.5)",
              published=_published(69.51, 0.6311), code_words="\u03b2-VAE with \u03b2 = 0.5: the code is the mean \u03bc"),
    ModelSpec("vq", VQ(CODEBOOK_SIZE), beta=1.0, description="per-dimension scalar codebook of 512",
              published=_published(64.49, 0.7717)),
    ModelSpec("beta_vae", _gauss, beta=1.0, description="VAE with any --beta"),
    ModelSpec("cvae", _gauss, beta=1.0, conditional=True, label="CVAE",
              description="conditional VAE: encoder sees (x, onehot y), decoder (z, onehot y)"),
):
    register(_spec)

# The nine models of the bake-off (beta_vae is the same model with a free beta).
CONTESTANTS = ("shallow", "vanilla", "stacked", "sparse", "denoising", "vae",
               "beta_vae_strict", "beta_vae_loose", "vq")


def label(name: str) -> str:
    """A model's display label; a name that is not registered shows as itself."""
    return MODELS[name].display if name in MODELS else name


def code_words(name: str, default: str = "") -> str:
    """What a model's code is, in words (``ModelSpec.code_words``); default for a model without them."""
    return (MODELS[name].code_words if name in MODELS else "") or default


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


__all__ = ["Autoencoder", "Bottleneck", "CODEBOOK_SIZE", "CONTESTANTS", "Code", "D_PIXELS", "MODELS", "ModelSpec",
           "NUM_CLASSES", "PUBLISHED_DATASET", "decoder_units", "encoder_units", "get_model", "label", "register",
           "shrink"]
