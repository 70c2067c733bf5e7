"""Datasets and the bake-off splits.

Every dataset comes out as 32x32 float32 images in [0, 1] and int32 labels 0..9,
split as docs/protocol.md says: the training pool is permuted once with
``SPLIT_SEED``; its first part is the training set and its last part the
validation set; the test set is the dataset's own.

Sources, tried in order for the IDX datasets (mnist, fashion_mnist, kmnist):

1. ``data_dir`` (``--data-dir``) or the ``AE_JAX_DATA_DIR`` environment variable:
   a folder holding the four IDX ``.gz`` files, or holding a sub-folder named
   after the dataset that does; a ``data_dir`` without them is an error;
2. for fashion_mnist, ``/usr/share/datasets/fashion-mnist`` (Debian's
   ``dataset-fashion-mnist`` package);
3. the download cache (``ae_jax.data.download``): ``<user cache>/ae_jax/<name>``
   (``$AE_JAX_DATA_DIR/<name>`` when that is set, already searched in 1.),
   filled from the publishers' mirrors when incomplete; every file is checked
   against a pinned SHA-256. Without a network this fails within seconds;
4. data that tensorflow-datasets has already prepared, only when ``tensorflow``
   and ``tensorflow_datasets`` are importable. It comes after the download
   because TFDS would fetch the same files from the same hosts, and offline it
   retries for minutes, so ae_jax never asks it to download; and because the
   IDX files themselves are the reference: TFDS's records are put back into IDX
   order and, for mnist and fashion_mnist, checked against the published files
   (see ``_load_tfds``), so both routes give the same images and the same split.

Local files come first as they need no network and are what the user chose.
``load_raw`` records which source it used in ``RawData.source`` (and
``make_splits`` in ``Splits.source``).

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
import hashlib
import os
import re
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io import stderr_silenced
from .sources import (ANOMALY_CLASS, DATASETS, DEBIAN_FASHION_DIR, ENV_DATA_DIR, IDX_DATASETS, IDX_FILES,
                      IMAGE_SIDE, SPLIT_SEED, SPLIT_SIZES, TFDS_NAMES, VARIANTS, DataError)

class RawData(NamedTuple):
    train_images: np.ndarray  # [N, H, W] uint8 (digits: float32 in [0, 1])
    train_labels: np.ndarray  # [N] int
    test_images: np.ndarray   # [M, H, W]
    test_labels: np.ndarray   # [M]
    source: str = "unknown"   # where the data came from; see load_raw


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
    source: str = "unknown"  # RawData.source of the data it was split from


# --------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike, expect_dims: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes, checking its header.

    The header is two zero bytes, a type byte (0x08 = uint8), a byte giving the
    number of dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:  # gzip reads an empty file as empty content: say what it is
            raise DataError(f"{path}: empty file (0 bytes), an interrupted download or copy; download it again")
        with gzip.open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream
        raise DataError(f"{path}: not a readable gzip file ({e}); download it again") from None
    if not blob:
        raise DataError(f"{path}: the gzip file holds no data; download it again")
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


def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def idx_bytes(arr: np.ndarray) -> bytes:
    """The uncompressed IDX file of a uint8 array: 0, 0, 0x08, ndim, big-endian uint32 shape, data."""
    arr = np.ascontiguousarray(arr, np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def tfds_key_order(n: int, split: str) -> np.ndarray:
    """[n] int: ``order[p]`` is the IDX index of the record TFDS stores at position ``p`` of ``split``.

    TFDS's MNIST builders yield each record with its IDX index ``k`` as key, and
    TFDS writes a split's records sorted by ``md5(split_name + str(k))`` read as
    a 128-bit integer (``tensorflow_datasets.core.hashing``; TFDS keeps this order
    stable, as changing it would change every dataset's records).
    """
    def hashed(k: int) -> int:
        return int(hashlib.md5(split.encode() + str(k).encode()).hexdigest(), 16)
    return np.array(sorted(range(n), key=hashed), dtype=np.int64)


def tfds_file_order(tfds_ids) -> np.ndarray:
    """Indices that put records read with ``add_tfds_id`` in their stored order.

    A TFDS id is ``<dataset>-<split>.<format>-<shard>-of-<shards>__<index in shard>``;
    the stored order is by shard, then index, whatever order they were read in.
    """
    shard, index = [], []
    for tid in tfds_ids:
        tid = tid.decode() if isinstance(tid, bytes) else str(tid)
        prefix, _, i = tid.rpartition("__")
        match = re.search(r"-(\d+)-of-\d+$", prefix)
        if match is None or not i.isdigit():
            raise DataError(f"tensorflow-datasets gave an unexpected record id {tid!r}")
        shard.append(int(match.group(1)))
        index.append(int(i))
    return np.lexsort((np.array(index), np.array(shard)))


class _QuietTF:
    """Silence tensorflow's and TFDS's log lines while TFDS runs (a refused load prints one line).

    Python's loggers are raised to ERROR, and the process's own stderr (file
    descriptor 2) points at the null device meanwhile: tensorflow's C++ code
    writes there directly, and newer releases (2.21) print their start-up lines
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says. What TFDS raises still arrives, as
    the one-line DataError of ``_load_tfds``.
    """

    def __enter__(self):
        import logging
        self.loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "tensorflow_datasets")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)
        self.silenced = stderr_silenced()
        self.silenced.__enter__()
        return self

    def __exit__(self, *exc):
        self.silenced.__exit__(*exc)
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def _load_tfds(name: str, data_dir: str | None = None) -> RawData:
    """Read ``name`` as tensorflow-datasets prepared it, in the IDX files' order.

    Only data TFDS has already prepared is read (in ``data_dir``, else TFDS's
    default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); TFDS is never asked
    to download, so a missing dataset fails at once with a DataError.

    TFDS stores records in its own order (see ``tfds_key_order``). Each split is
    put back into IDX order: records are read with their TFDS ids, sorted into
    stored order (``tfds_file_order``), and the record stored at position ``p``
    goes to IDX index ``tfds_key_order(n, split)[p]``. So the protocol's split
    (a fixed permutation of IDX indices) picks the same images on both routes.
    For mnist and fashion_mnist this is then checked, not assumed: each array,
    written back as an uncompressed IDX file, must have the pinned SHA-256 of the
    published file (``download.DIGESTS``), or the load is refused. No such digest
    is known for kmnist, whose TFDS copy is reordered by the same rule but not
    checked (TFDS checked the downloaded ``.gz`` files against the same published
    digests when it prepared them).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ log lines on import
    where = data_dir or "tensorflow-datasets' data folder"
    with _QuietTF():
        try:
            import tensorflow_datasets as tfds
            builder = tfds.builder(TFDS_NAMES[name], data_dir=data_dir)
            where = builder.data_dir
            arrays = {}
            for split in ("train", "test"):
                ds = builder.as_dataset(split=split, shuffle_files=False,
                                        read_config=tfds.ReadConfig(add_tfds_id=True))
                parts = {"image": [], "label": [], "tfds_id": []}
                for batch in tfds.as_numpy(ds.batch(10_000)):
                    for k in parts:
                        parts[k].append(batch[k])
                images, labels, ids = (np.concatenate(parts[k]) for k in ("image", "label", "tfds_id"))
                stored = tfds_file_order(ids)
                to_idx = tfds_key_order(len(stored), split)
                for key, values in (("images", images[..., 0]), ("labels", labels)):
                    out = np.empty_like(values, dtype=np.uint8)
                    out[to_idx] = values[stored]
                    arrays[f"{split}_{key}"] = out
        except DataError:
            raise
        except AssertionError as e:
            if "could not find data" in str(e):
                raise DataError(f"tensorflow-datasets has not prepared {name} in {where}") from None
            raise DataError(f"tensorflow-datasets could not read {name} in {where}: {_one_line(e)}") from None
        except Exception as e:  # anything TFDS or tensorflow raise: a one-line reason, never a traceback
            raise DataError(f"tensorflow-datasets could not read {name} in {where}: "
                            f"{type(e).__name__}: {_one_line(e)}") from None
    from .download import DIGESTS
    for key, filename in IDX_FILES.items():
        raw_digest = DIGESTS[name][filename][1]
        if raw_digest is not None and hashlib.sha256(idx_bytes(arrays[key])).hexdigest() != raw_digest:
            raise DataError(
                f"tensorflow-datasets' {name} in {where} does not reproduce the published {filename} "
                f"(SHA-256 differs; wrong data or an unknown record order): pass --data-dir with the IDX files")
    return RawData(**arrays, source=f"tfds:{where}")


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # [1797, 8, 8]
    labels = d.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    pool, test = order[:1500], order[1500:]
    return RawData(images[pool], labels[pool], images[test], labels[test], "sklearn-digits")


def data_sources(name: str, data_dir: str | None = None) -> list[Path]:
    """Folders that would be searched for ``name``'s IDX files, in order."""
    roots = [Path(p).expanduser() for p in (data_dir, os.environ.get(ENV_DATA_DIR)) if p]
    folders = []
    for r in roots:
        folders += [r, r / name]
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_DIR)
    return folders


