"""Containers shared by every stage: a loaded data set and an audit split."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A classification data set held in host memory.

  Attributes:
    name: short name (``digits``, ``mnist``, a TFDS name, or the npz stem).
    x_train: float32 ``(N, *input_shape)``; images are channel-last (H, W, C),
      scaled and standardised with the training mean/std per channel.
    y_train: int32 ``(N,)`` in ``[0, num_classes)``.
    x_test: float32 ``(M, *input_shape)``.
    y_test: int32 ``(M,)``.
    num_classes: number of classes.
    input_shape: shape of one input, without the batch axis.
    source: where it came from (``embedded:sklearn``, ``npz:PATH``, ``tfds:DIR``).
    fingerprint: sha256 hex digest of the raw arrays; ties splits and
      checkpoints to the exact data they were made from.
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  input_shape: tuple[int, ...]
  source: str
  fingerprint: str

  @property
  def is_image(self) -> bool:
    return len(self.input_shape) == 3


@dataclasses.dataclass(frozen=True, eq=False)
class AuditSplit:
  """Index sets of one audit, all as sorted int64 arrays.

  ``train``, ``forget``, ``retain`` and ``ref`` index ``Dataset.x_train`` (the
  pool); ``test`` indexes ``Dataset.x_test``.

  Attributes:
    train: D, the original model's training set.
    forget: Du ⊂ D, the unlearning request.
    retain: Dr = D \\ Du.
    ref: D_ref, held-out records of the same pool that no model trains on
      (the non-member reference); disjoint from D.
    test: the test split.
    seed: the seed the split was drawn with.
    forget_mode: ``random``, ``classes`` or ``indices``.
    forget_classes: the removed classes when ``forget_mode == 'classes'``.
    dataset_fingerprint: ``Dataset.fingerprint`` of the data it indexes.
  """
  train: np.ndarray
  forget: np.ndarray
  retain: np.ndarray
  ref: np.ndarray
  test: np.ndarray
  seed: int
  forget_mode: str
  forget_classes: tuple[int, ...]
  dataset_fingerprint: str
