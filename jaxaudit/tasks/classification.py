"""The classification task: logits, LiRA's φ, and the image / tabular neighbourhood.

Everything the audit knows about classifiers lives here: the check of (…, C)
logits, the membership score φ = log p_y − log Σ_{y'≠y} p_{y'} (LiRA, computed
stably from logits), the per-record loss, top-1 agreement and KL divergence
between the audited model and each verifier, the deterministic augmented
views of a record (translations, flips, Gaussian noise), classes as strata,
and the whole-class test for requests that remove entire classes.

Conventions: ``A`` views (the exact record plus augmented neighbours), ``K``
verification models, ``n`` records, ``C`` classes. The JAX functions are pure
and jit-able; :func:`query_views` builds the deterministic augmented inputs.

Whole-class forgetting. When Du holds every training record of some classes,
Mu's scores on Du and on held-out records of those classes are exchangeable
for the untouched original too (it generalises to the class), so the record
test has no power. :meth:`Classification.extra_test` then asks the class-level
question instead: does Mu still recognise the forgotten classes? Its top-1
accuracy on held-out records of those classes is tested (exact one-sided
binomial, :func:`jaxaudit.audit.decision.utility_level_test`) against the best accuracy of the
verifiers — models that never saw a record of those classes — plus
``class_margin``. This test is not exact like the record test: it assumes a
model that never saw a class recognises it no better than the verifiers do
(true in practice: a label absent from training is never predicted). Its
p-value joins the record test by Bonferroni, and a rejection is reported as
direction ``remembers_class``.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import AuditError
from jaxaudit.tasks.base import Signals, Task
from jaxaudit.train.losses import per_example_ce

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


def true_label_log_probs(logits, labels) -> np.ndarray:
  """Host-side, float64 log-probability of the true label (minus the cross-entropy).

  The peers' statistics (population MIA losses, RMIA probabilities) follow
  their float64 reference code; training and the audit's signals use
  :func:`jaxaudit.train.losses.per_example_ce`. logits (..., n, C), labels (n,)
  -> (..., n) float64.
  """
  from scipy import special
  logp = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  idx = np.broadcast_to(np.asarray(labels, np.int64)[:, None], logp.shape[:-1] + (1,))
  return np.take_along_axis(logp, idx, axis=-1)[..., 0]


def kl_divergence(logits_p: jnp.ndarray, logits_q: jnp.ndarray) -> jnp.ndarray:
  """KL(p ‖ q) per record. (..., n, C), (..., n, C) -> (..., n)."""
  lp = jax.nn.log_softmax(logits_p, axis=-1)
  lq = jax.nn.log_softmax(logits_q, axis=-1)
  return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


_phi = jax.jit(lambda logits, labels: logit_confidence(logits, labels))


SIGNAL_CHUNK = 256   # records per call of the signals program (its one shape)


@jax.jit
def _signals(target_logits, verifier_logits, labels):
  phi_t = logit_confidence(target_logits, labels)                # (A, n)
  phi_v = logit_confidence(verifier_logits, labels)              # (A, K, n)
  calibrated = phi_t - jnp.mean(phi_v, axis=1)
  loss_t = per_example_ce(target_logits, labels)
  top_t = jnp.argmax(target_logits, -1)
  top_v = jnp.argmax(verifier_logits, -1)
  agreement = (top_v == top_t[:, None, :]).astype(jnp.float32)
  kl = kl_divergence(target_logits[:, None], verifier_logits)
  # KL(Mu ‖ mixture of the verifiers' distributions).
  log_mix = (jax.nn.logsumexp(jax.nn.log_softmax(verifier_logits, -1), axis=1)
             - jnp.log(verifier_logits.shape[1]))
  lt = jax.nn.log_softmax(target_logits, -1)
  kl_ens = jnp.sum(jnp.exp(lt) * (lt - log_mix), axis=-1)
  return (phi_t, phi_v, calibrated, loss_t, agreement, kl,
          (top_t[0] == labels), (top_v[0] == labels[None]), kl_ens)


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
  # Every signal is per record (n its last axis): records run in chunks of SIGNAL_CHUNK
  # (the last one padded, the padding sliced off), one compiled program for every n.
  chunks = max(1, -(-n // SIGNAL_CHUNK))
  m = chunks * SIGNAL_CHUNK
  tl = np.zeros((a, m, c), np.float32)
  tl[:, :n] = np.asarray(target_logits, np.float32)
  vl = np.zeros(np.shape(verifier_logits)[:2] + (m, c), np.float32)
  vl[:, :, :n] = np.asarray(verifier_logits, np.float32)
  lb = np.zeros((m,), np.int32)
  lb[:n] = np.asarray(labels)
  parts = [_signals(tl[:, s:s + SIGNAL_CHUNK], vl[:, :, s:s + SIGNAL_CHUNK],
                    lb[s:s + SIGNAL_CHUNK]) for s in range(0, m, SIGNAL_CHUNK)]
  return Signals(*(np.concatenate([np.asarray(p[j]) for p in parts], axis=-1)[..., :n]
                   for j in range(len(parts[0]))))


def _shift(x: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
  """Translates images (n, H, W, C) by (dy, dx) pixels with edge padding."""
  h, w = x.shape[1:3]
  m = max(abs(dy), abs(dx), 1)
  p = jnp.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode='edge')
  return p[:, m - dy:m - dy + h, m - dx:m - dx + w, :]


def default_views(input_shape: tuple[int, ...], flips: bool = False) -> tuple[str, ...]:
  """Views queried by default: :data:`IMAGE_VIEWS` for images (+ flip), noise otherwise."""
  if len(input_shape) == 3:
    return IMAGE_VIEWS + ('flip',) if flips else IMAGE_VIEWS
  return ('identity', 'noise')


def query_views(x: np.ndarray, record_ids: np.ndarray, views: tuple[str, ...], *,
                seed: int = 0, min_records: int = 0) -> np.ndarray:
  """Deterministic augmented copies of records, built on the device in one program.

  Args:
    x: (n, *input_shape) standardised inputs.
    record_ids: (n,) pool indices; the noise of a record is a function of its
      id and the seed only (``jax.random`` keyed by (seed, id, draw)).
    views: names from ``VIEWS``; the first should be ``identity``.
    seed: noise seed.
    min_records: build as if n were at least this (a cap on n known to the
      caller: one compiled program for every request).
  Returns:
    (A, n, *input_shape) float32.
  """
  from jaxaudit.compilation import bucket_size
  views = tuple(views)
  unknown = [v for v in views if v not in VIEWS]
  if unknown:
    raise AuditError(f'unknown view(s) {unknown}; choose from {VIEWS}')
  x = np.asarray(x, np.float32)
  if x.ndim != 4 and any(v not in ('identity',) + NOISE_VIEWS for v in views):
    bad = next(v for v in views if v not in ('identity',) + NOISE_VIEWS)
    raise AuditError(f'view {bad!r} needs image inputs (n, H, W, C); got {x.shape}')
  n = len(x)
  if n == 0:
    return np.zeros((len(views),) + x.shape, np.float32)
  m = bucket_size(max(n, int(min_records)), pow2_upto=64)    # one program per size bucket
  xp = np.concatenate([x, np.zeros((m - n,) + x.shape[1:], np.float32)])
  ids = np.concatenate([np.asarray(record_ids, np.int64), np.zeros(m - n, np.int64)])
  out = _views_program(xp, (ids % (2**32)).astype(np.uint32), np.uint32(int(seed) % (2**32)),
                       views)
  return np.asarray(out)[:, :n]


@functools.partial(jax.jit, static_argnames=('views',))
def _views_program(x, ids, seed, views):
  """(n, ...) inputs, (n,) uint32 ids, seed -> (A, n, ...) views (see :func:`query_views`)."""
  base = jax.random.fold_in(jax.random.key(0), seed)
  out = []
  for v in views:
    if v == 'identity':
      out.append(x)
    elif v in NOISE_VIEWS:
      draw = 0 if v == 'noise' else int(v.split('_')[1])
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), draw))(ids)
      noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(keys)
      out.append(x + NOISE_STD * noise)
    elif v == 'flip':
      out.append(x[:, :, ::-1, :])
    else:
      out.append(_shift(x, *SHIFTS[v]))
  return jnp.stack(out)


def _roughness(x: np.ndarray) -> np.ndarray:
  """(n, H, W, C) images -> (n,) mean absolute difference of adjacent pixels."""
  x = np.asarray(x, np.float64)
  if x.shape[1] < 2 or x.shape[2] < 2:
    return np.zeros(len(x))
  return 0.5 * (np.abs(np.diff(x, axis=1)).mean((1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean((1, 2, 3)))


def _logsumexp(lg: np.ndarray) -> np.ndarray:
  m = lg.max(-1, keepdims=True)
  return (m + np.log(np.sum(np.exp(lg - m), -1, keepdims=True)))[..., 0]


class Classification(Task):
  """A classifier with ``num_classes`` outputs (logits), labels int in [0, C)."""

  name = 'classification'

  def __init__(self, num_classes: int):
    if int(num_classes) < 2:
      raise AuditError(f'a classification task needs >= 2 classes, got {num_classes}')
    self.num_classes = int(num_classes)

  def __repr__(self) -> str:
    return f'Classification(num_classes={self.num_classes})'

  def check_outputs(self, outputs, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """(..., n, C) logits, checked (:func:`check_logits`)."""
    return check_logits(outputs, self.num_classes, name, allow_nonfinite=allow_nonfinite)

  def signals(self, target_outputs, verifier_outputs, targets) -> Signals:
    """(A, n, C), (A, K, n, C), labels (n,) -> :class:`Signals` (:func:`compute_signals`)."""
    return compute_signals(target_outputs, verifier_outputs, targets)

  def membership_score(self, outputs, targets) -> np.ndarray:
    """LiRA's φ (:func:`logit_confidence`): logits (..., n, C), labels (n,) -> (..., n)."""
    return np.asarray(_phi(np.asarray(outputs, np.float32), np.asarray(targets, np.int32)))

  def utility(self, outputs, targets) -> np.ndarray:
    """Top-1 accuracy: logits (..., n, C), labels (n,) -> (...)."""
    return np.mean(self.record_utility(outputs, targets), axis=-1)

  def record_loss(self, outputs, targets) -> np.ndarray:
    """Per-record cross-entropy in float64 (:func:`true_label_log_probs`): logits
    (..., n, C), labels (n,) -> (..., n)."""
    return -true_label_log_probs(outputs, targets)

  def record_utility(self, outputs, targets) -> np.ndarray:
    """Top-1 correctness: logits (..., n, C), labels (n,) -> (..., n) in {0, 1}."""
    return (np.argmax(np.asarray(outputs), -1) == np.asarray(targets)).astype(np.float64)

  def default_views(self, input_shape: tuple[int, ...], flips: bool = False) -> tuple[str, ...]:
    return default_views(input_shape, flips)

  def query_views(self, x: np.ndarray, record_ids: np.ndarray, views: tuple[str, ...], *,
                  seed: int = 0, min_records: int = 0) -> np.ndarray:
    return query_views(x, record_ids, views, seed=seed, min_records=min_records)

  def available_views(self) -> tuple[str, ...]:
    return VIEWS

  def strata(self, targets) -> np.ndarray:
    """Classes: samples are class-matched and permutations class-stratified."""
    return np.asarray(targets)

  def input_statistics(self, x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and std of each record's inputs, and for images their roughness (pixel noise)."""
    out = super().input_statistics(x)
    if np.ndim(x) == 4:
      out['input_roughness'] = _roughness(x)
    return out

  def output_statistics(self, verifier_outputs) -> dict[str, np.ndarray]:
    """The verifiers' mean energy (log-sum-exp of the logits): (K, n, C) -> (n,)."""
    return {'verifiers_energy': _logsumexp(np.asarray(verifier_outputs, np.float64)).mean(0)}

  def needs_unseen_verifiers(self, dataset, split, settings) -> bool:
    """True when Du holds every training record of some class (the whole-class test)."""
    y = dataset.y_train
    return bool(settings.class_test and len(np.setdiff1d(np.unique(y[split.forget]),
                                                         np.unique(y[split.retain]))))

  def extra_test(self, dataset, split, settings, query, alt_utility):
    """The whole-class test when Du holds every training record of some classes: Mu's and
    the verifiers' top-1 correctness on held-out records of those classes, for
    :func:`jaxaudit.audit.decision.utility_level_test`."""
    y = dataset.y_train
    if not settings.class_test:
      return None, False
    forgotten = np.setdiff1d(np.unique(y[split.forget]), np.unique(y[split.retain]))
    if not len(forgotten):
      return None, False
    class_only = bool(np.all(np.isin(y[split.forget], forgotten)))
    held = np.asarray(split.ref)[np.isin(y[split.ref], forgotten)]
    if len(held) > settings.ref_sample:
      held = np.sort(np.random.default_rng([settings.seed, 37]).choice(
          held, settings.ref_sample, replace=False))
    if not len(held):
      return None, class_only
    tl, vl = query(held, 'held_classes' + str(tuple(forgotten.tolist())))
    return dict(correct_target=np.argmax(tl, -1) == y[held],
                correct_verifiers=np.argmax(vl, -1) == y[held][None],
                classes=forgotten.tolist(), held_out_records=int(len(held)),
                direction='remembers_class'), class_only

