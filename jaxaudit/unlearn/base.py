"""Unlearning inputs, the method registry and the multi-seed runner.

Every unlearning method is a *factory* registered by name: it takes the
method's hyper-parameters and returns a pure function

    ``unlearn(params, model, data: UnlearnData, key) -> params``

mapping the original model's parameters to the unlearned ones (optax style: the
factory fixes the hyper-parameters, the returned function holds no state). All
randomness comes from ``key``; every compiled program is cached on hashable
values (model, hyper-parameters, shapes), so calling a method twice with the
same shapes does not recompile.

Public entry points:

* :class:`UnlearnData` / :func:`make_unlearn_data` / :func:`check_data`: the
  training pool, the forget set Du and retain set Dr, optional validation data.
* :func:`register`: decorator that adds a factory to the registry.
* :func:`get_method`: a configured :class:`UnlearnMethod` by name, with
  hyper-parameters checked and type-coerced (CLI strings) *before* anything is
  traced or compiled.
* :func:`list_methods`: (name, family, defaults, doc) of every method.
* :func:`run_method`: one key, or several seeds at once (stacked params).
"""

from __future__ import annotations

import ast
import dataclasses
import types
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxaudit.errors import ConfigError, SplitError
from jaxaudit.train.devices import (MODEL_AXIS, Layout, check_strategy, map_models, model_layout,
                                    pad_members, place, resolve_strategy)
from jaxaudit.train.recipe import Recipe

Params = Any
UnlearnFn = Callable[..., Params]


class EmptySetError(ConfigError, SplitError):
  """The forget or retain set is empty (both a ConfigError and a SplitError)."""


class UnlearnData(NamedTuple):
  """Everything an unlearning method may look at.

  Methods must never see the audit's reference records: the pool ``x`` holds
  them (it is ``Dataset.x_train``) but no method indexes outside
  ``forget`` ∪ ``retain``, and the validation arrays come from the test split.

  Attributes:
    x: (N, *input_shape) float32 device array, the training pool.
    y: (N,) int32 labels of the pool, or (N, T) int32 next-token targets of a
      language model's records (-1 = padding; see :mod:`jaxaudit.unlearn.language`).
    forget: (Mf,) int32 indices into the pool: Du, the records to forget.
    retain: (Mr,) int32 indices into the pool: Dr = D \\ Du.
    num_classes: number of classes C.
    input_shape: shape of one record (no batch axis).
    recipe: the original model's training :class:`Recipe` (used by
      retrain-style methods).
    val_x: optional (V, *input_shape) float32 held-out validation inputs (part
      of the test split, never the audit's reference set).
    val_y: optional (V,) int32 validation labels ((V, T) token targets for a
      language model).
    init_checkpoint_params: optional params of a model that never saw Du (e.g.
      a checkpoint trained on public data or on Dr's prefix), for the
      warm-start methods; None otherwise.
    sisa: optional :class:`jaxaudit.train.sisa.SisaState` of a SISA-trained
      original model; the ``sisa`` method needs it (its extra state travels
      here because ``unlearn`` only receives params).
    refusal: optional (R,) int32 token ids of a refusal answer ("I don't
      know"), for the language-model method ``lm_idk``; None otherwise.
  """
  x: jax.Array
  y: jax.Array
  forget: jax.Array
  retain: jax.Array
  num_classes: int
  input_shape: tuple[int, ...]
  recipe: Recipe
  val_x: jax.Array | None = None
  val_y: jax.Array | None = None
  init_checkpoint_params: Params | None = None
  sisa: Any = None
  refusal: jax.Array | None = None


