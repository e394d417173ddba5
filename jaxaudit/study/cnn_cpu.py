"""Paired CPU timings of one CNN training step (batch B, MNIST-shaped data).

Every number is a *paired* measurement: the baseline and the variant run in
alternation (A, B, A, B, ...) in one process (or, for XLA flags, which must be
set before jax is imported, in two persistent worker subprocesses that take
turns), so load from other jobs on the shared 2-core CPU hits both alike.

:func:`make_step` builds one jitted training step (forward + backward +
optimizer update, ``jaxaudit.train.train_step``) of the CNN; :func:`paired`
alternates runners; :func:`run_attempt` runs one named attempt of
:data:`ATTEMPTS` and returns a row (name, baseline ms, variant ms, ratio).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

INPUT_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """One training-step variant.

  Attributes:
    model_kwargs: CNN options (``conv_impl``, ``pool_impl``).
    layout: 'NHWC' (the CNN module) or 'NCHW' (a functional copy of the CNN
      with NCHW activations and the same parameters).
    optimizer: 'sgd' (momentum 0.9) or 'adam'.
    batch_size: B.
    donate: jit with ``donate_argnums`` for params and optimizer state.
    precision: None or a ``jax.default_matmul_precision`` value.
    compute_dtype: 'float32' or 'bfloat16' (params and inputs cast inside the
      step; master weights stay float32).
    forward_only: time ``apply_fn(params, x)`` (inference) instead of a step.
    scan_steps: 0 (one jitted step a call) or S: one call runs S steps under ``lax.scan``, as
      the trainer does, and the time is reported per step.
  """
  model_kwargs: tuple[tuple[str, Any], ...] = ()
  layout: str = 'NHWC'
  optimizer: str = 'sgd'
  batch_size: int = 128
  donate: bool = False
  precision: str | None = None
  compute_dtype: str = 'float32'
  forward_only: bool = False
  scan_steps: int = 0

  def replace(self, **changes) -> 'StepSpec':
    if 'model_kwargs' in changes and isinstance(changes['model_kwargs'], Mapping):
      changes['model_kwargs'] = tuple(sorted(changes['model_kwargs'].items()))
    return dataclasses.replace(self, **changes)


def _nchw_apply(params, x):
  """The CNN with NCHW activations (explicit dimension numbers), same params as NHWC.

  Args:
    params: the CNN's parameter tree (HWIO kernels).
    x: (B, H, W, C) images (transposed to NCHW here, as a loader would).
  Returns:
    (B, num_classes) logits.
  """
  import jax
  import jax.numpy as jnp
  from jax import lax
  h = jnp.transpose(x, (0, 3, 1, 2))
  for name in ('conv1', 'conv2'):
    p = params[name]
    h = lax.conv_general_dilated(h, p['kernel'].astype(h.dtype), (1, 1), 'SAME',
                                 dimension_numbers=('NCHW', 'HWIO', 'NCHW'))
    h = jax.nn.relu(h + p['bias'].astype(h.dtype)[None, :, None, None])
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), 'SAME')
  h = jnp.transpose(h, (0, 2, 3, 1)).reshape(h.shape[0], -1)   # flatten in NHWC order
  h = jax.nn.relu(h @ params['fc']['kernel'].astype(h.dtype) + params['fc']['bias'])
  return h @ params['head']['kernel'].astype(h.dtype) + params['head']['bias']


def make_step(spec: StepSpec, seed: int = 0) -> Callable[[], None]:
  """A runner: each call does one jitted step (state threaded through) and blocks.

  The first call compiles; call it once before timing.
  """
  import jax
  import jax.numpy as jnp
  import optax
  from jaxaudit.models import get_model, init_params, make_apply_fn
  from jaxaudit.train import Batch, MeanLoss, SoftmaxCE, train_step

  model = get_model('cnn', 10, INPUT_SHAPE, **dict(spec.model_kwargs))
  params = init_params(model, jax.random.key(seed), INPUT_SHAPE)
  base_apply = _nchw_apply if spec.layout == 'NCHW' else make_apply_fn(model)
  if spec.layout not in ('NHWC', 'NCHW'):
    raise ValueError(f'layout must be NHWC or NCHW, got {spec.layout!r}')
  dtype = jnp.dtype(spec.compute_dtype)

  def apply_fn(p, x):
    if dtype != jnp.float32:
      p = jax.tree.map(lambda a: a.astype(dtype), p)
      x = x.astype(dtype)
    return base_apply(p, x).astype(jnp.float32)

  b = spec.batch_size
  x = jax.random.normal(jax.random.key(seed + 1), (b, *INPUT_SHAPE))
  y = jnp.arange(b) % 10
  batch = (Batch(x, y, jnp.ones(b), jnp.arange(b)),)
  if spec.forward_only:
    fwd = jax.jit(apply_fn)

    def run_fwd():
      with jax.default_matmul_precision(spec.precision):
        jax.block_until_ready(fwd(params, x))

    return run_fwd
  tx = optax.sgd(0.01, momentum=0.9) if spec.optimizer == 'sgd' else optax.adam(1e-3)
  loss = MeanLoss(SoftmaxCE())

  def step(p, o, bt):
    return train_step(apply_fn, tx, loss, p, o, bt)

  state = [params, tx.init(params)]
  if spec.scan_steps:
    def scanned(p, o, bt):
      def body(c, _):
        p, o, v = step(c[0], c[1], bt)
        return (p, o), v
      (p, o), v = jax.lax.scan(body, (p, o), None, length=spec.scan_steps)
      return p, o, v[-1]
    jitted = jax.jit(scanned, donate_argnums=(0, 1) if spec.donate else ())
  else:
    jitted = jax.jit(step, donate_argnums=(0, 1) if spec.donate else ())

  def run():
    with jax.default_matmul_precision(spec.precision):
      p, o, v = jitted(state[0], state[1], batch)
    jax.block_until_ready(v)
    state[0], state[1] = p, o

  return run


def paired(runners: Mapping[str, Callable[[], None]], *, rounds: int, inner: int = 3,
           warmup: int = 2) -> dict[str, list[float]]:
  """Alternates the runners (A, B, A, B, ...); ms per call of each round.

  Args:
    runners: name -> runner (one step per call).
    rounds: alternation rounds.
    inner: calls per runner per round (the round's time is their mean).
    warmup: untimed calls per runner first (compile + caches).
  Returns:
    name -> (rounds,) list of ms per call.
  """
  for run in runners.values():
    for _ in range(warmup):
      run()
  times = {name: [] for name in runners}
  for r in range(rounds):
    order = list(runners) if r % 2 == 0 else list(runners)[::-1]
    for name in order:
      t0 = time.perf_counter()
      for _ in range(inner):
        runners[name]()
      times[name].append((time.perf_counter() - t0) / inner * 1e3)
  return times


# ---------------------------------------------------------------------------
# XLA flags: persistent workers in subprocesses, taking turns.

def worker_main() -> None:
  """Subprocess entry: build the step of the JSON spec in argv[1], then serve 'run N' lines."""
  spec = StepSpec(**{k: tuple(tuple(i) for i in v) if k == 'model_kwargs' else v
                     for k, v in json.loads(sys.argv[1]).items()})
  run = make_step(spec)
  run()
  run()
  print('ready', flush=True)
  for line in sys.stdin:
    n = int(line.split()[1])
    t0 = time.perf_counter()
    for _ in range(n):
      run()
    print(f'{(time.perf_counter() - t0) / n * 1e3:.6f}', flush=True)


class _Worker:
  """A subprocess holding one compiled step under its own XLA_FLAGS."""

  def __init__(self, flags: str, spec: StepSpec):
    env = dict(os.environ, XLA_FLAGS=flags)
    self.proc = subprocess.Popen(
        [sys.executable, '-c', 'from jaxaudit.study.cnn_cpu import worker_main; worker_main()',
         json.dumps(dataclasses.asdict(spec))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    line = self.proc.stdout.readline().strip()
    if line != 'ready':
      err = self.proc.stderr.read()[-2000:]
      self.proc.kill()
      raise RuntimeError(f'worker with XLA_FLAGS={flags!r} failed: {err}')

  def __call__(self, n: int) -> float:
    self.proc.stdin.write(f'run {n}\n')
    self.proc.stdin.flush()
    return float(self.proc.stdout.readline())

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def paired_flags(baseline_flags: str, variant_flags: str, spec: StepSpec, *, rounds: int,
                 inner: int = 3) -> tuple[list[float], list[float]]:
  """Baseline and variant XLA_FLAGS in two workers taking turns; ms per step of each round."""
  a = _Worker(baseline_flags, spec)
  try:
    b = _Worker(variant_flags, spec)
  except RuntimeError:
    a.close()
    raise
  ta, tb = [], []
  try:
    for r in range(rounds):
      if r % 2 == 0:
        ta.append(a(inner))
        tb.append(b(inner))
      else:
        tb.append(b(inner))
        ta.append(a(inner))
  finally:
    a.close()
    b.close()
  return ta, tb


# ---------------------------------------------------------------------------
# The attempts.

# The baseline of every attempt: XLA's convolution and max-pool (explicit: the CNN's defaults
# are now the winners below).
BASE = StepSpec(model_kwargs=(('conv_impl', 'xla'), ('pool_impl', 'xla')))
FAST_POOL = BASE.replace(model_kwargs={'conv_impl': 'xla', 'pool_impl': 'reshape'})
PATCHES = {'conv_impl': 'patches', 'pool_impl': 'xla'}
# Inside the trainer's lax.scan (8 steps a call, time per step).
IN_SCAN = FAST_POOL.replace(scan_steps=8)

# name -> (kind, baseline, variant, note). kind 'flags': variant is an XLA_FLAGS string;
# 'spec': baseline and variant are StepSpecs timed in this process; 'batch': per-example.
ATTEMPTS: dict[str, tuple[str, Any, Any, str]] = {
    'flag_multi_thread_eigen_false': ('flags', '', '--xla_cpu_multi_thread_eigen=false', ''),
    'flag_use_thunk_runtime_false': ('flags', '', '--xla_cpu_use_thunk_runtime=false',
                                     'flag is marked Deprecated in this jaxlib'),
    'flag_enable_fast_math': ('flags', '', '--xla_cpu_enable_fast_math=true', ''),
    'flag_use_xnnpack_false': ('flags', '', '--xla_cpu_use_xnnpack=false', ''),
    'flag_xnn_graph_fusion_greedy': (
        'flags', '', '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
        ''),
    'flag_prefer_vector_width_512': ('flags', '', '--xla_cpu_prefer_vector_width=512', ''),
    'flag_opt_preset_fast_runtime': ('flags', '', '--xla_cpu_opt_preset=FAST_RUNTIME', ''),
    'flag_use_onednn': ('flags', '', '--xla_cpu_use_onednn=true', 'oneDNN thunks'),
    'flag_onednn_custom_call': ('flags', '', '--xla_cpu_experimental_onednn_custom_call=true',
                                'oneDNN custom calls'),
    'layout_nchw': ('spec', BASE, BASE.replace(layout='NCHW'), ''),
    'conv_patches': ('spec', BASE, BASE.replace(model_kwargs=PATCHES), ''),
    'conv_patches_inference': ('spec', BASE.replace(forward_only=True),
                               BASE.replace(model_kwargs=PATCHES, forward_only=True),
                               'forward only'),
    'pool_reshape': ('spec', BASE, FAST_POOL, 'select_and_scatter replaced'),
    'pool_reshape_inference': ('spec', BASE.replace(forward_only=True),
                               FAST_POOL.replace(forward_only=True), 'forward only'),
    'pool_reshape_adam': ('spec', BASE.replace(optimizer='adam'),
                          FAST_POOL.replace(optimizer='adam'), 'Adam step'),
    'pool_reshape+conv_patches': ('spec', FAST_POOL, FAST_POOL.replace(
        model_kwargs={'pool_impl': 'reshape', 'conv_impl': 'patches'}),
                                  'baseline: pool_reshape'),
    'scan_vs_single_step': ('spec', FAST_POOL, IN_SCAN,
                            'baseline: pool_reshape; variant: the same in lax.scan'),
    'scan_conv_patch_grad': ('spec', IN_SCAN, IN_SCAN.replace(
        model_kwargs={'pool_impl': 'reshape', 'conv_impl': 'patch_grad'}),
                             'both in lax.scan; XLA forward, patch-matmul gradients'),
    'scan_conv_patches': ('spec', IN_SCAN, IN_SCAN.replace(
        model_kwargs={'pool_impl': 'reshape', 'conv_impl': 'patches'}), 'both in lax.scan'),
    'conv_patch_grad_inference': ('spec', FAST_POOL.replace(forward_only=True),
                                  FAST_POOL.replace(model_kwargs={'pool_impl': 'reshape',
                                                                  'conv_impl': 'patch_grad'},
                                                    forward_only=True), 'forward only'),
    'flag_use_onednn+pool_reshape': ('flags_spec', FAST_POOL, '--xla_cpu_use_onednn=true',
                                     'baseline: pool_reshape'),
    'precision_bfloat16': ('spec', BASE, BASE.replace(precision='bfloat16'),
                           'jax.default_matmul_precision'),
    'compute_dtype_bfloat16': ('spec', BASE, BASE.replace(compute_dtype='bfloat16'), ''),
    'donate_params_opt_state': ('spec', BASE, BASE.replace(donate=True), ''),
    'batch_64_per_128': ('batch', BASE, BASE.replace(batch_size=64),
                         'variant: B=64 time x 2'),
    'batch_256_per_128': ('batch', BASE, BASE.replace(batch_size=256),
                          'variant: B=256 time / 2'),
}


def run_attempt(name: str, *, rounds: int, batch_size: int = 128, inner: int = 3) -> dict:
  """Runs one attempt of :data:`ATTEMPTS` paired against its baseline.

  Returns:
    dict(name, baseline_ms, variant_ms (medians over rounds, ms per step at
    ``batch_size``; 'batch' attempts rescale the variant to that batch), ratio
    = variant / baseline, note).
  """
  if name not in ATTEMPTS:
    raise ValueError(f'unknown attempt {name!r}; choose from {sorted(ATTEMPTS)}')
  kind, base, var, note = ATTEMPTS[name]
  if kind in ('flags', 'flags_spec'):
    spec = (base if kind == 'flags_spec' else BASE).replace(batch_size=batch_size)
    ta, tb = paired_flags('', var, spec, rounds=rounds, inner=inner)
  else:
    base = base.replace(batch_size=batch_size)
    scale = 1.0
    if kind == 'batch':
      var = var.replace(batch_size=int(var.batch_size * batch_size / BASE.batch_size))
      scale = batch_size / var.batch_size
    else:
      var = var.replace(batch_size=batch_size)
    t = paired({'baseline': make_step(base), 'variant': make_step(var)}, rounds=rounds,
               inner=inner)
    # A scanned runner does scan_steps steps a call: per-step times.
    ta = [v / max(base.scan_steps, 1) for v in t['baseline']]
    tb = [v * scale / max(var.scan_steps, 1) for v in t['variant']]
  a, b = float(np.median(ta)), float(np.median(tb))
  return dict(name=name, baseline_ms=a, variant_ms=b, ratio=b / a, note=note)


def format_row(row: Mapping[str, Any]) -> str:
  """One line: name, baseline ms, variant ms, ratio, note."""
  return (f'{row["name"]:32s} {row["baseline_ms"]:8.1f} {row["variant_ms"]:8.1f} '
          f'{row["ratio"]:6.2f}  {row.get("note", "")}')


def run_attempts(names: Sequence[str], *, rounds: int, batch_size: int = 128,
                 log: Callable[[str], None] = print) -> list[dict]:
  """Runs the named attempts (all if empty), logging one line each; failures are rows too."""
  rows = []
  for name in (list(names) or list(ATTEMPTS)):
    try:
      row = run_attempt(name, rounds=rounds, batch_size=batch_size)
      log(format_row(row))
    except Exception as e:   # noqa: BLE001 — e.g. a flag this jaxlib rejects
      row = dict(name=name, error=f'{type(e).__name__}: {str(e)[-300:]}')
      log(f'{name:32s} failed: {row["error"]}')
    rows.append(row)
  return rows
