"""The Optuna search per method, stored in the workdir, and the settings it chose.

``run_tuning`` runs, for each method, an Optuna study (TPE sampler seeded by ``seed``, a
fixed budget of ``trials``) whose trials unlearn the workdir's original model with
suggested hyper-parameters (the method's own key, as ``jaxaudit unlearn`` uses it, so the
chosen setting reproduces exactly) and score :func:`jaxaudit.tune.objective.distance` to the
retrained model. Trials whose Mu has non-finite weights are pruned.

Storage: ``WORKDIR/tuning/optuna.journal`` (Optuna's journal file: every finished trial is
appended, so an interrupted search resumes where it stopped; the study of a method is named
after the method, the split, the search space and the seed, so none of them changes without a
new study) and
``WORKDIR/tuning/METHOD.json``, the chosen hyper-parameters with the objective's components,
written atomically after every trial. :func:`tuned_hparams` reads it back for
``jaxaudit unlearn``, the demo and the sweep.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

from jaxaudit import io_utils
from jaxaudit.errors import ConfigError

TUNE_DIR = 'tuning'
JOURNAL = 'optuna.journal'


def tuned_path(workdir: str, method: str) -> str:
  """WORKDIR/tuning/METHOD.json."""
  return os.path.join(workdir, TUNE_DIR, f'{io_utils.check_name(method, "method")}.json')


def tuned_hparams(workdir: str, method: str) -> dict[str, Any]:
  """The hyper-parameters ``jaxaudit tune`` chose for ``method`` in ``workdir`` ({} if none)."""
  path = tuned_path(workdir, method)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      return dict(json.load(f)['hparams'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f'{path} is not a tuning result of jaxaudit ({type(e).__name__}: {e}); '
                      'delete it or run `jaxaudit tune` again') from e


def _bar(done: int, total: int, width: int = 20) -> str:
  filled = int(round(width * done / max(total, 1)))
  return '[' + '#' * filled + '-' * (width - filled) + ']'


def _reference(config, workdir: str, log):
  """The retrained model's params: WORKDIR/models/retrain, else the ``retrain`` method's Mu."""
  from jaxaudit import checkpoint, pipeline
  path = os.path.join(workdir, 'models', 'retrain')
  if not checkpoint.exists(path):
    path = pipeline.run_unlearn(config, workdir, 'retrain', {}, log=log)['path']
  return checkpoint.load_checkpoint(path)[0], path


def run_tuning(config, workdir: str, methods: Sequence[str], *, trials: int = 20, seed: int = 0,
               log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
  """Tunes each method against the retrained model; returns {method: result} (also on disk).

  Args:
    config: the workdir's config (its original model must be trained).
    workdir: a jaxaudit workdir.
    methods: registered classifier methods with something to search.
    trials: the budget per method (finished and pruned trials count; a resumed search
      runs only the missing ones).
    seed: seed of the TPE sampler.
  """
  import jax
  import optuna
  from optuna.storages import JournalStorage
  from optuna.storages.journal import JournalFileBackend
  from jaxaudit import checkpoint, configs, pipeline
  from jaxaudit import unlearn as unlearn_lib
  from jaxaudit.data.splits import split_hash
  from jaxaudit.tune import objective as objective_lib
  from jaxaudit.tune import spaces
  if int(trials) < 1:
    raise ConfigError(f'--trials must be >= 1, got {trials}')
  if configs.is_text(config):
    raise ConfigError('jaxaudit tune searches classifier methods; language models are not '
                      'supported yet')
  plans = {}
  for m in methods:     # every method checked before any work
    meth = unlearn_lib.get_method(m)
    if meth.family == 'retraining' or meth.output != 'single':
      raise ConfigError(f'{m} is a {meth.family} method with nothing to tune against the retrain')
    plans[m] = spaces.space(m, meth.hparams)
  orig = os.path.join(workdir, 'models', 'original')
  if not checkpoint.exists(orig):
    raise ConfigError(f'no original model at {orig}: run `jaxaudit train --workdir={workdir}` first')
  dataset, split = pipeline.prepare(config, workdir, log)
  model, params, _ = checkpoint.restore_model(orig, expect=pipeline.expected_meta(config, dataset,
                                                                                   split))
  ref_params, ref_path = _reference(config, workdir, log)
  data = unlearn_lib.make_unlearn_data(dataset, split, configs.recipe_from_config(config))
  ref = objective_lib.metrics(model, ref_params, data, seed=seed)
  log(f'[tune] reference {ref_path}: ' + ', '.join(f'{k} {v:.3f}' for k, v in ref._asdict().items()))
  os.makedirs(os.path.join(workdir, TUNE_DIR), exist_ok=True)
  storage = JournalStorage(JournalFileBackend(os.path.join(workdir, TUNE_DIR, JOURNAL)))
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  results = {}
  for m, dims in plans.items():
    fixed = configs.config_hparams(config, m)
    fixed = {k: v for k, v in fixed.items() if k not in dims}   # searched ones are the trial's
    key = configs.method_key(config, m)
    study = optuna.create_study(
        study_name=f'{m}-{split_hash(split)[:12]}-{spaces.fingerprint(dims)}-s{seed}', storage=storage, direction='minimize',
        sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)

    def objective(trial, m=m, dims=dims, fixed=fixed, key=key):
      hp = {**fixed, **spaces.suggest(trial, dims)}
      meth = unlearn_lib.get_method(m, **hp)
      new = jax.block_until_ready(meth.fn(params, model, data, key))
      if not all(bool(jax.numpy.all(jax.numpy.isfinite(v))) for v in jax.tree.leaves(new)):
        raise optuna.TrialPruned('non-finite weights')
      mu = objective_lib.metrics(model, new, data, seed=seed)
      trial.set_user_attr('metrics', mu._asdict())
      return objective_lib.distance(mu, ref)

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done:
      log(f'[tune] {m}: resuming, {done} of {trials} trial(s) already in the journal')
    t0 = time.time()

    def record(done=None, m=m, study=study, fixed=fixed, dims=dims):
      """Writes the best finished trial so far (None when there is none)."""
      complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
      if not complete:
        return None
      best = min(complete, key=lambda t: (t.value, t.number))
      results[m] = dict(
          method=m, hparams={**fixed, **best.params}, objective=best.value,
          metrics=best.user_attrs.get('metrics'), reference=ref._asdict(),
          reference_path=ref_path, trials=len(study.get_trials(deepcopy=False, states=finished)),
          budget=int(trials), seed=int(seed), best_trial=best.number,
          space=spaces.describe(dims), study=study.study_name)
      io_utils.write_json(tuned_path(workdir, m), results[m])
      return best

    while done < trials:
      study.optimize(objective, n_trials=1, catch=(ValueError, FloatingPointError))
      done = len(study.get_trials(deepcopy=False, states=finished))
      best = record()
      log(f'[tune] {m} {_bar(done, trials)} {done}/{trials}  '
          + (f'best {best.value:.4f} {best.params}' if best else 'no finished trial yet')
          + f'  ({time.time() - t0:.0f}s)')
    if record() is None:
      raise ConfigError(f'{m}: no trial of {trials} finished (every one diverged or failed)')
  return results
