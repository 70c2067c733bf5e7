"""The gauntlet: every task of PROTOCOL.md for every seed of a trained model.

Numbers are per seed (then mean ± std); figures show the first seed. The
linear probe and the from-scratch baseline train every seed in one compiled
program, as training does.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .data import ANOMALY_CLASS
from .losses import BOTTLENECKS, Hparams
from .models import DenseStack, TorchDense, encoder_units
from .registry import ModelSpec
from .runner import stack_hparams
from .train import TrainConfig, TrainState, make_model, run_keys

N_FRAMES = 130
N_SHOW = 16
PROBE_BATCH, PROBE_EPOCHS, PROBE_PATIENCE, PROBE_LR = 32, 20, 3, 1e-3


# ------------------------------------------------------------------ decoding
def _apply(spec: ModelSpec, cfg: TrainConfig, state1: TrainState, method, *args):
    model = make_model(spec, cfg.latent_dim)
    return model.apply({"params": state1.params, "batch_stats": state1.batch_stats}, *args, method=method)


def decode_images(spec, cfg, state1: TrainState, z: jax.Array) -> np.ndarray:
    """z: [B, n] -> images [B, 32, 32] in [0, 1] (BatchNorm in evaluation mode)."""
    logits = _apply(spec, cfg, state1, lambda m, z: m.decode(z, train=False), z)
    return np.asarray(jax.nn.sigmoid(logits))


def encode_h(spec, cfg, state1: TrainState, x: np.ndarray) -> jax.Array:
    return _apply(spec, cfg, state1, lambda m, x: m.encode(x, train=False), jnp.asarray(x))


def bottleneck_z(spec, state1: TrainState, h, key, hp: Hparams) -> jax.Array:
    codebook = state1.params["codebook"] if spec.codebook_size else None
    return BOTTLENECKS[spec.bottleneck](h, key, hp, codebook).z


def prior_samples(spec: ModelSpec, state1: TrainState, key, n: int, latent: int) -> jax.Array:
    """Codes drawn from the prior: N(0, I) for the VAE family, one uniform category per dimension for vq."""
    if spec.is_vae:
        return jax.random.normal(key, (n, latent))
    if spec.codebook_size:
        cb = state1.params["codebook"]  # [latent, K]
        idx = jax.random.randint(key, (n, latent), 0, cb.shape[1])
        return jnp.take_along_axis(cb[None].repeat(n, 0), idx[..., None], axis=-1)[..., 0]
    raise ValueError(f"{spec.name} has no prior to sample from")


def interpolation_frames(spec, cfg, state1, hp, x_pair: np.ndarray, key, fixed_noise: bool = False) -> np.ndarray:
    """Interpolate the encoder outputs h of two images (130 weights in [0, 1]), bottleneck, decode.

    VAE family: fresh noise per frame, or one noise draw for every frame when
    fixed_noise (which removes the frame-to-frame jitter). Returns [130, 32, 32].
    """
    h = encode_h(spec, cfg, state1, x_pair)                    # [2, e]
    w = jnp.linspace(0.0, 1.0, N_FRAMES)[:, None]
    hs = (1 - w) * h[0][None] + w * h[1][None]                  # [130, e]
    if fixed_noise:
        keys = jnp.broadcast_to(key, (N_FRAMES,))
    else:
        keys = jax.random.split(key, N_FRAMES)
    z = jax.vmap(lambda hh, k: bottleneck_z(spec, state1, hh[None], k, hp)[0])(hs, keys)
    return decode_images(spec, cfg, state1, z)


# ------------------------------------------------------------ latent structure
_UMAP_WARM = False


def embed_2d(z: np.ndarray, seed: int, log: Callable[[str], None] = print) -> np.ndarray:
    """UMAP (default parameters, random_state = seed) to 2-D when n > 2; raw codes when n <= 2."""
    global _UMAP_WARM
    if z.shape[1] <= 2:
        return np.asarray(z, np.float32)
    if not np.isfinite(z).all():  # a diverged seed: UMAP would raise; its scores become nan
        log(f"    seed {seed}: non-finite codes, no UMAP embedding")
        return np.full((z.shape[0], 2), np.nan, np.float32)
    import umap
    if not _UMAP_WARM:
        log("    (the first UMAP fit in a process compiles numba code: ~40 s)")
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": the price of reproducibility
        warnings.filterwarnings("ignore", message=".*n_jobs value.*", category=UserWarning)
        emb = umap.UMAP(random_state=seed).fit_transform(np.asarray(z, np.float32))
    _UMAP_WARM = True
    log(f"    UMAP of {z.shape[0]} x {z.shape[1]} codes (seed {seed}) in {time.perf_counter() - t0:.1f} s")
    return emb


def structure_scores(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Comparable numbers for a 2-D embedding: 5-fold 5-NN accuracy and silhouette score by label."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    if not np.isfinite(emb).all():
        return {"knn_accuracy": float("nan"), "silhouette": float("nan")}
    knn = cross_val_score(KNeighborsClassifier(5), emb, labels, cv=5).mean()
    sample = min(len(emb), 5000)
    sil = silhouette_score(emb, labels, sample_size=sample if sample < len(emb) else None, random_state=seed)
    return {"knn_accuracy": float(knn), "silhouette": float(sil)}


# ------------------------------------------------------------------ anomaly
def roc_auc(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and ROC curve (fpr, tpr) with `positive` as the positive class."""
    from sklearn.metrics import roc_auc_score, roc_curve
    if not np.isfinite(scores).all():
        return float("nan"), np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(positive, scores)
    return float(roc_auc_score(positive, scores)), fpr, tpr


