"""A reference digit classifier per dataset: the yardstick for generated images.

Sample-quality and interpolation metrics (``ae_jax.tasks.quality_measures``) need a
fixed judge that no contestant influences: a small convolutional network
trained once on a dataset's real training images (``Splits.x_train`` of the
"full" variant, never on generated ones) with a fixed key. Its penultimate
layer (``FEATURE_DIM`` ReLU units) is the feature space of the Fréchet distance;
its softmax is what class entropy, confidence and label accuracy read.

Architecture (``RefNet``), images [B, 32, 32] in [0, 1]::

    3x3 conv, 8 channels, ReLU, 2x2 max-pool   -> [B, 16, 16, 8]
    3x3 conv, 16 channels, ReLU, 2x2 max-pool  -> [B, 8, 8, 16]
    dense 1024 -> 64, ReLU                     -> features [B, 64]
    dense 64 -> 10                             -> logits [B, 10]

The convolutions are written as nine shifted slices and one matmul ("same"
padding, stride 1): XLA's CPU convolution gradients are an order of magnitude
slower than its matmuls, and this keeps MNIST training to about a minute on
two cores. Training: Adam (lr 1e-3), shuffled minibatches, a fixed number of
epochs (``RECIPES``); the parameters of the epoch with the best validation
accuracy are kept.

The trained parameters are cached in ``cache_dir`` (``params.npz`` and
``reference_classifier.json``: test and validation accuracy, the recipe, the
SHA-256 of the training and validation data and of the parameter file, and
the command, package version and source revision that trained it). A cache
whose recipe, data hash or parameter file does not match is retrained. The
parameter file's SHA-256 names the judge: the quality tasks record it, since a
classifier retrained on another machine or JAX version differs slightly.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ..data import IMAGE_SIDE, Splits
from ..io import atomic_write_bytes, read_json, write_json

FEATURE_DIM = 64
CHUNK = 256  # images per compiled forward pass
PARAMS_FILE = "params.npz"
META_FILE = "reference_classifier.json"
RECIPE_VERSION = 1
_BASE_RECIPE = {
    "version": RECIPE_VERSION,
    "architecture": f"conv3x3(8)-relu-maxpool2-conv3x3(16)-relu-maxpool2-dense({FEATURE_DIM})-relu-dense(10)",
    "optimizer": "adam", "lr": 1e-3, "seed": 0,
    "selection": "parameters of the epoch with the best validation accuracy",
}
# digits has 1 350 training images: many more (short) epochs than MNIST's 55 000.
RECIPES = {
    "digits": {**_BASE_RECIPE, "batch_size": 64, "epochs": 30},
    "idx": {**_BASE_RECIPE, "batch_size": 128, "epochs": 3},
}


def recipe_for(dataset: str) -> dict:
    """The training recipe of ``dataset``'s reference classifier (a JSON-able dict)."""
    return dict(RECIPES["digits" if dataset == "digits" else "idx"])


