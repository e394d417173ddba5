"""Library functions behind the CLI: data + split preparation and model training.

Flax-examples style: the command-line entry points are thin and call these, so
that tests and experiments run exactly the same code.

Work directory layout::

  WORKDIR/config.json          the config the directory was made with
  WORKDIR/split.npz            the audit split (hash-checked on load)
  WORKDIR/models/original/     checkpoint of M (trained on D)
  WORKDIR/models/retrain/      checkpoint of the retrain-from-scratch reference on Dr
  WORKDIR/models/unlearned/NAME/  checkpoints of unlearned models
  WORKDIR/verifiers/KEY/       cached verification ensembles
  WORKDIR/audits/NAME/         report.json, report.md, plots
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from jaxaudit import checkpoint, io_utils
from jaxaudit.configs import recipe_from_config
from jaxaudit.data import AuditSplit, Dataset, load_dataset, make_split
from jaxaudit.data import splits as splits_lib
from jaxaudit.errors import ConfigError, SplitError
from jaxaudit.models import get_model
from jaxaudit.train import accuracy, predict_logits, train_model

SPLIT_FILE = 'split.npz'
CONFIG_FILE = 'config.json'

# fold_in tags of the root key (config.seed), one stream per role.
KEY_ORIGINAL, KEY_RETRAIN, KEY_VERIFIERS, KEY_UNLEARN, KEY_AUDIT = 1, 2, 3, 4, 5


def root_key(config) -> jax.Array:
  return jax.random.key(int(config.seed))


def role_key(config, role: int) -> jax.Array:
  return jax.random.fold_in(root_key(config), role)


def log_to_stdout(msg: str) -> None:
  print(msg, flush=True)


def load_data(config) -> Dataset:
  """The data set a config names (embedded, npz, or TFDS from data_dir)."""
  return load_dataset(config.dataset, data_dir=config.get('data_dir'), npz=config.get('npz'))


def _forget_classes(value):
  if value is None or value == '':
    return None
  if isinstance(value, str):
    try:
      return tuple(int(v) for v in value.replace(' ', '').split(',') if v)
    except ValueError as e:
      raise ConfigError(f'split.forget_classes must be comma-separated integers, got {value!r}') from e
  return tuple(int(v) for v in value)


def split_from_config(config, dataset: Dataset) -> AuditSplit:
  """Draws the audit split a config describes (pure function of config + data)."""
  s = config.split
  forget_indices = None
  if s.get('forget_indices_file'):
    forget_indices = splits_lib.read_index_file(s.forget_indices_file)
  return make_split(dataset, seed=int(s.seed), ref_fraction=s.get('ref_fraction', 0.1),
                    train_size=s.get('train_size'), forget_fraction=s.get('forget_fraction', 0.1),
                    forget_size=s.get('forget_size'),
                    forget_classes=_forget_classes(s.get('forget_classes')),
                    forget_indices=forget_indices, test_size=s.get('test_size'))


def prepare(config, workdir: str, log: Callable[[str], None] = log_to_stdout
            ) -> tuple[Dataset, AuditSplit]:
  """Loads the data and the workdir's split (drawing and saving it if new).

  An existing workdir must have been made with the same data and split
  settings; otherwise SplitError tells the user to pick a new workdir.
  """
  os.makedirs(workdir, exist_ok=True)
  dataset = load_data(config)
  split_path = os.path.join(workdir, SPLIT_FILE)
  fresh = split_from_config(config, dataset)
  if os.path.exists(split_path):
    split = splits_lib.load_split(split_path, dataset)
    if splits_lib.split_hash(split) != splits_lib.split_hash(fresh):
      raise SplitError(f'{split_path} holds a different split than this config draws '
                       '(data or split settings changed); use a new --workdir')
  else:
    split = fresh
    splits_lib.save_split(split_path, split)
    _atomic_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))
  log(f'data {dataset.name} ({dataset.source}): pool {len(dataset.y_train)}, '
      f'|D|={len(split.train)} |Du|={len(split.forget)} |Dr|={len(split.retain)} '
      f'|D_ref|={len(split.ref)} |test|={len(split.test)}, {dataset.num_classes} classes')
  return dataset, split


def _atomic_json(path: str, obj: Any) -> None:
  io_utils.write_json(path, obj)


def model_from_config(config, dataset: Dataset):
  return get_model(config.model, dataset.num_classes, dataset.input_shape,
                   **config.model_kwargs.to_dict())


def checkpoint_meta(config, dataset: Dataset, split: AuditSplit, kind: str,
                    ensemble_size: int | None = None, **extra) -> dict[str, Any]:
  """Metadata stored with every checkpoint and checked when it is loaded."""
  meta = dict(model=config.model, model_kwargs=config.model_kwargs.to_dict(),
              num_classes=dataset.num_classes, input_shape=list(dataset.input_shape),
              dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
              split_hash=splits_lib.split_hash(split), recipe=config.train.to_dict(),
              seed=int(config.seed), ensemble_size=ensemble_size, kind=kind)
  meta.update(extra)
  return meta


def expected_meta(config, dataset: Dataset, split: AuditSplit) -> dict[str, Any]:
  """The fields a checkpoint must match to be used with this config and data."""
  return dict(model=config.model, model_kwargs=config.model_kwargs.to_dict(),
              num_classes=dataset.num_classes, input_shape=list(dataset.input_shape),
              dataset_fingerprint=dataset.fingerprint, split_hash=splits_lib.split_hash(split))


def evaluate_sets(model, params, dataset: Dataset, split: AuditSplit, *, ensemble=False
                  ) -> dict[str, Any]:
  """Accuracy on Dr, Du, D_ref and test (per member if ``ensemble``)."""
  out = {}
  for name, x, y in (('retain', dataset.x_train[split.retain], dataset.y_train[split.retain]),
                     ('forget', dataset.x_train[split.forget], dataset.y_train[split.forget]),
                     ('ref', dataset.x_train[split.ref], dataset.y_train[split.ref]),
                     ('test', dataset.x_test[split.test], dataset.y_test[split.test])):
    acc = accuracy(predict_logits(model, params, x, ensemble=ensemble), y)
    out[name] = acc.tolist() if ensemble else float(acc)
  return out


def format_accs(accs: dict[str, float]) -> str:
  return '  '.join(f'{k} {100 * v:5.1f}%' for k, v in accs.items())


def _train_and_save(config, dataset, split, workdir, kind, subset, key, log) -> dict[str, Any]:
  model = model_from_config(config, dataset)
  recipe = recipe_from_config(config)
  path = os.path.join(workdir, 'models', kind)
  if checkpoint.exists(path):
    model, params, meta = checkpoint.restore_model(path, expect=expected_meta(config, dataset, split))
    log(f'[{kind}] reusing checkpoint {path}')
    return dict(kind=kind, path=path, accuracy=meta.get('accuracy'), wall_time_s=meta.get('wall_time_s'))
  log(f'[{kind}] training {config.model} on {len(subset)} records for {recipe.epochs} epochs')
  t0 = time.time()

  def progress(epoch, loss):
    log(f'[{kind}] epoch {epoch + 1}/{recipe.epochs}  loss {float(loss[0]):.4f}  '
        f'({time.time() - t0:.1f}s)')

  res = train_model(model, dataset.x_train, dataset.y_train, subset, key, recipe, callback=progress)
  params = jax.block_until_ready(res.params)
  wall = time.time() - t0
  accs = evaluate_sets(model, params, dataset, split)
  checkpoint.save_checkpoint(path, params, checkpoint_meta(
      config, dataset, split, kind, accuracy=accs, wall_time_s=wall))
  log(f'[{kind}] done in {wall:.1f}s: {format_accs(accs)}')
  return dict(kind=kind, path=path, accuracy=accs, wall_time_s=wall)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log: Callable[[str], None] = log_to_stdout) -> dict[str, Any]:
  """Trains the original model M on D (and the retrain reference on Dr).

  Checkpoints go to WORKDIR/models/{original,retrain}; an existing matching
  checkpoint is reused, so an interrupted run resumes.

  Returns:
    A summary dict: split sizes and, per model, path, accuracies, wall time.
  """
  dataset, split = prepare(config, workdir, log)
  summary = dict(workdir=os.path.abspath(workdir), dataset=dataset.name,
                 sizes=dict(train=len(split.train), forget=len(split.forget),
                            retain=len(split.retain), ref=len(split.ref), test=len(split.test)))
  summary['original'] = _train_and_save(config, dataset, split, workdir, 'original', split.train,
                                        role_key(config, KEY_ORIGINAL), log)
  if config.get('train_retrain', True):
    summary['retrain'] = _train_and_save(config, dataset, split, workdir, 'retrain', split.retain,
                                         role_key(config, KEY_RETRAIN), log)
  return summary


def audit_settings(config):
  """AuditSettings from config.audit."""
  from jaxaudit.audit import AuditSettings, TestSettings
  a = config.audit
  ratio = a.get('subset_ratio', 0.15)
  if isinstance(ratio, str):
    ratio = tuple(float(v) for v in ratio.split(',')) if ',' in ratio else float(ratio)
  views = a.get('augment', 'auto')
  if views not in ('auto',):
    views = ('identity',) if views in ('none', '', None) else tuple(v for v in views.split(','))
  return AuditSettings(
      num_verifiers=int(a.get('num_verifiers', 4)), subset_ratio=ratio, views=views,
      flips=bool(a.get('flips', False)), ref_sample=int(a.get('ref_sample', 5000)),
      member_sample=int(a.get('member_sample', 1000)),
      test_sample=int(a.get('test_sample', 2000)),
      verifier_epochs=a.get('verifier_epochs'), seed=int(a.get('seed', config.seed)),
      test=TestSettings(alpha=float(a.get('alpha', 0.05)), fdr=float(a.get('fdr', 0.05))))


def resolve_target(config, dataset, split, workdir: str, target: str | None = None,
                   logits_file: str | None = None):
  """The audited model: a checkpoint (name under WORKDIR/models or a path) or a logits file."""
  from jaxaudit.audit import Target
  if logits_file:
    return Target.from_logits_file(logits_file)
  if not target:
    raise ConfigError('name the model to audit with --target (e.g. retrain, unlearned/finetune, '
                      'or a checkpoint path) or give --logits=FILE')
  path = target if os.path.isdir(target) else os.path.join(workdir, 'models', target)
  model, params, meta = checkpoint.restore_model(path, expect=expected_meta(config, dataset, split))
  return Target.from_params(model, params, name=target.strip('/').replace('/', '_'))


def run_audit(config, workdir: str, *, target: str | None = None, logits_file: str | None = None,
              out_dir: str | None = None, log: Callable[[str], None] = log_to_stdout):
  """Audits one model of a workdir and writes its report.

  Returns:
    (AuditResult, report directory).
  """
  from jaxaudit.audit import audit
  from jaxaudit.audit.report import write_report
  dataset, split = prepare(config, workdir, log)
  tgt = resolve_target(config, dataset, split, workdir, target, logits_file)
  result = audit(tgt, dataset, split, verifier_model=model_from_config(config, dataset),
                 recipe=recipe_from_config(config), settings=audit_settings(config),
                 cache_dir=os.path.join(workdir, 'verifiers'), log=log)
  out = out_dir or os.path.join(workdir, 'audits', tgt.name)
  write_report(result, out)
  log(f'[audit] {tgt.name}: {result.summary()}')
  log(f'[audit] report: {os.path.join(out, "report.md")}')
  return result, out


def _method_key(config, name: str) -> jax.Array:
  import zlib
  return jax.random.fold_in(role_key(config, KEY_UNLEARN), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def run_unlearn(config, workdir: str, method: str, hparams: dict | None = None, *,
                out_name: str | None = None, init_checkpoint: str | None = None,
                log: Callable[[str], None] = log_to_stdout) -> dict[str, Any]:
  """Unlearns Du from WORKDIR/models/original with ``method``; saves Mu.

  The checkpoint goes to WORKDIR/models/unlearned/OUT_NAME (default: the
  method name) with the method, its hyper-parameters and its wall time in
  the metadata. An existing checkpoint with the same method and
  hyper-parameters is reused. ``init_checkpoint`` names a checkpoint of the
  same model that never saw Du (for ``warmstart_retrain`` / ``warmstart_finetune``).

  Returns:
    dict(method, hparams, path, wall_time_s, accuracy).
  """
  from jaxaudit import unlearn as unlearn_lib
  meth = unlearn_lib.get_method(method, **(hparams or {}))   # validates before any compilation
  dataset, split = prepare(config, workdir, log)
  hp = {k: list(v) if isinstance(v, tuple) else v for k, v in meth.hparams.items()}
  path = os.path.join(workdir, 'models', 'unlearned', out_name or method)
  if checkpoint.exists(path):
    meta = checkpoint.load_meta(path)
    if meta.get('method') == method and meta.get('hparams') == hp:
      checkpoint.check_meta(meta, expected_meta(config, dataset, split), path)
      log(f'[unlearn] reusing {path}')
      return dict(method=method, hparams=hp, path=path, wall_time_s=meta.get('wall_time_s'),
                  accuracy=meta.get('accuracy'))
  orig = os.path.join(workdir, 'models', 'original')
  if not checkpoint.exists(orig):
    raise ConfigError(f'no original model at {orig}: run `jaxaudit train --workdir={workdir}` first')
  model, params, _ = checkpoint.restore_model(orig, expect=expected_meta(config, dataset, split))
  init_params = None
  if init_checkpoint:
    want = {k: v for k, v in expected_meta(config, dataset, split).items()
            if k not in ('split_hash', 'dataset_fingerprint')}
    _, init_params, _ = checkpoint.restore_model(init_checkpoint, expect=want)
  data = unlearn_lib.make_unlearn_data(dataset, split, recipe_from_config(config),
                                       init_checkpoint_params=init_params)
  log(f'[unlearn] {method} ({meth.family}) with {hp}')
  t0 = time.time()
  new = jax.block_until_ready(meth.fn(params, model, data, _method_key(config, method)))
  wall = time.time() - t0
  if meth.output == 'ensemble':
    raise ConfigError(f'{method} returns a shard ensemble; audit it through the SISA API')
  accs = evaluate_sets(model, new, dataset, split)
  checkpoint.save_checkpoint(path, new, checkpoint_meta(
      config, dataset, split, 'unlearned', method=method, family=meth.family, hparams=hp,
      wall_time_s=wall, accuracy=accs))
  log(f'[unlearn] {method} done in {wall:.1f}s: {format_accs(accs)}')
  return dict(method=method, hparams=hp, path=path, wall_time_s=wall, accuracy=accs)
