"""The language-model study end to end on a tiny configuration (one draw, resumable)."""

import dataclasses
import json

import pytest

from jaxaudit.study import llm


@pytest.mark.slow
def test_one_tiny_draw_and_resume(tmp_path):
  cfg = dataclasses.replace(llm.local_config('synthetic'), num_people=30, context=48, width=16,
                            depth=1, heads=2, base_epochs=2, epochs=2, forget_groups=3,
                            methods=('lm_gradient_ascent',), num_verifiers=2)
  table = llm.run(cfg, str(tmp_path), draws=1, log=lambda s: None)
  rows = [json.loads(l) for l in open(tmp_path / 'draws.jsonl')]
  assert len(rows) == 1 and rows[0]['draw'] == 0
  res = rows[0]['results']
  assert set(res) == {'retrain', 'original', 'lm_gradient_ascent', 'fake_masking'}
  for r in res.values():
    assert r['decision'] in ('forgotten', 'not_forgotten', 'inconclusive', 'invalid_reference')
  assert res['retrain']['peers']['privleak'] == 0.0            # the retrain is the reference
  assert 'forget_quality' in res['original']['peers']
  assert '| retrain |' in table and 'knowledge test' in table
  assert llm.run(cfg, str(tmp_path), draws=1, log=lambda s: None) == table   # resumed
