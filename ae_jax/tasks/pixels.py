"""Judging decoded images against the data: nearest training images in pixel space.

Tasks that decode codes no image was encoded to (prior draws, a grid over the
latent plane, shifted codes) need to say whether the result looks like data
and which digit it shows, without a classifier of their own. Both come from
the REF_SIZE first training images, flattened to 1024 pixels:

- label: the majority label of the K = 5 nearest training images (Euclidean);
- off the data: the distance to the nearest training image exceeds the
  OFF_QUANTILE-th percentile of the same distance for the model's own
  reconstructions of the first N_OWN test images (decoded from their mean
  codes). The yardstick is the model's own output, so a model whose every
  image is a little blurred is not called off the data for that; an image is
  off when it is further from any training image than nearly all of the
  model's reconstructions are.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..data import Splits

REF_SIZE = 10_000
K = 5
OFF_QUANTILE = 95.0
N_OWN = 1000


@dataclasses.dataclass
class PixelReference:
    """Nearest-neighbour look-up among the first REF_SIZE training images."""
    nn: object            # sklearn NearestNeighbors fitted on [M, 1024]
    labels: np.ndarray    # [M] their labels

    def query(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images [B, 32, 32] -> (distance to the nearest training image [B], majority label of the K nearest [B])."""
        flat = np.asarray(images, np.float32).reshape(len(images), -1)
        dist, idx = self.nn.kneighbors(flat)
        votes = self.labels[idx]                                     # [B, K]
        counts = np.stack([(votes == d).sum(1) for d in range(10)], 1)
        return dist[:, 0], counts.argmax(1)  # ties: the smaller digit


_CACHE: dict[tuple, PixelReference] = {}


def reference(splits: Splits) -> PixelReference:
    """The look-up for a dataset variant, built once per process."""
    from sklearn.neighbors import NearestNeighbors
    key = (splits.dataset, splits.variant, splits.x_train.shape)
    if key not in _CACHE:
        x = splits.x_train[:REF_SIZE].reshape(-1, splits.x_train[0].size).astype(np.float32)
        _CACHE[key] = PixelReference(NearestNeighbors(n_neighbors=K).fit(x), np.asarray(splits.y_train[:REF_SIZE]))
    return _CACHE[key]


def labeller_accuracy(splits: Splits, n: int = N_OWN) -> float:
    """How often the nearest-neighbour label is right on real images: the first n test images."""
    _, label = reference(splits).query(splits.x_test[:n])
    return float((label == splits.y_test[:n]).mean())


def off_threshold(ctx, index: int) -> float:
    """The OFF_QUANTILE-th percentile of seed `index`'s reconstructions' distance to the nearest training image.

    Reconstructions decode the mean codes (no sampling noise) of the first
    N_OWN test images. Cached on the context: every task of a run shares it.
    """
    cache = ctx.__dict__.setdefault("_off_threshold", {})
    if index not in cache:
        data = ctx.data
        h = ctx.test["h"][index, :N_OWN]
        recon = ctx.decode(ctx.mean_code(h, index), data.y_test[:N_OWN], index=index)
        dist, _ = reference(data).query(recon)
        cache[index] = float(np.percentile(dist, OFF_QUANTILE)) if np.isfinite(dist).all() else float("nan")
    return cache[index]


def judge(ctx, index: int, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images [B, 32, 32] decoded by seed `index` -> (off the data [B] bool, nearest-neighbour label [B])."""
    dist, label = reference(ctx.data).query(images)
    return ~(dist <= off_threshold(ctx, index)), label
