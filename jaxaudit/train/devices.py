"""Device layout: the one place that decides how a model axis and a record axis are laid out.

Two decisions live here.

*Within a device*, the members of an ensemble run either vectorised
(``vmap``: one program, the model axis vectorised; fills an accelerator) or
one after the other (``map``: ``lax.map`` inside one program; faster on CPU,
where vmapped convolutions become grouped convolutions).
``experiments/bench_train.py`` measured vmap at 0.62–0.98× the throughput of
map on CPU for the MLP and 0.67–0.98× for the CNN (BUILD_NOTES.md), so
``auto`` means ``map`` on CPU and ``vmap`` elsewhere.

*Across devices*, the model axis of every ensemble (verifiers, a verifier
bank, shadow models, seeds of a method, LM verifiers) is split over a
one-axis :class:`jax.sharding.Mesh` of ``min(D, K)`` devices
(:func:`model_layout`): K is padded to a multiple of the device count with
masked members (:func:`pad_members`) and each device runs its K/D members
with the strategy above under ``shard_map`` (:func:`map_models`). The members
never communicate, so member k computes exactly what it computes on one
device. Scoring splits the rows of each batch over the devices
(:func:`record_mesh`, used by :mod:`jaxaudit.train.evaluate`). With one
device (a laptop, one GPU) there is no mesh and the programs are those of a
single device.

Multi-process (``jax.distributed``): the mesh spans every process's devices
(``jax.devices()`` is global); host arrays become global arrays through
:func:`place` (each process supplies the shards of its own devices) and
results come back to every host through :func:`to_host`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxaudit.errors import ConfigError

STRATEGIES = ('auto', 'vmap', 'map')
MODEL_AXIS = 'models'     # the mesh axis of an ensemble's members
RECORD_AXIS = 'records'   # the mesh axis of the rows of a scoring batch


def _shard_map_fn() -> Callable:
  """``jax.shard_map`` (jax >= 0.7), else the experimental one with the same keywords."""
  if hasattr(jax, 'shard_map'):
    return lambda f, *, mesh, in_specs, out_specs: jax.shard_map(
        f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
  from jax.experimental.shard_map import shard_map as experimental   # pragma: no cover
  return lambda f, *, mesh, in_specs, out_specs: experimental(   # pragma: no cover
      f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


shard_map = _shard_map_fn()


def default_strategy(model=None, backend: str | None = None) -> str:
  """The batching strategy chosen by measurement for this backend (``model`` reserved
  for a per-architecture choice where measurements differ)."""
  del model
  backend = backend or jax.default_backend()
  return 'vmap' if backend != 'cpu' else 'map'


def check_strategy(strategy: str, what: str = 'strategy') -> str:
  """Returns ``strategy`` if it is one of :data:`STRATEGIES`; ConfigError otherwise."""
  if strategy not in STRATEGIES:
    raise ConfigError(f"{what} must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
  return strategy


def resolve_strategy(strategy: str, model=None, *, vmappable: bool = True,
                     what: str = 'strategy') -> str:
  """``vmap`` or ``map``: ``strategy`` checked, ``auto`` replaced by the backend's default
  (``map`` whenever the work cannot be vmapped)."""
  check_strategy(strategy, what)
  if strategy == 'auto':
    strategy = default_strategy(model) if vmappable else 'map'
  return strategy


def batched(fn: Callable, strategy: str, in_axes: tuple) -> Callable:
  """``fn`` mapped over axis 0 of the arguments whose ``in_axes`` entry is 0.

  ``vmap``: ``jax.vmap(fn, in_axes)``; ``map``: ``lax.map`` over the mapped
  arguments (one member after the other, in one program). Entries ``None``
  are passed whole to every member.
  """
  if strategy == 'vmap':
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    mapped_args = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

    def body(margs):
      it = iter(margs)
      full = tuple(next(it) if ax == 0 else a for a, ax in zip(args, in_axes))
      return fn(*full)
    return jax.lax.map(body, mapped_args)

  return mapped


def _devices(devices: Sequence[jax.Device] | int | None) -> list:
  """``devices``, the first ``devices`` of ``jax.devices()`` when an int, or all of them."""
  if devices is None:
    return list(jax.devices())
  if isinstance(devices, (int, np.integer)):
    all_devices = jax.devices()
    if not 1 <= int(devices) <= len(all_devices):
      raise ConfigError(f'devices={devices}: this process sees {len(all_devices)} device(s) '
                        f'({jax.default_backend()})')
    return list(all_devices[:int(devices)])
  return list(devices)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the K members of one ensemble are laid out.

  Attributes:
    strategy: ``vmap`` or ``map``, among the members of one device.
    mesh: a one-axis mesh (:data:`MODEL_AXIS`) of the devices the members are
      split over, or None: one device (the default device, no sharding).
  """
  strategy: str
  mesh: Mesh | None = None

  @property
  def num_devices(self) -> int:
    """Devices the model axis is split over."""
    return 1 if self.mesh is None else int(self.mesh.size)

  def padded(self, k: int) -> int:
    """K rounded up to a multiple of the device count (the model axis the programs see)."""
    return math.ceil(k / self.num_devices) * self.num_devices

  def per_device(self, k: int) -> int:
    """Members each device runs."""
    return self.padded(k) // self.num_devices


