"""A second task defined here — regression with squared error — audited end to end.

The audit's runner, decision and statistics see only per-record signal arrays,
so a task written in a test file (no class, no logits, no image views) runs a
full audit: its verifiers train with its loss, its outputs are checked by it,
and the decision separates a model that memorised Du from one retrained
without it.
"""

import dataclasses
import hashlib

import numpy as np
import pytest

from jaxaudit.audit import AuditSettings, Target, audit
from jaxaudit.audit.decision import DECISIONS
from jaxaudit.data import AuditSplit, Dataset
from jaxaudit.errors import AuditError
from jaxaudit.models import MLP
from jaxaudit.tasks import Signals, Task
from jaxaudit.train import Recipe, train_model


@dataclasses.dataclass(frozen=True)
class SquaredError:
  """Per-example training loss: outputs (B, 1), targets (B,) float -> (B,)."""

  def __call__(self, outputs, targets):
    return (outputs[..., 0] - targets) ** 2


class Regression(Task):
  """Scalar regression: φ = −(prediction − target)², 'correct' within a tolerance."""

  name = 'regression'
  tol = 0.5

  def check_outputs(self, outputs, name, *, allow_nonfinite=False):
    out = np.asarray(outputs, np.float32)
    if out.ndim < 2 or out.shape[-1] != 1:
      raise AuditError(f'{name} must have shape (..., 1), got {out.shape}')
    if not allow_nonfinite and not np.all(np.isfinite(out)):
      raise AuditError(f'{name} hold NaN or inf values')
    return out

  def signals(self, target_outputs, verifier_outputs, targets):
    t = np.asarray(target_outputs, np.float64)[..., 0]             # (A, n)
    v = np.asarray(verifier_outputs, np.float64)[..., 0]           # (A, K, n)
    y = np.asarray(targets, np.float64)
    phi_t, phi_v = -(t - y) ** 2, -(v - y) ** 2
    return Signals(phi_target=phi_t, phi_verifiers=phi_v, calibrated=phi_t - phi_v.mean(1),
                   loss_target=(t - y) ** 2, agreement=np.exp(-np.abs(t[:, None] - v)),
                   kl=(t[:, None] - v) ** 2,
                   correct_target=(np.abs(t[0] - y) < self.tol).astype(np.float64),
                   correct_verifiers=(np.abs(v[0] - y) < self.tol).astype(np.float64))

  def utility(self, outputs, targets):
    return np.mean(np.abs(np.asarray(outputs)[..., 0] - np.asarray(targets)) < self.tol, axis=-1)

  def loss(self):
    return SquaredError()


def _regression_request(n=1400, d=6, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=d)
  def draw(m):
    x = rng.normal(size=(m, d)).astype(np.float32)
    return x, (x @ w / np.sqrt(d) + 0.8 * rng.normal(size=m)).astype(np.float32)
  x, y = draw(n)
  xt, yt = draw(300)
  fp = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
  ds = Dataset(name='toy_regression', x_train=x, y_train=y, x_test=xt, y_test=yt, num_classes=1,
               input_shape=(d,), source='test', fingerprint=fp)
  perm = rng.permutation(n)
  train, ref = np.sort(perm[:900]), np.sort(perm[900:])
  forget = np.sort(rng.choice(train, 200, replace=False))
  split = AuditSplit(train=train, forget=forget, retain=np.setdiff1d(train, forget), ref=ref,
                     test=np.arange(300), seed=seed, forget_mode='random', forget_classes=(),
                     dataset_fingerprint=fp)
  return ds, split


@pytest.mark.parametrize('which,expect', [('original', 'not_forgotten'),
                                          ('retrain', 'not not_forgotten')])
def test_a_full_audit_through_a_regression_task(which, expect, tmp_path):
  ds, split = _regression_request()
  model = MLP(num_classes=1, hidden=(256, 256))
  recipe = Recipe(epochs=150, batch_size=64, learning_rate=3e-3)
  subset = split.train if which == 'original' else split.retain
  task = Regression()
  mu = train_model(model, ds.x_train, ds.y_train, subset, 0, recipe, loss=task.loss()).params
  settings = AuditSettings(num_verifiers=4, ref_sample=500, member_sample=300, test_sample=300)
  result = audit(Target.from_params(model, mu, name=which), ds, split, verifier_model=model,
                 recipe=recipe, settings=settings, task=task, cache_dir=str(tmp_path))
  assert result.decision in DECISIONS and 0 <= result.p_value <= 1
  assert result.details['settings']['views'] == ['identity']       # the task has no neighbours
  assert result.details['reference_check']['ok']                  # Du and D_ref exchangeable
  assert 'input_roughness' not in result.details['reference_check']['statistics']
  assert not result.details['class_matched']['ref']                # no strata: uniform sample
  if expect == 'not_forgotten':
    assert (result.decision, result.direction) == ('not_forgotten', 'remembers'), result.summary()
  else:
    assert result.decision != 'not_forgotten', result.summary()
