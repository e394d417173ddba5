"""Language-model family: GA, GradDiff, NPO, SimNPO, IdkPO, RMU, fine-tuning, retraining.

Unlearning methods of the LLM literature (TOFU, Maini et al. 2024; MUSE, Shi et
al. 2024; WMDP, Li et al. 2024) for the from-scratch
:class:`jaxaudit.models.transformer.TransformerLM`. Records follow the text
encoding of :mod:`jaxaudit.text`: the pool ``data.x`` (N, T+1) float32 holds
token ids right-padded with -1 and ``data.y`` (N, T) int32 the next-token
targets (-1 = padding). Every method here needs such token targets and a model
with an ``output`` attribute (a model set to ``output='features'`` is cloned to
``'logits'``; the attribute changes no parameter); anything else is one
ConfigError, raised before any compilation.

Notation: for a record (x, y), log π_θ(y|x) = Σ_t log p_θ(y_t | x_≤t) over its
valid targets (the *sequence* log-prob), |y| its number of valid targets, and
NLL = −log π_θ(y|x) / |y| the per-record mean token NLL (:class:`TokenCE`). Every
batch mean is over the batch's records (padding and records without any valid
target carry weight 0), as in the reference implementations, which average
per-sequence losses over the batch.

Published settings and ours. TOFU unlearns a Llama-2-7B that was fine-tuned on
the authors for 5 epochs at lr 1e-5 (AdamW, weight decay 0.01) with the *same*
optimiser and lr: GA and GradDiff 5 epochs, effective batch 32; NPO (Zhang et
al. 2024, github.com/licong-lin/negative-preference-optimization) 10 epochs,
β = 0.1; SimNPO (Fan et al. 2024, github.com/OPTML-Group/Unlearn-Simple)
10 epochs, β = 2.5, γ = 0, forget weight 0.1375 and retain weight 1 on
forget05. The rule we keep is "unlearn at the learning rate the model was
trained at": our small LMs are trained from scratch with Adam at ~1e-3
(:class:`jaxaudit.train.Recipe`'s default), so the defaults here are AdamW at
lr 1e-3, weight decay 0.01, cosine schedule, batch 32, with the published epoch
counts (epochs are passes over Du, the leading stream). RMU's settings are
discussed at :func:`lm_rmu`.

==================  ==========================================================
method              loss (streams: Du leads, Dr cycled alongside; w_r =
                    ``retain_weight``, w_f = ``forget_weight``)
==================  ==========================================================
lm_gradient_ascent  −NLL(Du)
lm_grad_diff        −NLL(Du) + w_r · NLL(Dr)
lm_npo              −(2/β) log σ(−β (log π_θ − log π_ref)(Du)) [+ w_r · NLL(Dr)]
lm_simnpo           w_f · −(2/β) log σ(−β log π_θ(Du)/|y| − γ) + w_r · NLL(Dr)
lm_idk              NLL(Du, second halves replaced by data.refusal) + w_r · NLL(Dr)
lm_rmu              ‖h_l(Du) − c·u‖² + α ‖h_l(Dr) − h_l^orig(Dr)‖² (blocks l−2..l only)
lm_finetune         NLL(Dr) (Dr is its only stream)
lm_retrain          train data.init_checkpoint_params (the base LM) on Dr with data.recipe
==================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError
from jaxaudit.train import loop as loops
from jaxaudit.train.ensemble import stack, train_ensemble, train_model
from jaxaudit.train.losses import masked_mean
from jaxaudit.train.loop import TokenCE
from jaxaudit.unlearn import _common as C
from jaxaudit.unlearn.base import Unlearner, register

FAMILY = 'language-model'
Params = Any

# AdamW at the LM's own training rate (see the module docstring), TOFU's weight decay 0.01.
LM_DEFAULTS = dict(epochs=5, lr=1e-3, batch_size=32, optimizer='adamw', weight_decay=0.01,
                   momentum=0.9, schedule='cosine')


# ----------------------------------------------------------------------------- token maths


def token_logprobs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Log-probs of the target tokens.

  Args:
    logits: (B, T, V) next-token logits.
    targets: (B, T) int token ids, -1 = padding.
  Returns:
    (logp (B, T) float32, 0 at padding; valid (B, T) float32, 1 where targets >= 0).
  """
  targets = targets.astype(jnp.int32)
  valid = targets >= 0
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  lp = jnp.take_along_axis(lp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
  return jnp.where(valid, lp, 0.0), valid.astype(jnp.float32)


def sequence_logprob(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log π(y|x) (B,) = Σ of valid token log-probs, |y| (B,) number of valid targets)."""
  lp, valid = token_logprobs(logits, targets)
  return jnp.sum(lp, axis=-1), jnp.sum(valid, axis=-1)


def _record_weights(b: loops.Batch) -> jax.Array:
  """(B,) batch weights, 0 also for records without any valid target."""
  return b.w * jnp.any(b.y >= 0, axis=-1).astype(b.w.dtype)


def _nll(apply_fn, params, b: loops.Batch) -> jax.Array:
  """Mean over the batch's records of their mean token NLL. -> ()."""
  return masked_mean(TokenCE()(apply_fn(params, b.x), b.y), _record_weights(b))


def npo_loss(logp: jax.Array, ref_logp: jax.Array, beta: float) -> jax.Array:
  """Per-record NPO loss −(2/β) log σ(−β (logp − ref_logp)). (B,), (B,) -> (B,)."""
  return -(2.0 / beta) * jax.nn.log_sigmoid(-beta * (logp - ref_logp))


def simnpo_loss(logp: jax.Array, length: jax.Array, beta: float, gamma: float) -> jax.Array:
  """Per-record SimNPO loss −(2/β) log σ(−β logp / |y| − γ). (B,), (B,) -> (B,)."""
  return -(2.0 / beta) * jax.nn.log_sigmoid(-beta * logp / jnp.maximum(length, 1.0) - gamma)


# ----------------------------------------------------------------------------- objectives


@dataclasses.dataclass(frozen=True)
class TokenNLL:
  """Σ_j weights[j] · NLL(stream j); one weight per stream.

  (−1,) is gradient ascent, (1,) fine-tuning, (−1, w) GradDiff on (Du, Dr),
  (1, w) refusal tuning on (Du relabelled, Dr).
  """
  weights: tuple[float, ...] = (1.0,)

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    return sum(w * _nll(apply_fn, params, b) for w, b in zip(self.weights, batches) if w)


@dataclasses.dataclass(frozen=True)
class NPOLoss:
  """NPO on stream 0 (Du), reference params ``aux['ref']``, plus ``retain_weight`` ·
  NLL(stream 1 = Dr) when ``retain_weight`` > 0 (NPO+RT)."""
  beta: float
  retain_weight: float = 0.0

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    f = batches[0]
    logp, _ = sequence_logprob(apply_fn(params, f.x), f.y)
    ref, _ = sequence_logprob(jax.lax.stop_gradient(apply_fn(aux['ref'], f.x)), f.y)
    loss = masked_mean(npo_loss(logp, ref, self.beta), _record_weights(f))
    if self.retain_weight:
      loss = loss + self.retain_weight * _nll(apply_fn, params, batches[1])
    return loss


@dataclasses.dataclass(frozen=True)
class SimNPOLoss:
  """forget_weight · SimNPO(stream 0 = Du) + retain_weight · NLL(stream 1 = Dr)."""
  beta: float
  gamma: float = 0.0
  forget_weight: float = 1.0
  retain_weight: float = 0.0

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    f = batches[0]
    logp, n = sequence_logprob(apply_fn(params, f.x), f.y)
    loss = self.forget_weight * masked_mean(simnpo_loss(logp, n, self.beta, self.gamma),
                                            _record_weights(f))
    if self.retain_weight:
      loss = loss + self.retain_weight * _nll(apply_fn, params, batches[1])
    return loss


def _activation_mse(h: jax.Array, target: jax.Array, x: jax.Array) -> jax.Array:
  """Per-record mean over valid input positions of mean_d (h − target)². -> (B,).

  h: (B, T, W) activations at the input positions x[:, :T]; target broadcastable.
  """
  valid = (x[:, :h.shape[1]] >= 0).astype(jnp.float32)
  sq = jnp.mean(jnp.square(h - target), axis=-1)
  return jnp.sum(sq * valid, axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1.0)


@dataclasses.dataclass(frozen=True)
class RMULoss:
  """RMU (Li et al. 2024) for a model with ``output='hidden'``: on stream 0 (Du)
  mean ‖h − c·u‖²/W towards ``aux['control']`` (W,), plus ``alpha`` · mean
  ‖h − h_frozen‖²/W on stream 1 (Dr), frozen params ``aux['frozen']``. Averages
  over valid positions of each record, then over records (as OpenUnlearning's)."""
  alpha: float

  stochastic = False  # the loss ignores its key

  def __call__(self, apply_fn, params, batches, key, aux, info):
    f, r = batches
    forget = _activation_mse(apply_fn(params, f.x), aux['control'], f.x)
    frozen = jax.lax.stop_gradient(apply_fn(aux['frozen'], r.x))
    retain = _activation_mse(apply_fn(params, r.x), frozen, r.x)
    return masked_mean(forget, f.w) + self.alpha * masked_mean(retain, r.w)


# ----------------------------------------------------------------------------- helpers


def lm_model(model, data, name: str):
  """``model`` set to ``output='logits'``; ConfigError unless it is a language model on
  token targets (a module with an ``output`` attribute, data.y of shape (N, T))."""
  if not hasattr(model, 'output') or not hasattr(model, 'clone'):
    raise ConfigError(f'method {name!r} needs a language model (a TransformerLM), got '
                      f'{type(model).__name__}')
  if np.ndim(data.y) != 2:
    raise ConfigError(f'method {name!r} needs next-token targets y of shape (N, T), got '
                      f'shape {tuple(np.shape(data.y))}')
  return model if model.output == 'logits' else model.clone(output='logits')


def _streams(data, *, retain: bool) -> list[jax.Array]:
  out = [C.idx(data.forget)]
  if retain:
    out.append(C.idx(data.retain))
  return out


def _fit(model, params, data, key, spec, loss, *, retain: bool, aux=None, x=None, y=None,
         update_scale=None) -> Params:
  px, py = C.pool(data)
  x = px if x is None else x
  y = py if y is None else y
  return loops.fit(model, params, x, y, _streams(data, retain=retain), key, spec, loss,
                   aux=aux, update_scale=update_scale).params


# ----------------------------------------------------------------------------- methods


@register('lm_gradient_ascent', FAMILY, dict(LM_DEFAULTS))
def lm_gradient_ascent(**hp):
  """GA on a language model: minimise −NLL(Du) (the mean token NLL of each Du record).

  TOFU's GA (AdamW, 5 epochs at the fine-tuning lr); here AdamW lr 1e-3 (the
  rate our small LMs are trained at), weight decay 0.01, cosine, batch 32, 5
  epochs over Du.
  """
  spec = C.spec_from(hp)
  loss = TokenNLL((-1.0,))

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_gradient_ascent')
    return _fit(m, params, data, key, spec, loss, retain=False)

  return unlearn


@register('lm_grad_diff', FAMILY, dict(LM_DEFAULTS, retain_weight=1.0))
def lm_grad_diff(**hp):
  """GradDiff: minimise −NLL(Du) + retain_weight · NLL(Dr) on paired batches (each
  step one Du batch, leading the epoch, and one cycled Dr batch).

  TOFU's grad_diff and OpenUnlearning's GradDiff (both weights 1); optimiser as
  :func:`lm_gradient_ascent` (5 epochs over Du).
  """
  spec = C.spec_from(hp)
  C.check_nonneg(retain_weight=hp['retain_weight'])
  loss = TokenNLL((-1.0, float(hp['retain_weight'])))

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_grad_diff')
    return _fit(m, params, data, key, spec, loss, retain=True)

  return unlearn


@register('lm_npo', FAMILY, dict(LM_DEFAULTS, epochs=10, beta=0.1, retain_weight=0.0))
def lm_npo(**hp):
  """NPO (Zhang et al. 2024): minimise −(2/β) log σ(−β (log π_θ(y|x) − log π_ref(y|x)))
  over Du, π_ref = the original params (frozen), log π the sequence log-prob.

  β = 0.1 and 10 epochs as the NPO repository's TOFU runs; AdamW lr 1e-3 as
  :func:`lm_gradient_ascent`. ``retain_weight`` > 0 adds that times NLL(Dr)
  on paired Dr batches (NPO+RT; OpenUnlearning's NPO uses 1); the default 0 is
  plain NPO. As β → 0 the loss tends to GA on the sequence NLL; unlike GA it
  saturates once π_θ(y|x) ≪ π_ref(y|x).
  """
  spec = C.spec_from(hp)
  C.check_positive(beta=hp['beta'])
  C.check_nonneg(retain_weight=hp['retain_weight'])
  loss = NPOLoss(float(hp['beta']), float(hp['retain_weight']))
  retain = bool(hp['retain_weight'])

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_npo')
    return _fit(m, params, data, key, spec, loss, retain=retain, aux={'ref': params})

  return unlearn


@register('lm_simnpo', FAMILY,
          dict(LM_DEFAULTS, epochs=10, beta=2.5, gamma=0.0, forget_weight=0.1375,
               retain_weight=1.0))
def lm_simnpo(**hp):
  """SimNPO (Fan et al. 2024), reference-free and length-normalised: minimise
  forget_weight · −(2/β) log σ(−β log π_θ(y|x)/|y| − γ) over Du + retain_weight ·
  NLL(Dr) on paired batches.

  Defaults from the SimNPO repository's TOFU forget05 run (OPTML-Group/
  Unlearn-Simple): β = 2.5, γ = 0, forget weight (``npo_coeff``) 0.1375,
  retain weight (``grad_diff_coeff``) 1, 10 epochs; AdamW lr 1e-3 as
  :func:`lm_gradient_ascent`. γ follows the paper's formula (outside β); the
  repository subtracts it before multiplying by β (the same at γ = 0).
  ``retain_weight`` = 0 drops the Dr stream (plain SimNPO).
  """
  spec = C.spec_from(hp)
  C.check_positive(beta=hp['beta'], forget_weight=hp['forget_weight'])
  C.check_nonneg(gamma=hp['gamma'], retain_weight=hp['retain_weight'])
  loss = SimNPOLoss(float(hp['beta']), float(hp['gamma']), float(hp['forget_weight']),
                    float(hp['retain_weight']))
  retain = bool(hp['retain_weight'])

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_simnpo')
    return _fit(m, params, data, key, spec, loss, retain=retain)

  return unlearn


def refusal_rows(x: jax.Array, refusal: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Records whose continuation after their first half is the refusal answer.

  Args:
    x: (M, T+1) float32 token ids right-padded with -1.
    refusal: (R,) int token ids.
  Returns:
    (x' (M, T+1) float32, y' (M, T) int32): a record with n valid tokens keeps
    its first h = ceil(n / 2) tokens, then the refusal (cut at T+1), then
    padding; y' targets only the refusal tokens (the kept prompt is -1), so
    fine-tuning on (x', y') never rehearses Du's own text.
  """
  length = x.shape[1]
  n = jnp.sum(x >= 0, axis=1)                                   # (M,)
  h = (n + 1) // 2
  pos = jnp.arange(length)[None, :]                             # (1, T+1)
  r = refusal.shape[0]
  ref = jnp.take(refusal.astype(jnp.float32), jnp.clip(pos - h[:, None], 0, r - 1))
  row = jnp.where(pos < h[:, None], x,
                  jnp.where(pos < h[:, None] + r, ref, -1.0)).astype(jnp.float32)
  nxt = row[:, 1:]
  y = jnp.where((pos[:, 1:] >= h[:, None]) & (nxt >= 0), nxt, -1.0).astype(jnp.int32)
  return row, y


def _idk_pool(x, y, forget, refusal):
  rows, targets = refusal_rows(x[forget], refusal)
  return x.at[forget].set(rows), y.at[forget].set(targets)


@register('lm_idk', FAMILY, dict(LM_DEFAULTS, retain_weight=1.0))
def lm_idk(**hp):
  """IdkPO / "I don't know" tuning (TOFU's ``idk``): replace each Du record's
  continuation after its first half (ceil(n/2) tokens) with the refusal answer
  ``data.refusal`` (R,) and minimise NLL(refusal | prompt) on those records +
  retain_weight · NLL(Dr) on paired batches; only the refusal tokens are
  targets. TOFU's loss (weights 1), optimiser as :func:`lm_gradient_ascent`.

  Raises:
    ConfigError: ``data.refusal`` is None.
  """
  spec = C.spec_from(hp)
  C.check_nonneg(retain_weight=hp['retain_weight'])
  loss = TokenNLL((1.0, float(hp['retain_weight'])))

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_idk')
    if data.refusal is None:
      raise ConfigError('method "lm_idk" needs data.refusal, the token ids of the refusal '
                        'answer (e.g. the tokenized "I don\'t know.")')
    x, y = C.pool(data)
    x, y = C.jit_apply(_idk_pool, x, y, C.idx(data.forget), jnp.asarray(data.refusal, jnp.int32))
    return _fit(m, params, data, key, spec, loss, retain=True, x=x, y=y)

  return unlearn


def default_rmu_layer(depth: int) -> int:
  """Li et al.'s layer 7 of 32, scaled to ``depth`` blocks: round(7 depth / 32), in [1, depth − 1]
  (0 for a one-block model)."""
  if depth <= 1:
    return 0
  return int(min(max(round(7 * depth / 32), 1), depth - 1))


_BLOCK = re.compile(r'^block_(\d+)$')


def rmu_update_scale(params, layer: int, update_layers: int, trainable: str):
  """Pytree like ``params`` of 1.0 (updated) / 0.0 (frozen) scalars: the blocks
  ``layer − update_layers + 1 .. layer`` (all their params with ``trainable='block'``,
  only their ``mlp_out`` kernels with ``'mlp_out'``); everything else frozen.

  Raises:
    ConfigError: the params have no ``block_i`` entries (not a TransformerLM).
  """
  first = max(layer - update_layers + 1, 0)
  blocks = {k for k in params if _BLOCK.match(k)}
  if not blocks:
    raise ConfigError('lm_rmu needs TransformerLM params (block_0, block_1, ...); found '
                      f'{sorted(params)}')

  def scale(path, leaf):
    keys = [getattr(p, 'key', None) for p in path]
    m = _BLOCK.match(str(keys[0]))
    on = m is not None and first <= int(m.group(1)) <= layer
    if on and trainable == 'mlp_out':
      on = len(keys) >= 3 and keys[1] == 'mlp_out' and keys[2] == 'kernel'
    return jnp.float32(1.0 if on else 0.0)

  return jax.tree_util.tree_map_with_path(scale, params)


def _mean_hidden_norm(params, x, idx, *, model, chunk):
  """Mean L2 norm of ``model``'s activations over the valid input positions of x[idx]."""
  m = idx.shape[0]
  steps = -(-m // chunk)
  pad = steps * chunk - m
  bidx = jnp.pad(idx, (0, pad)).reshape(steps, chunk)
  bw = jnp.pad(jnp.ones((m,), jnp.float32), (0, pad)).reshape(steps, chunk)

  def body(acc, s):
    xb = x[bidx[s]]
    h = model.apply({'params': params}, xb)                              # (B, T, W)
    valid = (xb[:, :h.shape[1]] >= 0).astype(jnp.float32) * bw[s][:, None]
    norms = jnp.linalg.norm(h, axis=-1)
    return (acc[0] + jnp.sum(norms * valid), acc[1] + jnp.sum(valid)), None

  (total, count), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0)), jnp.arange(steps))
  return total / jnp.maximum(count, 1.0)


@register('lm_rmu', FAMILY,
          dict(LM_DEFAULTS, epochs=20, lr=5e-3, layer=None, update_layers=3,
               trainable='block', steering_coef=6.5, alpha=10.0))
def lm_rmu(**hp):
  """RMU (Li et al. 2024, WMDP): at the residual stream after block ``layer`` push
  Du's activations towards c·u and keep Dr's where the original model has them:
  minimise mean ‖h_θ(Du) − c·u‖²/W + alpha · mean ‖h_θ(Dr) − h_orig(Dr)‖²/W on
  paired batches (means over valid positions), u a fixed random unit vector
  (uniform [0, 1)^W normalised, as the WMDP code; drawn from ``fold_in(key, 1)``).

  Only blocks ``layer − update_layers + 1 .. layer`` are updated (Li et al.:
  layers 5–7 for layer 7; ``trainable='mlp_out'`` restricts the update to their
  MLP output kernels, the paper's choice, ``'block'`` (default) updates every
  parameter of those blocks, which our small models need to move); embeddings,
  later blocks and the head stay bit-identical. ``layer`` None picks
  round(7·depth/32) clipped to [1, depth − 1] (layer 1 of a 2-block model).

  Scale: Li et al. use c = 6.5 for Zephyr-7B, an absolute norm tied to that
  model's activations. Our models' activation norms depend on width and
  training, so c = ``steering_coef`` × the original model's mean per-token
  activation norm on Du (Dang et al. 2025's adaptive RMU scales c by the frozen
  activation norm likewise): the target lies 6.5 typical norms from the origin.
  Optimisation: Li et al. run AdamW at lr 5e-5, five times TOFU's fine-tuning
  rate, for 150 steps; here AdamW at 5e-3 (five times our LMs' 1e-3), 20 epochs
  over Du, weight decay 0.01, cosine. ``alpha`` = 10 (Li et al.: 1200 with their
  absolute c; OpenUnlearning: 1000) was chosen on a tiny model (width 16, 40
  records) where Du and Dr are alike: at alpha = 100 the retain term held Du's
  activations in place (distance to c·u 27.2 → 26.0, Du NLL +0.1), at alpha =
  10 they moved (27.2 → 19.7, Du NLL 1.38 → 2.35, Dr 1.33 → 1.61).
  """
  spec = C.spec_from(hp)
  C.check_positive(steering_coef=hp['steering_coef'], update_layers=hp['update_layers'])
  C.check_nonneg(alpha=hp['alpha'])
  if hp['trainable'] not in ('block', 'mlp_out'):
    raise ConfigError(f'lm_rmu trainable must be "block" or "mlp_out", got {hp["trainable"]!r}')
  if hp['layer'] is not None and (isinstance(hp['layer'], bool)
                                  or not isinstance(hp['layer'], int) or hp['layer'] < 0):
    raise ConfigError(f'lm_rmu layer must be None or an integer >= 0, got {hp["layer"]!r}')
  loss = RMULoss(float(hp['alpha']))

  def unlearn(params, model, data, key):
    lm_model(model, data, 'lm_rmu')
    depth = int(getattr(model, 'depth', 0))
    layer = default_rmu_layer(depth) if hp['layer'] is None else int(hp['layer'])
    if not 0 <= layer < depth:
      raise ConfigError(f'lm_rmu layer must lie in [0, {depth}) for this {depth}-block model, '
                        f'got {layer}')
    hidden = model.clone(output='hidden', hidden_layer=layer)
    x, _ = C.pool(data)
    norm = C.jit_apply(_mean_hidden_norm, params, x, C.idx(data.forget), model=hidden,
                       chunk=int(spec.batch_size))
    u = jax.random.uniform(jax.random.fold_in(key, 1), (int(model.width),))
    control = float(hp['steering_coef']) * norm * u / jnp.linalg.norm(u)
    scale = rmu_update_scale(params, layer, int(hp['update_layers']), hp['trainable'])
    return _fit(hidden, params, data, jax.random.fold_in(key, 0), spec, loss, retain=True,
                aux={'control': control, 'frozen': params}, update_scale=scale)

  return unlearn


@register('lm_finetune', FAMILY, dict(LM_DEFAULTS))
def lm_finetune(**hp):
  """Retain fine-tuning: minimise NLL(Dr) (5 epochs over Dr), relying on forgetting by
  interference (TOFU/MUSE's retain-only baseline); optimiser as :func:`lm_gradient_ascent`."""
  spec = C.spec_from(hp)
  loss = TokenNLL((1.0,))

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_finetune')
    x, y = C.pool(data)
    return loops.fit(m, params, x, y, [C.idx(data.retain)], key, spec, loss).params

  return unlearn


@register('lm_retrain', FAMILY, {}, vmappable=False)
def lm_retrain():
  """Exact unlearning for the pretrain-then-fine-tune protocol: train the base LM
  ``data.init_checkpoint_params`` (which never saw Du) on Dr with the original
  recipe ``data.recipe`` and the token loss (:class:`TokenCE`); ``params`` is not
  read. Without a base LM (``init_checkpoint_params`` None) it trains a fresh
  initialisation from ``key``, i.e. retraining from scratch. Several seeds run
  as one :func:`jaxaudit.train.train_ensemble`.
  """

  def unlearn(params, model, data, key):
    m = lm_model(model, data, 'lm_retrain')
    return train_model(m, data.x, data.y, np.asarray(data.retain), key, data.recipe,
                       init_params=data.init_checkpoint_params, loss=TokenCE()).params

  def batched(params, model, data, keys):
    m = lm_model(model, data, 'lm_retrain')
    k = keys.shape[0]
    init = data.init_checkpoint_params
    subsets = np.tile(np.asarray(data.retain)[None], (k, 1))
    return train_ensemble(m, data.x, data.y, subsets, keys, data.recipe,
                          init_params=None if init is None else stack([init] * k),
                          loss=TokenCE()).params

  return Unlearner(unlearn, batched)


__all__ = ['FAMILY', 'LM_DEFAULTS', 'TokenNLL', 'NPOLoss', 'SimNPOLoss', 'RMULoss',
           'token_logprobs', 'sequence_logprob', 'npo_loss', 'simnpo_loss', 'refusal_rows',
           'rmu_update_scale', 'default_rmu_layer', 'lm_model']