def model_layout(k: int, strategy: str = 'auto', model=None, *, vmappable: bool = True,
                 devices: Sequence[jax.Device] | int | None = None) -> Layout:
  """The layout of a K-member ensemble: the strategy and the devices.

  The members are split over ``min(D, K)`` of the D devices (``devices``,
  default: every device of every process); with one device
  there is no mesh. When the devices belong to several processes (a
  multi-process job), all D are used, K padded up to a multiple of D, since
  every process must take part in every program of the job.

  Args:
    k: the ensemble size (>= 1).
    strategy: ``auto``, ``vmap`` or ``map`` (see :func:`resolve_strategy`).
    model: the Linen module (reserved for per-architecture choices).
    vmappable: whether the member function can be vmapped.
    devices: the devices to use (a list, a count, or None for all).
  """
  strategy = resolve_strategy(strategy, model, vmappable=vmappable)
  devs = _devices(devices)
  n = min(len(devs), max(int(k), 1))
  if jax.process_count() > 1 and len({d.process_index for d in devs}) > 1:
    n = len(devs)   # every process of a job takes part in its programs: pad K to all devices
  if n <= 1:
    return Layout(strategy, None)
  return Layout(strategy, Mesh(np.asarray(devs[:n]), (MODEL_AXIS,)))


def map_models(fn: Callable, layout: Layout, in_axes: tuple) -> Callable:
  """``fn`` (one member) as a function of the whole padded model axis.

  Arguments with ``in_axes`` 0 carry the model axis (split over the mesh);
  those with ``None`` are replicated. Every output carries the model axis.
  Without a mesh this is :func:`batched`.
  """
  local = batched(fn, layout.strategy, in_axes)
  if layout.mesh is None:
    return local
  specs = tuple(PartitionSpec(MODEL_AXIS) if ax == 0 else PartitionSpec() for ax in in_axes)
  return shard_map(local, mesh=layout.mesh, in_specs=specs, out_specs=PartitionSpec(MODEL_AXIS))


def pad_members(tree: Any, padded: int) -> Any:
  """Host arrays whose leaves (K, ...) are extended to (padded, ...) with copies of member 0."""
  def pad(a):
    a = np.asarray(a)
    if a.shape[0] == padded:
      return a
    return np.concatenate([a, np.repeat(a[:1], padded - a.shape[0], axis=0)])
  return jax.tree.map(pad, tree)


def place(tree: Any, mesh: Mesh | None, spec: PartitionSpec = PartitionSpec()) -> Any:
  """Every leaf as a (global) array laid out as ``spec`` on ``mesh``.

  Host leaves are cut by :func:`jax.make_array_from_callback`, so in a
  multi-process job each process supplies the shards of its own devices from
  its own copy. Device arrays are resharded with ``jax.device_put`` (returned
  as they are when already laid out so). Without a mesh, host leaves go to
  the default device and device arrays stay where they are.
  """
  if mesh is None:
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a)),
                        tree)
  target = NamedSharding(mesh, spec)

  def one(a):
    if isinstance(a, jax.Array):
      return a if a.sharding == target else jax.device_put(a, target)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, target, lambda idx: host[idx])
  return jax.tree.map(one, tree)


def to_host(x: Any) -> Any:
  """NumPy copies of every leaf; leaves spread over several processes are gathered first."""
  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree.map(one, x)


def record_mesh(rows: int, devices: Sequence[jax.Device] | int | None = None) -> Mesh | None:
  """The mesh (:data:`RECORD_AXIS`) that splits a batch of ``rows`` rows over the devices.

  None (one device) when there is one device or ``rows`` is not a multiple of
  the device count (small batches run on one device).
  """
  devs = _devices(devices)
  if len(devs) <= 1 or rows % len(devs):
    return None
  return Mesh(np.asarray(devs), (RECORD_AXIS,))


def describe(layout: Layout, k: int) -> str:
  """'8 members on 4 devices (2 each, map)' — for logs and benchmarks."""
  pad = layout.padded(k) - k
  extra = f', {pad} padding' if pad else ''
  return (f'{k} members on {layout.num_devices} device(s) ({layout.per_device(k)} each, '
          f'{layout.strategy}{extra})')


__all__ = ['STRATEGIES', 'MODEL_AXIS', 'RECORD_AXIS', 'Layout', 'default_strategy',
           'check_strategy', 'resolve_strategy', 'batched', 'model_layout', 'map_models',
           'pad_members', 'place', 'to_host', 'record_mesh', 'describe', 'shard_map']
