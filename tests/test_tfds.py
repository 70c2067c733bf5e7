"""The tensorflow-datasets route: real TFDS records, put back into IDX order, the same split."""
from __future__ import annotations

import gzip
import importlib.util
import os
import socket
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from _helpers import MNIST_DIR, assert_one_line_error, cli_command, subprocess_env
from ae_jax.data import loading as data
from ae_jax.data import IDX_FILES, DataError, load_idx_dir

if not all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorflow_datasets")):
    pytest.skip("tensorflow and tensorflow-datasets are not installed (pip install -e '.[tfds]')",
                allow_module_level=True)


@pytest.fixture(scope="module")
def tfds():
    """tensorflow_datasets, imported only when these tests run (not when the suite is collected)."""
    import tensorflow_datasets
    return tensorflow_datasets

needs_mnist = pytest.mark.skipif(not all((MNIST_DIR / f).is_file() for f in IDX_FILES.values()),
                                 reason=f"MNIST IDX files not found in {MNIST_DIR}")


@pytest.fixture(scope="module")
def idx_mnist():
    return load_idx_dir(MNIST_DIR)


@needs_mnist
def test_records_written_by_tfds_come_back_in_idx_order(tfds, tmp_path, idx_mnist, monkeypatch):
    """TFDS's own builder writes a small MNIST-format set (the first 600 + 100 MNIST images).

    The set is registered under kmnist, which has no pinned content digest, so the
    short set is not refused; the builder code is MNIST's (KMNIST subclasses it).
    """
    n_train, n_test = 600, 100
    extracted = {}
    for key, name in (("train_data", IDX_FILES["train_images"]), ("train_labels", IDX_FILES["train_labels"]),
                      ("test_data", IDX_FILES["test_images"]), ("test_labels", IDX_FILES["test_labels"])):
        extracted[key] = tmp_path / "extracted" / name[:-3]
        extracted[key].parent.mkdir(exist_ok=True)
        extracted[key].write_bytes(gzip.decompress((MNIST_DIR / name).read_bytes()))
    builder = tfds.builder("kmnist", data_dir=str(tmp_path / "tfds"))
    module = sys.modules[type(builder).__module__]
    monkeypatch.setattr(module, "_TRAIN_EXAMPLES", n_train)
    monkeypatch.setattr(module, "_TEST_EXAMPLES", n_test)
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, urls: {k: str(v) for k, v in extracted.items()}):
        builder.download_and_prepare()

    raw = data._load_tfds("kmnist", data_dir=str(tmp_path / "tfds"))
    assert raw.source == f"tfds:{builder.data_dir}"
    np.testing.assert_array_equal(raw.train_images, idx_mnist.train_images[:n_train])
    np.testing.assert_array_equal(raw.train_labels, idx_mnist.train_labels[:n_train])
    np.testing.assert_array_equal(raw.test_images, idx_mnist.test_images[:n_test])
    np.testing.assert_array_equal(raw.test_labels, idx_mnist.test_labels[:n_test])
    assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.uint8
    # TFDS's stored order is not the IDX order: without the re-indexing the images would differ
    stored = tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False).batch(n_train).get_single_element())
    assert not np.array_equal(stored["image"][..., 0], idx_mnist.train_images[:n_train])


def _serve_in_tfds_order(idx: data.RawData, shards: int = 3):
    """An ``as_dataset`` for tfds.testing.mock_data: MNIST's records as TFDS stores them.

    Record IDX index ``tfds_key_order(n)[p]`` at stored position ``p``, spread over
    ``shards`` shards that are read last shard first.
    """
    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        import tensorflow as tf
        images, labels = (idx.train_images, idx.train_labels) if split == "train" else (idx.test_images,
                                                                                       idx.test_labels)
        order = data.tfds_key_order(len(labels), split)
        ids, read = [], []
        for s, positions in enumerate(np.array_split(np.arange(len(labels)), shards)):
            ids += [f"mnist-{split}.tfrecord-{s:05d}-of-{shards:05d}__{i}" for i in range(len(positions))]
            read.insert(0, positions)
        read = np.concatenate(read)
        return tf.data.Dataset.from_tensor_slices({
            "image": images[order][read][..., None], "label": labels[order][read].astype(np.int64),
            "tfds_id": np.array(ids)[read]})
    return as_dataset


@needs_mnist
def test_mocked_tfds_mnist_gives_the_idx_split(tfds, idx_mnist):
    with tfds.testing.mock_data(as_dataset_fn=_serve_in_tfds_order(idx_mnist),
                                policy=tfds.testing.MockPolicy.USE_CODE):
        raw = data._load_tfds("mnist")
    assert raw.source.startswith("tfds:")
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    for variant in data.VARIANTS:
        via_tfds, via_idx = data.make_splits(raw, "mnist", variant), data.make_splits(idx_mnist, "mnist", variant)
        assert via_tfds.source == raw.source
        for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(via_tfds, field), getattr(via_idx, field), err_msg=field)
    full = data.make_splits(raw, "mnist")
    assert full.x_train.shape == (55000, 32, 32) and full.x_train.dtype == np.float32
    assert full.y_train.dtype == np.int32 and set(np.unique(full.y_train)) == set(range(10))
    assert np.all(full.x_train[:, :2] == 0) and np.all(full.x_train[:, -2:] == 0)
    assert np.all(full.x_train[:, :, :2] == 0) and np.all(full.x_train[:, :, -2:] == 0)
    assert full.x_train.max() == 1.0


def test_fabricated_records_load_as_kmnist_and_are_refused_as_mnist(tfds):
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        raw = data._load_tfds("kmnist")
        with pytest.raises(DataError) as err:
            data._load_tfds("mnist")
    assert raw.train_images.shape == (12, 28, 28) and raw.train_images.dtype == np.uint8
    assert raw.test_labels.shape == (12,) and raw.test_labels.max() <= 9
    assert data.to_unit_square(raw.train_images).shape == (12, 32, 32)
    message = str(err.value)
    assert "\n" not in message and "does not reproduce the published" in message and "--data-dir" in message


def test_unprepared_data_fails_at_once_with_one_line(tmp_path):
    with pytest.raises(DataError, match="has not prepared mnist") as err:
        data._load_tfds("mnist", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_tensorflow_is_silent_while_tfds_runs_and_stderr_is_given_back(capfd):
    with data._QuietTF():
        os.write(2, b"from C++ code\n")  # as tensorflow's start-up lines are written
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_cli_without_data_network_or_prepared_tfds_exits_2_with_one_line(tmp_path):
    """The whole chain offline: no IDX files, the mirror refuses connections, TFDS unprepared."""
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = subprocess_env(AE_JAX_MIRRORS=f"http://127.0.0.1:{port}/", TFDS_DATA_DIR=tmp_path / "tfds",
                         XDG_CACHE_HOME=tmp_path / "cache")
    env.pop(data.ENV_DATA_DIR, None)
    proc = subprocess.run(cli_command(["--model=vanilla", "--dataset=kmnist", "--epochs=1",
                                       f"--out={tmp_path / 'run'}"]),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "no kmnist data found", "unreachable", "has not prepared kmnist", "--dataset=digits")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache" / "ae_jax").exists()
