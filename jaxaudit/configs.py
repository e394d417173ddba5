"""Default experiment configuration (ml_collections), shared by CLI and experiments.

Config files in ``experiments/configs/`` start from :func:`base_config` and
override fields; each accepts ``local`` (laptop/CI size) or ``full``.
"""

from __future__ import annotations

import ml_collections

from jaxaudit.errors import ConfigError
from jaxaudit.train.recipe import Recipe


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
  for name in ('num_verifiers', 'ref_sample', 'member_sample', 'test_sample'):
    if audit.get(name) is not None:
      _int_field(audit.get(name), f'audit.{name}', 0)
  if audit.get('verifier_epochs') is not None:
    _int_field(audit.get('verifier_epochs'), 'audit.verifier_epochs', 1, MAX_EPOCHS)
  recipe = recipe_from_config(cfg)
  _int_field(recipe.epochs, 'train.epochs', 1 if training else 0, MAX_EPOCHS)
  _int_field(recipe.batch_size, 'train.batch_size', 1)
  if training and recipe.epochs == 0:
    raise ConfigError('train.epochs must be >= 1: an untrained model is not a result')
