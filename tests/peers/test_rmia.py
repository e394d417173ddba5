"""Tests for RMIA's score table (jaxaudit.peers.rmia.rmia_scores).

``reference_rmia`` follows the published rule of ml_privacy_meter's
``run_rmia`` (offline: P(x) = ((1 + a) / 2) P_OUT(x) + (1 − a) / 2; score = the
fraction of population z with LR(x, z) > 1); ``naive_rmia`` is the loop with a
general γ and both tie rules.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from jaxaudit import peers
from jaxaudit.errors import AuditError

rmia_lib = importlib.import_module('jaxaudit.peers.rmia')


def reference_rmia(tx, rx, tz, rz, a):
  mean_x = (1 + a) / 2 * rx.mean(0) + (1 - a) / 2
  mean_z = (1 + a) / 2 * rz.mean(0) + (1 - a) / 2
  ratios = (tx / mean_x)[:, None] / (tz / mean_z)
  return np.average(ratios > 1.0, axis=1)


def naive_rmia(tx, rx, tz, rz, *, a, gamma, offline, inclusive):
  def marginal(col):
    m = sum(col) / len(col)
    return 0.5 * ((1 + a) * m + (1 - a)) if offline else m

  out = np.zeros(len(tx))
  for i in range(len(tx)):
    count = 0
    for j in range(len(tz)):
      lr = (tx[i] / marginal(rx[:, i])) / (tz[j] / marginal(rz[:, j]))
      count += (lr >= gamma) if inclusive else (lr > gamma)
    out[i] = count / len(tz)
  return out


def _tied_inputs():
  """Population z includes copies of the scored records: LR = 1 exactly for those pairs."""
  rng = np.random.default_rng(4)
  r, n = 2, 9
  tx = rng.choice([0.25, 0.5, 0.75], n)
  rx = rng.choice([0.25, 0.5], (r, n))
  tz = np.concatenate([tx[:5], rng.choice([0.25, 0.5, 1.0], 6)])
  rz = np.concatenate([rx[:, :5], rng.choice([0.25, 0.5], (r, 6))], axis=1)
  return tx, rx, tz, rz


def test_default_matches_reference_including_ties():
  tx, rx, tz, rz = _tied_inputs()
  got = peers.rmia_scores(tx, rx, tz, rz, a=0.3)
  np.testing.assert_array_equal(got, reference_rmia(tx, rx, tz, rz, 0.3))
  legacy = peers.rmia_scores(tx, rx, tz, rz, a=0.3, **rmia_lib.LEGACY_OPTIONS)
  assert np.all(legacy >= got) and np.any(legacy > got)   # ties counted only there


def test_default_matches_reference_continuous():
  rng = np.random.default_rng(2)
  tx, tz = rng.uniform(0.01, 1, 11), rng.uniform(0.01, 1, 17)
  rx, rz = rng.uniform(0.01, 1, (3, 11)), rng.uniform(0.01, 1, (3, 17))
  np.testing.assert_array_equal(peers.rmia_scores(tx, rx, tz, rz, a=0.3),
                                reference_rmia(tx, rx, tz, rz, 0.3))


@pytest.mark.parametrize('tie', ['strict', 'inclusive'])
@pytest.mark.parametrize('offline,gamma', [(True, 1.0), (True, 2.0), (False, 1.0),
                                           (False, 0.5)])
def test_scores_match_naive(offline, gamma, tie):
  tx, rx, tz, rz = _tied_inputs()
  got = peers.rmia_scores(tx, rx, tz, rz, a=0.3, gamma=gamma, offline=offline, tie=tie)
  want = naive_rmia(tx, rx, tz, rz, a=0.3, gamma=gamma, offline=offline,
                    inclusive=tie == 'inclusive')
  np.testing.assert_array_equal(got, want)
  assert np.all((got >= 0) & (got <= 1))


def test_errors():
  with pytest.raises(AuditError, match='reference models'):
    peers.rmia_scores(np.ones(3) / 2, np.ones((2, 3)) / 2, np.ones(4) / 2, np.ones((3, 4)) / 2)
  with pytest.raises(AuditError, match='probabilities'):
    peers.rmia_scores(np.ones(3) * 2, np.ones((2, 3)) / 2, np.ones(4) / 2, np.ones((2, 4)) / 2)
  with pytest.raises(AuditError, match='tie must be one of'):
    peers.rmia_scores(np.ones(3) / 2, np.ones((2, 3)) / 2, np.ones(4) / 2,
                      np.ones((2, 4)) / 2, tie='>=')
