"""Datasets and the bake-off splits.

Every dataset comes out as 32x32 float32 images in [0, 1] and int32 labels 0..9,
split as PROTOCOL.md says: the training pool is permuted once with
``SPLIT_SEED``; its first part is the training set and its last part the
validation set; the test set is the dataset's own.

Sources, tried in order for the IDX datasets (mnist, fashion_mnist, kmnist):

1. ``data_dir`` (``--data-dir``) or the ``AE_JAX_DATA_DIR`` environment variable:
   a folder holding the four IDX ``.gz`` files, or holding a sub-folder named
   after the dataset that does;
2. for fashion_mnist, ``/usr/share/datasets/fashion-mnist`` (Debian's
   ``dataset-fashion-mnist`` package);
3. tensorflow-datasets, only when ``tensorflow`` and ``tensorflow_datasets`` are
   importable (it cannot prepare data without tensorflow, and offline it would
   retry for minutes, so it is never tried where it cannot work).

``digits`` is scikit-learn's bundled 8x8 digits (1 797 images): it needs nothing
else. Each 8x8 image (values 0..16) is enlarged 3x by pixel repetition to 24x24
and zero-padded by 4 px to 32x32, so a digit sits in the frame the way an MNIST
digit does and every model keeps the MNIST architecture (D = 1024). Its split
(permuted with the same ``SPLIT_SEED``): the last 297 images are the test set,
the first 1 500 the training pool, of which 1 350 train and 150 validate; the
labelled subset is the first 135 training images (10 %, as 550 labels are 1 %
of MNIST's 55 000 but 1 % of 1 350 would leave too few to learn ten classes).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

SPLIT_SEED = 42
IMAGE_SIDE = 32
DATASETS = ("mnist", "fashion_mnist", "kmnist", "digits")
VARIANTS = ("full", "anomaly", "labelled")
ENV_DATA_DIR = "AE_JAX_DATA_DIR"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "kmnist": "kmnist"}
# (training pool size, validation size, labelled subset size); None = dataset's own.
SPLIT_SIZES = {"idx": (60_000, 5_000, 550), "digits": (1_500, 150, 135)}
ANOMALY_CLASS = 1


class DataError(Exception):
    """Raised for missing or corrupt data; the message says what to do."""


class RawData(NamedTuple):
    train_images: np.ndarray  # [N, H, W] uint8 (digits: float32 in [0, 1])
    train_labels: np.ndarray  # [N] int
    test_images: np.ndarray   # [M, H, W]
    test_labels: np.ndarray   # [M]


class Splits(NamedTuple):
    """One variant of a dataset, ready for training."""
    x_train: np.ndarray  # [N, 32, 32] float32 in [0, 1]
    y_train: np.ndarray  # [N] int32
    x_val: np.ndarray    # [V, 32, 32]
    y_val: np.ndarray    # [V]
    x_test: np.ndarray   # [T, 32, 32]
    y_test: np.ndarray   # [T]
    dataset: str
    variant: str


# --------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike, expect_dims: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes, checking its header.

    The header is two zero bytes, a type byte (0x08 = uint8), a byte giving the
    number of dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); download it again") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise DataError(f"{path}: bad IDX magic number; expected an IDX file of unsigned bytes")
    ndim = blob[3]
    if ndim != expect_dims:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expect_dims}")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, blob[4:header])
    expected = int(np.prod(shape))
    if len(blob) - header != expected:
        raise DataError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"file holds {len(blob) - header}; the file is truncated or corrupt, download it again")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{lbl_path}: label {int(labels.max())} outside 0..9")


def load_idx_dir(folder: str | os.PathLike) -> RawData:
    """Load the four IDX files from ``folder``."""
    folder = Path(folder)
    paths = {k: folder / v for k, v in IDX_FILES.items()}
    arrays = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in paths.items()}
    _check_pair(arrays["train_images"], arrays["train_labels"], paths["train_images"], paths["train_labels"])
    _check_pair(arrays["test_images"], arrays["test_labels"], paths["test_images"], paths["test_labels"])
    return RawData(**arrays)


def _has_idx_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in IDX_FILES.values())


def _tfds_usable() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorflow_datasets"))


def _load_tfds(name: str) -> RawData:  # pragma: no cover - needs tensorflow (e.g. Colab)
    import tensorflow_datasets as tfds
    ds = tfds.as_numpy(tfds.load(TFDS_NAMES[name], batch_size=-1))
    tr, te = ds["train"], ds["test"]
    return RawData(tr["image"][..., 0], tr["label"], te["image"][..., 0], te["label"])


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # [1797, 8, 8]
    labels = d.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    pool, test = order[:1500], order[1500:]
    return RawData(images[pool], labels[pool], images[test], labels[test])


def data_sources(name: str, data_dir: str | None = None) -> list[Path]:
    """Folders that would be searched for ``name``'s IDX files, in order."""
    roots = [Path(p) for p in (data_dir, os.environ.get(ENV_DATA_DIR)) if p]
    folders = []
    for r in roots:
        folders += [r, r / name]
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_DIR)
    return folders


