"""The datasets: MNIST-like IDX files (downloaded and checked when missing), TFDS, scikit-learn's digits, and the
bake-off's splits.

    sources.py   the datasets' names, files and split sizes, and DataError (a leaf)
    loading.py   reading IDX files, TFDS and digits; the splits of docs/protocol.md (``load_splits``)
    download.py  fetching the IDX files into the user cache, each checked against a pinned SHA-256
"""
from .loading import (Data, RawData, Splits, data_sources, idx_bytes, load_idx_dir, load_raw, load_splits,
                      make_splits, read_idx, test_data, tfds_file_order, tfds_key_order, to_unit_square, train_data,
                      val_data)
from .sources import (ANOMALY_CLASS, DATASETS, DEBIAN_FASHION_DIR, ENV_DATA_DIR, IDX_DATASETS, IDX_FILES, IMAGE_SIDE,
                      SPLIT_SEED, SPLIT_SIZES, TFDS_NAMES, VARIANTS, DataError)

__all__ = ["ANOMALY_CLASS", "DATASETS", "DEBIAN_FASHION_DIR", "Data", "DataError", "ENV_DATA_DIR", "IDX_DATASETS",
           "IDX_FILES", "IMAGE_SIDE", "RawData", "SPLIT_SEED", "SPLIT_SIZES", "Splits", "TFDS_NAMES", "VARIANTS",
           "data_sources", "idx_bytes", "load_idx_dir", "load_raw", "load_splits", "make_splits", "read_idx",
           "test_data", "tfds_file_order", "tfds_key_order", "to_unit_square", "train_data", "val_data"]
