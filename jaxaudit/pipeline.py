"""The three runs behind the CLI: train (:func:`train_and_evaluate`), unlearn, audit.

Flax-examples style: the command-line entry points are thin and call these, so
that tests and experiments run exactly the same code. The workdir's layout,
checks, split and target resolution live in :mod:`jaxaudit.workdir`; a
config's derived settings (keys, model, SISA, audit settings, method
hyper-parameters) in :mod:`jaxaudit.configs`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxaudit import checkpoint, io_utils
from jaxaudit.configs import (KEY_ORIGINAL, KEY_PRETRAINED, KEY_RETRAIN, KEY_SISA,
                              audit_settings, is_text, method_key, model_from_config,
                              recipe_from_config, role_key, root_key,
                              sisa_expect, sisa_settings, validate_config)
from jaxaudit.errors import CheckpointError, ConfigError, TrainingError
from jaxaudit.train import loop, train_ensemble, train_model, unstack
from jaxaudit.train import sisa as sisa_lib
from jaxaudit.train.evaluate import evaluate_sets, format_accs
from jaxaudit.train.evaluate import MEAN_SOFTMAX
from jaxaudit.workdir import (SISA_ARRAYS, SISA_DIR, checkpoint_meta, expected_meta,
                              load_sisa_state, preflight, prepare, resolve_target,
                              save_sisa_state, target_path)





def log_to_stdout(msg: str) -> None:
  print(msg, flush=True)


def check_finite(params, what: str, where: str | None = None) -> None:
  """Raises TrainingError when any parameter of ``params`` is NaN or infinite.

  ``where``: the step where the loss first became non-finite, if known
  (:func:`jaxaudit.train.loop.divergence_probe`).
  """
  bad = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(params)
         if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    at = f'; the loss became non-finite at {where}' if where else ''
    raise TrainingError(f'{what} produced non-finite parameters ({len(bad)} array(s), e.g. '
                        f'{bad[0]}){at}; nothing was saved. Lower the learning rate.')


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


BASE_DIR = 'base'


def text_base(config, dataset, workdir: str, log: Callable[[str], None] = log_to_stdout):
  """The base LM of a text workdir (WORKDIR/models/base, pretrained once on the corpus's
  pretraining groups; :func:`jaxaudit.text.setup.pretrain_base`), or None for other data."""
  if not is_text(config):
    return None
  from jaxaudit.text import setup
  from jaxaudit.train import Recipe
  recipe = Recipe(optimizer='adam', learning_rate=float(config.text.base_lr),
                  epochs=int(config.text.base_epochs),
                  batch_size=int(recipe_from_config(config).batch_size))
  params, _ = setup.pretrain_base(model_from_config(config, dataset), dataset, recipe,
                                  os.path.join(workdir, 'models', BASE_DIR),
                                  seed=int(config.seed), log=log)
  return params


PRETRAINED_DIR = 'pretrained'
# Methods that start from a model that never saw Du (``data.init_checkpoint_params``).
WARM_START_METHODS = ('warmstart_retrain', 'warmstart_finetune')


def pretrain_records(dataset, split, source: str = 'auto', size: int | None = None,
                     seed: int = 0) -> tuple[np.ndarray, str]:
  """Pool records outside D for the warm-start methods' pretrained model.

  Args:
    source: ``unused`` (pool records in neither D nor D_ref), ``retain`` (Dr),
      ``ref`` (D_ref: the model has then seen the audit's population sample, so
      do not audit warm-start models with that split) or ``auto`` (unused if the
      pool has any, else retain).
    size: the most records (default |D|), a seeded random subset when fewer.
  Returns:
    ((k,) sorted int64 pool indices, never in Du; the source used).
  Raises:
    ConfigError: an unknown source, or one with no records.
  """
  n = len(dataset.y_train)
  unused = np.setdiff1d(np.arange(n), np.union1d(split.train, split.ref))
  if source == 'auto':
    source = 'unused' if unused.size else 'retain'
  pools = dict(unused=unused, retain=np.asarray(split.retain), ref=np.asarray(split.ref))
  if source not in pools:
    raise ConfigError(f'--pretrain_source must be auto, unused, retain or ref, got {source!r}')
  pool = pools[source]
  if pool.size == 0:
    raise ConfigError(f'no {source} records to pretrain on')
  assert not np.intersect1d(pool, split.forget).size   # never Du
  k = min(int(size) if size else len(split.train), pool.size)
  if k < pool.size:
    pool = np.sort(np.random.default_rng(seed).choice(pool, k, replace=False))
  return pool.astype(np.int64), source


def pretrained_checkpoint(config, workdir: str, *, epochs: int | None = None,
                          source: str = 'auto', size: int | None = None,
                          log: Callable[[str], None] = log_to_stdout) -> str:
  """WORKDIR/models/pretrained: the model the warm-start methods start from.

  The config's model trained on :func:`pretrain_records` (records outside Du;
  by default unused pool records, else Dr) for ``epochs`` (default the recipe's),
  with its own key; reused when it exists. Returns the checkpoint path.

  Raises:
    ConfigError: the existing model was made with other ``epochs``/``source`` than
      asked for explicitly (it is not replaced: unlearned models may start from it).
  """
  path = os.path.join(workdir, 'models', PRETRAINED_DIR)
  if checkpoint.exists(path):
    meta = checkpoint.load_meta(path)
    asked = dict(pretrain_epochs=int(epochs) if epochs else None,
                 pretrain_source=None if source == 'auto' else source)
    clash = [f'{k} {meta.get(k)!r} (asked: {v!r})' for k, v in asked.items()
             if v is not None and meta.get(k) != v]
    if clash:
      raise ConfigError(f'{path} was made with other settings ({"; ".join(clash)}); use '
                        'another --workdir, or the settings it was made with')
    log(f'[pretrained] reusing {path} ({meta.get("pretrain_records")} '
        f'{meta.get("pretrain_source")} records, {meta.get("pretrain_epochs")} epochs)')
    return path
  dataset, split = prepare(config, workdir, lambda s: None)
  idx, used = pretrain_records(dataset, split, source, size, int(config.seed))
  model = model_from_config(config, dataset)
  recipe = recipe_from_config(config)
  recipe = recipe.replace(epochs=int(epochs)) if epochs else recipe
  log(f'[pretrained] training {config.model} on {idx.size} {used} records (never Du) for '
      f'{recipe.epochs} epochs')
  t0 = time.time()
  params = jax.block_until_ready(train_model(
      model, dataset.x_train, dataset.y_train, idx,
      jax.random.fold_in(root_key(config), KEY_PRETRAINED), recipe).params)
  wall = time.time() - t0
  check_finite(params, 'training the pretrained model')
  accs = evaluate_sets(model, params, dataset, split)
  checkpoint.save_checkpoint(path, params, checkpoint_meta(
      config, dataset, split, 'pretrained', accuracy=accs, wall_time_s=wall,
      pretrain_source=used, pretrain_records=int(idx.size), pretrain_epochs=int(recipe.epochs)))
  log(f'[pretrained] done in {wall:.1f}s: {format_accs(accs)}')
  return path


def load_init_params(config, dataset, split, path: str):
  """Params of the checkpoint ``path`` (a model of this config that never saw Du), checked
  against the workdir's model and data (not its split: it may come from another one)."""
  want = {k: v for k, v in expected_meta(config, dataset, split).items()
          if k not in ('split_hash', 'dataset_fingerprint')}
  return checkpoint.restore_model(path, expect=want)[1]


def unlearn_data(config, dataset, split, workdir: str, *, init_params=None, sisa=None,
                 log: Callable[[str], None] = log_to_stdout):
  """The :class:`jaxaudit.unlearn.UnlearnData` of a workdir's split, as every unlearning run
  of the workdir sees it (``jaxaudit unlearn``, ``jaxaudit tune``).

  Args:
    init_params: params of a model that never saw Du (``--init_checkpoint``); for a text
      workdir None means its base LM (:func:`text_base`, what ``lm_retrain`` fine-tunes).
    sisa: the SISA state of a SISA original, or None.
  A text workdir's data also carries the refusal answer of ``lm_idk``
  (:func:`jaxaudit.text.setup.refusal_tokens`).
  """
  from jaxaudit import unlearn as unlearn_lib
  text_kw = {}
  if is_text(config):
    from jaxaudit.text.setup import refusal_tokens
    if init_params is None:
      init_params = text_base(config, dataset, workdir, log)
    text_kw = dict(refusal=refusal_tokens(dataset))
  return unlearn_lib.make_unlearn_data(dataset, split, recipe_from_config(config),
                                       init_checkpoint_params=init_params, sisa=sisa, **text_kw)


def task_of(config, dataset, workdir: str, log: Callable[[str], None] = log_to_stdout):
  """The audit's task: classification, or for text the language-model task whose
  verifiers fine-tune the workdir's base LM."""
  from jaxaudit.tasks import for_dataset
  if not is_text(config):
    return for_dataset(dataset)
  from jaxaudit.tasks.language import LanguageModeling
  return LanguageModeling.for_dataset(dataset, base_params=text_base(config, dataset, workdir,
                                                                     log))


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

  task = task_of(config, dataset, workdir, log)
  res = train_model(model, dataset.x_train, dataset.y_train, subset, key, recipe,
                    callback=progress, init_params=task.initial_params()[0], loss=task.loss())
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


def _train_sisa_and_save(config, dataset, split, workdir, log) -> dict[str, Any]:
  model = model_from_config(config, dataset)
  recipe = recipe_from_config(config)
  sett = sisa_settings(config, model)
  path = os.path.join(workdir, 'models', SISA_DIR)
  if checkpoint.exists(path):
    try:
      _, state, meta = load_sisa_state(
          path, expect=dict(expected_meta(config, dataset, split), **sisa_expect(config)),
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


def train_many(items, log: Callable[[str], None] = log_to_stdout) -> list[str]:
  """Trains the missing originals and retrains of several classifier workdirs as ONE ensemble.

  The workdirs differ only by seed (the sweep's initialisations of one entry and forget
  setting): same data, model and recipe, each with its own split and keys. Every missing
  ``models/original`` and ``models/retrain`` becomes one member of a single
  :func:`jaxaudit.train.train_ensemble` program (member k equals the lone run of
  :func:`train_and_evaluate` with its key and subset, so the checkpoints are the ones it would
  write) and is saved as it would save it; :func:`train_and_evaluate` then reuses them.

  Args:
    items: a sequence of (config, workdir).
  Returns:
    The checkpoint paths written ([] when nothing was missing, for text workdirs, SISA
    configs or workdirs whose model or recipe differ: those are left to
    :func:`train_and_evaluate`).
  """
  jobs, prepared = [], []
  for config, workdir in items:
    if is_text(config) or sisa_settings(config) is not None:
      return []
    validate_config(config, training=True)
    dataset = preflight(config, workdir)
    dataset, split = prepare(config, workdir, lambda s: None, dataset=dataset)
    prepared.append((config, workdir, dataset, split))
    kinds = [('original', split.train, KEY_ORIGINAL)]
    if config.get('train_retrain', True):
      kinds.append(('retrain', split.retain, KEY_RETRAIN))
    for kind, subset, role in kinds:
      if not checkpoint.exists(os.path.join(workdir, 'models', kind)):
        jobs.append((config, workdir, dataset, split, kind, subset, role_key(config, role)))
  if len(jobs) < 2:
    return []
  config0, _, dataset0, *_ = jobs[0]
  model, recipe = model_from_config(config0, dataset0), recipe_from_config(config0)
  for config, workdir, dataset, *_ in jobs[1:]:
    if (dataset.fingerprint != dataset0.fingerprint or model_from_config(config, dataset) != model
        or recipe_from_config(config) != recipe):
      return []
  log(f'[train] {len(jobs)} models ({", ".join(sorted({j[4] for j in jobs}))}) of '
      f'{len({j[1] for j in jobs})} workdir(s) as one {config0.model} ensemble, '
      f'{recipe.epochs} epochs')
  t0 = time.time()
  res = train_ensemble(model, dataset0.x_train, dataset0.y_train, [j[5] for j in jobs],
                       jnp.stack([j[6] for j in jobs]), recipe,
                       callback=lambda e, l: log(f'[train] epoch {e + 1}/{recipe.epochs} '
                                                 f'({time.time() - t0:.1f}s)'))
  params = jax.block_until_ready(res.params)
  wall = (time.time() - t0) / len(jobs)
  written, diverged = [], set(res.diverged())
  for k, (config, workdir, dataset, split, kind, subset, _) in enumerate(jobs):
    if k in diverged:
      log(f'[train] {workdir} {kind}: diverged; left to the per-workdir run to report')
      continue
    member = unstack(params, k)
    check_finite(member, f'training {kind}')
    path = os.path.join(workdir, 'models', kind)
    accs = evaluate_sets(model, member, dataset, split)
    checkpoint.save_checkpoint(path, member, checkpoint_meta(
        config, dataset, split, kind, accuracy=accs, wall_time_s=wall,
        trained_in_ensemble=dict(members=len(jobs), wall_time_s=time.time() - t0)),
        overwrite=True)
    log(f'[train] {path}: {format_accs(accs)}')
    written.append(path)
  return written


def run_audit(config, workdir: str, *, target: str | None = None, logits_file: str | None = None,
              out_dir: str | None = None, overwrite: bool = False,
              reference_file: str | None = None, use_bank: bool = False,
              groups_file: str | None = None, token_logprobs_file: str | None = None,
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
    use_bank: draw each record's verifiers from the workdir's verifier bank
      (:func:`workdir_bank`; built once) instead of training K for this request.
    groups_file: the units of deletion of the bank (see :func:`run_stream_audit`).
    token_logprobs_file: a language model's per-token log-probabilities on the
      workdir's records (:mod:`jaxaudit.text.logprobs`): the black-box target of
      a text workdir.
  Returns:
    (AuditResult, report directory).
  """
  from jaxaudit.audit import audit, load_reference_file
  from jaxaudit.audit.report import write_report
  if out_dir:
    io_utils.check_replaceable(out_dir, overwrite=overwrite, what='--out directory')
  if sum(map(bool, (target, logits_file, token_logprobs_file))) > 1:
    raise ConfigError('give one of --target, --logits and --token_logprobs')
  if target:   # before prepare() writes anything
    checkpoint.load_meta(target_path(workdir, target))
  for f, what in ((logits_file, 'logits file'), (token_logprobs_file, 'token log-prob file')):
    if f and not os.path.isfile(f):
      raise ConfigError(f'{what} {f} does not exist')
  if token_logprobs_file and not is_text(config):
    raise ConfigError('--token_logprobs audits a language model: the workdir must hold a text '
                      "data set (dataset = 'text:NAME')")
  if logits_file and is_text(config):
    raise ConfigError('a text workdir audits a black-box language model through '
                      '--token_logprobs=FILE.npz, not --logits')
  dataset = preflight(config, workdir)
  reference = load_reference_file(reference_file, dataset) if reference_file else None
  dataset, split = prepare(config, workdir, log, dataset=dataset)
  if token_logprobs_file:
    from jaxaudit.text.logprobs import target_from_token_logprobs
    tgt = target_from_token_logprobs(token_logprobs_file, dataset)
  else:
    tgt = resolve_target(config, dataset, split, workdir, target, logits_file)
  out = out_dir or os.path.join(workdir, 'audits', tgt.name)
  io_utils.check_replaceable(out, overwrite=overwrite, what='report directory')
  bank = None
  if use_bank:
    from jaxaudit.audit.requests import read_groups
    k, b = int(config.audit.num_verifiers), int(config.audit.get('bank_size', 64))
    if b < 2 * k:
      raise ConfigError(f'a bank of {b} members leaves too few OUT members for K={k} verifiers '
                        f'per record; set config.audit.bank_size >= {2 * k}')
    groups = read_groups(groups_file, len(dataset.x_train)) if groups_file else None
    bank = workdir_bank(config, dataset, split, workdir, groups=groups, log=log)
  result = audit(tgt, dataset, split, verifier_model=model_from_config(config, dataset),
                 recipe=recipe_from_config(config), settings=audit_settings(config),
                 cache_dir=os.path.join(workdir, 'verifiers'), log=log, reference=reference,
                 bank=bank, task=task_of(config, dataset, workdir, log))
  write_report(result, out, overwrite=overwrite)
  log(f'[audit] {tgt.name}: {result.summary()}')
  log(f'[audit] report: {os.path.join(out, "report.md")}')
  return result, out


def workdir_bank(config, dataset, split, workdir: str, *, groups=None,
                 log: Callable[[str], None] = log_to_stdout):
  """The workdir's verifier bank (WORKDIR/bank; WORKDIR/bank-GROUPSHASH for given groups),
  built or grown to ``config.audit.bank_size`` members with the config's model and recipe."""
  import hashlib
  from jaxaudit.audit import bank as bank_lib
  from jaxaudit.tasks import for_dataset
  if is_text(config):
    raise ConfigError('verifier banks and request streams are not available for language '
                      'models yet: audit each request with `jaxaudit audit --target=...`')
  name = 'bank' if groups is None else 'bank-' + hashlib.sha256(
      np.asarray(groups, np.int64).tobytes()).hexdigest()[:12]
  return bank_lib.build_bank(
      model_from_config(config, dataset), dataset, split.train, recipe_from_config(config),
      size=int(config.audit.get('bank_size', 64)), groups=groups,
      ratio=float(config.audit.get('subset_ratio', 0.15)),
      member_sample=int(config.audit.get('member_sample', 1000)),
      seed=int(config.audit.get('seed', config.seed)), path=os.path.join(workdir, name),
      loss=for_dataset(dataset).loss(), log=log)


def run_stream_audit(config, workdir: str, requests_file: str, *, target: str | None = None,
                     logits_file: str | None = None, groups_file: str | None = None,
                     out_dir: str | None = None, overwrite: bool = False, batch: int = 256,
                     log: Callable[[str], None] = log_to_stdout):
  """Audits one model against every deletion request of a requests file.

  Each request gets a verdict from the per-record test against the
  workdir's verifier bank (:mod:`jaxaudit.audit.stream`); verdicts are
  appended to OUT/verdicts.jsonl batch by batch, and a rerun skips the
  requests already there (resume). OUT/summary.json and summary.md hold the
  verdict table, the p-value histogram and the flagged records.

  Args:
    requests_file: JSON lines (:func:`jaxaudit.audit.requests.read_requests`).
    groups_file: (n_pool,) group ids (.npy/.npz) for ``groups`` requests and the bank's
      units of deletion (None: every record its own group).
    out_dir: default WORKDIR/streams/TARGET.
    batch: requests per batched program.
  Returns:
    (summary dict, output directory).
  """
  from jaxaudit.audit import requests as requests_lib
  from jaxaudit.audit.stream import StreamAuditor, StreamSettings
  if out_dir:
    io_utils.check_replaceable(out_dir, overwrite=overwrite, what='--out directory')
  if target and not logits_file:
    checkpoint.load_meta(target_path(workdir, target))
  dataset = preflight(config, workdir)
  dataset, split = prepare(config, workdir, log, dataset=dataset)
  groups = requests_lib.read_groups(groups_file, len(dataset.x_train)) if groups_file else None
  reqs = requests_lib.read_requests(requests_file, train=split.train, groups=groups)
  tgt = resolve_target(config, dataset, split, workdir, target, logits_file)
  out = out_dir or os.path.join(workdir, 'streams', tgt.name)
  if os.path.exists(out) and not io_utils.written_by_jaxaudit(out) and not overwrite:
    io_utils.check_replaceable(out, overwrite=False, what='stream report directory')
  os.makedirs(out, exist_ok=True)
  io_utils.mark(out, 'stream_audit')
  done = requests_lib.done_ids(out)
  todo = [r for r in reqs if r[0] not in done]
  log(f'[stream] {len(reqs)} requests in {requests_file}: {len(done & {r[0] for r in reqs})} '
      f'already audited, {len(todo)} to go')
  a = config.audit
  settings = StreamSettings(alpha=float(a.get('alpha', 0.05)), fdr=float(a.get('fdr', 0.05)),
                            ref_sample=int(a.get('ref_sample', 5000)),
                            seed=int(a.get('seed', config.seed)))
  if todo:
    bank = workdir_bank(config, dataset, split, workdir, groups=groups, log=log)
    model = model_from_config(config, dataset)
    auditor = StreamAuditor(tgt, dataset, split, bank, model, settings, log=log)
    t0 = time.time()
    for i in range(0, len(todo), batch):
      for r in auditor.audit(todo[i:i + batch]):
        io_utils.append_jsonl(os.path.join(out, requests_lib.VERDICTS), r)
      log(f'[stream] {min(i + batch, len(todo))}/{len(todo)} requests ({time.time() - t0:.1f}s)')
  ids = {r[0] for r in reqs}
  rows = [r for r in io_utils.read_jsonl(os.path.join(out, requests_lib.VERDICTS))
          if str(r['id']) in ids]
  summ = requests_lib.summary(rows, settings.alpha)
  io_utils.write_json(os.path.join(out, 'summary.json'), summ)
  io_utils.write_text(os.path.join(out, 'summary.md'), requests_lib.summary_markdown(summ,
                                                                                      tgt.name))
  log(f'[stream] {tgt.name}: ' + ', '.join(f'{k} {v}' for k, v in summ['decisions'].items()))
  log(f'[stream] report: {os.path.join(out, "summary.md")}')
  return summ, out


def run_unlearn(config, workdir: str, method: str, hparams: dict | None = None, *,
                out_name: str | None = None, init_checkpoint: str | None = None,
                overwrite: bool = False,
                log: Callable[[str], None] = log_to_stdout) -> dict[str, Any]:
  """Unlearns Du from WORKDIR/models/original with ``method``; saves Mu.

  The checkpoint goes to WORKDIR/models/unlearned/OUT_NAME (default: the
  method name) with the method, its hyper-parameters and its wall time in
  the metadata. An existing checkpoint with the same method and
  hyper-parameters is reused. ``init_checkpoint`` names a checkpoint of the
  same model that never saw Du (for ``warmstart_retrain`` / ``warmstart_finetune``;
  without one they start from :func:`pretrained_checkpoint`).

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
        and (not is_sisa or all(meta.get(k) == v for k, v in sisa_expect(config).items()))):
      checkpoint.check_meta(meta, expected_meta(config, dataset, split), path)
      log(f'[unlearn] reusing {path}')
      return dict(method=method, hparams=hp, path=path, wall_time_s=meta.get('wall_time_s'),
                  accuracy=meta.get('accuracy'))
  state, extra = None, {}
  if is_sisa:
    model, state, smeta = load_sisa_state(
        sisa_path, expect=dict(expected_meta(config, dataset, split), **sisa_expect(config)),
        train_indices=split.train)
    params = state.final_params
    extra = dict(ensemble_size=state.layout.shards, aggregate=MEAN_SOFTMAX, sisa_source=source,
                 **{k: smeta[k] for k in ('shards', 'slices', 'slice_epochs', 'strategy')})
  else:
    model, params, _ = checkpoint.restore_model(orig, expect=expected_meta(config, dataset, split))
  if not init_checkpoint and method in WARM_START_METHODS:
    init_checkpoint = pretrained_checkpoint(config, workdir, log=log)
  init_params = (load_init_params(config, dataset, split, init_checkpoint) if init_checkpoint
                 else None)
  data = unlearn_data(config, dataset, split, workdir, init_params=init_params, sisa=state,
                      log=log)
  log(f'[unlearn] {method} ({meth.family}) with {hp}')
  t0 = time.time()
  with loop.divergence_probe() as probe:
    new = jax.block_until_ready(meth.fn(params, model, data, method_key(config, method)))
  wall = time.time() - t0
  check_finite(new, f'unlearning with {method} ({hp})', probe.describe())
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
