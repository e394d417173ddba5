"""Tests of jaxaudit.data.text_features (hashed n-grams, shakespeare_speakers)."""

from __future__ import annotations

import collections
import os
import re
import zlib

import numpy as np
import pytest

from jaxaudit.data import datasets, fingerprint_arrays, load_dataset
from jaxaudit.data import text_features
from jaxaudit.errors import ConfigError, DataError
from tests.conftest import shared_file

TEXTS = (
    "To be, or not to be: that is the question.",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "I'll o'er the hills; TO BE to be to be",
    "",                               # no token: a row of zeros
    "1234 -- ?!",                     # no token either
)

# sha256 of the canonical raw shakespeare_speakers arrays (10 speakers, 2048
# buckets): pins the speaker order, the split rule and the hashing.
SHAKESPEARE_FINGERPRINT = (
    '5adb3115636199e409ca6e58fe9bcbe7f93272697d323bb929f4c73d649f129d')


def _reference(texts, num_features, ngrams):
  """Naive features: dict counting of the n-grams, crc32 buckets, log1p."""
  out = np.zeros((len(texts), num_features), np.float64)
  for i, text in enumerate(texts):
    words = re.findall(r"[a-z']+", text.lower())
    counts = collections.Counter()
    for n in ngrams:
      for j in range(len(words) - n + 1):
        counts[' '.join(words[j:j + n])] += 1
    for gram, k in counts.items():
      out[i, zlib.crc32(gram.encode('utf-8')) % num_features] += k
  return np.log1p(out)


@pytest.fixture(scope='module')
def shakespeare():
  shared_file('tiny_shakespeare.txt')
  return load_dataset('shakespeare_speakers')


# --------------------------------------------------------------------------
# hashed_ngram_features


@pytest.mark.parametrize('num_features,ngrams', [(64, (1, 2)), (7, (1,)),
                                                 (2048, (1, 2, 3)), (16, (2,))])
def test_features_match_naive_reference(num_features, ngrams):
  got = text_features.hashed_ngram_features(TEXTS, num_features, ngrams)
  assert got.shape == (len(TEXTS), num_features) and got.dtype == np.float32
  np.testing.assert_allclose(got, _reference(TEXTS, num_features, ngrams),
                             rtol=1e-6)


def test_features_known_values():
  # Stable hash: pinned buckets (crc32 is a standard, unlike Python's hash()).
  assert text_features.ngram_bucket('to be', 2048) == 1109
  assert text_features.ngram_bucket('romeo', 2048) == 191
  x = text_features.hashed_ngram_features(['Romeo romeo ROMEO'], 2048)
  assert x[0, 191] == pytest.approx(np.log1p(3))       # 3 x 'romeo'
  assert np.count_nonzero(x) == 2                      # + 2 x 'romeo romeo'


def test_features_deterministic_and_shapes():
  a = text_features.hashed_ngram_features(TEXTS)
  b = text_features.hashed_ngram_features(list(TEXTS))
  assert a.shape == (5, 2048) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not a[3].any() and not a[4].any()
  assert text_features.hashed_ngram_features([]).shape == (0, 2048)


@pytest.mark.parametrize('kwargs', [dict(num_features=0), dict(ngrams=()),
                                    dict(ngrams=2), dict(ngrams=(0, 1)),
                                    dict(num_features=True)])
def test_features_bad_arguments(kwargs):
  with pytest.raises(ConfigError):
    text_features.hashed_ngram_features(TEXTS, **kwargs)


def test_features_reject_non_text():
  with pytest.raises(DataError, match='text 1 is a bytes'):
    text_features.hashed_ngram_features(['a', b'b'])


# --------------------------------------------------------------------------
# shakespeare_speakers


def test_shakespeare_speakers_dataset(shakespeare):
  ds = shakespeare
  assert ds.name == 'shakespeare_speakers'
  assert ds.source == 'embedded:tiny_shakespeare'
  assert ds.num_classes == 10 and ds.input_shape == (2048,)
  assert ds.x_train.shape == (773, 2048) and ds.x_test.shape == (189, 2048)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  train_counts = np.bincount(ds.y_train, minlength=10)
  test_counts = np.bincount(ds.y_test, minlength=10)
  totals = train_counts + test_counts
  # Labels in order of speaker frequency; every fifth speech of a class to test.
  assert np.all(np.diff(totals) <= 0)
  np.testing.assert_array_equal(test_counts, totals // 5)
  assert ds.fingerprint == SHAKESPEARE_FINGERPRINT


def test_shakespeare_split_rule_reconstructed(shakespeare):
  """The fingerprint equals that of raw arrays rebuilt here by the documented
  rule: top ten speakers (ties by name), every fifth speech to test."""
  from jaxaudit.text import corpus as corpus_lib
  corpus = corpus_lib.shakespeare_speeches(shared_file('tiny_shakespeare.txt'))
  counts = collections.Counter(corpus.groups.tolist())
  top = sorted(counts, key=lambda g: (-counts[g], corpus.group_names[g]))[:10]
  assert text_features.speaker_names()[:2] == [corpus.group_names[g]
                                               for g in top[:2]]
  docs, labels, test = [], [], []
  seen = collections.Counter()
  for doc, g in zip(corpus.documents, corpus.groups.tolist()):
    if g in top:
      label = top.index(g)
      docs.append(doc)
      labels.append(label)
      test.append(seen[label] % 5 == 4)
      seen[label] += 1
  x = text_features.hashed_ngram_features(docs)
  y, test = np.asarray(labels, np.int64), np.asarray(test)
  assert len(docs) == 962
  expected = fingerprint_arrays(x[~test], y[~test], x[test], y[test])
  assert shakespeare.fingerprint == expected


def test_shakespeare_same_fingerprint_twice(shakespeare):
  again = text_features.load_shakespeare_speakers()
  assert again.fingerprint == shakespeare.fingerprint
  np.testing.assert_array_equal(again.x_train, shakespeare.x_train)


def test_shakespeare_data_dir_honoured(tmp_path, shakespeare):
  path = shared_file('tiny_shakespeare.txt')
  os.symlink(path, tmp_path / 'tiny_shakespeare.txt')
  ds = load_dataset('shakespeare_speakers', data_dir=tmp_path)
  assert ds.source == f'file:{tmp_path / "tiny_shakespeare.txt"}'
  assert ds.fingerprint == shakespeare.fingerprint


def test_shakespeare_missing_file(tmp_path, monkeypatch):
  monkeypatch.setattr(text_features, 'SHARED_DATA_DIR', str(tmp_path / 'none'))
  with pytest.raises(DataError) as e:
    load_dataset('shakespeare_speakers', data_dir=tmp_path / 'empty')
  msg = str(e.value)
  assert '\n' not in msg
  assert str(tmp_path / 'empty' / 'tiny_shakespeare.txt') in msg
  assert str(tmp_path / 'none' / 'tiny_shakespeare.txt') in msg
  assert 'data_dir=DIR' in msg


def test_load_dataset_lists_shakespeare():
  assert 'shakespeare_speakers' in datasets.FILE_DATASETS
  assert 'shakespeare_speakers' not in datasets.EMBEDDED_DATASETS
  with pytest.raises(DataError, match='built-in: digits, shakespeare_speakers'):
    load_dataset('no_such_data_set')


def test_config_loads_shakespeare(shakespeare):
  from experiments.configs import shakespeare_mlp
  from jaxaudit.configs import load_data
  config = shakespeare_mlp.get_config()
  assert config.dataset == 'shakespeare_speakers'
  assert load_data(config).fingerprint == shakespeare.fingerprint
