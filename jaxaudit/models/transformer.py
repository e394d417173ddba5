"""A small decoder-only transformer language model on token-id records.

Records follow the text encoding of :mod:`jaxaudit.text`: a row x (T+1,) float32
holds token ids right-padded with -1, and position t predicts x[t+1] from
x[0..t]. The model reads x[:, :-1] (padding embedded as token 0: right padding
and the causal mask keep it out of every valid position) and returns, by its
``output`` attribute, next-token logits, per-position features (the inputs of
the per-document signals of :mod:`jaxaudit.text.signals`) or the residual
stream after one block. ``output`` changes no parameter, so
``model.clone(output='features')`` evaluates a model trained on logits.

Parameter tree (``'params'`` collection): ``embed/embedding`` (V, W),
``pos_embed`` (T, W), ``block_i/{ln_1, qkv, proj, ln_2, mlp_in, mlp_out}``
for i < depth, ``ln_f``, ``head`` (W -> V).
"""

from __future__ import annotations

import math
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxaudit.errors import ConfigError

OUTPUTS = ('logits', 'features', 'hidden')
FEATURES = ('logp', 'mu', 'sigma', 'argmax', 'valid')
EMBED_INIT = nn.initializers.normal(stddev=0.02)


def token_features(logits: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """Per-position features of next-token logits, in the order of :data:`FEATURES`.

  Args:
    logits: (B, T, V) next-token logits (position t predicts x[t+1]).
    x: (B, T+1) token ids (float or int), -1 = padding.
  Returns:
    float32 (B, T, 5): [logp of the actual next token, mu = sum_z p(z) log p(z),
    sigma = sqrt(max(sum_z p(z) log p(z)^2 - mu^2, 0)) (computed in the centred,
    equal form sum_z p(z) (log p(z) - mu)^2, which is never negative), argmax
    token id, valid = 1 where x[t+1] >= 0]; the first four are 0 where invalid.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)   # (B, T, V)
  nxt = x[:, 1:logits.shape[1] + 1]
  valid = nxt >= 0
  tgt = jnp.where(valid, nxt, 0).astype(jnp.int32)
  lp = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
  p = jnp.exp(logp)
  mu = jnp.sum(p * logp, axis=-1)
  sigma = jnp.sqrt(jnp.sum(p * jnp.square(logp - mu[..., None]), axis=-1))
  top = jnp.argmax(logp, axis=-1).astype(jnp.float32)
  feats = jnp.stack([lp, mu, sigma, top], axis=-1)
  feats = jnp.where(valid[..., None], feats, 0.0)
  return jnp.concatenate([feats, valid[..., None].astype(jnp.float32)], axis=-1)


class Block(nn.Module):
  """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)). (B, T, W) -> (B, T, W)."""
  width: int
  heads: int
  mlp_ratio: int

  @nn.compact
  def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
    b, t, w = h.shape
    d = w // self.heads
    # no bias: the key bias has an exactly-zero gradient (softmax is shift-invariant), whose
    # rounding noise Adam would amplify into arbitrary updates.
    qkv = nn.Dense(3 * w, use_bias=False, name='qkv')(nn.LayerNorm(name='ln_1')(h))
    qkv = qkv.reshape(b, t, 3, self.heads, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                    # (B, T, H, D)
    scores = jnp.einsum('bthd,bshd->bhts', q, k) / math.sqrt(d)
    causal = jnp.tril(jnp.ones((t, t), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    att = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum('bhts,bshd->bthd', att, v).reshape(b, t, w)
    h = h + nn.Dense(w, name='proj')(out)
    m = nn.Dense(self.mlp_ratio * w, name='mlp_in')(nn.LayerNorm(name='ln_2')(h))
    return h + nn.Dense(w, name='mlp_out')(nn.gelu(m))


class TransformerLM(nn.Module):
  """Decoder-only causal transformer LM with learned positional embeddings.

  ``__call__(x (B, T'+1) float32 ids, -1 = pad)``, T' <= ``context``, reads x[:, :-1]:
  ``output='logits'`` -> (B, T', V) float32; ``'features'`` -> (B, T', 5)
  (:func:`token_features`, :data:`FEATURES`); ``'hidden'`` -> (B, T', width), the
  residual stream after block ``hidden_layer`` (0-based).
  """
  num_classes: int
  width: int = 64
  depth: int = 2
  heads: int = 4
  context: int = 64
  mlp_ratio: int = 4
  output: str = 'logits'
  hidden_layer: int = 1

  def __post_init__(self):
    if self.output not in OUTPUTS:
      raise ConfigError(f'transformer output must be one of {OUTPUTS}, got {self.output!r}')
    for name in ('width', 'depth', 'heads', 'context', 'mlp_ratio'):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ConfigError(f'transformer {name} must be a positive integer, got {v!r}')
    if self.width % self.heads:
      raise ConfigError(f'transformer width {self.width} is not divisible by heads {self.heads}')
    if self.output == 'hidden' and not 0 <= self.hidden_layer < self.depth:
      raise ConfigError(f'transformer hidden_layer must lie in [0, {self.depth}), '
                        f'got {self.hidden_layer}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.ndim != 2 or not 2 <= x.shape[1] <= self.context + 1:
      raise ConfigError(f'transformer input must be (B, T+1) token ids with 1 <= T <= '
                        f'context = {self.context}, got shape {tuple(x.shape)}')
    t = x.shape[1] - 1
    inp = x[:, :-1]
    ids = jnp.where(inp >= 0, inp, 0).astype(jnp.int32)
    h = nn.Embed(self.num_classes, self.width, embedding_init=EMBED_INIT, name='embed')(ids)
    pos = self.param('pos_embed', EMBED_INIT, (self.context, self.width))
    h = h + pos[:t]
    for i in range(self.depth):
      h = Block(self.width, self.heads, self.mlp_ratio, name=f'block_{i}')(h)
      if self.output == 'hidden' and i == self.hidden_layer:
        return h
    logits = nn.Dense(self.num_classes, name='head')(nn.LayerNorm(name='ln_f')(h))
    if self.output == 'features':
      return token_features(logits, x)
    return logits


__all__ = ['TransformerLM', 'Block', 'token_features', 'FEATURES', 'OUTPUTS']