def load_raw(name: str, data_dir: str | None = None) -> RawData:
    """Find and load dataset ``name``; raise DataError naming every option if none works."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder")
    for folder in data_sources(name, data_dir):
        if _has_idx_files(folder):
            return load_idx_dir(folder)
    if data_dir is not None:
        missing = [f for f in IDX_FILES.values() if not (Path(data_dir) / f).is_file()]
        raise DataError(f"--data-dir {data_dir} lacks {', '.join(missing)} (also looked in {Path(data_dir) / name})")
    if _tfds_usable():
        return _load_tfds(name)
    extra = " or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else ""
    raise DataError(
        f"no {name} data found: pass --data-dir (or set {ENV_DATA_DIR}) to a folder with the four IDX .gz "
        f"files{extra}, install tensorflow + tensorflow-datasets, or use --dataset=digits, which needs nothing")


# ------------------------------------------------------------------------ splits
def to_unit_square(images: np.ndarray) -> np.ndarray:
    """uint8 28x28 (or float 8x8 digits) -> float32 32x32 in [0, 1], zero-padded."""
    if images.shape[1:] == (8, 8):  # digits: 3x pixel repetition, then 4 px border
        images = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)
        pad = 4
    else:
        images = images.astype(np.float32) / 255.0
        pad = 2
    out = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    assert out.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE), out.shape
    return out.astype(np.float32)


def make_splits(raw: RawData, dataset: str, variant: str = "full") -> Splits:
    """Split as PROTOCOL: permute the pool with SPLIT_SEED; train / val / test.

    variant "full": the whole training part; "anomaly": the training part without
    class 1; "labelled": the first `n_labelled` indices of the permutation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    pool_n, n_val, n_labelled = SPLIT_SIZES["digits" if dataset == "digits" else "idx"]
    x_pool, y_pool = to_unit_square(raw.train_images), raw.train_labels.astype(np.int32)
    if len(x_pool) != pool_n:
        raise DataError(f"{dataset}: training pool has {len(x_pool)} images, expected {pool_n}")
    perm = np.random.default_rng(SPLIT_SEED).permutation(pool_n)
    train_idx, val_idx = perm[: pool_n - n_val], perm[pool_n - n_val:]
    if variant == "anomaly":
        train_idx = train_idx[y_pool[train_idx] != ANOMALY_CLASS]
    elif variant == "labelled":
        train_idx = train_idx[:n_labelled]
    return Splits(x_pool[train_idx], y_pool[train_idx], x_pool[val_idx], y_pool[val_idx],
                  to_unit_square(raw.test_images), raw.test_labels.astype(np.int32), dataset, variant)


def load_splits(dataset: str, variant: str = "full", data_dir: str | None = None) -> Splits:
    return make_splits(load_raw(dataset, data_dir), dataset, variant)


# ------------------------------------------------------------------ the pytree
class Data(NamedTuple):
    """What the trainer and the tasks take: images and their labels, indexed as one.

    Batching, shuffling, vmapping and sharding treat it as a single argument
    (``jax.tree.map(lambda a: a[idx], data)``); unconditional models ignore y.
    """
    x: np.ndarray  # [N, 32, 32] float32 in [0, 1]
    y: np.ndarray  # [N] int32


def train_data(s: Splits) -> Data:
    return Data(s.x_train, s.y_train)


def val_data(s: Splits) -> Data:
    return Data(s.x_val, s.y_val)


def test_data(s: Splits) -> Data:
    return Data(s.x_test, s.y_test)
