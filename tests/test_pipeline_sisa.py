"""SISA through the pipeline and the CLI: train --config.sisa.shards, unlearn sisa, audit."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxaudit import checkpoint, pipeline
from jaxaudit import configs
from jaxaudit import workdir as workdir_lib
from jaxaudit.commands.default_config import get_config
from jaxaudit.configs import recipe_from_config
from jaxaudit.errors import CheckpointError, ConfigError
from jaxaudit.train.sisa import train_sisa

QUIET = lambda s: None


@pytest.fixture(scope='module', autouse=True)
def fast_compiles():
  """Tiny models: compile time dominates, so skip most XLA optimisations here."""
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def sisa_config():
  c = get_config('tiny')
  c.train.epochs = 4
  c.train_retrain = False
  c.sisa.shards = 2
  c.sisa.slices = 2
  c.sisa.slice_epochs = 2
  c.sisa.strategy = 'map'     # bit-reproducible: unlearning equals retraining exactly
  c.audit.num_verifiers = 2
  c.audit.ref_sample = 300
  c.audit.member_sample = 150
  c.audit.augment = 'none'
  return c


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('sisa_wd'))
  summary = pipeline.train_and_evaluate(sisa_config(), wd, log=QUIET)
  s = summary['sisa']
  assert (s['shards'], s['slices'], s['slice_epochs'], s['strategy']) == (2, 2, 2, 'map')
  assert s['accuracy']['test'] > 0.5
  return wd


def test_train_saves_and_reloads_sisa_state(workdir):
  c = sisa_config()
  ds, split = workdir_lib.prepare(c, workdir, log=QUIET)
  path = os.path.join(workdir, 'models', 'sisa')
  meta = json.load(open(os.path.join(path, 'meta.json')))
  assert meta['kind'] == 'sisa' and meta['aggregate'] == 'mean_softmax'
  assert (meta['ensemble_size'], meta['stages'], meta['slice_epochs']) == (2, 2, 2)
  model, state, _ = workdir_lib.load_sisa_state(path, expect=workdir_lib.expected_meta(c, ds, split),
                                             train_indices=split.train)
  assert all(p.shape[:2] == (2, 2) for p in jax.tree.leaves(state.params))
  np.testing.assert_array_equal(state.layout.records(), np.sort(split.train))
  # Resumable; a config asking for another SISA layout is refused with a hint.
  logs = []
  pipeline.train_and_evaluate(c, workdir, log=logs.append)
  assert any('[sisa] reusing' in l for l in logs)
  c.sisa.shards = 3
  with pytest.raises(CheckpointError, match='shards'):
    pipeline.train_and_evaluate(c, workdir, log=QUIET)


def test_unlearn_sisa_equals_sisa_retraining_and_audits(workdir):
  c = sisa_config()
  res = pipeline.run_unlearn(c, workdir, 'sisa', log=QUIET)
  meta = checkpoint.load_meta(res['path'])
  assert meta['method'] == 'sisa' and meta['ensemble_size'] == 2 and meta['wall_time_s'] > 0
  assert meta['aggregate'] == 'mean_softmax' and meta['accuracy']['test'] > 0.5
  ds, split = workdir_lib.prepare(c, workdir, log=QUIET)
  model, state, _ = workdir_lib.load_sisa_state(os.path.join(workdir, 'models', 'sisa'))
  _, unlearned, _ = checkpoint.restore_model(res['path'])
  scratch = train_sisa(model, ds.x_train, ds.y_train, None, configs.role_key(c, configs.KEY_SISA),
                       recipe_from_config(c), shards=2, slices=2, slice_epochs=2, strategy='map',
                       layout=state.layout.without(split.forget))
  for a, b in zip(jax.tree.leaves(unlearned), jax.tree.leaves(scratch.final_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  logs = []
  pipeline.run_unlearn(c, workdir, 'sisa', log=logs.append)
  assert any('reusing' in l for l in logs)

  result, out = pipeline.run_audit(c, workdir, target='unlearned/sisa', log=QUIET)
  assert result.decision in ('forgotten', 'not_forgotten', 'inconclusive', 'invalid_reference')
  rep = json.load(open(os.path.join(out, 'report.json')))
  assert rep['decision'] == result.decision and out.endswith('unlearned_sisa')
  # The SISA original itself is auditable too (its last-stage constituents).
  tgt = workdir_lib.resolve_target(c, ds, split, workdir, 'sisa')
  x = ds.x_train[split.forget[:5]]
  probs = np.exp(tgt.fn(x))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_unlearn_sisa_without_sisa_original_is_a_clear_error(tmp_path):
  c = sisa_config()
  c.sisa.shards = 0
  with pytest.raises(ConfigError, match=r'--config\.sisa\.shards=S'):
    pipeline.run_unlearn(c, str(tmp_path / 'none'), 'sisa', log=QUIET)


def test_missing_or_corrupt_sisa_state(workdir, tmp_path):
  src = os.path.join(workdir, 'models', 'sisa')
  cases = {}
  for name in ('missing', 'corrupt', 'mismatch'):
    cases[name] = str(tmp_path / name)
    shutil.copytree(src, cases[name])
  os.remove(os.path.join(cases['missing'], 'sisa_state.npz'))
  with pytest.raises(CheckpointError, match='missing'):
    workdir_lib.load_sisa_state(cases['missing'])
  with open(os.path.join(cases['corrupt'], 'sisa_state.npz'), 'r+b') as f:
    f.seek(100)
    f.write(b'\x00garbage\x00')
  with pytest.raises(CheckpointError, match='corrupt'):
    workdir_lib.load_sisa_state(cases['corrupt'])
  # A readable state whose layout does not fit the params (3 shards for 2 models).
  npz = os.path.join(cases['mismatch'], 'sisa_state.npz')
  with np.load(npz) as f:
    arrays = {k: f[k] for k in f.files}
  arrays['slots'] = np.concatenate([arrays['slots']] * 3)[:3]
  arrays['mask'] = np.concatenate([arrays['mask']] * 3)[:3]
  np.savez(npz, **arrays)
  mpath = os.path.join(cases['mismatch'], 'meta.json')
  meta = json.load(open(mpath))
  meta['extra_files']['sisa_state'] = checkpoint._sha256(npz)
  json.dump(meta, open(mpath, 'w'))
  with pytest.raises(CheckpointError, match='does not match'):
    workdir_lib.load_sisa_state(cases['mismatch'])
  # An ordinary checkpoint is not a SISA one.
  with pytest.raises(CheckpointError, match='not a SISA checkpoint'):
    workdir_lib.load_sisa_state(os.path.join(workdir, 'models', 'original'))


@pytest.mark.slow   # ~10 s: a CLI process (JAX start-up and compilation)
def test_cli_audit_unlearned_sisa(workdir, tmp_path):
  # The workdir made above, audited from the command line (verifiers come from its cache).
  pipeline.run_unlearn(sisa_config(), workdir, 'sisa', log=QUIET)
  flags = ['--config.model_kwargs.hidden=(64,)', '--config.train.epochs=4',
           '--config.audit.num_verifiers=2', '--config.audit.ref_sample=300',
           '--config.audit.member_sample=150', '--config.audit.augment=none']
  r = subprocess.run([sys.executable, '-m', 'jaxaudit.cli', 'audit', f'--workdir={workdir}',
                      '--target=unlearned/sisa', f'--out={tmp_path / "cli_audit"}', *flags],
                     capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1'))
  assert r.returncode == 0, r.stderr
  assert 'decision:' in r.stdout and os.path.exists(tmp_path / 'cli_audit' / 'report.json')
