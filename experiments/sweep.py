r"""The study sweep: data sets × unlearning methods × forget settings × seeds.

For every cell (entry, forget setting, seed, method) the sweep

1. trains or reuses the original model M and the retrain-from-scratch
   reference (one pipeline workdir per (entry, forget setting, seed):
   ``WORKDIR/runs/ENTRY-FORGET-sSEED``, Orbax checkpoints reused across cells
   and across restarts, see :mod:`jaxaudit.pipeline`);
2. runs the method (:func:`jaxaudit.pipeline.run_unlearn`, checkpoint reused);
3. audits Mu with jaxaudit's audit (verifiers trained once per workdir and
   cached) and with the peer auditors (population MIA, LiRA, RMIA,
   heuristics, the NeurIPS-23 score and, for the configured methods, U-LiRA);
4. appends ONE JSON line to the results table when the cell is complete.

Resumable: cells whose key is already in the results file are skipped; each
line is written with flush + fsync only once its cell is done, and a truncated
last line (a crash while writing) is removed on restart. Same seeds give the
same numbers, so an interrupted and restarted sweep ends with the same table
(timings aside). A method that fails yields a row with ``error``; a method that
is not registered is skipped with a logged note (no row, so it runs once it
exists).

  python experiments/sweep.py --config=experiments/configs/sweep_local.py:local \
      --workdir=runs/sweep
  jaxaudit report --results=runs/sweep/results.jsonl --out=runs/sweep/report

Cost accounting (the ``cost`` field of each row): for every auditor the models
it needs for this audit request, the FLOPs of training them (XLA
``cost_analysis`` of one compiled training step of the recipe — forward,
backward and optimiser update at the recipe's batch size — times the number of
steps) plus the FLOPs of its queries (``cost_analysis`` of the forward pass
per example times the records × views × models queried), and its wall time
(training of its models, measured when they were trained and stored in their
checkpoint metadata, plus this cell's scoring). Ratios are to the retrain
reference of the same workdir, trained in the same run. Unlearning runs inside
U-LiRA and the NeurIPS-23 score are counted as models and wall time but not
as FLOPs (methods differ too much for one formula).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import traceback
import zlib
from typing import Any, Callable, NamedTuple

from absl import app, flags

from jaxaudit import cli
from jaxaudit.errors import ConfigError, TrainingError
import numpy as np

FLAGS = flags.FLAGS

# Peer auditors, in report order.
PEER_NAMES = ('population_mia', 'lira', 'rmia', 'heuristics', 'neurips23', 'ulira')
# Keys of a row that depend on timing (ignored when comparing tables).
VOLATILE_KEYS = ('timing', 'cost', 'provenance')


# -----------------------------------------------------------------------------
# Plan.
# -----------------------------------------------------------------------------


class Cell(NamedTuple):
  entry: str
  forget: str
  seed: int
  method: str

  @property
  def key(self) -> str:
    return f'{self.entry}/{self.forget}/s{self.seed}/{self.method}'

  @property
  def group(self) -> tuple[str, str, int]:
    return (self.entry, self.forget, self.seed)


def _as_list(value, cast=str) -> list:
  if value is None:
    return []
  if isinstance(value, str):
    return [cast(v.strip()) for v in value.split(',') if v.strip()]
  if isinstance(value, (int, np.integer)):
    return [cast(value)]
  return [cast(v) for v in value]


def parse_forget(setting: str) -> tuple[str, Any]:
  """``random10`` → ('random', 0.10); ``class3`` / ``class3+5`` → ('classes', (3, 5))."""
  from jaxaudit.errors import ConfigError
  s = setting.strip()
  try:
    if s.startswith('random'):
      pct = float(s[len('random'):])
      if not 0 < pct < 100:
        raise ValueError
      return 'random', pct / 100.0
    if s.startswith('class'):
      classes = tuple(int(v) for v in s[len('class'):].split('+') if v)
      if not classes:
        raise ValueError
      return 'classes', classes
  except ValueError:
    pass
  raise ConfigError(f'forget setting {setting!r}: use randomPCT (e.g. random10) or classK '
                    '(e.g. class3, class3+5)')


def entry_names(config) -> list[str]:
  from jaxaudit.errors import ConfigError
  names = _as_list(config.datasets)
  for n in names:
    if n not in config.entries:
      raise ConfigError(f'datasets lists {n!r} but config.entries has only '
                        f'{sorted(config.entries.keys())}')
  return names


def entry_methods(config, entry: str) -> list[str]:
  e = config.entries[entry]
  own = _as_list(e.get('methods', ''))
  return own or _as_list(config.methods)


def plan_cells(config) -> list[Cell]:
  """Every cell of the sweep, in run order (grouped by workdir)."""
  cells = []
  for entry in entry_names(config):
    e = config.entries[entry]
    forgets = _as_list(e.get('forget_settings', '')) or _as_list(config.forget_settings)
    for f in forgets:
      parse_forget(f)
    for seed in _as_list(config.seeds, int):
      for f in forgets:
        for m in entry_methods(config, entry):
          cells.append(Cell(entry, f, seed, m))
  return cells


def cell_config(config, entry: str, forget: str, seed: int):
  """The pipeline config of one workdir (entry × forget setting × seed)."""
  c = copy.deepcopy(config.entries[entry].config)
  c.seed = int(seed)
  c.split.seed = int(seed)
  mode, value = parse_forget(forget)
  if mode == 'random':
    c.split.forget_fraction = float(value)
    c.split.forget_size = None
    c.split.forget_classes = None
  else:
    c.split.forget_classes = ','.join(str(v) for v in value)
    c.split.forget_size = None
  c.train_retrain = True
  return c


def base_method(config, method: str) -> str:
  """The registered method behind a name (``config.method_aliases`` maps variants)."""
  aliases = config.get('method_aliases')
  return str(aliases[method]) if aliases is not None and method in aliases else method


def method_hparams(config, entry: str, method: str) -> dict:
  hp = {}
  for src in (config.get('method_hparams'), config.entries[entry].get('method_hparams')):
    if src is not None and method in src:
      hp.update(src[method].to_dict() if hasattr(src[method], 'to_dict') else dict(src[method]))
  return hp


def peer_settings(config, entry: str) -> dict:
  p = config.peers.to_dict()
  own = config.entries[entry].get('peers')
  if own is not None:
    p.update(own.to_dict())
  return p


def group_dir(workdir: str, group: tuple[str, str, int]) -> str:
  entry, forget, seed = group
  return os.path.join(workdir, 'runs', f'{entry}-{forget}-s{seed}')


# -----------------------------------------------------------------------------
# The results table (JSON lines, append-only, crash-tolerant).
# -----------------------------------------------------------------------------


def clean_json(obj):
  """JSON-safe copy: NaN/inf → None, NumPy → Python, tuples → lists."""
  if isinstance(obj, dict):
    return {str(k): clean_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [clean_json(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return clean_json(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    return v if math.isfinite(v) else None
  return obj


def read_results(path: str, *, repair: bool = False,
                 log: Callable[[str], None] = lambda s: None) -> list[dict]:
  """Rows of a results file.

  A last line without its newline or that is not valid JSON is the trace of
  a crash while writing: it is ignored (and cut off the file if ``repair``).
  A damaged line elsewhere raises ConfigError (the file was edited or written
  by two processes at once).
  """
  from jaxaudit.errors import ConfigError
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    data = f.read()
  rows, pos = [], 0
  lines = data.split(b'\n')
  for i, line in enumerate(lines):
    end = pos + len(line) + 1
    last = i == len(lines) - 1
    if not line.strip():
      pos = end
      continue
    try:
      if last:   # no newline after it: incomplete write
        raise ValueError('no trailing newline')
      rows.append(json.loads(line))
    except ValueError as e:
      if not (last or all(not l.strip() for l in lines[i + 1:])):
        raise ConfigError(f'{path}: line {i + 1} is not valid JSON ({e}); the file is damaged '
                          'in the middle — fix or remove that line') from None
      log(f'[sweep] ignoring a truncated last line of {path} ({len(line)} bytes)')
      if repair:
        with open(path, 'r+b') as f:
          f.truncate(pos)
          f.flush()
          os.fsync(f.fileno())
      break
    pos = end
  return rows


def append_row(path: str, row: dict) -> None:
  """Appends one row as a JSON line, flushed and fsynced."""
  line = json.dumps(clean_json(row), sort_keys=True, allow_nan=False) + '\n'
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a', encoding='utf-8') as f:
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


def stable_row(row: dict) -> dict:
  """A row without its timing-dependent fields (for comparing tables)."""
  out = {k: v for k, v in row.items() if k not in VOLATILE_KEYS}
  peers = {}
  for name, p in (row.get('peers') or {}).items():
    peers[name] = {k: v for k, v in p.items()
                   if k != 'trained_now' and not k.endswith('_s')}   # timings, cache state
  if peers:
    out['peers'] = peers
  return out


# -----------------------------------------------------------------------------
# FLOPs.
# -----------------------------------------------------------------------------


def _flops_of(compiled) -> float:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get('flops', float('nan')))


def model_flops(model, input_shape, num_classes: int, recipe) -> dict[str, float]:
  """XLA cost analysis: FLOPs of one training step and of a forward per example."""
  import jax
  import jax.numpy as jnp
  import optax
  from jaxaudit.models import init_params
  from jaxaudit.train.recipe import make_optimizer
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), tuple(input_shape)))
  tx = make_optimizer(recipe, 1000)
  opt_state = jax.eval_shape(tx.init, params)
  b = int(recipe.batch_size)
  xb = jax.ShapeDtypeStruct((b,) + tuple(input_shape), jnp.float32)
  yb = jax.ShapeDtypeStruct((b,), jnp.int32)

  def step(p, s, x, y):
    def loss(q):
      lg = model.apply({'params': q}, x)
      return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()
    val, g = jax.value_and_grad(loss)(p)
    upd, s = tx.update(g, s, p)
    return optax.apply_updates(p, upd), s, val

  step_f = _flops_of(jax.jit(step).lower(params, opt_state, xb, yb).compile())
  fwd_f = _flops_of(jax.jit(lambda p, x: model.apply({'params': p}, x)).lower(params, xb).compile())
  return dict(step=step_f, forward_per_example=fwd_f / b, batch_size=b)


def train_flops(flops: dict, n_records: float, epochs: int) -> float:
  return flops['step'] * epochs * math.ceil(max(n_records, 1) / flops['batch_size'])


# -----------------------------------------------------------------------------
# One workdir: shared state of the cells of an (entry, forget, seed) group.
# -----------------------------------------------------------------------------


def _meta_wall(path: str) -> float | None:
  from jaxaudit import checkpoint
  try:
    return checkpoint.load_meta(path).get('wall_time_s')
  except Exception:   # noqa: BLE001 — a missing value only loses a timing
    return None


class Group:
  """Data, split, models and cached auditor ensembles of one workdir (lazy)."""

  def __init__(self, config, workdir: str, group: tuple[str, str, int], log):
    from jaxaudit import checkpoint, pipeline
    from jaxaudit.peers import train_shadows
    from jaxaudit.audit.verifiers import get_verifiers
    from jaxaudit.configs import recipe_from_config
    t0 = time.time()
    self.config = config
    self.entry, self.forget, self.seed = group
    self.cfg = cell_config(config, *group)
    self.wd = group_dir(workdir, group)
    self.log = log
    self.peers = peer_settings(config, self.entry)
    self.summary = pipeline.train_and_evaluate(self.cfg, self.wd, log)
    self.dataset, self.split = pipeline.prepare(self.cfg, self.wd, lambda s: None)
    self.model = pipeline.model_from_config(self.cfg, self.dataset)
    self.recipe = recipe_from_config(self.cfg)
    self.settings = pipeline.audit_settings(self.cfg)
    self.vrecipe = (self.recipe.replace(epochs=int(self.settings.verifier_epochs))
                    if self.settings.verifier_epochs else self.recipe)
    _, self.params, _ = checkpoint.restore_model(
        os.path.join(self.wd, 'models', 'original'),
        expect=pipeline.expected_meta(self.cfg, self.dataset, self.split))
    self.verifier_dir = os.path.join(self.wd, 'verifiers')
    self.peer_dir = os.path.join(self.wd, 'peers')
    # Verifiers (jaxaudit's audit): one ensemble per ratio, trained once.
    self.verifier_sets = []
    for ratio in self.settings.ratios:
      vs = get_verifiers(self.model, self.dataset, self.split, self.vrecipe,
                         num_verifiers=self.settings.num_verifiers, ratio=ratio,
                         member_sample=self.settings.member_sample, seed=self.settings.seed,
                         cache_dir=self.verifier_dir, log=log)
      wall = vs.wall_time_s if not vs.from_cache else _meta_wall(
          os.path.join(self.verifier_dir, vs.cache_key))
      self.verifier_sets.append((vs, wall or 0.0))
    # LiRA shadows (shared by LiRA and U-LiRA).
    self.shadows, self.shadow_wall = None, 0.0
    s = int(self.peers.get('lira_shadows', 0) or 0)
    if s:
      pop = np.union1d(self.split.train, self.split.ref)
      self.shadows = train_shadows(self.model, self.dataset, self.recipe, pop, num_shadows=s,
                                   seed=self.seed, cache_dir=self.peer_dir, tag='lira-shadows',
                                   log=log)
      self.shadow_wall = (self.shadows.wall_time_s if not self.shadows.from_cache else
                          _meta_wall(os.path.join(self.peer_dir,
                                                  f'lira-shadows-{self.shadows.cache_key}'))) or 0.0
    self.flops = model_flops(self.model, self.dataset.input_shape, self.dataset.num_classes,
                             self.recipe)
    self.retrain_s = float(self.summary['retrain'].get('wall_time_s') or float('nan'))
    self.retrain_flops = train_flops(self.flops, len(self.split.retain), self.recipe.epochs)
    self._unlearn_data = None
    self.memo = {}   # verifier logits shared by the audits of this request (audit_many)
    self.setup_s = time.time() - t0

  def finite_outputs(self, target) -> bool:
    """Whether a Target's logits on a sample of D_ref and test are all finite."""
    from jaxaudit.train import predict_logits
    x = np.concatenate([self.dataset.x_train[self.split.ref[:256]],
                        self.dataset.x_test[self.split.test[:256]]])
    if target.fn is not None:
      logits = np.asarray(target.fn(x))
    else:
      logits = np.asarray(predict_logits(target.model, target.params, x))
    return bool(np.all(np.isfinite(logits)))

  @property
  def unlearn_data(self):
    if self._unlearn_data is None:
      from jaxaudit import unlearn as unlearn_lib
      self._unlearn_data = unlearn_lib.make_unlearn_data(self.dataset, self.split, self.recipe)
    return self._unlearn_data

  def method_key(self, method: str):
    import jax
    from jaxaudit import pipeline
    return jax.random.fold_in(pipeline.role_key(self.cfg, pipeline.KEY_UNLEARN),
                              zlib.crc32(method.encode()) & 0x7FFFFFFF)

  def sizes(self) -> dict:
    s = self.split
    return dict(train=len(s.train), forget=len(s.forget), retain=len(s.retain), ref=len(s.ref),
                test=len(s.test))


