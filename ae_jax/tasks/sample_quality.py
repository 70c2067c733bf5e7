"""Sample quality: generated images judged by the reference classifier, seed by seed.

How each model samples:
- a model with a prior (``bottleneck.can_sample``: the VAE family, vq, cvae)
  decodes codes drawn from that prior (``sampler`` "prior");
- a model without one (the plain autoencoders: shallow, vanilla, stacked,
  sparse, denoising) decodes codes drawn from a Gaussian fitted (mean and full
  covariance) to its own codes of the training images, per seed (``sampler``
  "gaussian_fit"). That is a baseline the model was not trained for; reports
  label it so;
- a conditional model (cvae) is asked for every digit equally often: sample j
  gets label j mod 10.

``N_SAMPLES`` (10 000) codes per seed, drawn from the seed's task key
(stream ``KEY_STREAM``), decoded with BatchNorm in evaluation mode. Numbers per
seed (``ae_jax.tasks.quality_measures`` defines them):

- ``sample_frechet``: Fréchet distance between the classifier's penultimate
  features of the samples and of the real test images (lower is better);
- ``sample_class_entropy``: entropy (nats) of the histogram of predicted
  digits; log 10 ≈ 2.303 when all ten are drawn equally often;
- ``sample_confidence``: mean top-class probability;
- ``cvae_label_accuracy`` (conditional models only): the fraction of samples
  classified as the digit they were conditioned on.

``info`` records the sampler, the number of samples and of test images, the
classifier's test accuracy and ``frechet_train_vs_test``: the same distance for as many real
training images (at most ``N_SAMPLES``), the score of a generator that
reproduced the training data.

Arrays (``sample_quality.npz``): "images" [R, N_SHOW, 32, 32], the first
N_SHOW samples of each seed (NaN for a diverged seed); "labels" [N_SHOW] their
conditioning labels (-1 when unconditional); "class_counts" [R, 10] the
histogram of predicted digits; "seeds" [R]; "sampler" (a string).
"""
from __future__ import annotations

import jax
import numpy as np

from . import quality_measures as sq
from ..data import Data
from ..io import write_npz
from ..models import NUM_CLASSES
from ..trainer import run_keys
from . import reference
from .base import EvalContext, Task, TaskResult

N_SAMPLES = 10_000
N_SHOW = 12
KEY_STREAM = 21  # fold_in index of run_keys(seed)["task"]
CHUNK = 2_000    # codes decoded at once
FILE = "sample_quality.npz"
METRICS = ("sample_frechet", "sample_class_entropy", "sample_confidence")
LABEL_METRIC = "cvae_label_accuracy"
GAUSSIAN_FIT = "gaussian_fit"


def sampler_of(spec) -> str:
    """"prior" for a model that can sample, "gaussian_fit" for one that cannot."""
    return "prior" if spec.can_sample else GAUSSIAN_FIT


def sample_labels(n: int) -> np.ndarray:
    """Conditioning labels of n samples: 0, 1, ..., 9, 0, 1, ... ([n] int32)."""
    return (np.arange(n) % NUM_CLASSES).astype(np.int32)


def draw_codes(ctx: EvalContext, index: int, n: int, train_codes: np.ndarray | None) -> np.ndarray:
    """n codes [n, latent] for seed `index`: from its prior, or from the Gaussian fitted to train_codes [N, latent]."""
    key = jax.random.fold_in(run_keys(ctx.seeds[index])["task"], KEY_STREAM)
    if ctx.spec.can_sample:
        return np.asarray(ctx.spec.bottleneck.sample_prior(key, n, ctx.cfg.latent, ctx.state_of(index).params))
    mean, cov = sq.gaussian_fit_sampler(train_codes)
    return np.asarray(sq.gaussian_draw(key, mean, cov, n))


def decode_chunked(ctx: EvalContext, z: np.ndarray, labels: np.ndarray | None, index: int) -> np.ndarray:
    """ctx.decode in chunks of CHUNK codes: [n, latent] -> [n, 32, 32]."""
    out = [ctx.decode(z[s:s + CHUNK], None if labels is None else labels[s:s + CHUNK], index=index)
           for s in range(0, len(z), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, 32, 32), np.float32)


def judge_samples(features: np.ndarray, probs: np.ndarray, test_features: np.ndarray,
                  labels: np.ndarray | None) -> dict[str, float]:
    """The metrics of one seed's samples from the classifier's features [n, F] and probabilities [n, 10].

    labels [n]: the conditioning labels (a conditional model), or None. Samples
    whose features are not finite (a decoder that output NaN) score NaN.
    """
    if not (np.isfinite(features).all() and np.isfinite(probs).all()):
        out = {k: float("nan") for k in METRICS}
    else:
        out = {"sample_frechet": sq.frechet_distance(features, test_features),
               "sample_class_entropy": sq.class_entropy(probs),
               "sample_confidence": sq.mean_confidence(probs)}
    if labels is not None:
        out[LABEL_METRIC] = sq.label_accuracy(probs, labels) if np.isfinite(probs).all() else float("nan")
    return out


class SampleQuality(Task):
    """N_SAMPLES generated images per seed, judged by the reference classifier (Fréchet, entropy, confidence)."""
    name = "sample_quality"
    files = (FILE,)

    def run(self, ctx: EvalContext) -> TaskResult:
        n, R, cond = N_SAMPLES, len(ctx.seeds), ctx.spec.conditional
        sampler = sampler_of(ctx.spec)
        ctx.log(f"    sample quality: {n} samples per seed ({'the prior' if sampler == 'prior' else 'a Gaussian fitted to the training codes'})")
        ref = reference.reference_classifier(ctx)
        test_f, _ = reference.real_test_features(ctx)
        train_codes = None
        if sampler == GAUSSIAN_FIT:
            data = ctx.data
            train_codes = ctx.evaluate(Data(data.x_train, data.y_train))["z"]          # [R, N, latent]
        labels = sample_labels(n) if cond else None
        names = METRICS + ((LABEL_METRIC,) if cond else ())
        metrics = {k: np.full(R, np.nan) for k in names}
        shown = np.full((R, N_SHOW, 32, 32), np.nan, np.float32)
        counts = np.zeros((R, NUM_CLASSES), np.int64)
        for i in range(R):
            if not ctx.valid[i]:
                continue
            z = draw_codes(ctx, i, n, None if train_codes is None else train_codes[i])
            images = decode_chunked(ctx, z, labels, i)
            feats, probs = ref.features_and_probs(images)
            for k, v in judge_samples(feats, probs, test_f, labels).items():
                metrics[k][i] = v
            shown[i] = images[:N_SHOW]
            if np.isfinite(probs).all():
                counts[i] = np.bincount(probs.argmax(-1), minlength=NUM_CLASSES)
        write_npz(ctx.run_dir / FILE, images=shown,
                  labels=labels[:N_SHOW] if cond else np.full(N_SHOW, -1), class_counts=counts,
                  seeds=np.asarray(ctx.seeds), sampler=np.asarray(sampler))
        info = {"sampler": sampler, "n_samples": n, "n_test": len(test_f), "reference_test_accuracy": ref.test_accuracy,
                "reference_params_sha256": ref.params_sha256,
                "frechet_train_vs_test": reference.real_train_frechet(ctx, n)}
        return TaskResult(metrics, {}, info)
