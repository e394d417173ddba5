"""Default experiment configuration (ml_collections), shared by CLI and experiments.

Config files in ``experiments/configs/`` start from :func:`base_config` and
override fields; each accepts ``local`` (laptop/CI size) or ``full``.
"""

from __future__ import annotations

import ml_collections

from jaxaudit.train.recipe import Recipe


def base_config() -> ml_collections.ConfigDict:
  """The default audit pipeline: digits, MLP, 10% random forget set."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data.
  c.dataset = 'digits'
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.npz = ml_collections.FieldReference(None, field_type=str)
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
  # Unlearning (jaxaudit unlearn / demo).
  c.unlearn = ml_collections.ConfigDict()
  c.unlearn.methods = 'retrain,finetune,gradient_ascent'
  c.unlearn.hparams = ml_collections.ConfigDict()
  return c


def recipe_from_config(cfg: ml_collections.ConfigDict) -> Recipe:
  """The training Recipe a config describes."""
  return Recipe.from_config(cfg.train.to_dict())
