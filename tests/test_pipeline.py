
"""End to end through the library entry points and the CLI, on embedded digits."""

import json
import os

import numpy as np
import pytest

from jaxaudit import pipeline
from jaxaudit import configs
from jaxaudit import workdir as workdir_lib
from jaxaudit.audit import AuditSettings, Target, audit
from jaxaudit.commands.default_config import get_config
from jaxaudit.configs import recipe_from_config
from jaxaudit.data import make_split
from jaxaudit.errors import AuditError, CheckpointError, ConfigError, SplitError
from jaxaudit.train import predict_logits
from tests.cli_runner import run_cli


def tiny_config():
  c = get_config('tiny')
  c.train.epochs = 8
  c.audit.num_verifiers = 2
  c.audit.ref_sample = 400
  c.audit.member_sample = 200
  return c


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp('wd'))
  summary = pipeline.train_and_evaluate(tiny_config(), wd, log=lambda s: None)
  assert summary['original']['accuracy']['test'] > 0.85
  return wd


def test_train_is_resumable_and_checks_split(workdir):
  logs = []
  pipeline.train_and_evaluate(tiny_config(), workdir, log=logs.append)
  assert any('reusing checkpoint' in l for l in logs)
  c = tiny_config()
  c.split.seed = 1
  with pytest.raises(SplitError, match='different split'):
    workdir_lib.prepare(c, workdir, log=lambda s: None)


def test_stream_audit_resumes_and_the_bank_audit_trains_nothing(workdir, tmp_path):
  """`audit --requests` in process: one verdict per request, a rerun audits only the new
  requests, the summary counts them all; `audit --bank` trains no verifier (the CLI wiring
  is tests/test_cli.py::test_audit_requests_one_verdict_each_and_resume)."""
  c = tiny_config()
  c.audit.bank_size = 12
  train = np.load(os.path.join(workdir, 'split.npz'))['train']
  lines = [{'id': f'u{i}', 'records': [int(v) for v in train[5 * i:5 * i + 1 + i % 5]]}
           for i in range(6)]
  reqs = tmp_path / 'requests.jsonl'
  reqs.write_text(''.join(json.dumps(l) + '\n' for l in lines[:4]))
  _, out = pipeline.run_stream_audit(c, workdir, str(reqs), target='original',
                                     log=lambda s: None)
  rows = [json.loads(l) for l in open(os.path.join(out, 'verdicts.jsonl'))]
  assert [x['id'] for x in rows] == ['u0', 'u1', 'u2', 'u3']
  assert all(x['decision'] in ('forgotten', 'not_forgotten', 'inconclusive') for x in rows)
  reqs.write_text(''.join(json.dumps(l) + '\n' for l in lines))
  logs = []
  summ, _ = pipeline.run_stream_audit(c, workdir, str(reqs), target='original', log=logs.append)
  assert any('4 already audited, 2 to go' in l for l in logs), logs
  rows2 = [json.loads(l) for l in open(os.path.join(out, 'verdicts.jsonl'))]
  assert rows2[:4] == rows and [x['id'] for x in rows2[4:]] == ['u4', 'u5']
  assert summ['requests'] == 6 and sum(summ['decisions'].values()) == 6
  assert os.path.isfile(os.path.join(out, 'summary.md'))
  pipeline.run_audit(c, workdir, target='original', use_bank=True,
                     out_dir=str(tmp_path / 'bank_audit'), log=lambda s: None)
  rep = json.load(open(tmp_path / 'bank_audit' / 'report.json'))
  assert rep['verifiers']['source'] == 'bank' and rep['cost']['models_trained'] == 0


def test_audit_from_checkpoint_and_black_box_agree(workdir, tmp_path):
  c = tiny_config()
  res, out = pipeline.run_audit(c, workdir, target='retrain', log=lambda s: None)
  assert res.decision in ('forgotten', 'inconclusive')
  rep = json.load(open(os.path.join(out, 'report.json')))
  for key in ('decision', 'direction', 'p_value', 'effect_auc', 'effect_auc_ci', 'forgetting_score',
              'forgetting_score_ci', 'power', 'flagged_records', 'accuracy', 'settings', 'cost'):
    assert key in rep
  assert os.path.exists(os.path.join(out, 'report.md')) and os.path.exists(os.path.join(out, 'scores.png'))
  # Black box: logits of every pool and test record in a file, exact view only.
  ds, split = workdir_lib.prepare(c, workdir, log=lambda s: None)
  from jaxaudit import checkpoint
  model, params, _ = checkpoint.restore_model(os.path.join(workdir, 'models', 'retrain'))
  path = str(tmp_path / 'logits.npz')
  np.savez(path, indices=np.arange(len(ds.y_train)), logits=predict_logits(model, params, ds.x_train),
           test_indices=np.arange(len(ds.y_test)), test_logits=predict_logits(model, params, ds.x_test))
  c.audit.augment = 'none'
  res_box, _ = pipeline.run_audit(c, workdir, logits_file=path, log=lambda s: None)
  res_ck, _ = pipeline.run_audit(c, workdir, target='retrain', out_dir=str(tmp_path / 'ck'),
                                 log=lambda s: None)
  assert res_box.decision == res_ck.decision
  np.testing.assert_allclose(res_box.p_value, res_ck.p_value, rtol=1e-5)


