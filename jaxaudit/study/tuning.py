"""Tuning a sweep entry's methods on a development seed (DeepUnlearn's protocol, kept apart
from the reported seeds).

:func:`tune_entry` builds the entry's pipeline config for one forget setting and a
*development* seed (``cells.cell_config``), trains its original model (and the retrain
reference) in ``workdir`` and runs :func:`jaxaudit.tune.run_tuning` there. The sweep then
reads the chosen settings through ``config.tuned_dir = workdir`` for every seed it reports,
so no reported seed takes part in choosing them.
"""

from __future__ import annotations

from typing import Callable, Sequence

from jaxaudit.errors import ConfigError


def tune_entry(config, entry: str, workdir: str, *, methods: Sequence[str], seed: int,
               trials: int, forget: str | None = None, sampler_seed: int = 0,
               log: Callable[[str], None] = print) -> dict:
  """Trains the entry's models for ``seed`` in ``workdir`` and tunes ``methods`` there.

  Args:
    config: a sweep config; entry: one of its entries.
    methods: method names; ``original``, ``retrain``, aliases and methods with nothing to
      search are skipped (logged).
    seed: the development seed (should not be one of ``config.seeds``).
    forget: the forget setting (default: the entry's first).
  Returns:
    {method: tuning result} (:func:`jaxaudit.tune.run_tuning`).
  """
  from jaxaudit import pipeline, tune
  from jaxaudit.study import cells as cells_lib
  from jaxaudit.tune.search import searchable
  if int(seed) in cells_lib.as_list(config.seeds, int):
    raise ConfigError(f'seed {seed} is one of the reported seeds {config.seeds}: tune on a '
                      'development seed that the sweep does not report')
  forgets = (cells_lib.as_list(config.entries[entry].get('forget_settings', ''))
             or cells_lib.as_list(config.forget_settings))
  forget = forget or forgets[0]
  cfg = cells_lib.cell_config(config, entry, forget, seed)
  pipeline.train_and_evaluate(cfg, workdir, log)
  from jaxaudit import unlearn as unlearn_lib
  from jaxaudit.tune import spaces
  names = []
  for m in methods:     # plain registered methods with something to search
    if m in ('original', 'retrain') or cells_lib.base_method(config, m) != m:
      continue
    meth = unlearn_lib.get_method(m)
    try:
      spaces.space(m, meth.hparams)
    except ConfigError:
      log(f'[tune] {m}: nothing to tune, kept at its defaults')
      continue
    if searchable(m, meth):
      names.append(m)
  return tune.run_tuning(cfg, workdir, names, trials=trials, seed=sampler_seed, log=log)