# -----------------------------------------------------------------------------
# One cell.
# -----------------------------------------------------------------------------


def _short_peer(res, extra: dict | None = None) -> dict:
  d = res.details
  out = dict(score=res.score, decision=res.decision, models=res.cost['models_trained'],
             wall_s=res.cost['wall_time_s'])
  for k in ('p_value', 'auc', 'forget_score'):
    if k in d:
      out[k] = d[k]
  if 'tpr_at_fpr' in d:
    out['tpr_at_fpr'] = d['tpr_at_fpr']
  if 'trained_now' in d:
    out['trained_now'] = d['trained_now']
  out.update(extra or {})
  return out


# The method name of the reference row (M itself, no unlearning) and its family.
ORIGINAL = 'original'
ORIGINAL_FAMILY = 'none (original M)'


class _Identity:
  """Stands in for an UnlearnMethod in the ``original`` row: returns params unchanged."""
  family = ORIGINAL_FAMILY
  hparams: dict = {}

  @staticmethod
  def fn(params, model, data, key):
    del model, data, key
    return params


def _ulira_fn(g: Group, meth):
  import jax
  import jax.numpy as jnp

  def fn(params, key, forget_indices, retain_indices):
    data = g.unlearn_data._replace(forget=jnp.asarray(forget_indices, jnp.int32),
                                   retain=jnp.asarray(retain_indices, jnp.int32))
    return jax.block_until_ready(meth.fn(params, g.model, data, key))
  return fn


