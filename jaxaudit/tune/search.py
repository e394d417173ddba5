"""The Optuna search per method, stored in the workdir, and the settings it chose.

``run_tuning`` runs, for each method, an Optuna study (TPE sampler seeded by ``seed``, a
fixed budget of ``trials``) whose trials unlearn the workdir's original model with
suggested hyper-parameters (the method's own key, as ``jaxaudit unlearn`` uses it, so the
chosen setting reproduces exactly) and score :func:`jaxaudit.tune.objective.distance` to the
retrained model. Trials whose Mu has non-finite weights are pruned.

With ``require_forgetting`` a trial is *feasible* only when Mu's accuracy on Du is at most the
retrained model's plus ``FORGET_TOLERANCE``: the selection rule of papers that tune a method
until its forget accuracy reaches the retrain's (Jia et al. 2023, SalUn). TPE is told the
constraint, and the chosen setting is the best feasible trial (when none is feasible, the
finished trial whose Du accuracy came closest to the retrain's, marked ``feasible: false``
with a warning). Without it a method that changes
nothing can win: on a saturated model the retrain's accuracies are close to M's.

A text workdir (``dataset = 'text:...'``) tunes language-model methods
(:mod:`jaxaudit.unlearn.language`) the same way: Mu is scored by token accuracy and mean
token NLL (:mod:`jaxaudit.tune.objective`), the reference is WORKDIR/models/retrain (the base
LM fine-tuned on Dr, made by ``jaxaudit train``) or else ``lm_retrain``'s, and the trials see
the data ``jaxaudit unlearn`` gives (:func:`jaxaudit.pipeline.unlearn_data`: the base LM, the
refusal answer). Retraining methods (``retrain``, ``lm_retrain``, ...) are refused, except
warm-start fine-tuning (``TUNABLE_RETRAINING``).

Storage: ``WORKDIR/tuning/optuna.journal`` (Optuna's journal file: every finished trial is
appended, so an interrupted search resumes where it stopped; the study of a method is named
after the method, the split, the search space and the seed, so none of them changes without a
new study) and
``WORKDIR/tuning/METHOD.json``, the chosen hyper-parameters with the objective's components,
written atomically after every trial. :func:`tuned_hparams` reads it back for
``jaxaudit unlearn``, the demo, the sweep and the language-model study
(:mod:`jaxaudit.study.llm`).
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
# require_forgetting: Mu's Du accuracy may exceed the retrain's by at most this much.
FORGET_TOLERANCE = 0.01


def tuned_path(workdir: str, method: str) -> str:
  """WORKDIR/tuning/METHOD.json."""
  return os.path.join(workdir, TUNE_DIR, f'{io_utils.check_name(method, "method")}.json')


def read_result(workdir: str, method: str) -> dict[str, Any] | None:
  """The whole tuning result of ``method`` in ``workdir`` (:func:`run_tuning`), None if none."""
  path = tuned_path(workdir, method)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      result = json.load(f)
    dict(result['hparams'])
    return result
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f'{path} is not a tuning result of jaxaudit ({type(e).__name__}: {e}); '
                      'delete it or run `jaxaudit tune` again') from e


def tuned_hparams(workdir: str, method: str) -> dict[str, Any]:
  """The hyper-parameters ``jaxaudit tune`` chose for ``method`` in ``workdir`` ({} if none)."""
  result = read_result(workdir, method)
  return {} if result is None else dict(result['hparams'])


def _bar(done: int, total: int, width: int = 20) -> str:
  filled = int(round(width * done / max(total, 1)))
  return '[' + '#' * filled + '-' * (width - filled) + ']'


# Retraining methods registered outside the 'retraining' family: refused like it.
OTHER_RETRAINING = ('lm_retrain',)
# Retraining-family methods with settings to search: warm-start fine-tuning never saw Du, but
# its learning rate and epochs decide how close to the retrain it ends (the pretrained model
# it starts from is WORKDIR/models/pretrained, :func:`jaxaudit.pipeline.pretrained_checkpoint`).
TUNABLE_RETRAINING = ('warmstart_finetune',)


def searchable(name: str, meth) -> bool:
  """Whether ``meth`` (the registry's ``name``) can be tuned against the retrain: one model
  out, and not a retraining method (warm-start fine-tuning excepted)."""
  return (meth.output == 'single' and name not in OTHER_RETRAINING
          and (meth.family != 'retraining' or name in TUNABLE_RETRAINING))


def retrain_method(config) -> str:
  """The method that makes the reference when WORKDIR/models/retrain is missing: ``retrain``
  (from scratch on Dr), or for a text workdir ``lm_retrain`` (the base LM fine-tuned on Dr,
  as ``jaxaudit train`` makes models/retrain there)."""
  from jaxaudit import configs
  return 'lm_retrain' if configs.is_text(config) else 'retrain'


def _reference(config, workdir: str, log):
  """The retrained model's params: WORKDIR/models/retrain, else :func:`retrain_method`'s Mu."""
  from jaxaudit import checkpoint, pipeline
  path = os.path.join(workdir, 'models', 'retrain')
  if not checkpoint.exists(path):
    path = pipeline.run_unlearn(config, workdir, retrain_method(config), {}, log=log)['path']
  return checkpoint.load_checkpoint(path)[0], path


def forget_violation(mu_forget: float, ref_forget: float) -> float:
  """How far Mu's Du accuracy lies above the retrain's (+ tolerance): <= 0 is feasible."""
  return float(mu_forget - ref_forget - FORGET_TOLERANCE)


def choose_trial(complete: Sequence[Any], require_forgetting: bool) -> tuple[Any, bool]:
  """(the chosen trial, whether it is feasible) among finished trials (objects with
  ``value``, ``number`` and ``user_attrs['forget_violation']``): the lowest objective (ties:
  the earliest trial); with ``require_forgetting`` the lowest among feasible trials, else,
  when none is feasible, the trial closest to feasibility."""
  def violation(t):
    return float(t.user_attrs.get('forget_violation', 1.0))
  feasible = [t for t in complete if not require_forgetting or violation(t) <= 0]
  if feasible:
    return min(feasible, key=lambda t: (t.value, t.number)), True
  return min(complete, key=lambda t: (violation(t), t.value, t.number)), False


def run_tuning(config, workdir: str, methods: Sequence[str], *, trials: int = 20, seed: int = 0,
               require_forgetting: bool = False,
               log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
  """Tunes each method against the retrained model; returns {method: result} (also on disk).

  Args:
    config: the workdir's config (its original model must be trained).
    workdir: a jaxaudit workdir.
    methods: registered methods with something to search: classifier methods, or for a
      text workdir (``dataset = 'text:...'``) language-model methods
      (:mod:`jaxaudit.unlearn.language`), whose Mu is scored by token accuracy and mean
      token NLL (:mod:`jaxaudit.tune.objective`).
    trials: the budget per method (finished and pruned trials count; a resumed search
      runs only the missing ones).
    seed: seed of the TPE sampler.
    require_forgetting: only settings whose Du accuracy falls to the retrain's (within
      ``FORGET_TOLERANCE``) are chosen (module docstring).
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
  from jaxaudit.unlearn.language import FAMILY as LM_FAMILY
  if int(trials) < 1:
    raise ConfigError(f'--trials must be >= 1, got {trials}')
  text = configs.is_text(config)
  plans = {}
  for m in methods:     # every method checked before any work
    meth = unlearn_lib.get_method(m)
    if not searchable(m, meth):
      kind = 'retraining' if m in OTHER_RETRAINING else meth.family
      raise ConfigError(f'{m} is a {kind} method with nothing to tune against the retrain')
    if text != (meth.family == LM_FAMILY):
      raise ConfigError(
          f'{m} is a language-model method and this workdir holds {config.dataset!r}, not a '
          "text corpus (dataset = 'text:...')" if not text else
          f'{m} is a classifier method and this workdir holds a language model '
          f'({config.dataset!r}): tune its lm_* methods (`jaxaudit methods`)')
    plans[m] = spaces.space(m, meth.hparams)
  orig = os.path.join(workdir, 'models', 'original')
  if not checkpoint.exists(orig):
    raise ConfigError(f'no original model at {orig}: run `jaxaudit train --workdir={workdir}` first')
  dataset, split = pipeline.prepare(config, workdir, log)
  model, params, _ = checkpoint.restore_model(orig, expect=pipeline.expected_meta(config, dataset,
                                                                                   split))
  ref_params, ref_path = _reference(config, workdir, log)
  init = (pipeline.load_init_params(config, dataset, split,
                                   pipeline.pretrained_checkpoint(config, workdir, log=log))
          if set(plans) & set(pipeline.WARM_START_METHODS) else None)
  data = pipeline.unlearn_data(config, dataset, split, workdir, init_params=init, log=log)
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
    tag = '-forget' if require_forgetting else ''
    # Optuna >= 5 takes constraints from the trial (Trial.set_constraint; constraints_func is
    # deprecated there); Optuna 4 only through the sampler's constraints_func.
    per_trial = hasattr(optuna.trial.Trial, 'set_constraint')
    sampler = optuna.samplers.TPESampler(
        seed=seed, constraints_func=_constraint if require_forgetting and not per_trial else None)
    study = optuna.create_study(
        study_name=f'{m}-{split_hash(split)[:12]}-{spaces.fingerprint(dims)}-s{seed}{tag}',
        storage=storage, direction='minimize', sampler=sampler, load_if_exists=True)

    def constrain(trial, violation: float, per_trial=per_trial):
      trial.set_user_attr('forget_violation', violation)
      if require_forgetting and per_trial:
        trial.set_constraint('forget_violation', violation)

    def objective(trial, m=m, dims=dims, fixed=fixed, key=key):
      hp = {**fixed, **spaces.suggest(trial, dims)}
      meth = unlearn_lib.get_method(m, **hp)
      new = jax.block_until_ready(meth.fn(params, model, data, key))
      if not all(bool(jax.numpy.all(jax.numpy.isfinite(v))) for v in jax.tree.leaves(new)):
        constrain(trial, 1.0)            # a diverged trial is infeasible
        raise optuna.TrialPruned('non-finite weights')
      mu = objective_lib.metrics(model, new, data, seed=seed)
      trial.set_user_attr('metrics', mu._asdict())
      constrain(trial, forget_violation(mu.forget, ref.forget))
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
      best, feasible = choose_trial(complete, require_forgetting)
      results[m] = dict(
          require_forgetting=bool(require_forgetting), feasible=bool(feasible),
          diverged=len(study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.PRUNED,))),
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
    if not results[m]['feasible']:
      log(f'[tune] warning: {m}: no trial of {trials} lowered Du accuracy to the retrain\'s '
          f'({ref.forget:.3f}); chose the one closest to it, marked feasible=false')
  return results


def _constraint(trial) -> tuple[float]:
  """Optuna 4's constraint value of a trial (<= 0 feasible; pruned trials are infeasible)."""
  return (float(trial.user_attrs.get('forget_violation', 1.0)),)
