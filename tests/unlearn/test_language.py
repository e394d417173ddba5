"""Language-model unlearning methods (jaxaudit.unlearn.language) on a tiny TransformerLM.

Tiny everything (V = 20, context 8, width 16, 2 blocks, 40 random records) and
random-init parameters: the properties checked (GA raises Du's NLL, fine-tuning
lowers Dr's, RMU pulls Du's activations towards c·u, the losses equal their
formulas) hold from any starting point, and no training run is paid for.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit import unlearn as U
from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model, init_params, make_apply_fn
from jaxaudit.train import Recipe
from jaxaudit.train.loop import Batch, TokenCE
from jaxaudit.unlearn import language as L
from tests.unlearn.conftest import assert_trees_close, assert_trees_equal, compile_count

pytestmark = pytest.mark.usefixtures('fast_compiles')

V, T, N = 20, 8, 40
METHODS = ('lm_gradient_ascent', 'lm_grad_diff', 'lm_npo', 'lm_simnpo', 'lm_idk', 'lm_rmu',
           'lm_finetune', 'lm_retrain')
FAST = dict(epochs=2)   # hparam overrides keeping the slow runs short


@dataclasses.dataclass(frozen=True)
class LM:
  model: object
  params: object
  data: U.UnlearnData
  x: np.ndarray
  y: np.ndarray
  forget: np.ndarray
  retain: np.ndarray


def _records(seed: int = 0, n: int = N) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = np.full((n, T + 1), -1, np.float32)
  for i in range(n):
    k = int(rng.integers(3, T + 2))
    x[i, :k] = rng.integers(0, V, k)
  y = np.where(x[:, 1:] >= 0, x[:, 1:], -1).astype(np.int32)
  return x, y


@pytest.fixture(scope='module')
def lm() -> LM:
  x, y = _records()
  model = get_model('transformer', V, width=16, depth=2, heads=2, context=T)
  params = _init(model, jax.random.key(0))
  forget, retain = np.arange(8), np.arange(8, N)
  data = U.UnlearnData(x=jnp.asarray(x), y=jnp.asarray(y), forget=jnp.asarray(forget, jnp.int32),
                       retain=jnp.asarray(retain, jnp.int32), num_classes=V, input_shape=(T + 1,),
                       recipe=Recipe(epochs=2, batch_size=16, learning_rate=3e-3),
                       refusal=jnp.asarray([3, 4, 5], jnp.int32))
  return LM(model, params, data, x, y, forget, retain)


_APPLY = {}


def _init(model, key):
  return jax.jit(lambda k: init_params(model, k, (T + 1,)))(key)


def _loss(loss, lm, params, batches, aux):
  """``loss`` evaluated as one jitted program (eager evaluation compiles op by op)."""
  apply_fn = make_apply_fn(lm.model)
  return float(jax.jit(lambda p, bs, a: loss(apply_fn, p, bs, None, a, None))(params, batches,
                                                                              aux))


def _apply(model, params, x):
  if model not in _APPLY:
    _APPLY[model] = jax.jit(make_apply_fn(model))
  return _APPLY[model](params, jnp.asarray(x))


def nll(lm: LM, params, idx) -> float:
  """Mean over records of the mean token NLL."""
  return float(jnp.mean(TokenCE()(_apply(lm.model, params, lm.x[idx]), jnp.asarray(lm.y[idx]))))


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _seq_logp(logits, y):
  lp = _log_softmax(logits)
  valid = y >= 0
  tok = np.take_along_axis(lp, np.where(valid, y, 0)[..., None], -1)[..., 0]
  return np.where(valid, tok, 0.0).sum(-1), valid.sum(-1)


def _batch(lm: LM, idx, w):
  idx = np.asarray(idx)
  return Batch(jnp.asarray(lm.x[idx]), jnp.asarray(lm.y[idx]), jnp.asarray(w, jnp.float32),
               jnp.asarray(idx, jnp.int32))


# ----------------------------------------------------------------------------- registry, checks


def test_methods_are_listed_under_the_language_model_family():
  rows = {r.name: r for r in U.list_methods()}
  for name in METHODS:
    assert name in rows, name
    assert rows[name].family == 'language-model'
    assert rows[name].doc
    m = U.get_method(name)
    assert m.family == 'language-model' and dict(m.hparams) == rows[name].defaults
  assert rows['lm_npo'].defaults['beta'] == 0.1
  assert rows['lm_simnpo'].defaults['beta'] == 2.5


def test_check_data_accepts_token_targets(lm):
  U.check_data(lm.data)
  bad = np.array(lm.y)
  bad[lm.forget[0], 0] = V
  with pytest.raises(ConfigError, match='labels must lie'):
    U.check_data(lm.data._replace(y=jnp.asarray(bad)))
  bad[lm.forget[0], 0] = -2
  with pytest.raises(ConfigError, match='labels must lie'):
    U.check_data(lm.data._replace(y=jnp.asarray(bad)))
  with pytest.raises(ConfigError, match='data.y must have shape'):
    U.check_data(lm.data._replace(y=jnp.asarray(lm.y[:-1])))
  with pytest.raises(ConfigError, match='refusal'):
    U.check_data(lm.data._replace(refusal=jnp.asarray([1, V], jnp.int32)))
  U.check_data(lm.data._replace(refusal=None))


def test_non_language_models_and_label_targets_are_refused_before_compiling(lm):
  mlp = get_model('mlp', V, hidden=(8,))
  labels = lm.data._replace(y=jnp.zeros((N,), jnp.int32), x=jnp.zeros((N, T + 1)))
  before = compile_count()
  for name in METHODS:
    fn = U.get_method(name).fn
    with pytest.raises(ConfigError, match='needs a language model'):
      fn(lm.params, mlp, lm.data, jax.random.key(0))
    with pytest.raises(ConfigError, match=r'needs next-token targets y of shape \(N, T\)'):
      fn(lm.params, lm.model, labels, jax.random.key(0))
  assert compile_count() == before


def test_idk_without_refusal_raises_before_compiling(lm):
  before = compile_count()
  with pytest.raises(ConfigError, match='data.refusal'):
    U.get_method('lm_idk').fn(lm.params, lm.model, lm.data._replace(refusal=None),
                              jax.random.key(0))
  assert compile_count() == before


@pytest.mark.parametrize('name, kw', [('lm_npo', {'beta': 0.0}), ('lm_simnpo', {'beta': -1.0}),
                                      ('lm_grad_diff', {'retain_weight': -1.0}),
                                      ('lm_rmu', {'trainable': 'all'}), ('lm_rmu', {'layer': -1}),
                                      ('lm_rmu', {'steering_coef': 0.0})])
def test_bad_hparams_raise(name, kw):
  with pytest.raises(ConfigError):
    U.get_method(name, **kw)


def test_rmu_layer_out_of_range_raises(lm):
  with pytest.raises(ConfigError, match='layer must lie'):
    U.get_method('lm_rmu', layer=2).fn(lm.params, lm.model, lm.data, jax.random.key(0))


# ----------------------------------------------------------------------------- formulas


def test_npo_loss_equals_a_hand_computation(lm):
  ref = _init(lm.model, jax.random.key(1))
  y = np.array(lm.y)
  y[3] = -1                                      # a record without targets: weight 0
  lm2 = dataclasses.replace(lm, y=y)
  idx, w = np.array([0, 1, 2, 3, 4]), np.array([1, 1, 1, 1, 0.])   # record 4 is padding
  b = _batch(lm2, idx, w)
  beta = 0.1
  got = _loss(L.NPOLoss(beta), lm, lm.params, (b,), {'ref': ref})
  lp, _ = _seq_logp(_apply(lm.model, lm.params, b.x), y[idx])
  lr, _ = _seq_logp(_apply(lm.model, ref, b.x), y[idx])
  per = -(2 / beta) * np.log(1 / (1 + np.exp(beta * (lp - lr))))
  keep = np.array([1, 1, 1, 0, 0.])
  np.testing.assert_allclose(got, np.sum(per * keep) / keep.sum(), rtol=1e-5)
  # With retain_weight the Dr stream's mean token NLL is added.
  r = _batch(lm2, [10, 11], [1, 1])
  got_rt = _loss(L.NPOLoss(beta, 0.5), lm, lm.params, (b, r), {'ref': ref})
  lp_r, n_r = _seq_logp(_apply(lm.model, lm.params, r.x), y[[10, 11]])
  np.testing.assert_allclose(got_rt - got, 0.5 * np.mean(-lp_r / n_r), rtol=1e-4)


def test_simnpo_loss_equals_a_hand_computation(lm):
  idx, w = np.array([5, 6, 7]), np.array([1, 1, 1.])
  b = _batch(lm, idx, w)
  beta, gamma = 2.5, 0.3
  got = _loss(L.SimNPOLoss(beta, gamma, 0.5), lm, lm.params, (b,), None)
  lp, n = _seq_logp(_apply(lm.model, lm.params, b.x), lm.y[idx])
  per = -(2 / beta) * np.log(1 / (1 + np.exp(beta * lp / n + gamma)))
  np.testing.assert_allclose(got, 0.5 * per.mean(), rtol=1e-5)


def test_refusal_rows_keep_the_first_half_and_target_only_the_refusal():
  x = np.array([[7, 8, 9, 10, 11, -1, -1, -1, -1],      # n = 5: keep 3
                [1, 2, 3, 4, 5, 6, 7, 8, 9]], np.float32)  # n = 9: keep 5, refusal cut
  rows, y = L.refusal_rows(jnp.asarray(x), jnp.asarray([0, 19, 18], jnp.int32))
  np.testing.assert_array_equal(rows[0], [7, 8, 9, 0, 19, 18, -1, -1, -1])
  np.testing.assert_array_equal(y[0], [-1, -1, 0, 19, 18, -1, -1, -1])
  np.testing.assert_array_equal(rows[1], [1, 2, 3, 4, 5, 0, 19, 18, -1])
  np.testing.assert_array_equal(y[1], [-1, -1, -1, -1, 0, 19, 18, -1])


def test_rmu_layer_and_update_scale(lm):
  assert [L.default_rmu_layer(d) for d in (1, 2, 4, 8, 32)] == [0, 1, 1, 2, 7]
  scale = L.rmu_update_scale(lm.params, 1, 3, 'block')
  on = {jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_leaves_with_path(scale) if v}
  assert on and all(k.startswith("['block_0']") or k.startswith("['block_1']") for k in on)
  scale = L.rmu_update_scale(lm.params, 1, 1, 'mlp_out')
  on = {jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_leaves_with_path(scale) if v}
  assert on == {"['block_1']['mlp_out']['kernel']"}


# ----------------------------------------------------------------------------- runs


def test_gradient_ascent_raises_du_nll_deterministically_without_recompiling(lm):
  method = U.get_method('lm_gradient_ascent')
  key = jax.random.key(3)
  a = method.fn(lm.params, lm.model, lm.data, key)
  assert jax.tree.structure(a) == jax.tree.structure(lm.params)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(a))
  assert nll(lm, a, lm.forget) > nll(lm, lm.params, lm.forget) + 0.05
  before = compile_count()
  b = method.fn(lm.params, lm.model, lm.data, key)
  method.fn(lm.params, lm.model, lm.data, jax.random.key(4))
  assert compile_count() == before, 'a second call recompiled'
  assert_trees_equal(a, b)


def test_features_model_is_cloned_to_logits(lm):
  method = U.get_method('lm_gradient_ascent')
  key = jax.random.key(3)
  a = method.fn(lm.params, lm.model, lm.data, key)
  b = method.fn(lm.params, lm.model.clone(output='features'), lm.data, key)
  assert_trees_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize('name', METHODS)
def test_every_method_runs_finite_deterministic_without_recompiling(lm, name):
  method = U.get_method(name, **({} if name == 'lm_retrain' else FAST))
  key = jax.random.key(5)
  a = method.fn(lm.params, lm.model, lm.data, key)
  assert jax.tree.structure(a) == jax.tree.structure(lm.params)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(a))
  assert any(not np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a),
                                                      jax.tree.leaves(lm.params)))
  before = compile_count()
  b = method.fn(lm.params, lm.model, lm.data, key)
  assert compile_count() == before, 'a second call recompiled'
  assert_trees_equal(a, b)


@pytest.mark.slow
def test_finetune_lowers_dr_nll_and_npo_raises_du_nll(lm):
  ft = U.get_method('lm_finetune', **FAST).fn(lm.params, lm.model, lm.data, jax.random.key(0))
  assert nll(lm, ft, lm.retain) < nll(lm, lm.params, lm.retain) - 0.05
  npo = U.get_method('lm_npo', **FAST).fn(lm.params, lm.model, lm.data, jax.random.key(0))
  assert nll(lm, npo, lm.forget) > nll(lm, lm.params, lm.forget) + 0.05


@pytest.mark.slow
def test_idk_teaches_the_refusal_after_du_prompts(lm):
  new = U.get_method('lm_idk', **FAST).fn(lm.params, lm.model, lm.data, jax.random.key(0))
  rows, y = L.refusal_rows(jnp.asarray(lm.x[lm.forget]), lm.data.refusal)

  def refusal_nll(p):
    return float(jnp.mean(TokenCE()(_apply(lm.model, p, rows), y)))

  assert refusal_nll(new) < refusal_nll(lm.params) - 0.05


@pytest.mark.slow
def test_rmu_moves_du_activations_towards_the_control_vector(lm):
  key = jax.random.key(2)
  new = U.get_method('lm_rmu').fn(lm.params, lm.model, lm.data, key)
  hidden = lm.model.clone(output='hidden', hidden_layer=1)
  valid = lm.x[lm.forget][:, :T] >= 0
  h0 = np.asarray(_apply(hidden, lm.params, lm.x[lm.forget]))
  c = 6.5 * np.mean(np.linalg.norm(h0, axis=-1)[valid])
  u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (16,)))
  target = c * u / np.linalg.norm(u)

  def dist(p):
    h = np.asarray(_apply(hidden, p, lm.x[lm.forget]))
    return np.mean(np.linalg.norm(h - target, axis=-1)[valid])

  assert dist(new) < 0.9 * dist(lm.params)
  # Embeddings and the head are frozen bit-identically (blocks 0..1 are trained).
  for k in ('embed', 'pos_embed', 'ln_f', 'head'):
    assert_trees_equal(new[k], lm.params[k])


@pytest.mark.slow
def test_retrain_fine_tunes_the_base_lm_on_dr_with_the_recipe(lm):
  from jaxaudit.train import train_model
  base = _init(lm.model, jax.random.key(9))
  data = lm.data._replace(init_checkpoint_params=base)
  key = jax.random.key(1)
  got = U.get_method('lm_retrain').fn(lm.params, lm.model, data, key)
  want = train_model(lm.model, data.x, data.y, lm.retain, key, data.recipe, init_params=base,
                     loss=TokenCE()).params
  assert_trees_equal(got, want)
  stacked = U.run_method('lm_retrain', lm.params, lm.model, data, key, seeds=2)
  assert jax.tree.leaves(stacked)[0].shape[0] == 2


@pytest.mark.slow
@pytest.mark.parametrize('name', ['lm_npo', 'lm_idk', 'lm_rmu'])
def test_vmapped_seeds_equal_single_runs(lm, name):
  method = U.get_method(name, **FAST)
  key = jax.random.key(7)
  stacked = U.run_method(method, lm.params, lm.model, lm.data, key, seeds=[0, 1], strategy='vmap')
  single = method.fn(lm.params, lm.model, lm.data, jax.random.fold_in(key, 1))
  assert_trees_close(jax.tree.map(lambda p: p[1], stacked), single, rtol=1e-4, atol=1e-5)
