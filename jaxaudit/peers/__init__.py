"""Peer auditors: the published unlearning audits jaxaudit is compared with.

Each auditor is a function returning a :class:`PeerResult` (score, decision,
rule, details, cost); each follows its public reference implementation by
default and keeps jaxaudit's earlier conventions as named options (see each
module's docstring and its ``LEGACY_OPTIONS``):

  population_mia  DeepUnlearn's loss-based population MIA (no models).
                  Reference: DeepUnlearn membership_inference_attack.py.
  lira            LiRA with shadow models on halves of D ∪ D_ref.
                  Reference: tensorflow/privacy research/mi_lira_2021 plot.py.
  ulira           U-LiRA: unlearned vs. never-seen shadow distributions
                  (LiRA's conventions).
  rmia            RMIA with reference models (offline by default).
                  Reference: ml_privacy_meter run_rmia.
  neurips23       the NeurIPS 2023 challenge score from stacked unlearned
                  models (trains the retrained group).
                  Reference: google-deepmind/unlearning_evaluation metric.py.
  heuristics      KL / agreement / consistency / gap / KS of the seed audit code,
                  from logits.

``PEERS`` maps a name to the function. A configuration names the peers to run
and their options; :func:`get_peer` and :func:`from_config` (the pattern of
big_vision's ``evaluators/common.py:from_config``) check the names and options
and return the functions with the options bound::

  lira = get_peer('lira', num_shadows=8, online=False)
  lira(target, dataset, split, model, recipe)

  runs = from_config({'lira_offline': {'type': 'lira', 'online': False},
                      'rmia': {'num_refs': 2}})
  # {'lira_offline': Peer(lira, online=False), 'rmia': Peer(rmia, num_refs=2)}
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

from jaxaudit.errors import ConfigError
from jaxaudit.peers.base import PeerResult, ShadowSet, plan_halves, train_cached, \
    train_shadows
from jaxaudit.peers.heuristics import heuristics, heuristics_audit
from jaxaudit.peers.lira import lira, lira_scores, ulira
from jaxaudit.peers.neurips23 import neurips23_audit, neurips23_epsilon
from jaxaudit.peers.population import population_mia
from jaxaudit.peers.rmia import rmia, rmia_scores

PEERS: dict[str, Callable[..., PeerResult]] = {
    'population_mia': population_mia,
    'lira': lira,
    'ulira': ulira,
    'rmia': rmia,
    'neurips23': neurips23_audit,
    'heuristics': heuristics,
}

# Config keys that name the peer rather than pass an option.
_TYPE_KEYS = ('type', 'name')


def _options_of(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
  """The keyword-only parameters of ``fn``: the options a config may set."""
  return {n: p for n, p in inspect.signature(fn).parameters.items()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclasses.dataclass(frozen=True)
class Peer:
  """A peer auditor with options bound (what :func:`get_peer` returns).

  Attributes:
    name: the key of ``PEERS``.
    fn: the auditor function.
    options: the bound keyword options (validated names).

  Calling it calls ``fn(*args, **options, **kwargs)``; ``kwargs`` override
  the bound options.
  """
  name: str
  fn: Callable[..., PeerResult]
  options: Mapping[str, Any]

  def __call__(self, *args: Any, **kwargs: Any) -> PeerResult:
    return self.fn(*args, **{**self.options, **kwargs})

  def __repr__(self) -> str:
    opts = ', '.join(f'{k}={v!r}' for k, v in self.options.items())
    return f'Peer({self.name}{", " if opts else ""}{opts})'


def peer_options(name: str) -> dict[str, Any]:
  """The options of peer ``name`` and their defaults (``inspect.Parameter.empty`` if required).

  Raises:
    ConfigError: unknown ``name``.
  """
  return {k: p.default for k, p in _options_of(_lookup(name)).items()}


def _lookup(name: Any) -> Callable[..., PeerResult]:
  if not isinstance(name, str) or name not in PEERS:
    raise ConfigError(f'unknown peer auditor {name!r}; known: {sorted(PEERS)}')
  return PEERS[name]


def get_peer(name: str, **options: Any) -> Peer:
  """Peer ``name`` with ``options`` bound, after checking that it takes them.

  Args:
    name: a key of ``PEERS``.
    **options: keyword options of that peer's function (e.g. ``online=False``
      for ``lira``); positional inputs (target, dataset, ...) are passed at
      call time.
  Returns:
    A callable :class:`Peer`.
  Raises:
    ConfigError: unknown name, or an option the peer does not take (the
      message lists the ones it does).
  """
  fn = _lookup(name)
  known = _options_of(fn)
  bad = sorted(k for k in options if k not in known)
  if bad:
    raise ConfigError(f'peer {name!r} has no option(s) {bad}; its options: {sorted(known)}')
  return Peer(name, fn, dict(options))


def _as_dict(cfg: Any, what: str) -> dict[str, Any]:
  if hasattr(cfg, 'to_dict'):          # ml_collections.ConfigDict
    cfg = cfg.to_dict()
  if not isinstance(cfg, Mapping):
    raise ConfigError(f'{what} must be a mapping, got {type(cfg).__name__}')
  return dict(cfg)


def from_config(cfg: Any) -> Peer | dict[str, Peer]:
  """Peers named by a configuration, with their options bound.

  Two forms, as big_vision's evaluator configs:

  * one peer: a mapping with ``'type'`` (or ``'name'``) = a key of ``PEERS``
    and the options, e.g. ``{'type': 'lira', 'online': False}`` -> a Peer;
  * several: a mapping run name -> such a mapping, where ``'type'`` defaults
    to the run name, e.g. ``{'lira': {}, 'lira_offline': {'type': 'lira',
    'online': False}}`` -> {run name: Peer}, in the config's order.

  Args:
    cfg: dict or ``ml_collections.ConfigDict`` as above.
  Returns:
    A Peer, or a dict run name -> Peer.
  Raises:
    ConfigError: not a mapping, an unknown peer, or an unknown option.
  """
  d = _as_dict(cfg, 'the peer config')
  for key in _TYPE_KEYS:
    if key in d and isinstance(d[key], str):
      opts = {k: v for k, v in d.items() if k != key}
      return get_peer(d[key], **opts)
  out = {}
  for run, sub in d.items():
    sub = _as_dict(sub, f'the config of peer run {run!r}')
    kind = next((sub[k] for k in _TYPE_KEYS if k in sub), run)
    opts = {k: v for k, v in sub.items() if k not in _TYPE_KEYS}
    try:
      out[run] = get_peer(kind, **opts)
    except ConfigError as e:
      raise ConfigError(f'peer run {run!r}: {e}') from e
  return out


__all__ = ['PEERS', 'Peer', 'PeerResult', 'ShadowSet', 'from_config', 'get_peer',
           'heuristics', 'heuristics_audit', 'lira', 'lira_scores', 'neurips23_audit',
           'neurips23_epsilon', 'peer_options', 'plan_halves', 'population_mia', 'rmia',
           'rmia_scores', 'train_cached', 'train_shadows', 'ulira']
