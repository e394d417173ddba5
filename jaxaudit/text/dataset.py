"""A tokenised corpus as a :class:`TextDataset` of fixed-length records.

Record encoding (``lm_spec``): a record is one window of one document, an
``x`` row of ``T + 1`` token ids as float32, right-padded with -1 (``T`` =
the model context); its targets ``y`` = ``x[1:]`` as int32 (-1 where
padding). Position ``t`` predicts ``x[t+1]`` from ``x[..t]``.

Windowing: a document is tokenised and the tokeniser's EOS id appended,
giving ``L`` tokens. If ``L <= T + 1`` it is one record (padded). Otherwise
it is split into consecutive windows of ``T + 1`` tokens with stride ``T``:
window ``k`` holds tokens ``[k*T, k*T + T + 1)``, for ``k = 0 ..
ceil((L - 1) / T) - 1``; consecutive windows share one token (the last input
of one is the first of the next), so every token after the first is a
target exactly once, and the last window is padded. All windows of a
document are records with the same doc id and group, in order.

Groups (people, speakers) are divided by :func:`build_text_dataset`, at
random for a seed, into *pretrain* groups (their records form
``TextDataset.pretrain``, for a base LM that never sees the pool), *test*
groups (``x_test``) and *pool* groups (``x_train``, the pool that audit
splits index). :func:`group_split` draws an audit split whose forget set and
reference set are whole groups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
import zlib
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from jaxaudit.data.datasets import fingerprint_arrays
from jaxaudit.data.splits import validate_split
from jaxaudit.data.types import AuditSplit, Dataset
from jaxaudit.errors import ConfigError, DataError, SplitError
from jaxaudit.text.corpus import Corpus
from jaxaudit.text.tokenize import Tokenizer, tokenizer_from_dict

PAD = -1
# Ids must be exact in float32.
MAX_VOCAB = 2**24
_FINGERPRINT_TAG = b'jaxaudit.text.v1\0'


class KnowledgeProbes(NamedTuple):
  """Tokenised knowledge probes (questions with one-word answers).

  Attributes:
    tokens: float32 ``(Q, T+1)``: the prompt then the true answer as in
      running text, -1 padded (a record, so the model evaluates it as is).
    answer_pos: int32 ``(Q,)``: position ``t`` of the prompt's last token;
      ``tokens[q, t+1]`` is the answer's first token.
    answer: int32 ``(Q,)``: the true answer's first token id.
    group: int64 ``(Q,)``: the group the fact belongs to.
    false_answers: int32 ``(Q, F)``: first token ids of wrong answers of the
      same attribute (-1 where a probe has fewer than F).
  """
  tokens: np.ndarray
  answer_pos: np.ndarray
  answer: np.ndarray
  group: np.ndarray
  false_answers: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset(Dataset):
  """Records of a tokenised corpus (see the module docstring).

  The :class:`~jaxaudit.data.types.Dataset` fields hold ``x_train`` float32
  ``(N, T+1)``, ``y_train`` int32 ``(N, T)``, ``x_test`` ``(M, T+1)``,
  ``y_test`` ``(M, T)``, ``num_classes`` = V, ``input_shape`` = ``(T+1,)``;
  ``fingerprint`` covers every array below and the tokeniser.

  Attributes:
    groups: int64 ``(N,)`` group id (into ``group_names``) of each record.
    doc_ids: int64 ``(N,)`` corpus document index of each record.
    test_groups: int64 ``(M,)``.
    test_doc_ids: int64 ``(M,)``.
    tokenizer: the tokeniser's ``to_dict()``.
    neighbours: view name -> float32 ``(N, T+1)`` rows aligned with
      ``x_train`` (``'paraphrase'``: the first window of the held-out
      paraphrase of the record's document; -1 rows where none).
    knowledge: probes of the pool and test groups, or None.
    pretrain: float32 ``(P, T+1)`` records of the pretrain groups.
    pretrain_groups: int64 ``(P,)``.
    pretrain_doc_ids: int64 ``(P,)``.
    group_names: name of each group id.
  """
  groups: np.ndarray
  doc_ids: np.ndarray
  test_groups: np.ndarray
  test_doc_ids: np.ndarray
  tokenizer: dict[str, Any]
  neighbours: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  knowledge: KnowledgeProbes | None = None
  pretrain: np.ndarray | None = None
  pretrain_groups: np.ndarray | None = None
  pretrain_doc_ids: np.ndarray | None = None
  group_names: tuple[str, ...] = ()

  def __post_init__(self):
    width = int(self.input_shape[0])
    empty = {'pretrain': np.zeros((0, width), np.float32),
             'pretrain_groups': np.zeros((0,), np.int64),
             'pretrain_doc_ids': np.zeros((0,), np.int64)}
    for key, value in empty.items():
      if getattr(self, key) is None:
        value.setflags(write=False)
        object.__setattr__(self, key, value)

  @property
  def context(self) -> int:
    """T, the model context (records hold T + 1 tokens)."""
    return int(self.input_shape[0]) - 1


def windows(ids: Any, context: int) -> np.ndarray:
  """The records of one tokenised document (EOS already appended).

  Args:
    ids: ``(L,)`` token ids, L >= 1.
    context: T.

  Returns:
    float32 ``(W, T+1)``, ``W = max(1, ceil((L - 1) / T))``: window ``k``
    holds ``ids[k*T : k*T + T + 1]``, right-padded with -1.
  """
  ids = np.asarray(ids, np.int64).reshape(-1)
  n = ids.size
  count = max(1, -(-(n - 1) // context))
  out = np.full((count, context + 1), PAD, np.float32)
  for k in range(count):
    chunk = ids[k * context:k * context + context + 1]
    out[k, :chunk.size] = chunk
  return out


def targets(x: np.ndarray) -> np.ndarray:
  """int32 ``(N, T)`` targets of records ``x`` ``(N, T+1)``: x[:, 1:], -1 pad."""
  x = np.asarray(x)
  return np.where(x[:, 1:] >= 0, x[:, 1:], PAD).astype(np.int32)


def _check_fraction(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0.0 <= float(value) < 1.0):
    raise ConfigError(f'{name} must be a number in [0, 1), got {value!r}')
  return float(value)


def _as_tokenizer(tokenizer: Any) -> Tokenizer:
  if isinstance(tokenizer, Mapping):
    return tokenizer_from_dict(tokenizer)
  if not all(hasattr(tokenizer, a) for a in ('encode', 'decode', 'to_dict',
                                             'eos_id', 'vocab_size')):
    raise ConfigError(
        f'expected a tokenizer (jaxaudit.text.tokenize), got '
        f'{type(tokenizer).__name__}')
  return tokenizer


def _stack(rows: list[np.ndarray], width: int) -> np.ndarray:
  if not rows:
    return np.zeros((0, width), np.float32)
  return np.concatenate(rows).astype(np.float32, copy=False)


def _probes(corpus: Corpus, tok: Tokenizer, keep_groups: np.ndarray,
            context: int) -> KnowledgeProbes:
  """Tokenised knowledge probes of ``keep_groups`` (see KnowledgeProbes)."""
  keep = set(keep_groups.tolist())
  chosen = [(k, p) for k, p in enumerate(corpus.knowledge or ())
            if p.group in keep]
  num_false = max([len(p.false_answers) for _, p in chosen], default=0)
  q = len(chosen)
  tokens = np.full((q, context + 1), PAD, np.float32)
  answer_pos = np.zeros((q,), np.int32)
  answer = np.zeros((q,), np.int32)
  group = np.zeros((q,), np.int64)
  false = np.full((q, num_false), PAD, np.int32)
  for row, (k, p) in enumerate(chosen):
    where = f'knowledge probe {k}'
    ids, n_prompt = tok.encode_answer(p.prompt, p.answer, where)
    if n_prompt < 1 or n_prompt > context or n_prompt >= len(ids):
      raise DataError(
          f'{where}: its prompt has {n_prompt} tokens; the answer must follow '
          f'a non-empty prompt within the context of {context}')
    ids = ids[:context + 1]
    tokens[row, :len(ids)] = ids
    answer_pos[row] = n_prompt - 1
    answer[row] = ids[n_prompt]
    group[row] = p.group
    for j, wrong in enumerate(p.false_answers):
      wids, wn = tok.encode_answer(p.prompt, wrong, where)
      if wn >= len(wids):
        raise DataError(f'{where}: false answer {wrong!r} has no token')
      false[row, j] = wids[wn]
  return KnowledgeProbes(tokens, answer_pos, answer, group, false)


def _fingerprint(arrays: Mapping[str, np.ndarray],
                 tokenizer: Mapping[str, Any]) -> str:
  """sha256 over fingerprint_arrays(x/y), the tokeniser and every array."""
  h = hashlib.sha256(_FINGERPRINT_TAG)
  h.update(fingerprint_arrays(arrays['x_train'], arrays['y_train'],
                              arrays['x_test'], arrays['y_test']).encode())
  h.update(json.dumps(tokenizer, sort_keys=True).encode())
  for key in sorted(arrays):
    if key in ('x_train', 'y_train', 'x_test', 'y_test'):
      continue
    a = np.ascontiguousarray(arrays[key])
    h.update(f'{key}|{a.dtype.str}|{a.shape}\0'.encode())
    h.update(a)
  return h.hexdigest()


def build_text_dataset(corpus: Corpus, tokenizer: Any, *, context: int = 64,
                       test_fraction: float = 0.1,
                       pretrain_fraction: float = 0.3, seed: int = 0,
                       name: str | None = None,
                       max_groups: int | None = None,
                       pretrain_probes: bool = True) -> TextDataset:
  """Tokenises a corpus into records and divides its groups.

  The groups present in the corpus (at most ``max_groups`` of them, drawn
  first) are permuted with ``numpy.random.default_rng(seed)``; the first ``round(test_fraction * G)``
  (at least 1 when the fraction is > 0) are test groups, the next
  ``round(pretrain_fraction * G)`` (likewise) pretrain groups, the rest the
  pool. Records follow corpus document order (see the module docstring for
  the windowing).

  Args:
    corpus: the documents (see :mod:`jaxaudit.text.corpus`).
    tokenizer: a tokeniser or its ``to_dict()``; it must cover every text
      (fit it on ``corpus.texts()``).
    context: T >= 1; records hold T + 1 tokens.
    test_fraction: share of groups held out for ``x_test``.
    pretrain_fraction: share of groups for ``pretrain``.
    seed: the group division's seed.
    name: data set name (default: the corpus name).
    max_groups: keep only this many groups (drawn with the seed; the other
      groups' documents and probes are left out); None keeps all.
    pretrain_probes: append the knowledge probes of the pretrain groups
      (question, then its answer) to ``pretrain``, so that a base LM learns
      the question form on people disjoint from the pool — the pool's
      probes then ask it to retrieve facts it only read in biographies
      (the knowledge test of :mod:`jaxaudit.tasks.language`).

  Returns:
    A :class:`TextDataset`; arrays are read-only.

  Raises:
    ConfigError: bad context or fractions, or a tokeniser too large for
      float32 ids.
    DataError: a text outside the tokeniser (naming the document or probe),
      or no group left for the pool.
  """
  if not isinstance(corpus, Corpus):
    raise ConfigError(f'expected a Corpus, got {type(corpus).__name__}')
  tok = _as_tokenizer(tokenizer)
  if isinstance(context, bool) or not isinstance(context, (int, np.integer)) \
      or context < 1:
    raise ConfigError(f'context must be an int >= 1, got {context!r}')
  context = int(context)
  test_fraction = _check_fraction('test_fraction', test_fraction)
  pretrain_fraction = _check_fraction('pretrain_fraction', pretrain_fraction)
  if int(tok.vocab_size) > MAX_VOCAB:
    raise ConfigError(f'vocab_size {tok.vocab_size} exceeds {MAX_VOCAB} (ids '
                      'are stored as float32)')
  present = np.unique(corpus.groups)
  rng = np.random.default_rng(seed)
  if max_groups is not None:
    if isinstance(max_groups, bool) or not isinstance(
        max_groups, (int, np.integer)) or max_groups < 1:
      raise ConfigError(f'max_groups must be an int >= 1 or None, got '
                        f'{max_groups!r}')
    if max_groups < present.size:
      present = np.sort(rng.choice(present, size=int(max_groups),
                                   replace=False))
  g = present.size
  perm = rng.permutation(present)
  n_test = max(1, round(test_fraction * g)) if test_fraction > 0 else 0
  n_pre = (max(1, round(pretrain_fraction * g)) if pretrain_fraction > 0
           else 0)
  if n_test + n_pre >= g:
    raise DataError(
        f'{corpus.name}: {g} groups leave none for the pool after {n_test} '
        f'test and {n_pre} pretrain groups; lower test_fraction or '
        'pretrain_fraction')
  test_set = np.sort(perm[:n_test])
  pre_set = np.sort(perm[n_test:n_test + n_pre])
  pool_set = np.sort(perm[n_test + n_pre:])
  role = {int(x): 'pool' for x in pool_set}
  role.update({int(x): 'test' for x in test_set})
  role.update({int(x): 'pretrain' for x in pre_set})

  eos = np.asarray([tok.eos_id], np.int64)
  parts: dict[str, dict[str, list[np.ndarray]]] = {
      r: {'x': [], 'groups': [], 'docs': [], 'para': []}
      for r in ('pool', 'test', 'pretrain')}
  empty_row = np.full((1, context + 1), PAD, np.float32)
  for i, (doc, grp) in enumerate(zip(corpus.documents, corpus.groups)):
    r = role.get(int(grp))
    if r is None:  # A group left out by max_groups.
      continue
    ids = np.concatenate([tok.encode(doc, f'document {i}'), eos])
    recs = windows(ids, context)
    part = parts[r]
    part['x'].append(recs)
    part['groups'].append(np.full((len(recs),), grp, np.int64))
    part['docs'].append(np.full((len(recs),), i, np.int64))
    if r == 'pool' and corpus.paraphrases is not None:
      para = corpus.paraphrases[i]
      if para:
        pids = np.concatenate(
            [tok.encode(para, f'paraphrase of document {i}'), eos])
        row = windows(pids, context)[:1]
      else:
        row = empty_row
      part['para'].append(np.repeat(row, len(recs), axis=0))

  width = context + 1

  def ints(r: str, key: str) -> np.ndarray:
    return (np.concatenate(parts[r][key]) if parts[r][key]
            else np.zeros((0,), np.int64))

  arrays = {
      'x_train': _stack(parts['pool']['x'], width),
      'x_test': _stack(parts['test']['x'], width),
      'groups': ints('pool', 'groups'), 'doc_ids': ints('pool', 'docs'),
      'test_groups': ints('test', 'groups'),
      'test_doc_ids': ints('test', 'docs'),
      'pretrain': _stack(parts['pretrain']['x'], width),
      'pretrain_groups': ints('pretrain', 'groups'),
      'pretrain_doc_ids': ints('pretrain', 'docs'),
  }
  arrays['y_train'] = targets(arrays['x_train'])
  arrays['y_test'] = targets(arrays['x_test'])
  neighbours = {}
  if corpus.paraphrases is not None:
    neighbours['paraphrase'] = _stack(parts['pool']['para'], width)
  knowledge = None
  if corpus.knowledge is not None:
    knowledge = _probes(corpus, tok, np.union1d(pool_set, test_set), context)
    if pretrain_probes and len(pre_set):
      pre = _probes(corpus, tok, pre_set, context)
      arrays['pretrain'] = np.concatenate([arrays['pretrain'], pre.tokens])
      arrays['pretrain_groups'] = np.concatenate([arrays['pretrain_groups'], pre.group])
      arrays['pretrain_doc_ids'] = np.concatenate(
          [arrays['pretrain_doc_ids'], np.full(len(pre.group), -1, np.int64)])
  tok_dict = tok.to_dict()
  hashed = dict(arrays)
  hashed.update({f'neighbours/{k}': v for k, v in neighbours.items()})
  if knowledge is not None:
    hashed.update({f'knowledge/{k}': v
                   for k, v in knowledge._asdict().items()})
  fingerprint = _fingerprint(hashed, tok_dict)
  for a in hashed.values():
    a.setflags(write=False)
  return TextDataset(
      name=name or corpus.name, num_classes=int(tok.vocab_size),
      input_shape=(width,), source=f'text:{corpus.source}',
      fingerprint=fingerprint, tokenizer=tok_dict, neighbours=neighbours,
      knowledge=knowledge, group_names=tuple(corpus.group_names), **arrays)


def _groups_arg(name: str, value: Any, allowed: np.ndarray) -> np.ndarray:
  """Explicit group ids: unique, sorted, all in ``allowed``."""
  a = np.asarray(value).reshape(-1)
  if a.size == 0 or a.dtype.kind not in 'iu':
    raise SplitError(f'{name} must be a non-empty list of int group ids, got '
                     f'{value!r}')
  a = a.astype(np.int64)
  if np.unique(a).size != a.size:
    raise SplitError(f'{name} lists a group twice')
  outside = np.setdiff1d(a, allowed)
  if outside.size:
    raise SplitError(f'{name}: group {int(outside[0])} is not a group of the '
                     'pool (x_train)')
  return np.sort(a)


def _count_arg(name: str, value: Any, low: int, high: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
      not low <= value <= high:
    raise SplitError(f'{name} must be an int in [{low}, {high}], got '
                     f'{value!r}')
  return int(value)


def _draw(rng: np.random.Generator, groups: np.ndarray, k: int) -> np.ndarray:
  return np.sort(rng.choice(groups, size=k, replace=False)).astype(np.int64)


def group_split(dataset: TextDataset, *, seed: int,
                forget_groups: int | Sequence[int] | None = None,
                forget_fraction: float = 0.1, ref_fraction: float = 0.2,
                train_groups: int | Sequence[int] | None = None) -> AuditSplit:
  """An audit split of a TextDataset's pool by whole groups.

  Draws, with ``numpy.random.default_rng(seed)``, in this order:

  1. D_ref: ``round(ref_fraction * G)`` (>= 1) of the pool's G groups, never
     an explicit forget group nor one of explicit ``train_groups``;
  2. D: the remaining groups, or ``train_groups`` of them (an int: that many
     drawn, always keeping explicit forget groups; a list: exactly those);
  3. Du: the explicit ``forget_groups`` (a list), that many groups of D (an
     int), or ``round(forget_fraction * |D|)`` (>= 1) groups of D (None).

  Every index set holds all records of its groups; ``test`` is every test
  record. ``forget_mode`` is ``'indices'``.

  Args:
    dataset: a :class:`TextDataset`.
    seed: the split's seed.
    forget_groups: None, a count, or a list of group ids of the pool.
    forget_fraction: share of D's groups forgotten when forget_groups is None.
    ref_fraction: share of the pool's groups in D_ref.
    train_groups: None, a count, or a list of group ids forming D.

  Returns:
    The AuditSplit, checked with :func:`jaxaudit.data.splits.validate_split`.

  Raises:
    SplitError: unknown groups, counts out of range, or too few groups for
      non-empty Du, Dr and D_ref.
  """
  if not isinstance(dataset, TextDataset):
    raise SplitError(f'group_split needs a TextDataset, got '
                     f'{type(dataset).__name__}')
  groups = np.asarray(dataset.groups)
  pool = np.unique(groups)
  rng = np.random.default_rng(seed)
  forced = (np.zeros((0,), np.int64) if forget_groups is None or isinstance(
      forget_groups, (int, np.integer)) else _groups_arg(
          'forget_groups', forget_groups, pool))
  fixed_train = None
  if train_groups is not None and not isinstance(train_groups,
                                                 (int, np.integer)):
    fixed_train = _groups_arg('train_groups', train_groups, pool)
    if np.setdiff1d(forced, fixed_train).size:
      raise SplitError('forget_groups must be among train_groups')
    if fixed_train.size < 2:
      raise SplitError('train_groups must hold at least 2 groups (forget and '
                       'retain)')
  # 1. D_ref.
  eligible = np.setdiff1d(pool, forced if fixed_train is None else fixed_train)
  if isinstance(ref_fraction, bool) or not isinstance(
      ref_fraction, (int, float)) or not 0.0 < ref_fraction < 1.0:
    raise SplitError(f'ref_fraction must be in (0, 1), got {ref_fraction!r}')
  k_ref = max(1, round(ref_fraction * pool.size))
  need = 0 if fixed_train is not None else (1 if forced.size else 2)
  if k_ref > eligible.size - need:
    raise SplitError(
        f'the pool has {pool.size} groups: too few for {k_ref} reference '
        f'groups plus a forget and a retain group; lower ref_fraction or use '
        'more groups')
  ref = _draw(rng, eligible, k_ref)
  rest = np.setdiff1d(eligible, ref)
  # 2. D.
  if fixed_train is not None:
    train = fixed_train
  elif train_groups is None:
    train = np.union1d(rest, forced)
  else:
    low = forced.size + 1 if forced.size else 2
    k = _count_arg('train_groups', train_groups, low, rest.size + forced.size)
    train = np.union1d(forced, _draw(rng, rest, k - forced.size))
  # 3. Du.
  if forced.size:
    forget = forced
  else:
    if forget_groups is not None:
      k = _count_arg('forget_groups', forget_groups, 1, train.size - 1)
    else:
      if isinstance(forget_fraction, bool) or not isinstance(
          forget_fraction, (int, float)) or not 0.0 < forget_fraction < 1.0:
        raise SplitError(
            f'forget_fraction must be in (0, 1), got {forget_fraction!r}')
      k = min(max(1, round(forget_fraction * train.size)), train.size - 1)
    if k < 1:
      raise SplitError(f'D has {train.size} group(s): too few to keep a '
                       'retain group')
    forget = _draw(rng, train, k)
  if forget.size >= train.size:
    raise SplitError('the forget groups cover all of D; the retain set would '
                     'be empty')

  def records(gs: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(groups, gs)).astype(np.int64)

  train_idx = records(train)
  forget_idx = records(forget)
  split = AuditSplit(
      train=train_idx, forget=forget_idx,
      retain=np.setdiff1d(train_idx, forget_idx).astype(np.int64),
      ref=records(ref),
      test=np.arange(len(dataset.y_test), dtype=np.int64), seed=int(seed),
      forget_mode='indices', forget_classes=(),
      dataset_fingerprint=dataset.fingerprint)
  validate_split(split, dataset)
  return split


_TOKENIZER_CACHE: weakref.WeakKeyDictionary[TextDataset, Tokenizer] = (
    weakref.WeakKeyDictionary())


def dataset_tokenizer(dataset: TextDataset) -> Tokenizer:
  """The tokeniser of a TextDataset (rebuilt once from its dict, cached)."""
  tok = _TOKENIZER_CACHE.get(dataset)
  if tok is None:
    tok = tokenizer_from_dict(dataset.tokenizer)
    _TOKENIZER_CACHE[dataset] = tok
  return tok


def _rows(dataset: TextDataset, split: str) -> np.ndarray:
  views = {'train': dataset.x_train, 'test': dataset.x_test,
           'pretrain': dataset.pretrain}
  if split not in views:
    raise ConfigError(f'split must be one of {sorted(views)}, got {split!r}')
  return views[split]


def sequence_text(dataset: TextDataset, idx: int, *,
                  split: str = 'train') -> str:
  """Decoded text of record ``idx`` of ``x_train`` (or ``x_test``/``pretrain``).

  Padding and EOS are left out.
  """
  rows = _rows(dataset, split)
  if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not (
      -len(rows) <= idx < len(rows)):
    raise DataError(f'record index {idx!r} out of range for {len(rows)} '
                    f'{split} records')
  return dataset_tokenizer(dataset).decode(rows[int(idx)])


def zlib_bits(dataset: TextDataset, idx: Any, *,
              split: str = 'train') -> np.ndarray:
  """zlib-compressed length in bits of records' decoded text.

  Args:
    dataset: the TextDataset.
    idx: ``(n,)`` record indices (or one int) into the chosen rows.
    split: ``'train'`` (x_train), ``'test'`` or ``'pretrain'``.

  Returns:
    float64 ``(n,)``: ``8 * len(zlib.compress(text.encode('utf-8')))``.
  """
  idx = np.asarray(idx).reshape(-1)
  if idx.size and idx.dtype.kind not in 'iu':
    raise DataError(f'record indices must be integers, got dtype {idx.dtype}')
  return np.asarray(
      [8.0 * len(zlib.compress(sequence_text(dataset, int(i), split=split)
                               .encode('utf-8'))) for i in idx], np.float64)
