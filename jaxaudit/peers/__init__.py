"""Peer auditors: the published unlearning audits jaxaudit is compared with.

Each auditor is a function returning a :class:`PeerResult` (score, decision,
rule, details, cost). ``PEERS`` maps a name to the function:

  population_mia  DeepUnlearn's loss-based population MIA (no models).
  lira            LiRA with shadow models on halves of D ∪ D_ref.
  ulira           U-LiRA: unlearned vs. never-seen shadow distributions.
  rmia            RMIA with reference models (offline by default).
  neurips23       the NeurIPS 2023 challenge score from stacked unlearned
                  models (trains the retrained group).
  heuristics      KL / agreement / consistency / gap / KS of the seed audit code,
                  from logits.
"""

from __future__ import annotations

from typing import Callable

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

__all__ = ['PEERS', 'PeerResult', 'ShadowSet', 'heuristics', 'heuristics_audit', 'lira',
           'lira_scores', 'neurips23_audit', 'neurips23_epsilon', 'plan_halves',
           'population_mia', 'rmia', 'rmia_scores', 'train_cached', 'train_shadows', 'ulira']
