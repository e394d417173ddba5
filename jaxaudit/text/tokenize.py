"""Tokenisers: text <-> int32 token ids, each with an end-of-sequence id.

Three tokenisers share one interface: ``name``, ``vocab_size`` (V, the
model's ``num_classes``), ``eos_id`` (always ``V - 1``), ``encode(text,
where=None) -> int32 (n,)`` (no EOS appended; :mod:`jaxaudit.text.dataset`
appends it to each document), ``decode(ids) -> str``, ``to_dict()`` (JSON-able,
rebuilds the tokeniser with :func:`tokenizer_from_dict` and fingerprints it)
and ``encode_answer(prompt, answer)`` (a prompt followed by an answer word as
in running text, for knowledge probes).

* :class:`ByteTokenizer`: the UTF-8 bytes of the text, ids 0..255; EOS 256;
  V = 257. Needs no fitting.
* :class:`WordTokenizer`: a closed vocabulary of lower-cased words (runs of
  letters/digits, with inner apostrophes: ``don't``) and single punctuation
  characters, found by :data:`WORD_PATTERN`; ids in sorted order of the
  words (code-point order), EOS = the number of words.
* :class:`BPETokenizer`: byte-level BPE from the optional ``tokenizers``
  package, trained in memory on the given texts (nothing is downloaded);
  EOS is one id past the BPE vocabulary, so no string of the text is
  reserved for it.

What lies *outside* a tokeniser (each raises :class:`DataError` naming the
text's ``where`` and the offending item):

* every tokeniser: a ``text`` that is not a ``str`` (e.g. ``bytes``: decode
  them first), and a ``str`` that is not encodable as UTF-8 (a lone
  surrogate, as left by ``errors='surrogateescape'`` on bytes that are not
  UTF-8);
* byte and BPE: nothing else; every Unicode string is a sequence of UTF-8
  bytes, and byte-level BPE covers all 256 bytes;
* word: any word or punctuation character that is not in the vocabulary.

``decode`` skips the EOS id and negative ids (the -1 padding of records);
any other id outside ``[0, V)`` is a DataError. Byte and BPE decoding of a
cut sequence (a window may end inside a multi-byte character) shows the
incomplete character as U+FFFD. Word decoding joins the words with single
spaces, so ``decode(encode(t)) == t`` holds for text already in that normal
form (lower case, one space between tokens), and ``encode(decode(ids)) ==
ids`` holds for any ids of words.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any, Iterable, Mapping

import numpy as np

from jaxaudit.errors import ConfigError, DataError

# Words (letters/digits/underscore, with inner apostrophes) or one other
# non-space character, applied to lower-cased text.
WORD_PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
TOKENIZERS = ('byte', 'word', 'bpe')
_INSTALL_HINT = 'pip install tokenizers'


def _where(where: str | None) -> str:
  return f' in {where}' if where else ''


def _check_text(text: Any, where: str | None) -> str:
  """The text itself, after checking it is a str encodable as UTF-8."""
  if not isinstance(text, str):
    raise DataError(
        f'text{_where(where)} must be a str, got {type(text).__name__}'
        + (" (decode bytes first, e.g. data.decode('utf-8'))"
           if isinstance(text, (bytes, bytearray)) else ''))
  try:
    text.encode('utf-8')
  except UnicodeEncodeError as e:
    raise DataError(
        f'text{_where(where)} is not valid Unicode: {text[e.start]!r} at '
        f'character {e.start} cannot be encoded as UTF-8 (bytes that were not '
        'UTF-8?)') from e
  return text


def _check_ids(ids: Any, vocab_size: int) -> np.ndarray:
  """int64 (n,) ids with EOS and negatives removed; others must be < V - 1."""
  a = np.asarray(ids)
  if a.ndim != 1:
    a = a.reshape(-1)
  if a.size and a.dtype.kind == 'f':
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
      raise DataError('token ids must be whole numbers')
  elif a.size and a.dtype.kind not in 'iu':
    raise DataError(f'token ids must be integers, got dtype {a.dtype}')
  a = a.astype(np.int64)
  a = a[(a >= 0) & (a != vocab_size - 1)]
  if a.size and a.max() >= vocab_size:
    raise DataError(
        f'token id {int(a.max())} is outside the vocabulary [0, {vocab_size})')
  return a


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, EOS = 256, V = 257."""

  name = 'byte'
  vocab_size = 257
  eos_id = 256

  def encode(self, text: str, where: str | None = None) -> np.ndarray:
    """UTF-8 bytes of ``text`` as int32 ``(n,)`` (no EOS).

    Raises:
      DataError: text is not a str or not encodable as UTF-8.
    """
    return np.frombuffer(_check_text(text, where).encode('utf-8'),
                         np.uint8).astype(np.int32)

  def decode(self, ids: Any) -> str:
    """Text of ids ``(n,)`` (EOS and -1 skipped; U+FFFD for cut characters)."""
    a = _check_ids(ids, self.vocab_size)
    return a.astype(np.uint8).tobytes().decode('utf-8', errors='replace')

  def encode_answer(self, prompt: str, answer: str,
                    where: str | None = None) -> tuple[np.ndarray, int]:
    """Ids of ``prompt + ' ' + answer`` and the count of ids before the answer.

    The separating space belongs to the prompt, so ``ids[n_prompt]`` is the
    answer's first byte.
    """
    ids = self.encode(f'{prompt} {answer}', where)
    return ids, len(self.encode(prompt, where)) + 1

  def to_dict(self) -> dict[str, Any]:
    """JSON-able description (see :func:`tokenizer_from_dict`)."""
    return {'name': self.name, 'vocab_size': self.vocab_size,
            'eos_id': self.eos_id}

  def __repr__(self) -> str:
    return 'ByteTokenizer()'