def anomaly_labels(y: np.ndarray) -> np.ndarray:
    return (y == ANOMALY_CLASS).astype(np.int32)


# --------------------------------------------------------------- classification
def _batches(key, n: int, batch: int, drop_last: bool):
    """Shuffled index batches [S, batch] and a validity mask [S, batch] (partial last batch masked)."""
    perm = jax.random.permutation(key, n)
    steps = n // batch if drop_last else -(-n // batch)
    pad = steps * batch - n
    if pad > 0:
        perm = jnp.concatenate([perm, jnp.zeros(pad, perm.dtype)])
    mask = (jnp.arange(steps * batch) < n).astype(jnp.float32)
    return perm[: steps * batch].reshape(steps, batch), mask[: steps * batch].reshape(steps, batch)


def _early_stopping_scan(epoch_fn, init_carry, max_epochs: int, patience: int):
    """Run epoch_fn up to max_epochs; keep the test accuracy of the best validation epoch.

    epoch_fn(carry, epoch) -> (carry, (val_acc, test_acc)). Training stops after
    `patience` epochs without a validation improvement (later epochs still run
    inside the fixed-length scan but can no longer change the result).
    """
    def body(c, e):
        inner, best_val, best_test, best_epoch, since, stopped = c
        inner, (va, te) = epoch_fn(inner, e)
        improved = (va > best_val) & ~stopped
        best_val = jnp.where(improved, va, best_val)
        best_test = jnp.where(improved, te, best_test)
        best_epoch = jnp.where(improved, e + 1, best_epoch)
        since = jnp.where(improved, 0, since + 1)
        stopped = stopped | (since >= patience)
        return (inner, best_val, best_test, best_epoch, since, stopped), va
    c0 = (init_carry, jnp.float32(-1), jnp.float32(0), jnp.int32(0), jnp.int32(0), jnp.bool_(False))
    (_, best_val, best_test, best_epoch, _, _), _ = jax.lax.scan(body, c0, jnp.arange(max_epochs))
    return {"val_accuracy": best_val, "test_accuracy": best_test, "best_epoch": best_epoch}


def _xent(logits, y, mask):
    per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _accuracy(logits, y):
    return (logits.argmax(-1) == y).mean()


def linear_probe_one(spec: ModelSpec, key, hp: Hparams, codebook, h_tr, y_tr, h_val, y_val, h_te, y_te):
    """Linear layer n -> 10 on frozen bottleneck codes of precomputed encoder outputs h.

    The bottleneck is applied per batch with fresh keys (the VAE family samples
    z for training, validation and test alike). Adam lr 1e-3, batch 32 (the
    last partial batch is kept, masked), <= 20 epochs, early stopping on
    validation accuracy with patience 3; reports the test accuracy of the best
    validation epoch.
    """
    n_feat = BOTTLENECKS[spec.bottleneck](h_tr[:1], key, hp, codebook).z.shape[-1]
    k_init, k_run = jax.random.split(key)
    lim = 1.0 / np.sqrt(n_feat)  # PyTorch's nn.Linear initialisation
    kw, kb = jax.random.split(k_init)
    params = {"w": jax.random.uniform(kw, (n_feat, 10), minval=-lim, maxval=lim),
              "b": jax.random.uniform(kb, (10,), minval=-lim, maxval=lim)}
    opt = optax.adam(PROBE_LR)

    def feats(h, k):
        return BOTTLENECKS[spec.bottleneck](h, k, hp, codebook).z

    def epoch_fn(carry, e):
        params, opt_state = carry
        ke = jax.random.fold_in(k_run, e)
        k_perm, k_steps, k_val, k_te = jax.random.split(ke, 4)
        idx, mask = _batches(k_perm, h_tr.shape[0], PROBE_BATCH, drop_last=False)

        def step(c, inp):
            p, o = c
            bi, m, k = inp
            loss_fn = lambda p: _xent(feats(h_tr[bi], k) @ p["w"] + p["b"][None], y_tr[bi], m)
            g = jax.grad(loss_fn)(p)
            u, o = opt.update(g, o)
            return (optax.apply_updates(p, u), o), None
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (idx, mask, jax.random.split(k_steps, len(idx))))
        va = _accuracy(feats(h_val, k_val) @ params["w"] + params["b"][None], y_val)
        te = _accuracy(feats(h_te, k_te) @ params["w"] + params["b"][None], y_te)
        return (params, opt_state), (va, te)

    return _early_stopping_scan(epoch_fn, (params, opt.init(params)), PROBE_EPOCHS, PROBE_PATIENCE)


