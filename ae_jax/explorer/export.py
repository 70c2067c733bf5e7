"""Export trained autoencoders as plain dense layers with BatchNorm folded in.

The deep encoder and decoder are three layers each: layers 0 and 1 are
Linear(no bias) -> BatchNorm -> ReLU, layer 2 is Linear + bias (the decoder
then applies a sigmoid). In evaluation mode BatchNorm is an affine map with the
running statistics,

    BN(y) = (y - mean) * s + bias,   s = scale / sqrt(var + eps),  eps = 1e-5,

so with y = x @ W it folds into one affine layer

    x @ W' + b',   W' = W * s (each column j times s_j),   b' = bias - mean * s.

An exported model is its encoder and decoder as lists of ``Layer`` (weight
[in, out], bias [out], activation). The code shown for an input is the
encoder's output for plain models and its first n values (mu) for the VAE
family, whose encoder outputs [mu, log_sigma].
"""
from __future__ import annotations

import base64
import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np

BN_EPS = 1e-5
D_PIXELS = 1024


@dataclasses.dataclass(frozen=True)
class Layer:
    """y = act(x @ weight + bias); weight [in, out] float32, bias [out] float32."""
    weight: np.ndarray
    bias: np.ndarray
    activation: str  # "relu", "none" or "sigmoid"


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """One seed of one model: folded encoder and decoder, and how to read the code."""
    name: str
    latent_dim: int
    gaussian: bool                 # encoder outputs [mu, log_sigma]; the code is mu
    encoder: tuple[Layer, ...]
    decoder: tuple[Layer, ...]


class ExportError(ValueError):
    """A model the explorer cannot show (its message says which ones it can)."""


def explorable_reason(spec) -> str | None:
    """None if the explorer can show this registry model, else "<name> (why not)".

    It shows the deep dense models whose code is the encoder output (identity
    bottleneck: vanilla, stacked, denoising) or its mean (Gaussian bottleneck:
    vae and the beta-VAEs).
    """
    if spec.shallow:
        return f"{spec.name} (its encoder and decoder are single layers)"
    if spec.conditional:
        return f"{spec.name} (it also reads a label, which the page has no control for)"
    if spec.bottleneck.name == "vq":
        return f"{spec.name} (its code is quantised by a codebook)"
    if spec.bottleneck.name not in ("identity", "gaussian"):
        return f"{spec.name} (its code goes through a {spec.bottleneck.name} bottleneck)"
    return None


