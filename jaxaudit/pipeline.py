"""Library functions behind the CLI: data + split preparation and model training.

Flax-examples style: the command-line entry points are thin and call these, so
that tests and experiments run exactly the same code.

Work directory layout::

  WORKDIR/config.json          the config the directory was made with
  WORKDIR/split.npz            the audit split (hash-checked on load)
  WORKDIR/models/original/     checkpoint of M (trained on D)
  WORKDIR/models/retrain/      checkpoint of the retrain-from-scratch reference on Dr
  WORKDIR/models/sisa/         SISA original on D (only with config.sisa.shards > 0):
                               params after every stage (R, S, ...) and
                               sisa_state.npz (layout slots/mask, shard keys)
  WORKDIR/models/unlearned/NAME/  checkpoints of unlearned models (unlearned/sisa:
                               the S constituents (S, ...), mean-of-softmax ensemble)
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
from jaxaudit import workdir as workdir_lib
from jaxaudit.configs import recipe_from_config, validate_config
from jaxaudit.data import AuditSplit, Dataset, load_dataset, make_split
from jaxaudit.data import splits as splits_lib
from jaxaudit.errors import CheckpointError, ConfigError, SplitError, TrainingError
from jaxaudit.models import get_model
from jaxaudit.train import Recipe, accuracy, predict_logits, train_model
from jaxaudit.train.devices import check_strategy, resolve_strategy
from jaxaudit.train import sisa as sisa_lib

SPLIT_FILE = workdir_lib.SPLIT_FILE
CONFIG_FILE = workdir_lib.CONFIG_FILE

# fold_in tags of the root key (config.seed), one stream per role.
KEY_ORIGINAL, KEY_RETRAIN, KEY_UNLEARN, KEY_SISA = 1, 2, 4, 6

SISA_DIR = 'sisa'                    # WORKDIR/models/sisa
SISA_ARRAYS = 'sisa_state'           # WORKDIR/models/sisa/sisa_state.npz
MEAN_SOFTMAX = 'mean_softmax'        # meta['aggregate'] of a SISA ensemble


def root_key(config) -> jax.Array:
  return jax.random.key(int(config.seed))


def role_key(config, role: int) -> jax.Array:
  return jax.random.fold_in(root_key(config), role)


def log_to_stdout(msg: str) -> None:
  print(msg, flush=True)


def load_data(config) -> Dataset:
  """The data set a config names (embedded, npz, or TFDS from data_dir)."""
  return load_dataset(config.dataset, data_dir=config.get('data_dir'), npz=config.get('npz'),
                      num_classes=config.get('num_classes'))


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


def prepare(config, workdir: str, log: Callable[[str], None] = log_to_stdout, *,
            overwrite: bool = False, dataset: Dataset | None = None) -> tuple[Dataset, AuditSplit]:
  """Loads the data and the workdir's split (drawing and saving it if new).

  The workdir is checked first (:func:`jaxaudit.workdir.check_workdir`). An
  existing workdir must have been made with the same data and split
  settings; otherwise SplitError tells the user to pick a new workdir, unless
  ``overwrite`` (``jaxaudit train --overwrite``), which saves the new split
  and configuration. ``dataset``: the data set of ``config``, if already loaded.
  Nothing is written before the data set and the split are known to be valid.
  """
  workdir_lib.check_workdir(workdir)
  validate_config(config)
  dataset = load_data(config) if dataset is None else dataset
  split_path = os.path.join(workdir, SPLIT_FILE)
  fresh = split_from_config(config, dataset)
  fresh_dir = not os.path.exists(workdir) or not os.listdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  if fresh_dir:
    io_utils.mark(workdir, 'workdir')
  save_config = overwrite
  if os.path.exists(split_path):
    split = splits_lib.load_split(split_path, dataset)
    if splits_lib.split_hash(split) != splits_lib.split_hash(fresh):
      if not overwrite:
        raise SplitError(f'{split_path} holds a different split than this config draws '
                         '(data or split settings changed); use a new --workdir')
      split = fresh
      splits_lib.save_split(split_path, split)
  else:
    split = fresh
    splits_lib.save_split(split_path, split)
    save_config = True
  if save_config:
    io_utils.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))
  log(f'data {dataset.name} ({dataset.source}): pool {len(dataset.y_train)}, '
      f'|D|={len(split.train)} |Du|={len(split.forget)} |Dr|={len(split.retain)} '
      f'|D_ref|={len(split.ref)} |test|={len(split.test)}, {dataset.num_classes} classes')
  return dataset, split


def preflight(config, workdir: str, batch_sizes: tuple[int, ...] = (), num_models: int = 1
              ) -> Dataset:
  """Checks a request before anything is written or trained; returns its data set.

  Checks the workdir, the config's values, the model it names, and that a
  training step at the recipe's batch size (and at each of ``batch_sizes``,
  with ``num_models`` models at once) fits in memory.
  """
  from jaxaudit.train.memory import check_fits
  workdir_lib.check_workdir(workdir)
  validate_config(config)
  dataset = load_data(config)
  model = model_from_config(config, dataset)
  shape = tuple(dataset.input_shape)
  check_fits(model, shape, recipe_from_config(config).batch_size, what='train.batch_size')
  for bs in batch_sizes:
    check_fits(model, shape, bs, num_models, parallel=True, what='batch_size')
  return dataset


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


def evaluate_sets(model, params, dataset: Dataset, split: AuditSplit, *, ensemble=False,
                  aggregate: str | None = None) -> dict[str, Any]:
  """Accuracy on Dr, Du, D_ref and test.

  Args:
    params: one model's params, or stacked (K, ...) with ``ensemble`` or ``aggregate``.
    ensemble: accuracy of every member (lists of K floats).
    aggregate: ``'mean_softmax'``: accuracy of the K stacked models' mean
      softmax (a SISA ensemble), one float per set.
  """
  if aggregate not in (None, MEAN_SOFTMAX):
    raise ConfigError(f'unknown ensemble aggregate {aggregate!r}; known: {MEAN_SOFTMAX!r}')
  out = {}
  for name, x, y in (('retain', dataset.x_train[split.retain], dataset.y_train[split.retain]),
                     ('forget', dataset.x_train[split.forget], dataset.y_train[split.forget]),
                     ('ref', dataset.x_train[split.ref], dataset.y_train[split.ref]),
                     ('test', dataset.x_test[split.test], dataset.y_test[split.test])):
    if aggregate:
      out[name] = float(accuracy(sisa_lib.sisa_logits(model, params, x), y))
      continue
    acc = accuracy(predict_logits(model, params, x, ensemble=ensemble), y)
    out[name] = acc.tolist() if ensemble else float(acc)
  return out


def format_accs(accs: dict[str, float]) -> str:
  return '  '.join(f'{k} {100 * v:5.1f}%' for k, v in accs.items())


def check_finite(params, what: str) -> None:
  """Raises TrainingError when any parameter of ``params`` is NaN or infinite."""
  bad = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(params)
         if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise TrainingError(f'{what} produced non-finite parameters ({len(bad)} array(s), e.g. '
                        f'{bad[0]}); nothing was saved. Lower the learning rate.')


def _diverged_message(kind: str, step: int, steps_per_epoch: int) -> str:
  return (f'[{kind}] training diverged: the loss became non-finite at step {step} (epoch '
          f'{step // steps_per_epoch + 1}, batch {step % steps_per_epoch + 1}); nothing was saved. '
          'Lower train.learning_rate.')


def _recipe_changes(meta: dict[str, Any], config) -> list[str]:
  """'field: saved -> asked' where a checkpoint's recipe or seed differs from the config."""
  out = []
  saved = meta.get('recipe') or {}
  for k, v in recipe_from_config(config).to_dict().items():
    if k in saved and saved[k] != v:
      out.append(f'train.{k}: {saved[k]!r} -> {v!r}')
  if 'seed' in meta and meta['seed'] != int(config.seed):
    out.append(f'seed: {meta["seed"]!r} -> {int(config.seed)!r}')
  return out


