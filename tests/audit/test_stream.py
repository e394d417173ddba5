"""Stream audits: one verdict per request against a verifier bank, in batched programs."""

import numpy as np
import pytest

from jaxaudit.audit import Target
from jaxaudit.audit import bank as bank_lib
from jaxaudit.audit import records as records_lib
from jaxaudit.audit import stream as stream_lib
from jaxaudit.audit.stream import StreamAuditor, StreamSettings, requests_from_groups
from jaxaudit.compilation import count_compilations
from jaxaudit.data import make_split
from jaxaudit.errors import AuditError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, train_model

RECIPE = Recipe(epochs=6, batch_size=64, learning_rate=2e-3)


@pytest.fixture(scope='module')
def stream(digits):
  split = make_split(digits, seed=5, ref_fraction=0.3, forget_fraction=0.2)
  model = get_model('mlp', digits.num_classes, hidden=(64,))
  groups = bank_lib.synthetic_users(len(digits.x_train), split.train, max_records=8, seed=0)
  bank = bank_lib.build_bank(model, digits, split.train, RECIPE, size=16, groups=groups,
                             member_sample=150, seed=1)
  orig = train_model(model, digits.x_train, digits.y_train, split.train, 3, RECIPE).params
  settings = StreamSettings(ref_sample=300, member_sample=150, bucket=8)
  auditor = StreamAuditor(Target.from_params(model, orig, name='original'), digits, split, bank,
                          model, settings)
  return split, model, groups, bank, auditor


def _requests(groups, split, bank, ids):
  return requests_from_groups(bank, groups, [(f'u{u}', [u]) for u in ids])


def test_results_have_one_verdict_per_request(stream):
  split, _, groups, bank, auditor = stream
  users = np.unique(groups[split.train])[:6]
  res = auditor.audit(_requests(groups, split, bank, users))
  assert [r['id'] for r in res] == [f'u{u}' for u in users]
  for r, u in zip(res, users):
    recs = np.flatnonzero(groups == u)
    assert r['records'] == recs.tolist() and r['n_records'] == len(recs)
    assert r['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
    assert 0 < r['p_value'] <= 1 and len(r['record_p']) == len(recs)
    assert abs(r['p_value'] - records_lib.simes(r['record_p'])) < 1e-5
    assert set(r['flagged']) <= set(r['records'])
    assert r['power'] == auditor.power(len(recs)) and r['min_out'] >= 1
    assert (r['decision'] == 'not_forgotten') == (r['p_value'] <= 0.05)


def test_a_batch_equals_its_requests_one_by_one_and_is_deterministic(stream):
  split, _, groups, bank, auditor = stream
  users = np.unique(groups[split.train])[10:15]
  reqs = _requests(groups, split, bank, users)
  together = auditor.audit(reqs)
  alone = [auditor.audit([r])[0] for r in reqs]
  for a, b in zip(together, alone):
    assert a['decision'] == b['decision'] and a['flagged'] == b['flagged']
    np.testing.assert_allclose(a['record_p'], b['record_p'], rtol=1e-6)
  assert auditor.audit(reqs) == together


def test_ten_batches_recompile_nothing(stream):
  """Batches are padded to power-of-two buckets: once a bucket has run, it never compiles."""
  split, _, groups, bank, auditor = stream
  users = np.unique(groups[split.train])
  rng = np.random.default_rng(0)
  size = lambda reqs: stream_lib._bucket(len(np.unique(np.concatenate([r for _, r in reqs]))),
                                         auditor.settings.bucket)
  seen = set()
  for _ in range(12):                                               # warm-up of the buckets
    reqs = _requests(groups, split, bank, rng.choice(users, 4, replace=False))
    auditor.audit(reqs)
    seen.add(size(reqs))
  batches = []
  while len(batches) < 10:
    reqs = _requests(groups, split, bank, rng.choice(users, 4, replace=False))
    if size(reqs) in seen:
      batches.append(reqs)
  with count_compilations() as c:
    for reqs in batches:
      auditor.audit(reqs)
  assert c.count == 0, c.names


def test_bad_requests_get_one_clear_error(stream):
  split, _, groups, bank, auditor = stream
  with pytest.raises(AuditError, match='outside D'):
    auditor.audit([('x', split.ref[:2])])
  with pytest.raises(AuditError, match='no records'):
    auditor.audit([('x', [])])
  with pytest.raises(AuditError, match='no record in D'):
    requests_from_groups(bank, groups, [('x', [10**6])])


def test_power_table_is_the_members_resampling(stream):
  *_, auditor = stream
  t = auditor.power_table
  assert len(t) == auditor.settings.bucket and np.all((t >= 0) & (t <= 1))
  want = records_lib.power_by_size(auditor.null.member_p, np.arange(1, len(t) + 1), 0.05)
  np.testing.assert_allclose(t, want)
  assert auditor.power(10**6) == t[-1]
