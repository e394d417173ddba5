"""Distillation family: bad teacher, SCRUB."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxaudit.unlearn import _common as C
from jaxaudit.train import loop as loops
from jaxaudit.unlearn.base import register
from jaxaudit.unlearn.objectives import BadTeacherKL, ScrubMax, ScrubMin

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
# in DeepUnlearn's re-implementation).
@register('scrub', FAMILY,
          dict(C.FT_DEFAULTS, epochs=4, lr=5e-4, msteps=2, alpha=0.001, gamma=0.99, beta=1.0,
               temperature=4.0))
def scrub(**hp):
  """SCRUB (Kurmanji et al. 2023), teacher = the original model, student initialised
  from it. Each epoch e: if e < ``msteps``, a max epoch over Df minimising
  −β · T² KL(t ‖ s) (key ``fold_in(key, 0)``); then a min epoch over Dr minimising
  γ · CE + α · T² KL(t ‖ s) (key ``fold_in(key, 1)``), as in the authors' code
  (``train_distill`` "maximize" then "minimize"). Interpretation: the two phases keep
  separate optimiser states (momentum, schedule: cosine over ``msteps`` max epochs and
  over ``epochs`` min epochs), where the original shares one SGD optimiser with a
  step-decay schedule. (The max and min steps used to share one update per paired (Dr, Df) batch,
  which applied the max step |Dr|/|Df| times as often as SCRUB does and sent the small
  CNNs to NaN weights even at the published learning rate.)"""
  spec = C.spec_from(hp)
  C.check_positive(temperature=hp['temperature'])
  C.check_nonneg(msteps=hp['msteps'], alpha=hp['alpha'], gamma=hp['gamma'], beta=hp['beta'])
  epochs, msteps = int(hp['epochs']), int(hp['msteps'])
  t = float(hp['temperature'])
  max_loss = ScrubMax(beta=float(hp['beta']), temperature=t)
  min_loss = ScrubMin(alpha=float(hp['alpha']), gamma=float(hp['gamma']), temperature=t)
  max_spec = spec.replace(epochs=max(1, min(msteps, epochs)))

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    aux = {'teacher': params}
    forget, retain = C.idx(data.forget), C.idx(data.retain)
    kmax, kmin = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    max_state = min_state = None
    for e in range(epochs):
      if e < msteps:
        params, max_state, _ = loops.fit(model, params, x, y, [forget], kmax, max_spec,
                                         max_loss, aux=aux, opt_state=max_state,
                                         start_epoch=e, num_epochs=1)
      params, min_state, _ = loops.fit(model, params, x, y, [retain], kmin, spec, min_loss,
                                       aux=aux, opt_state=min_state, start_epoch=e,
                                       num_epochs=1)
    return params

  return unlearn
