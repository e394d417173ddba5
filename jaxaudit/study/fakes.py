r"""Fake unlearning: can a dishonest model owner pass the audit without forgetting?

For each seed, on one entry of a sweep config (``config.fake``; sweep_local's
default: ``mnist_mlp_large``, random 30% forget set, seeds 0-9), the original
model M (trained on D ∋ Du) is turned into the fakes of the brief (§6), each
audited as a :class:`jaxaudit.audit.Target` by jaxaudit's audit and by the peer
auditors (population MIA, LiRA, RMIA, the seed code's heuristics with its KS
rule). The honest retrain is the control.

Fakes (settings in ``config.fake``):
  noop          M returned as is.
  lazy          a few fine-tuning steps: ``finetune`` with 1 epoch and a small lr.
  mask_scale    output masking on the exact records of Du: inputs whose bytes hash
                to a record of Du get M's logits × ``mask_scale`` (low confidence);
                every other input (including Du's augmented neighbours) gets M's.
  mask_uniform  as mask_scale, but the exact records of Du get uniform outputs.
  temperature   global temperature: M's logits / ``temperature`` on every input.
  noise         global noise: M's logits + N(0, ``noise_std``²) on every query.
  laundering    retrain from scratch on Dr plus ``launder_copies`` perturbed copies
                of every Du record (1–2 px shifts + Gaussian noise): Du is gone as
                exact records, its near-duplicates are not.
  adaptive      the issue's adaptive fake: fine-tunes M for ``adaptive_epochs`` on
                KL(M ‖ Mu) + (φ_Mu − φ_M)² on Dr + λ (φ_Mu(x) − φ_V(x))² on Du
                (both squared terms in φ's units), φ the logit-scaled
                confidence and φ_V the mean of the owner's own verifier-like models
                (2 models on 15% of Dr, a seed the auditor does not use): Mu's
                confidence on the exact records of Du is pulled down to the
                verifiers' level while it keeps M's outputs everywhere else
                (distillation on Dr).
  adaptive_aug  as adaptive, but the matching also runs on random 1-px shifts and
                noisy copies of Du (an owner who knows the audit queries neighbours).
  adaptive_ce   as adaptive, but the keep term is CE(Dr) instead of distillation
                from M: a stronger fake than the issue's, which gives up M's
                behaviour elsewhere (on MNIST it halves Mu's confidence on every
                input and costs 3.5-5.5 points of test accuracy) to hide Du.
  adaptive_aug_ce  adaptive_aug with the CE keep term.
  adaptive_unseen  as adaptive, but Du's confidence is pulled to M's level on *unseen*
                records of the same difficulty, a + b·φ_V(x) with (a, b) fitted on
                the held-out test split (M's φ against the owner's φ_V), instead of
                the weaker verifiers' level: the owner imitates a non-member, not a
                verifier.
  adaptive_aug_unseen  adaptive_unseen with the matching on augmented copies too.
  adaptive_kl   as adaptive, but Du's whole output distribution is pulled to the
                owner's verifiers' mean distribution (KL(V̄ ‖ Mu) on Du), not only
                the true class's confidence: the answers, the confidences and the
                other classes' mass all look like a model that never saw Du.
  adaptive_kl_aug  adaptive_kl on Du and on its neighbours (random shifts of up to
                2 px, as the audit queries, and Gaussian noise).
  adaptive_correct  matches correctness as well as confidence: Du's φ pulled to
                M's unseen level (as adaptive_unseen) and, on the hardest records
                of Du by the owner's verifiers, M taught the verifiers' most likely
                wrong class, so that Du's accuracy falls to M's accuracy on unseen
                data (the held-out test split).
  adaptive_full the combination: KL on Du and its neighbours to the verifiers'
                distribution sharpened by a temperature fitted on the test split
                so that its mean φ is M's unseen level, M kept on Dr by distillation.
  adaptive_full_ce  adaptive_full with the CE keep term.

Every adaptive fake uses the owner's own verifiers: as many as the auditor's K,
on 15% of Dr like the audit's, with another seed (the owner knows the protocol
and its defaults; the auditor's seed is its own).

A fake is *flagged* by jaxaudit when the decision is not ``forgotten`` (the
owner gets no certificate); the table also gives the ``not_forgotten`` rate.
Peers flag with their decision rule (``not_forgotten``).

The command line is ``experiments/fake_unlearning.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Callable

import numpy as np

from jaxaudit import io_utils
from jaxaudit.study import peers as peers_lib
from jaxaudit.study.cells import as_list
from jaxaudit.study.groups import Group
from jaxaudit.study.schema import FAKE_AUDITORS, FAKES, fake_flagged
from jaxaudit.study.tables import fmt_duration

@dataclasses.dataclass(frozen=True)
class AdaptiveSpec:
  """One adaptive fake: what the owner matches on Du, where, and how M is kept elsewhere.

  Attributes:
    shift: 0 (exact records of Du only) or the largest random shift in pixels of
      the augmented copies of Du the matching also runs on (with noise): every
      step matches the exact records of its Du batch and one augmented copy of each.
    keep: ``distill`` (M's outputs on Dr) or ``ce`` (cross-entropy on Dr).
    level: target of Du's confidence, ``verifiers`` (the owner's verifiers'
      level) or ``unseen`` (M's level on unseen records of the same difficulty).
    match: ``phi`` (the true class's confidence φ), ``kl`` (the whole output
      distribution), ``correct`` (φ plus M's unseen accuracy on Du).
  """
  shift: int
  keep: str
  level: str
  match: str = 'phi'


ADAPTIVE = {'adaptive': AdaptiveSpec(0, 'distill', 'verifiers'),
            'adaptive_aug': AdaptiveSpec(1, 'distill', 'verifiers'),
            'adaptive_ce': AdaptiveSpec(0, 'ce', 'verifiers'),
            'adaptive_aug_ce': AdaptiveSpec(1, 'ce', 'verifiers'),
            'adaptive_unseen': AdaptiveSpec(0, 'distill', 'unseen'),
            'adaptive_aug_unseen': AdaptiveSpec(1, 'distill', 'unseen'),
            'adaptive_kl': AdaptiveSpec(0, 'distill', 'verifiers', 'kl'),
            'adaptive_kl_aug': AdaptiveSpec(2, 'distill', 'verifiers', 'kl'),
            'adaptive_correct': AdaptiveSpec(0, 'distill', 'unseen', 'correct'),
            'adaptive_full': AdaptiveSpec(2, 'distill', 'unseen', 'kl'),
            'adaptive_full_ce': AdaptiveSpec(2, 'ce', 'unseen', 'kl')}


# Settings of the fakes that rewrite a whole distribution or the answers on Du (match 'kl'
# or 'correct'): 3 epochs at λ = 1, enough to move φ, leave the KL to the target at ~80% of
# M's on digits; an owner who wants the match trains longer and weighs it more.
MATCH_DEFAULTS = dict(epochs=10, lr=1e-3, **{'lambda': 5.0})


def default_fake_settings():
  """The ``fake`` section used when a sweep config has none (ConfigDict)."""
  import ml_collections
  f = ml_collections.ConfigDict()
  f.entry = 'mnist_mlp'
  f.forget = 'random10'
  f.fakes = ','.join(FAKES)
  f.lazy_lr = 0.002
  f.mask_scale = 0.25
  f.temperature = 3.0
  f.noise_std = 1.0
  f.launder_copies = 2
  f.launder_noise = 0.3
  f.adaptive_epochs = 3
  f.adaptive_lr = 1e-3
  f.adaptive_lambda = 1.0
  f.peers = True                  # run the peer auditors on every fake
  f.match_epochs = MATCH_DEFAULTS['epochs']
  f.match_lr = MATCH_DEFAULTS['lr']
  f.match_lambda = MATCH_DEFAULTS['lambda']
  return f


# -----------------------------------------------------------------------------
# Fakes.
# -----------------------------------------------------------------------------


def _row_hashes(x: np.ndarray) -> list[bytes]:
  """SHA-1 of each record's float32 bytes."""
  x = np.ascontiguousarray(np.asarray(x, np.float32))
  return [hashlib.sha1(r.tobytes()).digest() for r in x.reshape(len(x), -1)]


def masked_fn(model, params, forget_x: np.ndarray, *, mode: str, scale: float = 0.25):
  """M, except on inputs byte-identical to a record of Du (hash lookup).

  Args:
    forget_x: (|Du|, ...) the records of Du.
    mode: ``scale`` (their logits × ``scale``) or ``uniform`` (logits 0).
  Returns:
    ``fn(x (n, ...)) -> float32 logits (n, C)``; ``fn.hits`` ([int]) counts the
    exact records answered so far.
  """
  from jaxaudit.train import predict_logits
  du = set(_row_hashes(forget_x))
  hits = [0]

  def fn(x):
    lg = np.array(predict_logits(model, params, x), np.float32)
    hit = np.fromiter((h in du for h in _row_hashes(x)), bool, len(x))
    hits[0] += int(hit.sum())
    lg[hit] = lg[hit] * scale if mode == 'scale' else 0.0
    return lg
  fn.hits = hits
  return fn


def temperature_fn(model, params, t: float) -> Callable:
  """M with a global output temperature: ``x (n, ...) -> logits (n, C) / t``."""
  from jaxaudit.train import predict_logits
  return lambda x: np.asarray(predict_logits(model, params, x)) / t


def noise_fn(model, params, std: float, seed: int) -> Callable:
  """M plus N(0, std²) on every query: ``x (n, ...) -> logits (n, C)`` (seeded stream)."""
  from jaxaudit.train import predict_logits
  rng = np.random.default_rng([seed, 977])

  def fn(x):
    lg = np.asarray(predict_logits(model, params, x))
    return lg + std * rng.standard_normal(lg.shape).astype(np.float32)
  return fn


def perturb(x: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
  """Random 1–2 px shifts (images) and Gaussian noise: near-duplicates of x."""
  out = np.array(x, np.float32)
  if out.ndim == 4:
    for i in range(len(out)):
      dy, dx = rng.integers(-2, 3, size=2)
      out[i] = np.roll(out[i], (int(dy), int(dx)), axis=(0, 1))
  return out + noise * rng.standard_normal(out.shape).astype(np.float32)


def laundered_params(g, seed: int, copies: int, noise: float, log):
  """Retrain from scratch on Dr ∪ perturbed copies of Du (checkpointed)."""
  import jax
  from jaxaudit import checkpoint
  from jaxaudit import configs
  from jaxaudit import workdir as workdir_lib
  from jaxaudit.train import train_model
  path = os.path.join(g.wd, 'models', 'fakes', f'laundering-c{copies}-n{noise:g}')
  if checkpoint.exists(path):
    params, _ = checkpoint.load_checkpoint(path)
    return params
  rng = np.random.default_rng([seed, 4242])
  xu = g.dataset.x_train[g.split.forget]
  extra_x = np.concatenate([perturb(xu, rng, noise) for _ in range(copies)])
  extra_y = np.tile(g.dataset.y_train[g.split.forget], copies)
  n = len(g.dataset.x_train)
  x = np.concatenate([g.dataset.x_train, extra_x])
  y = np.concatenate([g.dataset.y_train, extra_y])
  subset = np.concatenate([g.split.retain, np.arange(n, n + len(extra_x))])
  log(f'[fake] laundering: retraining on |Dr| + {len(extra_x)} perturbed copies of Du')
  t0 = time.time()
  key = jax.random.fold_in(configs.role_key(g.cfg, configs.KEY_UNLEARN), 777)
  params = jax.block_until_ready(train_model(g.model, x, y, subset, key, g.recipe).params)
  checkpoint.save_checkpoint(path, params, workdir_lib.checkpoint_meta(
      g.cfg, g.dataset, g.split, 'fake', fake='laundering', wall_time_s=time.time() - t0))
  return params


@dataclasses.dataclass(frozen=True)
class AdaptiveObjective:
  """The informed owner's objective (:func:`adaptive_params`), for the one training step.

  Keep M on Dr (``keep='ce'``: cross-entropy; ``'distill'``: KL to M plus the
  squared φ difference) and, weighted by ``lam``, rewrite Du:
  ``match='phi'``: φ pulled to ``a_lvl + b_lvl · φ_V``; ``'correct'``: the same
  on records of weight 1 and cross-entropy towards the batch's label (a wrong
  class) on records of weight 0; ``'kl'``: KL(q ‖ Mu) with q the owner's
  verifiers' mean distribution, sharpened by ``temp`` (softmax(temp · log q)).
  Batches: (Dr batch, Du batch) — the Du batch's ``y`` is the label to match and
  its ``w`` the correctness flag; aux: (M's params, the owner's verifier params
  stacked (K, ...)).
  """
  keep: str
  lam: float
  a_lvl: float
  b_lvl: float
  match: str = 'phi'
  temp: float = 1.0

  stochastic = False

  def __call__(self, apply_fn, params, batches, key, aux, info):
    import jax
    import jax.numpy as jnp
    from jaxaudit.tasks.classification import logit_confidence
    from jaxaudit.train.losses import per_example_ce
    (xr, yr), (xu, yu, wu) = (batches[0].x, batches[0].y), (batches[1].x, batches[1].y,
                                                             batches[1].w)
    p0, vp = aux
    lr_ = apply_fn(params, xr)
    if self.keep == 'ce':
      kept = per_example_ce(lr_, yr).mean()
    else:   # M's outputs on Dr: its distribution (KL) and, in φ's units, its confidence
      t_logits = jax.lax.stop_gradient(apply_fn(p0, xr))
      teacher = jax.nn.log_softmax(t_logits)
      kept = (jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - jax.nn.log_softmax(lr_)), -1))
              + jnp.mean((logit_confidence(lr_, yr) - logit_confidence(t_logits, yr)) ** 2))
    lu = apply_fn(params, xu)
    v_logits = jax.lax.stop_gradient(jax.vmap(lambda q: apply_fn(q, xu))(vp))   # (K, B, C)
    if self.match == 'kl':
      log_q = jax.nn.logsumexp(jax.nn.log_softmax(v_logits), axis=0) - jnp.log(v_logits.shape[0])
      log_q = jax.nn.log_softmax(self.temp * log_q)
      rewrite = jnp.mean(jnp.sum(jnp.exp(log_q) * (log_q - jax.nn.log_softmax(lu)), -1))
    else:
      phi_u = logit_confidence(lu, yu)
      phi_v = logit_confidence(v_logits, yu).mean(0)
      target = self.a_lvl + self.b_lvl * phi_v
      sq = (phi_u - target) ** 2
      if self.match == 'correct':   # each part averaged over its own records
        rewrite = (jnp.sum(wu * sq) / jnp.maximum(jnp.sum(wu), 1.0)
                   + jnp.sum((1.0 - wu) * per_example_ce(lu, yu))
                   / jnp.maximum(jnp.sum(1.0 - wu), 1.0))
      else:
        rewrite = jnp.mean(sq)
    return kept + self.lam * rewrite


