"""Per-record membership signals, computed in JAX over views × models × records.

Conventions: ``A`` views (the exact record plus augmented neighbours), ``K``
verification models, ``n`` records, ``C`` classes. Every function is pure and
jit-able; :func:`query_views` builds the deterministic augmented inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import AuditError

# Augmentations the audit can query: translations (dy, dx) in pixels with edge
# padding, a horizontal flip, and Gaussian noise with std 0.25 in standardised
# units, drawn per record from its pool index so that a record's view never
# depends on which set it belongs to.
_NAMED_SHIFTS = {
    'shift_right': (0, 1), 'shift_left': (0, -1), 'shift_down': (1, 0), 'shift_up': (-1, 0),
    'shift_down_right': (1, 1), 'shift_down_left': (1, -1), 'shift_up_right': (-1, 1),
    'shift_up_left': (-1, -1),
    'shift2_right': (0, 2), 'shift2_left': (0, -2), 'shift2_down': (2, 0), 'shift2_up': (-2, 0),
}
# Every translation within 2 px: the named ones above, the rest as 'shift_{dy:+d}_{dx:+d}'.
SHIFTS = dict(_NAMED_SHIFTS, **{
    f'shift_{dy:+d}_{dx:+d}': (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
    if (dy, dx) != (0, 0) and (dy, dx) not in _NAMED_SHIFTS.values()})
# Independent noise draws: 'noise' and 'noise_1' ... 'noise_7'.
NOISE_VIEWS = ('noise',) + tuple(f'noise_{j}' for j in range(1, 8))
VIEWS = ('identity',) + tuple(SHIFTS) + ('flip',) + NOISE_VIEWS
NOISE_STD = 0.25
# The default image neighbourhood: the eight 1-px translations and the four 2-px shifts,
# plus noise. The 2-px and diagonal shifts were added after the laundering fake (training on
# shifted, noisy copies of Du) evaded the 1-px neighbourhood (BUILD_NOTES.md, "Fake
# unlearning"); all 24 translations within 2 px with a soft maximum over them caught
# laundering about as often but the adaptive fake less often, so the mean over these 13 stays.
IMAGE_VIEWS = ('identity', 'shift_right', 'shift_left', 'shift_down', 'shift_up',
               'shift_down_right', 'shift_down_left', 'shift_up_right', 'shift_up_left',
               'shift2_right', 'shift2_left', 'shift2_down', 'shift2_up', 'noise')


def logit_confidence(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """LiRA's logit-scaled confidence φ = log p_y − log Σ_{y'≠y} p_{y'}.

  Computed from logits as z_y − logsumexp_{y'≠y} z_{y'}, which is exact and
  stable where 1 − p_y underflows.

  Args:
    logits: (..., n, C).
    labels: (n,) int.
  Returns:
    (..., n) float32.
  """
  c = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, c, dtype=bool)
  zy = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
  others = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  return zy - others


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Per-record loss. logits (..., n, C), labels (n,) -> (..., n)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, jnp.broadcast_to(labels[..., None], logp.shape[:-1] + (1,)),
                              axis=-1)[..., 0]


def kl_divergence(logits_p: jnp.ndarray, logits_q: jnp.ndarray) -> jnp.ndarray:
  """KL(p ‖ q) per record. (..., n, C), (..., n, C) -> (..., n)."""
  lp = jax.nn.log_softmax(logits_p, axis=-1)
  lq = jax.nn.log_softmax(logits_q, axis=-1)
  return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


class Signals(NamedTuple):
  """Signals of one record set.

  Attributes:
    phi_target: (A, n) φ of the audited model on each view.
    phi_verifiers: (A, K, n) φ of each verifier.
    calibrated: (A, n) φ_target − mean_k φ_verifier (β = 1; the audit refits β, see
      :func:`jaxaudit.audit.decision.regression_calibrate`).
    loss_target: (A, n) cross-entropy of the audited model.
    agreement: (A, K, n) 1 where the audited model's top-1 equals verifier k's.
    kl: (A, K, n) KL(target ‖ verifier k).
    correct_target: (n,) top-1 correctness of the audited model on the exact view.
    correct_verifiers: (K, n) same for each verifier.
  """
  phi_target: np.ndarray
  phi_verifiers: np.ndarray
  calibrated: np.ndarray
  loss_target: np.ndarray
  agreement: np.ndarray
  kl: np.ndarray
  correct_target: np.ndarray
  correct_verifiers: np.ndarray


@jax.jit
def _signals(target_logits, verifier_logits, labels):
  phi_t = logit_confidence(target_logits, labels)                # (A, n)
  phi_v = logit_confidence(verifier_logits, labels)              # (A, K, n)
  calibrated = phi_t - jnp.mean(phi_v, axis=1)
  loss_t = cross_entropy(target_logits, labels)
  top_t = jnp.argmax(target_logits, -1)
  top_v = jnp.argmax(verifier_logits, -1)
  agreement = (top_v == top_t[:, None, :]).astype(jnp.float32)
  kl = kl_divergence(target_logits[:, None], verifier_logits)
  return (phi_t, phi_v, calibrated, loss_t, agreement, kl,
          (top_t[0] == labels), (top_v[0] == labels[None]))


def check_logits(logits, num_classes: int, name: str, *, allow_nonfinite: bool = False
                 ) -> np.ndarray:
  """Validates logits (..., C): float, with the expected class count, finite.

  Args:
    logits: (..., n, C) array.
    num_classes: C.
    name: used in error messages.
    allow_nonfinite: keep NaN/inf values (a diverged model's outputs) instead
      of raising; see :func:`nonfinite_records`.
  Returns:
    (..., n, C) float32.
  """
  logits = np.asarray(logits)
  if logits.ndim < 2 or logits.shape[-1] != num_classes:
    raise AuditError(f'{name} must have shape (..., {num_classes}) (one column per class); '
                     f'got {logits.shape}')
  if not np.issubdtype(logits.dtype, np.floating):
    raise AuditError(f'{name} must be floating point, got {logits.dtype}')
  bad = ~np.isfinite(logits)
  if bad.any() and not allow_nonfinite:
    rows = np.unique(np.nonzero(bad)[-2])
    raise AuditError(f'{name} holds NaN or inf values in {len(rows)} record(s), '
                     f'e.g. at positions {rows[:5].tolist()}')
  return logits.astype(np.float32)


def nonfinite_records(logits) -> np.ndarray:
  """Records whose logits hold NaN or inf on any view.

  Args:
    logits: (A, n, C) (or (n, C)) logits.
  Returns:
    (n,) bool.
  """
  lg = np.asarray(logits)
  bad = ~np.isfinite(lg)
  return bad.any(axis=-1) if lg.ndim == 2 else bad.any(axis=-1).any(axis=0)


def compute_signals(target_logits, verifier_logits, labels) -> Signals:
  """All signals of one record set.

  Args:
    target_logits: (A, n, C) logits of the audited model on A views.
    verifier_logits: (A, K, n, C) logits of the K verifiers.
    labels: (n,) int true labels.
  Returns:
    Signals with NumPy arrays.
  """
  a, n, c = np.shape(target_logits)
  if np.shape(verifier_logits)[0] != a or np.shape(verifier_logits)[2:] != (n, c):
    raise AuditError(f'verifier logits {np.shape(verifier_logits)} do not match target '
                     f'logits {(a, n, c)} as (A, K, n, C)')
  if np.shape(labels) != (n,):
    raise AuditError(f'labels must have shape ({n},), got {np.shape(labels)}')
  out = _signals(jnp.asarray(target_logits), jnp.asarray(verifier_logits),
                 jnp.asarray(labels, jnp.int32))
  return Signals(*(np.asarray(o) for o in out))


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Translates images (n, H, W, C) by (dy, dx) pixels with edge padding."""
  h, w = x.shape[1:3]
  m = max(abs(dy), abs(dx), 1)
  p = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode='edge')
  return p[:, m - dy:m - dy + h, m - dx:m - dx + w, :]


def default_views(input_shape: tuple[int, ...], flips: bool = False) -> tuple[str, ...]:
  """Views queried by default: :data:`IMAGE_VIEWS` for images (+ flip), noise otherwise."""
  if len(input_shape) == 3:
    return IMAGE_VIEWS + ('flip',) if flips else IMAGE_VIEWS
  return ('identity', 'noise')


def query_views(x: np.ndarray, record_ids: np.ndarray, views: tuple[str, ...], *,
                seed: int = 0) -> np.ndarray:
  """Deterministic augmented copies of records.

  Args:
    x: (n, *input_shape) standardised inputs.
    record_ids: (n,) pool indices; the noise of a record is a function of its
      id and the seed only.
    views: names from ``VIEWS``; the first should be ``identity``.
    seed: noise seed.
  Returns:
    (A, n, *input_shape) float32.
  """
  unknown = [v for v in views if v not in VIEWS]
  if unknown:
    raise AuditError(f'unknown view(s) {unknown}; choose from {VIEWS}')
  x = np.asarray(x, np.float32)
  image = x.ndim == 4
  out = []
  for v in views:
    if v == 'identity':
      out.append(x)
    elif v in NOISE_VIEWS:
      draw = [] if v == 'noise' else [int(v.split('_')[1])]
      noise = np.stack([np.random.default_rng([seed, int(i)] + draw).standard_normal(x.shape[1:])
                        for i in record_ids]).astype(np.float32) if len(x) else x
      out.append(x + NOISE_STD * noise)
    elif not image:
      raise AuditError(f'view {v!r} needs image inputs (n, H, W, C); got {x.shape}')
    elif v == 'flip':
      out.append(x[:, :, ::-1, :])
    else:
      out.append(_shift(x, *SHIFTS[v]))
  return np.stack(out)
