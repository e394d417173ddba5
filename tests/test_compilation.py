"""jaxaudit.compilation: counting compilations, shape buckets, the persistent cache."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudit import compilation
from jaxaudit.compilation import bucket_size, count_compilations

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def test_count_compilations_counts_new_shapes_only():
  f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
  with count_compilations() as outer:
    with count_compilations() as inner:
      f(np.zeros(3, np.float32))
    f(np.ones(3, np.float32))          # same shape: cached
    f(np.zeros(5, np.float32))         # new shape: compiles
  assert inner.count == 1 and outer.count == 2
  assert outer.cache_hits == 0 and outer.compiled == 2
  assert all('lambda' in n for n in outer.names)


@pytest.mark.parametrize('bits,expect', [
    (3, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 10, 12, 12, 14, 14, 16, 16, 20]),
    (1, [0, 1, 2, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 32]),
])
def test_bucket_size_ladder(bits, expect):
  assert [bucket_size(n, bits=bits) for n in range(18)] == expect


def test_bucket_size_bounds():
  for n in range(1, 5000):
    b = bucket_size(n)
    assert n <= b <= 1.25 * n
    assert bucket_size(b) == b
    assert bucket_size(n, pow2_upto=8) == (bucket_size(n, bits=1) if n <= 8 else b)


def test_cache_disabled_by_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(compilation.NO_CACHE_ENV, '1')
  before = jax.config.jax_compilation_cache_dir
  assert compilation.enable_persistent_cache(str(tmp_path / 'xla')) is None
  assert not (tmp_path / 'xla').exists()
  assert jax.config.jax_compilation_cache_dir == before


def test_unusable_cache_directory_is_one_warning(monkeypatch, tmp_path, capsys):
  monkeypatch.delenv(compilation.NO_CACHE_ENV, raising=False)
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  before = jax.config.jax_compilation_cache_dir
  assert compilation.enable_persistent_cache(str(blocker / 'xla')) is None
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('jaxaudit: warning: no persistent compilation cache')
  assert jax.config.jax_compilation_cache_dir == before
  assert blocker.read_text() == 'not a directory'


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv(compilation.CACHE_DIR_ENV, str(tmp_path / 'a'))
  assert compilation.default_cache_dir() == str(tmp_path / 'a')
  monkeypatch.delenv(compilation.CACHE_DIR_ENV)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compilation.default_cache_dir() == str(tmp_path / 'xdg' / 'jaxaudit' / 'xla')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compilation.default_cache_dir() == str(tmp_path / 'home' / '.cache' / 'jaxaudit' / 'xla')


_CHILD = '''
import jax, jax.numpy as jnp, numpy as np, sys
from jaxaudit import compilation
path = compilation.enable_persistent_cache()
assert compilation.enable_persistent_cache() == path   # idempotent
f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 2.0)
with compilation.count_compilations() as c:
  f(np.ones((4, 4), np.float32)).block_until_ready()
print(path, c.count, c.cache_hits)
'''


def test_persistent_cache_across_processes(tmp_path):
  """A second process loads the program the first compiled (a separate process:
  the cache is process-wide configuration)."""
  env = {k: v for k, v in os.environ.items() if k != compilation.NO_CACHE_ENV}
  env.update({compilation.CACHE_DIR_ENV: str(tmp_path / 'xla'), 'JAX_PLATFORMS': 'cpu',
              'PYTHONPATH': REPO + os.pathsep + env.get('PYTHONPATH', '')})
  runs = []
  for _ in range(2):
    proc = subprocess.run([sys.executable, '-c', _CHILD], env=env, capture_output=True,
                          text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    runs.append(proc.stdout.split())
  (path1, count1, hits1), (path2, count2, hits2) = runs
  assert path1 == path2 == str(tmp_path / 'xla') and os.listdir(path1)
  assert (int(count1), int(hits1)) == (1, 0)
  assert (int(count2), int(hits2)) == (1, 1)


def test_predict_logits_buckets_sizes(digits):
  """Nearby N share one program; logits equal a direct apply, padding sliced off."""
  from jaxaudit.models import get_model, init_params, make_apply_fn
  from jaxaudit.train import predict_logits
  from jaxaudit.train.evaluate import padded_layout
  model = get_model('mlp', 10, digits.input_shape, hidden=(8,))
  params = init_params(model, jax.random.key(0), digits.input_shape)
  apply_fn = jax.jit(make_apply_fn(model))
  assert padded_layout(40, 512) == (1, 64) and padded_layout(600, 512) == (2, 512)
  assert padded_layout(5 * 512 + 1, 512) == (8, 512) and padded_layout(9 * 512, 512) == (10, 512)
  sizes = (34, 40, 50, 64)
  expect = [np.asarray(apply_fn(params, digits.x_train[:n])) for n in sizes]
  predict_logits(model, params, digits.x_train[:33])
  with count_compilations() as c:
    outs = [predict_logits(model, params, digits.x_train[:n]) for n in sizes]
    predict_logits(model, params, digits.x_train[:10], min_records=60)   # a cap: same program
  assert c.count == 0, c.names
  for out, ref in zip(outs, expect):
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_signals_one_program_for_every_size():
  """Chunked signals: one program whatever n; values as one unchunked call's."""
  from jaxaudit.tasks import classification
  rng = np.random.default_rng(0)
  cases = []
  for n in (1, 7, 256, 257, 700):
    tl = rng.normal(size=(2, n, 5)).astype(np.float32)
    vl = rng.normal(size=(2, 3, n, 5)).astype(np.float32)
    y = rng.integers(0, 5, n)
    cases.append((tl, vl, y, [np.asarray(o) for o in classification._signals(tl, vl, y)]))
  classification.compute_signals(*cases[0][:3])
  with count_compilations() as c:
    results = [classification.compute_signals(tl, vl, y) for tl, vl, y, _ in cases]
  assert c.count == 0, c.names
  for sig, (_, _, _, ref) in zip(results, cases):
    assert len(sig) == len(ref)
    for a, b in zip(sig, ref):
      assert a.shape == b.shape
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
