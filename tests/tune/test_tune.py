"""jaxaudit tune: search spaces, the objective, the resumable Optuna search and its use."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxaudit import unlearn
from jaxaudit.errors import ConfigError
from jaxaudit.tune import objective, spaces, tuned_hparams
from tests.cli_runner import run_cli


def _tunable_spaces():
  """(name, method, its space) of every single-model method that has something to tune
  (classifier and language-model methods)."""
  from jaxaudit.tune import search
  for name in unlearn.method_names():
    meth = unlearn.get_method(name)
    if not search.searchable(name, meth):
      continue
    try:
      yield name, meth, spaces.space(name, meth.hparams)
    except ConfigError:
      continue


def test_every_tunable_method_has_a_space_holding_its_defaults():
  searched = 0
  for name, meth, dims in _tunable_spaces():
    searched += 1
    for n, d in dims.items():
      assert d.low <= meth.hparams[n] <= d.high, (name, n, meth.hparams[n], d)
  assert searched >= 20
  lm = {'lm_gradient_ascent', 'lm_grad_diff', 'lm_npo', 'lm_simnpo', 'lm_idk', 'lm_rmu',
        'lm_finetune'}
  assert lm <= {name for name, _, _ in _tunable_spaces()}
  with pytest.raises(ConfigError, match='nothing|no hyper'):
    spaces.space('retrain', {})


def test_every_corner_of_every_space_is_a_valid_setting():
  # A trial may draw any point of a space: each corner must build the method (RNI's
  # epochs once reached 1, below its fine_epochs of 2, and such trials failed).
  import itertools
  for name, _, dims in _tunable_spaces():
    for corner in itertools.product(*[(d.low, d.high) for d in dims.values()]):
      hp = {n: (int(v) if d.kind == 'int' else float(v))
            for (n, d), v in zip(dims.items(), corner)}
      unlearn.get_method(name, **hp)       # raises ConfigError on an invalid setting


@settings(max_examples=50, deadline=None)
@given(a=st.lists(st.floats(0, 1), min_size=4, max_size=4),
       b=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_distance_is_the_sum_of_absolute_differences(a, b):
  d = objective.distance(objective.Metrics(*a), objective.Metrics(*b))
  assert d == pytest.approx(float(np.sum(np.abs(np.subtract(a, b)))))
  assert objective.distance(objective.Metrics(*a), objective.Metrics(*a)) == 0.0


def _run(args):
  return run_cli(args, os.getcwd(), timeout=600)


def test_tune_from_the_cli_resumes_and_unlearn_uses_the_choice(tmp_path):
  wd = str(tmp_path / 'wd')
  small = ['--config.model_kwargs.hidden=(64,)', '--config.train.epochs=10']
  r = _run(['train', f'--workdir={wd}', '--config.train_retrain=False', *small])
  assert r.returncode == 0, r.stderr[-2000:]
  r = _run(['tune', f'--workdir={wd}', '--methods=neggrad_plus', '--trials=2', *small])
  assert r.returncode == 0, r.stderr[-2000:]
  assert '[tune] neggrad_plus [' in r.stdout and '2/2' in r.stdout      # the progress bar
  with open(os.path.join(wd, 'tuning', 'neggrad_plus.json')) as f:
    first = json.load(f)
  assert first['trials'] == 2 and set(first['hparams']) >= {'lr', 'epochs', 'alpha'}
  # Resuming: a budget of 3 runs one more trial, not three.
  r = _run(['tune', f'--workdir={wd}', '--methods=neggrad_plus', '--trials=3', *small])
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'resuming, 2 of 3' in r.stdout and r.stdout.count('[tune] neggrad_plus [') == 1
  chosen = tuned_hparams(wd, 'neggrad_plus')
  # `jaxaudit unlearn` takes the chosen setting; an explicit --hparam still wins.
  r = _run(['unlearn', f'--workdir={wd}', '--method=neggrad_plus', *small])
  assert r.returncode == 0, r.stderr[-2000:]
  line = next(l for l in r.stdout.splitlines() if l.startswith('[unlearn] neggrad_plus ('))
  assert f"'lr': {chosen['lr']}" in line and f"'alpha': {chosen['alpha']}" in line
  r = _run(['unlearn', f'--workdir={wd}', '--method=neggrad_plus', '--hparam=alpha=0.9',
            '--name=ngp_fixed', *small])
  assert r.returncode == 0 and "'alpha': 0.9" in r.stdout, r.stderr[-2000:]


def test_tune_refuses_before_any_work(tmp_path):
  r = _run(['tune', f'--workdir={tmp_path}/none', '--methods=retrain'])
  assert r.returncode == 1 and 'nothing to tune' in r.stderr and 'Traceback' not in r.stderr
  r = _run(['tune', f'--workdir={tmp_path}/none', '--methods=finetune'])
  assert r.returncode == 1 and 'no original model' in r.stderr
  r = _run(['tune', f'--workdir={tmp_path}/none', '--methods=finetune', '--trials=0'])
  assert r.returncode == 1 and '--trials' in r.stderr


def test_choose_trial_keeps_only_settings_that_forget_when_asked():
  from types import SimpleNamespace as T
  from jaxaudit.tune import search
  assert search.forget_violation(0.97, 0.967) == pytest.approx(0.97 - 0.967 - search.FORGET_TOLERANCE)
  noop = T(value=0.04, number=0, user_attrs={'forget_violation': 0.02})      # Du untouched
  damage = T(value=0.50, number=1, user_attrs={'forget_violation': -0.10})   # forgot, costly
  closer = T(value=0.90, number=2, user_attrs={'forget_violation': 0.005})   # nearly forgot
  assert search.choose_trial([noop, damage, closer], False) == (noop, True)
  assert search.choose_trial([noop, damage, closer], True) == (damage, True)
  assert search.choose_trial([noop, closer], True) == (closer, False)          # closest to it
  tie = T(value=0.50, number=3, user_attrs={'forget_violation': -0.2})
  assert search.choose_trial([tie, damage], True) == (damage, True)            # earliest wins
