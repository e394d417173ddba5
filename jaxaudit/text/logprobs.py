"""A black-box language model as per-token log-probs: ``jaxaudit audit --token_logprobs=FILE.npz``.

A model jaxaudit cannot run (a PyTorch / transformers checkpoint, a served
model) is audited from one ``.npz`` file of its per-token log-probabilities on
the audited records. :func:`target_from_token_logprobs` turns the file into a
:class:`jaxaudit.audit.Target` whose outputs are the per-position features of
:mod:`jaxaudit.models.transformer` (``(n, T, 5)``: logp, mu, sigma, argmax,
valid), the outputs the language-model task reads.

File format (``np.savez``; no pickles; every array named below, nothing else)
-----------------------------------------------------------------------------
Let ``n`` be the number of records, ``L = T + 1`` the data set's record length
(``T`` the model context) and ``k`` the number of top-k entries.

``indices``        (n,) integer: pool indices of the records (rows of the data
                   set's ``x_train``), unique, >= 0. Float arrays are refused
                   (a truncated index would audit another record).
``tokens``         (n, L) integer: each record's token ids exactly as the data
                   set's ``x_train[indices]`` row (ids >= 0, right-padded with
                   -1). ``L`` must equal the data set's ``T + 1`` (pad shorter
                   rows with -1 to that length; longer rows are an error). A
                   token differing from the data set's is an AuditError naming
                   the first disagreeing record (pool index) and position.
``logprobs``       (n, L - 1) floating: ``logprobs[i, t]`` = the model's
                   ``log p(tokens[i, t+1] | tokens[i, :t+1])`` (natural log).
                   Position t is *valid* iff ``tokens[i, t+1] >= 0``; values at
                   invalid positions are ignored (write NaN). At valid positions
                   they must be finite and <= 0 (up to :data:`LOGPROB_TOL`).
``topk_ids``       optional (n, L - 1, k) integer: the model's k most likely
                   next tokens at each position (ids in [0, V), distinct), most
                   likely first.
``topk_logprobs``  optional (n, L - 1, k) floating: their log-probs under the
                   model's full next-token distribution, sorted descending,
                   finite and <= 0 at valid positions, ``sum(exp) <= 1``
                   (up to tolerance). Given together with ``topk_ids``. Where
                   the record's own token is among the top k, its entry must
                   agree with ``logprobs``; where it is not, ``logprobs`` must
                   not exceed the k-th entry (this catches files shifted by one
                   position).
``test_indices``, ``test_tokens``, ``test_logprobs`` (and optionally
``test_topk_ids``, ``test_topk_logprobs``): the same for records of the test
split (indices into ``x_test``), given all three together.

Features built from the file (:func:`features_from_logprobs`)
--------------------------------------------------------------
At a valid position: ``logp`` = ``logprobs``; ``valid`` = 1. With top-k:
``argmax`` = ``topk_ids[..., 0]`` and ``mu`` / ``sigma`` = the mean and
standard deviation of ``log p(z)`` under the model's next-token distribution,
estimated from the top k plus a *tail bucket*: the k listed tokens keep their
probabilities ``p_j`` (renormalised to sum 1 if, by rounding, they exceed 1),
and the remaining mass ``r = 1 - sum_j p_j`` is spread evenly over the
``V - k`` unlisted tokens (each ``r / (V - k)``; one bucket of mass ``r`` when
the vocabulary size is not given). This is exact when ``k = V`` (or the tail
is empty); otherwise it ignores how unevenly the tail is spread. Without top-k:
``mu`` and ``sigma`` are NaN and ``argmax`` is -1, so **Min-K%++ and the
top-1 agreement signals are unavailable** (the LOSS, Min-K% and zlib signals
need only ``logp``). At invalid positions every feature is 0, as the model's.

:func:`export_token_logprobs` writes the file from a jaxaudit
``TransformerLM``; :data:`HF_EXAMPLE` shows how to write it from PyTorch /
transformers.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Any

import numpy as np

from jaxaudit import io_utils
from jaxaudit.audit.target import Target, check_index_array
from jaxaudit.errors import AuditError

REQUIRED = ('indices', 'tokens', 'logprobs')
TOPK = ('topk_ids', 'topk_logprobs')
KNOWN = REQUIRED + TOPK + tuple('test_' + k for k in REQUIRED + TOPK)
# A log-prob may exceed 0 by this much (float32 / bf16 rounding of log_softmax).
LOGPROB_TOL = 1e-3
# Agreement of `logprobs` with the top-k entry of the same token (absolute and relative).
CONSISTENCY_TOL = 1e-2
NUM_FEATURES = 5

HF_EXAMPLE = '''\
import numpy as np, torch
from transformers import AutoModelForCausalLM
from jaxaudit.text.logprobs import write_token_logprobs

# indices: the pool indices to audit; tokens: the data set's records, (n, T+1), -1 = padding
tokens = np.rint(dataset.x_train[indices]).astype(np.int64)
ids = torch.as_tensor(np.maximum(tokens, 0))            # padding -> any id (right-padded)
model = AutoModelForCausalLM.from_pretrained('path/to/model').eval()
with torch.no_grad():                                   # in batches for many records
  logits = model(input_ids=ids[:, :-1]).logits          # causal: padding never seen by valid t
logp = torch.log_softmax(logits.float(), dim=-1)        # (n, T, V)
token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (n, T); ignored at padding
top_logp, top_ids = logp.topk(8, dim=-1)                # (n, T, 8), most likely first
write_token_logprobs('mu_logprobs.npz', indices, tokens, token_logp.numpy(),
                     topk_ids=top_ids.numpy(), topk_logprobs=top_logp.numpy())
'''


# -----------------------------------------------------------------------------
# Validation.
# -----------------------------------------------------------------------------


def _int_array(table: dict, key: str, path: str, shape: tuple) -> np.ndarray:
  a = np.asarray(table[key])
  if a.dtype.kind not in 'iu':
    raise AuditError(f'{path}: {key} must be an integer array of token ids; got dtype '
                     f'{a.dtype}')
  if a.shape != shape:
    raise AuditError(f'{path}: {key} must have shape {shape}; got {a.shape}')
  return a.astype(np.int64)


def _float_array(table: dict, key: str, path: str, shape: tuple) -> np.ndarray:
  a = np.asarray(table[key])
  if not np.issubdtype(a.dtype, np.floating):
    raise AuditError(f'{path}: {key} must be a floating-point array; got dtype {a.dtype}')
  if a.shape != shape:
    raise AuditError(f'{path}: {key} must have shape {shape}; got {a.shape}')
  return a.astype(np.float32)


def _first(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(v) for v in np.argwhere(mask)[0])


def _check_set(table: dict, prefix: str, path: str, consistency: bool
               ) -> dict[str, np.ndarray]:
  """Validates one record set (``''`` pool or ``'test_'``); returns its arrays converted."""
  ki, kt, kl, kti, ktl = (prefix + k for k in REQUIRED + TOPK)
  what = 'test record' if prefix else 'record'
  idx = check_index_array(table, ki, path).astype(np.int64)
  n = len(idx)
  tok = np.asarray(table[kt])
  if tok.ndim != 2 or tok.shape[0] != n or tok.shape[1] < 2:
    raise AuditError(f'{path}: {kt} must have shape ({n}, L) with L >= 2 (one row per index); '
                     f'got {tok.shape}')
  tok = _int_array(table, kt, path, tok.shape)
  length = tok.shape[1]
  if (tok < -1).any():
    i, t = _first(tok < -1)
    raise AuditError(f'{path}: {kt} holds {tok[i, t]} at {what} {idx[i]} position {t} '
                     '(token ids are >= 0, padding is -1)')
  pad = tok < 0
  after = pad[:, :-1] & ~pad[:, 1:]
  if after.any():
    i, t = _first(after)
    raise AuditError(f'{path}: {kt} of {what} {idx[i]} has a token after padding at position '
                     f'{t + 1} (records are right-padded with -1)')
  lp = _float_array(table, kl, path, (n, length - 1))
  valid = ~pad[:, 1:]
  _check_logprob_values(lp, valid, kl, path, idx, what)
  out = {ki: idx, kt: tok, kl: np.where(valid, lp, np.nan).astype(np.float32)}
  if (kti in table) != (ktl in table):
    raise AuditError(f'{path}: {kti} and {ktl} must be given together (has {sorted(table)})')
  if kti in table:
    ids = np.asarray(table[kti])
    if ids.ndim != 3 or ids.shape[:2] != (n, length - 1) or ids.shape[2] < 1:
      raise AuditError(f'{path}: {kti} must have shape ({n}, {length - 1}, k) with k >= 1; got '
                       f'{ids.shape}')
    ids = _int_array(table, kti, path, ids.shape)
    k = ids.shape[2]
    tlp = _float_array(table, ktl, path, (n, length - 1, k))
    vk = np.broadcast_to(valid[..., None], ids.shape)
    if (vk & (ids < 0)).any():
      i, t, _ = _first(vk & (ids < 0))
      raise AuditError(f'{path}: {kti} holds a negative id at {what} {idx[i]} position {t}')
    if k > 1:
      srt = np.sort(ids, axis=-1)
      dup = valid & (srt[..., 1:] == srt[..., :-1]).any(-1)
      if dup.any():
        i, t = _first(dup)
        raise AuditError(f'{path}: {kti} repeats a token id at {what} {idx[i]} position {t}')
    _check_logprob_values(tlp, vk, ktl, path, idx, what)
    if k > 1:
      unsorted = valid & (np.diff(np.where(vk, tlp, 0.0), axis=-1) > LOGPROB_TOL).any(-1)
      if unsorted.any():
        i, t = _first(unsorted)
        raise AuditError(f'{path}: {ktl} must be sorted in descending order (most likely first); '
                         f'not at {what} {idx[i]} position {t}')
    mass = np.sum(np.exp(np.where(vk, tlp.astype(np.float64), -np.inf)), -1)
    over = valid & (mass > 1.0 + k * LOGPROB_TOL)
    if over.any():
      i, t = _first(over)
      raise AuditError(f'{path}: the top-k probabilities of {what} {idx[i]} position {t} sum to '
                       f'{mass[i, t]:.4g} > 1 ({ktl} must be log-probs of one distribution)')
    if consistency:
      _check_consistent(lp, tok, ids, tlp, valid, path, prefix, idx, what)
    out[kti] = ids
    out[ktl] = np.where(vk, tlp, np.nan).astype(np.float32)
  return out


def _check_logprob_values(lp: np.ndarray, valid: np.ndarray, key: str, path: str,
                          idx: np.ndarray, what: str) -> None:
  bad = valid & ~np.isfinite(lp)
  if bad.any():
    pos = _first(bad)
    raise AuditError(f'{path}: {key} holds {lp[pos]} at {what} {idx[pos[0]]} position {pos[1]} '
                     f'({int(bad.sum())} non-finite value(s) at valid positions)')
  pos_ = valid & (lp > LOGPROB_TOL)
  if pos_.any():
    pos = _first(pos_)
    raise AuditError(f'{path}: {key} holds a positive log-prob {lp[pos]:.4g} at {what} '
                     f'{idx[pos[0]]} position {pos[1]} (log-probs are <= 0; are these logits?)')


def _check_consistent(lp, tok, ids, tlp, valid, path, prefix, idx, what) -> None:
  """The record's token: its top-k entry equals its log-prob; outside top-k it is below them."""
  nxt = tok[:, 1:, None]
  hit = (ids == nxt) & valid[..., None]
  in_k = hit.any(-1)
  own = np.where(hit, tlp, 0.0).sum(-1)
  close = np.abs(own - lp) <= CONSISTENCY_TOL * (1.0 + np.abs(lp))
  bad = in_k & ~close
  last = tlp[..., -1]
  bad |= valid & ~in_k & (lp > last + CONSISTENCY_TOL * (1.0 + np.abs(last)))
  if bad.any():
    i, t = _first(bad)
    raise AuditError(f'{path}: {prefix}logprobs disagree with {prefix}topk_logprobs at {what} '
                     f'{idx[i]} position {t} (token {tok[i, t + 1]}: {lp[i, t]:.4g}; top-k '
                     f'{tlp[i, t, 0]:.4g}..{tlp[i, t, -1]:.4g}); logprobs[:, t] must score '
                     'tokens[:, t+1] (not shifted by one)')