def fold_bn(kernel, scale, bias, mean, var, eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Fold BN(x @ kernel) into (W' [in, out], b' [out]) in float64, returned as float32."""
    kernel, scale, bias, mean, var = (np.asarray(a, np.float64) for a in (kernel, scale, bias, mean, var))
    s = scale / np.sqrt(var + eps)
    return (kernel * s[None, :]).astype(np.float32), (bias - mean * s).astype(np.float32)


def fold_stack(params: dict, batch_stats: dict, final_activation: str) -> tuple[Layer, ...]:
    """The three layers of one DenseStack (one seed, no leading axis) as folded ``Layer``s."""
    layers = []
    for i in range(2):
        bn, st = params[f"bn{i}"], batch_stats[f"bn{i}"]
        w, b = fold_bn(params[f"dense{i}"]["kernel"], bn["scale"], bn["bias"], st["mean"], st["var"])
        layers.append(Layer(w, b, "relu"))
    last = params["dense2"]
    layers.append(Layer(np.asarray(last["kernel"], np.float32), np.asarray(last["bias"], np.float32),
                        final_activation))
    return tuple(layers)


def seed_slice(tree: Any, i: int) -> Any:
    """Run i of a batched tree (every leaf has a leading seed axis), as numpy."""
    return jax.tree.map(lambda a: np.asarray(a[i]), tree)


def export_seed(name: str, params: Any, batch_stats: Any, latent_dim: int, gaussian: bool) -> ExportedModel:
    """Fold one seed's (unbatched) params and batch_stats into an ``ExportedModel``."""
    for part in ("enc", "dec"):
        if part not in params or "dense2" not in params[part] or "bias" not in params[part]["dense2"]:
            raise ExportError(f"{name}: expected a deep encoder and decoder with params['{part}']['dense0..2']")
    enc = fold_stack(params["enc"], batch_stats["enc"], "none")
    dec = fold_stack(params["dec"], batch_stats["dec"], "sigmoid")
    e_out = enc[-1].weight.shape[1]
    if e_out != (2 if gaussian else 1) * latent_dim or dec[0].weight.shape[0] != latent_dim:
        raise ExportError(f"{name}: encoder output {e_out} and decoder input {dec[0].weight.shape[0]} "
                          f"do not fit latent size {latent_dim}")
    return ExportedModel(name, latent_dim, gaussian, enc, dec)


def export_state(name: str, state: Any, latent_dim: int, gaussian: bool) -> list[ExportedModel]:
    """Every seed of a batched TrainState (anything with .params and .batch_stats)."""
    n_runs = jax.tree.leaves(state.params)[0].shape[0]
    return [export_seed(name, seed_slice(state.params, i), seed_slice(state.batch_stats, i), latent_dim, gaussian)
            for i in range(n_runs)]


# ----------------------------------------------------------------------------- numpy forward
def _act(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    return y


def forward(layers: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """x [B, in] -> [B, out] through the folded layers (float32)."""
    y = np.asarray(x, np.float32)
    for layer in layers:
        y = _act(y @ layer.weight + layer.bias[None, :], layer.activation).astype(np.float32)
    return y


def np_encode(model: ExportedModel, x: np.ndarray) -> np.ndarray:
    """Images [B, 32, 32] or [B, 1024] in [0, 1] -> codes [B, n] (mu for the VAE family)."""
    x = np.asarray(x, np.float32).reshape(len(x), D_PIXELS)
    return forward(model.encoder, x)[:, : model.latent_dim]


def np_decode(model: ExportedModel, z: np.ndarray) -> np.ndarray:
    """Codes [B, n] -> images [B, 1024] in [0, 1] (the decoder's sigmoid)."""
    return forward(model.decoder, np.asarray(z, np.float32).reshape(-1, model.latent_dim))


# ----------------------------------------------------------------------------- JAX reference
def jax_apply(params: Any, batch_stats: Any, latent_dim: int, gaussian: bool):
    """(encode, decode) of one seed run by the Flax module in evaluation mode, as numpy functions.

    encode: images [B, 32, 32] -> codes [B, n] (mu for the VAE family);
    decode: codes [B, n] -> sigmoid(logits) [B, 1024].
    """
    import jax.numpy as jnp

    from ..models import Autoencoder
    module = Autoencoder(latent_dim=latent_dim, encoder_out=(2 if gaussian else 1) * latent_dim)
    variables = {"params": params, "batch_stats": batch_stats}

    def encode(x):
        x = jnp.asarray(np.asarray(x, np.float32).reshape(-1, 32, 32))
        h = module.apply(variables, x, train=False, method=Autoencoder.encode)
        return np.asarray(h[:, :latent_dim])

    def decode(z):
        z = jnp.asarray(np.asarray(z, np.float32).reshape(-1, latent_dim))
        logits = module.apply(variables, z, train=False, method=Autoencoder.decode)
        return np.asarray(jax.nn.sigmoid(logits)).reshape(len(z), D_PIXELS)

    return encode, decode


# ----------------------------------------------------------------------------- packing for the page
WEIGHT_FORMATS = ("float32", "float16", "int8")
# Layers with fewer weights than this stay float32 whatever the format: they cost little, and the decoder's first
# layers are the most sensitive (float16 there alone moves a decoded pixel by up to 4e-3 on MNIST at n = 4).
SMALL_LAYER = 20_000


def b64(a: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of a (flattened, row-major) as ``dtype`` ("<f4", "<f2", "i1"), base64."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def b64_float32(a: np.ndarray) -> str:
    """Little-endian float32 bytes of a (flattened, row-major), base64."""
    return b64(a, "<f4")


def int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [in, out], scale float32 [out]) with weight ~ q * scale: each column's largest |w| maps to 127."""
    w = np.asarray(weight, np.float32)
    scale = (np.abs(w).max(0) / 127).astype(np.float32)
    scale[scale == 0] = 1
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def stored_weight(weight: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 weight the page computes with after storing it as ``fmt`` (one of WEIGHT_FORMATS)."""
    if fmt == "float32":
        return np.asarray(weight, np.float32)
    if fmt == "float16":
        return np.asarray(weight, np.float16).astype(np.float32)
    if fmt == "int8":
        q, scale = int8_columns(weight)
        return q.astype(np.float32) * scale[None, :]
    raise ValueError(f"unknown weight format {fmt!r}; use one of {', '.join(WEIGHT_FORMATS)}")


def layer_format(layer: Layer, fmt: str) -> str:
    """The format a layer is stored in: ``fmt``, or float32 for a layer under SMALL_LAYER weights."""
    return "float32" if layer.weight.size < SMALL_LAYER else fmt


def part_format(fmt: str | Mapping[str, str], part: str) -> str:
    """The format of "encoder" or "decoder": ``fmt`` itself, or its entry for that part."""
    return fmt if isinstance(fmt, str) else fmt[part]


def keep_rows(layers: Sequence[Layer], rows: np.ndarray | None) -> tuple[Layer, ...]:
    """The first layer cut to the input rows ``rows`` (indices of the inputs it reads; None: all)."""
    if rows is None:
        return tuple(layers)
    first = layers[0]
    return (Layer(first.weight[np.asarray(rows)], first.bias, first.activation),) + tuple(layers[1:])


def as_stored(layers: Sequence[Layer], fmt: str) -> tuple[Layer, ...]:
    """The layers as the page holds them: weights through ``layer_format`` and back, biases float32."""
    return tuple(Layer(stored_weight(l.weight, layer_format(l, fmt)), np.asarray(l.bias, np.float32), l.activation)
                 for l in layers)


def mu_only(model: ExportedModel) -> ExportedModel:
    """The encoder cut to the code the page shows: a Gaussian encoder's last layer keeps its first n outputs (mu)."""
    if not model.gaussian:
        return model
    last = model.encoder[-1]
    n = model.latent_dim
    enc = model.encoder[:-1] + (Layer(last.weight[:, :n], last.bias[:n], last.activation),)
    return dataclasses.replace(model, encoder=enc)


def stored_model(model: ExportedModel, fmt: str | Mapping[str, str], rows: np.ndarray | None = None) -> ExportedModel:
    """``model`` as the page computes it: weights through ``fmt`` (one format, or one per part) and back; with
    ``rows``, the encoder reads only those pixels (the others' weights are zero, as if those pixels were blank)."""
    m = mu_only(model)
    enc = as_stored(keep_rows(m.encoder, rows), part_format(fmt, "encoder"))
    if rows is not None:
        w = np.zeros((D_PIXELS, enc[0].weight.shape[1]), np.float32)
        w[np.asarray(rows)] = enc[0].weight
        enc = (Layer(w, enc[0].bias, enc[0].activation),) + enc[1:]
    return dataclasses.replace(m, encoder=enc, decoder=as_stored(m.decoder, part_format(fmt, "decoder")))


def pack_layers(layers: Sequence[Layer], fmt: str = "float32") -> list[dict]:
    """Per layer {"shape": [in, out], "act", "fmt", "w": base64 weights, "b": base64 float32 bias} and, for int8,
    "scale" (base64 float32 per output column: w = q * scale); a layer's "fmt" is ``layer_format``."""
    out = []
    for l in layers:
        f = layer_format(l, fmt)
        entry = {"shape": list(l.weight.shape), "act": l.activation, "fmt": f, "b": b64_float32(l.bias)}
        if f == "int8":
            q, scale = int8_columns(l.weight)
            entry.update(w=b64(q, "i1"), scale=b64_float32(scale))
        else:
            entry["w"] = b64(stored_weight(l.weight, f), {"float32": "<f4", "float16": "<f2"}[f])
        out.append(entry)
    return out


def pack_model(model: ExportedModel, fmt: str | Mapping[str, str] = "float32", rows: np.ndarray | None = None) -> dict:
    """{"encoder": [...], "decoder": [...]} (``pack_layers``, ``fmt`` one format or one per part); a Gaussian
    encoder keeps only its mu outputs, and with ``rows`` its first layer only the rows of those pixels."""
    m = mu_only(model)
    return {"encoder": pack_layers(keep_rows(m.encoder, rows), part_format(fmt, "encoder")),
            "decoder": pack_layers(m.decoder, part_format(fmt, "decoder"))}
