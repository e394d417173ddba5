"""Tests of jaxaudit.text.dataset: windowing, group division, probes, splits."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from jaxaudit.data import validate_split
from jaxaudit.data.types import Dataset
from jaxaudit.errors import ConfigError, DataError, SplitError
from jaxaudit.text import corpus as C
from jaxaudit.text import dataset as D
from jaxaudit.text.tokenize import ByteTokenizer, WordTokenizer, get_tokenizer
from tests.conftest import shared_file


@pytest.fixture(scope='module')
def people():
  return C.synthetic_people(seed=0)


@pytest.fixture(scope='module')
def word(people):
  return WordTokenizer.fit(people.texts())


@pytest.fixture(scope='module')
def ds(people, word):
  return D.build_text_dataset(people, word, context=64, seed=0)


# ----- windowing ------------------------------------------------------------

def test_windows_exact():
  w = D.windows(np.arange(10), 4)  # L = 10: ceil(9 / 4) = 3 windows.
  np.testing.assert_array_equal(w, [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8],
                                    [8, 9, -1, -1, -1]])
  assert w.dtype == np.float32
  np.testing.assert_array_equal(D.windows(np.arange(5), 4), [[0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(D.windows(np.arange(6), 4),
                                [[0, 1, 2, 3, 4], [4, 5, -1, -1, -1]])
  np.testing.assert_array_equal(D.windows([7], 4), [[7, -1, -1, -1, -1]])
  np.testing.assert_array_equal(D.targets(w), [[1, 2, 3, 4], [5, 6, 7, 8],
                                               [9, -1, -1, -1]])


def test_long_document_is_windowed():
  words = [f'w{i:02d}' for i in range(11)]
  corpus = C.make_corpus([' '.join(words), 'w00 w01', 'w02'], [0, 0, 1],
                         name='toy', source='test')
  tok = WordTokenizer.fit(corpus.texts())
  d = D.build_text_dataset(corpus, tok, context=4, test_fraction=0,
                           pretrain_fraction=0)
  eos = tok.eos_id
  assert eos == 11 and tok.encode(' '.join(words)).tolist() == list(range(11))
  # Document 0: 11 words + EOS = 12 tokens -> ceil(11 / 4) = 3 windows.
  np.testing.assert_array_equal(d.x_train, [
      [0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9, 10, eos, -1],
      [0, 1, eos, -1, -1], [2, eos, -1, -1, -1]])
  np.testing.assert_array_equal(d.y_train, [
      [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, eos, -1], [1, eos, -1, -1],
      [eos, -1, -1, -1]])
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  np.testing.assert_array_equal(d.doc_ids, [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(d.groups, [0, 0, 0, 0, 1])
  assert d.x_test.shape == (0, 5) and d.y_test.shape == (0, 4)
  assert d.pretrain.shape == (0, 5) and d.neighbours == {}
  assert d.knowledge is None and d.context == 4
  assert D.sequence_text(d, 2) == 'w08 w09 w10'


# ----- the synthetic data set -----------------------------------------------

def test_synthetic_dataset_shapes(people, word, ds):
  assert isinstance(ds, Dataset)
  n = len(ds.x_train)
  pre_docs = int(np.sum(ds.pretrain_doc_ids >= 0))
  assert n + len(ds.x_test) + pre_docs == 600  # One record per document: all fit in 64 tokens.
  # The pretrain groups' knowledge probes (prompt + answer) join the base LM's data.
  assert len(ds.pretrain) - pre_docs == 5 * len(np.unique(ds.pretrain_groups))
  assert ds.x_train.shape == (n, 65) and ds.y_train.shape == (n, 64)
  assert ds.input_shape == (65,) and ds.num_classes == word.vocab_size
  assert ds.groups.shape == ds.doc_ids.shape == (n,)
  assert ds.test_groups.shape == (len(ds.x_test),)
  assert ds.neighbours['paraphrase'].shape == (n, 65)
  for a in (ds.x_train, ds.y_train, ds.groups, ds.pretrain,
            ds.neighbours['paraphrase'], ds.knowledge.tokens):
    assert not a.flags.writeable
  # Every record is its document plus EOS.
  for r in (0, 17, n - 1):
    doc = people.documents[ds.doc_ids[r]]
    assert D.sequence_text(ds, r) == doc
    assert ds.x_train[r, len(doc.split())] == word.eos_id
  np.testing.assert_array_equal(ds.y_train, D.targets(ds.x_train))


def test_group_division(people, word, ds):
  pool, test, pre = (set(ds.groups.tolist()), set(ds.test_groups.tolist()),
                     set(ds.pretrain_groups.tolist()))
  assert not pool & test and not pool & pre and not test & pre
  assert pool | test | pre == set(range(200))
  assert (len(test), len(pre), len(pool)) == (20, 60, 120)
  # Every document of a group is on its side.
  for r in range(len(ds.x_train)):
    assert people.groups[ds.doc_ids[r]] == ds.groups[r]
  again = D.build_text_dataset(people, word, seed=0)
  assert again.fingerprint == ds.fingerprint
  other = D.build_text_dataset(people, word, seed=1)
  assert other.fingerprint != ds.fingerprint
  assert set(other.groups.tolist()) != pool
  byte = D.build_text_dataset(people, ByteTokenizer(), context=64, seed=0)
  assert byte.fingerprint != ds.fingerprint and byte.num_classes == 257
  assert set(byte.groups.tolist()) == pool  # The division ignores the tokens.


def test_max_groups(people, word, ds):
  d = D.build_text_dataset(people, word, seed=0, max_groups=50)
  kept = (set(d.groups.tolist()) | set(d.test_groups.tolist())
          | set(d.pretrain_groups.tolist()))
  assert len(kept) == 50
  assert len(d.x_train) + len(d.x_test) + int(np.sum(d.pretrain_doc_ids >= 0)) == 150
  assert set(d.knowledge.group.tolist()) <= kept
  assert (len(set(d.test_groups.tolist())),
          len(set(d.pretrain_groups.tolist()))) == (5, 15)
  same = D.build_text_dataset(people, word, seed=0, max_groups=500)
  assert same.fingerprint == ds.fingerprint  # More than there are: all.


def test_paraphrase_neighbours(people, word, ds):
  para = ds.neighbours['paraphrase']
  for r in (0, 5, len(para) - 1):
    assert word.decode(para[r]) == people.paraphrases[ds.doc_ids[r]]
  docs = ['a b c', 'a c', 'b b']
  corpus = C.make_corpus(docs, [0, 1, 2], name='t', source='t',
                         paraphrases=['c b a', None, ''])
  d = D.build_text_dataset(corpus, get_tokenizer('word', corpus), context=3,
                           test_fraction=0, pretrain_fraction=0)
  p = d.neighbours['paraphrase']
  assert p.shape == (3, 4)
  assert d.x_train.shape == (3, 4)
  np.testing.assert_array_equal(p[1:], -1)
  assert get_tokenizer('word', corpus).decode(p[0]) == 'c b a'


def test_knowledge_probe_positions_decode_to_answers(people, word, ds):
  k = ds.knowledge
  q = len(k.answer)
  assert k.tokens.shape == (q, 65) and k.false_answers.shape == (q, 3)
  allowed = set(ds.groups.tolist()) | set(ds.test_groups.tolist())
  assert set(k.group.tolist()) == allowed  # No probe of a pretrain group.
  assert q == 5 * len(allowed)
  by_prompt = {p.prompt: p for p in people.knowledge}
  for i in range(q):
    t = int(k.answer_pos[i])
    probe = by_prompt[word.decode(k.tokens[i, :t + 1])]
    assert probe.group == k.group[i]
    assert k.tokens[i, t + 1] == k.answer[i]
    assert word.decode([k.answer[i]]) == probe.answer
    assert [word.decode([f]) for f in k.false_answers[i]] == list(
        probe.false_answers)
  # Byte-level: the answer's first byte follows the prompt and a space.
  byte = D.build_text_dataset(people, ByteTokenizer(), context=128, seed=0)
  tok = ByteTokenizer()
  for i in (0, 7):
    t = int(byte.knowledge.answer_pos[i])
    prompt = tok.decode(byte.knowledge.tokens[i, :t + 1])
    probe = by_prompt[prompt[:-1]]
    assert prompt.endswith(' ')
    assert tok.decode([byte.knowledge.answer[i]]) == probe.answer[0]


def test_build_errors(people, word):
  small = WordTokenizer.fit(people.documents[:30])
  with pytest.raises(DataError, match=r"word '\w+' in (paraphrase of )?"
                     r'document \d+ is not'):
    D.build_text_dataset(people, small)
  docs = list(people.documents)
  docs[4] += ' zebra .'
  with pytest.raises(DataError, match="word 'zebra' in document 4 is not"):
    D.build_text_dataset(dataclasses.replace(people, documents=docs), word)
  probes = list(people.knowledge)
  probes[6] = probes[6]._replace(prompt='question : who is ' + probes[6].prompt)
  with pytest.raises(DataError, match=r"word 'question' in knowledge probe 6"):
    D.build_text_dataset(dataclasses.replace(people, knowledge=probes), word)
  with pytest.raises(ConfigError, match='context'):
    D.build_text_dataset(people, word, context=0)
  with pytest.raises(ConfigError, match='test_fraction'):
    D.build_text_dataset(people, word, test_fraction=1.0)
  with pytest.raises(DataError, match='leave none for the pool'):
    D.build_text_dataset(people, word, test_fraction=0.5,
                         pretrain_fraction=0.5)
  with pytest.raises(DataError, match='the answer must follow'):
    D.build_text_dataset(people, word, context=4)  # Prompts are longer.
  with pytest.raises(ConfigError, match='max_groups'):
    D.build_text_dataset(people, word, max_groups=0)
  # A tokenizer dict works too.
  d = D.build_text_dataset(people, word.to_dict(), seed=0)
  assert d.tokenizer == word.to_dict()


# ----- group_split ----------------------------------------------------------

def _groups_of(ds, idx):
  return set(ds.groups[idx].tolist())


def test_group_split_invariants(ds):
  split = D.group_split(ds, seed=0)
  validate_split(split, ds)
  assert split.forget_mode == 'indices'
  assert split.dataset_fingerprint == ds.fingerprint
  forget, retain, ref = (_groups_of(ds, split.forget),
                         _groups_of(ds, split.retain),
                         _groups_of(ds, split.ref))
  # Du holds whole groups: every record of its groups, none in Dr.
  np.testing.assert_array_equal(
      split.forget, np.flatnonzero(np.isin(ds.groups, list(forget))))
  assert not forget & retain and not ref & (forget | retain)
  assert forget | retain | ref == set(ds.groups.tolist())
  assert len(ref) == 24 and len(forget) == 10  # 20% of 120, 10% of 96.
  np.testing.assert_array_equal(split.test, np.arange(len(ds.x_test)))
  again = D.group_split(ds, seed=0)
  np.testing.assert_array_equal(again.forget, split.forget)
  assert not np.array_equal(D.group_split(ds, seed=1).forget, split.forget)


def test_group_split_options(ds):
  pool = np.unique(ds.groups)
  chosen = [int(pool[3]), int(pool[40])]
  split = D.group_split(ds, seed=2, forget_groups=chosen)
  assert _groups_of(ds, split.forget) == set(chosen)
  assert not _groups_of(ds, split.ref) & set(chosen)
  split = D.group_split(ds, seed=2, forget_groups=5, ref_fraction=0.1)
  assert len(_groups_of(ds, split.forget)) == 5
  assert len(_groups_of(ds, split.ref)) == 12
  split = D.group_split(ds, seed=2, train_groups=20, forget_groups=chosen)
  assert len(_groups_of(ds, split.train)) == 20
  assert set(chosen) <= _groups_of(ds, split.train)
  train = [int(g) for g in pool[:30]]
  split = D.group_split(ds, seed=2, train_groups=train, forget_fraction=0.2)
  assert _groups_of(ds, split.train) == set(train)
  assert len(_groups_of(ds, split.forget)) == 6
  assert not _groups_of(ds, split.ref) & set(train)
  validate_split(split, ds)


def test_group_split_errors(ds):
  pretrain_group = int(ds.pretrain_groups[0])
  with pytest.raises(SplitError, match='not a group of the pool'):
    D.group_split(ds, seed=0, forget_groups=[pretrain_group])
  with pytest.raises(SplitError, match='twice'):
    D.group_split(ds, seed=0, forget_groups=[int(ds.groups[0])] * 2)
  with pytest.raises(SplitError, match='forget_groups must be an int'):
    D.group_split(ds, seed=0, forget_groups=500)
  with pytest.raises(SplitError, match='ref_fraction'):
    D.group_split(ds, seed=0, ref_fraction=0.0)
  with pytest.raises(SplitError, match='too few'):
    D.group_split(ds, seed=0, ref_fraction=0.99)
  with pytest.raises(SplitError, match='among train_groups'):
    D.group_split(ds, seed=0, forget_groups=[int(ds.groups[0])],
                  train_groups=[int(g) for g in np.unique(ds.groups)[5:9]])
  with pytest.raises(SplitError, match='TextDataset'):
    D.group_split(object(), seed=0)


# ----- text views -----------------------------------------------------------

def test_sequence_text_and_zlib_bits(people, ds):
  idx = np.asarray([0, 3, 9])
  bits = D.zlib_bits(ds, idx)
  assert bits.shape == (3,) and bits.dtype == np.float64
  for b, i in zip(bits, idx):
    text = people.documents[ds.doc_ids[i]]
    assert b == 8 * len(zlib.compress(text.encode('utf-8')))
  t = D.sequence_text(ds, 0, split='test')
  assert t == people.documents[ds.test_doc_ids[0]]
  assert D.zlib_bits(ds, 1, split='pretrain').shape == (1,)
  with pytest.raises(DataError, match='out of range'):
    D.sequence_text(ds, len(ds.x_train))
  with pytest.raises(ConfigError, match='split'):
    D.sequence_text(ds, 0, split='valid')


def test_shakespeare_record_count():
  shared_file('tiny_shakespeare.txt')
  corpus = C.shakespeare_speeches()
  tok = get_tokenizer('word', corpus)
  d = D.build_text_dataset(corpus, tok, context=64, seed=0)
  lengths = np.asarray([len(tok.encode(doc)) + 1 for doc in corpus.documents])
  expected = int(np.ceil((lengths - 1) / 64).sum())
  assert len(d.x_train) + len(d.x_test) + len(d.pretrain) == expected
  assert np.all(d.x_train[:, 0] >= 0)
  split = D.group_split(d, seed=0)
  validate_split(split, d)