def check_consistency(table: dict[str, np.ndarray], path: str = 'token-logprobs file') -> None:
  """Checks ``logprobs`` against the top-k in each set of a converted table.

  Where a record's token is among the top k its entry must equal its
  log-prob; where it is not, its log-prob must not exceed the k-th (a file
  shifted by one position fails).

  Args:
    table: as :func:`validate_token_logprobs` returns.
    path: the file name used in messages.
  Raises:
    AuditError: naming the first disagreeing record and position.
  """
  for prefix in ('', 'test_'):
    ki, kt, kl, kti, ktl = (prefix + k for k in REQUIRED + TOPK)
    if kti in table:
      valid = table[kt][:, 1:] >= 0
      _check_consistent(table[kl], table[kt], table[kti], table[ktl], valid, path, prefix,
                        table[ki], 'test record' if prefix else 'record')


def validate_token_logprobs(table: dict[str, np.ndarray], path: str = 'token-logprobs file',
                            *, consistency: bool = True) -> dict[str, np.ndarray]:
  """Checks the arrays of a token-logprobs file (see the module docstring).

  Args:
    table: array name -> array, as read from the ``.npz``.
    path: the file name used in messages.
    consistency: also run :func:`check_consistency` (logprobs vs top-k).
  Returns:
    The arrays, converted: indices (n,) int64, tokens (n, L) int64, logprobs
    (n, L-1) float32 (NaN at invalid positions), topk_ids (n, L-1, k) int64,
    topk_logprobs (n, L-1, k) float32 (NaN at invalid positions); test_* likewise.
  Raises:
    AuditError: a missing or unknown array, a wrong dtype or shape, bad
      padding, non-finite or positive log-probs at valid positions, unsorted
      or inconsistent top-k.
  """
  for k in REQUIRED:
    if k not in table:
      raise AuditError(f'{path} lacks the array {k!r} (has {sorted(table)})')
  unknown = sorted(k for k in table if k not in KNOWN)
  if unknown:
    raise AuditError(f'{path} holds unknown array(s) {unknown}; known: {list(KNOWN)}')
  out = _check_set(table, '', path, consistency)
  test_keys = [k for k in KNOWN if k.startswith('test_') and k in table]
  if test_keys:
    missing = [f'test_{k}' for k in REQUIRED if f'test_{k}' not in table]
    if missing:
      raise AuditError(f'{path}: test records need {missing} too (has {sorted(table)})')
    out.update(_check_set(table, 'test_', path, consistency))
    if out['test_tokens'].shape[1] != out['tokens'].shape[1]:
      raise AuditError(f'{path}: test_tokens rows have length {out["test_tokens"].shape[1]}, '
                       f'tokens rows {out["tokens"].shape[1]}')
  return out


