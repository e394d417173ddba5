import jax
import numpy as np
import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model, init_params, make_apply_fn


@pytest.mark.parametrize('name,shape,kwargs', [
    ('mlp', (8, 8, 1), {'hidden': (16,)}),
    ('cnn', (8, 8, 1), {}),
    ('cnn', (28, 28, 1), {}),
    ('resnet18', (16, 16, 3), {'width': 8, 'stage_sizes': (1, 1, 1, 1)}),
])
def test_shapes_and_purity(name, shape, kwargs):
  model = get_model(name, 10, shape, **kwargs)
  params = init_params(model, jax.random.key(0), shape)
  apply_fn = jax.jit(make_apply_fn(model))
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  out = apply_fn(params, x)
  assert out.shape == (3, 10)
  # Pure: same params and inputs give the same outputs; a record's logits do
  # not depend on the rest of the batch (no batch statistics). Same shapes: one program.
  np.testing.assert_allclose(apply_fn(params, x), out)
  other = x.at[1:].set(jax.random.normal(jax.random.key(2), (2, *shape)) * 3.0)
  np.testing.assert_allclose(apply_fn(params, other)[0], out[0], rtol=1e-5, atol=1e-5)
  assert apply_fn._cache_size() == 1


def test_cnn_matches_seed_architecture():
  model = get_model('cnn', 10)
  params = init_params(model, jax.random.key(0), (28, 28, 1))
  assert params['conv1']['kernel'].shape == (3, 3, 1, 32)
  assert params['conv2']['kernel'].shape == (3, 3, 32, 64)
  assert params['fc']['kernel'].shape == (7 * 7 * 64, 128)
  assert params['head']['kernel'].shape == (128, 10)


def test_resnet18_parameter_count():
  model = get_model('resnet18', 10)
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), (32, 32, 3)))
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert 11_000_000 < n < 11_300_000   # ResNet-18 for CIFAR: about 11.2M parameters


def test_bad_model_requests():
  with pytest.raises(ConfigError, match='unknown model'):
    get_model('vit', 10)
  with pytest.raises(ConfigError, match='image inputs'):
    get_model('cnn', 10, (64,))
  with pytest.raises(ConfigError, match='unknown option'):
    get_model('mlp', 10, depth=3)
  with pytest.raises(ConfigError, match='num_classes'):
    get_model('mlp', 1)
