"""The one dispatch of the peer auditors for an audit request.

:func:`run_peers` calls the named peers of :mod:`jaxaudit.peers` on one target
and returns one summary dict per peer; :func:`call_peer` holds each peer's
argument list. The sweep (:mod:`jaxaudit.study.sweep`), the fakes
(:mod:`jaxaudit.study.fakes`) and the validation
(:mod:`jaxaudit.study.validation`) all call :func:`run_peers`; they differ
only in the :class:`PeerRequest` they build, the peers they name and the
summary they record (:func:`sweep_summary`, :func:`short_summary`,
:func:`validation_summary`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from jaxaudit.study.schema import PEER_NAMES

# summary(name, PeerResult, extra, wall seconds) -> the dict recorded in a row.
Summary = Callable[[str, Any, dict, float], dict]


@dataclasses.dataclass(frozen=True)
class PeerRequest:
  """What the peer auditors of one audit request get.

  Attributes:
    dataset, split: the audit request (:class:`jaxaudit.data.Dataset`, AuditSplit).
    model, recipe: the architecture and training recipe of shadow/reference models.
    seed: the peers' seed.
    alpha: the peers' level (None: each peer's default).
    cache_dir: where RMIA references (and LiRA shadows trained here) are cached.
    shadows: LiRA / U-LiRA shadows (:class:`jaxaudit.peers.ShadowSet`); None:
      LiRA trains ``num_shadows`` itself (cached in ``cache_dir``).
    num_shadows: LiRA's shadows when ``shadows`` is None.
    rmia_refs: RMIA's reference models.
    verifier_params: stacked (K, ...) params of the heuristics' verifiers.
    num_verifiers: K, recorded as the heuristics' ``models``.
    unlearn_fn: U-LiRA's ``unlearn_fn(params, key, forget, retain) -> params``.
    unlearned_group: NeurIPS-23's ``() -> (stacked params of N unlearned
      models, their wall seconds)`` and N (``neurips23_models``).
  """
  dataset: Any
  split: Any
  model: Any
  recipe: Any
  seed: int
  alpha: float | None = None
  cache_dir: str | None = None
  shadows: Any = None
  num_shadows: int = 16
  rmia_refs: int = 4
  verifier_params: Any = None
  num_verifiers: int = 0
  unlearn_fn: Callable | None = None
  unlearned_group: Callable[[], tuple[Any, float]] | None = None
  neurips23_models: int = 0


def call_peer(name: str, target, req: PeerRequest) -> tuple[Any, dict]:
  """Runs peer ``name`` on ``target`` (a :class:`jaxaudit.audit.Target`).

  Returns:
    (PeerResult, extra): ``extra`` holds what the request adds to the result
    (heuristics: KS p-value, gap, agreement and K; NeurIPS-23: the unlearned
    group's size and wall time, the retrained group's).
  Raises:
    ValueError: an unknown peer; whatever the peer raises.
  """
  from jaxaudit import peers
  ds, sp, seed = req.dataset, req.split, int(req.seed)
  alpha = {} if req.alpha is None else dict(alpha=float(req.alpha))
  if name == 'population_mia':
    return peers.population_mia(target, ds, sp, seed=seed, **alpha), {}
  if name == 'lira':
    kw = (dict(shadows=req.shadows) if req.shadows is not None else
          dict(num_shadows=int(req.num_shadows), cache_dir=req.cache_dir))
    return peers.lira(target, ds, sp, req.model, req.recipe, seed=seed, **kw, **alpha), {}
  if name == 'rmia':
    return peers.rmia(target, ds, sp, req.model, req.recipe, num_refs=int(req.rmia_refs),
                      seed=seed, cache_dir=req.cache_dir, **alpha), {}
  if name == 'heuristics':
    r = peers.heuristics_audit(target, ds, sp, req.model, req.verifier_params, seed=seed,
                               ks_rule=True, **alpha)
    sets = r.details['sets']
    return r, dict(p_value=(r.details.get('ks') or {}).get('p_value'),
                   gap=sets['forget'].get('gap'), agreement=sets['forget'].get('agreement'),
                   models=req.num_verifiers)
  if name == 'ulira':
    return peers.ulira(target, ds, sp, req.model, req.recipe, req.unlearn_fn,
                       shadows=req.shadows, seed=seed, **alpha), {}
  if name == 'neurips23':
    params_grp, grp_wall = req.unlearned_group()
    r = peers.neurips23_audit(params_grp, ds, sp, req.model, req.recipe, seed=seed,
                              cache_dir=req.cache_dir)
    return r, dict(unlearn_group_s=grp_wall, models=2 * int(req.neurips23_models),
                   retrain_group_s=r.details.get('retrain_s'),
                   retrain_cache_key=r.details.get('cache_key'))
  raise ValueError(f'unknown peer {name!r}; choose from {PEER_NAMES}')


def short_summary(name: str, res, extra: dict | None = None, wall: float = 0.0) -> dict:
  """A row's record of a peer: score, decision, models, wall_s and its key statistics."""
  del name, wall   # the peer's own wall time is recorded
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


def sweep_summary(name: str, res, extra: dict, wall: float) -> dict:
  """:func:`short_summary` with the request's extras (a sweep row's record)."""
  return short_summary(name, res, extra, wall)


def fake_summary(name: str, res, extra: dict, wall: float) -> dict:
  """:func:`short_summary` without the request's extras (a fake row's record)."""
  return short_summary(name, res, None, wall)


def validation_summary(name: str, res, extra: dict, wall: float) -> dict:
  """A validation draw's record: score, decision, the peer's cost and the call's wall time."""
  del name, extra
  return dict(score=res.score, decision=res.decision, cost=res.cost, wall_time_s=wall)


def run_peers(target, req: PeerRequest, names: Sequence[str], *,
              summary: Summary = sweep_summary, catch: bool = True,
              log: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
  """Runs the peers ``names`` (in order) on ``target``.

  Args:
    target: the audited model (:class:`jaxaudit.audit.Target`; for NeurIPS-23
      the request's ``unlearned_group`` is audited instead).
    req: the request.
    names: peers of :data:`jaxaudit.study.schema.PEER_NAMES`.
    summary: what to record of a result (see the module doc).
    catch: a peer that raises gets ``dict(error=..., wall_s=...)`` and the
      others still run; False: the exception propagates.
    log: gets one line per failed peer.
  Returns:
    peer name → its summary dict.
  """
  out: dict[str, dict] = {}
  for name in names:
    t = time.time()
    try:
      res, extra = call_peer(name, target, req)
      out[name] = summary(name, res, extra, time.time() - t)
    except Exception as e:   # noqa: BLE001 — one peer failing keeps the row
      if not catch:
        raise
      out[name] = dict(error=f'{type(e).__name__}: {e}', wall_s=time.time() - t)
      log(f'peer {name} failed: {e}')
  return out