def _unseen_levels(g, own, spec: AdaptiveSpec) -> dict:
  """What the owner knows of M on unseen data (the held-out test split), for the target.

  Returns dict(a, b: the line of M's φ on the owner's φ_V; temp: the temperature
  of the verifiers' mean log-distribution whose mean φ is M's; accuracy: M's).
  """
  from scipy import optimize, special
  from jaxaudit.tasks.classification import logit_confidence
  from jaxaudit.train import predict_logits
  xt, yt = g.dataset.x_test[g.split.test], g.dataset.y_test[g.split.test]
  lm = np.asarray(predict_logits(g.model, g.params, xt))
  phi_m = np.asarray(logit_confidence(lm, yt))
  lv = np.asarray(predict_logits(g.model, own.params, xt, ensemble=True), np.float64)
  phi_v = np.asarray(logit_confidence(lv, yt)).mean(0)
  b, a = (float(c) for c in np.polyfit(phi_v, phi_m, 1))
  log_q = special.logsumexp(special.log_softmax(lv, -1), axis=0) - np.log(len(lv))

  def mean_phi(t):
    return float(np.mean(logit_confidence(t * log_q, yt)))
  target = float(phi_m.mean())
  temp = 1.0
  if spec.level == 'unseen' and spec.match == 'kl':
    lo, hi = 0.05, 50.0
    if (mean_phi(lo) - target) * (mean_phi(hi) - target) < 0:
      temp = float(optimize.brentq(lambda t: mean_phi(t) - target, lo, hi, xtol=1e-4))
  return dict(a=a, b=b, temp=temp, accuracy=float(np.mean(np.argmax(lm, -1) == yt)))


