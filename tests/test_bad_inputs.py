"""Bad inputs through the CLI, as a user (or an attacker) would type them.

Every case runs ``jaxaudit ...`` as a subprocess in a fresh temporary
directory (holding a copy of a small trained workdir) and asserts: exit code
≠ 0, exactly one ``error:`` line on stderr that names the problem, no
traceback, and that no file of the temporary directory was created, changed
or removed (a hash of the whole tree before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest

from jaxaudit import checkpoint
from tests.cli_runner import run_cli

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'jaxaudit', 'commands',
                      'default_config.py') + ':tiny'
C = f'--config={os.path.abspath(CONFIG.split(":")[0])}:tiny'


def cli(args, cwd, timeout=300):
  return run_cli(args, cwd, timeout=timeout)


def tree_hash(root: str) -> str:
  """sha256 over every path, mode, and file content below root."""
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(dirnames + filenames):
      p = os.path.join(dirpath, name)
      h.update(os.path.relpath(p, root).encode('utf-8', 'surrogateescape'))
      st = os.lstat(p)
      h.update(str(st.st_mode).encode())
      if os.path.isfile(p) and not os.path.islink(p):
        with open(p, 'rb') as f:
          h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


@pytest.fixture(scope='module')
def template(tmp_path_factory):
  """A tiny workdir with the original, the retrain reference and one unlearned model."""
  root = tmp_path_factory.mktemp('template')
  w = str(root / 'w')
  for args in (['train', f'--workdir={w}', C],
               ['unlearn', f'--workdir={w}', '--method=retrain']):
    r = cli(args, root)
    assert r.returncode == 0, r.stderr
  return w


# --- setups: each gets (tmp dir, workdir) and prepares the bad input. --------

def _user_dir(t, w):
  os.makedirs(os.path.join(t, 'mine'))
  with open(os.path.join(t, 'mine', 'thesis.txt'), 'w') as f:
    f.write('irreplaceable')


def _file_at(rel):
  def setup(t, w):
    p = os.path.join(t, rel)
    if os.path.isdir(p):
      shutil.rmtree(p)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, 'w') as f:
      f.write('a file, not a directory')
  return setup


def _results(t, w):
  rows = [dict(key='a', entry='x'), 'garbage', dict(key='b', entry='y')]
  with open(os.path.join(t, 'results.jsonl'), 'w') as f:
    for r in rows:
      f.write((json.dumps(r) if isinstance(r, dict) else '{"key": garbage]') + '\n')


def _bad_labels(t, w):
  rng = np.random.default_rng(0)
  y_test = rng.integers(0, 10, 50)
  y_test[3] = 57
  np.savez(os.path.join(t, 'bad.npz'), x_train=rng.random((200, 4, 4, 1), np.float32),
           y_train=rng.integers(0, 10, 200), x_test=rng.random((50, 4, 4, 1), np.float32),
           y_test=y_test)


def _logits(kind):
  def setup(t, w):
    n = 20
    idx = np.arange(n, dtype=np.float64) + (0.5 if kind == 'float' else 0.0)
    arrays = dict(indices=idx if kind == 'float' else np.arange(n), logits=np.zeros((n, 10)))
    if kind == 'views':
      arrays['view_names'] = np.array(['shift_left', 'noise'])
      arrays['view_logits'] = np.zeros((3, n - 1, 10))
    np.savez(os.path.join(t, 'mu.npz'), **arrays)
  return setup


def _params_files(w, name='original'):
  root = os.path.join(w, 'models', name, 'params')
  out = []
  for dirpath, _, files in os.walk(root):
    out += [os.path.join(dirpath, f) for f in files]
  return sorted(out, key=os.path.getsize)


def _delete_data_file(t, w):
  os.remove(_params_files(w)[-1])   # the largest file: the array data


def _flip_byte(t, w):
  """Flips one byte inside the stored weight values (found by searching for a weight's bytes)."""
  path = os.path.join(w, 'models', 'original')
  params, _ = checkpoint.load_checkpoint(path)
  leaf = np.asarray(params['Dense_0']['kernel'])
  needle = leaf.tobytes()[:16]
  for f in _params_files(w):
    data = bytearray(open(f, 'rb').read())
    pos = data.find(needle)
    if pos >= 0:
      data[pos + 5] ^= 0x01
      with open(f, 'wb') as fh:
        fh.write(bytes(data))
      return
  # Compressed storage: flip a byte in the middle of the largest data file.
  f = _params_files(w)[-1]
  data = bytearray(open(f, 'rb').read())
  data[len(data) // 2] ^= 0x01
  with open(f, 'wb') as fh:
    fh.write(bytes(data))


def _readonly(t, w):
  os.chmod(w, 0o555)


def _nothing(t, w):
  pass


W = '{W}'
# (id, args, setup, pattern the error line must match)
CASES = [
    # 1. Flags that delete data.
    ('name_dotdot', ['unlearn', f'--workdir={W}', '--method=finetune', '--name=../..'], _nothing,
     r'--name .* not allowed'),
    ('name_dot', ['unlearn', f'--workdir={W}', '--method=finetune', '--name=.'], _nothing,
     r'--name .* not allowed'),
    ('name_absolute', ['unlearn', f'--workdir={W}', '--method=finetune', '--name={T}/mine'],
     _user_dir, r'--name .* not allowed'),
    ('name_nested', ['unlearn', f'--workdir={W}', '--method=finetune', '--name=a/b'], _nothing,
     r'--name .* not allowed'),
    ('audit_out_user_dir', ['audit', f'--workdir={W}', '--target=retrain', '--out={T}/mine'],
     _user_dir, r'not written by jaxaudit'),
    ('audit_out_is_file', ['audit', f'--workdir={W}', '--target=retrain', '--out={T}/f'],
     _file_at('f'), r'not a directory'),
    ('report_out_user_dir', ['report', '--results={T}/ok.jsonl', '--out={T}/mine'],
     lambda t, w: (_user_dir(t, w), open(os.path.join(t, 'ok.jsonl'), 'w').write(
         json.dumps(dict(key='a', entry='x')) + '\n')), r'not written by jaxaudit'),
    ('data_import_name_escape', ['data', 'import', '..', '--npz={T}/bad.npz',
                                 '--data_dir={T}/tfds', '--overwrite'], _bad_labels,
     r'data set name .* not allowed'),
    # 2. Tracebacks instead of one line, found before any training.
    ('workdir_is_file', ['train', '--workdir={T}/f', C], _file_at('f'), r'not a directory'),
    ('models_is_file', ['train', f'--workdir={W}', C], _file_at('w/models'),
     r'models exists and is not a directory'),
    ('audits_is_file', ['audit', f'--workdir={W}', '--target=retrain'], _file_at('w/audits'),
     r'audits exists and is not a directory'),
    ('verifiers_is_file', ['audit', f'--workdir={W}', '--target=retrain'],
     _file_at('w/verifiers'), r'verifiers exists and is not a directory'),
    ('workdir_unwritable', ['train', '--workdir=/sys/jaxaudit_w', C], _nothing,
     r'not writable|cannot be created'),
    ('workdir_not_utf8', ['train', '--workdir={T}/\udcff\udcfe', C], _nothing,
     r'not valid UTF-8'),
    ('epochs_1e30', ['train', '--workdir={T}/new', C, '--config.train.epochs=1e30'], _nothing,
     r'epochs'),
    ('epochs_huge', ['train', '--workdir={T}/new', C, '--config.train.epochs=10000000000'],
     _nothing, r'epochs must be'),
    ('seed_1e23', ['train', '--workdir={T}/new', C, '--config.seed=100000000000000000000000'],
     _nothing, r'seed must be in'),
    ('seed_negative', ['train', '--workdir={T}/new', C, '--config.split.seed=-1'], _nothing,
     r'split.seed must be in'),
    ('batch_1e9', ['train', '--workdir={T}/new', C, '--config.train.batch_size=1000000000'],
     _nothing, r'batch_size=1000000000 needs about .* of memory'),
    ('unlearn_batch_1e9', ['unlearn', f'--workdir={W}', '--method=finetune',
                           '--hparam=batch_size=1000000000'], _nothing, r'needs about .* memory'),
    ('audit_unknown_statistic', ['audit', f'--workdir={W}', '--target=retrain',
                                 '--config.audit.statistics=exact,bogus'], _nothing,
     r'statistics must be'),
    ('audit_utility_ratio_below_verifiers', ['audit', f'--workdir={W}', '--target=retrain',
                                             '--config.audit.utility_ratio=0.1'], _nothing,
     r'utility_ratio must be 0 \(off\) or in \(0\.15, 1\)'),
    ('orbax_file_deleted', ['audit', f'--workdir={W}', '--target=original'], _delete_data_file,
     r'checkpoint'),
    ('results_garbage_middle', ['report', '--results={T}/results.jsonl', '--out={T}/rep'],
     _results, r'line 2 is not valid JSON'),
    # 3. Accepted silently before.
    ('test_label_57', ['train', '--workdir={T}/new', C, '--config.dataset=bad',
                       '--config.npz={T}/bad.npz'], _bad_labels, r'label 57 is out of range'),
    ('train_epochs_0', ['train', '--workdir={T}/new', C, '--config.train.epochs=0'], _nothing,
     r'epochs must be'),
    ('unlearn_epochs_0', ['unlearn', f'--workdir={W}', '--method=finetune', '--hparam=epochs=0'],
     _nothing, r'epochs=0 does no training'),
    ('unlearn_lr_1e30', ['unlearn', f'--workdir={W}', '--method=finetune', '--hparam=lr=1e30'],
     _nothing, r'non-finite at step \d+ of \d+ in epoch'),
    ('train_lr_1e30', ['train', '--workdir={T}/new', C, '--config.train.learning_rate=1e30'],
     _nothing, r'diverged: the loss became non-finite at step \d+'),
    ('logits_float_indices', ['audit', f'--workdir={W}', '--logits={T}/mu.npz'], _logits('float'),
     r'indices'),
    ('logits_bad_views', ['audit', f'--workdir={W}', '--logits={T}/mu.npz'], _logits('views'),
     r'view'),
    ('train_other_seed', ['train', f'--workdir={W}', C, '--config.seed=3'], _nothing,
     r'other settings \(seed: 0 -> 3\)'),
    ('train_other_recipe', ['train', f'--workdir={W}', C, '--config.train.learning_rate=0.5'],
     _nothing, r'train.learning_rate'),
    ('train_other_config_file', ['train', f'--workdir={W}',
                                 C.replace(':tiny', ':local')], _nothing,
     r'other settings .*model_kwargs.hidden'),
    # 4. Integrity.
    ('flipped_weight_byte', ['audit', f'--workdir={W}', '--target=original'], _flip_byte,
     r'checksum|corrupt|differ'),
    # 9. A workdir remembers its configuration.
    ('unlearn_contradicts_workdir', ['unlearn', f'--workdir={W}', '--method=finetune',
                                     '--config.model_kwargs.hidden=(32,)'], _nothing,
     r'model_kwargs.hidden'),
    ('audit_contradicts_workdir', ['audit', f'--workdir={W}', '--target=retrain',
                                   '--config.split.forget_fraction=0.5'], _nothing,
     r'split.forget_fraction'),
    # Already handled before; kept so that they stay one clear line.
    ('unknown_command', ['frobnicate'], _nothing, r'unknown command'),
    ('unknown_method', ['unlearn', f'--workdir={W}', '--method=nosuch'], _nothing,
     r'nosuch'),
    ('hparam_no_equals', ['unlearn', f'--workdir={W}', '--method=finetune', '--hparam=lr'],
     _nothing, r'NAME=VALUE'),
    ('hparam_unknown', ['unlearn', f'--workdir={W}', '--method=finetune', '--hparam=bogus=1'],
     _nothing, r'bogus'),
    ('audit_no_target', ['audit', f'--workdir={W}'], _nothing, r'--target'),
    ('audit_missing_target', ['audit', f'--workdir={W}', '--target=unlearned/nosuch'], _nothing,
     r'no checkpoint'),
    ('audit_missing_logits', ['audit', f'--workdir={W}', '--logits={T}/nosuch.npz'], _nothing,
     r'does not exist'),
    ('unknown_dataset', ['train', '--workdir={T}/new', C, '--config.dataset=nosuch'], _nothing,
     r'nosuch'),
    ('missing_npz', ['train', '--workdir={T}/new', C, '--config.npz={T}/nosuch.npz'], _nothing,
     r'not found'),
    ('unknown_flag', ['train', '--workdir={T}/new', C, '--frobnicate'], _nothing,
     r'frobnicate'),
    ('unknown_optimizer', ['train', '--workdir={T}/new', C, '--config.train.optimizer=foo'],
     _nothing, r'optimizer'),
    ('unknown_model', ['train', '--workdir={T}/new', C, '--config.model=nosuch'], _nothing,
     r'unknown model'),
    ('forget_fraction_above_1', ['train', '--workdir={T}/new', C,
                                 '--config.split.forget_fraction=1.5'], _nothing,
     r'forget_fraction'),
    ('negative_lr', ['train', '--workdir={T}/new', C, '--config.train.learning_rate=-1'],
     _nothing, r'learning_rate'),
    ('positional_argument', ['train', '--workdir={T}/new', C, 'extra'], _nothing,
     r'unexpected arguments'),
    ('one_verifier', ['audit', f'--workdir={W}', '--target=retrain',
                      '--config.audit.num_verifiers=1'], _nothing, r'K >= 2'),
    ('unlearn_without_original', ['unlearn', '--workdir={T}/new', C, '--method=finetune'],
     _nothing, r'no original model'),
    ('data_show_unknown', ['data', 'show', 'nosuch'], _nothing, r'nosuch'),
    ('reference_missing', ['audit', f'--workdir={W}', '--target=retrain',
                           '--reference={T}/nosuch.npz'], _nothing, r'does not exist'),
    ('reference_bad_shape', ['audit', f'--workdir={W}', '--target=retrain',
                             '--reference={T}/ref.npz'],
     lambda t, w: np.savez(os.path.join(t, 'ref.npz'), x=np.zeros((5, 3)), y=np.zeros(5, int)),
     r'shape|x'),
]


# Errors that can only show once training runs: nothing but the new workdir's split is written.
STARTS_WORK = {'train_lr_1e30'}


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, template, tmp_path):
  name, args, setup, pattern = case
  t = str(tmp_path)
  w = os.path.join(t, 'w')
  shutil.copytree(template, w)
  setup(t, w)
  if name == 'workdir_unwritable' and os.path.exists('/sys/jaxaudit_w'):
    pytest.skip('/sys is writable here')
  args = [a.replace('{W}', w).replace('{T}', t) for a in args]
  before = tree_hash(t)
  r = cli(args, t)
  after = tree_hash(t)
  out = r.stdout + r.stderr
  errors = [l for l in r.stderr.splitlines() if 'error:' in l]
  assert r.returncode != 0, out
  assert 'Traceback' not in out, out
  assert len(errors) == 1, out
  assert re.search(pattern, errors[0]), errors[0]
  if name in STARTS_WORK:   # the run got as far as drawing the split of a new workdir
    new = os.path.join(t, 'new')
    saved = [os.path.relpath(os.path.join(d, f), new) for d, _, fs in os.walk(new) for f in fs]
    assert sorted(saved) == ['.jaxaudit', 'config.json', 'split.npz'], saved
    shutil.rmtree(new)
    after = tree_hash(t)
  assert before == after, f'{name} changed files under {t}:\n{out}'


def test_readonly_workdir_is_refused(template, tmp_path):
  """A workdir without write permission (meaningless for root, who may write anywhere)."""
  if os.geteuid() == 0:
    pytest.skip('root may write into a read-only directory')
  w = str(tmp_path / 'w')
  shutil.copytree(template, w)
  os.chmod(w, 0o555)
  try:
    r = cli(['unlearn', f'--workdir={w}', '--method=finetune'], str(tmp_path))
  finally:
    os.chmod(w, 0o755)
  assert r.returncode != 0 and 'not writable' in r.stderr, r.stderr


def test_case_count():
  assert len(CASES) >= 40