def test_same_seed_same_decision(workdir, tmp_path):
  c = tiny_config()
  r1, _ = pipeline.run_audit(c, workdir, target='original', out_dir=str(tmp_path / 'a'), log=lambda s: None)
  r2, _ = pipeline.run_audit(c, workdir, target='original', out_dir=str(tmp_path / 'b'), log=lambda s: None)
  assert r1.decision == r2.decision and r1.p_value == r2.p_value
  assert r2.details['verifiers']['from_cache'] and r2.details['cost']['models_trained'] == 0


def test_bad_audit_inputs(workdir, tmp_path, digits):
  c = tiny_config()
  ds, split = workdir_lib.prepare(c, workdir, log=lambda s: None)
  model = configs.model_from_config(c, ds)
  recipe = recipe_from_config(c).replace(epochs=1)
  from jaxaudit import checkpoint
  _, params, _ = checkpoint.restore_model(os.path.join(workdir, 'models', 'retrain'))
  tgt = Target.from_params(model, params)
  with pytest.raises(AuditError, match='K >= 2'):
    AuditSettings(num_verifiers=1)
  # Du overlapping D_ref.
  import dataclasses
  bad = dataclasses.replace(split, ref=np.sort(np.concatenate([split.ref, split.forget[:3]])))
  with pytest.raises(SplitError):
    audit(tgt, ds, bad, verifier_model=model, recipe=recipe)
  # A split of another data set.
  other = make_split((np.arange(3000) % 10, np.arange(500) % 10), seed=0)
  with pytest.raises(SplitError):
    audit(tgt, ds, other, verifier_model=model, recipe=recipe)
  # NaN outputs are a verdict (a diverged model), a wrong class count is an error.
  nan_fn = lambda x: np.full((len(x), 10), np.nan, np.float32)
  res = audit(Target.from_fn(nan_fn), ds, split, verifier_model=model, recipe=recipe,
              settings=AuditSettings(num_verifiers=2, views=('identity',)),
              cache_dir=str(tmp_path))
  assert (res.decision, res.direction) == ('not_forgotten', 'collapse')
  # A finite model that answers class 0 to everything: ignorant of Du like of everything
  # else, and far below the verifiers on D_ref (the utility test).
  const_fn = lambda x: np.tile(np.float32(5) * np.eye(10, dtype=np.float32)[:1], (len(x), 1))
  res = audit(Target.from_fn(const_fn), ds, split, verifier_model=model, recipe=recipe,
              settings=AuditSettings(num_verifiers=2, views=('identity',)),
              cache_dir=str(tmp_path))
  u = res.details['utility_test']
  assert (res.decision, res.direction) == ('not_forgotten', 'collapse')
  assert u['p_value'] < 1e-6 and u['mean_target'] < u['mean_verifiers']
  sizes = res.details['sizes']                # the D_ref sample and the test sample, unseen by all
  assert u['n'] == sizes['ref'] + sizes['test'] and 'test_records' not in res.details['accuracy']
  from jaxaudit.audit.report import markdown
  assert 'utility collapse (Mu below the verifiers on unseen records) | True (Mu' in markdown(res)
  with pytest.raises(AuditError, match='one column per class'):
    audit(Target.from_fn(lambda x: np.zeros((len(x), 7), np.float32)), ds, split,
          verifier_model=model, recipe=recipe,
          settings=AuditSettings(num_verifiers=2, views=('identity',)), cache_dir=str(tmp_path))
  # Verifier data touching Du.
  from jaxaudit.audit.verifiers import check_disjoint
  with pytest.raises(AuditError, match='overlap Du'):
    check_disjoint(split, np.stack([split.retain[:10], split.forget[:10]]))
  with pytest.raises(CheckpointError):
    workdir_lib.resolve_target(c, ds, split, workdir, 'does-not-exist')


def _cli(*args, cwd=None):
  return run_cli(args, cwd or os.getcwd(), timeout=600)


def test_config_hparams_precedence():
  c = get_config('tiny')
  assert configs.config_hparams(c, 'gradient_ascent') == {'lr': 0.08}
  assert configs.config_hparams(c, 'gradient_ascent', {'lr': '0.01', 'epochs': '2'}) == {
      'lr': '0.01', 'epochs': '2'}
  assert configs.config_hparams(c, 'finetune') == {}
  c.unlearn.hparams.finetune = {'epochs': 2}
  assert configs.config_hparams(c, 'finetune', {'lr': 0.1}) == {'epochs': 2, 'lr': 0.1}


