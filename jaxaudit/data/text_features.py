"""Text as fixed-length features: speaker attribution on tiny-shakespeare.

``shakespeare_speakers`` is a small *text* classification data set for the
classification pipeline: each speech of tiny-shakespeare becomes a bag of
hashed word n-grams (fastText-style: unigram and bigram counts hashed into
``num_features`` buckets, then ``log1p``), and the package's MLP classifies
it by speaker. The ten speakers with the most speeches are kept (GLOUCESTER,
DUKE VINCENTIO, MENENIUS, ...: 962 speeches of at least ten words), so the
data set is about the size of ``digits`` and trains in seconds on a CPU.

Why hashing: the feature map needs no vocabulary file (nothing is fitted, so
the test speeches cannot leak into it and the features of a speech do not
depend on which other speeches are loaded), and the bucket of an n-gram is
``zlib.crc32`` of its UTF-8 bytes, stable across processes, platforms and
Python versions (never Python's salted ``hash()``), so the data set's
fingerprint is reproducible.

The split needs no random generator (like :func:`jaxaudit.data.datasets.
load_digits`): within each speaker, in file order, every fifth speech (ranks
4, 9, ...) goes to test: 773 train / 189 test speeches.
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Sequence

import numpy as np

from jaxaudit.data.datasets import dataset_from_arrays
from jaxaudit.data.types import Dataset
from jaxaudit.errors import ConfigError, DataError

# The tiny-shakespeare file name, inside a data_dir or the shared data folder.
SHAKESPEARE_FILE = 'tiny_shakespeare.txt'
# The project's shared data folder: ../shared/data from the repository root.
SHARED_DATA_DIR = os.path.abspath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared',
    'data'))
# Name of the data set (the key of load_dataset).
NAME = 'shakespeare_speakers'

_TOKEN = re.compile(r"[a-z']+")


def _positive_int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < 1):
    raise ConfigError(f'{what} must be an int >= 1, got {value!r}')
  return int(value)


def tokens(text: str) -> list[str]:
  """Lower-cased word tokens of a text: the matches of ``[a-z']+``."""
  return _TOKEN.findall(text.lower())


def ngram_bucket(ngram: str, num_features: int) -> int:
  """The bucket of an n-gram (its words joined by one space): a stable hash,
  ``zlib.crc32`` of the UTF-8 bytes modulo ``num_features``."""
  return zlib.crc32(ngram.encode('utf-8')) % num_features


def hashed_ngram_features(texts: Sequence[str], num_features: int = 2048,
                          ngrams: Sequence[int] = (1, 2)) -> np.ndarray:
  """Bags of hashed word n-grams, ``log1p`` of the counts.

  Each text is lower-cased and split into word tokens (``[a-z']+``); every
  n-gram of ``n`` consecutive tokens, for each ``n`` in ``ngrams``, is
  counted in bucket :func:`ngram_bucket` (``' '.join(words)``, crc32 modulo
  ``num_features``). Deterministic across processes and machines.

  Args:
    texts: N strings.
    num_features: F, the number of hash buckets.
    ngrams: the n-gram lengths counted (each >= 1, e.g. ``(1, 2)``).

  Returns:
    float32 ``(N, F)``: ``log1p`` of the n-gram counts per bucket (a text
    with no token is a row of zeros).

  Raises:
    ConfigError: num_features or ngrams invalid.
    DataError: a text is not a str.
  """
  num_features = _positive_int(num_features, 'num_features')
  if isinstance(ngrams, (int, np.integer)) or not len(ngrams):
    raise ConfigError(f'ngrams must be a non-empty sequence of ints >= 1, '
                      f'got {ngrams!r}')
  ns = sorted({_positive_int(n, 'each n of ngrams') for n in ngrams})
  texts = list(texts)
  rows, cols = [], []
  cache: dict[str, int] = {}
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise DataError(f'text {i} is a {type(text).__name__}, not str')
    words = tokens(text)
    for n in ns:
      for j in range(len(words) - n + 1):
        gram = ' '.join(words[j:j + n])
        bucket = cache.get(gram)
        if bucket is None:
          bucket = cache[gram] = ngram_bucket(gram, num_features)
        cols.append(bucket)
      rows.extend([i] * max(0, len(words) - n + 1))
  flat = (np.asarray(rows, np.int64) * num_features
          + np.asarray(cols, np.int64))
  counts = np.bincount(flat, minlength=len(texts) * num_features)
  return np.log1p(counts.reshape(len(texts), num_features)).astype(np.float32)


def shakespeare_path(data_dir: str | os.PathLike[str] | None = None) -> str:
  """``DATA_DIR/tiny_shakespeare.txt`` if it exists, else the shared copy
  (``../shared/data`` from the repository root).

  Raises:
    DataError: neither file exists (one line: where it looked, how to fix).
  """
  looked = []
  if data_dir is not None:
    looked.append(os.path.abspath(os.path.join(os.fspath(data_dir),
                                               SHAKESPEARE_FILE)))
  looked.append(os.path.join(SHARED_DATA_DIR, SHAKESPEARE_FILE))
  for path in looked:
    if os.path.isfile(path):
      return path
  raise DataError(
      f'{NAME} needs {SHAKESPEARE_FILE}, not found (looked at '
      f'{", ".join(looked)}); pass data_dir=DIR (--config.data_dir=DIR) with '
      f'DIR holding {SHAKESPEARE_FILE}')


def _speakers_by_frequency(corpus) -> list[int]:
  """Group ids of a corpus, most documents first, ties broken by name."""
  counts = np.bincount(np.asarray(corpus.groups),
                       minlength=len(corpus.group_names))
  return sorted(range(len(counts)),
                key=lambda g: (-int(counts[g]), corpus.group_names[g]))


def load_shakespeare_speakers(data_dir: str | os.PathLike[str] | None = None,
                              num_speakers: int = 10,
                              num_features: int = 2048) -> Dataset:
  """Speaker attribution on tiny-shakespeare (see the module docstring).

  The speeches (:func:`jaxaudit.text.corpus.shakespeare_speeches`: at least
  ten words) of the ``num_speakers`` speakers with the most speeches (ties
  broken by name); label ``k`` is the k-th most frequent speaker. Within
  each speaker, in file order, every fifth speech (ranks 4, 9, ...) goes to
  test; no random generator.

  Args:
    data_dir: a folder holding ``tiny_shakespeare.txt``; None (or a folder
      without it) reads the shared copy (:func:`shakespeare_path`).
    num_speakers: C, the number of classes (speakers).
    num_features: F, hash buckets of :func:`hashed_ngram_features` (word
      unigrams and bigrams).

  Returns:
    Dataset ``shakespeare_speakers`` with ``input_shape == (F,)``, C classes,
    source ``embedded:tiny_shakespeare`` (the shared copy) or ``file:PATH``
    (from data_dir); the raw arrays (the fingerprint's input) are the
    float32 ``log1p`` counts, standardised per feature with the training
    statistics.

  Raises:
    DataError: the file is missing or malformed, or has fewer than
      ``num_speakers`` speakers.
    ConfigError: num_speakers or num_features invalid.
  """
  from jaxaudit.text import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  num_speakers = _positive_int(num_speakers, 'num_speakers')
  num_features = _positive_int(num_features, 'num_features')
  path = shakespeare_path(data_dir)
  corpus = corpus_lib.shakespeare_speeches(path)
  groups = np.asarray(corpus.groups)
  order = _speakers_by_frequency(corpus)
  if num_speakers > len(order):
    raise DataError(f'{path!r} has {len(order)} speakers, fewer than '
                    f'num_speakers={num_speakers}')
  label_of = np.full(len(order), -1, np.int64)
  label_of[order[:num_speakers]] = np.arange(num_speakers)
  labels_all = label_of[groups]
  keep = np.flatnonzero(labels_all >= 0)
  labels = labels_all[keep]
  test = np.zeros(labels.shape, bool)
  for c in range(num_speakers):
    test[np.flatnonzero(labels == c)[4::5]] = True
  x = hashed_ngram_features([corpus.documents[i] for i in keep],
                            num_features=num_features)
  default = os.path.join(SHARED_DATA_DIR, SHAKESPEARE_FILE)
  source = ('embedded:tiny_shakespeare' if path == default
            else f'file:{path}')
  return dataset_from_arrays(NAME, x[~test], labels[~test], x[test],
                             labels[test], num_classes=num_speakers,
                             source=source)


def speaker_names(data_dir: str | os.PathLike[str] | None = None,
                  num_speakers: int = 10) -> list[str]:
  """The speakers of labels ``0..num_speakers-1`` (most speeches first)."""
  from jaxaudit.text import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  corpus = corpus_lib.shakespeare_speeches(shakespeare_path(data_dir))
  return [corpus.group_names[g]
          for g in _speakers_by_frequency(corpus)[:num_speakers]]