def load_raw(name: str, data_dir: str | None = None) -> RawData:
    """Find and load dataset ``name`` (sources in the module docstring's order).

    ``source`` of the result says where the data came from: ``idx:<folder>``,
    ``download:<folder>`` (fetched now or earlier into the user cache), ``tfds:<folder>``
    or ``sklearn-digits``. Raise a one-line DataError naming every option if none works.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        if data_dir is not None:  # would otherwise pass unnoticed: the user meant other data, or another dataset
            raise DataError(f"--data-dir {data_dir}: digits comes with scikit-learn and reads no folder; leave "
                            f"--data-dir out, or pick a dataset that reads one ({', '.join(IDX_DATASETS)})")
        return _load_digits()
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder")
    for folder in data_sources(name, data_dir):
        if _has_idx_files(folder):
            return load_idx_dir(folder)._replace(source=f"idx:{folder.absolute()}")
    if data_dir is not None:
        missing = [f for f in IDX_FILES.values() if not (Path(data_dir) / f).is_file()]
        raise DataError(f"--data-dir {data_dir} lacks {', '.join(missing)} (also looked in {Path(data_dir) / name})")
    from . import download
    reasons = []
    try:
        folder = download.fetch(name)  # no network needed when the cache already holds the files
        return load_idx_dir(folder)._replace(source=f"download:{folder.absolute()}")
    except download.DownloadError as e:
        reasons.append(str(e))
    if _tfds_usable():
        try:
            return _load_tfds(name)
        except DataError as e:
            reasons.append(str(e))
    extra = " or `apt-get install dataset-fashion-mnist`" if name == "fashion_mnist" else ""
    raise DataError(
        f"no {name} data found ({'; '.join(reasons)}): pass --data-dir (or set {ENV_DATA_DIR}) to a folder "
        f"with the four IDX .gz files{extra}, or use --dataset=digits, which needs nothing")


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
    """Split as docs/protocol.md says: permute the pool with SPLIT_SEED; train / val / test.

    variant "full": the whole training part; "anomaly": the training part without
    class 1; "labelled": the first `n_labelled` indices of the permutation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    pool_n, n_val, n_labelled = SPLIT_SIZES["digits" if dataset == "digits" else "idx"]
    x_pool, y_pool = to_unit_square(raw.train_images), raw.train_labels.astype(np.int32)
    if len(x_pool) != pool_n:
        raise DataError(f"{dataset}: training pool has {len(x_pool)} images, expected {pool_n}")
    if len(raw.test_images) == 0:
        raise DataError(f"{dataset}: the test set is empty; every result is measured on it (source: {raw.source})")
    perm = np.random.default_rng(SPLIT_SEED).permutation(pool_n)
    train_idx, val_idx = perm[: pool_n - n_val], perm[pool_n - n_val:]
    if variant == "anomaly":
        train_idx = train_idx[y_pool[train_idx] != ANOMALY_CLASS]
    elif variant == "labelled":
        train_idx = train_idx[:n_labelled]
    return Splits(x_pool[train_idx], y_pool[train_idx], x_pool[val_idx], y_pool[val_idx],
                  to_unit_square(raw.test_images), raw.test_labels.astype(np.int32), dataset, variant,
                  raw.source)


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
