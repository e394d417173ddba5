"""Sampling continuations from a :class:`jaxaudit.models.transformer.TransformerLM`.

One jitted program per (model, number of new tokens): the prompt lives in a
fixed (context+1,) buffer padded with -1, and ``lax.fori_loop`` runs the model
on the whole buffer once per new token (causality makes the padding after the
current position irrelevant), so prompts of any length, temperatures, top-k
values and keys share the program. No key/value cache: each step costs one
forward pass of the full context, which is cheap at the context sizes this
package trains.
"""

from __future__ import annotations

import functools
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxaudit.errors import ConfigError, DataError


@functools.lru_cache(maxsize=32)
def _program(model: nn.Module, num_tokens: int):
  """Jitted ``(params, buf (T+1,), P, key, temperature, top_k) -> buf`` with
  ``num_tokens`` tokens written at positions P .. P+num_tokens-1."""

  def run(params, buf, plen, key, temperature, top_k):
    def body(i, buf):
      logits = model.apply({'params': params}, buf[None])[0]          # (T, V)
      row = jax.lax.dynamic_index_in_dim(logits, plen - 1 + i, keepdims=False)
      greedy = jnp.argmax(row)
      kth = jnp.sort(row)[row.shape[0] - top_k]                       # k-th largest
      filtered = jnp.where(row >= kth, row, -jnp.inf)
      temp = jnp.where(temperature > 0, temperature, 1.0)
      sampled = jax.random.categorical(jax.random.fold_in(key, i), filtered / temp)
      tok = jnp.where(temperature > 0, sampled, greedy)
      return buf.at[plen + i].set(tok.astype(buf.dtype))

    return jax.lax.fori_loop(0, num_tokens, body, buf)

  return jax.jit(run)


def generate(model: nn.Module, params, prompt, num_tokens: int, key, *,
             temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
  """Continues ``prompt`` by ``num_tokens`` tokens sampled from the model.

  Args:
    model: a :class:`~jaxaudit.models.transformer.TransformerLM` (any ``output``;
      its logits are used).
    params: that model's params (one model, not stacked).
    prompt: (P,) int token ids in [0, V), P >= 1.
    num_tokens: new tokens, >= 0, with P + num_tokens <= context + 1.
    key: PRNG key (typed or raw, or an int seed); token i is drawn with
      ``fold_in(key, i)``, so a fixed key gives a fixed continuation.
    temperature: softmax temperature > 0, or 0 for greedy decoding (argmax,
      lowest id on ties; the key is then unused).
    top_k: sample among the k most likely tokens only (ties at the k-th logit
      are kept); None: the whole vocabulary.
  Returns:
    (P + num_tokens,) int32 NumPy array: the prompt followed by the new tokens.
  Raises:
    ConfigError: bad lengths, temperature or top_k; DataError: ids outside [0, V).
  """
  context = getattr(model, 'context', None)
  if context is None:
    raise ConfigError(f'generate needs a transformer LM (with a context), got '
                      f'{type(model).__name__}')
  vocab = int(model.num_classes)
  prompt = np.asarray(prompt)
  if prompt.ndim != 1:
    raise ConfigError(f'prompt must be a 1-D array of token ids, got shape {prompt.shape}')
  plen = prompt.shape[0]
  if isinstance(num_tokens, bool) or not isinstance(num_tokens, numbers.Integral) \
      or num_tokens < 0:
    raise ConfigError(f'num_tokens must be an integer >= 0, got {num_tokens!r}')
  if plen == 0:
    raise ConfigError('generate needs a prompt of at least one token')
  if plen + num_tokens > context + 1:
    raise ConfigError(f'prompt of {plen} tokens + {num_tokens} new tokens exceeds the '
                      f'model context + 1 = {context + 1}')
  if not (np.all(np.isfinite(prompt)) and np.all(prompt == np.round(prompt))
          and prompt.min() >= 0 and prompt.max() < vocab):
    raise DataError(f'prompt token ids must be integers in [0, {vocab})')
  if not (np.isfinite(temperature) and temperature >= 0):
    raise ConfigError(f'temperature must be a finite number >= 0, got {temperature!r}')
  if top_k is None:
    top_k = vocab
  if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
    raise ConfigError(f'top_k must be None or an integer >= 1, got {top_k!r}')
  if num_tokens == 0:
    return prompt.astype(np.int32)
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  if getattr(model, 'output', 'logits') != 'logits':
    model = model.clone(output='logits')
  buf = np.full((context + 1,), -1.0, np.float32)
  buf[:plen] = prompt
  out = _program(model, int(num_tokens))(params, jax.device_put(buf), np.int32(plen), key,
                                         np.float32(temperature), np.int32(min(top_k, vocab)))
  return np.asarray(out[:plen + num_tokens]).astype(np.int32)


__all__ = ['generate']