def linear_probe(spec, cfg, state: TrainState, seeds: Sequence[int], hparams: Sequence[Hparams],
                 h: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All seeds in one program. h[split]: [R, N, e] encoder outputs; y[split]: [N]."""
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], 1) for s in seeds])
    hp = jax.tree.map(jnp.asarray, stack_hparams(hparams))
    codebook = state.params["codebook"] if spec.codebook_size else None
    fn = jax.vmap(lambda k, p, cb, a, ya, b, yb, c, yc: linear_probe_one(spec, k, p, cb, a, ya, b, yb, c, yc),
                  in_axes=(0, 0, 0 if codebook is not None else None, 0, None, 0, None, 0, None))
    ys = [jnp.asarray(y[k]) for k in ("train", "val", "test")]
    out = jax.jit(fn)(keys, hp, codebook, h["train"], ys[0], h["val"], ys[1], h["test"], ys[2])
    return jax.device_get(out)


class ScratchClassifier(nn.Module):
    """The dense encoder (n = 20 sizes) plus a linear layer, trained from scratch."""
    latent_dim: int = 20

    @nn.compact
    def __call__(self, x, train: bool):
        h = DenseStack(encoder_units(self.latent_dim), name="enc")(x.reshape(x.shape[0], -1), train_bn=(train,) * 3)
        return TorchDense(10, name="head")(h)


def scratch_baseline_one(key, x_tr, y_tr, x_val, y_val, x_te, y_te, latent_dim: int = 20):
    """Encoder + linear layer on the labelled images alone; same optimiser and stopping as the probe.

    BatchNorm needs whole batches, so the last partial batch of each shuffled
    epoch is dropped (it differs every epoch).
    """
    model = ScratchClassifier(latent_dim)
    k_init, k_run = jax.random.split(key)
    v = model.init(k_init, x_tr[:2], train=False)
    opt = optax.adam(PROBE_LR)
    batch = min(PROBE_BATCH, x_tr.shape[0])

    def predict(vs, x):
        return model.apply(vs, x, train=False)

    def epoch_fn(carry, e):
        params, bstats, o = carry
        idx, mask = _batches(jax.random.fold_in(k_run, e), x_tr.shape[0], batch, drop_last=True)

        def step(c, inp):
            p, bs, o = c
            bi, m = inp
            def loss_fn(p):
                logits, upd = model.apply({"params": p, "batch_stats": bs}, x_tr[bi], train=True,
                                          mutable=["batch_stats"])
                return _xent(logits, y_tr[bi], m), upd["batch_stats"]
            g, bs = jax.grad(loss_fn, has_aux=True)(p)
            u, o = opt.update(g, o)
            return (optax.apply_updates(p, u), bs, o), None
        (params, bstats, o), _ = jax.lax.scan(step, (params, bstats, o), (idx, mask))
        vs = {"params": params, "batch_stats": bstats}
        return (params, bstats, o), (_accuracy(predict(vs, x_val), y_val), _accuracy(predict(vs, x_te), y_te))

    init = (v["params"], v["batch_stats"], opt.init(v["params"]))
    return _early_stopping_scan(epoch_fn, init, PROBE_EPOCHS, PROBE_PATIENCE)


def scratch_baseline(seeds: Sequence[int], x_tr, y_tr, x_val, y_val, x_te, y_te) -> dict[str, np.ndarray]:
    keys = jnp.stack([jax.random.fold_in(run_keys(s)["task"], 2) for s in seeds])
    fn = jax.vmap(scratch_baseline_one, in_axes=(0,) + (None,) * 6)
    data = map(jnp.asarray, (x_tr, y_tr, x_val, y_val, x_te, y_te))  # arguments, not baked-in constants
    return jax.device_get(jax.jit(fn)(keys, *data))