# -----------------------------------------------------------------------------
# Reading and writing.
# -----------------------------------------------------------------------------


def read_token_logprobs(path: str, *, consistency: bool = True) -> dict[str, np.ndarray]:
  """A validated token-logprobs file (see the module docstring).

  Args:
    path: the ``.npz`` file.
    consistency: check logprobs against the top-k (:func:`check_consistency`).
  Returns:
    dict as :func:`validate_token_logprobs`: ``indices`` (n,), ``tokens``
    (n, L), ``logprobs`` (n, L-1), optional ``topk_ids``/``topk_logprobs``
    (n, L-1, k) and the ``test_*`` arrays.
  Raises:
    AuditError: the file is missing, unreadable, or invalid.
  """
  table = io_utils.read_npz(path, AuditError, 'token-logprobs file')
  return validate_token_logprobs(table, os.fspath(path), consistency=consistency)


def write_token_logprobs(path: str, indices, tokens, logprobs, topk_ids=None,
                         topk_logprobs=None, *, test_indices=None, test_tokens=None,
                         test_logprobs=None, test_topk_ids=None,
                         test_topk_logprobs=None) -> str:
  """Writes a token-logprobs file atomically, after validating it.

  Args:
    path: the ``.npz`` file to write (replaced atomically if it exists).
    indices: (n,) int pool indices.
    tokens: (n, L) int token ids, -1 padding (the records' x rows).
    logprobs: (n, L-1) float, ``log p(tokens[:, t+1] | tokens[:, :t+1])``.
    topk_ids, topk_logprobs: optional (n, L-1, k) int / float top-k.
    test_indices, test_tokens, test_logprobs, test_topk_ids, test_topk_logprobs:
      the same for test records (optional).
  Returns:
    ``path``.
  Raises:
    AuditError: the arrays do not form a valid file (nothing is written).
  """
  io_utils.check_path(os.fspath(path), 'token-logprobs file')
  given = dict(indices=indices, tokens=tokens, logprobs=logprobs, topk_ids=topk_ids,
               topk_logprobs=topk_logprobs, test_indices=test_indices, test_tokens=test_tokens,
               test_logprobs=test_logprobs, test_topk_ids=test_topk_ids,
               test_topk_logprobs=test_topk_logprobs)
  table = {k: np.asarray(v) for k, v in given.items() if v is not None}
  arrays = validate_token_logprobs(table, os.fspath(path))
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  return io_utils.write_bytes(path, buf.getvalue())


