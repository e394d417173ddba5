"""The study sweep (jaxaudit.study.sweep): rows, resumability, failures, SISA cells."""

import json
import os

import pytest

from jaxaudit import io_utils
from jaxaudit.study import sweep
from experiments.configs import sweep_local


def tiny_config():
  c = sweep_local.get_config('tiny')
  c.peers.lira_shadows = 4
  c.peers.rmia_refs = 1
  return c


# ----------------------------------------------------------------------------- end to end


def _run(workdir, max_cells=None):
  return sweep.run_sweep(tiny_config(), str(workdir), max_cells=max_cells, log=lambda s: None)


@pytest.mark.slow
def test_tiny_sweep_resumes_to_the_same_table(tmp_path):
  full = _run(tmp_path / 'a')
  assert [r['method'] for r in full] == ['retrain', 'gradient_ascent']
  for r in full:
    assert r['error'] is None, r['error']
    assert r['ours']['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
    assert set(r['peers']) == {'population_mia', 'lira', 'rmia', 'heuristics'}
    assert r['accuracy']['unlearned'] and r['accuracy']['retrain']
    assert r['cost']['retrain']['wall_ratio'] == 1.0 and r['cost']['ours']['models'] == 2
  # Interrupted after one cell, then a crash while writing, then a restart.
  part = _run(tmp_path / 'b', max_cells=1)
  assert len(part) == 1
  res = tmp_path / 'b' / 'results.jsonl'
  with open(res, 'a') as f:
    f.write('{"key": "digits_mlp/random30/s0/gradient_ascent", "trunc')
  resumed = _run(tmp_path / 'b')
  assert len(resumed) == 2
  on_disk = io_utils.read_jsonl(str(res))
  assert [sweep.stable_row(r) for r in on_disk] == [
      sweep.stable_row(json.loads(json.dumps(io_utils.jsonable(r)))) for r in full]
  # A further restart has nothing to do.
  assert len(_run(tmp_path / 'b')) == 2 and len(io_utils.read_jsonl(str(res))) == 2


def test_one_cell_end_to_end(tmp_path):
  """Fast real subset: one cell (1-epoch models), our audit + the cheap peers, one row."""
  c = tiny_config()
  c.methods = 'gradient_ascent'
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  c.entries.digits_mlp.config.train.epochs = 1
  c.entries.digits_mlp.config.audit.verifier_epochs = 1
  lines = []
  rows = sweep.run_sweep(c, str(tmp_path), log=lines.append)
  assert len(rows) == 1 and rows[0]['error'] is None
  r = rows[0]
  assert r['key'] == 'digits_mlp/random30/s0/gradient_ascent' and r['family'] == 'de-optimisation'
  assert set(r['peers']) == {'population_mia', 'heuristics'}
  assert 0.0 <= r['ours']['p_value'] <= 1.0 and r['sizes']['forget'] > 0
  assert r['cost']['ours']['flops'] > 0 and r['cost']['retrain']['flops'] > 0
  assert any('1/1 cells' in l and 'ETA' in l for l in lines)
  assert len(io_utils.read_jsonl(str(tmp_path / 'results.jsonl'))) == 1


def test_sisa_cell_audits_the_ensemble(tmp_path):
  """A SISA entry: the sweep trains the SISA original, unlearns it and audits the ensemble
  as one black box; the per-model peers (U-LiRA) say why they do not apply."""
  c = tiny_config()
  c.methods = 'sisa'
  c.peers.rmia_refs = 0
  c.peers.heuristics = False
  c.peers.ulira_methods = 'sisa'
  cfg = c.entries.digits_mlp.config
  cfg.train.epochs = 1
  cfg.audit.verifier_epochs = 1
  cfg.sisa.shards, cfg.sisa.slices = 2, 1
  rows = sweep.run_sweep(c, str(tmp_path), log=lambda s: None)
  assert len(rows) == 1 and rows[0]['error'] is None, rows[0].get('error')
  r = rows[0]
  assert r['ours']['decision'] in ('forgotten', 'not_forgotten', 'inconclusive')
  assert 0.0 <= r['ours']['p_value'] <= 1.0
  assert 'error' not in r['peers']['population_mia'] and 'error' not in r['peers']['lira']
  assert r['peers']['ulira']['error'].startswith('not applicable')
  assert os.path.isdir(os.path.join(r['provenance']['workdir'], 'models', 'sisa'))


def test_failing_method_gives_an_error_row(tmp_path):
  c = tiny_config()
  c.methods = 'ct'     # CT needs conv kernels; the MLP entry makes it fail
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  c.peers.heuristics = False
  c.entries.digits_mlp.config.train.epochs = 1
  c.entries.digits_mlp.config.audit.verifier_epochs = 1
  rows = sweep.run_sweep(c, str(tmp_path), log=lambda s: None)
  assert len(rows) == 1 and rows[0]['error'].startswith('unlearn: ConfigError')
  assert 'conv' in rows[0]['error']


def test_initialisations_train_as_one_ensemble_equal_to_lone_runs(tmp_path):
  """The seeds' originals and retrains trained as one program (issue 16 item 2) are the
  checkpoints each workdir's own pipeline would have trained."""
  import jax
  import numpy as np
  from jaxaudit import checkpoint, pipeline
  from jaxaudit.study import cells as cells_lib
  c = tiny_config()
  c.seeds = '0,1'
  cells = cells_lib.plan_cells(c)
  written = sweep.train_initialisations(c, str(tmp_path / 'ens'), cells, log=lambda s: None)
  assert len(written) == 4          # 2 seeds x (original, retrain)
  for seed in (0, 1):
    cfg = cells_lib.cell_config(c, 'digits_mlp', 'random30', seed)
    lone = str(tmp_path / f'lone{seed}')
    pipeline.train_and_evaluate(cfg, lone, log=lambda s: None)
    ens = cells_lib.group_dir(str(tmp_path / 'ens'), ('digits_mlp', 'random30', seed))
    for kind in ('original', 'retrain'):
      a = checkpoint.load_checkpoint(f'{ens}/models/{kind}')[0]
      b = checkpoint.load_checkpoint(f'{lone}/models/{kind}')[0]
      jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)
    # ... and its pipeline reuses them.
    summary = pipeline.train_and_evaluate(cfg, ens, log=lambda s: None)
    assert summary['original']['path'].endswith('models/original')
  assert sweep.train_initialisations(c, str(tmp_path / 'ens'), cells, log=lambda s: None) == []