def _neurips23_group(g: Group, meth, name: str, base: str, hp: dict, n: int):
  """N unlearned models (seeds 1..N of the method key), checkpointed for reuse."""
  import jax
  from jaxaudit import checkpoint, pipeline
  from jaxaudit import unlearn as unlearn_lib
  path = os.path.join(g.wd, 'models', 'unlearned_group', f'{name}-x{n}')
  method = base
  if checkpoint.exists(path):
    meta = checkpoint.load_meta(path)
    if meta.get('method') == method and meta.get('hparams') == clean_json(hp) \
        and meta.get('ensemble_size') == n:
      params, meta = checkpoint.load_checkpoint(path)
      return params, float(meta.get('wall_time_s') or 0.0)
  t0 = time.time()
  if base == ORIGINAL:
    from jaxaudit.train import stack
    return stack([g.params] * n), 0.0
  params = jax.block_until_ready(unlearn_lib.run_method(
      meth, g.params, g.model, g.unlearn_data, g.method_key(base), seeds=list(range(1, n + 1))))
  wall = time.time() - t0
  checkpoint.save_checkpoint(path, params, pipeline.checkpoint_meta(
      g.cfg, g.dataset, g.split, 'unlearned_group', ensemble_size=n, method=method,
      hparams=clean_json(hp), wall_time_s=wall))
  return params, wall


