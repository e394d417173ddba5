"""Parameter transforms and masks of the methods (no training)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model, init_params
from jaxaudit.train import Recipe
from jaxaudit import unlearn as U
from jaxaudit.unlearn import challenge, paramtree

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _numpy_params(model, shape, seed=0):
  # Shapes by tracing only, values from NumPy: nothing is compiled.
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0), shape))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.1, s.dtype), shapes)


@pytest.fixture(scope='module')
def cnn():
  model = get_model('cnn', 10, width=4, dense=16)
  return model, _numpy_params(model, (8, 8, 1))


@pytest.fixture(scope='module')
def mlp():
  model = get_model('mlp', 10, hidden=(16, 8))
  return model, _numpy_params(model, (64,))


def _random_like(params, seed):
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=l.shape), jnp.float32)
                                   for l in leaves])


def test_blocks_are_in_forward_order(cnn, mlp):
  assert paramtree.blocks(cnn[1]) == ['conv1', 'conv2', 'fc', 'head']
  assert paramtree.blocks(mlp[1]) == ['Dense_0', 'Dense_1', 'head']
  assert paramtree.last_blocks(cnn[1], 2) == ['fc', 'head']
  with pytest.raises(ConfigError, match=r'k=5 must lie in \[1, 4\]'):
    paramtree.last_blocks(cnn[1], 5)


def test_blocks_follow_the_model_not_the_sorted_dict():
  """After jit / restore a params dict has sorted keys ('stem' after 'BasicBlock_0');
  CF-k, EU-k, CT and RNI must still pick the forward-order blocks of ResNet-18."""
  model = get_model('resnet18', 10, (8, 8, 3))
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0))
  params = shapes['params']
  assert list(params.keys()) == sorted(params.keys())   # what JAX hands back
  assert paramtree.blocks(params)[-1] == 'stem'          # dict order: wrong
  names = paramtree.blocks(params, model, (8, 8, 3))
  assert names[0] == 'stem' and names[-1] == 'head'
  assert names[2:10] == [f'BasicBlock_{i}' for i in range(8)]
  assert paramtree.last_blocks(params, 2, model, (8, 8, 3)) == ['BasicBlock_7', 'head']
  with pytest.raises(ConfigError, match='not those of the model'):
    paramtree.blocks({'head': params['head']}, model, (8, 8, 3))


def test_ct_transposes_every_conv_kernel_exactly(cnn):
  _, params = cnn
  params = _random_like(params, 1)   # break any symmetry of the initialiser
  out = U.transpose_conv_kernels(params)
  n_conv = 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(out)):
    a, b = np.asarray(a), np.asarray(b)
    if paramtree.is_conv_kernel(path, a):
      n_conv += 1
      kh, kw = a.shape[:2]
      for h in range(kh):
        for w in range(kw):
          np.testing.assert_array_equal(b[h, w], a[w, h])
      assert not np.array_equal(a, b)
    else:
      np.testing.assert_array_equal(a, b)
  assert n_conv == 2
  back = U.transpose_conv_kernels(out)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def _cnn_request() -> U.UnlearnData:
  """40 random 8x8x1 records, 10 classes, Du = the first 4."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(40, 8, 8, 1)), jnp.float32)
  y = jnp.asarray(np.arange(40) % 10, jnp.int32)
  return U.UnlearnData(x=x, y=y, forget=jnp.arange(4), retain=jnp.arange(4, 40),
                       num_classes=10, input_shape=(8, 8, 1), recipe=Recipe())


def test_ct_method_with_zero_epochs_is_the_transform(cnn):
  model, params = cnn
  data = _cnn_request()
  out = U.get_method('ct', epochs=0).fn(params, model, data, jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, out, U.transpose_conv_kernels(params))


def test_ct_needs_conv_kernels(mlp):
  with pytest.raises(ConfigError, match='no convolution kernels'):
    U.transpose_conv_kernels(mlp[1])
  with pytest.raises(ConfigError, match='non-square'):
    U.transpose_conv_kernels({'c': {'kernel': jnp.zeros((3, 1, 2, 2))}})


