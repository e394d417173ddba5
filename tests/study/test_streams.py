"""The bank / stream validation study on digits (tiny sizes): rows, arrays and the summary."""


import numpy as np
import pytest

from jaxaudit.audit import AuditSettings
from jaxaudit.audit.stream import StreamSettings
from jaxaudit.models import get_model
from jaxaudit.study import streams
from jaxaudit.train import Recipe


@pytest.mark.slow   # study plumbing (~33 s); the bank and stream are tested in tests/audit
def test_bank_and_stream_draws_summarise(digits, tmp_path):
  net = get_model('mlp', 10, digits.input_shape, hidden=(32,))
  recipe = Recipe(epochs=4, batch_size=64, learning_rate=2e-3)
  split_kw = dict(ref_fraction=0.3, forget_fraction=0.1)
  settings = AuditSettings(num_verifiers=3, ref_sample=300, member_sample=150, test_sample=200)
  b = streams.bank_draw(0, digits, net, recipe, split_kw, settings, bank_size=10,
                        fresh_twice=True)
  assert set(b['results']) == {'retrain', 'original'}
  for t in b['results'].values():
    assert set(t) == {'bank', 'fresh', 'fresh2'} and all(v['wall_s'] > 0 for v in t.values())
    # Same member reference; the second verifier set is another one.
    assert t['fresh']['member_auc'] != t['fresh2']['member_auc']
  s = streams.stream_draw(0, digits, net, recipe, split_kw,
                          StreamSettings(ref_sample=300, member_sample=150, bucket=8),
                          bank_size=10, retrains=2, per_retrain=4, max_records=6,
                          save_dir=str(tmp_path))
  assert len(s['requests']) == 8
  arr = np.load(s['arrays'])
  n = sum(q['n_records'] for q in s['requests'])
  assert all(arr[k].shape == (n,) for k in arr.files)
  assert np.all((arr['p_h0'] > 0) & (arr['p_h0'] <= 1))
  text = streams.summarise([b, s])
  assert 'Bank vs fresh' in text and 'Stream verdicts' in text and 'LiRA offline' in text
  assert '| fresh vs fresh |' in text


@pytest.mark.slow   # study plumbing (~31 s)
def test_curve_draw_covers_every_setting(digits, monkeypatch):
  monkeypatch.setattr(streams, 'CURVE_REF', (150, 300))
  net = get_model('mlp', 10, digits.input_shape, hidden=(32,))
  recipe = Recipe(epochs=4, batch_size=64, learning_rate=2e-3)
  row = streams.curve_draw(0, digits, net, recipe, dict(ref_fraction=0.3, forget_fraction=0.1),
                           bank_size=10)
  assert set(row['results']) == {f'{n}/{v}' for n in (150, 300) for v in streams.CURVE_VIEWS}
  for cell in row['results'].values():
    assert set(cell) == {'retrain', 'original', 'fake_temperature', 'fake_masking'}
  assert 'Cost / power curve' in streams.summarise_curve([row])
