"""DeepUnlearn's tuning objective: how far Mu is from the model retrained without Du.

Four numbers describe a model (:class:`Metrics`): its accuracy on Dr (at most
``max_retain`` records, a fixed sample), on Du and on the validation split (the first half
of the test split: :func:`jaxaudit.unlearn.make_unlearn_data`), and the population MIA's
indiscernibility ``1 - |acc - 0.5| / 0.5`` of its losses on Du against the validation
records (:mod:`jaxaudit.peers.population`, DeepUnlearn's attack). What accuracy and loss
mean is the task's (:func:`scoring_task`): top-1 accuracy and per-record cross-entropy for a
classifier; for a language model the top-1 accuracy over every valid target token of the set
(:meth:`LanguageModeling.utility`) and each record's mean token NLL
(:meth:`LanguageModeling.record_loss`). The objective is the sum of
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


def scoring_task(model, data):
  """The task that scores ``model`` on ``data``: the language-model task for a language model
  (a module with an ``output`` attribute, as :func:`jaxaudit.train.evaluate.evaluate_sets`
  decides; vocabulary ``data.num_classes``, context ``data.input_shape[0] - 1``), else
  classification with ``data.num_classes`` classes."""
  if getattr(model, 'output', None) is not None:
    from jaxaudit.tasks.language import LanguageModeling
    return LanguageModeling(int(data.num_classes), int(data.input_shape[0]) - 1)
  from jaxaudit.tasks import Classification
  return Classification(int(data.num_classes))


def metrics(model, params, data, *, max_retain: int = 2000, seed: int = 0) -> Metrics:
  """The :class:`Metrics` of one model's params on an :class:`UnlearnData`.

  Args:
    model: the Linen module (a classifier, or a TransformerLM); params: its parameters
      (one model).
    data: the UnlearnData: pool x (N, ...), y (N,) labels or (N, T) token targets (-1 =
      padding); forget, retain; val_x, val_y: the validation split.
    max_retain: records of Dr scored (a fixed random sample beyond that).
  Records without any valid target token (none in our corpora) are left out of the attack.
  """
  from jaxaudit.peers import population
  from jaxaudit.train import predict_logits
  if data.val_x is None or len(data.val_y) == 0:
    raise ConfigError('tuning needs a validation split (the first half of the test split); '
                      'this split has no test records')
  task = scoring_task(model, data)
  query = task.query_model(model)
  x, y = np.asarray(data.x), np.asarray(data.y)
  retain = np.asarray(data.retain)
  if len(retain) > max_retain:
    retain = np.sort(np.random.default_rng(seed).choice(retain, max_retain, replace=False))
  forget = np.asarray(data.forget)
  val_x, val_y = np.asarray(data.val_x), np.asarray(data.val_y)
  out_f = predict_logits(query, params, x[forget])
  out_v = predict_logits(query, params, val_x)
  loss_f, loss_v = task.record_loss(out_f, y[forget]), task.record_loss(out_v, val_y)
  attack = population.attack_accuracy(loss_f[~np.isnan(loss_f)], loss_v[~np.isnan(loss_v)],
                                      seed=seed)
  return Metrics(retain=float(task.utility(predict_logits(query, params, x[retain]), y[retain])),
                 forget=float(task.utility(out_f, y[forget])),
                 val=float(task.utility(out_v, val_y)),
                 indiscernibility=population.indiscernibility(attack))


def distance(mu: Metrics, reference: Metrics) -> float:
  """Σ |mu_c − reference_c| over the four components (0 = the retrain's numbers)."""
  return float(sum(abs(a - b) for a, b in zip(mu, reference)))
