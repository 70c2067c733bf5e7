"""What the datasets are: their names, files, split sizes, and the one error every data problem raises.

A leaf: the loading code (``loading``) and the downloader (``download``) both read it, and neither reads the other
at import time.
"""
from __future__ import annotations

from pathlib import Path

SPLIT_SEED = 42
IMAGE_SIDE = 32
DATASETS = ("mnist", "fashion_mnist", "kmnist", "digits")
IDX_DATASETS = DATASETS[:3]  # the MNIST-like sets, read from IDX files (digits comes with scikit-learn)
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
