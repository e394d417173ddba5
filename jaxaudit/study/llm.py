r"""The language-model study: base → M → unlearning methods → audit + peers, over draws.

One draw (seed r) of a corpus, TOFU-style (BRIEF §7):

1. the base LM, pretrained once on the corpus's pretraining groups (disjoint
   people / speakers; cached in the workdir);
2. a split over groups (:func:`jaxaudit.text.dataset.group_split`): Du = every
   record of ``forget_groups`` people, D_ref = records of other whole groups;
3. M (the base fine-tuned on D) and the honest retrain (the base fine-tuned on
   Dr) in one 2-model program;
4. the LM unlearning methods applied to M (:mod:`jaxaudit.unlearn.language`), at
   their published-style defaults or at the settings ``jaxaudit tune`` chose in a
   workdir of the same corpus and sizes (``tuned_from``: :func:`tuned_settings`), and
   the exact-text-masking fake (M, except on the exact token sequences of Du, where it
   answers as the retrain);
5. the audit of every target with K verifiers fine-tuned from the base on 15%
   of Dr (shared by the targets), its knowledge test on the synthetic corpus;
6. the peers on the same models: Min-K%++ as a raw MIA (no reference model),
   MUSE's PrivLeak and TOFU's forget quality — both against the retrain, which
   is their cost.

:func:`summarise` makes the table BUILD_NOTES quotes: verdict rates with
Clopper–Pearson intervals, the knowledge test, the peers' values and agreement,
and costs. Resumable: one JSON line per finished draw.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxaudit import io_utils

# Targets of a draw and what the audit should say.
EXPECT = {'retrain': 'pass (false-alarm rate)', 'original': 'fail (detection)',
          'lm_gradient_ascent': 'fail (damaged / remembers)', 'lm_npo': 'fail (damaged / remembers)',
          'fake_masking': 'fail (detection)'}
# MUSE calls |PrivLeak| <= 5 close to the retrain; TOFU reads forget quality >= 0.05 as forgotten.
PRIVLEAK_OK = 5.0
FORGET_QUALITY_OK = 0.05


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """One corpus's study configuration (``local`` sizes run on 2 CPU cores).

  Attributes:
    corpus: ``synthetic`` (TOFU-style people), ``shakespeare`` (speeches by
      speaker) or a path to a .txt / .jsonl file.
    tokenizer: ``word`` (closed vocabulary), ``byte`` or ``bpe`` (local).
    bpe_vocab: vocabulary size of a local BPE.
    context: T, tokens per record.
    num_people: people of the synthetic corpus.
    max_groups: keep at most this many units (drawn by seed 0), None: all.
    unit: the unit of deletion and of the test, ``group`` (people, speakers) or
      ``document`` (:func:`jaxaudit.text.setup.load_text_dataset`).
    width, depth, heads: the transformer.
    base_epochs, base_lr: pretraining of the base LM.
    epochs, lr, batch_size: fine-tuning (M, retrain, verifiers).
    forget_groups: people / speakers in Du.
    ref_fraction: fraction of the pool's groups held out as D_ref.
    methods: LM unlearning methods applied to M.
    num_verifiers: K.
    utility_ratio: the utility test's reference models train on this fraction of Dr
      (``AuditSettings.utility_ratio``; 0: the verifiers). 0.5 for language models:
      gradient ascent at published settings can degrade a small LM to the verifiers'
      own level, which a reference at 15% of Dr cannot see (BUILD_NOTES.md).
  """
  corpus: str = 'synthetic'
  tokenizer: str = 'word'
  bpe_vocab: int = 512
  context: int = 64
  num_people: int = 200
  max_groups: int | None = None
  unit: str = 'group'
  width: int = 64
  depth: int = 2
  heads: int = 4
  base_epochs: int = 20
  base_lr: float = 3e-3
  epochs: int = 15
  lr: float = 2e-3
  batch_size: int = 32
  forget_groups: int = 10
  ref_fraction: float = 0.2
  methods: tuple[str, ...] = ('lm_gradient_ascent', 'lm_npo', 'lm_grad_diff', 'lm_simnpo',
                              'lm_idk', 'lm_rmu', 'lm_finetune')
  num_verifiers: int = 4
  utility_ratio: float = 0.5

  def finetune_recipe(self):
    from jaxaudit.train import Recipe
    return Recipe(optimizer='adam', learning_rate=self.lr, epochs=self.epochs,
                  batch_size=self.batch_size)

  def base_recipe(self):
    from jaxaudit.train import Recipe
    return Recipe(optimizer='adam', learning_rate=self.base_lr, epochs=self.base_epochs,
                  batch_size=self.batch_size)


def local_config(corpus: str) -> LMConfig:
  """The CPU-sized configuration of ``corpus`` (about a minute per draw on 2 cores)."""
  if corpus == 'synthetic':
    return LMConfig(forget_groups=20)
  if corpus == 'shakespeare':
    # Speeches as units (speakers hold very unequal amounts of text: a handful of
    # speakers per request leaves the group-level test few units); 1200 of the 4300
    # speeches keep a draw near a minute and a half; the acceptance methods only.
    return LMConfig(corpus='shakespeare', tokenizer='bpe', bpe_vocab=512, context=64,
                    unit='document', max_groups=1200, forget_groups=40, base_epochs=10,
                    epochs=10, methods=('lm_gradient_ascent', 'lm_npo'))
  return LMConfig(corpus=corpus, tokenizer='byte', context=128)


def full_config(corpus: str) -> LMConfig:
  """An accelerator-sized configuration (not run here: see BUILD_NOTES.md)."""
  base = local_config(corpus)
  return dataclasses.replace(base, context=256, width=512, depth=8, heads=8, base_epochs=40,
                             epochs=10, lr=3e-4, base_lr=1e-3, batch_size=64,
                             num_people=2000 if corpus == 'synthetic' else base.num_people,
                             forget_groups=base.forget_groups * 4)


@dataclasses.dataclass
class Prepared:
  """What every draw of a corpus shares: the data set, the model, the base LM, the task."""
  cfg: LMConfig
  dataset: Any
  model: Any
  base_params: Any
  task: Any
  base_s: float


def prepare(cfg: LMConfig, workdir: str, *, data_dir: str = '',
            log: Callable[[str], None] = lambda s: None) -> Prepared:
  """Builds the data set and the model, and pretrains (or loads) the base LM
  (:mod:`jaxaudit.text.setup`)."""
  from jaxaudit.models import get_model
  from jaxaudit.tasks.language import LanguageModeling
  from jaxaudit.text import setup
  ds = setup.load_text_dataset(cfg.corpus, tokenizer=cfg.tokenizer, bpe_vocab=cfg.bpe_vocab,
                               context=cfg.context, num_people=cfg.num_people,
                               max_groups=cfg.max_groups, unit=cfg.unit, data_dir=data_dir)
  model = get_model('transformer', ds.num_classes, width=cfg.width, depth=cfg.depth,
                    heads=cfg.heads, context=cfg.context)
  params, base_s = setup.pretrain_base(model, ds, cfg.base_recipe(),
                                       os.path.join(workdir, 'base'), log=log)
  task = LanguageModeling.for_dataset(ds, base_params=params)
  return Prepared(cfg, ds, model, params, task, base_s)


def masking_fn(model, m_params, r_params, masked_rows: np.ndarray) -> Callable:
  """The exact-text-masking fake: M's features, except on token rows equal to one of
  ``masked_rows`` (n_u, T+1) — Du's exact records — answered by ``r_params`` (a
  retrain: the strongest answer an owner can give there)."""
  from jaxaudit.train import predict_logits
  fmodel = model.clone(output='features')
  keys = {np.asarray(r, np.float32).tobytes() for r in masked_rows}

  def fn(x):
    x = np.asarray(x, np.float32)
    out = np.array(predict_logits(fmodel, m_params, x))
    hit = np.array([r.tobytes() in keys for r in x])
    if hit.any():
      out[hit] = predict_logits(fmodel, r_params, x[hit])
    return out

  return fn


def _features(model, params, x) -> np.ndarray:
  from jaxaudit.train import predict_logits
  return predict_logits(model.clone(output='features'), params, x)


def _peers(prep: Prepared, split, params: dict[str, Any], ref_idx: np.ndarray) -> dict:
  """Min-K%++ raw MIA, PrivLeak and forget quality of every target (params: name -> params)."""
  from jaxaudit.peers import language as lm_peers
  ds, model = prep.dataset, prep.model
  t0 = time.time()
  x_du, x_ref = ds.x_train[split.forget], ds.x_train[ref_idx]
  auc = {}
  for name, p in params.items():
    auc[name] = lm_peers.minkpp_mia(_features(model, p, x_du), _features(model, p, x_ref))['auc']
  out = {name: dict(minkpp_auc=float(a), privleak=float(lm_peers.privleak(a, auc['retrain'])))
         for name, a in auc.items()}
  kp = ds.knowledge
  if kp is not None:
    groups_du = np.unique(ds.groups[split.forget])
    q = np.flatnonzero(np.isin(np.asarray(kp.group), groups_du))
    if len(q):
      sub = type(kp)(*(np.asarray(a)[q] for a in kp))        # Du's people's probes
      tr = {}
      for name, p in params.items():
        lp = lm_peers.answer_logprobs(model, p, sub)           # (Q, 1 + F): true, false...
        tr[name] = lm_peers.truth_ratios(lp[:, 0], lp[:, 1:])
      for name in params:
        out[name]['forget_quality'] = float(lm_peers.forget_quality(tr[name], tr['retrain']))
  for name in out:
    o = out[name]
    o['privleak_verdict'] = 'forgotten' if abs(o['privleak']) <= PRIVLEAK_OK else 'not_forgotten'
    if 'forget_quality' in o:
      o['forget_quality_verdict'] = ('forgotten' if o['forget_quality'] >= FORGET_QUALITY_OK
                                     else 'not_forgotten')
  return dict(targets=out, wall_time_s=time.time() - t0, models_trained=1)


# The fields of a `jaxaudit tune` workdir's config.json that must match an LMConfig for its
# tuned settings to apply here: (dotted config field, LMConfig attribute or a function of it).
TUNED_FIELDS = (
    ('dataset', lambda c: f'text:{c.corpus}'), ('model', lambda c: 'transformer'),
    ('text.tokenizer', 'tokenizer'), ('text.context', 'context'),
    ('text.num_people', 'num_people'), ('text.max_groups', 'max_groups'), ('text.unit', 'unit'),
    ('text.base_epochs', 'base_epochs'), ('text.base_lr', 'base_lr'),
    ('text.forget_groups', 'forget_groups'), ('split.ref_fraction', 'ref_fraction'),
    ('model_kwargs.width', 'width'), ('model_kwargs.depth', 'depth'),
    ('model_kwargs.heads', 'heads'), ('train.optimizer', lambda c: 'adam'),
    ('train.learning_rate', 'lr'), ('train.epochs', 'epochs'),
    ('train.batch_size', 'batch_size'))


def tuned_settings(cfg: LMConfig, workdir: str) -> dict[str, dict[str, Any]]:
  """The hyper-parameters ``jaxaudit tune`` chose in ``workdir`` for each of ``cfg.methods``.

  ``workdir`` must be a jaxaudit workdir of the same corpus, model and fine-tuning recipe
  (its config.json agrees with ``cfg`` on :data:`TUNED_FIELDS`; e.g.
  ``experiments/configs/lm_synthetic.py:local`` for the local synthetic study) holding a
  tuning result (WORKDIR/tuning/METHOD.json) for every method. Reads files only.

  Returns:
    {method: {name: value}}, the tuned hyper-parameters (registry defaults fill the rest).
  Raises:
    ConfigError: a missing workdir or config, a setting that differs, or a method without
      a tuning result (one line each, naming what to run).
  """
  from jaxaudit.errors import ConfigError
  from jaxaudit.tune import read_result
  from jaxaudit.workdir import saved_config
  if not os.path.isdir(workdir):
    raise ConfigError(f'--tuned_from={workdir} is not a directory')
  saved = saved_config(workdir)
  if saved is None:
    raise ConfigError(f'--tuned_from={workdir} is not a jaxaudit workdir (no config.json): run '
                      f'`jaxaudit train` and `jaxaudit tune` there first')
  diff = []
  for field, attr in TUNED_FIELDS:
    node = saved
    for part in field.split('.'):
      node = node.get(part) if isinstance(node, dict) else None
    want = attr(cfg) if callable(attr) else getattr(cfg, attr)
    if node != want and not (isinstance(want, float) and isinstance(node, (int, float))
                             and float(node) == want):
      diff.append(f'{field} {node!r} (study: {want!r})')
  if diff:
    raise ConfigError(f'--tuned_from={workdir} was made with other settings than this study: '
                      + '; '.join(diff) + ' (tune a workdir of the study\'s own configuration, '
                      'e.g. experiments/configs/lm_synthetic.py:local)')
  out = {}
  for m in cfg.methods:
    result = read_result(workdir, m)
    if result is None:
      raise ConfigError(f'--tuned_from={workdir} holds no tuning result for {m}: run `jaxaudit '
                        f'tune --workdir={workdir} --methods={m}`, or leave {m} out of --methods')
    out[m] = dict(result['hparams'])
  return out


def method_settings(methods: Sequence[str], tuned: dict[str, dict[str, Any]] | None = None
                    ) -> dict[str, dict[str, Any]]:
  """Every hyper-parameter each method runs with: registry defaults, then ``tuned[method]``.

  Builds each method (an unknown method or a bad value is a ConfigError before any training).
  Returns: {method: {name: value}} (JSON-ready: tuples as lists).
  """
  from jaxaudit.unlearn import get_method
  out = {}
  for m in methods:
    hp = get_method(m, **(tuned or {}).get(m, {})).hparams
    out[m] = {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()}
  return out


def run_draw(r: int, prep: Prepared, *, settings=None,
             hparams: dict[str, dict[str, Any]] | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
  """One draw (module docstring): every target's audit result, peers and costs.

  ``hparams``: {method: hyper-parameters} of the methods that do not run at their registry
  defaults (:func:`method_settings`); the row records what each method ran with.
  """
  from jaxaudit.audit import AuditSettings, Target, audit_many
  from jaxaudit.text import setup
  from jaxaudit.text.dataset import group_split
  from jaxaudit.train import train_ensemble
  from jaxaudit.train.ensemble import stack, unstack
  from jaxaudit.train.loop import TokenCE
  from jaxaudit.unlearn import get_method, make_unlearn_data
  cfg, ds, model = prep.cfg, prep.dataset, prep.model
  split = group_split(ds, seed=r, forget_groups=cfg.forget_groups, ref_fraction=cfg.ref_fraction)
  recipe = cfg.finetune_recipe()
  t0 = time.time()
  res = train_ensemble(model, ds.x_train, ds.y_train, [split.train, split.retain],
                       [10_000 + r, 20_000 + r], recipe, loss=TokenCE(),
                       init_params=stack([prep.base_params, prep.base_params]))
  pair_s = time.time() - t0
  m_params, r_params = unstack(res.params, 0), unstack(res.params, 1)
  params = {'retrain': r_params, 'original': m_params}
  method_s = {}
  data = make_unlearn_data(ds, split, recipe, init_checkpoint_params=prep.base_params,
                           refusal=setup.refusal_tokens(ds))
  for name in cfg.methods:
    t1 = time.time()
    fn = get_method(name, **(hparams or {}).get(name, {})).fn
    params[name] = jax.block_until_ready(fn(m_params, model, data, jax.random.key(30_000 + r)))
    method_s[name] = time.time() - t1
  targets = [Target.from_params(model, p, name=n) for n, p in params.items()]
  targets.append(Target.from_fn(masking_fn(model, m_params, r_params, ds.x_train[split.forget]),
                                name='fake_masking'))
  settings = settings or AuditSettings(num_verifiers=cfg.num_verifiers, seed=r,
                                       member_sample=500, test_sample=500,
                                       utility_ratio=cfg.utility_ratio)
  t1 = time.time()
  results = audit_many(targets, ds, split, verifier_model=model, recipe=recipe,
                       settings=settings, task=prep.task, log=log)
  audit_s = time.time() - t1
  ref_idx = np.asarray(split.ref)
  peers = _peers(prep, split, params, ref_idx)
  out = {}
  for t, res_t in zip(targets, results):
    d = res_t.to_dict()
    cl = d.get('class_level') or {}
    out[t.name] = dict(
        decision=res_t.decision, direction=res_t.direction, p_value=res_t.p_value,
        forgetting_score=res_t.forgetting_score, power=res_t.power,
        knowledge=dict(p_value=cl.get('p_value'), accuracy=cl.get('accuracy'),
                       verifier_accuracy=cl.get('verifier_accuracy')) if cl else None,
        tests={k: v.get('p_adjusted', v.get('p_value')) for k, v in (d.get('tests') or {}).items()},
        accuracy=d.get('accuracy', {}).get('target', {}),
        verifier_accuracy=d.get('accuracy', {}).get('verifiers', {}),
        utility=d.get('utility_test'),
        wall_time_s=d['cost']['wall_time_s'], models_trained=d['cost']['models_trained'],
        peers=peers['targets'].get(t.name))
  return dict(draw=r, corpus=cfg.corpus, utility_ratio=settings.utility_ratio,
              hparams=method_settings(cfg.methods, hparams),
              sizes=dict(train=len(split.train), forget=len(split.forget), ref=len(split.ref),
                         forget_groups=cfg.forget_groups),
              time_s=dict(original_and_retrain=pair_s, methods=method_s, audit_all=audit_s,
                          peers=peers['wall_time_s'], base=prep.base_s),
              results=out)


def _rate(res: Sequence[dict], bad=('not_forgotten',)) -> tuple[int, int, float, float]:
  from jaxaudit.audit import stats
  k = sum(x['decision'] in bad for x in res)
  lo, hi = stats.clopper_pearson(k, len(res))
  return k, len(res), lo, hi


def summarise(rows: Sequence[dict], alpha: float = 0.05) -> str:
  """The study table (Markdown) of finished draws."""
  if not rows:
    return 'no draws'
  lines = [f'corpus: {rows[0]["corpus"]}; draws: {len(rows)}; sizes (draw 0): {rows[0]["sizes"]}',
           *settings_lines(rows[0]),
           '', '| target | expected | ours: not_forgotten [95% CI] | directions | '
           'inconclusive or invalid_reference | '
           'knowledge test p ≤ α | Min-K%++ AUC | PrivLeak | |PrivLeak| > 5 | '
           'forget quality < 0.05 |', '|---|---|---|---|---|---|---|---|---|---|']
  names = list(EXPECT) + [n for n in rows[0]['results'] if n not in EXPECT]
  for name in names:
    res = [r['results'][name] for r in rows if name in r['results']]
    if not res:
      continue
    k, n, lo, hi = _rate(res)
    dirs: dict[str, int] = {}
    for x in res:
      if x['decision'] == 'not_forgotten':
        dirs[x['direction']] = dirs.get(x['direction'], 0) + 1
    inc = sum(x['decision'] in ('inconclusive', 'invalid_reference') for x in res)
    kn = [x['knowledge']['p_value'] <= alpha for x in res
          if x.get('knowledge') and x['knowledge'].get('p_value') is not None]
    pe = [x['peers'] for x in res if x.get('peers')]
    fq = [p['forget_quality'] < FORGET_QUALITY_OK for p in pe if 'forget_quality' in p]
    lines.append(
        f'| {name} | {EXPECT.get(name, "—")} | {k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}] | '
        f'{dirs or ""} | {inc} | '
        + (f'{sum(kn)}/{len(kn)}' if kn else 'n/a') + ' | '
        + (f'{np.mean([p["minkpp_auc"] for p in pe]):.3f}' if pe else 'n/a') + ' | '
        + (f'{np.median([p["privleak"] for p in pe]):+.1f}' if pe else 'n/a') + ' | '
        + (f'{sum(abs(p["privleak"]) > PRIVLEAK_OK for p in pe)}/{len(pe)}' if pe else 'n/a')
        + ' | ' + (f'{sum(fq)}/{len(fq)}' if fq else 'n/a') + ' |')
  # Agreement of the peers' verdicts with ours (forgotten vs not_forgotten; ours inconclusive
  # or invalid_reference left out), over every target of every draw but the retrain (their
  # reference, where they agree by construction).
  lines += ['', '| peer | agrees with our verdict | ours not_forgotten, peer forgotten | '
            'ours forgotten, peer not_forgotten |', '|---|---|---|---|']
  for key, label in (('privleak_verdict', 'MUSE PrivLeak (|x| ≤ 5: forgotten)'),
                     ('forget_quality_verdict', 'TOFU forget quality (p ≥ 0.05: forgotten)')):
    pairs = [(x['decision'], x['peers'][key]) for r in rows for n, x in r['results'].items()
             if n != 'retrain' and x.get('peers') and key in x['peers']
             and x['decision'] in ('forgotten', 'not_forgotten')]
    if pairs:
      agree = sum(a == b for a, b in pairs)
      lines.append(f'| {label} | {agree}/{len(pairs)} = {agree / len(pairs):.2f} | '
                   f'{sum(a == "not_forgotten" and b == "forgotten" for a, b in pairs)} | '
                   f'{sum(a == "forgotten" and b == "not_forgotten" for a, b in pairs)} |')
  t = lambda k: np.mean([r['time_s'][k] for r in rows])
  per_target = np.mean([x['wall_time_s'] for r in rows for x in r['results'].values()])
  lines += ['', '| cost (mean per draw) | wall time (s) |', '|---|---|',
            f'| M and the retrain (one 2-model program) | {t("original_and_retrain"):.1f} |',
            f'| our audit of all targets (incl. its {rows[0]["results"]["retrain"]["models_trained"]}'
            f' models — verifiers{", utility models" if rows[0].get("utility_ratio") else ""} — '
            f'trained once) | {t("audit_all"):.1f} |',
            f'| our audit per target (first one incl. verifiers) | {per_target:.2f} |',
            f'| peers (Min-K%++, PrivLeak, forget quality; need the retrain) | {t("peers"):.1f} '
            '+ one retrain |',
            f'| base LM pretraining (once per corpus) | {rows[0]["time_s"]["base"]:.1f} |']
  return '\n'.join(lines)


def settings_lines(row: dict) -> list[str]:
  """Markdown lines saying what the methods of a draw's row ran with: tuned (by ``jaxaudit
  tune``, in which workdir) or published (the registry defaults), and per method the values
  that differ from the registry defaults."""
  from jaxaudit.unlearn import get_method
  hp = row.get('hparams') or {}
  tuned = set(row.get('tuned') or ())
  if not hp:
    return ['hyper-parameters: published (registry defaults)']

  def changed(m):
    defaults = get_method(m).hparams
    return ', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                     for k, v in hp[m].items() if defaults.get(k) != v) or '—'
  head = ('hyper-parameters: ' + (f'tuned by `jaxaudit tune` in {row.get("tuned_from")}'
                                  if tuned else 'published (registry defaults)')
          + (' (the others: published)' if tuned and set(hp) - tuned else ''))
  return [head, '', '| method | settings | differing from the registry defaults |',
          '|---|---|---|'] + [f'| {m} | {"tuned" if m in tuned else "published"} | {changed(m)} |'
                              for m in hp]


def run(cfg: LMConfig, workdir: str, *, draws: int, first_draw: int = 0, data_dir: str = '',
        tuned_from: str = '', log: Callable[[str], None] = print) -> str:
  """Runs (or resumes) ``draws`` draws; writes WORKDIR/draws.jsonl and summary.md; returns it.

  ``tuned_from``: a workdir where ``jaxaudit tune`` chose every method's hyper-parameters
  (:func:`tuned_settings`); '' runs the methods at their registry (published) defaults. A
  resumed workdir must have run its draws with the same hyper-parameters.
  """
  from jaxaudit.errors import ConfigError
  tuned = tuned_settings(cfg, tuned_from) if tuned_from else {}
  hparams = method_settings(cfg.methods, tuned)   # every method built before any training
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'draws.jsonl')
  old = io_utils.read_jsonl(path, repair=True, log=log)
  for row in old:    # rows of before this record are at the registry defaults
    names = [m for m in cfg.methods if m in row['results']]
    ran = row.get('hparams') or method_settings(names)
    if any(ran.get(m) != hparams[m] for m in names):
      raise ConfigError(f'draw {row["draw"]} in {path} ran its methods with other '
                        'hyper-parameters than these; use a new --workdir')
    if float(row.get('utility_ratio', 0.0)) != float(cfg.utility_ratio):
      raise ConfigError(f'draw {row["draw"]} in {path} was audited with utility_ratio='
                        f'{row.get("utility_ratio", 0.0)}, not {cfg.utility_ratio}; use a new '
                        '--workdir')
  prep = prepare(cfg, workdir, data_dir=data_dir, log=log)
  done = {r['draw'] for r in old}
  for r in range(first_draw, first_draw + draws):
    if r in done:
      continue
    t0 = time.time()
    row = run_draw(r, prep, hparams=tuned, log=lambda s: None)
    row.update(tuned_from=os.path.abspath(tuned_from) if tuned_from else None,
               tuned=sorted(tuned))
    io_utils.append_jsonl(path, row)
    log(f'[llm] draw {r}: ' + ', '.join(f'{k} {v["decision"]}'
                                          + (f' ({v["direction"]})' if v['direction'] else '')
                                          for k, v in row['results'].items())
        + f'  ({time.time() - t0:.0f}s)')
  rows = [r for r in io_utils.read_jsonl(path) if first_draw <= r['draw'] < first_draw + draws]
  table = summarise(rows)
  io_utils.write_text(os.path.join(workdir, 'summary.md'), table + '\n')
  return table