def check_data(data: UnlearnData) -> None:
  """Validates an :class:`UnlearnData` on the host (NumPy only: no compilation).

  Raises:
    EmptySetError: (a ConfigError and a SplitError) empty forget/retain set.
    SplitError: out-of-range, duplicated or overlapping indices.
    ConfigError: inconsistent shapes, labels or class count (token targets y
      (N, T) are range-checked over their non-padding entries, -1 = padding),
      or refusal token ids outside the vocabulary.
  """
  if not isinstance(data, UnlearnData):
    raise ConfigError(f'expected an UnlearnData, got {type(data).__name__}')
  n = int(data.x.shape[0])
  if tuple(data.x.shape[1:]) != tuple(data.input_shape):
    raise ConfigError(f'data.x records have shape {tuple(data.x.shape[1:])} but '
                      f'input_shape is {tuple(data.input_shape)}')
  if data.y.ndim not in (1, 2) or data.y.shape[0] != n:
    raise ConfigError(f'data.y must have shape ({n},) (labels) or ({n}, T) (token targets), '
                      f'got {tuple(data.y.shape)}')
  if int(data.num_classes) < 2:
    raise ConfigError(f'num_classes must be >= 2, got {data.num_classes}')
  if not isinstance(data.recipe, Recipe):
    raise ConfigError(f'data.recipe must be a Recipe, got {type(data.recipe).__name__}')
  sets = {}
  for name in ('forget', 'retain'):
    idx = np.asarray(getattr(data, name))
    if idx.ndim != 1:
      raise SplitError(f'data.{name} must be a 1-D index array, got shape {idx.shape}')
    if idx.size == 0:
      raise EmptySetError(
          f'the {name} set is empty: unlearning needs at least one record in both the '
          f'forget set (Du) and the retain set (Dr)')
    if not np.issubdtype(idx.dtype, np.integer):
      raise SplitError(f'data.{name} must hold integer indices, got dtype {idx.dtype}')
    if idx.min() < 0 or idx.max() >= n:
      raise SplitError(f'data.{name} indices must lie in [0, {n}); got range '
                       f'[{idx.min()}, {idx.max()}]')
    if np.unique(idx).size != idx.size:
      raise SplitError(f'data.{name} holds duplicated indices')
    sets[name] = idx
  overlap = np.intersect1d(sets['forget'], sets['retain'])
  if overlap.size:
    raise SplitError(f'{overlap.size} record(s) are in both the forget and the retain set '
                     f'(first: {overlap[:5].tolist()})')
  labels = np.asarray(data.y)[np.concatenate([sets['forget'], sets['retain']])]
  if labels.ndim == 2:   # token targets: -1 marks padding
    labels = labels[labels != -1]
  if labels.size and (labels.min() < 0 or labels.max() >= data.num_classes):
    raise ConfigError(f'labels must lie in [0, {data.num_classes}); got range '
                      f'[{labels.min()}, {labels.max()}]')
  if (data.val_x is None) != (data.val_y is None):
    raise ConfigError('give both val_x and val_y, or neither')
  if data.val_x is not None:
    if tuple(data.val_x.shape[1:]) != tuple(data.input_shape):
      raise ConfigError(f'val_x records have shape {tuple(data.val_x.shape[1:])}, expected '
                        f'{tuple(data.input_shape)}')
    if data.val_y.ndim != data.y.ndim or data.val_y.shape[0] != data.val_x.shape[0]:
      raise ConfigError('val_y must have one label (one target row) per val_x record')
  if data.refusal is not None:
    r = np.asarray(data.refusal)
    if r.ndim != 1 or r.size == 0:
      raise ConfigError(f'data.refusal must be a non-empty 1-D array of token ids, got shape '
                        f'{r.shape}')
    if not np.issubdtype(r.dtype, np.integer) or r.min() < 0 or r.max() >= data.num_classes:
      raise ConfigError(f'data.refusal must hold integer token ids in [0, {data.num_classes})')


