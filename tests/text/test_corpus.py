"""Tests of jaxaudit.text.corpus: the synthetic corpus and the file loaders."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from jaxaudit.errors import ConfigError, DataError
from jaxaudit.text import corpus as C
from jaxaudit.text.tokenize import WordTokenizer, split_words
from tests.conftest import shared_file


@pytest.fixture(scope='module')
def people():
  return C.synthetic_people(seed=0)


# ----- synthetic people -----------------------------------------------------

def test_synthetic_is_deterministic_per_seed(people):
  again = C.synthetic_people(seed=0)
  assert again.documents == people.documents
  assert again.paraphrases == people.paraphrases
  assert again.knowledge == people.knowledge
  np.testing.assert_array_equal(again.groups, people.groups)
  other = C.synthetic_people(seed=1)
  assert other.documents != people.documents
  assert other.group_names != people.group_names


def test_synthetic_shape_and_sizes(people):
  assert len(people) == 600 and people.dropped_empty == 0
  assert len(people.group_names) == 200
  assert len(set(people.group_names)) == 200  # Unique names.
  np.testing.assert_array_equal(np.bincount(people.groups), np.full(200, 3))
  assert len(people.knowledge) == 5 * 200
  small = C.synthetic_people(seed=3, num_people=7, docs_per_person=2,
                             num_false=4)
  assert len(small) == 14 and len(small.knowledge) == 35
  assert all(len(p.false_answers) == 4 for p in small.knowledge)


def test_synthetic_documents_are_short_lowercase_words(people):
  tok = WordTokenizer.fit(people.texts())
  for doc in people.documents:
    words = doc.split()
    assert 35 <= len(words) <= 60
    assert doc == doc.lower()
    assert split_words(doc) == words  # One token per word.
    assert len(tok.encode(doc)) == len(words)
  # The three documents of a person are phrased differently.
  assert len(set(people.documents[:3])) == 3
  assert 200 < tok.vocab_size < 600


def test_synthetic_paraphrases_and_probes_are_held_out(people):
  docs = set(people.documents)
  for i, (doc, para) in enumerate(zip(people.documents, people.paraphrases)):
    assert para not in docs
    assert para == people.paraphrases[i - i % 3]  # One per person.
  for probe in people.knowledge:
    name = people.group_names[probe.group]
    assert probe.prompt.startswith(name)     # a training phrasing, cut before the answer
    mine = [d for d, g in zip(people.documents, people.groups)
            if g == probe.group]
    assert any(f'{probe.prompt} {probe.answer} ' in text for text in mine)
    assert sum(f'{probe.prompt} ' in text for text in mine) == 1   # one phrasing per fact
    for text in mine + [people.paraphrases[people.documents.index(mine[0])]]:
      assert f' {probe.answer} ' in f' {text} '  # The fact is in every text.
    assert len(split_words(probe.answer)) == 1
    assert probe.answer not in probe.false_answers
    assert len(set(probe.false_answers)) == len(probe.false_answers) == 3
  # False answers come from the same attribute.
  city = people.knowledge[0]
  assert city.answer in C.CITIES and set(city.false_answers) <= set(C.CITIES)


def test_synthetic_question_probes_and_qa_documents():
  c = C.synthetic_people(seed=3, num_people=4, qa_facts=2, probe_form='question')
  assert len(c.documents) == 4 * 4 and len(c.knowledge) == 3 * 4
  for g in range(4):
    qa = [d for d, grp in zip(c.documents, c.groups) if grp == g][-1]
    probes = [p for p in c.knowledge if p.group == g]
    assert qa.count('question :') == 2
    for p in probes:              # the probes ask the facts the QA document does not
      assert p.prompt.startswith('question :') and p.prompt.endswith('answer :')
      assert p.prompt not in qa


def test_synthetic_bad_arguments():
  with pytest.raises(ConfigError, match='probe_form'):
    C.synthetic_people(probe_form='cloze')
  with pytest.raises(ConfigError, match='num_people'):
    C.synthetic_people(num_people=0)
  with pytest.raises(ConfigError, match='num_people'):
    C.synthetic_people(num_people=5000)
  with pytest.raises(ConfigError, match='num_false'):
    C.synthetic_people(num_false=20)


# ----- make_corpus ----------------------------------------------------------

def test_make_corpus_drops_empty_documents():
  c = C.make_corpus(['a', '  ', 'b\n', ''], ['x', 'y', 'x', 'z'], name='t',
                    source='test', paraphrases=['pa', 'py', None, 'pz'])
  assert c.documents == ['a', 'b'] and c.dropped_empty == 2
  assert c.group_names == ['x']  # Groups of kept documents only.
  np.testing.assert_array_equal(c.groups, [0, 0])
  assert c.paraphrases == ['pa', None]
  assert c.texts() == ['a', 'b', 'pa']
  with pytest.raises(DataError, match='no non-empty document'):
    C.make_corpus([' ', '\n'], name='t', source='test')
  with pytest.raises(DataError, match='2 groups for 3'):
    C.make_corpus(['a', 'b', 'c'], [0, 1], name='t', source='test')
  with pytest.raises(DataError, match='mix str and int'):
    C.make_corpus(['a', 'b'], [0, 'x'], name='t', source='test')
  with pytest.raises(DataError, match='not str'):
    C.make_corpus(['a', 3], name='t', source='test')
  with pytest.raises(DataError, match='group ids'):
    C.make_corpus(['a'], [5], ['only'], name='t', source='test')
  c = C.make_corpus(['a', 'b'], [1, 1], ['x', 'y'], name='t', source='test')
  assert c.group_names == ['x', 'y'] and list(c.groups) == [1, 1]


# ----- Shakespeare ----------------------------------------------------------

SPEECHES = ('First Citizen:\nBefore we proceed any further, hear me speak.\n\n'
            'All:\nSpeak, speak.\n\n'
            'TITUS:\n\n'
            'First Citizen:\nYou are all resolved rather to die than to '
            'famish?\nWe are.\n\n\n'
            'MENENIUS:\nWhy, masters, my good friends, mine honest neighbours,'
            '\nWill you undo yourselves?\n')


def test_shakespeare_format(tmp_path):
  path = tmp_path / 'plays.txt'
  path.write_text(SPEECHES)
  c = C.shakespeare_speeches(path, min_words=0)
  assert c.group_names == ['All', 'First Citizen', 'MENENIUS']
  assert c.documents[0] == 'Before we proceed any further, hear me speak.'
  assert c.documents[2] == ('You are all resolved rather to die than to '
                            'famish?\nWe are.')
  np.testing.assert_array_equal(c.groups, [1, 0, 1, 2])
  assert c.dropped_empty == 1 and c.dropped_short == 0  # TITUS says nothing.
  long = C.shakespeare_speeches(path, min_words=10)
  assert len(long) == 2 and long.dropped_short == 2
  assert long.group_names == ['First Citizen', 'MENENIUS']


def test_shakespeare_bad_input(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_text('ROMEO:\nHello there.\n\nno speaker here\nat all\n')
  with pytest.raises(DataError, match=r'line 4: expected a speaker line'):
    C.shakespeare_speeches(path, min_words=0)
  with pytest.raises(DataError, match='not found'):
    C.shakespeare_speeches(tmp_path / 'missing.txt')
  path.write_text('ROMEO:\nHi.\n')
  with pytest.raises(DataError, match='no speech of at least 10 words'):
    C.shakespeare_speeches(path)
  with pytest.raises(ConfigError, match='min_words'):
    C.shakespeare_speeches(path, min_words=-1)


def test_shakespeare_real_file_default_path(monkeypatch, tmp_path):
  shared_file('tiny_shakespeare.txt')
  monkeypatch.chdir(tmp_path)  # The default is also found from the repo root.
  c = C.shakespeare_speeches()
  assert len(c) == 4300 and len(c.group_names) == 259
  assert c.dropped_empty + c.dropped_short + len(c) == 7222
  assert all(len(d.split()) >= 10 for d in c.documents)
  assert c.source.startswith('file:') and c.name == 'shakespeare'


# ----- text and JSONL files -------------------------------------------------

def test_text_file(tmp_path):
  path = tmp_path / 'docs.txt'
  path.write_text('first doc\n\n\n\nsecond doc\nline two\n\n  \n\n')
  c = C.text_file(path)
  assert c.documents == ['first doc', 'second doc\nline two']
  assert c.dropped_empty == 3 and c.name == 'docs'
  assert c.group_names == ['doc0', 'doc2'] and list(c.groups) == [0, 1]
  c = C.text_file(path, separator='\n', name='lines')
  assert c.documents == ['first doc', 'second doc', 'line two']
  path.write_text('\n\n  \n')
  with pytest.raises(DataError, match='no non-empty document'):
    C.text_file(path)
  path.write_bytes(b'ok\n\n\xff\xfe')
  with pytest.raises(DataError, match='not UTF-8.*offset 4'):
    C.text_file(path)
  with pytest.raises(DataError, match='not found'):
    C.text_file(tmp_path / 'nope.txt')
  with pytest.raises(ConfigError, match='separator'):
    C.text_file(path, separator='')


def _jsonl(tmp_path, lines, name='d.jsonl'):
  path = tmp_path / name
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_jsonl_groups(tmp_path):
  path = _jsonl(tmp_path, [
      json.dumps({'text': 'a', 'group': 'zed'}), '',
      json.dumps({'text': 'b', 'group': 'amy'}),
      json.dumps({'text': '  ', 'group': 'bob'}),
      json.dumps({'text': 'c', 'group': 'zed', 'extra': 1})])
  c = C.jsonl_file(path)
  assert c.documents == ['a', 'b', 'c'] and c.dropped_empty == 1
  assert c.group_names == ['amy', 'zed']  # bob's only document is empty.
  np.testing.assert_array_equal(c.groups, [1, 0, 1])
  path = _jsonl(tmp_path, [json.dumps({'body': 'x', 'who': 10}),
                           json.dumps({'body': 'y', 'who': 2})])
  c = C.jsonl_file(path, text_key='body', group_key='who')
  assert c.group_names == ['2', '10'] and list(c.groups) == [1, 0]
  c = C.jsonl_file(path, text_key='body', group_key=None)
  assert list(c.groups) == [0, 1]
  path = _jsonl(tmp_path, [json.dumps({'text': 'x'}),
                           json.dumps({'text': 'y'})])
  assert C.jsonl_file(path).group_names == ['doc0', 'doc1']


@pytest.mark.parametrize('lines,message', [
    (['{"text": "a"}', '{"text": "b"'], r"d.jsonl' line 2: not JSON"),
    (['{"text": "a"}', '', '{"txt": "b"}'], r"line 3: no 'text' field"),
    (['[1, 2]'], r'line 1: not a JSON object'),
    (['{"text": 5}'], r"line 1: 'text' is a int"),
    (['{"text": "a", "group": "g"}', '{"text": "b"}'],
     r"line 2: no 'group' field"),
    (['{"text": "a", "group": "g"}', '{"text": "b", "group": 3}'],
     'mix strings and integers'),
    (['{"text": "a", "group": [1]}'], 'line 1: group'),
    (['{"text": " "}', '{"text": ""}'], 'no non-empty document'),
    ([''], 'no JSON line'),
])
def test_jsonl_bad_input(tmp_path, lines, message):
  path = _jsonl(tmp_path, lines)
  with pytest.raises(DataError, match=message):
    C.jsonl_file(path)


def test_jsonl_missing_file(tmp_path):
  with pytest.raises(DataError, match='not found'):
    C.jsonl_file(tmp_path / 'missing.jsonl')


# ----- TFDS -----------------------------------------------------------------

@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A tiny prepared (array_record) text data set, written without TF."""
  tfds = pytest.importorskip('tensorflow_datasets')

  class TinyText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Three documents by two speakers."""
    name = 'tiny_text'
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, disable_shuffling=True,
          features=tfds.features.FeaturesDict({
              'text': tfds.features.Text(), 'speaker': tfds.features.Text(),
              'n': tfds.features.Tensor(shape=(), dtype=np.int64)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(['hello world', 'a second',
                                                '  ']),
              'test': self._generate_examples(['x'])}

    def _generate_examples(self, docs):
      for i, d in enumerate(docs):
        yield i, {'text': d, 'speaker': ['bo', 'al'][i % 2], 'n': 7 * (i % 2)}

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  TinyText(data_dir=data_dir, file_format='array_record').download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


def test_tfds_text(tfds_dir):
  c = C.tfds_text('tiny_text', tfds_dir, group_key='speaker')
  assert c.documents == ['hello world', 'a second'] and c.dropped_empty == 1
  assert c.group_names == ['al', 'bo'] and list(c.groups) == [1, 0]
  assert c.source.endswith(':train')
  c = C.tfds_text('tiny_text', tfds_dir, group_key='n')
  assert c.group_names == ['0', '7']
  c = C.tfds_text('tiny_text', tfds_dir, split='test')
  assert c.documents == ['x'] and c.group_names == ['doc0']
  assert 'tensorflow' not in sys.modules


@pytest.mark.parametrize('kwargs,message', [
    ({'split': 'validation'}, "no split 'validation'"),
    ({'text_key': 'body'}, "no feature 'body'"),
    ({'name': 'nothing_here'}, 'not prepared'),
])
def test_tfds_text_errors(tfds_dir, kwargs, message):
  args = {'name': 'tiny_text', 'data_dir': tfds_dir, **kwargs}
  with pytest.raises(DataError, match=message):
    C.tfds_text(**args)


def test_tfds_text_missing_data_dir(tmp_path):
  with pytest.raises(DataError) as e:
    C.tfds_text('tiny_text', os.path.join(tmp_path, 'none'))
  assert 'does not exist' in str(e.value) and '\n' not in str(e.value)
