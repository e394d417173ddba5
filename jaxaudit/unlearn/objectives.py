"""Per-batch losses of the unlearning methods, as hashable values.

Each loss is a frozen dataclass (hashable by value, so it keys compiled
programs) called as

    ``loss(apply_fn, params, batches, key, aux, info) -> scalar``

with ``batches`` a tuple of :class:`jaxaudit.train.loop.Batch` (one per
stream), ``aux`` a dict of run-time arrays and ``info`` a
:class:`jaxaudit.train.loop.StepInfo`. A loss whose class attribute
``stochastic`` is False receives ``key=None`` (no per-step keys are
generated). Every mean is weighted by the batch weights, so padding never
contributes.

KL conventions: ``kl(t ‖ s)`` with teacher logits t and student logits s at
temperature T is Σ_c softmax(t/T)_c (log softmax(t/T)_c − log softmax(s/T)_c)
per example.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxaudit.train.losses import masked_mean, per_example_ce


def random_wrong_labels(key: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  """Uniformly random labels that always differ from the true ones.

  Args:
    key: PRNG key.
    y: (...) int labels in [0, C).
    num_classes: C >= 2.
  Returns:
    (...) int32 labels y' with y' != y, uniform over the other C − 1 classes.
  """
  shift = jax.random.randint(key, jnp.shape(y), 1, num_classes)
  return ((y + shift) % num_classes).astype(jnp.int32)


def kl_teacher_student(t_logits: jax.Array, s_logits: jax.Array,
                       temperature: float = 1.0) -> jax.Array:
  """Per-example KL(softmax(t/T) ‖ softmax(s/T)). (B, C), (B, C) -> (B,)."""
  lt = jax.nn.log_softmax(t_logits / temperature, axis=-1)
  ls = jax.nn.log_softmax(s_logits / temperature, axis=-1)
  return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


def entropy(logits: jax.Array) -> jax.Array:
  """Per-example entropy of softmax(logits). (B, C) -> (B,)."""
  lp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(lp) * lp, axis=-1)


def _teacher(apply_fn, params, x):
  return jax.lax.stop_gradient(apply_fn(params, x))


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
  """sign · CE on stream 0 (sign = −1 is gradient ascent)."""
  sign: float = 1.0
  label_smoothing: float = 0.0

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    ce = per_example_ce(apply_fn(params, b.x), b.y, self.label_smoothing)
    return self.sign * masked_mean(ce, b.w)


@dataclasses.dataclass(frozen=True)
class ClassWeightedCE:
  """Class-weighted CE on stream 0: Σ w c_y ℓ / Σ w c_y, c = ``aux['class_weights']`` (C,)."""

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    cw = aux['class_weights'][b.y] * b.w
    ce = per_example_ce(apply_fn(params, b.x), b.y)
    return jnp.sum(ce * cw) / jnp.maximum(jnp.sum(cw), 1e-12)


@dataclasses.dataclass(frozen=True)
class L1Sparse:
  """CE on stream 0 + γ_t ‖θ‖₁ with γ_t = γ (1 − epoch / epochs) (linear decay per epoch)."""
  gamma: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    ce = masked_mean(per_example_ce(apply_fn(params, b.x), b.y), b.w)
    coef = self.gamma * (1.0 - info.epoch.astype(jnp.float32) / max(info.epochs, 1))
    l1 = sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))
    return ce + coef * l1


@dataclasses.dataclass(frozen=True)
class RandomLabelCE:
  """CE on stream 0 where records flagged by ``aux['is_forget']`` (N,) bool get random
  wrong labels, redrawn at every step from the step key (hence each epoch)."""

  stochastic = True  # draws the wrong labels from its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    logits = apply_fn(params, b.x)
    wrong = random_wrong_labels(key, b.y, logits.shape[-1])
    y = jnp.where(aux['is_forget'][b.idx], wrong, b.y)
    return masked_mean(per_example_ce(logits, y), b.w)


@dataclasses.dataclass(frozen=True)
class NegGradPlus:
  """α · CE(stream 0 = Dr) − (1 − α) · CE(stream 1 = Df)."""
  alpha: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    r, f = batches
    ce_r = masked_mean(per_example_ce(apply_fn(params, r.x), r.y), r.w)
    ce_f = masked_mean(per_example_ce(apply_fn(params, f.x), f.y), f.w)
    return self.alpha * ce_r - (1.0 - self.alpha) * ce_f


@dataclasses.dataclass(frozen=True)
class BadTeacherKL:
  """KL(teacher ‖ student) at temperature T on stream 0, where the teacher of a
  record is the incompetent ``aux['bad']`` model if ``aux['is_forget'][idx]``
  and the competent ``aux['good']`` (original) model otherwise."""
  temperature: float = 1.0

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    good = _teacher(apply_fn, aux['good'], b.x)
    bad = _teacher(apply_fn, aux['bad'], b.x)
    t = jnp.where(aux['is_forget'][b.idx][:, None], bad, good)
    return masked_mean(kl_teacher_student(t, apply_fn(params, b.x), self.temperature), b.w)


@dataclasses.dataclass(frozen=True)
class ScrubMax:
  """SCRUB's max step on stream 0 (Df), teacher ``aux['teacher']`` (the original):
  −β · T² KL(t ‖ s)(Df)."""
  beta: float
  temperature: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    f = batches[0]
    kl = masked_mean(kl_teacher_student(_teacher(apply_fn, aux['teacher'], f.x),
                                        apply_fn(params, f.x), self.temperature), f.w)
    return -self.beta * self.temperature ** 2 * kl


@dataclasses.dataclass(frozen=True)
class ScrubMin:
  """SCRUB's min step on stream 0 (Dr), teacher ``aux['teacher']`` (the original):
  γ · CE(Dr) + α · T² KL(t ‖ s)(Dr)."""
  alpha: float
  gamma: float
  temperature: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    r = batches[0]
    s_r = apply_fn(params, r.x)
    ce_r = masked_mean(per_example_ce(s_r, r.y), r.w)
    kl_r = masked_mean(kl_teacher_student(_teacher(apply_fn, aux['teacher'], r.x), s_r,
                                          self.temperature), r.w)
    return self.gamma * ce_r + self.alpha * self.temperature ** 2 * kl_r


@dataclasses.dataclass(frozen=True)
class UniformKL:
  """KL(uniform ‖ softmax(s)) on stream 0: pushes predictions towards uniform."""

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    lp = jax.nn.log_softmax(apply_fn(params, b.x), axis=-1)
    c = lp.shape[-1]
    kl = jnp.sum((1.0 / c) * (-jnp.log(c) - lp), axis=-1)
    return masked_mean(kl, b.w)


@dataclasses.dataclass(frozen=True)
class ForgetContrastive:
  """FCS contrastive loss on paired (Df, Dr) batches.

  With z_f = f(x_f) and z_r = stop_grad(f(x_r)) (logit vectors), the loss is
  −mean_{i,j} log_softmax_j(z_f,i · z_r,j / T) over valid pairs: it spreads
  every forget record's similarity evenly over retain records, erasing the
  forget-specific structure of its logits.
  """
  temperature: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    f, r = batches
    zf = apply_fn(params, f.x)
    zr = jax.lax.stop_gradient(apply_fn(params, r.x))
    sim = zf @ zr.T / self.temperature                       # (Bf, Br)
    sim = jnp.where(r.w[None, :] > 0, sim, -1e9)
    logp = jax.nn.log_softmax(sim, axis=-1)
    pair_w = f.w[:, None] * r.w[None, :]
    return -jnp.sum(logp * pair_w) / jnp.maximum(jnp.sum(pair_w), 1.0)


@dataclasses.dataclass(frozen=True)
class Distill:
  """ce · CE + soft · H(softmax(t/T), softmax(s/T)) + kl · KL(t ‖ s) at temperature T on
  stream 0, teacher ``aux['teacher']``."""
  temperature: float
  ce: float = 1.0
  soft: float = 1.0
  kl: float = 1.0

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    s = apply_fn(params, b.x)
    t = _teacher(apply_fn, aux['teacher'], b.x)
    total = 0.0
    if self.ce:
      total += self.ce * masked_mean(per_example_ce(s, b.y), b.w)
    if self.soft:
      pt = jax.nn.softmax(t / self.temperature, axis=-1)
      soft_ce = -jnp.sum(pt * jax.nn.log_softmax(s / self.temperature, axis=-1), axis=-1)
      total += self.soft * masked_mean(soft_ce, b.w)
    if self.kl:
      total += self.kl * masked_mean(kl_teacher_student(t, s, self.temperature), b.w)
    return total


@dataclasses.dataclass(frozen=True)
class EntropyMatchCE:
  """PRMQ: class-weighted CE + mean (H(student) − H(teacher))² on stream 0
  (teacher ``aux['teacher']``, class weights ``aux['class_weights']``)."""

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    b = batches[0]
    s = apply_fn(params, b.x)
    t = _teacher(apply_fn, aux['teacher'], b.x)
    cw = aux['class_weights'][b.y] * b.w
    ce = jnp.sum(per_example_ce(s, b.y) * cw) / jnp.maximum(jnp.sum(cw), 1e-12)
    return ce + masked_mean((entropy(s) - entropy(t)) ** 2, b.w)