def _applies(setting, method: str) -> bool:
  names = _as_list(setting)
  return 'all' in names or method in names


def run_cell(g: Group, cell: Cell, log) -> dict:
  """Unlearn, audit and peer-audit one cell; returns its row (``error`` on failure)."""
  from jaxaudit import pipeline
  from jaxaudit import unlearn as unlearn_lib
  from jaxaudit.audit import Target, audit
  from jaxaudit import peers as peers_lib
  t_cell = time.time()
  hp = method_hparams(g.config, cell.entry, cell.method)
  base = base_method(g.config, cell.method)
  row = dict(key=cell.key, kind='sweep', entry=cell.entry, data=g.dataset.name,
             model=g.cfg.model, method=cell.method, base_method=base, forget=cell.forget,
             forget_mode=parse_forget(cell.forget)[0], seed=cell.seed, sizes=g.sizes(),
             error=None,
             accuracy=dict(original=g.summary['original'].get('accuracy'),
                           retrain=g.summary['retrain'].get('accuracy')),
             timing=dict(setup_s=g.setup_s), provenance=dict(workdir=g.wd))
  g.setup_s = 0.0   # counted once, in the first cell of the group
  if base == ORIGINAL:   # the reference row: M itself, no unlearning
    meth = _Identity()
    row.update(family=ORIGINAL_FAMILY, hparams={})
    row['accuracy']['unlearned'] = g.summary['original'].get('accuracy')
    row['timing'].update(unlearn_s=0.0, method_wall_s=0.0)
    target = Target.from_params(g.model, g.params, name=cell.method)
  else:
    try:
      meth = unlearn_lib.get_method(base, **hp)
    except Exception as e:   # noqa: BLE001 — invalid hyper-parameters etc.
      row.update(family=None, hparams=hp, error=f'method: {type(e).__name__}: {e}')
      return row
    row['family'] = meth.family
    row['hparams'] = clean_json(dict(meth.hparams))
    try:
      t0 = time.time()
      res = pipeline.run_unlearn(g.cfg, g.wd, base, hp, out_name=cell.method,
                                 log=lambda s: None)
      unlearn_s = time.time() - t0
      row['accuracy']['unlearned'] = res['accuracy']
      row['timing'].update(unlearn_s=unlearn_s, method_wall_s=res.get('wall_time_s'))
      # resolve_target checks the checkpoint against this request and audits an ensemble
      # (method "sisa") as one black box: the log of its mean softmax.
      target = pipeline.resolve_target(g.cfg, g.dataset, g.split, g.wd, target=res['path'])
      target.name = cell.method
    except Exception as e:   # noqa: BLE001 — a failing method is a result, not a crash
      row['error'] = f'unlearn: {type(e).__name__}: {e}'
      row['traceback'] = traceback.format_exc(limit=4)[-2000:]
      if isinstance(e, TrainingError):   # non-finite weights: refused by run_unlearn
        row['diverged'] = True
      log(f'[sweep] {cell.key}: {row["error"]}')
      return row
  if not g.finite_outputs(target):
    row['error'] = 'diverged: Mu outputs NaN/inf logits (no auditor can score it)'
    row['diverged'] = True
    log(f'[sweep] {cell.key}: {row["error"]}')
    return row

  # jaxaudit's audit.
  try:
    t0 = time.time()
    vs = g.verifier_sets[0][0] if len(g.verifier_sets) == 1 else None
    result = audit(target, g.dataset, g.split, verifier_model=g.model, recipe=g.recipe,
                   settings=g.settings, cache_dir=g.verifier_dir, verifiers=vs, memo=g.memo)
    audit_s = time.time() - t0
    d = result.details
    row['ours'] = dict(
        decision=result.decision, direction=result.direction, p_value=result.p_value,
        effect_auc=result.effect_auc, effect_auc_ci=result.effect_auc_ci,
        forgetting_score=result.forgetting_score,
        forgetting_score_ci=result.forgetting_score_ci, power=result.power,
        flagged=len(result.flagged_records), member_auc=d.get('member_auc'),
        exact_inputs_masked=d.get('exact_inputs_masked'),
        accuracy=d.get('accuracy', {}).get('target'), subset_ratio=d['settings']['subset_ratio'])
    row['timing']['audit_s'] = audit_s
  except Exception as e:   # noqa: BLE001
    row['error'] = f'audit: {type(e).__name__}: {e}'
    row['traceback'] = traceback.format_exc(limit=4)[-2000:]
    log(f'[sweep] {cell.key}: {row["error"]}')
    return row

  # Peer auditors.
  p = g.peers
  alpha = float(g.settings.test.alpha)
  peers: dict[str, dict] = {}

  def attempt(name, fn):
    t = time.time()
    try:
      peers[name] = fn()
    except Exception as e:   # noqa: BLE001 — one peer failing keeps the row
      peers[name] = dict(error=f'{type(e).__name__}: {e}', wall_s=time.time() - t)
      log(f'[sweep] {cell.key}: peer {name} failed: {e}')

  if p.get('population_mia', True):
    attempt('population_mia', lambda: _short_peer(peers_lib.population_mia(
        target, g.dataset, g.split, seed=g.seed, alpha=alpha)))
  if g.shadows is not None:
    attempt('lira', lambda: _short_peer(peers_lib.lira(
        target, g.dataset, g.split, g.model, g.recipe, shadows=g.shadows, seed=g.seed,
        alpha=alpha)))
  if int(p.get('rmia_refs', 0) or 0):
    attempt('rmia', lambda: _short_peer(peers_lib.rmia(
        target, g.dataset, g.split, g.model, g.recipe, num_refs=int(p['rmia_refs']),
        seed=g.seed, cache_dir=g.peer_dir, alpha=alpha)))
  if p.get('heuristics', True):
    def _heur():
      r = peers_lib.heuristics_audit(target, g.dataset, g.split, g.model,
                                     g.verifier_sets[0][0].params, seed=g.seed, ks_rule=True,
                                     alpha=alpha)
      sets = r.details['sets']
      return _short_peer(r, dict(p_value=(r.details.get('ks') or {}).get('p_value'),
                                 gap=sets['forget'].get('gap'),
                                 agreement=sets['forget'].get('agreement'),
                                 models=g.settings.num_verifiers))
    attempt('heuristics', _heur)
  n23 = int(p.get('neurips23_models', 0) or 0)
  # NeurIPS-23 and U-LiRA re-run the method on single models; an ensemble method (sisa)
  # unlearns a SISA original, which they do not have.
  per_model = getattr(meth, 'output', 'single') == 'single'
  for name, on in (('neurips23', n23 and _applies(p.get('neurips23_methods', 'all'), cell.method)),
                   ('ulira', g.shadows is not None
                    and _applies(p.get('ulira_methods', ''), cell.method))):
    if on and not per_model:
      peers[name] = dict(error=f'not applicable: {cell.method} outputs an ensemble; {name} '
                               're-runs the method on single models', wall_s=0.0)
  if per_model and n23 and _applies(p.get('neurips23_methods', 'all'), cell.method):
    def _n23():
      params_grp, grp_wall = _neurips23_group(g, meth, cell.method, base, hp, n23)
      r = peers_lib.neurips23_audit(params_grp, g.dataset, g.split, g.model, g.recipe,
                                    seed=g.seed, cache_dir=g.peer_dir)
      return _short_peer(r, dict(unlearn_group_s=grp_wall, models=2 * n23,
                                 retrain_group_s=r.details.get('retrain_s'),
                                 retrain_cache_key=r.details.get('cache_key')))
    attempt('neurips23', _n23)
  if per_model and g.shadows is not None and _applies(p.get('ulira_methods', ''), cell.method):
    attempt('ulira', lambda: _short_peer(peers_lib.ulira(
        target, g.dataset, g.split, g.model, g.recipe, _ulira_fn(g, meth), shadows=g.shadows,
        seed=g.seed, alpha=alpha)))
  row['peers'] = peers
  row['cost'] = cell_cost(g, row)
  row['timing']['cell_s'] = time.time() - t_cell
  return row


