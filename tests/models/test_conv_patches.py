"""PatchConv and window_max_pool against flax.linen.Conv / max_pool; the CNN's switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit.models import get_model, init_params, make_apply_fn
from jaxaudit.models.cnn import window_max_pool
from jaxaudit.models.conv_patches import PatchConv

TOL = dict(rtol=1e-5, atol=1e-5)


def _value_and_grads(module, params, x, w):
  """Forward output and gradients of <module(x), w> w.r.t. x, kernel and bias."""

  @jax.jit
  def run(p, x):
    out, vjp = jax.vjp(lambda p, x: module.apply({'params': p}, x), p, x)
    gp, gx = vjp(w)
    return out, gx, gp['kernel'], gp['bias']

  return run(params, x)


@pytest.mark.parametrize('padding,strides,cin,cout,size,window', [
    ('SAME', 1, 1, 4, (9, 9), (3, 3)),
    ('SAME', 2, 3, 8, (8, 7), (3, 3)),
    pytest.param('VALID', 1, 3, 8, (8, 7), (3, 3), marks=pytest.mark.slow),
    ('VALID', 2, 5, 2, (7, 6), (2, 3)),
    pytest.param(((2, 0), (1, 1)), 2, 2, 6, (6, 6), (3, 3), marks=pytest.mark.slow),
])
def test_patch_conv_matches_flax_conv(padding, strides, cin, cout, size, window):
  ref = nn.Conv(cout, window, strides=strides, padding=padding)
  new = PatchConv(cout, window, strides=strides, padding=padding)
  x = jax.random.normal(jax.random.key(0), (2, *size, cin))
  params = ref.init(jax.random.key(1), x)['params']
  params = {'kernel': params['kernel'],
            'bias': jax.random.normal(jax.random.key(2), params['bias'].shape)}
  # Same parameter tree (names, shapes) from both modules' own init.
  new_init = new.init(jax.random.key(1), x)['params']
  assert jax.tree.map(jnp.shape, new_init) == jax.tree.map(jnp.shape, params)
  out_shape = jax.eval_shape(lambda: ref.apply({'params': params}, x)).shape
  w = jax.random.normal(jax.random.key(3), out_shape)
  for a, b in zip(_value_and_grads(new, params, x, w), _value_and_grads(ref, params, x, w)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize('size,padding', [((8, 8), 'SAME'), ((7, 5), 'SAME'), ((7, 5), 'VALID')])
def test_window_max_pool_matches_flax_with_ties(size, padding):
  # Small integers: many ties inside windows, where the gradient must go to the
  # first maximum only, as select_and_scatter does.
  x = jax.random.randint(jax.random.key(0), (2, *size, 3), -2, 3).astype(jnp.float32)
  g = jax.random.normal(jax.random.key(1), (2, *[(s + 1) // 2 if padding == 'SAME' else s // 2
                                                  for s in size], 3))

  def ref(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding=padding)

  def new(x):
    return window_max_pool(x, (2, 2), padding)

  def run(f):
    return jax.jit(lambda x: (f(x), jax.vjp(f, x)[1](g)[0]))(x)

  for a, b in zip(run(new), run(ref)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('conv_impl,pool_impl', [
    ('patches', 'xla'), ('xla', 'reshape'),
    # 'auto' is patch_grad on CPU: the CI runs it through ('auto', 'reshape').
    pytest.param('patch_grad', 'xla', marks=pytest.mark.slow), ('auto', 'reshape')])
def test_cnn_implementations_agree(conv_impl, pool_impl):
  shape = (8, 8, 1)
  ref = get_model('cnn', 10, shape, width=4, dense=16, conv_impl='xla', pool_impl='xla')
  new = get_model('cnn', 10, shape, width=4, dense=16, conv_impl=conv_impl, pool_impl=pool_impl)
  params = init_params(ref, jax.random.key(0), shape)
  assert (jax.tree.map(jnp.shape, init_params(new, jax.random.key(0), shape))
          == jax.tree.map(jnp.shape, params))
  x = jax.random.normal(jax.random.key(1), (5, *shape))
  y = jnp.arange(5) % 10

  def loss(apply_fn):
    return lambda p: jnp.mean(
        -jax.nn.log_softmax(apply_fn(p, x))[jnp.arange(5), y])

  ref_apply, new_apply = make_apply_fn(ref), make_apply_fn(new)
  np.testing.assert_allclose(jax.jit(new_apply)(params, x), jax.jit(ref_apply)(params, x), **TOL)
  g_new = jax.jit(jax.grad(loss(new_apply)))(params)
  g_ref = jax.jit(jax.grad(loss(ref_apply)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), g_new, g_ref)
  # Forward-over-reverse (the curvature methods' HVPs) goes through the custom VJPs too.
  v = jax.tree.map(lambda a: jnp.cos(a), params)
  h_new = jax.jit(lambda p: jax.jvp(jax.grad(loss(new_apply)), (p,), (v,))[1])(params)
  h_ref = jax.jit(lambda p: jax.jvp(jax.grad(loss(ref_apply)), (p,), (v,))[1])(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), h_new, h_ref)


def test_training_steps_in_a_scan_equal_the_xla_convolution():
  """The trainer's lax.scan over steps (where the patch gradients matter) gives the same
  parameters with conv_impl='auto' as with XLA's convolution."""
  import optax
  shape = (8, 8, 3)
  ref = get_model('cnn', 10, shape, width=4, dense=16, conv_impl='xla')
  new = get_model('cnn', 10, shape, width=4, dense=16)
  params = init_params(ref, jax.random.key(0), shape)
  xs = jax.random.normal(jax.random.key(1), (4, 6, *shape))
  ys = jnp.arange(24).reshape(4, 6) % 10
  tx = optax.sgd(0.1)

  def train(apply_fn):
    def step(p, b):
      g = jax.grad(lambda p: jnp.mean(-jax.nn.log_softmax(apply_fn(p, b[0]))[jnp.arange(6), b[1]]))(p)
      return optax.apply_updates(p, tx.update(g, tx.init(p), p)[0]), None
    return jax.jit(lambda p: jax.lax.scan(step, p, (xs, ys))[0])(params)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               train(make_apply_fn(new)), train(make_apply_fn(ref)))


def test_cnn_rejects_unknown_impl():
  model = get_model('cnn', 10, conv_impl='fft')
  with pytest.raises(ValueError, match='conv_impl'):
    init_params(model, jax.random.key(0), (8, 8, 1))