@pytest.mark.parametrize('fraction', [0.0, 0.3, 1.0])
def test_msg_mask_reinitialises_the_requested_fraction_of_conv_weights(cnn, fraction):
  _, params = cnn
  grads = _random_like(params, 2)
  selected = paramtree.select(params, paramtree.feature_kernel_selector(params))
  mask = jax.jit(lambda g: U.msg_reinit_mask(g, fraction, selected))(grads)
  for (path, g), m in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(mask)):
    g, m = np.abs(np.asarray(g)), np.asarray(m)
    if paramtree.is_conv_kernel(path, g):
      assert m.sum() == int(np.round(fraction * g.size))
      if 0 < m.sum() < m.size:   # the masked weights have the smallest |g|
        assert g[m].max() <= g[~m].min()
    else:
      assert not m.any(), paramtree.path_str(path)


def test_msg_prepare_reinitialises_exactly_the_mask(cnn):
  model, params = cnn
  g_r, g_f = _random_like(params, 3), _random_like(params, 4)
  fresh = _numpy_params(model, (8, 8, 1), seed=9)
  new, scale = jax.jit(lambda *a: challenge._msg_prepare(*a, fraction=0.3, others=0.1, order=None))(
      params, fresh, g_r, g_f)
  g = jax.tree.map(jnp.subtract, g_r, g_f)
  selected = paramtree.select(params, paramtree.feature_kernel_selector(params))
  mask = jax.jit(lambda g: U.msg_reinit_mask(g, 0.3, selected))(g)
  for (path, p), n, f, m, s in zip(jax.tree_util.tree_leaves_with_path(params),
                                   *(jax.tree.leaves(t) for t in (new, fresh, mask, scale))):
    p, n, f, m, s = map(np.asarray, (p, n, f, m, s))
    np.testing.assert_array_equal(n[m], f[m])
    np.testing.assert_array_equal(n[~m], p[~m])
    if paramtree.is_conv_kernel(path, p):
      np.testing.assert_allclose(s, np.where(m, 1.0, 0.1))
    else:
      np.testing.assert_array_equal(s, 1.0)


def test_msg_falls_back_to_hidden_dense_kernels_for_an_mlp(mlp):
  _, params = mlp
  selected = paramtree.select(params, paramtree.feature_kernel_selector(params))
  assert selected['Dense_0']['kernel'] and selected['Dense_1']['kernel']
  assert not selected['head']['kernel'] and not selected['Dense_0']['bias']


def _selected_paths(tree):
  return sorted(paramtree.path_str(p) for p, v in jax.tree_util.tree_leaves_with_path(tree) if v)


def test_cfw_confuses_only_the_stem_kernel(cnn, mlp):
  # The published confuser perturbs the top-level conv of its ResNet-18: the stem alone.
  # Regression: noising every conv kernel sent the small MNIST CNN to chance accuracy.
  assert _selected_paths(challenge.cfw_selected(cnn[1], (8, 8, 1))) == ['conv1/kernel']
  assert _selected_paths(challenge.cfw_selected(mlp[1], (64,))) == ['Dense_0/kernel']
  resnet = get_model('resnet18', 10, width=4, groups=2)
  shapes = jax.eval_shape(lambda: init_params(resnet, jax.random.key(0), (8, 8, 3)))
  assert _selected_paths(challenge.cfw_selected(shapes, (8, 8, 3))) == ['stem/kernel']
  with pytest.raises(ConfigError, match='reads inputs of shape'):
    challenge.cfw_selected(cnn[1], (8, 8, 3))


