"""Tests of jaxaudit.text.tokenize: round trips, vocabularies, what lies outside."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from jaxaudit.errors import ConfigError, DataError
from jaxaudit.text.tokenize import (BPETokenizer, ByteTokenizer, WordTokenizer,
                                    get_tokenizer, split_words,
                                    tokenizer_from_dict)

TEXTS = ['the cat sat on the mat .', 'the dog , the cat ; a bird !',
         "don't stop : 1957 was a year ."]


# ----- byte -----------------------------------------------------------------

def test_byte_round_trip_and_ids():
  tok = ByteTokenizer()
  assert (tok.name, tok.vocab_size, tok.eos_id) == ('byte', 257, 256)
  for text in ['hello', 'héllo wörld 😀\n\ttabs', '']:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert list(ids) == list(text.encode('utf-8'))
    assert tok.decode(ids) == text
  # EOS and -1 padding are skipped; float rows (records) decode too.
  row = np.asarray([104, 105, 256, -1, -1], np.float32)
  assert tok.decode(row) == 'hi'


def test_byte_outside():
  tok = ByteTokenizer()
  with pytest.raises(DataError, match='must be a str.*decode bytes'):
    tok.encode(b'\xff\xfe')
  with pytest.raises(DataError, match=r'not valid Unicode.*character 1'):
    tok.encode('a\udcffb', where='document 3')  # From surrogateescape.
  with pytest.raises(DataError, match='outside the vocabulary'):
    tok.decode([257])
  with pytest.raises(DataError, match='whole numbers'):
    tok.decode(np.asarray([1.5]))
  # A window cut inside a multi-byte character decodes with U+FFFD.
  cut = tok.encode('é')[:1]
  assert tok.decode(cut) == '\ufffd'


# ----- word -----------------------------------------------------------------

def test_word_vocabulary_sorted_with_eos_last():
  tok = WordTokenizer.fit(TEXTS)
  assert list(tok.words) == sorted(set(tok.words))
  assert tok.eos_id == len(tok.words) == tok.vocab_size - 1
  assert "don't" in tok.words and '1957' in tok.words and ',' in tok.words
  # Same vocabulary whatever the order of the texts.
  assert WordTokenizer.fit(TEXTS[::-1]).words == tok.words


def test_word_split_lowercases_and_splits_punctuation():
  assert split_words('Hello, World!  It\'s 1957.') == [
      'hello', ',', 'world', '!', "it's", '1957', '.']
  assert split_words("'tis o'er") == ["'", 'tis', "o'er"]


def test_word_round_trips():
  tok = WordTokenizer.fit(TEXTS)
  for text in TEXTS:  # Already in normal form: exact round trip.
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert tok.decode(ids) == text
    assert len(ids) == len(text.split())
  rng = np.random.default_rng(0)
  ids = rng.integers(0, tok.eos_id, 50)
  np.testing.assert_array_equal(tok.encode(tok.decode(ids)), ids)
  # Case and spacing are normalised.
  assert tok.decode(tok.encode('The  CAT,sat')) == 'the cat , sat'
  assert tok.decode([tok.eos_id, -1]) == ''


def test_word_outside_vocabulary_names_word_and_place():
  tok = WordTokenizer.fit(TEXTS)
  with pytest.raises(DataError, match=r"word 'zebra' in document 17 is not "
                     'in the vocabulary'):
    tok.encode('the zebra sat', where='document 17')
  with pytest.raises(DataError, match="word '#'"):
    tok.encode('the # cat')
  with pytest.raises(DataError, match='must be a str'):
    tok.encode(b'the cat')
  with pytest.raises(DataError, match='outside the vocabulary'):
    tok.decode([tok.vocab_size])


def test_word_min_count_and_bad_fits():
  tok = WordTokenizer.fit(TEXTS, min_count=2)
  assert set(tok.words) == {'the', 'cat', '.', 'a'}
  with pytest.raises(DataError, match="'dog'"):
    tok.encode('the dog')
  with pytest.raises(ConfigError, match='min_count'):
    WordTokenizer.fit(TEXTS, min_count=0)
  with pytest.raises(DataError, match='no word'):
    WordTokenizer.fit(['  ', ''])
  with pytest.raises(DataError, match='text 1'):
    WordTokenizer.fit(['ok', 3])
  with pytest.raises(DataError, match='sorted'):
    WordTokenizer(['b', 'a'])
  with pytest.raises(DataError, match='one word token'):
    WordTokenizer(['a b'])


# ----- BPE ------------------------------------------------------------------

@pytest.fixture(scope='module')
def bpe():
  pytest.importorskip('tokenizers')
  texts = [f'the {w} sat on the mat and the {w} ran . ' * 3
           for w in ('cat', 'dog', 'bird', 'horse', 'mouse')]
  return texts, BPETokenizer.fit(texts, vocab_size=300)


def test_bpe_round_trip_and_ids(bpe):
  _, tok = bpe
  assert tok.name == 'bpe' and tok.vocab_size <= 300
  assert tok.eos_id == tok.vocab_size - 1
  for text in ['the cat sat', 'Unseen: héllo 😀\nwörld <|endoftext|>', '']:
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert np.all((ids >= 0) & (ids < tok.eos_id))  # EOS never from text.
    assert tok.decode(ids) == text
  ids = tok.encode('the cat sat on the mat')
  assert len(ids) < len('the cat sat on the mat')  # Merges were learnt.
  row = np.concatenate([ids, [tok.eos_id, -1, -1]]).astype(np.float32)
  assert tok.decode(row) == 'the cat sat on the mat'


def test_bpe_deterministic_and_serialisable(bpe):
  texts, tok = bpe
  again = BPETokenizer.fit(texts, vocab_size=300, seed=5)
  assert again.to_dict() == tok.to_dict()
  d = json.loads(json.dumps(tok.to_dict()))
  rebuilt = tokenizer_from_dict(d)
  assert isinstance(rebuilt, BPETokenizer)
  np.testing.assert_array_equal(rebuilt.encode('the horse ran'),
                                tok.encode('the horse ran'))


def test_bpe_outside(bpe):
  _, tok = bpe
  with pytest.raises(DataError, match='must be a str'):
    tok.encode(b'abc')
  with pytest.raises(DataError, match='not valid Unicode'):
    tok.encode('a\ud800')
  with pytest.raises(DataError, match='outside the vocabulary'):
    tok.decode([tok.vocab_size + 3])
  with pytest.raises(ConfigError, match='vocab_size'):
    BPETokenizer.fit(['abc'], vocab_size=100)


def test_bpe_missing_package_is_a_config_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tokenizers', None)
  with pytest.raises(ConfigError, match='pip install tokenizers'):
    BPETokenizer.fit(['abc'], vocab_size=300)
  with pytest.raises(ConfigError, match='pip install tokenizers'):
    get_tokenizer('bpe', ['abc'])


# ----- common ---------------------------------------------------------------

@pytest.mark.parametrize('name', ['byte', 'word', 'bpe'])
def test_dict_round_trip_and_answer_boundary(name):
  if name == 'bpe':
    pytest.importorskip('tokenizers')
  texts = TEXTS + ['question : where was ada born ? answer : lisbon',
                   'lisbon oslo lisbon oslo'] * 5
  kw = {'vocab_size': 290} if name == 'bpe' else {}
  tok = get_tokenizer(name, texts, **kw)
  d = tok.to_dict()
  assert json.loads(json.dumps(d)) == d and d['name'] == name
  rebuilt = tokenizer_from_dict(json.dumps(d))
  np.testing.assert_array_equal(rebuilt.encode(TEXTS[0]), tok.encode(TEXTS[0]))
  assert rebuilt.vocab_size == tok.vocab_size
  prompt = 'question : where was ada born ? answer :'
  ids, n = tok.encode_answer(prompt, 'lisbon')
  assert tok.decode(ids[:n]).strip() == prompt
  assert tok.decode(ids[n:]).strip() == 'lisbon'
  assert tok.decode(ids[n:n + 1]).strip() == 'lisbon'[:len(
      tok.decode(ids[n:n + 1]).strip())]


def test_get_tokenizer_errors_and_corpus_like():
  with pytest.raises(ConfigError, match='unknown tokenizer'):
    get_tokenizer('sentencepiece', TEXTS)
  with pytest.raises(ConfigError, match="takes no argument.*'vocab_size'"):
    get_tokenizer('word', TEXTS, vocab_size=10)
  with pytest.raises(ConfigError, match='takes no argument'):
    get_tokenizer('byte', TEXTS, min_count=2)
  with pytest.raises(DataError, match='unknown tokenizer'):
    tokenizer_from_dict({'name': 'nope'})
  with pytest.raises(DataError, match='lacks'):
    tokenizer_from_dict({'name': 'word'})

  class Texts:
    def texts(self):
      return ['alpha beta']
  assert get_tokenizer('word', Texts()).words == ('alpha', 'beta')
