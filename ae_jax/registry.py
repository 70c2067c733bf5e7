"""The contestants: one registry, each model a few fields, not a training loop.

A model is its encoder/decoder choice, its bottleneck and its default
hyperparameters. To add your own autoencoder, register a ``ModelSpec`` (and, if
it needs a new bottleneck, add a pure function to ``losses.BOTTLENECKS``).
"""
from __future__ import annotations

import dataclasses

VQ_CODEBOOK_SIZE = 512


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    bottleneck: str = "identity"    # key of losses.BOTTLENECKS
    encoder_factor: int = 1         # encoder output = factor * latent (2 for [mu, log sigma])
    shallow: bool = False           # one layer each way instead of three
    codebook_size: int = 0          # vq codebook entries per latent dimension
    stacked: bool = False           # greedy layer-wise training in three phases
    denoise: bool = False           # corrupt the input while training
    beta: float = 0.0               # weight of the bottleneck term
    noise_std: float = 0.0
    sparsity: float = 0.25
    has_prior: bool = False         # can be sampled from (VAE family, vq)
    description: str = ""

    @property
    def is_vae(self) -> bool:
        return self.bottleneck == "gaussian"


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("shallow", shallow=True, description="one ReLU layer each way"),
    ModelSpec("vanilla", description="deep dense autoencoder"),
    ModelSpec("stacked", stacked=True, description="greedy layer-wise, 3 phases"),
    ModelSpec("sparse", bottleneck="sparse", beta=1.0, sparsity=0.25, description="sigmoid code, Bernoulli KL"),
    ModelSpec("denoising", denoise=True, noise_std=0.5, description="Gaussian input noise std 0.5"),
    ModelSpec("vae", bottleneck="gaussian", encoder_factor=2, beta=1.0, has_prior=True, description="beta = 1"),
    ModelSpec("beta_vae_strict", bottleneck="gaussian", encoder_factor=2, beta=2.0, has_prior=True,
              description="beta = 2"),
    ModelSpec("beta_vae_loose", bottleneck="gaussian", encoder_factor=2, beta=0.5, has_prior=True,
              description="beta = 0.5"),
    ModelSpec("vq", bottleneck="vq", codebook_size=VQ_CODEBOOK_SIZE, beta=1.0, has_prior=True,
              description="per-dimension scalar codebook of 512"),
    ModelSpec("beta_vae", bottleneck="gaussian", encoder_factor=2, beta=1.0, has_prior=True,
              description="VAE with any --beta"),
):
    register(_spec)

# The nine models of the bake-off (beta_vae is the same model with a free beta).
CONTESTANTS = ("shallow", "vanilla", "stacked", "sparse", "denoising", "vae",
               "beta_vae_strict", "beta_vae_loose", "vq")


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
