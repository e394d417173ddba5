"""Relabelling family: random labels (Amnesiac), RL+FT, SRL, SalUn."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxaudit.unlearn import _common as C
from jaxaudit.train import loop as loops
from jaxaudit.unlearn import paramtree
from jaxaudit.unlearn.base import register
from jaxaudit.unlearn.objectives import CrossEntropy, RandomLabelCE, random_wrong_labels

FAMILY = 'relabelling'
RL_DEFAULTS = dict(C.FT_DEFAULTS, epochs=3, lr=0.01, use_retain=True)


@functools.partial(jax.jit, static_argnames='num_classes')
def relabel_targets(key: jax.Array, y: jax.Array, forget: jax.Array,
                    num_classes: int) -> jax.Array:
  """Labels of the pool with every forget record relabelled to a random wrong class.

  Args:
    key: PRNG key.
    y: (N,) int labels of the pool.
    forget: (Mf,) pool indices to relabel.
    num_classes: C.
  Returns:
    (N,) int32 labels; ``out[forget] != y[forget]`` always, other entries equal ``y``.
  """
  y = jnp.asarray(y, jnp.int32)
  forget = jnp.asarray(forget, jnp.int32)
  return y.at[forget].set(random_wrong_labels(key, y[forget], num_classes))


def _relabel_train(model, params, data, key, spec, use_retain, update_scale=None):
  """CE training on Df with fixed random wrong labels (plus Dr when use_retain)."""
  x, y = C.pool(data)
  y_rl = relabel_targets(jax.random.fold_in(key, 0), y, data.forget, data.num_classes)
  stream = C.union(data) if use_retain else C.idx(data.forget)
  return loops.fit(model, params, x, y_rl, [stream], jax.random.fold_in(key, 1), spec,
                   CrossEntropy(), update_scale=update_scale).params


@register('random_label', FAMILY, dict(RL_DEFAULTS))
def random_label(**hp):
  """Random labels (Graves et al. 2021, "amnesiac"): every Df record gets a random
  *wrong* label, drawn once from ``fold_in(key, 0)`` (see :func:`relabel_targets`);
  then CE training on relabelled Df ∪ Dr (Df alone if ``use_retain`` is False)."""
  spec = C.spec_from(hp)
  use_retain = hp['use_retain']

  def unlearn(params, model, data, key):
    return _relabel_train(model, params, data, key, spec, use_retain)

  return unlearn


@register('relabel_finetune', FAMILY,
          dict(RL_DEFAULTS, ft_epochs=3, ft_lr=0.02))
def relabel_finetune(**hp):
  """Random labels (as ``random_label``, keys ``fold_in(key, 0)``) then CE fine-tuning on
  Dr for ``ft_epochs`` at ``ft_lr`` (key ``fold_in(key, 1)``)."""
  spec = C.spec_from(hp)
  ft_spec = C.spec_from(hp, 'ft_')
  use_retain = hp['use_retain']

  def unlearn(params, model, data, key):
    params = _relabel_train(model, params, data, jax.random.fold_in(key, 0), spec, use_retain)
    return C.finetune(model, params, data, jax.random.fold_in(key, 1), ft_spec)

  return unlearn


@register('srl', FAMILY, dict(C.FT_DEFAULTS, epochs=5, lr=0.01))
def srl(**hp):
  """Successive random labels: every epoch, CE on Dr ∪ Df where each Df record's label
  is redrawn uniformly among the wrong classes (redrawn at every step from the step
  key; a record is seen once per epoch, so once per epoch)."""
  spec = C.spec_from(hp)

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    return loops.fit(model, params, x, y, [C.union(data)], key, spec, RandomLabelCE(),
                     aux={'is_forget': C.forget_flags(data)}).params

  return unlearn


def saliency_mask(grads, fraction: float):
  """SalUn's weight saliency mask: the top ``fraction`` of |grad| over all params.

  Args:
    grads: pytree of gradients (of CE on Df at the original params).
    fraction: share of all scalar parameters to mark, in [0, 1]; exactly
      round(fraction · n) entries are True (global ranking, ties by position).
  Returns:
    A bool pytree like ``grads``.
  """
  return paramtree.top_fraction_mask(jax.tree.map(jnp.abs, grads), fraction, largest=True)


def _saliency_scale(grads, *, fraction):
  return jax.tree.map(lambda m: m.astype(jnp.float32), saliency_mask(grads, fraction))


@register('salun', FAMILY, dict(RL_DEFAULTS, fraction=0.5))
def salun(**hp):
  """SalUn (Fan et al. 2024): saliency mask m = top ``fraction`` of |∇ CE(Df; θ0)| over
  all parameters (global ranking), then random-label training (as ``random_label``:
  fixed random wrong labels on Df, plus Dr) where only the masked weights move
  (θ ← θ − η m ⊙ update; the rest stays bit-identical)."""
  spec = C.spec_from(hp)
  fraction = hp['fraction']
  C.check_fraction('fraction', fraction, open_low=True)
  use_retain = hp['use_retain']

  def unlearn(params, model, data, key):
    x, y = C.pool(data)
    g = loops.mean_gradient(model, params, x, y, C.idx(data.forget), CrossEntropy(),
                            batch_size=spec.batch_size)
    scale = C.jit_apply(_saliency_scale, g, fraction=float(fraction))
    return _relabel_train(model, params, data, key, spec, use_retain, update_scale=scale)

  return unlearn
