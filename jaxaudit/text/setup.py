"""From a corpus name to an audited LM's ingredients: the data set and the base LM.

The TOFU-style protocol (BRIEF §7): a *base* LM is pretrained once on the
corpus's pretraining groups (people / speakers disjoint from the pool);
the original M fine-tunes it on D, the honest retrain on Dr, and the audit's
verifiers on ~15% of Dr. Both the CLI (``dataset = 'text:NAME'``) and the
study (:mod:`jaxaudit.study.llm`) build their data and base model here.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxaudit.errors import ConfigError

SOURCES = ('synthetic', 'shakespeare')
# The answer ``lm_idk`` tunes Du's prompts toward; the tokenizer is fitted on it too.
REFUSAL = "i don't know ."


def load_corpus(source: str, *, num_people: int = 200, data_dir: str | None = None):
  """The corpus ``source`` names: ``synthetic`` (TOFU-style people), ``shakespeare``
  (``DATA_DIR/tiny_shakespeare.txt``, else ``../shared/data``), ``tfds:NAME`` (a TFDS
  text data set prepared under ``data_dir``, its ``text`` feature), a ``.jsonl`` file
  (``text`` and optional ``group`` fields) or any other text file (documents
  separated by blank lines)."""
  from jaxaudit.text import corpus as corpus_lib
  if source == 'synthetic':
    return corpus_lib.synthetic_people(seed=0, num_people=num_people)
  if source == 'shakespeare':
    path = os.path.join(data_dir, 'tiny_shakespeare.txt') if data_dir else None
    return corpus_lib.shakespeare_speeches(path) if path and os.path.isfile(path) \
        else corpus_lib.shakespeare_speeches()
  if source.startswith('tfds:'):     # a TFDS text data set prepared under data_dir
    if not data_dir:
      raise ConfigError(f'{source}: a TFDS text data set needs data_dir (where it was prepared)')
    return corpus_lib.tfds_text(source[len('tfds:'):], data_dir)
  if source.endswith('.jsonl'):
    return corpus_lib.jsonl_file(source)
  return corpus_lib.text_file(source)


UNITS = ('group', 'document')


def load_text_dataset(source: str, *, tokenizer: str = 'word', bpe_vocab: int = 512,
                      context: int = 64, num_people: int = 200, max_groups: int | None = None,
                      unit: str = 'group', data_dir: str | None = None, seed: int = 0):
  """A :class:`jaxaudit.text.dataset.TextDataset` of ``source`` (:func:`load_corpus`),
  tokenised by a ``word``, ``byte`` or locally trained ``bpe`` tokenizer fitted on the
  whole corpus (documents, paraphrases, probes and :data:`REFUSAL`), with records of
  ``context`` tokens. ``unit``: the unit of deletion, ``group`` (the corpus's people,
  authors or speakers) or ``document`` (every document its own group); ``max_groups``
  keeps that many units."""
  from jaxaudit.text import corpus as corpus_lib
  from jaxaudit.text import dataset as text_data
  from jaxaudit.text import tokenize
  if unit not in UNITS:
    raise ConfigError(f'unit must be one of {UNITS}, got {unit!r}')
  corpus = load_corpus(source, num_people=num_people, data_dir=data_dir)
  if unit == 'document':
    if corpus.knowledge is not None:
      raise ConfigError(f'{source}: its knowledge probes belong to groups; use unit=group')
    corpus = corpus_lib.make_corpus(corpus.documents, name=corpus.name, source=corpus.source,
                                    paraphrases=corpus.paraphrases)
  kw = dict(vocab_size=int(bpe_vocab)) if tokenizer == 'bpe' else {}
  tok = tokenize.get_tokenizer(tokenizer, list(corpus.texts()) + [REFUSAL], **kw)
  return text_data.build_text_dataset(corpus, tok, context=int(context), seed=seed,
                                      max_groups=max_groups)


def base_meta(model, dataset, recipe) -> dict[str, Any]:
  """What a base-LM checkpoint must match: the data, the model and the pretraining recipe."""
  return dict(kind='base_lm', dataset_fingerprint=dataset.fingerprint, model_cfg=repr(model),
              recipe=recipe.to_dict())


def pretrain_base(model, dataset, recipe, path: str | None = None, *, seed: int = 0,
                  log: Callable[[str], None] = lambda s: None) -> tuple[Any, float]:
  """Pretrains the base LM on ``dataset.pretrain`` (or loads it from ``path``).

  Args:
    model: a :class:`jaxaudit.models.transformer.TransformerLM`.
    dataset: a TextDataset with pretraining records.
    recipe: the pretraining recipe.
    path: checkpoint directory (None: not cached); a checkpoint made for other
      data, model or recipe is refused (CheckpointError).
    seed: the base model's key.
  Returns:
    (params, wall time of the pretraining in seconds — the saved one when loaded).
  """
  from jaxaudit import checkpoint
  from jaxaudit.text.dataset import targets
  from jaxaudit.train import train_model
  from jaxaudit.train.loop import TokenCE
  meta = base_meta(model, dataset, recipe)
  if path and checkpoint.exists(path):
    params, saved = checkpoint.load_checkpoint(path, expect=meta)
    log(f'[base] loaded the base LM from {path}')
    return params, float(saved.get('wall_time_s', 0.0))
  x = np.asarray(dataset.pretrain)
  if not len(x):
    raise ConfigError(f'{dataset.name} has no pretraining records: the base LM needs some '
                      '(build the data set with pretrain_fraction > 0)')
  log(f'[base] pretraining the base LM on {len(x)} records for {recipe.epochs} epochs')
  t0 = time.time()
  params = jax.block_until_ready(train_model(model, x, targets(x), np.arange(len(x)), seed,
                                             recipe, loss=TokenCE()).params)
  wall = time.time() - t0
  if path:
    checkpoint.save_checkpoint(path, params, dict(meta, wall_time_s=wall))
  log(f'[base] done in {wall:.1f}s')
  return params, wall


def refusal_tokens(dataset) -> np.ndarray:
  """:data:`REFUSAL` in the data set's tokens, (R,) int32 (for ``lm_idk``)."""
  from jaxaudit.text.dataset import dataset_tokenizer
  return np.asarray(dataset_tokenizer(dataset).encode(REFUSAL, where='the refusal answer'),
                    np.int32)