def cell_cost(g: Group, row: dict) -> dict:
  """Models, FLOPs and wall time per auditor for this audit request (see module doc)."""
  s, f = g.split, g.flops
  fwd = f['forward_per_example']
  n_du, n_ref, n_r = len(s.forget), len(s.ref), len(s.retain)
  views = len(g.settings.views) if isinstance(g.settings.views, tuple) else (
      6 if g.dataset.is_image else 2)
  vs, vs_wall = g.verifier_sets[0]
  k = vs.num_models
  sub = vs.subsets.shape[1]
  out = dict(retrain=dict(models=1, flops=g.retrain_flops, wall_s=g.retrain_s))
  q_ours = (n_du + min(n_ref, g.settings.ref_sample) + len(vs.members)) * views
  out['ours'] = dict(models=k * len(g.verifier_sets),
                     flops=len(g.verifier_sets) * k * train_flops(f, sub, g.vrecipe.epochs)
                     + q_ours * (k + 1) * fwd,
                     wall_s=sum(w for _, w in g.verifier_sets) + row['timing'].get('audit_s', 0.0))
  peers = row.get('peers', {})
  if 'population_mia' in peers:
    out['population_mia'] = dict(models=0, flops=(n_du + n_ref) * fwd,
                                 wall_s=peers['population_mia'].get('wall_s', 0.0))
  if 'heuristics' in peers:
    q = sum(min(2000, n) for n in (n_du, n_r, len(s.test), n_ref))
    out['heuristics'] = dict(models=k, flops=k * train_flops(f, sub, g.vrecipe.epochs)
                             + q * (k + 1) * fwd,
                             wall_s=vs_wall + peers['heuristics'].get('wall_s', 0.0))
  if g.shadows is not None:
    sh = g.shadows
    half = len(sh.population) / 2.0
    sh_flops = sh.num_models * train_flops(f, half, g.recipe.epochs)
    q = (n_du + n_ref) * (2 if g.dataset.is_image else 1) * (sh.num_models + 1)
    if 'lira' in peers:
      out['lira'] = dict(models=sh.num_models, flops=sh_flops + q * fwd,
                         wall_s=g.shadow_wall + peers['lira'].get('wall_s', 0.0))
    if 'ulira' in peers and 'error' not in peers['ulira']:
      out['ulira'] = dict(models=2 * sh.num_models, flops=sh_flops + q * fwd,
                          wall_s=g.shadow_wall + peers['ulira'].get('wall_s', 0.0),
                          flops_note='excludes the S unlearning runs')
  if 'rmia' in peers and 'error' not in peers['rmia']:
    r = peers['rmia']
    nr = int(g.peers.get('rmia_refs', 0))
    trained_now = r.get('trained_now', 0)
    ref_wall = 0.0
    if not trained_now:
      ref_wall = _rmia_wall(g) or 0.0
    out['rmia'] = dict(models=nr, flops=nr * train_flops(f, n_r // 2, g.recipe.epochs)
                       + (n_du + n_ref + 1000) * (nr + 1) * fwd,
                       wall_s=ref_wall + r.get('wall_s', 0.0))
  if 'neurips23' in peers and 'error' not in peers['neurips23']:
    r = peers['neurips23']
    n = int(g.peers.get('neurips23_models', 0))
    retrain_wall = r.get('retrain_group_s') or 0.0
    if not retrain_wall and r.get('retrain_cache_key'):   # cached: its stored training time
      retrain_wall = _meta_wall(os.path.join(
          g.peer_dir, f'neurips23-retrained-{r["retrain_cache_key"]}')) or 0.0
    call = r.get('wall_s', 0.0) - (r.get('retrain_group_s') or 0.0)
    out['neurips23'] = dict(models=2 * n, flops=n * train_flops(f, n_r, g.recipe.epochs)
                            + 2 * n * (n_du + 4000) * fwd,
                            wall_s=(retrain_wall + (r.get('unlearn_group_s') or 0.0)
                                    + max(call, 0.0)),
                            flops_note='excludes the N unlearning runs')
  for name, c in out.items():
    c['wall_ratio'] = c['wall_s'] / g.retrain_s if g.retrain_s > 0 else None
    c['flops_ratio'] = c['flops'] / g.retrain_flops if g.retrain_flops > 0 else None
  return out


def _rmia_wall(g: Group) -> float | None:
  import glob
  paths = sorted(glob.glob(os.path.join(g.peer_dir, 'rmia-refs-*')))
  walls = [_meta_wall(p) for p in paths]
  walls = [w for w in walls if w]
  return walls[0] if len(walls) == 1 else (max(walls) if walls else None)


# -----------------------------------------------------------------------------
# The sweep.
# -----------------------------------------------------------------------------


def _fmt_s(s: float) -> str:
  s = max(0, int(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def registered_methods() -> set[str]:
  from jaxaudit import unlearn as unlearn_lib
  return set(unlearn_lib.method_names()) | {ORIGINAL}


def run_sweep(config, workdir: str, results: str | None = None, *, max_cells: int | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) the sweep; returns every row of the results file.

  Args:
    config: a sweep config (see ``experiments/configs/sweep_local.py``).
    workdir: root of the per-group pipeline workdirs.
    results: the JSON-lines table (default WORKDIR/results.jsonl).
    max_cells: stop after computing this many new cells (simulates an
      interruption; None: run all).
    log: progress printer.
  """
  results = results or os.path.join(workdir, 'results.jsonl')
  os.makedirs(workdir, exist_ok=True)
  rows = read_results(results, repair=True, log=log)
  done = {r['key'] for r in rows}
  cells = plan_cells(config)
  for entry in entry_names(config):
    npz = config.entries[entry].config.get('npz')
    if npz and not os.path.exists(npz):
      log(f'[sweep] note: {entry} skipped: its data file {npz} does not exist')
      cells = [c for c in cells if c.entry != entry]
  known = registered_methods()
  missing = sorted({c.method for c in cells if base_method(config, c.method) not in known})
  if missing:
    log(f'[sweep] note: method(s) {missing} are not registered in jaxaudit.unlearn; their '
        'cells are skipped (no row is written, so they run once the methods exist)')
  runnable = [c for c in cells if base_method(config, c.method) in known]
  todo = [c for c in runnable if c.key not in done]
  total = len(runnable)
  log(f'[sweep] {total} cells ({len(cells) - total} skipped: unregistered), '
      f'{total - len(todo)} already in {results}, {len(todo)} to run')
  t0 = time.time()
  computed = 0
  groups: dict = {}
  for cell in todo:
    if max_cells is not None and computed >= max_cells:
      log(f'[sweep] stopping after {computed} cell(s) (--max_cells)')
      break
    if cell.group not in groups:
      groups.clear()    # one group in memory at a time
      log(f'[sweep] workdir {group_dir(workdir, cell.group)}')
      try:
        groups[cell.group] = Group(config, workdir, cell.group, log)
      except Exception as e:   # noqa: BLE001 — e.g. a data set that is not there
        groups[cell.group] = e
        log(f'[sweep] cannot prepare {cell.group}: {type(e).__name__}: {e}')
    g = groups[cell.group]
    if isinstance(g, Exception):
      row = dict(key=cell.key, kind='sweep', entry=cell.entry, method=cell.method,
                 forget=cell.forget, seed=cell.seed, error=f'setup: {type(g).__name__}: {g}')
    else:
      row = run_cell(g, cell, log)
    append_row(results, row)
    rows.append(clean_json(row))
    computed += 1
    n_done = total - len(todo) + computed
    elapsed = time.time() - t0
    eta = elapsed / computed * (len(todo) - computed)
    ours = row.get('ours') or {}
    verdict = row['error'] or (ours.get('decision', '?') +
                               (f' ({ours["direction"]})' if ours.get('direction') else ''))
    log(f'[sweep] {n_done}/{total} cells | elapsed {_fmt_s(elapsed)} | ETA {_fmt_s(eta)} | '
        f'{cell.key}: {verdict}')
  return rows


# -----------------------------------------------------------------------------
# Summaries printed at the end (the report renders the same tables).
# -----------------------------------------------------------------------------


def cost_table(rows: list[dict]) -> list[dict]:
  """Per (data, auditor): mean models, FLOPs ratio and wall ratio to one retrain."""
  acc: dict = {}
  for r in rows:
    for name, c in (r.get('cost') or {}).items():
      a = acc.setdefault((r.get('entry'), name), dict(models=[], flops_ratio=[], wall_ratio=[],
                                                      wall_s=[]))
      for k in a:
        if c.get(k) is not None:
          a[k].append(c[k])
  out = []
  for (entry, name), a in sorted(acc.items()):
    out.append(dict(entry=entry, auditor=name, cells=len(a['wall_s']),
                    **{k: float(np.mean(v)) if v else None for k, v in a.items()}))
  return out


def format_table(rows: list[dict], cols: list[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f'{v:.3g}'
    return '' if v is None else str(v)
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  lines += ['| ' + ' | '.join(fmt(r.get(c)) for c in cols) + ' |' for r in rows]
  return '\n'.join(lines)


def decision_summary(rows: list[dict]) -> str:
  lines = []
  for r in rows:
    if r.get('kind', 'sweep') != 'sweep':
      continue
    o = r.get('ours') or {}
    acc = (r.get('accuracy') or {}).get('unlearned') or {}
    d = r.get('error') or (o.get('decision', '') + (f' ({o["direction"]})' if o.get('direction')
                                                    else ''))
    lines.append(dict(key=r['key'], decision=d, p=o.get('p_value'),
                      score=o.get('forgetting_score'), acc_Du=acc.get('forget'),
                      acc_test=acc.get('test')))
  return format_table(lines, ['key', 'decision', 'p', 'score', 'acc_Du', 'acc_test'])


# -----------------------------------------------------------------------------
# Entry point.
# -----------------------------------------------------------------------------


def define_flags() -> None:
  from ml_collections import config_flags
  config_flags.DEFINE_config_file(
      'config', None, 'Sweep config file, e.g. experiments/configs/sweep_local.py:local.',
      lock_config=False)
  flags.DEFINE_string('workdir', None, 'Root directory of the sweep (checkpoints, results).')
  flags.DEFINE_string('results', None, 'Results table (JSON lines); default WORKDIR/results.jsonl.')
  flags.DEFINE_integer('max_cells', None, 'Stop after computing this many new cells.')
  flags.DEFINE_bool('cost_table', True, 'Print the cost table at the end.')


def check_main_args(argv, required: tuple[str, ...] = ('config', 'workdir')) -> None:
  """Common start of the experiment scripts' main(): no positional arguments, the
  ``required`` flags set, absl logging at WARNING (Orbax is chatty at INFO)."""
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  missing = [f'--{name}' for name in required if getattr(FLAGS, name) is None]
  if missing:
    raise ConfigError(f'{", ".join(missing)} required')
  from absl import logging
  logging.set_verbosity(logging.WARNING)


def main(argv):
  check_main_args(argv)
  results = FLAGS.results or os.path.join(FLAGS.workdir, 'results.jsonl')
  rows = run_sweep(FLAGS.config, FLAGS.workdir, results, max_cells=FLAGS.max_cells,
                   log=lambda s: print(s, flush=True))
  print('\n' + decision_summary(rows))
  if FLAGS.cost_table:
    print('\ncost per audit request, as a ratio to one retrain from scratch (same workdir):')
    print(format_table(cost_table(rows), ['entry', 'auditor', 'cells', 'models', 'flops_ratio',
                                          'wall_ratio', 'wall_s']))
  print(f'\nresults: {results}')


if __name__ == '__main__':
  define_flags()
  cli.run_script(main)
