"""Distillation family: bad teacher, SCRUB."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxaudit.unlearn import _common as C
from jaxaudit.unlearn import loops
from jaxaudit.unlearn.base import register
from jaxaudit.unlearn.objectives import BadTeacherKL, Scrub

FAMILY = 'distillation'


def _teaching_set(key, retain, forget, *, size):
  """A random ``size`` records of Dr followed by all of Df."""
  return jnp.concatenate([jax.random.permutation(key, retain)[:size], forget])


@register('bad_teacher', FAMILY,
          dict(epochs=2, lr=1e-3, batch_size=64, optimizer='adam', momentum=0.9,
               weight_decay=0.0, schedule='constant', retain_fraction=0.3, temperature=1.0))
def bad_teacher(**hp):
  """Bad teacher (Chundawat et al. 2023). The student starts from the original model
  and minimises KL(teacher ‖ student) at temperature T on Df ∪ R, where R is a
  random ``retain_fraction`` of Dr (key ``fold_in(key, 0)``); the teacher is the
  original model (competent) on R and a randomly initialised model (incompetent,
  key ``fold_in(key, 1)``) on Df."""
  spec = C.spec_from(hp)
  frac = hp['retain_fraction']
  C.check_fraction('retain_fraction', frac, open_low=True)
  C.check_positive(temperature=hp['temperature'])
  loss = BadTeacherKL(float(hp['temperature']))

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    retain = C.idx(data.retain)
    m = max(1, int(round(frac * retain.shape[0])))
    stream = C.jit_apply(_teaching_set, jax.random.fold_in(key, 0), retain,
                         C.idx(data.forget), size=m)
    aux = {'good': params, 'bad': C.fresh_params(model, jax.random.fold_in(key, 1), data),
           'is_forget': C.forget_flags(data)}
    return loops.fit(model, params, x, y, [stream], jax.random.fold_in(key, 2), spec, loss,
                     aux=aux).params

  return unlearn


# lr: SCRUB's published learning rate (``sgda_learning_rate`` 5e-4 in the authors' code and
# in DeepUnlearn); 5e-3 sent the small CNNs to NaN / chance within one epoch.
@register('scrub', FAMILY,
          dict(C.FT_DEFAULTS, epochs=4, lr=5e-4, msteps=2, alpha=0.001, gamma=0.99, beta=1.0,
               temperature=4.0))
def scrub(**hp):
  """SCRUB (Kurmanji et al. 2023), teacher = the original model, student initialised
  from it. On paired batches (one Dr batch leading, one Df batch cycled) the step
  minimises γ · CE(Dr) + α · T² KL(t ‖ s)(Dr) − β · T² KL(t ‖ s)(Df), the last
  (max-step) term only during the first ``msteps`` epochs. Interpretation: the
  original alternates whole max-epochs over Df and min-epochs over Dr; here the
  max and min steps share one update per step on the shared paired-batch loop
  (:func:`jaxaudit.unlearn.loops.fit`)."""
  spec = C.spec_from(hp)
  C.check_positive(temperature=hp['temperature'])
  C.check_nonneg(msteps=hp['msteps'], alpha=hp['alpha'], gamma=hp['gamma'], beta=hp['beta'])
  loss = Scrub(alpha=float(hp['alpha']), gamma=float(hp['gamma']), beta=float(hp['beta']),
               temperature=float(hp['temperature']), msteps=int(hp['msteps']))

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    return loops.fit(model, params, x, y, [C.idx(data.retain), C.idx(data.forget)], key,
                     spec, loss, aux={'teacher': params}).params

  return unlearn
