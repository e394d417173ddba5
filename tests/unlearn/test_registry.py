"""Registry, hyper-parameter coercion and input validation (nothing is compiled)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.data.types import AuditSplit, Dataset
from jaxaudit.errors import ConfigError, SplitError
from jaxaudit.train import Recipe
from jaxaudit import unlearn as U
from tests.unlearn.conftest import compile_count

pytestmark = pytest.mark.usefixtures('fast_compiles')

EXPECTED = {
    'retrain': 'retraining', 'sisa': 'retraining', 'warmstart_retrain': 'retraining',
    'warmstart_finetune': 'retraining',
    'finetune': 'fine-tuning', 'cf_k': 'fine-tuning', 'eu_k': 'fine-tuning',
    'l1_sparse': 'fine-tuning',
    'random_label': 'relabelling', 'relabel_finetune': 'relabelling', 'srl': 'relabelling',
    'salun': 'relabelling',
    'gradient_ascent': 'de-optimisation', 'ga_finetune': 'de-optimisation',
    'neggrad_plus': 'de-optimisation',
    'bad_teacher': 'distillation', 'scrub': 'distillation',
    'msg': 'challenge', 'ct': 'challenge', 'fcs': 'challenge', 'cfw': 'challenge',
    'prmq': 'challenge', 'kde': 'challenge', 'rni': 'challenge',
}


def test_every_method_is_registered_with_its_family():
  rows = {r.name: r for r in U.list_methods()}
  for name, family in EXPECTED.items():
    assert name in rows, name
    assert rows[name].family == family
    assert rows[name].doc, f'{name} has no description'
    m = U.get_method(name)
    assert m.name == name and m.family == family
    assert dict(m.hparams) == rows[name].defaults
  # list_methods rows are (name, family, defaults, doc) tuples.
  name, family, defaults, doc = U.list_methods()[0]
  assert isinstance(defaults, dict) and isinstance(doc, str)


def test_unknown_method_lists_known_ones():
  before = compile_count()
  with pytest.raises(ConfigError, match=r"unknown unlearning method 'nope'.*finetune"):
    U.get_method('nope')
  with pytest.raises(ConfigError, match='unknown unlearning method'):
    U.run_method('nope', None, None, None, 0)
  assert compile_count() == before


def test_unknown_hparam_lists_valid_ones():
  before = compile_count()
  with pytest.raises(ConfigError, match=r"unknown hyper-parameter\(s\) \['lrr'\].*valid: .*lr"):
    U.get_method('finetune', lrr=0.1)
  assert compile_count() == before


def test_cli_strings_are_coerced_to_the_defaults_types():
  m = U.get_method('finetune', epochs='3', lr='1e-2', batch_size='32.0', optimizer='adam')
  assert m.hparams['epochs'] == 3 and isinstance(m.hparams['epochs'], int)
  assert m.hparams['lr'] == pytest.approx(0.01) and isinstance(m.hparams['lr'], float)
  assert m.hparams['batch_size'] == 32
  assert m.hparams['optimizer'] == 'adam'
  assert U.get_method('random_label', use_retain='false').hparams['use_retain'] is False
  assert U.get_method('random_label', use_retain='1').hparams['use_retain'] is True
  assert U.get_method('finetune', lr=1).hparams['lr'] == 1.0


def test_tuple_coercion():
  U.register('_tuple_probe', 'test', {'widths': (1, 2), 'names': ('a',)})(lambda **hp: (
      lambda params, model, data, key: params))
  try:
    m = U.get_method('_tuple_probe', widths='(3, 4, 5)', names='x,y')
    assert m.hparams['widths'] == (3, 4, 5)
    assert m.hparams['names'] == ('x', 'y')
    assert U.get_method('_tuple_probe', widths=[7]).hparams['widths'] == (7,)
  finally:   # keep the registry clean for other tests that list every method
    U.base._REGISTRY.pop('_tuple_probe')


@pytest.mark.parametrize('name,kw', [
    ('finetune', {'epochs': 'three'}),
    ('finetune', {'epochs': 2.5}),
    ('finetune', {'lr': True}),
    ('random_label', {'use_retain': 'maybe'}),
    ('finetune', {'optimizer': 3}),
])
def test_bad_values_raise_config_error(name, kw):
  with pytest.raises(ConfigError, match='not a valid'):
    U.get_method(name, **kw)


@pytest.mark.parametrize('name,kw', [
    ('finetune', {'optimizer': 'rmsprop'}),
    ('finetune', {'lr': -1.0}),
    ('salun', {'fraction': 1.5}),
    ('neggrad_plus', {'alpha': 2.0}),
    ('cf_k', {'k': 0}),
    ('msg', {'reinit_fraction': -0.1}),
    ('rni', {'fine_epochs': 9, 'epochs': 3}),
])
def test_factories_validate_ranges_before_compiling(name, kw):
  before = compile_count()
  with pytest.raises(ConfigError):
    U.get_method(name, **kw)
  assert compile_count() == before


def _data(forget, retain, n=20):
  x = jnp.zeros((n, 4), jnp.float32)
  y = jnp.asarray(np.arange(n) % 3, jnp.int32)
  return U.UnlearnData(x=x, y=y, forget=jnp.asarray(forget, jnp.int32),
                       retain=jnp.asarray(retain, jnp.int32), num_classes=3, input_shape=(4,),
                       recipe=Recipe())


@pytest.mark.parametrize('name', ['finetune', 'gradient_ascent', 'retrain', 'msg', 'scrub'])
def test_empty_forget_set_raises_before_compilation(name):
  data = _data([], np.arange(10))
  method = U.get_method(name)
  params = {'Dense_0': {'kernel': jnp.zeros((4, 3)), 'bias': jnp.zeros((3,))}}
  key = jax.random.key(0)
  before = compile_count()
  with pytest.raises(ConfigError, match='forget set is empty'):
    method.fn(params, None, data, key)
  with pytest.raises(SplitError):   # EmptySetError is both
    U.run_method(method, params, None, data, key, seeds=2)
  assert compile_count() == before


def test_empty_retain_and_bad_indices():
  with pytest.raises(ConfigError, match='retain set is empty'):
    U.check_data(_data([1, 2], []))
  with pytest.raises(SplitError, match='both the forget and the retain'):
    U.check_data(_data([1, 2], [2, 3]))
  with pytest.raises(SplitError, match=r'lie in \[0, 20\)'):
    U.check_data(_data([1, 25], [2, 3]))
  with pytest.raises(SplitError, match='duplicated'):
    U.check_data(_data([1, 1], [2, 3]))


def _dataset_and_split(forget, fp_split='abc'):
  rng = np.random.default_rng(0)
  ds = Dataset(name='toy', x_train=rng.normal(size=(30, 4)).astype(np.float32),
               y_train=(np.arange(30) % 3).astype(np.int32),
               x_test=rng.normal(size=(10, 4)).astype(np.float32),
               y_test=(np.arange(10) % 3).astype(np.int32), num_classes=3, input_shape=(4,),
               source='test', fingerprint='abc')
  forget = np.asarray(forget, np.int64)
  train = np.arange(20)
  split = AuditSplit(train=train, forget=forget, retain=np.setdiff1d(train, forget),
                     ref=np.arange(20, 30), test=np.arange(10), seed=0, forget_mode='random',
                     forget_classes=(), dataset_fingerprint=fp_split)
  return ds, split


def test_make_unlearn_data():
  ds, split = _dataset_and_split([0, 5, 7])
  data = U.make_unlearn_data(ds, split, Recipe(), val_size=4)
  assert data.x.shape == (30, 4) and data.x.dtype == jnp.float32
  assert data.forget.tolist() == [0, 5, 7] and data.retain.shape == (17,)
  assert data.val_x.shape == (4, 4) and data.val_y.tolist() == ds.y_test[:4].tolist()
  # The reference records are never indexed by forget/retain.
  assert not set(np.asarray(data.forget)) & set(split.ref)
  assert not set(np.asarray(data.retain)) & set(split.ref)
  assert U.make_unlearn_data(ds, split, Recipe(), val_size=0).val_x is None
  with pytest.raises(ConfigError, match='forget is empty'):
    U.make_unlearn_data(*_dataset_and_split([]), Recipe())
  with pytest.raises(SplitError, match='fingerprint'):
    U.make_unlearn_data(*_dataset_and_split([1], fp_split='zzz'), Recipe())
