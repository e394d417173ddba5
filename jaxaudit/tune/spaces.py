"""Search spaces of the unlearning methods' hyper-parameters.

A space maps a hyper-parameter name to a :class:`Dim`. The rules, by name, for every
registered method (overridden per method in :data:`METHOD_DIMS` where a name means
something else):

* learning rates (``lr``, ``ga_lr``, ``ft_lr``): log-uniform on [1e-5, 1], which holds every
  default of the registry (SGD 1e-4 to 2e-2, Adam 1e-3) and reaches the rates at which
  gradient ascent moves a model whose loss on Du is saturated (on digits, GA leaves every
  accuracy unchanged up to lr = 0.08);
* epochs (``epochs``, ``ga_epochs``, ``ft_epochs``) and SCRUB's ``msteps``: integers from 1 to
  twice the default (at least 3);
* everything else keeps its registry default (batch size, optimiser, schedule, ...).

Method-specific ranges (:data:`METHOD_DIMS`) cover the published defaults of the methods'
papers with an order of magnitude either side.

Language-model methods (:mod:`jaxaudit.unlearn.language`) override the learning rate: the
published runs (TOFU, MUSE, OpenUnlearning) unlearn billion-parameter models with AdamW at the
rate they were fine-tuned at (1e-5); our CPU-sized LMs are fine-tuned with Adam at 2e-3 and
unlearned at 1e-3 by default (``LM_DEFAULTS``, the same rule), so their rate is searched a
decade either side of the registry default, log scale. Their epochs follow the rule above
(TOFU's 5 -> 1..10; NPO's and SimNPO's 10 -> 1..20; RMU's 20 -> 1..40).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from jaxaudit.errors import ConfigError

LEARNING_RATES = ('lr', 'ga_lr', 'ft_lr')
EPOCHS = ('epochs', 'ga_epochs', 'ft_epochs', 'msteps')


class Dim(NamedTuple):
  """One searched hyper-parameter: ``kind`` 'float' or 'int', bounds, log scale."""
  kind: str
  low: float
  high: float
  log: bool = False


# Language models' learning rate: LM_DEFAULTS' 1e-3 a decade either side (module docstring).
_LM_LR = Dim('float', 1e-4, 1e-2, True)

# Names whose meaning depends on the method.
METHOD_DIMS: dict[str, dict[str, Dim]] = {
    'neggrad_plus': {'alpha': Dim('float', 0.5, 0.999)},           # weight of CE on Dr
    'scrub': {'alpha': Dim('float', 1e-4, 1e-1, True), 'temperature': Dim('float', 1.0, 8.0)},
    'msg': {'reinit_fraction': Dim('float', 0.05, 0.6), 'others_scale': Dim('float', 0.01, 1.0, True)},
    'salun': {'fraction': Dim('float', 0.1, 0.9)},
    'l1_sparse': {'gamma': Dim('float', 1e-5, 1e-2, True)},
    'fisher': {'alpha': Dim('float', 1e-9, 1e-4, True)},
    'fisher_hessian': {'alpha': Dim('float', 1e-9, 1e-4, True)},
    'ssd': {'alpha': Dim('float', 1.0, 100.0, True), 'lambda': Dim('float', 0.1, 5.0, True)},
    'bad_teacher': {'temperature': Dim('float', 1.0, 8.0)},
    # RNI's epochs include its final fine-tuning epochs (fine_epochs, 2): at least those.
    'rni': {'epochs': Dim('int', 2, 12)},
    # Language models (module docstring). The default lr 1e-3 (LM_DEFAULTS) a decade either
    # side; retain weights (the weight of NLL(Dr) against the forget term, 1 in TOFU's and
    # OpenUnlearning's GradDiff and IdK) a decade either side of 1.
    'lm_gradient_ascent': {'lr': _LM_LR},
    'lm_grad_diff': {'lr': _LM_LR, 'retain_weight': Dim('float', 0.1, 10.0, True)},
    # NPO: beta 0.1 in the NPO paper's TOFU runs and OpenUnlearning, a decade either side;
    # retain_weight 0 is plain NPO (the registry default, NPO's TOFU runs), 1 NPO+RT
    # (OpenUnlearning's NPO): linear on [0, 2] to hold both.
    'lm_npo': {'lr': _LM_LR, 'beta': Dim('float', 0.01, 1.0, True),
               'retain_weight': Dim('float', 0.0, 2.0)},
    # SimNPO (OPTML-Group/Unlearn-Simple, TOFU forget05): beta 2.5 a decade either side; the
    # margin gamma 0 there, searched on [0, 2] (a length-normalised log-prob per token is
    # O(-1) here, so beta * logp / |y| is O(beta) and a margin of 2 moves the sigmoid well off
    # its default operating point); retain weight 1 a decade either side with the forget
    # weight kept at its 0.1375 (AdamW's step ignores the loss's overall scale: only their
    # ratio matters, 0.73..73 around the published 7.3).
    'lm_simnpo': {'lr': _LM_LR, 'beta': Dim('float', 0.25, 25.0, True),
                  'gamma': Dim('float', 0.0, 2.0), 'retain_weight': Dim('float', 0.1, 10.0, True)},
    'lm_idk': {'lr': _LM_LR, 'retain_weight': Dim('float', 0.1, 10.0, True)},
    # RMU (Li et al. 2024, WMDP): lr 5e-3 (Li et al.'s 5e-5 is five times TOFU's rate; ours five
    # times 1e-3) a decade either side; the steering coefficient 6.5 (Li et al.'s Zephyr-7B
    # value; ours is relative to M's activation norm) a decade either side; alpha from 1 to
    # 1000 (our default 10; OpenUnlearning 1000, Li et al. 1200 with the absolute coefficient).
    'lm_rmu': {'lr': Dim('float', 5e-4, 5e-2, True),
               'steering_coef': Dim('float', 0.65, 65.0, True),
               'alpha': Dim('float', 1.0, 1000.0, True)},
    'lm_finetune': {'lr': _LM_LR},
}


def space(method: str, defaults: Mapping[str, Any]) -> dict[str, Dim]:
  """The searched dimensions of ``method`` whose registry defaults are ``defaults``.

  Raises:
    ConfigError: the method has nothing to search (e.g. ``retrain``).
  """
  out: dict[str, Dim] = {}
  for name, value in defaults.items():
    if name in LEARNING_RATES:
      out[name] = Dim('float', 1e-5, 1.0, True)
    elif name in EPOCHS and isinstance(value, int):
      out[name] = Dim('int', 1, max(3, 2 * int(value)))
  for name, dim in METHOD_DIMS.get(method, {}).items():
    if name in defaults:
      out[name] = dim
  if not out:
    raise ConfigError(f'method {method!r} has no hyper-parameter to tune '
                      f'(its settings: {sorted(defaults) or "none"})')
  return out


def suggest(trial, dims: Mapping[str, Dim]) -> dict[str, Any]:
  """One Optuna trial's values for ``dims``."""
  out = {}
  for name, d in dims.items():
    if d.kind == 'int':
      out[name] = trial.suggest_int(name, int(d.low), int(d.high), log=d.log)
    else:
      out[name] = trial.suggest_float(name, float(d.low), float(d.high), log=d.log)
  return out


def fingerprint(dims: Mapping[str, Dim]) -> str:
  """A short hash of a space (a study with another space never reuses its trials)."""
  import hashlib
  import json
  return hashlib.sha256(json.dumps(sorted((n, list(d)) for n, d in dims.items())).encode()
                        ).hexdigest()[:8]


def describe(dims: Mapping[str, Dim]) -> dict[str, str]:
  """{name: 'float [1e-05, 0.1] log'} for reports."""
  return {n: f'{d.kind} [{d.low:g}, {d.high:g}]' + (' log' if d.log else '')
          for n, d in dims.items()}
