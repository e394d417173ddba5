"""Device layout: the one place that decides how a model axis is laid out.

Today the choice is between ``vmap`` (the members of an ensemble vectorised
in one program: fills an accelerator) and ``map`` (one program, members one
after the other under ``lax.map``: faster on CPU, where vmapped convolutions
become grouped convolutions). ``experiments/bench_train.py`` measured vmap at
0.62–0.98× the throughput of map on CPU for the MLP and 0.67–0.98× for the CNN
(BUILD_NOTES.md), so ``auto`` means ``map`` on CPU and ``vmap`` elsewhere.
A device mesh for the model axis belongs here too (the scale-out issue).
"""

from __future__ import annotations

import jax

from jaxaudit.errors import ConfigError

STRATEGIES = ('auto', 'vmap', 'map')


def default_strategy(model=None, backend: str | None = None) -> str:
  """The batching strategy chosen by measurement for this backend (``model`` reserved
  for a per-architecture choice where measurements differ)."""
  del model
  backend = backend or jax.default_backend()
  return 'vmap' if backend != 'cpu' else 'map'


def check_strategy(strategy: str, what: str = 'strategy') -> str:
  """Returns ``strategy`` if it is one of :data:`STRATEGIES`; ConfigError otherwise."""
  if strategy not in STRATEGIES:
    raise ConfigError(f"{what} must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
  return strategy


def resolve_strategy(strategy: str, model=None, *, vmappable: bool = True,
                     what: str = 'strategy') -> str:
  """``vmap`` or ``map``: ``strategy`` checked, ``auto`` replaced by the backend's default
  (``map`` whenever the work cannot be vmapped)."""
  check_strategy(strategy, what)
  if strategy == 'auto':
    strategy = default_strategy(model) if vmappable else 'map'
  return strategy


__all__ = ['STRATEGIES', 'default_strategy', 'check_strategy', 'resolve_strategy']
