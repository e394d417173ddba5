"""One workdir of the sweep: the shared state of the cells of an (entry, forget, seed) group."""

from __future__ import annotations

import os
import time
import zlib
from typing import Callable

import numpy as np

from jaxaudit.study import cells as cells_lib
from jaxaudit.study import cost as cost_lib


class Group:
  """Data, split, models and cached auditor ensembles of one workdir.

  Construction trains (or reuses) the original and the retrain reference (one
  pipeline workdir, :func:`jaxaudit.pipeline.train_and_evaluate`), the
  verifiers of every ratio of the audit settings and, when
  ``peers.lira_shadows`` is set, the LiRA shadows shared by LiRA and U-LiRA.

  Attributes:
    config: the sweep config; ``cfg``: the group's pipeline config.
    entry, forget, seed: the group; ``wd``: its workdir.
    dataset, split, model, recipe, settings: the audit request.
    vrecipe: the verifiers' recipe; ``params``: the original M.
    verifier_sets: [(VerifierSet, training wall seconds)] per ratio.
    shadows, shadow_wall: the LiRA shadows (or None) and their training time.
    flops: :func:`jaxaudit.study.cost.model_flops` of the model.
    retrain_s, retrain_flops: the retrain reference's wall time and FLOPs.
    memo: verifier logits shared by the audits of this request.
    setup_s: wall seconds of the construction (counted in the first cell).
  """

  def __init__(self, config, workdir: str, group: tuple[str, str, int],
               log: Callable[[str], None]):
    from jaxaudit import checkpoint, pipeline
    from jaxaudit import configs
    from jaxaudit import workdir as workdir_lib
    from jaxaudit.audit.verifiers import get_verifiers
    from jaxaudit.configs import recipe_from_config
    from jaxaudit.peers import train_shadows
    t0 = time.time()
    self.config = config
    self.entry, self.forget, self.seed = group
    self.cfg = cells_lib.cell_config(config, *group)
    self.wd = cells_lib.group_dir(workdir, group)
    self.log = log
    self.peers = cells_lib.peer_settings(config, self.entry)
    self.summary = pipeline.train_and_evaluate(self.cfg, self.wd, log)
    self.dataset, self.split = workdir_lib.prepare(self.cfg, self.wd, lambda s: None)
    self.model = configs.model_from_config(self.cfg, self.dataset)
    self.recipe = recipe_from_config(self.cfg)
    self.settings = configs.audit_settings(self.cfg)
    self.vrecipe = (self.recipe.replace(epochs=int(self.settings.verifier_epochs))
                    if self.settings.verifier_epochs else self.recipe)
    _, self.params, _ = checkpoint.restore_model(
        os.path.join(self.wd, 'models', 'original'),
        expect=workdir_lib.expected_meta(self.cfg, self.dataset, self.split))
    self.verifier_dir = os.path.join(self.wd, 'verifiers')
    self.peer_dir = os.path.join(self.wd, 'peers')
    # Verifiers (jaxaudit's audit): one ensemble per ratio, trained once.
    self.verifier_sets = []
    for ratio in self.settings.ratios:
      vs = get_verifiers(self.model, self.dataset, self.split, self.vrecipe,
                         num_verifiers=self.settings.num_verifiers, ratio=ratio,
                         member_sample=self.settings.member_sample, seed=self.settings.seed,
                         cache_dir=self.verifier_dir, log=log)
      wall = vs.wall_time_s if not vs.from_cache else cost_lib.meta_wall(
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
                          cost_lib.meta_wall(os.path.join(
                              self.peer_dir, f'lira-shadows-{self.shadows.cache_key}'))) or 0.0
    self.flops = cost_lib.model_flops(self.model, self.dataset.input_shape,
                                      self.dataset.num_classes, self.recipe)
    self.retrain_s = float(self.summary['retrain'].get('wall_time_s') or float('nan'))
    self.retrain_flops = cost_lib.train_flops(self.flops, len(self.split.retain),
                                              self.recipe.epochs)
    self._unlearn_data = None
    self._warm_start_data = None
    self.memo = {}
    self.setup_s = time.time() - t0

  @property
  def verifiers(self):
    """The VerifierSet the audits reuse (None when there are several ratios)."""
    return self.verifier_sets[0][0] if len(self.verifier_sets) == 1 else None

  def audit(self, target):
    """jaxaudit's audit of ``target`` with the group's cached verifiers and memo."""
    from jaxaudit.audit import audit
    return audit(target, self.dataset, self.split, verifier_model=self.model, recipe=self.recipe,
                 settings=self.settings, cache_dir=self.verifier_dir, verifiers=self.verifiers,
                 memo=self.memo)

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
    """The group's :class:`jaxaudit.unlearn.UnlearnData` (built once)."""
    if self._unlearn_data is None:
      from jaxaudit import unlearn as unlearn_lib
      self._unlearn_data = unlearn_lib.make_unlearn_data(self.dataset, self.split, self.recipe)
    return self._unlearn_data

  def unlearn_data_for(self, method: str):
    """:attr:`unlearn_data`, with the pretrained model (never saw Du) for a warm-start
    method (:func:`jaxaudit.pipeline.pretrained_checkpoint`, what ``run_unlearn`` uses)."""
    from jaxaudit import pipeline
    if method not in pipeline.WARM_START_METHODS:
      return self.unlearn_data
    if self._warm_start_data is None:    # loaded once per group (U-LiRA calls this per model)
      path = pipeline.pretrained_checkpoint(self.cfg, self.wd, log=self.log)
      self._warm_start_data = self.unlearn_data._replace(
          init_checkpoint_params=pipeline.load_init_params(self.cfg, self.dataset, self.split,
                                                           path))
    return self._warm_start_data

  def method_key(self, method: str):
    """The PRNG key of ``method`` in this workdir (the unlearn key folded with its name)."""
    import jax
    from jaxaudit import configs
    return jax.random.fold_in(configs.role_key(self.cfg, configs.KEY_UNLEARN),
                              zlib.crc32(method.encode()) & 0x7FFFFFFF)

  def sizes(self) -> dict[str, int]:
    """|D|, |Du|, |Dr|, |D_ref|, |test| of the split."""
    s = self.split
    return dict(train=len(s.train), forget=len(s.forget), retain=len(s.retain), ref=len(s.ref),
                test=len(s.test))