# ------------------------------------------------------------------ network
def conv3x3(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """'Same' 3x3 convolution, stride 1: x [B, H, W, C], w [9 C, O], b [O] -> [B, H, W, O].

    out[b, i, j] = sum over (di, dj) in {0, 1, 2}^2 of xpad[b, i + di, j + dj] @ w[(3 di + dj) C : (3 di + dj + 1) C]
    with xpad the input zero-padded by one pixel on each side.
    """
    _, h, wd, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
    return cols @ w + b[None, None, None]


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2: [B, H, W, C] -> [B, H/2, W/2, C]."""
    bsz, h, w, c = x.shape
    return x.reshape(bsz, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class RefNet(nn.Module):
    """The reference classifier; returns (features [B, FEATURE_DIM], logits [B, 10])."""
    channels: tuple[int, int] = (8, 16)
    features: int = FEATURE_DIM

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:  # x: [B, 32, 32]
        h = x[..., None]
        c_in = 1
        for i, c in enumerate(self.channels):
            w = self.param(f"conv{i}_kernel", nn.initializers.lecun_normal(), (9 * c_in, c))
            b = self.param(f"conv{i}_bias", nn.initializers.zeros, (c,))
            h = max_pool2(nn.relu(conv3x3(h, w, b)))
            c_in = c
        feats = nn.relu(nn.Dense(self.features, name="feat")(h.reshape(h.shape[0], -1)))
        return feats, nn.Dense(10, name="out")(feats)


MODEL = RefNet()


@jax.jit
def _forward(params, x):
    return MODEL.apply({"params": params}, x)


def _check_images(images) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"expected images of shape [N, {IMAGE_SIDE}, {IMAGE_SIDE}], got {x.shape}")
    return x


def _forward_chunked(params, images) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, F], logits [N, 10]) in chunks of CHUNK images (the last one zero-padded)."""
    x = _check_images(images)
    n = x.shape[0]
    feats, logits = [], []
    for s in range(0, n, CHUNK):
        part = x[s:s + CHUNK]
        m = part.shape[0]
        if m < CHUNK:
            part = np.concatenate([part, np.zeros((CHUNK - m,) + part.shape[1:], np.float32)])
        f, lg = _forward(params, part)
        feats.append(np.asarray(f)[:m])
        logits.append(np.asarray(lg)[:m])
    if not feats:
        return np.zeros((0, MODEL.features), np.float32), np.zeros((0, 10), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


@dataclasses.dataclass(frozen=True)
class RefClassifier:
    """A trained reference classifier. Images are [N, 32, 32] float in [0, 1]."""
    params: Any
    dataset: str
    test_accuracy: float
    val_accuracy: float
    recipe: dict
    params_sha256: str = ""  # of params.npz: which judge this is, recorded by every task it judges

    def features(self, images) -> np.ndarray:
        """Penultimate-layer activations [N, FEATURE_DIM]."""
        return _forward_chunked(self.params, images)[0]

    def probs(self, images) -> np.ndarray:
        """Softmax class probabilities [N, 10]."""
        return np.asarray(jax.nn.softmax(jnp.asarray(_forward_chunked(self.params, images)[1]), axis=-1))

    def features_and_probs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Both in one pass: ([N, FEATURE_DIM], [N, 10])."""
        f, lg = _forward_chunked(self.params, images)
        return f, np.asarray(jax.nn.softmax(jnp.asarray(lg), axis=-1))


# ------------------------------------------------------------------ training
def data_hash(splits: Splits) -> str:
    """SHA-256 over the training and validation images and labels (what training reads)."""
    h = hashlib.sha256()
    for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _make_epoch(batch: int, n: int, lr: float):
    """The compiled epoch (one per batch size, training-set size and learning rate)."""
    opt = optax.adam(lr)
    steps = n // batch  # the partial last batch is dropped (a different one each epoch)

    @jax.jit
    def epoch(params, opt_state, key, x, y):
        idx = jax.random.permutation(key, n)[: steps * batch].reshape(steps, batch)

        def step(carry, bi):
            p, o = carry
            def loss_fn(p):
                logits = MODEL.apply({"params": p}, x[bi])[1]
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[bi]).mean()
            g = jax.grad(loss_fn)(p)
            u, o = opt.update(g, o)
            return (optax.apply_updates(p, u), o), None
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state
    return epoch


def _accuracy(params, x, y) -> float:
    if len(y) == 0:
        return float("nan")
    return float((_forward_chunked(params, x)[1].argmax(-1) == np.asarray(y)).mean())


def train_reference(splits: Splits, recipe: dict, log: Callable[[str], None] = print) -> tuple[Any, dict]:
    """Train on splits.x_train / y_train; select the epoch by validation accuracy.

    Returns (params, info) with info = {val_accuracy, test_accuracy, best_epoch,
    train_seconds}. Deterministic: keys derive from recipe["seed"] alone.
    """
    x, y = jax.device_put((splits.x_train, splits.y_train))
    n = x.shape[0]
    batch = min(int(recipe["batch_size"]), n)
    key = jax.random.key(int(recipe["seed"]))
    k_init, k_shuffle = jax.random.split(key)
    # each one program instead of an operation dispatched (and compiled) per parameter; the same numbers
    params = jax.jit(MODEL.init)(k_init, x[:2])["params"]
    opt_state = jax.jit(optax.adam(float(recipe["lr"])).init)(params)
    epoch = _make_epoch(batch, n, float(recipe["lr"]))
    best, best_val, best_epoch = params, -1.0, 0
    t0 = time.perf_counter()
    for e in range(int(recipe["epochs"])):
        params, opt_state = epoch(params, opt_state, jax.random.fold_in(k_shuffle, e), x, y)
        val = _accuracy(params, splits.x_val, splits.y_val)
        if val > best_val:
            best, best_val, best_epoch = params, val, e + 1
        if e == 0 or (e + 1) % max(1, int(recipe["epochs"]) // 6) == 0 or e + 1 == int(recipe["epochs"]):
            log(f"    epoch {e + 1}/{recipe['epochs']}: validation accuracy {val:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
    seconds = time.perf_counter() - t0
    best = jax.device_get(best)
    info = {"val_accuracy": best_val, "test_accuracy": _accuracy(best, splits.x_test, splits.y_test),
            "best_epoch": best_epoch, "train_seconds": seconds}
    return best, info


# ------------------------------------------------------------------ cache
def _params_bytes(params) -> bytes:
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sorted(flat.items())})
    return buf.getvalue()


def _load_cached(cache_dir: Path, dataset: str, recipe: dict, digest: str) -> tuple[RefClassifier | None, str]:
    """(classifier, "") when the cache is usable, else (None, why not)."""
    meta_path, params_path = cache_dir / META_FILE, cache_dir / PARAMS_FILE
    if not meta_path.is_file() or not params_path.is_file():
        return None, "no cached classifier"
    try:
        meta = read_json(meta_path)
        blob = params_path.read_bytes()
    except (OSError, ValueError) as e:
        return None, f"unreadable cache ({e})"
    if not isinstance(meta, dict):
        return None, "unreadable cache (metadata is not a JSON object)"
    if meta.get("recipe") != recipe:
        return None, "the training recipe changed"
    if meta.get("data_sha256") != digest:
        return None, "the training data changed"
    if meta.get("params_sha256") != hashlib.sha256(blob).hexdigest():
        return None, f"{PARAMS_FILE} does not match its metadata"
    try:
        with np.load(io.BytesIO(blob)) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        return None, f"unreadable {PARAMS_FILE} ({e})"
    want = traverse_util.flatten_dict(
        jax.eval_shape(lambda: MODEL.init(jax.random.key(0), jnp.zeros((2, IMAGE_SIDE, IMAGE_SIDE))))["params"],
        sep="/")
    if set(flat) != set(want) or any(flat[k].shape != want[k].shape for k in want):
        return None, f"{PARAMS_FILE} holds parameters of another architecture"
    params = jax.device_put(traverse_util.unflatten_dict(flat, sep="/"))
    return RefClassifier(params, dataset, float(meta["test_accuracy"]), float(meta["val_accuracy"]), recipe,
                         meta["params_sha256"]), ""


def get_reference_classifier(dataset: str, splits: Splits, cache_dir: Path,
                             log: Callable[[str], None] = print, command: str = "") -> RefClassifier:
    """The reference classifier of ``dataset``: loaded from ``cache_dir`` or trained (and cached) there.

    ``splits`` must be ``load_splits(dataset, "full")``: the classifier learns
    from real training images only. Training happens once; a later call with
    the same recipe and data loads ``cache_dir/params.npz``. A classifier
    trained here records `command` (the command line that asked for it), the
    package version and source revision beside its recipe.
    """
    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be ae_jax.data.Splits, got {type(splits).__name__}")
    if splits.dataset != dataset or splits.variant != "full":
        raise ValueError(f"the reference classifier of {dataset} trains on load_splits({dataset!r}, 'full'), "
                         f"got the {splits.variant!r} split of {splits.dataset!r}")
    cache_dir = Path(cache_dir)
    recipe = recipe_for(dataset)
    digest = data_hash(splits)
    ref, why = _load_cached(cache_dir, dataset, recipe, digest)
    if ref is not None:
        log(f"[reference classifier] {dataset}: loaded from {cache_dir} (test accuracy {ref.test_accuracy:.4f})")
        return ref
    log(f"[reference classifier] {dataset}: training ({why}) on {len(splits.y_train)} real training images")
    params, info = train_reference(splits, recipe, log)
    from ..trainer.provenance import provenance
    blob = _params_bytes(params)
    sha = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(cache_dir / PARAMS_FILE, blob)
    write_json(cache_dir / META_FILE, {
        "dataset": dataset, "recipe": recipe, "data_sha256": digest,
        "params_sha256": sha, "feature_dim": MODEL.features,
        "n_train": int(len(splits.y_train)), "n_val": int(len(splits.y_val)), "n_test": int(len(splits.y_test)),
        **info, **provenance(command, splits)})
    log(f"[reference classifier] {dataset}: test accuracy {info['test_accuracy']:.4f} "
        f"(epoch {info['best_epoch']}, {info['train_seconds']:.0f} s); cached in {cache_dir}")
    params = jax.device_put(params)
    return RefClassifier(params, dataset, float(info["test_accuracy"]), float(info["val_accuracy"]), recipe, sha)