def _train_and_save(config, dataset, split, workdir, kind, subset, key, log,
                    overwrite: bool = False) -> dict[str, Any]:
  model = model_from_config(config, dataset)
  recipe = recipe_from_config(config)
  path = os.path.join(workdir, 'models', kind)
  if checkpoint.exists(path) and not overwrite:
    changed = _recipe_changes(checkpoint.load_meta(path), config)
    if changed:
      raise CheckpointError(f'{path} was trained with other settings ({"; ".join(changed)}); '
                            'pass --overwrite to retrain it, or use a new --workdir')
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
  if res.diverged():
    raise TrainingError(_diverged_message(
        kind, int(res.nonfinite_step[0]), max(-(-len(subset) // recipe.batch_size), 1)))
  check_finite(params, f'training {kind}')
  accs = evaluate_sets(model, params, dataset, split)
  checkpoint.save_checkpoint(path, params, checkpoint_meta(
      config, dataset, split, kind, accuracy=accs, wall_time_s=wall), overwrite=True)
  log(f'[{kind}] done in {wall:.1f}s: {format_accs(accs)}')
  return dict(kind=kind, path=path, accuracy=accs, wall_time_s=wall)


def sisa_settings(config, model=None) -> dict[str, Any] | None:
  """The SISA training settings of ``config.sisa``, resolved; None when SISA is off.

  Returns:
    dict(shards=S, slices=R, slice_epochs=E, strategy=...) with ``slice_epochs``
    None replaced by :func:`jaxaudit.train.sisa.default_slice_epochs` and
    ``strategy='auto'`` by the backend's default (when ``model`` is given).
  Raises:
    ConfigError: negative shards, slices < 1, slice_epochs < 1 or an unknown strategy.
  """
  s = config.get('sisa')
  if s is None:
    return None
  shards = int(s.get('shards', 0) or 0)
  if shards < 0:
    raise ConfigError(f'sisa.shards must be >= 0 (0: no SISA original), got {shards}')
  if shards == 0:
    return None
  slices = int(s.get('slices', 4))
  if slices < 1:
    raise ConfigError(f'sisa.slices must be >= 1, got {slices}')
  epochs = s.get('slice_epochs')
  epochs = sisa_lib.default_slice_epochs(recipe_from_config(config), slices) if epochs is None \
      else int(epochs)
  if epochs < 1:
    raise ConfigError(f'sisa.slice_epochs must be >= 1, got {epochs}')
  strategy = check_strategy(s.get('strategy', 'auto') or 'auto', 'sisa.strategy')
  if strategy == 'auto' and model is not None:
    strategy = resolve_strategy(strategy, model)
  return dict(shards=shards, slices=slices, slice_epochs=epochs, strategy=strategy)


def _sisa_expect(config) -> dict[str, Any]:
  """Metadata a SISA checkpoint must match when config.sisa asks for one (else {})."""
  sett = sisa_settings(config)
  if sett is None:
    return {}
  if sett['strategy'] == 'auto':   # the backend's choice: any is fine
    del sett['strategy']
  return sett


def save_sisa_state(path: str, state, meta: dict[str, Any]) -> str:
  """Saves a :class:`jaxaudit.train.sisa.SisaState` as one checkpoint, atomically.

  The per-stage params (R, S, ...) go to ``PATH/params`` and the layout
  (slots, mask (S, R, L)) with the shard keys' raw data (S, ...) to
  ``PATH/sisa_state.npz``, in the same atomic write. ``meta`` (see
  :func:`checkpoint_meta`) is completed with ``stages=R``, ``ensemble_size=S``,
  the SISA settings, the key implementation and ``aggregate='mean_softmax'``.

  Returns:
    The absolute checkpoint path.
  """
  layout = state.layout
  meta = dict(meta, kind=meta.get('kind', 'sisa'), stages=layout.slices,
              ensemble_size=layout.shards, shards=layout.shards, slices=layout.slices,
              slice_epochs=int(state.slice_epochs), strategy=state.strategy,
              aggregate=MEAN_SOFTMAX, recipe=state.recipe.to_dict(),
              input_shape=list(state.input_shape),
              key_impl=str(jax.random.key_impl(state.shard_keys)))
  return checkpoint.save_checkpoint(path, state.params, meta,
                                    extra_arrays={SISA_ARRAYS: sisa_lib.state_arrays(state)})


def load_sisa_state(path: str, *, expect: dict[str, Any] | None = None, train_indices=None):
  """Loads a SISA original saved by :func:`save_sisa_state`.

  Args:
    path: the checkpoint directory (e.g. WORKDIR/models/sisa).
    expect: metadata fields that must match (e.g. :func:`expected_meta` plus
      ``shards``/``slices``/``slice_epochs``).
    train_indices: optional (n,) pool indices of D; the saved layout must hold
      exactly these records.
  Returns:
    (model, SisaState with params (R, S, ...), meta).
  Raises:
    CheckpointError: missing or corrupt files, metadata that differs from
      ``expect``, or a saved layout that does not match the params or D.
  """
  meta = checkpoint.load_meta(path)
  if meta.get('aggregate') != MEAN_SOFTMAX or not meta.get('stages') or SISA_ARRAYS not in (
      meta.get('extra_files') or {}):
    raise CheckpointError(f'{path} is not a SISA checkpoint (kind {meta.get("kind")!r}); '
                          'make one with `jaxaudit train --config.sisa.shards=S`')
  model, params, meta = checkpoint.restore_model(path, expect=expect)
  arrays = checkpoint.load_arrays(path, SISA_ARRAYS, meta)
  try:
    state = sisa_lib.state_from_arrays(
        params, arrays, key_impl=meta['key_impl'], recipe=Recipe.from_config(meta['recipe']),
        slice_epochs=int(meta['slice_epochs']), strategy=meta['strategy'],
        input_shape=meta['input_shape'])
  except (ConfigError, KeyError, TypeError) as e:
    raise CheckpointError(f'checkpoint {path}: the saved SISA state does not match its '
                          f'parameters and metadata: {e}') from e
  lay = state.layout
  if (lay.shards, lay.slices) != (meta.get('shards'), meta.get('slices')):
    raise CheckpointError(f'checkpoint {path}: layout has {lay.shards} shards x {lay.slices} '
                          f'slices, metadata says {meta.get("shards")} x {meta.get("slices")}')
  if train_indices is not None and not np.array_equal(
      lay.records(), np.sort(np.asarray(train_indices, np.int64))):
    raise CheckpointError(f'checkpoint {path}: the SISA layout does not hold exactly the '
                          'training set D of this split')
  return model, state, meta


def _train_sisa_and_save(config, dataset, split, workdir, log) -> dict[str, Any]:
  model = model_from_config(config, dataset)
  recipe = recipe_from_config(config)
  sett = sisa_settings(config, model)
  path = os.path.join(workdir, 'models', SISA_DIR)
  if checkpoint.exists(path):
    try:
      _, state, meta = load_sisa_state(
          path, expect=dict(expected_meta(config, dataset, split), **_sisa_expect(config)),
          train_indices=split.train)
    except CheckpointError as e:
      raise CheckpointError(f'{e}\n(remove {path} to retrain the SISA original with this '
                            'config, or use a new --workdir)') from e
    log(f'[sisa] reusing checkpoint {path}')
    return dict(kind='sisa', path=path, accuracy=meta.get('accuracy'),
                wall_time_s=meta.get('wall_time_s'), shards=meta['shards'],
                slices=meta['slices'], slice_epochs=meta['slice_epochs'])
  log(f'[sisa] training {sett["shards"]} shards x {sett["slices"]} slices of {config.model} '
      f'on {len(split.train)} records, {sett["slice_epochs"]} epochs per slice '
      f'({sett["strategy"]})')
  t0 = time.time()
  state = sisa_lib.train_sisa(model, dataset.x_train, dataset.y_train, split.train,
                              role_key(config, KEY_SISA), recipe,
                              input_shape=tuple(dataset.input_shape), **sett)
  wall = time.time() - t0
  accs = evaluate_sets(model, state.final_params, dataset, split, aggregate=MEAN_SOFTMAX)
  save_sisa_state(path, state, checkpoint_meta(config, dataset, split, 'sisa',
                                               accuracy=accs, wall_time_s=wall))
  log(f'[sisa] done in {wall:.1f}s: {format_accs(accs)}')
  return dict(kind='sisa', path=path, accuracy=accs, wall_time_s=wall, **sett)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log: Callable[[str], None] = log_to_stdout, *,
                       overwrite: bool = False) -> dict[str, Any]:
  """Trains the original model M on D (and the retrain reference on Dr).

  Checkpoints go to WORKDIR/models/{original,retrain}; an existing matching
  checkpoint is reused, so an interrupted run resumes. A checkpoint trained
  with another recipe or seed is refused by name, unless ``overwrite``
  (then it is retrained, and the workdir's split and config are replaced). With
  ``config.sisa.shards`` = S > 0 a SISA original (S constituents, per-stage
  checkpoints) is also trained on D, into WORKDIR/models/sisa, for the
  ``sisa`` unlearning method.

  Returns:
    A summary dict: split sizes and, per model, path, accuracies, wall time.
  """
  validate_config(config, training=True)
  sisa = sisa_settings(config)   # bad SISA settings fail before any training
  dataset = preflight(config, workdir)
  dataset, split = prepare(config, workdir, log, overwrite=overwrite, dataset=dataset)
  if sisa is not None and sisa['shards'] * sisa['slices'] > len(split.train):
    raise ConfigError(f'sisa.shards x sisa.slices = {sisa["shards"]} x {sisa["slices"]} exceeds '
                      f'|D| = {len(split.train)} (every slice needs a record)')
  summary = dict(workdir=os.path.abspath(workdir), dataset=dataset.name,
                 sizes=dict(train=len(split.train), forget=len(split.forget),
                            retain=len(split.retain), ref=len(split.ref), test=len(split.test)))
  summary['original'] = _train_and_save(config, dataset, split, workdir, 'original', split.train,
                                        role_key(config, KEY_ORIGINAL), log, overwrite)
  if config.get('train_retrain', True):
    summary['retrain'] = _train_and_save(config, dataset, split, workdir, 'retrain', split.retain,
                                         role_key(config, KEY_RETRAIN), log, overwrite)
  if sisa is not None:
    summary['sisa'] = _train_sisa_and_save(config, dataset, split, workdir, log)
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


def target_path(workdir: str, target: str) -> str:
  """The checkpoint directory ``--target`` names: a path, or a name under WORKDIR/models."""
  io_utils.check_path(target, '--target')
  return target if os.path.isdir(target) else os.path.join(workdir, 'models', target)


def resolve_target(config, dataset, split, workdir: str, target: str | None = None,
                   logits_file: str | None = None):
  """The audited model: a checkpoint (name under WORKDIR/models or a path) or a logits file.

  A checkpoint of an ensemble aggregated by the mean of softmax outputs
  (``meta['aggregate'] == 'mean_softmax'``: models/sisa, models/unlearned/sisa)
  is audited as one black box whose logits are the log of that mean.
  """
  from jaxaudit.audit import Target
  if logits_file:
    return Target.from_logits_file(logits_file)
  if not target:
    raise ConfigError('name the model to audit with --target (e.g. retrain, unlearned/finetune, '
                      'or a checkpoint path) or give --logits=FILE')
  path = target_path(workdir, target)
  model, params, meta = checkpoint.restore_model(path, expect=expected_meta(config, dataset, split))
  name = target.strip('/').replace('/', '_')
  agg = meta.get('aggregate')
  if agg is not None:
    if agg != MEAN_SOFTMAX:
      raise CheckpointError(f'checkpoint {path} aggregates its ensemble by {agg!r}; '
                            f'only {MEAN_SOFTMAX!r} is supported')
    if meta.get('stages'):   # per-stage SISA checkpoints: the constituents after the last stage
      params = jax.tree.map(lambda p: p[-1], params)
    return Target.from_fn(lambda x: sisa_lib.sisa_logits(model, params, x), name=name)
  if meta.get('ensemble_size'):
    raise CheckpointError(f'checkpoint {path} holds {meta["ensemble_size"]} stacked models '
                          'with no aggregate; audit one model')
  return Target.from_params(model, params, name=name)


def run_audit(config, workdir: str, *, target: str | None = None, logits_file: str | None = None,
              out_dir: str | None = None, overwrite: bool = False,
              reference_file: str | None = None,
              log: Callable[[str], None] = log_to_stdout):
  """Audits one model of a workdir and writes its report.

  Args:
    out_dir: report directory (default WORKDIR/audits/TARGET); an existing
      directory is replaced only if jaxaudit wrote it, or with ``overwrite``
      (checked before any work).
    reference_file: an ``.npz`` of the user's own reference records (``x``,
      ``y``, optional ``units``: see
      :func:`jaxaudit.audit.reference.load_reference_file`) that no model
      trained on; it replaces the split's D_ref, and the audit's reference
      self-check refuses it (``invalid_reference``) when it is not
      exchangeable with Du.
  Returns:
    (AuditResult, report directory).
  """
  from jaxaudit.audit import audit, load_reference_file
  from jaxaudit.audit.report import write_report
  if out_dir:
    io_utils.check_replaceable(out_dir, overwrite=overwrite, what='--out directory')
  if target and not logits_file:   # before prepare() writes anything
    checkpoint.load_meta(target_path(workdir, target))
  elif logits_file and not os.path.isfile(logits_file):
    raise ConfigError(f'logits file {logits_file} does not exist')
  dataset = preflight(config, workdir)
  reference = load_reference_file(reference_file, dataset) if reference_file else None
  dataset, split = prepare(config, workdir, log, dataset=dataset)
  tgt = resolve_target(config, dataset, split, workdir, target, logits_file)
  out = out_dir or os.path.join(workdir, 'audits', tgt.name)
  io_utils.check_replaceable(out, overwrite=overwrite, what='report directory')
  result = audit(tgt, dataset, split, verifier_model=model_from_config(config, dataset),
                 recipe=recipe_from_config(config), settings=audit_settings(config),
                 cache_dir=os.path.join(workdir, 'verifiers'), log=log, reference=reference)
  write_report(result, out, overwrite=overwrite)
  log(f'[audit] {tgt.name}: {result.summary()}')
  log(f'[audit] report: {os.path.join(out, "report.md")}')
  return result, out


def _method_key(config, name: str) -> jax.Array:
  import zlib
  return jax.random.fold_in(role_key(config, KEY_UNLEARN), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def config_hparams(config, method: str, overrides: dict | None = None) -> dict[str, Any]:
  """Hyper-parameters of ``method``: ``config.unlearn.hparams.METHOD``, then ``overrides``.

  Args:
    config: a jaxaudit config.
    method: registered method name.
    overrides: NAME -> value (e.g. from ``--hparam``), applied last.
  Returns:
    NAME -> value (registry defaults fill the rest in ``get_method``).
  """
  hp = (config.get('unlearn') or {}).get('hparams') or {}
  hp = hp.get(method) or {}
  out = dict(hp.to_dict() if hasattr(hp, 'to_dict') else hp)
  out.update(overrides or {})
  return out


def run_unlearn(config, workdir: str, method: str, hparams: dict | None = None, *,
                out_name: str | None = None, init_checkpoint: str | None = None,
                overwrite: bool = False,
                log: Callable[[str], None] = log_to_stdout) -> dict[str, Any]:
  """Unlearns Du from WORKDIR/models/original with ``method``; saves Mu.

  The checkpoint goes to WORKDIR/models/unlearned/OUT_NAME (default: the
  method name) with the method, its hyper-parameters and its wall time in
  the metadata. An existing checkpoint with the same method and
  hyper-parameters is reused. ``init_checkpoint`` names a checkpoint of the
  same model that never saw Du (for ``warmstart_retrain`` / ``warmstart_finetune``).

  ``sisa`` unlearns the SISA original WORKDIR/models/sisa instead (made by
  ``jaxaudit train --config.sisa.shards=S``) and saves the S retrained
  constituents stacked (S, ...) with ``aggregate='mean_softmax'``.

  Returns:
    dict(method, hparams, path, wall_time_s, accuracy).
  """
  from jaxaudit import unlearn as unlearn_lib
  name = io_utils.check_name(out_name or method, '--name')
  meth = unlearn_lib.get_method(method, **(hparams or {}))   # validates before any compilation
  zero = sorted(k for k, v in meth.hparams.items()
                if (k == 'epochs' or k.endswith('_epochs')) and v == 0)
  if zero and all(v == 0 for k, v in meth.hparams.items() if k == 'epochs' or k.endswith('_epochs')):
    raise ConfigError(f'{method} with {", ".join(f"{k}=0" for k in zero)} does no training; an '
                      'untrained or unchanged model is not an unlearning result')
  is_sisa = method == 'sisa'
  if meth.output == 'ensemble' and not is_sisa:
    raise ConfigError(f'{method} returns an ensemble of models; the pipeline only knows how to '
                      'unlearn, save and audit the SISA ensemble (method "sisa")')
  source_path = os.path.join(workdir, 'models', SISA_DIR if is_sisa else 'original')
  if not checkpoint.exists(source_path):   # before prepare() writes anything
    raise ConfigError(
        f'method "sisa" unlearns a SISA-trained original and {source_path} holds none: run '
        f'`jaxaudit train --workdir={workdir} --config.sisa.shards=S` first (S shards, e.g. 4; '
        'see config.sisa for slices and slice_epochs)' if is_sisa else
        f'no original model at {source_path}: run `jaxaudit train --workdir={workdir}` first')
  if init_checkpoint:
    checkpoint.load_meta(init_checkpoint)
  bs = meth.hparams.get('batch_size')
  dataset = preflight(config, workdir, (int(bs),) if isinstance(bs, (int, np.integer)) else (), 2)
  dataset, split = prepare(config, workdir, log, dataset=dataset)
  hp = {k: list(v) if isinstance(v, tuple) else v for k, v in meth.hparams.items()}
  path = os.path.join(workdir, 'models', 'unlearned', name)
  io_utils.check_replaceable(path, overwrite=overwrite, what='checkpoint directory')
  source = None
  if is_sisa:
    sisa_path = source_path
    smeta = checkpoint.load_meta(sisa_path)
    source = dict(created=smeta.get('created'),
                  sha256=(smeta.get('extra_files') or {}).get(SISA_ARRAYS))
  else:
    orig = source_path
    ometa = checkpoint.load_meta(orig)
    source = dict(created=ometa.get('created'), recipe=ometa.get('recipe'), seed=ometa.get('seed'))
  if checkpoint.exists(path):
    meta = checkpoint.load_meta(path)
    if (meta.get('method') == method and meta.get('hparams') == hp
        and meta.get('sisa_source' if is_sisa else 'original_source') == source
        and (not is_sisa or all(meta.get(k) == v for k, v in _sisa_expect(config).items()))):
      checkpoint.check_meta(meta, expected_meta(config, dataset, split), path)
      log(f'[unlearn] reusing {path}')
      return dict(method=method, hparams=hp, path=path, wall_time_s=meta.get('wall_time_s'),
                  accuracy=meta.get('accuracy'))
  state, extra = None, {}
  if is_sisa:
    model, state, smeta = load_sisa_state(
        sisa_path, expect=dict(expected_meta(config, dataset, split), **_sisa_expect(config)),
        train_indices=split.train)
    params = state.final_params
    extra = dict(ensemble_size=state.layout.shards, aggregate=MEAN_SOFTMAX, sisa_source=source,
                 **{k: smeta[k] for k in ('shards', 'slices', 'slice_epochs', 'strategy')})
  else:
    model, params, _ = checkpoint.restore_model(orig, expect=expected_meta(config, dataset, split))
  init_params = None
  if init_checkpoint:
    want = {k: v for k, v in expected_meta(config, dataset, split).items()
            if k not in ('split_hash', 'dataset_fingerprint')}
    _, init_params, _ = checkpoint.restore_model(init_checkpoint, expect=want)
  data = unlearn_lib.make_unlearn_data(dataset, split, recipe_from_config(config),
                                       init_checkpoint_params=init_params, sisa=state)
  log(f'[unlearn] {method} ({meth.family}) with {hp}')
  t0 = time.time()
  new = jax.block_until_ready(meth.fn(params, model, data, _method_key(config, method)))
  wall = time.time() - t0
  check_finite(new, f'unlearning with {method} ({hp})')
  if not is_sisa and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                         zip(jax.tree.leaves(new), jax.tree.leaves(params))):
    raise TrainingError(f'{method} with {hp} left every parameter of the original unchanged; '
                        'an unchanged model is not an unlearning result (nothing was saved)')
  if not is_sisa:
    extra['original_source'] = source
  accs = evaluate_sets(model, new, dataset, split, aggregate=extra.get('aggregate'))
  checkpoint.save_checkpoint(path, new, checkpoint_meta(
      config, dataset, split, 'unlearned', method=method, family=meth.family, hparams=hp,
      wall_time_s=wall, accuracy=accs, **extra), force=overwrite)
  log(f'[unlearn] {method} done in {wall:.1f}s: {format_accs(accs)}')
  return dict(method=method, hparams=hp, path=path, wall_time_s=wall, accuracy=accs)