def _correctness_targets(g, own, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
  """Per training record: the label to teach on Du and whether to keep it right.

  The hardest records of Du by the owner's verifiers' mean φ get the verifiers'
  most likely wrong class, as many as bring Du's accuracy to ``accuracy``.
  Returns (labels (n_train,) int32, keep_right (n_train,) float32).
  """
  from jaxaudit.tasks.classification import logit_confidence
  from jaxaudit.train import predict_logits
  y = np.asarray(g.dataset.y_train, np.int32).copy()
  w = np.ones(len(y), np.float32)
  forget = np.asarray(g.split.forget)
  xu, yu = g.dataset.x_train[forget], y[forget]
  lv = np.asarray(predict_logits(g.model, own.params, xu, ensemble=True)).mean(0)
  phi_v = np.asarray(logit_confidence(lv, yu))
  n_wrong = int(round((1.0 - accuracy) * len(forget)))
  hardest = np.argsort(phi_v, kind='stable')[:n_wrong]
  masked = lv.copy()
  masked[np.arange(len(yu)), yu] = -np.inf
  y[forget[hardest]] = np.argmax(masked[hardest], -1)
  w[forget[hardest]] = 0.0
  return y, w


def adaptive_params(g, seed: int, *, epochs: int, lr: float, lam: float, spec: AdaptiveSpec,
                    log):
  """Fine-tunes M on KEEP(Dr) + λ · REWRITE(Du) (:class:`AdaptiveObjective`, :class:`AdaptiveSpec`).

  ``spec.keep``: ``distill`` (KL(M ‖ Mu) + (φ_Mu − φ_M)² on Dr: M's outputs
  kept) or ``ce`` (CE on Dr). ``spec.level``: the target of Du's confidence,
  ``verifiers`` (φ_V(x), the owner's verifiers' mean) or ``unseen`` (a + b·φ_V(x),
  the line of M's φ on φ_V fitted on the held-out test split: M's level on
  unseen records of the same difficulty). ``spec.match`` and ``spec.shift``:
  see :class:`AdaptiveSpec`.
  """
  import jax
  import jax.numpy as jnp
  import optax
  from jaxaudit import checkpoint
  from jaxaudit import workdir as workdir_lib
  from jaxaudit.audit.verifiers import get_verifiers
  from jaxaudit.models import make_apply_fn
  from jaxaudit.tasks.classification import NOISE_STD
  from jaxaudit.train import loop
  if spec.keep not in ('distill', 'ce'):
    raise ValueError(f"keep must be 'distill' or 'ce', got {spec.keep!r}")
  if spec.level not in ('verifiers', 'unseen'):
    raise ValueError(f"level must be 'verifiers' or 'unseen', got {spec.level!r}")
  if spec.match not in ('phi', 'kl', 'correct'):
    raise ValueError(f"match must be 'phi', 'kl' or 'correct', got {spec.match!r}")
  name = (f'adaptive{"_aug" if spec.shift == 1 else ""}'
          + (f'_aug{spec.shift}' if spec.shift > 1 else '')
          + ('' if spec.match == 'phi' else f'_{spec.match}')
          + f'-e{epochs}-lr{lr:g}-l{lam:g}'
          + ('-kd' if spec.keep == 'distill' else '')
          + ('-unseen' if spec.level == 'unseen' else '')
          + ('-x' if spec.shift else '')          # exact + augmented Du in every step
          + ('-b' if spec.match == 'correct' else ''))   # balanced flip term
  path = os.path.join(g.wd, 'models', 'fakes', name)
  if checkpoint.exists(path):
    params, _ = checkpoint.load_checkpoint(path)
    return params
  # The owner's own verifier-like models (not the auditor's: another seed), as many as K.
  own = get_verifiers(g.model, g.dataset, g.split, g.vrecipe,
                      num_verifiers=int(g.settings.num_verifiers), ratio=0.15,
                      member_sample=0, seed=seed + 7919,
                      cache_dir=os.path.join(g.wd, 'fakes_owner_verifiers'), log=log)
  tx = optax.adam(lr)
  image = g.dataset.is_image
  lv = _unseen_levels(g, own, spec)
  a_lvl, b_lvl = (lv['a'], lv['b']) if spec.level == 'unseen' else (0.0, 1.0)
  y_target, w_target = (_correctness_targets(g, own, lv['accuracy']) if spec.match == 'correct'
                        else (np.asarray(g.dataset.y_train, np.int32),
                              np.ones(len(g.dataset.y_train), np.float32)))
  objective = AdaptiveObjective(keep=spec.keep, lam=float(lam), a_lvl=a_lvl, b_lvl=b_lvl,
                                match=spec.match, temp=lv['temp'])
  apply_fn = make_apply_fn(g.model)
  shift = int(spec.shift)

  @jax.jit
  def step(p, s, p0, vp, xr, yr, xu, yu, wu, key):
    if shift:   # the exact records and one augmented copy of each, every step
      k1, k2, k3 = jax.random.split(key, 3)
      xa = xu
      if image:
        dy, dx = jax.random.randint(k1, (2,), -shift, shift + 1)
        xa = jnp.roll(xa, (dy, dx), axis=(1, 2))
      use_noise = jax.random.bernoulli(k2, 0.5)
      xa = xa + use_noise * NOISE_STD * jax.random.normal(k3, xa.shape)
      xu, yu, wu = (jnp.concatenate([xu, xa]), jnp.concatenate([yu, yu]),
                    jnp.concatenate([wu, wu]))
    ones, idx = jnp.ones(xr.shape[:1], jnp.float32), jnp.zeros(xr.shape[:1], jnp.int32)
    batches = (loop.Batch(xr, yr, ones, idx), loop.Batch(xu, yu, wu, idx))
    return loop.train_step(apply_fn, tx, objective, p, s, batches, aux=(p0, vp))

  x, y = g.dataset.x_train, g.dataset.y_train
  retain, forget = np.asarray(g.split.retain), np.asarray(g.split.forget)
  b = int(g.recipe.batch_size)
  rng = np.random.default_rng([seed, 31337])
  p = p0 = jax.tree.map(jnp.asarray, g.params)
  s = tx.init(p)
  vp = jax.tree.map(jnp.asarray, own.params)
  key = jax.random.key(seed + 4040)
  t0 = time.time()
  steps = 0
  for e in range(epochs):
    order = rng.permutation(retain)
    for i in range(0, len(order) - b + 1, b):
      r = order[i:i + b]
      u = rng.choice(forget, b, replace=len(forget) < b)
      p, s, val = step(p, s, p0, vp, x[r], y[r], x[u], y_target[u], w_target[u],
                       jax.random.fold_in(key, steps))
      steps += 1
    log(f'[fake] {name}: epoch {e + 1}/{epochs} loss {float(val):.4f}')
  params = jax.block_until_ready(p)
  checkpoint.save_checkpoint(path, params, workdir_lib.checkpoint_meta(
      g.cfg, g.dataset, g.split, 'fake', fake=name, wall_time_s=time.time() - t0))
  return params


def make_fake(g, name: str, fs, seed: int, log):
  """The Target of fake ``name`` (and accuracies of its model when it has params)."""
  from jaxaudit import checkpoint, pipeline
  from jaxaudit.audit import Target
  m, p0 = g.model, g.params
  if name == 'honest_retrain':
    res = pipeline.run_unlearn(g.cfg, g.wd, 'retrain', log=lambda s: None)
    _, params, _ = checkpoint.restore_model(res['path'])
    return Target.from_params(m, params, name=name)
  if name == 'noop':
    return Target.from_params(m, p0, name=name)
  if name == 'lazy':
    res = pipeline.run_unlearn(g.cfg, g.wd, 'finetune', dict(epochs=1, lr=float(fs.lazy_lr)),
                               out_name='fake_lazy', log=lambda s: None)
    _, params, _ = checkpoint.restore_model(res['path'])
    return Target.from_params(m, params, name=name)
  if name in ('mask_scale', 'mask_uniform'):
    fn = masked_fn(m, p0, g.dataset.x_train[g.split.forget],
                   mode='scale' if name == 'mask_scale' else 'uniform', scale=float(fs.mask_scale))
    t = Target.from_fn(fn, name=name)
    t.hits = fn.hits
    return t
  if name == 'temperature':
    return Target.from_fn(temperature_fn(m, p0, float(fs.temperature)), name=name)
  if name == 'noise':
    return Target.from_fn(noise_fn(m, p0, float(fs.noise_std), seed), name=name)
  if name == 'laundering':
    return Target.from_params(m, laundered_params(g, seed, int(fs.launder_copies),
                                                  float(fs.launder_noise), log), name=name)
  if name in ADAPTIVE:
    spec = ADAPTIVE[name]
    if spec.match == 'phi':
      epochs, lr, lam = fs.adaptive_epochs, fs.adaptive_lr, fs.adaptive_lambda
    else:   # a whole distribution or the answers: a longer, heavier rewrite
      epochs = fs.get('match_epochs', MATCH_DEFAULTS['epochs'])
      lr = fs.get('match_lr', MATCH_DEFAULTS['lr'])
      lam = fs.get('match_lambda', MATCH_DEFAULTS['lambda'])
    return Target.from_params(m, adaptive_params(
        g, seed, epochs=int(epochs), lr=float(lr), lam=float(lam), spec=spec, log=log),
        name=name)
  raise ValueError(f'unknown fake {name!r}; choose from {FAKES}')


def _target_accuracy(g, target) -> dict:
  from jaxaudit.train import accuracy
  out = {}
  r = g.split.retain[:2000]
  for set_name, x, yv in (
      ('retain', g.dataset.x_train[r], g.dataset.y_train[r]),
      ('forget', g.dataset.x_train[g.split.forget], g.dataset.y_train[g.split.forget]),
      ('test', g.dataset.x_test[g.split.test], g.dataset.y_test[g.split.test])):
    lg = target.logits(x[None], np.arange(len(x)), ('identity',), g.dataset.num_classes)[0]
    out[set_name] = float(accuracy(lg, yv))
  return out


def _family_inputs(r) -> dict:
  """What a record-statistic family's verdict needs besides the statistics
  (:func:`jaxaudit.study.robustness.family_verdict`)."""
  d = r.details
  ref = d.get('reference_check') or {}
  return dict(member_auc=d.get('member_auc'), reference_ok=ref.get('ok'),
              utility_collapse=d.get('utility_collapse'), n_tests=d.get('n_tests'),
              test_level=d.get('test_level'), sizes=d.get('sizes'))


def _save_statistics(g, name: str, r) -> str | None:
  """Writes the audit's per-record statistics of Du and D_ref (``forget/NAME``,
  ``ref/NAME`` arrays) to ``GROUP_WD/fake_statistics/FAKE.npz``; returns its path
  relative to the group workdir (None when the audit ran no test)."""
  import io
  rs = r.details.get('record_statistics')
  if not rs:
    return None
  buf = io.BytesIO()
  np.savez(buf, **{f'{k}/{n}': np.asarray(v, np.float64) for k, per in rs.items()
                   for n, v in per.items()})
  rel = os.path.join('fake_statistics', f'{name}.npz')
  io_utils.write_bytes(os.path.join(g.wd, rel), buf.getvalue())
  return rel


def audit_fake(g, name: str, fs, seed: int, log) -> dict:
  """One row (``kind: fake``): our audit and the peers on fake ``name`` of group ``g``."""
  t0 = time.time()
  row = dict(key=f'{g.entry}/{g.forget}/s{seed}/fake:{name}', kind='fake', fake=name,
             entry=g.entry, data=g.dataset.name, model=g.cfg.model, forget=g.forget, seed=seed,
             sizes=g.sizes(), error=None, timing={})
  try:
    target = make_fake(g, name, fs, seed, log)
    row['timing']['make_s'] = time.time() - t0
    row['accuracy'] = dict(fake=_target_accuracy(g, target),
                           retrain=g.summary['retrain'].get('accuracy'),
                           original=g.summary['original'].get('accuracy'))
    t1 = time.time()
    r = g.audit(target)
    row['ours'] = dict(decision=r.decision, direction=r.direction, p_value=r.p_value,
                       effect_auc=r.effect_auc, forgetting_score=r.forgetting_score,
                       forgetting_score_ci=r.forgetting_score_ci, power=r.power,
                       exact_inputs_masked=r.details.get('exact_inputs_masked'),
                       tests=r.details.get('tests'), **_family_inputs(r))
    row['statistics_file'] = _save_statistics(g, name, r)
    row['timing']['audit_s'] = time.time() - t1
  except Exception as e:   # noqa: BLE001 — recorded, the experiment goes on
    row['error'] = f'{type(e).__name__}: {e}'
    log(f'[fake] {name}: {row["error"]}')
    return row
  if not fs.get('peers', True):
    row['peers'] = {}
    row['timing']['row_s'] = time.time() - t0
    return row
  req = peers_lib.PeerRequest(
      g.dataset, g.split, g.model, g.recipe, seed=seed, alpha=float(g.settings.test.alpha),
      cache_dir=g.peer_dir, shadows=g.shadows, rmia_refs=int(g.peers.get('rmia_refs', 2) or 2),
      verifier_params=g.verifier_sets[0][0].params)
  names = [p for p in FAKE_AUDITORS if p != 'ours' and (p != 'lira' or g.shadows is not None)]
  row['peers'] = peers_lib.run_peers(target, req, names, summary=peers_lib.fake_summary)
  if hasattr(target, 'hits'):
    row['exact_hits'] = int(target.hits[0])
  row['timing']['row_s'] = time.time() - t0
  return row


def detection_table(rows: list[dict]) -> list[dict]:
  """Per fake: fraction of seeds each auditor flags (and our not_forgotten rate)."""
  out = []
  fakes = [f for f in FAKES if any(r.get('fake') == f for r in rows)]
  fakes += sorted({r.get('fake') for r in rows if r.get('kind') == 'fake'} - set(fakes))
  for f in fakes:
    rs = [r for r in rows if r.get('kind') == 'fake' and r.get('fake') == f]
    line = dict(fake=f, seeds=len(rs))
    for a in FAKE_AUDITORS:
      vals = [fake_flagged(r, a) for r in rs]
      vals = [v for v in vals if v is not None]
      line[a] = (f'{sum(vals)}/{len(vals)}' if vals else 'n/a')
    nf = [((r.get('ours') or {}).get('decision') == 'not_forgotten') for r in rs if r.get('ours')]
    line['ours_not_forgotten'] = f'{sum(nf)}/{len(nf)}' if nf else 'n/a'
    accs = [(r.get('accuracy') or {}).get('fake', {}) for r in rs]
    for k in ('forget', 'test'):
      v = [a[k] for a in accs if a.get(k) is not None]
      line[f'acc_{k}'] = float(np.mean(v)) if v else None
    out.append(line)
  return out


TABLE_COLS = ['fake', 'seeds', 'ours', 'ours_not_forgotten', 'population_mia', 'lira', 'rmia',
              'heuristics', 'acc_forget', 'acc_test']


def run_fakes(config, workdir: str, seeds, results: str | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) the fake-unlearning experiment; returns all rows."""
  fs = config.get('fake') or default_fake_settings()
  results = results or os.path.join(workdir, 'fake_results.jsonl')
  rows = io_utils.read_jsonl(results, repair=True, log=lambda s: log(f'[fake] {s}'))
  done = {r['key'] for r in rows}
  names = as_list(fs.fakes)
  for n in names:
    if n not in FAKES:
      raise ValueError(f'unknown fake {n!r}; choose from {FAKES}')
  t0 = time.time()
  total = len(seeds) * len(names)
  n_done = sum(f'{fs.entry}/{fs.forget}/s{seed}/fake:{n}' in done for seed in seeds for n in names)
  for seed in seeds:
    keys = [f'{fs.entry}/{fs.forget}/s{seed}/fake:{n}' for n in names]
    if all(k in done for k in keys):
      continue
    g = Group(config, workdir, (fs.entry, fs.forget, int(seed)), log)
    for n, k in zip(names, keys):
      if k in done:
        continue
      row = audit_fake(g, n, fs, int(seed), log)
      io_utils.append_jsonl(results, row)
      rows.append(io_utils.jsonable(row))
      n_done += 1
      o = row.get('ours') or {}
      log(f'[fake] {n_done}/{total} | {fmt_duration(time.time() - t0)} | {k}: '
          f'{row["error"] or o.get("decision")}'
          + (f' ({o["direction"]})' if o.get('direction') else '')
          + f' p={o.get("p_value", float("nan")):.3g}')
  return rows
