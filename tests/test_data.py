"""Data: the IDX reader (good and corrupt files), data sources, and the protocol's splits."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from _helpers import MNIST_DIR
from ae_jax.data import loading as data
from ae_jax.data import IDX_FILES, DataError, load_idx_dir, load_raw, read_idx


# ------------------------------------------------------------------ IDX files
def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def fake_idx_set(folder: Path, n_train=12, n_test=5, seed=0) -> dict[str, np.ndarray]:
    """Write the four IDX .gz files of a tiny MNIST-like dataset into `folder`."""
    r = np.random.default_rng(seed)
    arrays = {
        "train_images": r.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": r.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": r.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": r.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        write_gz(folder / IDX_FILES[key], idx_bytes(arr))
    return arrays


def assert_raw_equal(raw: data.RawData, arrays: dict):
    for key, arr in arrays.items():
        np.testing.assert_array_equal(getattr(raw, key), arr)


def test_good_idx_set_loads(tmp_path):
    arrays = fake_idx_set(tmp_path)
    raw = load_idx_dir(tmp_path)
    assert raw.train_images.shape == (12, 28, 28) and raw.train_images.dtype == np.uint8
    assert_raw_equal(raw, arrays)


def test_load_raw_finds_the_files_in_data_dir_or_its_dataset_subfolder(tmp_path):
    arrays = fake_idx_set(tmp_path / "flat")
    assert_raw_equal(load_raw("mnist", data_dir=str(tmp_path / "flat")), arrays)
    nested = fake_idx_set(tmp_path / "root" / "kmnist", seed=1)
    assert_raw_equal(load_raw("kmnist", data_dir=str(tmp_path / "root")), nested)


def test_load_raw_reads_the_environment_variable(tmp_path, monkeypatch):
    arrays = fake_idx_set(tmp_path)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path))
    assert_raw_equal(load_raw("mnist"), arrays)


def test_a_leading_tilde_means_the_home_folder_in_the_flag_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    arrays = fake_idx_set(tmp_path / "data" / "mnist")
    assert_raw_equal(load_raw("mnist", data_dir="~/data/mnist"), arrays)
    monkeypatch.setenv(data.ENV_DATA_DIR, "~/data")  # quoted in the shell: no expansion there
    assert_raw_equal(load_raw("mnist"), arrays)


def test_a_tiny_idx_set_is_refused_by_the_split_with_its_size(tmp_path):
    fake_idx_set(tmp_path)
    with pytest.raises(DataError, match="12 images, expected 60000"):
        data.load_splits("mnist", data_dir=str(tmp_path))


CORRUPTIONS = {
    # name: (file to damage, payload or callable(arrays) -> payload, expected message part)
    "bad_magic": ("train_images", lambda a: b"\x00\x00\x09\x03" + idx_bytes(a["train_images"])[4:], "magic"),
    "wrong_dims": ("test_labels", lambda a: idx_bytes(a["test_labels"].reshape(5, 1)), "2 dimensions, expected 1"),
    "truncated_data": ("train_images", lambda a: idx_bytes(a["train_images"])[:-100], "truncated"),
    "truncated_header": ("test_images", lambda a: idx_bytes(a["test_images"])[:9], "truncated"),
    "extra_bytes": ("train_labels", lambda a: idx_bytes(a["train_labels"]) + b"\x01\x02", "corrupt"),
    "count_mismatch": ("train_labels", lambda a: idx_bytes(a["train_labels"][:11]), "12 images but"),
    "label_10": ("test_labels", lambda a: idx_bytes(np.array([1, 2, 10, 3, 4])), "label 10 outside 0..9"),
    "not_28x28": ("test_images", lambda a: idx_bytes(np.zeros((5, 27, 28), np.uint8)), "expected 28x28"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_idx_file_raises_data_error_naming_the_file(tmp_path, case):
    key, payload, message = CORRUPTIONS[case]
    arrays = fake_idx_set(tmp_path)
    write_gz(tmp_path / IDX_FILES[key], payload(arrays))
    with pytest.raises(DataError) as err:
        load_idx_dir(tmp_path)
    assert IDX_FILES[key] in str(err.value)
    assert message in str(err.value)
    with pytest.raises(DataError):  # the same through the public loader
        load_raw("mnist", data_dir=str(tmp_path))


def test_count_mismatch_names_both_files(tmp_path):
    arrays = fake_idx_set(tmp_path)
    write_gz(tmp_path / IDX_FILES["test_labels"], idx_bytes(arrays["test_labels"][:3]))
    with pytest.raises(DataError, match="5 images but .* 3 labels") as err:
        load_idx_dir(tmp_path)
    assert IDX_FILES["test_images"] in str(err.value) and IDX_FILES["test_labels"] in str(err.value)


@pytest.mark.parametrize("content", [b"plain bytes, not gzip at all" * 4, b""], ids=["not_gzip", "empty"])
def test_file_that_is_not_gzip_raises_data_error(tmp_path, content):
    fake_idx_set(tmp_path)
    (tmp_path / IDX_FILES["train_images"]).write_bytes(content)
    with pytest.raises(DataError) as err:
        load_idx_dir(tmp_path)
    assert IDX_FILES["train_images"] in str(err.value)


def test_truncated_gzip_stream_raises_data_error(tmp_path):
    fake_idx_set(tmp_path)
    path = tmp_path / IDX_FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="gzip") as err:
        read_idx(path, 3)
    assert str(path) in str(err.value)


def test_damaged_deflate_stream_raises_data_error(tmp_path):
    """A flipped byte inside the compressed data makes zlib fail before gzip's CRC check can."""
    fake_idx_set(tmp_path)
    path = tmp_path / IDX_FILES["train_labels"]
    raw = bytearray(gzip.compress(gzip.decompress(path.read_bytes()), mtime=0))  # a header of 10 bytes, no name
    raw[10] |= 0b110  # the first deflate block's type bits set to 11, a type that does not exist
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="gzip") as err:
        read_idx(path, 1)
    assert str(path) in str(err.value)


