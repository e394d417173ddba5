"""DeepUnlearn's tuning objective: how far Mu is from the model retrained without Du.

Four numbers describe a model (:class:`Metrics`): its accuracy on Dr (at most
``max_retain`` records, a fixed sample), on Du and on the validation split (the first half
of the test split: :func:`jaxaudit.unlearn.make_unlearn_data`), and the population MIA's
indiscernibility ``1 - |acc - 0.5| / 0.5`` of its losses on Du against the validation
records (:mod:`jaxaudit.peers.population`, DeepUnlearn's attack). The objective is the sum of
the four absolute differences to the retrained model's numbers (:func:`distance`): 0 when
Mu looks like the retrain on everything this measures. Our audit's verdict is not part of
it: the audit judges the tuned result and never the other way round.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxaudit.errors import ConfigError

COMPONENTS = ('retain', 'forget', 'val', 'indiscernibility')


class Metrics(NamedTuple):
  """Accuracies on Dr, Du and validation, and the population MIA's indiscernibility (all in [0, 1])."""
  retain: float
  forget: float
  val: float
  indiscernibility: float


def metrics(model, params, data, *, max_retain: int = 2000, seed: int = 0) -> Metrics:
  """The :class:`Metrics` of one classifier's params on an :class:`UnlearnData`.

  Args:
    model: the Linen module; params: its parameters (one model).
    data: the UnlearnData (pool x, y; forget, retain; val_x, val_y: the validation split).
    max_retain: records of Dr scored (a fixed random sample beyond that).
  """
  from jaxaudit.peers import population
  from jaxaudit.train import predict_logits
  if data.val_x is None or len(data.val_y) == 0:
    raise ConfigError('tuning needs a validation split (the first half of the test split); '
                      'this split has no test records')
  x, y = np.asarray(data.x), np.asarray(data.y)
  retain = np.asarray(data.retain)
  if len(retain) > max_retain:
    retain = np.sort(np.random.default_rng(seed).choice(retain, max_retain, replace=False))
  forget = np.asarray(data.forget)
  val_x, val_y = np.asarray(data.val_x), np.asarray(data.val_y)

  def acc(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))
  lf = predict_logits(model, params, x[forget])
  lv = predict_logits(model, params, val_x)
  attack = population.attack_accuracy(population.losses_from_logits(lf, y[forget]),
                                      population.losses_from_logits(lv, val_y), seed=seed)
  return Metrics(retain=acc(predict_logits(model, params, x[retain]), y[retain]),
                 forget=acc(lf, y[forget]), val=acc(lv, val_y),
                 indiscernibility=population.indiscernibility(attack))


def distance(mu: Metrics, reference: Metrics) -> float:
  """Σ |mu_c − reference_c| over the four components (0 = the retrain's numbers)."""
  return float(sum(abs(a - b) for a, b in zip(mu, reference)))