def test_cfw_breaks_ties_between_input_blocks_by_forward_order():
  """Two blocks read the input; the one the model creates first is the stem, whatever
  the names (natural order would pick ``a_in``) or the params dict's order."""
  import flax.linen as nn

  class TwoStems(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = x.reshape((x.shape[0], -1))
      h = nn.Dense(8, name='z_in')(x) + nn.Dense(8, name='a_in')(x)
      return nn.Dense(3, name='head')(nn.relu(h))

  model = TwoStems()
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 4, 4, 1)))['params'])(jax.random.key(0))
  order = tuple(paramtree.blocks(params, model, (4, 4, 1)))
  assert order == ('z_in', 'a_in', 'head')
  assert _selected_paths(challenge.cfw_selected(params, (4, 4, 1), order)) == ['z_in/kernel']
  assert _selected_paths(challenge.cfw_selected(params, (4, 4, 1))) == ['a_in/kernel']
  # MSG's feature kernels of an MLP: every dense block but the head (the last created),
  # although 'head' does not sort last here.
  params2 = {'fc_out': params['head'], 'hidden': params['a_in']}
  order2 = ('hidden', 'fc_out')
  sel = paramtree.select(params2, paramtree.feature_kernel_selector(params2, order2))
  assert sel['hidden']['kernel'] and not sel['fc_out']['kernel']


def test_cfw_with_zero_epochs_adds_noise_to_the_stem_only(cnn):
  model, params = cnn
  data = _cnn_request()
  key = jax.random.key(3)
  out = U.get_method('cfw', epochs=0, noise_std=0.6).fn(params, model, data, key)
  want = challenge.add_noise(params, jax.random.fold_in(key, 0), 0.6,
                             challenge.cfw_selected(params, (8, 8, 1)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), out, want)
  assert not np.array_equal(np.asarray(out['conv1']['kernel']),
                            np.asarray(params['conv1']['kernel']))
  for block in ('conv2', 'fc', 'head'):
    jax.tree.map(np.testing.assert_array_equal, out[block], params[block])


@pytest.mark.parametrize('fraction', [0.1, 0.5])
def test_salun_mask_has_the_requested_fraction(mlp, fraction):
  _, params = mlp
  grads = _random_like(params, 5)
  mask = jax.jit(lambda g: U.saliency_mask(g, fraction))(grads)
  flat_g = np.concatenate([np.abs(np.ravel(g)) for g in jax.tree.leaves(grads)])
  flat_m = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])
  assert flat_m.sum() == int(np.round(fraction * flat_g.size))
  assert flat_g[flat_m].min() >= flat_g[~flat_m].max()   # a global top-|g| ranking


def test_random_label_targets_are_never_the_true_label():
  y = jnp.asarray(np.arange(5000) % 10, jnp.int32)
  wrong = U.random_wrong_labels(jax.random.key(0), y, 10)
  assert bool(jnp.all(wrong != y))
  assert set(np.unique(np.asarray(wrong)[np.asarray(y) == 3])) == set(range(10)) - {3}
  forget = jnp.arange(0, 5000, 7)
  out = np.asarray(U.relabel_targets(jax.random.key(1), y, forget, 10))
  f = np.asarray(forget)
  assert np.all(out[f] != np.asarray(y)[f])
  keep = np.setdiff1d(np.arange(5000), f)
  np.testing.assert_array_equal(out[keep], np.asarray(y)[keep])


def test_prmq_prunes_the_requested_fraction(mlp):
  _, params = mlp
  new, mask = jax.jit(lambda p, k: U.prune_reinit(p, k, 0.9))(params, jax.random.key(0))
  prunable = challenge.prunable(params)
  n = sum(np.size(p) for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(prunable)) if s)
  assert sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == int(np.round(0.9 * n))
  for (path, p), q, m in zip(jax.tree_util.tree_leaves_with_path(params),
                             jax.tree.leaves(new), jax.tree.leaves(mask)):
    p, q, m = map(np.asarray, (p, q, m))
    np.testing.assert_array_equal(q[~m], p[~m])
    if paramtree.path_str(path[-1:]) == 'bias':
      assert np.all(q[m] == 0)


def test_top_fraction_mask_per_leaf_and_selection():
  scores = {'a': jnp.arange(10.0), 'b': jnp.arange(4.0)}
  m = paramtree.top_fraction_mask(scores, 0.5, largest=False, per_leaf=True,
                                  selected={'a': True, 'b': False})
  assert np.asarray(m['a']).tolist() == [True] * 5 + [False] * 5
  assert not np.asarray(m['b']).any()
  with pytest.raises(ConfigError):
    paramtree.top_fraction_mask(scores, 1.5)