# The default digits config through the CLI. CI runs the same chain on the tiny config in
# tests/test_cli.py::test_workdir_remembers_its_configuration (train's summary, config
# hparams reaching `unlearn`, `audit`), and the error lines in tests/test_bad_inputs.py.
@pytest.mark.slow
def test_cli_train_unlearn_audit(tmp_path):
  wd = str(tmp_path / 'cli')
  base = ['--config.model_kwargs.hidden=(32,)', '--config.train.epochs=3',
          '--config.audit.num_verifiers=2', '--config.audit.ref_sample=300',
          '--config.audit.member_sample=100']
  r = _cli('train', f'--workdir={wd}', *base)
  assert r.returncode == 0, r.stderr
  assert 'summary' in r.stdout and 'epoch 3/3' in r.stdout
  r = _cli('unlearn', f'--workdir={wd}', '--method=finetune', '--hparam=epochs=1', *base)
  assert r.returncode == 0, r.stderr
  meta = json.load(open(os.path.join(wd, 'models', 'unlearned', 'finetune', 'meta.json')))
  assert meta['method'] == 'finetune' and meta['hparams']['epochs'] == 1 and meta['wall_time_s'] > 0
  # config.unlearn.hparams.gradient_ascent (lr 0.08 in the default config) reaches the CLI.
  r = _cli('unlearn', f'--workdir={wd}', '--method=gradient_ascent', '--hparam=epochs=1', *base)
  assert r.returncode == 0, r.stderr
  meta = json.load(open(os.path.join(wd, 'models', 'unlearned', 'gradient_ascent', 'meta.json')))
  assert meta['hparams']['lr'] == 0.08 and meta['hparams']['epochs'] == 1
  r = _cli('audit', f'--workdir={wd}', '--target=unlearned/finetune', *base)
  assert r.returncode == 0, r.stderr
  assert 'decision:' in r.stdout
  assert os.path.exists(os.path.join(wd, 'audits', 'unlearned_finetune', 'report.json'))
  # Clear errors, no traceback.
  r = _cli('unlearn', f'--workdir={wd}', '--method=nope', *base)
  assert r.returncode == 1 and 'unknown' in r.stderr and 'Traceback' not in r.stderr
  r = _cli('unlearn', f'--workdir={wd}', '--method=finetune', '--hparam=lr2=3', *base)
  assert r.returncode == 1 and 'lr2' in r.stderr
  r = _cli('train', f'--workdir={wd}', '--config.dataset=nosuchdata')
  assert r.returncode == 1 and 'nosuchdata' in r.stderr and 'Traceback' not in r.stderr
  r = _cli('bogus')
  assert r.returncode == 2


def test_warm_start_methods_start_from_a_pretrained_model_that_never_saw_du(workdir):
  from jaxaudit import checkpoint
  logs = []
  c = tiny_config()
  res = pipeline.run_unlearn(c, workdir, 'warmstart_finetune', {'epochs': 1},
                             log=logs.append)
  assert any('[pretrained] training' in l for l in logs)
  pre = os.path.join(workdir, 'models', pipeline.PRETRAINED_DIR)
  meta = checkpoint.load_meta(pre)
  ds, split = workdir_lib.prepare(c, workdir, log=lambda s: None)
  idx, source = pipeline.pretrain_records(ds, split, meta['pretrain_source'], None, int(c.seed))
  assert source == meta['pretrain_source'] and meta['pretrain_records'] == idx.size
  assert not np.intersect1d(idx, split.forget).size
  assert res['accuracy']['retain'] > 0.5
  # The second warm-start method reuses the same pretrained model.
  logs.clear()
  pipeline.run_unlearn(c, workdir, 'warmstart_retrain', log=logs.append)
  assert any('[pretrained] reusing' in l for l in logs)
  assert not any('[pretrained] training' in l for l in logs)
  # Asked for explicitly, other settings are refused, never silently reused or replaced.
  with pytest.raises(ConfigError, match='other settings.*pretrain_epochs'):
    pipeline.pretrained_checkpoint(c, workdir, epochs=meta['pretrain_epochs'] + 1)
  assert pipeline.pretrained_checkpoint(c, workdir, epochs=meta['pretrain_epochs'],
                                        source=meta['pretrain_source'], log=logs.append) == pre


def test_warm_start_finetuning_is_tuned_from_the_pretrained_model(workdir):
  from jaxaudit.tune import search
  logs = []
  out = search.run_tuning(tiny_config(), workdir, ['warmstart_finetune'], trials=1, seed=0,
                          log=logs.append)
  assert set(out['warmstart_finetune']['hparams']) >= {'lr', 'epochs'}
  assert any('[pretrained]' in l for l in logs)
  with pytest.raises(Exception, match='nothing to tune'):
    search.run_tuning(tiny_config(), workdir, ['warmstart_retrain'], trials=1, seed=0,
                      log=logs.append)
