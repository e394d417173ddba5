"""The per-record test: statistic, p-values, calibration under H0, power, Simes."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxaudit.audit import batched, records, stats


def _numpy_statistic(phi_t, phi_b, out, alpha, beta, tau, standardize):
  a, _, n = phi_b.shape
  t = np.zeros((a, n))
  for v in range(a):
    for i in range(n):
      o = phi_b[v, out[:, i], i]
      mu, sd = o.mean(), (o.std(ddof=1) if len(o) > 1 else 0.0)
      r = phi_t[v, i] - alpha[v] - beta[v] * mu
      t[v, i] = r / np.sqrt((beta[v] * sd) ** 2 + tau[v] ** 2) if standardize else r
  return t.mean(0)


@pytest.mark.parametrize('standardize', [False, True])
def test_statistic_equals_a_numpy_loop(standardize):
  rng = np.random.default_rng(0)
  a, b, n = 3, 16, 40
  phi_b = rng.normal(size=(a, b, n)).astype(np.float32)
  phi_t = rng.normal(size=(a, n)).astype(np.float32)
  out = rng.random((b, n)) < 0.85
  out[:2] = True                                      # at least 2 OUT members per record
  al, be, ta = (rng.normal(size=a).astype(np.float32), rng.uniform(0.5, 1.5, a).astype(np.float32),
                np.full(a, 0.1, np.float32))
  got = records.record_statistic(phi_t, phi_b, out, al, be, ta, standardize=standardize)
  want = _numpy_statistic(phi_t, phi_b, out, al, be, ta, standardize)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(20, 300))
def test_p_values_are_the_empirical_ones_above_the_tail(seed, n_ref):
  rng = np.random.default_rng(seed)
  null = np.sort(np.round(rng.normal(size=n_ref), 1)).astype(np.float32)   # ties
  t = np.round(rng.normal(size=50), 1).astype(np.float32)
  p = np.asarray(records.p_values(jnp.asarray(t), jnp.asarray(null), float(null.mean()),
                                  float(null.std(ddof=1))))
  emp = stats.empirical_p_values(t, null, 'greater')
  anchor = null[n_ref - records.TAIL_COUNT]
  body = t <= anchor
  np.testing.assert_allclose(p[body], emp[body], rtol=1e-6)
  assert np.all(p[~body] <= records.TAIL_COUNT / (n_ref + 1) + 1e-7)
  assert np.all((p > 0) & (p <= 1))
  # Monotone: a larger statistic never has a larger p-value.
  order = np.argsort(t, kind='stable')
  assert np.all(np.diff(p[order]) <= 1e-7)


def _h0_sets(rng, n, b=32, a=2, remembered=0.0):
  """Synthetic φ where Mu's score on a record depends on its difficulty like the members'."""
  d = rng.normal(size=(a, 1, n))                       # difficulty
  phi_b = d + 0.5 * rng.normal(size=(a, b, n))
  phi_t = 0.3 + 1.2 * d[:, 0] + 0.4 * rng.normal(size=(a, n)) + remembered
  out = rng.random((b, n)) < 0.85
  return phi_t.astype(np.float32), phi_b.astype(np.float32), out


def test_p_values_are_uniform_under_h0_and_small_for_remembered_records():
  rng = np.random.default_rng(1)
  ref = _h0_sets(rng, 3000)
  mem = _h0_sets(rng, 500, remembered=1.0)
  null = records.fit_null(*ref, *mem)
  test = _h0_sets(rng, 2500)
  t = records.record_statistic(*test, null.alpha, null.beta, null.tau)
  p = np.asarray(records.p_values(t, jnp.asarray(null.null_sorted, jnp.float32), null.null_mean,
                                  null.null_std))
  assert records.ks_uniform(p) > 0.01
  assert abs(np.mean(p <= 0.05) - 0.05) < 0.02
  assert np.mean(null.member_p <= 0.05) > 0.5         # remembered records are found
  power = records.power_by_size(null.member_p, np.array([1, 5, 20]), 0.05)
  assert power[0] < power[1] <= power[2] + 1e-9 and power[2] > 0.9
  assert np.isnan(records.power_by_size(np.zeros(0), np.array([3]), 0.05)).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_simes_numpy_equals_batched(p):
  p = np.asarray(p, np.float64)
  pad = np.concatenate([p, np.ones(32 - len(p))])
  mask = np.arange(32) < len(p)
  got = float(batched.simes(jnp.asarray(pad, jnp.float32), jnp.asarray(mask)))
  assert abs(got - records.simes(p)) < 1e-6
  # Simes rejects at alpha exactly when BH flags something at alpha.
  assert (records.simes(p) <= 0.05) == bool(stats.benjamini_hochberg(p, 0.05).any())


def test_fit_null_refuses_a_tiny_reference():
  rng = np.random.default_rng(2)
  ref = _h0_sets(rng, 10)
  with pytest.raises(Exception, match='at least'):
    records.fit_null(*ref, *_h0_sets(rng, 0))


def test_host_and_device_p_values_agree():
  rng = np.random.default_rng(3)
  null = rng.normal(size=400)
  t = np.concatenate([rng.normal(size=100), [3.0, 4.0, 6.0]])
  host = records.tail_p_values(t, null)
  ns = np.sort(null)
  dev = np.asarray(records.p_values(jnp.asarray(t, jnp.float32), jnp.asarray(ns, jnp.float32),
                                    float(ns.mean()), float(ns.std(ddof=1))))
  np.testing.assert_allclose(host, dev, rtol=1e-4)
  assert host[-1] < 1 / 401 and np.all(np.diff(host[-3:]) < 0)   # below the empirical floor