def make_unlearn_data(dataset, split, recipe: Recipe, *, val_size: int | None = None,
                      init_checkpoint_params: Params | None = None,
                      sisa: Any = None, refusal=None) -> UnlearnData:
  """Builds the :class:`UnlearnData` of an audit.

  Args:
    dataset: a :class:`jaxaudit.data.types.Dataset` (pool = ``x_train``).
    split: a :class:`jaxaudit.data.types.AuditSplit` indexing it; its ``ref``
      records are never exposed to methods (only ``forget`` and ``retain``).
    recipe: the original model's training recipe.
    val_size: number of validation records, taken as the first ``val_size``
      entries of ``split.test`` (deterministic); default: half of the test
      split, at most 2000, so the other half stays untouched for evaluation.
      0 gives no validation data.
    init_checkpoint_params: params of a model that never saw Du (warm start).
    sisa: a :class:`jaxaudit.train.sisa.SisaState` when the original model is a
      SISA ensemble.
    refusal: (R,) int token ids of a refusal answer (language models, ``lm_idk``).
  Returns:
    UnlearnData with device arrays x (N, ...), y (N,) (or (N, T) token targets),
    forget (Mf,), retain (Mr,).
  Raises:
    EmptySetError: empty forget or retain set.
    SplitError: the split does not belong to this dataset or has bad indices.
  """
  fp_split = getattr(split, 'dataset_fingerprint', '')
  fp_data = getattr(dataset, 'fingerprint', '')
  if fp_split and fp_data and fp_split != fp_data:
    raise SplitError(f'the split was drawn for data set fingerprint {fp_split[:12]}…, '
                     f'not for {dataset.name!r} ({fp_data[:12]}…)')
  forget = np.asarray(split.forget, np.int64)
  retain = np.asarray(split.retain, np.int64)
  for name, idx in (('forget', forget), ('retain', retain)):
    if idx.size == 0:
      raise EmptySetError(f'split.{name} is empty: unlearning needs at least one record in '
                          f'both the forget set (Du) and the retain set (Dr)')
  test = np.asarray(split.test, np.int64)
  if val_size is None:
    val_size = min(test.size // 2, 2000)
  if val_size < 0 or val_size > test.size:
    raise ConfigError(f'val_size must lie in [0, {test.size}] (the test split size), '
                      f'got {val_size}')
  val_x = val_y = None
  if val_size:
    vi = test[:val_size]
    val_x = jnp.asarray(np.asarray(dataset.x_test)[vi], jnp.float32)
    val_y = jnp.asarray(np.asarray(dataset.y_test)[vi], jnp.int32)
  data = UnlearnData(
      x=jnp.asarray(dataset.x_train, jnp.float32),
      y=jnp.asarray(dataset.y_train, jnp.int32),
      forget=jnp.asarray(forget, jnp.int32),
      retain=jnp.asarray(retain, jnp.int32),
      num_classes=int(dataset.num_classes),
      input_shape=tuple(dataset.input_shape),
      recipe=recipe,
      val_x=val_x, val_y=val_y,
      init_checkpoint_params=init_checkpoint_params,
      sisa=sisa,
      refusal=None if refusal is None else jnp.asarray(np.asarray(refusal), jnp.int32))
  check_data(data)
  return data


# ----------------------------------------------------------------------------- registry


class Unlearner(NamedTuple):
  """What a factory may return instead of a bare function.

  Attributes:
    fn: ``unlearn(params, model, data, key) -> params``.
    batched: optional ``batched(params, model, data, keys (K,)) -> params
      stacked (K, ...)``, a native many-seed implementation (e.g. one
      :func:`jaxaudit.train.train_ensemble` call) that :func:`run_method` uses
      instead of vmapping ``fn``.
  """
  fn: UnlearnFn
  batched: Callable[..., Params] | None = None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A registry entry (see :func:`register`)."""
  name: str
  family: str
  defaults: Mapping[str, Any]
  doc: str
  factory: Callable[..., Any]
  vmappable: bool = True
  output: str = 'single'


@dataclasses.dataclass(frozen=True, eq=False)
class UnlearnMethod:
  """A configured unlearning method.

  Attributes:
    name: registry name.
    family: ``retraining``, ``fine-tuning``, ``relabelling``,
      ``de-optimisation``, ``distillation``, ``challenge`` (or another family
      registered elsewhere, e.g. curvature-based methods).
    hparams: the full hyper-parameter dict (defaults updated by overrides).
    fn: ``unlearn(params, model, data, key) -> params``; validates ``data``
      (host-side, before any compilation) and then runs the method.
    vmappable: whether ``fn`` is traceable end to end, so that
      :func:`run_method` may ``jax.vmap`` it over keys.
    output: ``single`` (params of ``model``) or ``ensemble`` (params stacked
      over constituent models, e.g. SISA's shards: leaves (S, ...)).
    batched: optional native many-key implementation (see :class:`Unlearner`).
  """
  name: str
  family: str
  hparams: Mapping[str, Any]
  fn: UnlearnFn
  vmappable: bool = True
  output: str = 'single'
  batched: Callable[..., Params] | None = None

  def __call__(self, params, model, data, key):
    return self.fn(params, model, data, key)


class MethodInfo(NamedTuple):
  """One row of :func:`list_methods`."""
  name: str
  family: str
  defaults: dict
  doc: str


_REGISTRY: dict[str, MethodSpec] = {}
_ALLOWED_TYPES = (bool, int, float, str, tuple, type(None))


def register(name: str, family: str, defaults: Mapping[str, Any], doc: str | None = None, *,
             vmappable: bool = True, output: str = 'single'):
  """Decorator registering ``factory(**hparams) -> unlearn_fn`` under ``name``.

  Args:
    name: registry name (unique).
    family: method family (free text; see :class:`UnlearnMethod`).
    defaults: every hyper-parameter with its default value; the default's
      type (bool/int/float/str/tuple) is the type CLI strings are coerced to.
    doc: one-paragraph description (default: the factory's docstring).
    vmappable: whether the returned function can be ``jax.vmap``-ped over keys.
    output: ``single`` or ``ensemble`` (see :class:`UnlearnMethod`).
  Returns:
    The decorator; it returns the factory unchanged.
  """
  if output not in ('single', 'ensemble'):
    raise ConfigError(f'output must be "single" or "ensemble", got {output!r}')
  for k, v in defaults.items():
    if not isinstance(v, _ALLOWED_TYPES):
      raise ConfigError(f'default {name}.{k}={v!r} must be a bool, int, float, str, tuple '
                        f'or None')

  def decorator(factory):
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
      raise ConfigError(f'unlearning method {name!r} is already registered')
    text = doc if doc is not None else (factory.__doc__ or '').strip()
    _REGISTRY[name] = MethodSpec(name, family, types.MappingProxyType(dict(defaults)),
                                 text, factory, vmappable, output)
    return factory

  return decorator


def _parse_bool(s: str) -> bool:
  t = s.strip().lower()
  if t in ('true', '1', 'yes', 'y', 'on'):
    return True
  if t in ('false', '0', 'no', 'n', 'off'):
    return False
  raise ValueError(s)


def _to_int(v) -> int:
  if isinstance(v, (bool, np.bool_)):
    raise TypeError('bool given for an int')
  if isinstance(v, str):
    v = v.strip()
    try:
      return int(v)
    except ValueError:
      v = float(v)
  if isinstance(v, (float, np.floating)):
    if not float(v).is_integer():
      raise ValueError(f'{v} is not an integer')
    return int(v)
  if isinstance(v, (int, np.integer)):
    return int(v)
  raise TypeError(type(v).__name__)


def _to_float(v) -> float:
  if isinstance(v, (bool, np.bool_)):
    raise TypeError('bool given for a float')
  if isinstance(v, str):
    return float(v.strip())
  if isinstance(v, (int, float, np.integer, np.floating)):
    return float(v)
  raise TypeError(type(v).__name__)


def _literal(s: str):
  try:
    return ast.literal_eval(s.strip())
  except (ValueError, SyntaxError):
    return s.strip()


def _coerce_like(value, default):
  """``value`` converted to the type of ``default`` (ValueError/TypeError if impossible)."""
  if default is None:
    return _literal(value) if isinstance(value, str) else value
  if isinstance(default, bool):
    if isinstance(value, str):
      return _parse_bool(value)
    if isinstance(value, (bool, np.bool_)):
      return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
      return bool(value)
    raise TypeError(type(value).__name__)
  if isinstance(default, int):
    return _to_int(value)
  if isinstance(default, float):
    return _to_float(value)
  if isinstance(default, str):
    if not isinstance(value, str):
      raise TypeError(type(value).__name__)
    return value
  if isinstance(default, tuple):
    if isinstance(value, str):
      text = value.strip()
      if text[:1] in '([' and text[-1:] in ')]':
        text = text[1:-1]
      items = [t for t in (p.strip() for p in text.split(',')) if t]
    elif isinstance(value, (list, tuple, np.ndarray)):
      items = list(value)
    else:
      items = [value]
    if default:
      return tuple(_coerce_like(v, default[0]) for v in items)
    return tuple(_literal(v) if isinstance(v, str) else v for v in items)
  raise TypeError(f'unsupported default type {type(default).__name__}')


def coerce_hparams(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
  """Checks names and coerces values of hyper-parameter overrides of method ``name``.

  Raises:
    ConfigError: unknown method, unknown hyper-parameter (the message lists the
      valid ones) or a value that cannot be converted to the default's type.
  """
  spec = _spec(name)
  unknown = sorted(set(overrides) - set(spec.defaults))
  if unknown:
    valid = ', '.join(sorted(spec.defaults)) or '(none)'
    raise ConfigError(f'unknown hyper-parameter(s) {unknown} for unlearning method '
                      f'{name!r}; valid: {valid}')
  out = dict(spec.defaults)
  for k, v in overrides.items():
    default = spec.defaults[k]
    try:
      out[k] = _coerce_like(v, default)
    except (ValueError, TypeError) as e:
      kind = type(default).__name__ if default is not None else 'value'
      raise ConfigError(f'hyper-parameter {name}.{k}={v!r} is not a valid {kind} '
                        f'(default {default!r})') from e
  return out


def _spec(name: str) -> MethodSpec:
  if name not in _REGISTRY:
    raise ConfigError(f'unknown unlearning method {name!r}; known methods: '
                      f'{", ".join(sorted(_REGISTRY))}')
  return _REGISTRY[name]


def _checked(fn: UnlearnFn) -> UnlearnFn:
  """Wraps fn so that ``data`` is validated (host-side) before it runs."""

  def unlearn(params, model, data, key):
    check_data(data)
    if isinstance(key, (int, np.integer)):
      key = jax.random.key(int(key))
    return fn(params, model, data, key)

  unlearn.__doc__ = fn.__doc__
  unlearn.__wrapped__ = fn
  return unlearn


def get_method(name: str, **overrides) -> UnlearnMethod:
  """The registered method ``name`` configured with ``overrides``.

  Names and values are checked here, before any tracing or compilation;
  strings (from a command line) are coerced to the default's type
  (``'3'`` → 3, ``'1e-3'`` → 0.001, ``'true'`` → True, ``'1,2'`` → (1, 2)).
  The factory validates ranges (raising ConfigError) at this point too.

  Args:
    name: a registered method name (see :func:`list_methods`).
    **overrides: hyper-parameters to change.
  Returns:
    An :class:`UnlearnMethod`.
  Raises:
    ConfigError: unknown method (lists the known ones), unknown hyper-parameter
      (lists the valid ones) or invalid value.
  """
  spec = _spec(name)
  hp = coerce_hparams(name, overrides)
  made = spec.factory(**hp)
  if isinstance(made, Unlearner):
    fn, batched = made.fn, made.batched
  else:
    fn, batched = made, None
  if not callable(fn):
    raise ConfigError(f'factory of {name!r} returned {type(fn).__name__}, not a function')
  return UnlearnMethod(name=spec.name, family=spec.family,
                       hparams=types.MappingProxyType(hp), fn=_checked(fn),
                       vmappable=spec.vmappable, output=spec.output, batched=batched)


def list_methods() -> list[MethodInfo]:
  """Every registered method as (name, family, defaults, doc), sorted by family then name."""
  rows = [MethodInfo(s.name, s.family, dict(s.defaults), s.doc) for s in _REGISTRY.values()]
  return sorted(rows, key=lambda r: (r.family, r.name))


def method_names() -> list[str]:
  """Sorted names of the registered methods."""
  return sorted(_REGISTRY)


# ----------------------------------------------------------------------------- running



def seed_keys(key, seeds: int | Sequence[int]) -> jax.Array:
  """Keys (K,) of a multi-seed run: member i uses ``fold_in(key, seeds[i])``.

  Args:
    key: a PRNG key or an int seed.
    seeds: a sequence of K ints, or an int K meaning ``range(K)``.
  """
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  if isinstance(seeds, (int, np.integer)):
    seeds = range(int(seeds))
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ConfigError('seeds must name at least one seed')
  return jnp.stack([jax.random.fold_in(key, s) for s in seeds])


def _run_sharded(method: UnlearnMethod, params: Params, model, data: UnlearnData, keys: jax.Array,
                 layout: Layout) -> Params:
  """The K seeds of a traceable method split over ``layout``'s devices (stacked (K, ...))."""
  k = keys.shape[0]
  key_data = pad_members(np.asarray(jax.random.key_data(keys)), layout.padded(k))
  impl = str(jax.random.key_impl(keys))
  one = lambda d: method.fn(params, model, data, jax.random.wrap_key_data(d, impl=impl))  # noqa: E731
  out = jax.jit(map_models(one, layout, (0,)))(
      place(key_data, layout.mesh, PartitionSpec(MODEL_AXIS)))
  return out if layout.padded(k) == k else jax.tree.map(lambda p: p[:k], out)


def run_method(method: UnlearnMethod | str, params: Params, model, data: UnlearnData, key,
               seeds: int | Sequence[int] | None = None, *, strategy: str = 'auto') -> Params:
  """Runs an unlearning method for one key or for several seeds at once.

  Args:
    method: an :class:`UnlearnMethod` or a registered name (default hparams).
    params: the original model's parameters (a single model; for SISA the
      stacked shard ensemble).
    model: the Linen module.
    data: the :class:`UnlearnData`.
    key: a PRNG key (or an int seed).
    seeds: None for one run with ``key``; otherwise K seeds (or an int K): run
      i uses ``jax.random.fold_in(key, seeds[i])`` (see :func:`seed_keys`), so
      it equals ``method.fn(params, model, data, fold_in(key, seeds[i]))``.
    strategy: ``vmap`` (one vectorised trace over the K keys), ``map`` (a
      Python loop of single runs; always available) or ``auto``: the method's
      native batched implementation when it has one (e.g. ``retrain`` trains K
      models with one train_ensemble call), else ``vmap`` if the method is
      vmappable and the backend/model favour it (see
      :func:`jaxaudit.train.devices.default_strategy`: on CPU convolutional models run
      one after the other), else ``map``. With several devices, the seeds of a
      vmappable method are split over them (:func:`jaxaudit.train.devices.model_layout`),
      each device running its share with ``strategy``.
  Returns:
    The unlearned params; with ``seeds``, every leaf stacked (K, ...).
  """
  if isinstance(method, str):
    method = get_method(method)
  check_strategy(strategy)
  check_data(data)
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  if seeds is None:
    return method.fn(params, model, data, key)
  keys = seed_keys(key, seeds)
  if strategy == 'auto' and method.batched is not None:
    return method.batched(params, model, data, keys)
  strategy = resolve_strategy(strategy, model, vmappable=method.vmappable)
  layout = model_layout(keys.shape[0], strategy, model, vmappable=method.vmappable)
  if layout.mesh is not None and method.vmappable:
    return _run_sharded(method, params, model, data, keys, layout)
  if strategy == 'vmap':
    if not method.vmappable:
      raise ConfigError(f'method {method.name!r} cannot be vmapped over keys; use '
                        f'strategy="map"')
    return jax.vmap(lambda k: method.fn(params, model, data, k))(keys)
  outs = [method.fn(params, model, data, keys[i]) for i in range(keys.shape[0])]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
