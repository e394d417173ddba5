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