def test_an_empty_test_set_is_refused_before_anything_trains():
    raw = load_raw("digits")
    empty = raw._replace(test_images=raw.test_images[:0], test_labels=raw.test_labels[:0])
    with pytest.raises(DataError, match="test set is empty"):
        data.make_splits(empty, "digits")


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        read_idx(tmp_path / "nothing.gz", 1)
    assert "nothing.gz" in str(err.value)


def test_missing_data_dir_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_raw("mnist", data_dir=str(tmp_path / "does_not_exist"))


def test_data_dir_without_the_files_lists_what_is_missing(tmp_path):
    fake_idx_set(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError) as err:
        load_raw("mnist", data_dir=str(tmp_path))
    assert IDX_FILES["test_labels"] in str(err.value)
    assert IDX_FILES["train_images"] not in str(err.value)


def test_no_data_anywhere_says_what_to_do(tmp_path, monkeypatch):
    from ae_jax.data import download
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(download, "user_cache_root", lambda: tmp_path / "empty_cache")
    monkeypatch.setenv(download.ENV_MIRRORS, "")
    monkeypatch.setattr(data, "_tfds_usable", lambda: False)
    with pytest.raises(DataError, match="--data-dir") as err:
        load_raw("kmnist")
    assert "digits" in str(err.value) and "\n" not in str(err.value)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_raw("cifar10")


# ------------------------------------------------------------------ splits
def test_to_unit_square_pads_idx_images_by_two_and_scales():
    img = np.full((2, 28, 28), 255, np.uint8)
    img[1, 0, 0] = 51
    out = data.to_unit_square(img)
    assert out.shape == (2, 32, 32) and out.dtype == np.float32
    assert out[0, 2:30, 2:30].min() == 1.0
    assert out[0].sum() == 28 * 28  # the 2 px border is zero
    assert out[1, 2, 2] == pytest.approx(0.2)


def test_digits_full_split(digits):
    assert (digits.dataset, digits.variant) == ("digits", "full")
    assert digits.x_train.shape == (1350, 32, 32)
    assert digits.x_val.shape == (150, 32, 32)
    assert digits.x_test.shape == (297, 32, 32)
    assert digits.y_train.shape == (1350,) and digits.y_train.dtype == np.int32
    for x in (digits.x_train, digits.x_val, digits.x_test):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
        # 8x8 digits enlarged 3x (24x24) and centred with a 4 px zero border
        assert np.all(x[:, :4] == 0) and np.all(x[:, -4:] == 0) and np.all(x[:, :, :4] == 0)
        np.testing.assert_array_equal(x[:, 4:28:3, 4:28:3], x[:, 5:28:3, 6:28:3])
    assert set(np.unique(digits.y_train)) == set(range(10))


def test_digits_split_is_fixed_and_variants_share_val_and_test(digits):
    again = data.load_splits("digits")
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    anomaly = data.load_splits("digits", "anomaly")
    labelled = data.load_splits("digits", "labelled")
    for v in (anomaly, labelled):
        np.testing.assert_array_equal(v.x_val, digits.x_val)
        np.testing.assert_array_equal(v.y_test, digits.y_test)
    assert not np.any(anomaly.y_train == 1)
    np.testing.assert_array_equal(anomaly.x_train, digits.x_train[digits.y_train != 1])
    assert len(labelled.x_train) == 135
    np.testing.assert_array_equal(labelled.x_train, digits.x_train[:135])
    np.testing.assert_array_equal(labelled.y_train, digits.y_train[:135])
    with pytest.raises(ValueError, match="variant"):
        data.make_splits(data.load_raw("digits"), "digits", "bogus")


@pytest.mark.skipif(not (MNIST_DIR / IDX_FILES["train_images"]).is_file(),
                    reason=f"MNIST IDX files not found in {MNIST_DIR}")
def test_mnist_splits_follow_the_protocol():
    raw = load_raw("mnist", data_dir=str(MNIST_DIR))
    full = data.make_splits(raw, "mnist", "full")
    assert (len(full.x_train), len(full.x_val), len(full.x_test)) == (55_000, 5_000, 10_000)
    assert full.x_train.shape[1:] == (32, 32) and 0.0 == full.x_train.min() and full.x_train.max() == 1.0
    assert np.all(full.x_train[:, :2] == 0) and np.all(full.x_train[:, :, -2:] == 0)
    anomaly = data.make_splits(raw, "mnist", "anomaly")
    assert not np.any(anomaly.y_train == 1)
    assert len(anomaly.x_train) == 55_000 - int(np.sum(full.y_train == 1))
    assert len(anomaly.x_val) == 5_000 and np.any(anomaly.y_val == 1)  # validation keeps every class
    labelled = data.make_splits(raw, "mnist", "labelled")
    assert len(labelled.x_train) == 550
    np.testing.assert_array_equal(labelled.y_train, full.y_train[:550])
    # the permutation is the protocol's, split seed 42 (docs/protocol.md): the validation set is the pool's
    # last 5 000, the training set its first 55 000 in that order
    perm = np.random.default_rng(42).permutation(60_000)
    np.testing.assert_array_equal(full.y_val, raw.train_labels[perm[55_000:]])
    np.testing.assert_array_equal(full.y_train, raw.train_labels[perm[:55_000]])
