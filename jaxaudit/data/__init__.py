"""Data: loading (embedded, npz, TFDS without TensorFlow), splits, batching."""

from __future__ import annotations

from jaxaudit.data.batching import batch_indices, num_batches, pad_to_multiple
from jaxaudit.data.datasets import (EMBEDDED_DATASETS, dataset_from_arrays,
                                    fingerprint_arrays, load_dataset, load_npz)
from jaxaudit.data.splits import (load_split, make_split, read_index_file,
                                  save_split, split_hash, validate_split)
from jaxaudit.data.tfds_io import import_npz, list_prepared
from jaxaudit.data.types import AuditSplit, Dataset
from jaxaudit.data.validate import validate_arrays

__all__ = [
    'AuditSplit',
    'Dataset',
    'EMBEDDED_DATASETS',
    'batch_indices',
    'dataset_from_arrays',
    'fingerprint_arrays',
    'import_npz',
    'list_prepared',
    'load_dataset',
    'load_npz',
    'load_split',
    'make_split',
    'num_batches',
    'pad_to_multiple',
    'read_index_file',
    'save_split',
    'split_hash',
    'validate_arrays',
    'validate_split',
]
