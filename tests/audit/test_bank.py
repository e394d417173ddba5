"""The verifier bank: groups, members, storage, per-record assignment, and audits with it."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from jaxaudit.audit import AuditSettings, Target, audit
from jaxaudit.audit import bank as bank_lib
from jaxaudit.data import make_split
from jaxaudit.errors import AuditError, CheckpointError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, predict_logits, train_model

SETTINGS = AuditSettings(num_verifiers=3, ref_sample=300, member_sample=200, test_sample=200)
RECIPE = Recipe(epochs=4, batch_size=64, learning_rate=2e-3)


@pytest.fixture(scope='module')
def setup(digits):
  split = make_split(digits, seed=3, ref_fraction=0.3, forget_fraction=0.2)
  model = get_model('mlp', digits.num_classes, hidden=(32,))
  groups = bank_lib.synthetic_users(len(digits.x_train), split.train, max_records=6, seed=1)
  bank = bank_lib.build_bank(model, digits, split.train, RECIPE, size=12, groups=groups,
                             member_sample=100, seed=2)
  return split, model, groups, bank


def test_synthetic_users_cover_d_with_sizes_in_range(digits):
  split = make_split(digits, seed=0, ref_fraction=0.3, forget_fraction=0.2)
  g = bank_lib.synthetic_users(len(digits.x_train), split.train, min_records=2, max_records=5,
                               seed=4)
  assert np.all(g[split.train] >= 0) and np.all(np.delete(g, split.train) == -1)
  sizes = np.bincount(g[split.train])
  assert sizes[:-1].min() >= 2 and sizes.max() <= 5          # the last user takes the rest
  again = bank_lib.synthetic_users(len(digits.x_train), split.train, min_records=2,
                                   max_records=5, seed=4)
  np.testing.assert_array_equal(g, again)
  with pytest.raises(AuditError, match='min_records'):
    bank_lib.synthetic_users(10, np.arange(5), min_records=3, max_records=2)


def test_members_train_on_groups_and_never_on_the_member_reference(setup):
  split, _, groups, bank = setup
  g = len(bank.group_ids)
  assert bank.size == 12 and bank.in_groups.shape == (12, g)
  np.testing.assert_array_equal(bank.in_groups.sum(1), round(0.15 * g))
  assert not bank.in_groups[:, bank.member_groups].any()
  mem = bank.member_records()
  assert len(mem) >= 100 and np.all(np.isin(mem, split.train))
  # Member reference records are whole groups.
  assert set(groups[mem]) == set(bank.group_ids[bank.member_groups])
  # out_mask follows the groups: two records of one user share their mask.
  u = groups[split.train[0]]
  pair = np.flatnonzero(groups == u)
  m = bank.out_mask(pair)
  assert np.all(m == m[:, :1])
  # usable = OUT for every group of the request.
  req = split.train[:20]
  np.testing.assert_array_equal(bank.usable(req), bank.out_mask(req).all(1))


def test_assignment_is_out_per_record_and_deterministic(setup):
  split, _, _, bank = setup
  recs = split.train[:50]
  chosen = bank_lib.assign(bank, recs, 3, seed=0)
  assert chosen.shape == (3, 50)
  out = bank.out_mask(recs)
  assert all(out[chosen[k, i], i] for k in range(3) for i in range(50))
  assert all(len(set(chosen[:, i])) == 3 for i in range(50))
  np.testing.assert_array_equal(chosen, bank_lib.assign(bank, recs, 3, seed=0))
  # A record gets the same members whatever request it comes with.
  np.testing.assert_array_equal(chosen[:, 10:20], bank_lib.assign(bank, recs[10:20], 3, seed=0))
  pseudo = bank_lib.assign(bank, split.ref[:30], 3, seed=0, pseudo=True)
  assert pseudo.shape == (3, 30) and pseudo.max() < bank.size
  with pytest.raises(AuditError, match='not in D'):
    bank_lib.assign(bank, split.ref[:3], 3, seed=0)
  with pytest.raises(AuditError, match='grow the bank'):
    bank_lib.assign(bank, recs, bank.size, seed=0)


def test_assigned_logits_equal_the_full_ensemble_gathered(digits, setup):
  split, model, _, bank = setup
  recs = split.train[:37]
  x = np.stack([digits.x_train[recs], digits.x_train[recs] + 0.1])       # 2 views
  chosen = bank_lib.assign(bank, recs, 3, seed=5)
  got = bank_lib.assigned_logits(model, bank, x, chosen)
  full = np.stack([predict_logits(model, bank.params, v, ensemble=True) for v in x])  # (A,B,n,C)
  want = full[:, chosen, np.arange(len(recs))[None, :]]
  assert got.shape == (2, 3, 37, digits.num_classes)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bank_is_saved_loaded_and_grown_by_chunks(digits, setup, tmp_path):
  split, model, groups, _ = setup
  path = str(tmp_path / 'bank')
  kw = dict(groups=groups, member_sample=100, seed=2)
  b1 = bank_lib.build_bank(model, digits, split.train, RECIPE, size=4, path=path, **kw)
  assert b1.trained == 4 and os.path.isfile(os.path.join(path, bank_lib.BANK_FILE))
  b2 = bank_lib.build_bank(model, digits, split.train, RECIPE, size=4, path=path, **kw)
  assert b2.trained == 0 and b2.size == 4
  for a, b in zip(jax.tree.leaves(b1.params), jax.tree.leaves(b2.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  b3 = bank_lib.build_bank(model, digits, split.train, RECIPE, size=6, path=path, **kw)
  assert b3.trained == 2 and b3.size == 6
  assert os.path.isdir(os.path.join(path, 'chunk-0001'))
  np.testing.assert_array_equal(b3.in_groups[:4], b1.in_groups)
  # Another seed is another bank: refused, never overwritten.
  with pytest.raises(CheckpointError, match='other data'):
    bank_lib.build_bank(model, digits, split.train, RECIPE, size=4, path=path, groups=groups,
                        member_sample=100, seed=3)
  # A tampered chunk is caught by its checksums.
  with open(os.path.join(path, 'chunk-0001', 'layout.npz'), 'ab') as f:
    f.write(b'x')
  with pytest.raises(CheckpointError):
    bank_lib.build_bank(model, digits, split.train, RECIPE, size=4, path=path, **kw)


def test_bank_refuses_a_directory_it_did_not_write(digits, setup, tmp_path):
  split, model, groups, _ = setup
  user = tmp_path / 'mine'
  user.mkdir()
  (user / 'notes.txt').write_text('keep me')
  with pytest.raises(AuditError, match='not a verifier bank'):
    bank_lib.build_bank(model, digits, split.train, RECIPE, size=4, path=str(user), groups=groups)
  assert (user / 'notes.txt').read_text() == 'keep me'


def test_audit_with_the_bank_matches_fresh_verifiers(digits, setup):
  split, model, _, bank = setup
  forget = split.train[np.isin(split.train, split.forget)]
  mu = train_model(model, digits.x_train, digits.y_train, split.retain, 7, RECIPE).params
  orig = train_model(model, digits.x_train, digits.y_train, split.train, 8, RECIPE).params
  cache = {}
  for name, params in (('retrain', mu), ('original', orig)):
    tgt = Target.from_params(model, params, name=name)
    with_bank = audit(tgt, digits, split, verifier_model=model, recipe=RECIPE, settings=SETTINGS,
                      bank=bank, bank_cache=cache)
    assert with_bank.details['verifiers']['source'] == 'bank'
    assert with_bank.details['cost']['models_trained'] == 0
    fresh = audit(tgt, digits, split, verifier_model=model, recipe=RECIPE, settings=SETTINGS)
    assert fresh.details['verifiers']['source'] == 'trained'
    assert with_bank.decision == fresh.decision, (name, with_bank.summary(), fresh.summary())
  assert len(forget) == len(split.forget)
  # The bank's outputs on D_ref were cached and reused by the second audit.
  assert cache and all(v[1].shape[1] == SETTINGS.num_verifiers for v in cache.values())


def test_bank_over_another_d_is_refused_and_whole_classes_train_fresh(digits, setup):
  split, model, _, bank = setup
  other = make_split(digits, seed=9, ref_fraction=0.3, forget_fraction=0.2)
  tgt = Target.from_fn(lambda x: np.zeros((len(x), 10), np.float32), name='zeros')
  with pytest.raises(AuditError, match='another training set'):
    audit(tgt, digits, other, verifier_model=model, recipe=RECIPE, settings=SETTINGS, bank=bank)
  # A request that removes a whole class (same D) needs verifiers that never saw the class.
  y = digits.y_train
  forget = split.train[y[split.train] == 4]
  cls = dataclasses.replace(split, forget=forget, retain=np.setdiff1d(split.train, forget),
                            forget_mode='classes', forget_classes=(4,))
  logs = []
  res = audit(tgt, digits, cls, verifier_model=model, recipe=RECIPE, settings=SETTINGS,
              bank=bank, log=logs.append)
  assert any('whole classes' in line for line in logs)
  assert res.details['verifiers']['source'] == 'trained'


def test_fresh_verifiers_share_a_given_member_reference(digits, setup):
  from jaxaudit.audit import runner
  from jaxaudit.audit.verifiers import cache_key, plan_subsets
  split, model, _, bank = setup
  given = np.setdiff1d(bank.member_records(), split.forget)
  subsets, members = plan_subsets(split, num_verifiers=3, ratio=0.15, member_sample=50, seed=4,
                                  members=given[::-1])
  np.testing.assert_array_equal(members, given)               # the given records, sorted
  assert not np.isin(subsets, given).any() and np.isin(subsets, split.retain).all()
  with pytest.raises(AuditError, match='outside Dr'):
    plan_subsets(split, num_verifiers=3, ratio=0.15, member_sample=50, seed=4,
                 members=split.forget[:3])
  key = lambda **kw: cache_key(digits, split, model, RECIPE, num_verifiers=3, ratio=0.15,
                               member_sample=50, seed=4, **kw)
  assert key() != key(members=given) == key(members=given[::-1])
  # A whole-class request that the bank cannot serve trains fresh verifiers around the
  # bank's member reference; a bank audit refuses a member reference of its own.
  y = digits.y_train
  forget = split.train[y[split.train] == 4]
  cls = dataclasses.replace(split, forget=forget, retain=np.setdiff1d(split.train, forget),
                            forget_mode='classes', forget_classes=(4,))
  tgt = Target.from_fn(lambda x: np.zeros((len(x), 10), np.float32), name='zeros')
  p = runner.plan(tgt, digits, cls, recipe=RECIPE, settings=SETTINGS)
  v = runner.train_verifiers(p, model, SETTINGS, bank=bank)
  np.testing.assert_array_equal(v.candidates[0].members,
                                np.setdiff1d(bank.member_records(), forget))
  p = runner.plan(tgt, digits, split, recipe=RECIPE, settings=SETTINGS)
  with pytest.raises(AuditError, match='member groups'):
    runner.train_verifiers(p, model, SETTINGS, bank=bank, member_reference=given)