def split_words(text: str) -> list[str]:
  """The word tokens of ``text``: lower-cased :data:`WORD_PATTERN` matches."""
  return WORD_PATTERN.findall(text.lower())


class WordTokenizer:
  """A closed vocabulary of words; ids in sorted word order, EOS last.

  Build it with :meth:`fit`. Attributes: ``words`` (tuple of the vocabulary,
  sorted), ``vocab_size`` (``len(words) + 1``), ``eos_id`` (``len(words)``).
  """

  name = 'word'

  def __init__(self, words: Iterable[str]):
    words = tuple(words)
    if not words:
      raise DataError('a word tokenizer needs at least one word')
    if any(not isinstance(w, str) or not w for w in words):
      raise DataError('the vocabulary holds a word that is not a non-empty str')
    if list(words) != sorted(set(words)):
      raise DataError('the vocabulary must be sorted and free of duplicates')
    bad = [w for w in words if split_words(w) != [w]]
    if bad:
      raise DataError(f'vocabulary entry {bad[0]!r} is not one word token')
    self.words = words
    self._index = {w: i for i, w in enumerate(words)}
    self.vocab_size = len(words) + 1
    self.eos_id = len(words)

  @classmethod
  def fit(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
    """The vocabulary of words seen at least ``min_count`` times in texts.

    Raises:
      DataError: a text is not a str, or no word reaches min_count.
      ConfigError: min_count is not a positive int.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or (
        min_count < 1):
      raise ConfigError(f'min_count must be a positive int, got {min_count!r}')
    if isinstance(texts, str):
      texts = [texts]
    counts: collections.Counter[str] = collections.Counter()
    for i, text in enumerate(texts):
      counts.update(split_words(_check_text(text, f'text {i}')))
    words = sorted(w for w, c in counts.items() if c >= min_count)
    if not words:
      raise DataError(
          f'no word occurs at least min_count={min_count} times in the texts')
    return cls(words)

  def encode(self, text: str, where: str | None = None) -> np.ndarray:
    """Word ids of ``text`` as int32 ``(n,)`` (no EOS).

    Raises:
      DataError: text is not a str, or holds a word outside the vocabulary
        (the message names the word and ``where``).
    """
    ids = []
    index = self._index
    for w in split_words(_check_text(text, where)):
      i = index.get(w)
      if i is None:
        raise DataError(
            f'word {w!r}{_where(where)} is not in the vocabulary of '
            f'{len(self.words)} words (fit the tokenizer on every text it '
            'must encode, e.g. Corpus.texts())')
      ids.append(i)
    return np.asarray(ids, np.int32)

  def decode(self, ids: Any) -> str:
    """The words of ids ``(n,)`` joined by single spaces (EOS, -1 skipped)."""
    a = _check_ids(ids, self.vocab_size)
    return ' '.join(self.words[i] for i in a)

  def encode_answer(self, prompt: str, answer: str,
                    where: str | None = None) -> tuple[np.ndarray, int]:
    """Ids of the prompt's words then the answer's, and the prompt's count."""
    p = self.encode(prompt, where)
    return np.concatenate([p, self.encode(answer, where)]), len(p)

  def to_dict(self) -> dict[str, Any]:
    """JSON-able description: the sorted vocabulary."""
    return {'name': self.name, 'words': list(self.words)}

  def __repr__(self) -> str:
    return f'WordTokenizer({len(self.words)} words)'


def _tokenizers_lib() -> Any:
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(
        f'the BPE tokenizer needs the tokenizers package: {_INSTALL_HINT}'
    ) from e
  return tokenizers


class BPETokenizer:
  """Byte-level BPE (the ``tokenizers`` package); EOS one past its vocabulary.

  Build it with :meth:`fit`, or from the JSON of a trained ``tokenizers``
  model. Attributes: ``vocab_size`` (BPE vocabulary + 1), ``eos_id``.
  """

  name = 'bpe'

  def __init__(self, tokenizer_json: str):
    lib = _tokenizers_lib()
    if not isinstance(tokenizer_json, str):
      raise DataError('a BPE tokenizer is rebuilt from its JSON string')
    try:
      self._tok = lib.Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'cannot rebuild the BPE tokenizer from its JSON: {e}'
                      ) from e
    self._json = tokenizer_json
    self.vocab_size = int(self._tok.get_vocab_size()) + 1
    self.eos_id = self.vocab_size - 1

  @classmethod
  def fit(cls, texts: Iterable[str], vocab_size: int = 1024,
          seed: int = 0, min_frequency: int = 2) -> BPETokenizer:
    """Trains byte-level BPE on ``texts`` in memory.

    Args:
      texts: the training texts.
      vocab_size: V including EOS (at least 258: 256 bytes, a merge, EOS);
        a small corpus may yield fewer merges, hence a smaller V.
      seed: accepted for a uniform signature; the ``tokenizers`` BPE trainer
        is deterministic, so the result does not depend on it.
      min_frequency: a pair must occur this often to be merged.

    Raises:
      ConfigError: ``tokenizers`` is missing (``pip install tokenizers``) or
        vocab_size is not an int >= 258.
      DataError: a text is not a str or not valid Unicode.
    """
    del seed  # The trainer is deterministic.
    lib = _tokenizers_lib()
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or (
        vocab_size < 258):
      raise ConfigError(f'vocab_size must be an int >= 258, got {vocab_size!r}')
    if isinstance(texts, str):
      texts = [texts]
    texts = [_check_text(t, f'text {i}') for i, t in enumerate(texts)]
    tok = lib.Tokenizer(lib.models.BPE())
    tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = lib.decoders.ByteLevel()
    trainer = lib.trainers.BpeTrainer(
        vocab_size=vocab_size - 1, min_frequency=min_frequency,
        initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return cls(tok.to_str())

  def encode(self, text: str, where: str | None = None) -> np.ndarray:
    """BPE ids of ``text`` as int32 ``(n,)`` (no EOS).

    Raises:
      DataError: text is not a str or not encodable as UTF-8.
    """
    text = _check_text(text, where)
    return np.asarray(self._tok.encode(text).ids, np.int32)

  def decode(self, ids: Any) -> str:
    """Text of ids ``(n,)`` (EOS and -1 skipped; U+FFFD for cut characters)."""
    a = _check_ids(ids, self.vocab_size)
    return self._tok.decode([int(i) for i in a], skip_special_tokens=False)

  def encode_answer(self, prompt: str, answer: str,
                    where: str | None = None) -> tuple[np.ndarray, int]:
    """Ids of ``prompt + ' ' + answer`` and the count of the prompt's ids.

    Raises:
      DataError: the prompt's ids are not a prefix of the joint encoding (a
        merge across the boundary; end the prompt with punctuation).
    """
    ids = self.encode(f'{prompt} {answer}', where)
    p = self.encode(prompt, where)
    if len(p) >= len(ids) or not np.array_equal(ids[:len(p)], p):
      raise DataError(
          f'prompt{_where(where)} and answer {answer!r} do not tokenise '
          'separately with BPE (a merge crosses the boundary)')
    return ids, len(p)

  def to_dict(self) -> dict[str, Any]:
    """JSON-able description: the ``tokenizers`` model as a JSON string."""
    return {'name': self.name, 'tokenizer_json': self._json}

  def __repr__(self) -> str:
    return f'BPETokenizer(vocab_size={self.vocab_size})'


Tokenizer = ByteTokenizer | WordTokenizer | BPETokenizer


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
  """Rebuilds a tokeniser from its :meth:`to_dict` (or a JSON string of it).

  Raises:
    DataError: not a tokenizer dict, or an unknown ``name``.
  """
  if isinstance(d, str):
    try:
      d = json.loads(d)
    except ValueError as e:
      raise DataError(f'tokenizer description is not JSON: {e}') from e
  if not isinstance(d, Mapping) or 'name' not in d:
    raise DataError('a tokenizer description is a dict with a "name" key')
  name = d['name']
  try:
    if name == 'byte':
      return ByteTokenizer()
    if name == 'word':
      return WordTokenizer(d['words'])
    if name == 'bpe':
      return BPETokenizer(d['tokenizer_json'])
  except KeyError as e:
    raise DataError(f'{name} tokenizer description lacks {e}') from e
  raise DataError(f'unknown tokenizer {name!r}; known: {", ".join(TOKENIZERS)}')


def get_tokenizer(name: str, texts: Any = (), **kwargs: Any) -> Tokenizer:
  """A tokeniser by name, fitted on ``texts`` where it needs fitting.

  Args:
    name: ``'byte'``, ``'word'`` or ``'bpe'``.
    texts: an iterable of str, or anything with a ``texts()`` method (a
      :class:`jaxaudit.text.corpus.Corpus`: documents, paraphrases and
      probes); ignored by ``'byte'``.
    **kwargs: ``min_count`` (word), ``vocab_size``, ``seed``,
      ``min_frequency`` (bpe).

  Raises:
    ConfigError: unknown name, or keyword arguments it does not take.
  """
  if callable(getattr(texts, 'texts', None)):
    texts = texts.texts()
  allowed = {'byte': (), 'word': ('min_count',),
             'bpe': ('vocab_size', 'seed', 'min_frequency')}
  if name not in allowed:
    raise ConfigError(
        f'unknown tokenizer {name!r}; choose one of {", ".join(TOKENIZERS)}')
  extra = sorted(set(kwargs) - set(allowed[name]))
  if extra:
    raise ConfigError(
        f'tokenizer {name!r} takes no argument(s) {extra}; it takes '
        f'{list(allowed[name]) or "none"}')
  if name == 'byte':
    return ByteTokenizer()
  if name == 'word':
    return WordTokenizer.fit(texts, **kwargs)
  return BPETokenizer.fit(texts, **kwargs)