# -----------------------------------------------------------------------------
# Features and the Target.
# -----------------------------------------------------------------------------


def _split_keys(test: bool) -> tuple[str, ...]:
  p = 'test_' if test else ''
  return tuple(p + k for k in REQUIRED + TOPK)


def topk_moments(topk_logprobs, vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """mu and sigma of log p(z) from the top k plus a tail bucket (see the module docstring).

  Args:
    topk_logprobs: (..., k) finite log-probs of the k most likely tokens.
    vocab_size: V; the tail mass is spread evenly over V - k tokens (None: one bucket).
  Returns:
    (mu (...), sigma (...)) float64.
  """
  lk = np.asarray(topk_logprobs, np.float64)
  k = lk.shape[-1]
  p = np.exp(lk)
  s = p.sum(-1, keepdims=True)
  over = s > 1.0
  lk = np.where(over, lk - np.log(np.where(over, s, 1.0)), lk)   # renormalise to sum 1
  p = np.exp(lk)
  r = np.clip(1.0 - p.sum(-1), 0.0, 1.0)
  m = 1 if vocab_size is None else max(int(vocab_size) - k, 0)
  has_tail = (r > 0) & (m > 0)
  lt = np.where(has_tail, np.log(np.where(has_tail, r, 1.0) / max(m, 1)), 0.0)
  rt = np.where(has_tail, r, 0.0)
  mu = (p * lk).sum(-1) + rt * lt
  e2 = (p * lk ** 2).sum(-1) + rt * lt ** 2
  return mu, np.sqrt(np.maximum(e2 - mu ** 2, 0.0))


def features_from_logprobs(table: dict[str, np.ndarray], x_rows=None, *, test: bool = False,
                           vocab_size: int | None = None) -> np.ndarray:
  """Per-position features (n, T, 5) of a validated token-logprobs table.

  Args:
    table: as :func:`read_token_logprobs` returns.
    x_rows: (n, T+1) the data set's records for the table's indices (same
      order); when given, the table's tokens must equal them (AuditError
      naming the first disagreement). None: the table's own tokens.
    test: use the ``test_*`` arrays.
    vocab_size: V, for the tail bucket of the mu/sigma estimator (None: one bucket).
  Returns:
    float32 (n, T, 5): [logp, mu, sigma, argmax, valid] as the model's
    ``output='features'``; mu/sigma NaN and argmax -1 at valid positions
    when the table has no top-k; all 0 at invalid positions.
  """
  ki, kt, kl, kti, ktl = _split_keys(test)
  if kl not in table:
    raise AuditError(f'the token-logprobs table has no {kl}')
  tok = table[kt]
  if x_rows is not None:
    _compare_rows(tok, x_rows, table[ki], 'token-logprobs table',
                  'test record' if test else 'record')
  valid = tok[:, 1:] >= 0
  out = np.zeros(valid.shape + (NUM_FEATURES,), np.float32)
  out[..., 0] = np.where(valid, np.minimum(table[kl], 0.0), 0.0)
  out[..., 4] = valid
  if kti in table:
    tlp = np.where(valid[..., None], table[ktl], 0.0)
    mu, sigma = topk_moments(tlp, vocab_size)
    out[..., 1] = np.where(valid, mu, 0.0)
    out[..., 2] = np.where(valid, sigma, 0.0)
    out[..., 3] = np.where(valid, table[kti][..., 0], 0)
  else:
    out[..., 1] = np.where(valid, np.nan, 0.0)
    out[..., 2] = np.where(valid, np.nan, 0.0)
    out[..., 3] = np.where(valid, -1.0, 0.0)
  return out


def _compare_rows(tokens: np.ndarray, x_rows, indices: np.ndarray, path: str, what: str) -> None:
  x = np.asarray(x_rows)
  if x.ndim != 2 or x.shape[0] != tokens.shape[0]:
    raise AuditError(f'{path}: expected ({tokens.shape[0]}, T+1) data set rows, got {x.shape}')
  if x.shape[1] != tokens.shape[1]:
    raise AuditError(f'{path}: token rows have length L={tokens.shape[1]} but the data set\'s '
                     f'records have T+1={x.shape[1]} (pad rows with -1 to exactly T+1)')
  xi = np.rint(x).astype(np.int64)
  bad = xi != tokens
  if bad.any():
    i, t = _first(bad)
    raise AuditError(f'{path}: tokens of {what} {int(indices[i])} differ from the data set\'s at '
                     f'position {t} (file {int(tokens[i, t])}, data set {int(xi[i, t])}): the '
                     'log-probs were computed on other documents or another tokenizer')


def check_tokens(table: dict[str, np.ndarray], dataset, path: str = 'token-logprobs file'
                 ) -> None:
  """Checks that a table's records are the data set's, token for token.

  Args:
    table: as :func:`read_token_logprobs` returns.
    dataset: the :class:`jaxaudit.data.Dataset` (x_train (N, T+1), x_test (M, T+1)).
    path: the file name used in messages.
  Raises:
    AuditError: an index beyond the data set, a row length other than T+1,
      or a token differing from the data set's (names the first record and position).
  """
  for test in (False, True):
    ki, kt = _split_keys(test)[:2]
    if ki not in table:
      continue
    x = dataset.x_test if test else dataset.x_train
    idx = table[ki]
    what = 'test record' if test else 'record'
    beyond = idx >= x.shape[0]
    if beyond.any():
      raise AuditError(f'{path}: {ki} hold {int(beyond.sum())} index(es) beyond the data set\'s '
                       f'{x.shape[0]} {what}s, e.g. {idx[beyond][:5].tolist()}')
    _compare_rows(table[kt], x[idx], idx, path, what)


def target_from_token_logprobs(path: str, dataset, name: str | None = None) -> Target:
  """The audited model as a table Target built from a token-logprobs file.

  Args:
    path: the ``.npz`` file (see the module docstring).
    dataset: the text data set the records come from (its tokens are checked;
      ``num_classes`` = V bounds the top-k ids and sizes the tail bucket).
    name: the target's name (default: the file's stem).
  Returns:
    ``Target`` with ``table = {'indices', 'logits': (n, T, 5) features}`` and
    ``'test_indices'``, ``'test_logits'`` when the file has test records.
  Raises:
    AuditError: an invalid file, or tokens / ids that do not fit the data set.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AuditError(f'token-logprobs file {path} does not exist')
  table = read_token_logprobs(path, consistency=False)
  check_tokens(table, dataset, path)      # other documents: a clearer message than inconsistency
  check_consistency(table, path)
  v = int(dataset.num_classes)
  out = {}
  for test in (False, True):
    ki, _, _, kti, _ = _split_keys(test)
    if ki not in table:
      continue
    if kti in table:
      ids = table[kti]
      valid = table[_split_keys(test)[1]][:, 1:] >= 0
      too_big = valid[..., None] & (ids >= v)
      if too_big.any():
        i, t, _ = _first(too_big)
        raise AuditError(f'{path}: {kti} holds id {int(ids[too_big][0])} >= the vocabulary size '
                         f'{v} at record {int(table[ki][i])} position {t}')
    feats = features_from_logprobs(table, None, test=test, vocab_size=v)
    out['test_indices' if test else 'indices'] = table[ki]
    out['test_logits' if test else 'logits'] = feats
  return Target(name=name or os.path.splitext(os.path.basename(path))[0], table=out)


# -----------------------------------------------------------------------------
# Export from a jaxaudit TransformerLM.
# -----------------------------------------------------------------------------


def logits_model(model):
  """``model`` with ``output='logits'`` (a TransformerLM evaluated as next-token logits)."""
  if getattr(model, 'output', 'logits') == 'logits':
    return model
  try:
    return model.clone(output='logits')
  except Exception as e:  # pylint: disable=broad-except
    raise AuditError(f'cannot evaluate {type(model).__name__} as logits: {e}') from e


@functools.lru_cache(maxsize=16)
def _token_program(model, k: int):
  import jax
  import jax.numpy as jnp
  from jaxaudit.models import make_apply_fn
  apply_fn = make_apply_fn(model)

  def one(params, x):          # x (B, T+1) -> (B, T), (B, T, k), (B, T, k)
    lp = jax.nn.log_softmax(apply_fn(params, x).astype(jnp.float32), axis=-1)
    nxt = jnp.maximum(x[:, 1:], 0).astype(jnp.int32)
    own = jnp.take_along_axis(lp, nxt[..., None], axis=-1)[..., 0]
    if k == 0:
      return own, own[..., None], own[..., None].astype(jnp.int32)
    top, ids = jax.lax.top_k(lp, k)
    return own, top, ids

  def run(params, xb):         # xb (S, B, T+1)
    return jax.lax.map(lambda b: one(params, b), xb)

  return jax.jit(run)


def model_token_logprobs(model, params, x, *, topk: int = 8, batch_size: int = 64
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
  """Per-token log-probs (and top-k) of a jaxaudit LM on records, in one compiled program.

  Args:
    model: a TransformerLM (any ``output``; evaluated as logits).
    params: its parameters.
    x: (n, T+1) records (-1 padding).
    topk: k (0: no top-k).
    batch_size: records per step (padded to :func:`jaxaudit.train.evaluate.padded_layout`).
  Returns:
    (logprobs (n, T) float32, topk_ids (n, T, k) int32 or None, topk_logprobs
    (n, T, k) float32 or None); NaN / -1 at invalid positions.
  """
  from jaxaudit.train.evaluate import padded_layout
  model = logits_model(model)
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  v = int(getattr(model, 'num_classes', 0) or 0)
  k = int(topk)
  if k < 0 or (v and k > v):
    raise AuditError(f'topk must be in [0, V={v}], got {topk}')
  steps, b = padded_layout(n, batch_size)
  xp = np.full((steps * b,) + x.shape[1:], -1.0, np.float32)
  xp[:n] = x
  own, top, ids = (np.asarray(a) for a in _token_program(model, k)(
      params, xp.reshape((steps, b) + x.shape[1:])))
  t = x.shape[1] - 1
  own = own.reshape(steps * b, t)[:n]
  valid = x[:, 1:] >= 0
  own = np.where(valid, own, np.nan).astype(np.float32)
  if k == 0:
    return own, None, None
  top = np.where(valid[..., None], top.reshape(steps * b, t, k)[:n], np.nan).astype(np.float32)
  ids = np.where(valid[..., None], ids.reshape(steps * b, t, k)[:n], -1).astype(np.int32)
  return own, ids, top


def export_token_logprobs(model, params, dataset, indices, path: str, *, topk: int = 8,
                          test_indices=None, batch_size: int = 64) -> str:
  """Writes the token-logprobs file of a jaxaudit LM on records of ``dataset``.

  Args:
    model: a TransformerLM (any ``output``; evaluated as logits).
    params: its parameters.
    dataset: the text data set (x_train (N, T+1), x_test (M, T+1)).
    indices: (n,) pool indices to export.
    path: the ``.npz`` file to write.
    topk: k of the top-k arrays (0: none, so Min-K%++ is unavailable).
    test_indices: optional (m,) test indices to export too.
    batch_size: records per evaluation step.
  Returns:
    ``path``.
  """
  arrays: dict[str, Any] = {}
  for test, idx in ((False, indices), (True, test_indices)):
    if idx is None:
      continue
    idx = np.asarray(idx)
    x = dataset.x_test if test else dataset.x_train
    if idx.dtype.kind not in 'iu' or idx.ndim != 1:
      raise AuditError(f'{"test_" if test else ""}indices must be a 1-D integer array; got '
                       f'shape {idx.shape} dtype {idx.dtype}')
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[0]):
      raise AuditError(f'{"test_" if test else ""}indices must lie in [0, {x.shape[0]})')
    lp, ids, top = model_token_logprobs(model, params, x[idx], topk=topk, batch_size=batch_size)
    p = 'test_' if test else ''
    arrays.update({p + 'indices': idx.astype(np.int64),
                   p + 'tokens': np.rint(x[idx]).astype(np.int32), p + 'logprobs': lp})
    if ids is not None:
      arrays.update({p + 'topk_ids': ids, p + 'topk_logprobs': top})
  return write_token_logprobs(path, **arrays)


__all__ = ['HF_EXAMPLE', 'LOGPROB_TOL', 'check_consistency', 'check_tokens',
           'export_token_logprobs',
           'features_from_logprobs', 'model_token_logprobs', 'read_token_logprobs',
           'target_from_token_logprobs', 'topk_moments', 'validate_token_logprobs',
           'write_token_logprobs']
