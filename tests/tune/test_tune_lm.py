"""jaxaudit tune on language-model workdirs (issue 16): the LM objective against a naive
computation, the refusals, a tiny text workdir end to end, and the LM study's tuned settings."""

import dataclasses
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from jaxaudit import configs, io_utils
from jaxaudit.errors import ConfigError
from jaxaudit.peers import population
from jaxaudit.train import Recipe
from jaxaudit.tune import objective, run_tuning, tuned_hparams
from jaxaudit.unlearn import UnlearnData
from tests.cli_runner import run_cli

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')
LM_CONFIG = os.path.join(ROOT, 'experiments', 'configs', 'lm_synthetic.py')


def _lm_config(arg: str):
  spec = importlib.util.spec_from_file_location('lm_synthetic_config', LM_CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def _records(rng, n: int, context: int, vocab: int) -> np.ndarray:
  """(n, context + 1) float32 token ids, right-padded with -1 (lengths 2..context + 1)."""
  x = rng.integers(0, vocab, (n, context + 1)).astype(np.float32)
  lengths = rng.integers(2, context + 2, n)
  x[np.arange(context + 1)[None, :] >= lengths[:, None]] = -1
  return x


def _targets(x: np.ndarray) -> np.ndarray:
  """Next-token targets (n, T) int32 of records (n, T+1): x[:, 1:], -1 at padding."""
  return np.where(x[:, 1:] >= 0, x[:, 1:], -1).astype(np.int32)


def _naive_lm(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
  """(token accuracy over every valid target, per-record mean token NLL) by loops."""
  hits = total = 0
  nll = []
  for lg, yy in zip(logits.astype(np.float64), y):
    lp = lg - np.log(np.sum(np.exp(lg - lg.max(-1, keepdims=True)), -1, keepdims=True)) \
        - lg.max(-1, keepdims=True)
    rec = []
    for t, target in enumerate(yy):
      if target < 0:
        continue
      hits += int(np.argmax(lg[t]) == target)
      total += 1
      rec.append(-lp[t, target])
    nll.append(np.mean(rec))
  return hits / total, np.asarray(nll)


def test_lm_metrics_match_a_naive_computation():
  from jaxaudit.models import get_model
  vocab, context = 13, 6
  model = get_model('transformer', vocab, width=16, depth=1, heads=2, context=context)
  rng = np.random.default_rng(0)
  x = _records(rng, 30, context, vocab)
  val_x = _records(rng, 9, context, vocab)
  params = model.init(jax.random.key(0), x[:1])['params']
  data = UnlearnData(x=x, y=_targets(x), forget=np.arange(0, 8, dtype=np.int32),
                     retain=np.arange(8, 30, dtype=np.int32), num_classes=vocab,
                     input_shape=(context + 1,), recipe=Recipe(), val_x=val_x,
                     val_y=_targets(val_x))
  got = objective.metrics(model, params, data, max_retain=15, seed=3)
  fwd = jax.jit(lambda p, rows: model.apply({'params': p}, rows))
  logits = lambda rows: np.asarray(fwd(params, rows))                           # (n, T, V)
  retain = np.sort(np.random.default_rng(3).choice(np.arange(8, 30), 15, replace=False))
  acc_r, _ = _naive_lm(logits(x[retain]), data.y[retain])
  acc_f, nll_f = _naive_lm(logits(x[:8]), data.y[:8])
  acc_v, nll_v = _naive_lm(logits(val_x), data.val_y)
  attack = population.attack_accuracy(nll_f, nll_v, seed=3)
  assert got.retain == pytest.approx(acc_r) and got.forget == pytest.approx(acc_f)
  assert got.val == pytest.approx(acc_v)
  assert got.indiscernibility == pytest.approx(population.indiscernibility(attack))
  assert isinstance(objective.scoring_task(model, data).record_loss(
      np.zeros((1, context, 5), np.float32), data.y[:1]), np.ndarray)


def test_classifier_metrics_are_unchanged():
  # The classifier path through the task: top-1 accuracy and cross-entropy, as before.
  from jaxaudit.models import get_model
  model = get_model('mlp', 4, hidden=(8,))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 4, 40).astype(np.int32)
  val_x = rng.normal(size=(10, 5)).astype(np.float32)
  val_y = rng.integers(0, 4, 10).astype(np.int32)
  params = model.init(jax.random.key(1), x[:1])['params']
  data = UnlearnData(x=x, y=y, forget=np.arange(10, dtype=np.int32),
                     retain=np.arange(10, 40, dtype=np.int32), num_classes=4, input_shape=(5,),
                     recipe=Recipe(), val_x=val_x, val_y=val_y)
  got = objective.metrics(model, params, data)
  lg = lambda v: np.asarray(model.apply({'params': params}, v), np.float64)
  ce = lambda v, t: -(lg(v) - np.log(np.exp(lg(v)).sum(-1, keepdims=True)))[np.arange(len(t)), t]
  acc = lambda v, t: float(np.mean(np.argmax(lg(v), -1) == t))
  assert got.retain == pytest.approx(acc(x[10:], y[10:]))
  assert got.forget == pytest.approx(acc(x[:10], y[:10])) and got.val == pytest.approx(acc(val_x, val_y))
  attack = population.attack_accuracy(ce(x[:10], y[:10]), ce(val_x, val_y), seed=0)
  assert got.indiscernibility == pytest.approx(population.indiscernibility(attack))


def test_tuning_refuses_methods_of_the_other_modality_and_retraining(tmp_path):
  text, clf = _lm_config('tiny'), configs.base_config()
  wd = str(tmp_path / 'none')
  for cfg, method, match in ((text, 'lm_retrain', 'retraining method with nothing to tune'),
                             (text, 'retrain', 'retraining method'),
                             (text, 'finetune', 'classifier method .* language model'),
                             (clf, 'lm_npo', 'language-model method .* not a text corpus')):
    with pytest.raises(ConfigError, match=match):
      run_tuning(cfg, wd, [method], trials=1, log=lambda s: None)
  assert not os.path.exists(wd)                                   # before any work


@pytest.mark.slow
def test_tune_a_text_workdir_resumes_and_unlearn_uses_the_choice(tmp_path):
  from jaxaudit import pipeline
  from jaxaudit.tune import search
  cfg = _lm_config('tiny')
  wd = str(tmp_path / 'wd')
  pipeline.train_and_evaluate(cfg, wd, log=lambda s: None)
  methods = ['lm_gradient_ascent', 'lm_npo']
  res = run_tuning(cfg, wd, methods, trials=2, log=lambda s: None)
  for m in methods:
    with open(search.tuned_path(wd, m)) as f:
      on_disk = json.load(f)
    assert on_disk['trials'] == 2 and on_disk['hparams'] == res[m]['hparams']
    assert on_disk['reference_path'].endswith(os.path.join('models', 'retrain'))
    assert set(on_disk['metrics']) == {'retain', 'forget', 'val', 'indiscernibility'}
    assert set(on_disk['hparams']) >= {'lr', 'epochs'}
  assert set(res['lm_npo']['hparams']) >= {'beta', 'retain_weight'}
  # Resuming: the budget is spent, no new trial runs.
  logs = []
  again = run_tuning(cfg, wd, methods, trials=2, log=logs.append)
  assert sum('resuming, 2 of 2' in l for l in logs) == 2
  assert not any('[tune] lm_' in l and '/2' in l for l in logs)
  assert {m: r['hparams'] for m, r in again.items()} == {m: r['hparams'] for m, r in res.items()}
  # `jaxaudit unlearn` in that workdir (its remembered config) takes the chosen setting.
  chosen = tuned_hparams(wd, 'lm_gradient_ascent')
  r = run_cli(['unlearn', f'--workdir={wd}', '--method=lm_gradient_ascent'], os.getcwd(),
              timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  line = next(l for l in r.stdout.splitlines() if l.startswith('[unlearn] lm_gradient_ascent ('))
  assert f"'lr': {chosen['lr']}" in line and f"'epochs': {chosen['epochs']}" in line


# ----------------------------------------------------------------------------- the LM study


def _tuned_workdir(path, arg='local', results=None) -> str:
  """A workdir as `jaxaudit train` + `jaxaudit tune` leave it (config.json, tuning/*.json)."""
  os.makedirs(os.path.join(path, 'tuning'))
  io_utils.write_json(os.path.join(path, 'config.json'),
                      json.loads(_lm_config(arg).to_json_best_effort()))
  for m, hp in (results or {}).items():
    io_utils.write_json(os.path.join(path, 'tuning', f'{m}.json'), dict(method=m, hparams=hp))
  return str(path)


def test_llm_study_maps_tuned_settings_to_its_methods(tmp_path):
  from jaxaudit.study import llm
  wd = _tuned_workdir(tmp_path / 't', results={
      'lm_gradient_ascent': {'lr': 3e-4, 'epochs': 2},
      'lm_npo': {'lr': 2e-3, 'epochs': 4, 'beta': 0.3, 'retain_weight': 0.5}})
  cfg = dataclasses.replace(llm.local_config('synthetic'),
                            methods=('lm_gradient_ascent', 'lm_npo'))
  tuned = llm.tuned_settings(cfg, wd)
  assert tuned == {'lm_gradient_ascent': {'lr': 3e-4, 'epochs': 2},
                   'lm_npo': {'lr': 2e-3, 'epochs': 4, 'beta': 0.3, 'retain_weight': 0.5}}
  hp = llm.method_settings(cfg.methods, tuned)
  assert hp['lm_npo']['beta'] == 0.3 and hp['lm_npo']['optimizer'] == 'adamw'   # defaults fill
  assert hp['lm_gradient_ascent']['lr'] == 3e-4
  assert llm.method_settings(['lm_npo'])['lm_npo']['beta'] == 0.1                # published
  mixed = llm.method_settings(cfg.methods, {'lm_npo': tuned['lm_npo']})
  lines = llm.settings_lines(dict(hparams=mixed, tuned=['lm_npo'], tuned_from=wd))
  assert lines[0] == f'hyper-parameters: tuned by `jaxaudit tune` in {wd} (the others: published)'
  assert '| lm_npo | tuned | epochs=4, lr=0.002, beta=0.3, retain_weight=0.5 |' in lines
  assert '| lm_gradient_ascent | published | — |' in lines
  assert llm.settings_lines(dict(results={})) == ['hyper-parameters: published (registry defaults)']


def test_llm_study_refuses_bad_tuned_from_before_any_work(tmp_path):
  from jaxaudit.study import llm
  cfg = dataclasses.replace(llm.local_config('synthetic'), methods=('lm_gradient_ascent', 'lm_rmu'))
  out = str(tmp_path / 'study')

  def refused(where, match):
    with pytest.raises(ConfigError, match=match) as e:
      llm.run(cfg, out, draws=1, tuned_from=where, log=lambda s: None)
    assert '\n' not in str(e.value)
    assert not os.path.exists(out)                          # nothing trained, nothing written
  refused(str(tmp_path / 'missing'), 'is not a directory')
  os.makedirs(tmp_path / 'empty')
  refused(str(tmp_path / 'empty'), 'no config.json')
  refused(_tuned_workdir(tmp_path / 'tiny', 'tiny'), r'other settings .*text\.context 48 \(study: 64\)')
  wd = _tuned_workdir(tmp_path / 'local', results={'lm_gradient_ascent': {'lr': 3e-4}})
  refused(wd, 'no tuning result for lm_rmu')
  # A workdir whose draws ran with other settings is not resumed with these.
  cfg = dataclasses.replace(cfg, methods=('lm_gradient_ascent',))
  os.makedirs(out)
  io_utils.append_jsonl(os.path.join(out, 'draws.jsonl'),
                        dict(draw=0, results={'lm_gradient_ascent': {}}))       # published
  with pytest.raises(ConfigError, match='other hyper-parameters'):
    llm.run(cfg, out, draws=1, tuned_from=wd, log=lambda s: None)
  # ... nor one whose draws were audited with another utility reference (before this
  # record existed: the verifiers, utility_ratio 0).
  with pytest.raises(ConfigError, match=r'utility_ratio=0\.0, not 0\.5'):
    llm.run(cfg, out, draws=1, log=lambda s: None)
  assert llm.local_config('shakespeare').utility_ratio == 0.5
