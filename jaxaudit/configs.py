"""Default experiment configuration (ml_collections), shared by CLI and experiments.

Config files in ``experiments/configs/`` start from :func:`base_config` and
override fields; each accepts ``local`` (laptop/CI size) or ``full``.
"""

from __future__ import annotations

from typing import Any

import ml_collections

import os

import jax

from jaxaudit.data import AuditSplit, Dataset, load_dataset, make_split
from jaxaudit.data import splits as splits_lib
from jaxaudit.errors import ConfigError
from jaxaudit.models import get_model
from jaxaudit.train.devices import check_strategy, resolve_strategy
from jaxaudit.train.recipe import Recipe
from jaxaudit.train.sisa import default_slice_epochs

# fold_in tags of the root key (config.seed), one stream per role.
KEY_ORIGINAL, KEY_RETRAIN, KEY_UNLEARN, KEY_SISA = 1, 2, 4, 6
# fold_in tag (on the root key) of the warm-start methods' pretrained model.
KEY_PRETRAINED = 101


def base_config() -> ml_collections.ConfigDict:
  """The default audit pipeline: digits, MLP, 10% random forget set."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data.
  c.dataset = 'digits'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.npz = ml_collections.FieldReference(None, field_type=str)
  # Declared class count of a local npz data set (None: largest training label + 1).
  c.num_classes = ml_collections.FieldReference(None, field_type=int)
  # Split (see jaxaudit.data.make_split).
  c.split = ml_collections.ConfigDict()
  c.split.seed = 0
  c.split.ref_fraction = 0.15
  c.split.train_size = ml_collections.FieldReference(None, field_type=int)
  c.split.forget_fraction = 0.1
  c.split.forget_size = ml_collections.FieldReference(None, field_type=int)
  c.split.forget_classes = ml_collections.FieldReference(None, field_type=str)  # e.g. "3,7"
  c.split.forget_indices_file = ml_collections.FieldReference(None, field_type=str)
  c.split.test_size = ml_collections.FieldReference(None, field_type=int)
  # Text data (dataset = 'text:synthetic', 'text:shakespeare' or 'text:PATH.txt|.jsonl'):
  # tokenizer 'word', 'byte' or 'bpe' (trained locally), records of `context` tokens,
  # units of deletion 'group' (people, speakers) or 'document'; forget_groups people in Du
  # (None: split.forget_fraction of D's groups); the base LM is pretrained on disjoint
  # groups for base_epochs at base_lr, and M, the retrain and the verifiers fine-tune it
  # (model = 'transformer'). See jaxaudit.text.setup.
  c.text = ml_collections.ConfigDict()
  c.text.tokenizer = 'word'
  c.text.bpe_vocab = 512
  c.text.context = 64
  c.text.num_people = 200
  c.text.max_groups = ml_collections.FieldReference(None, field_type=int)
  c.text.unit = 'group'
  c.text.forget_groups = ml_collections.FieldReference(None, field_type=int)
  c.text.base_epochs = 20
  c.text.base_lr = 3e-3
  # Model.
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict()
  # Training recipe of the original model (and of retraining).
  c.train = ml_collections.ConfigDict(Recipe(epochs=30, batch_size=64, learning_rate=2e-3).to_dict())
  c.train_retrain = True
  # Audit.
  c.audit = ml_collections.ConfigDict()
  c.audit.num_verifiers = 4
  c.audit.subset_ratio = 0.15
  c.audit.alpha = 0.05
  c.audit.fdr = 0.05
  c.audit.augment = 'auto'            # 'auto', 'none' or comma-separated view names
  c.audit.flips = False               # add horizontal flips to the 'auto' views (CIFAR)
  c.audit.ref_sample = 5000
  c.audit.member_sample = 1000
  c.audit.test_sample = 2000
  c.audit.verifier_epochs = ml_collections.FieldReference(None, field_type=int)
  # The record statistics of the ignorance test (jaxaudit.audit.evidence), comma-separated,
  # 'exact' first; 'default' is decision.DEFAULT_STATISTICS.
  c.audit.statistics = 'default'
  # The utility test's reference (jaxaudit.audit.AuditSettings.utility_ratio): 0 = the
  # verifiers; r in (subset_ratio, 1) = utility_models models trained on r of Dr.
  c.audit.utility_ratio = 0.0
  c.audit.utility_models = 2
  # Members of the verifier bank (WORKDIR/bank) used by `audit --bank` and `audit --requests`.
  c.audit.bank_size = 64
  # SISA (Bourtoule et al. 2021; jaxaudit.train.sisa). With shards > 0,
  # `jaxaudit train` also trains a SISA original (WORKDIR/models/sisa): `shards`
  # constituent models, each trained on its shard of D in `slices` incremental
  # stages of `slice_epochs` epochs (None: max(1, round(2 * train.epochs /
  # (slices + 1)))), aggregated by the mean of their softmax outputs. The
  # `sisa` unlearning method needs it. `strategy`: ensemble batching of the
  # constituents ('auto', 'vmap' or 'map'; 'map' is bit-reproducible).
  c.sisa = ml_collections.ConfigDict()
  c.sisa.shards = 0                   # 0: no SISA original
  c.sisa.slices = 4
  c.sisa.slice_epochs = ml_collections.FieldReference(None, field_type=int)
  c.sisa.strategy = 'auto'
  # Unlearning (jaxaudit unlearn / demo).
  c.unlearn = ml_collections.ConfigDict()
  c.unlearn.methods = 'retrain,finetune,gradient_ascent'
  c.unlearn.hparams = ml_collections.ConfigDict()
  return c


def recipe_from_config(cfg: ml_collections.ConfigDict) -> Recipe:
  """The training Recipe a config describes."""
  return Recipe.from_config(cfg.train.to_dict())


MAX_SEED = 2 ** 32 - 1
MAX_EPOCHS = 100_000


def _int_field(value, name: str, lo: int, hi: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, (int,)) and not (
      isinstance(value, float) and value.is_integer()):
    raise ConfigError(f'{name} must be an integer, got {value!r}')
  v = int(value)
  if v < lo or (hi is not None and v > hi):
    bound = f'[{lo}, {hi}]' if hi is not None else f'>= {lo}'
    raise ConfigError(f'{name} must be in {bound}, got {value!r}')
  return v


def validate_config(cfg: ml_collections.ConfigDict, *, training: bool = False) -> None:
  """Checks a config's fields before any work, with one clear ConfigError.

  Seeds must lie in [0, 2**32 - 1] (JAX keys hold 32 bits: larger seeds would
  silently collide), epochs in [1, 100000] when ``training``, and the recipe
  must be valid (:class:`Recipe`). Memory is checked later, per request,
  by :func:`jaxaudit.train.memory.check_fits`.
  """
  _int_field(cfg.get('seed', 0), 'seed', 0, MAX_SEED)
  split = cfg.get('split') or {}
  _int_field(split.get('seed', 0), 'split.seed', 0, MAX_SEED)
  audit = cfg.get('audit') or {}
  if audit.get('seed') is not None:
    _int_field(audit.get('seed'), 'audit.seed', 0, MAX_SEED)
  for name in ('train_size', 'forget_size', 'test_size'):
    if split.get(name) is not None:
      _int_field(split.get(name), f'split.{name}', 1)
  for name in ('num_verifiers', 'ref_sample', 'member_sample', 'test_sample', 'utility_models'):
    if audit.get(name) is not None:
      _int_field(audit.get(name), f'audit.{name}', 0)
  if audit.get('verifier_epochs') is not None:
    _int_field(audit.get('verifier_epochs'), 'audit.verifier_epochs', 1, MAX_EPOCHS)
  if audit.get('bank_size') is not None:
    _int_field(audit.get('bank_size'), 'audit.bank_size', 8, 4096)
  recipe = recipe_from_config(cfg)
  _int_field(recipe.epochs, 'train.epochs', 1 if training else 0, MAX_EPOCHS)
  _int_field(recipe.batch_size, 'train.batch_size', 1)
  if training and recipe.epochs == 0:
    raise ConfigError('train.epochs must be >= 1: an untrained model is not a result')


def root_key(config) -> jax.Array:
  return jax.random.key(int(config.seed))


def role_key(config, role: int) -> jax.Array:
  return jax.random.fold_in(root_key(config), role)


TEXT_PREFIX = 'text:'


def is_text(config) -> bool:
  """Whether the config names a text corpus (``dataset = 'text:...'``)."""
  return str(config.dataset).startswith(TEXT_PREFIX)


def load_data(config) -> Dataset:
  """The data set a config names (embedded, npz, TFDS from data_dir, or a text corpus)."""
  if is_text(config):
    from jaxaudit.text import setup
    t = config.text
    if config.model != 'transformer':
      raise ConfigError(f"a text data set needs model = 'transformer', got {config.model!r}")
    return setup.load_text_dataset(
        str(config.dataset)[len(TEXT_PREFIX):], tokenizer=t.tokenizer, bpe_vocab=t.bpe_vocab,
        context=t.context, num_people=t.num_people, max_groups=t.get('max_groups'),
        unit=t.unit, data_dir=config.get('data_dir'))
  if config.model == 'transformer':
    raise ConfigError("model 'transformer' needs a text data set (dataset = 'text:NAME')")
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
  if is_text(config):     # whole groups (people, speakers or documents)
    from jaxaudit.text.dataset import group_split
    return group_split(dataset, seed=int(s.seed), forget_groups=config.text.get('forget_groups'),
                       forget_fraction=s.get('forget_fraction', 0.1),
                       ref_fraction=s.get('ref_fraction', 0.2))
  forget_indices = None
  if s.get('forget_indices_file'):
    forget_indices = splits_lib.read_index_file(s.forget_indices_file)
  return make_split(dataset, seed=int(s.seed), ref_fraction=s.get('ref_fraction', 0.1),
                    train_size=s.get('train_size'), forget_fraction=s.get('forget_fraction', 0.1),
                    forget_size=s.get('forget_size'),
                    forget_classes=_forget_classes(s.get('forget_classes')),
                    forget_indices=forget_indices, test_size=s.get('test_size'))


def model_from_config(config, dataset: Dataset):
  return get_model(config.model, dataset.num_classes, dataset.input_shape,
                   **config.model_kwargs.to_dict())


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
  epochs = default_slice_epochs(recipe_from_config(config), slices) if epochs is None \
      else int(epochs)
  if epochs < 1:
    raise ConfigError(f'sisa.slice_epochs must be >= 1, got {epochs}')
  strategy = check_strategy(s.get('strategy', 'auto') or 'auto', 'sisa.strategy')
  if strategy == 'auto' and model is not None:
    strategy = resolve_strategy(strategy, model)
  return dict(shards=shards, slices=slices, slice_epochs=epochs, strategy=strategy)


def sisa_expect(config) -> dict[str, Any]:
  """Metadata a SISA checkpoint must match when config.sisa asks for one (else {})."""
  sett = sisa_settings(config)
  if sett is None:
    return {}
  if sett['strategy'] == 'auto':   # the backend's choice: any is fine
    del sett['strategy']
  return sett


def load_config_module(name: str, beside: str):
  """The config file ``NAME.py`` in the folder of the file ``beside``, loaded by path.

  Config files are loaded by path (``--config=experiments/configs/x.py``), not as
  a package, so one that builds on another loads it with this.
  """
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.abspath(beside)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_jaxaudit_config_{name}', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


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
      utility_ratio=float(a.get('utility_ratio', 0.0)),
      utility_models=int(a.get('utility_models', 2)),
      test=TestSettings(alpha=float(a.get('alpha', 0.05)), fdr=float(a.get('fdr', 0.05)),
                        **_statistics(a.get('statistics', 'default'))))


def _statistics(value) -> dict:
  """``config.audit.statistics`` as TestSettings keywords ('default': none)."""
  if value in (None, '', 'default'):
    return {}
  return dict(statistics=tuple(v.strip() for v in str(value).split(',') if v.strip()))


def method_key(config, name: str) -> jax.Array:
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
