"""Safe writes: the marker, refusal to replace what jaxaudit did not write, names."""

import json
import os

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from jaxaudit import io_utils
from jaxaudit.errors import OutputError


def _write(tmp, name='out', content=b'new'):
  d = io_utils.temp_sibling(os.path.join(tmp, name))
  with open(os.path.join(d, 'f.txt'), 'wb') as f:
    f.write(content)
  return d


def test_replace_dir_marks_and_replaces_its_own(tmp_path):
  out = str(tmp_path / 'out')
  io_utils.replace_dir(_write(str(tmp_path), content=b'one'), out)
  assert io_utils.written_by_jaxaudit(out)
  with open(os.path.join(out, io_utils.MARKER)) as f:
    assert json.load(f)['written_by'] == 'jaxaudit'
  io_utils.replace_dir(_write(str(tmp_path), content=b'two'), out)
  assert open(os.path.join(out, 'f.txt'), 'rb').read() == b'two'
  assert sorted(os.listdir(tmp_path)) == ['out']   # no temporary directory left behind


def test_replace_dir_refuses_a_user_directory(tmp_path):
  user = tmp_path / 'mine'
  user.mkdir()
  (user / 'thesis.txt').write_text('irreplaceable')
  tmp = _write(str(tmp_path), 'mine')
  with pytest.raises(OutputError, match='not written by jaxaudit'):
    io_utils.replace_dir(tmp, str(user))
  assert (user / 'thesis.txt').read_text() == 'irreplaceable'
  io_utils.replace_dir(tmp, str(user), overwrite=True)   # the user's explicit --overwrite
  assert not (user / 'thesis.txt').exists()


def test_files_and_links_are_never_replaced(tmp_path):
  f = tmp_path / 'file'
  f.write_text('x')
  link = tmp_path / 'link'
  other = tmp_path / 'other'
  other.mkdir()
  io_utils.mark(str(other), 'test')
  link.symlink_to(other)
  for p in (f, link):
    with pytest.raises(OutputError, match='not a directory'):
      io_utils.check_replaceable(str(p), overwrite=True)


def test_legacy_checkpoint_and_report_count_as_ours(tmp_path):
  ck = tmp_path / 'ck'
  ck.mkdir()
  (ck / 'meta.json').write_text(json.dumps({'jaxaudit_version': '0.1.0'}))
  rep = tmp_path / 'rep'
  rep.mkdir()
  (rep / 'report.json').write_text(json.dumps({'decision': 'forgotten'}))
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'meta.json').write_text('{"model": "mine"}')
  assert io_utils.written_by_jaxaudit(str(ck)) and io_utils.written_by_jaxaudit(str(rep))
  assert not io_utils.written_by_jaxaudit(str(other))


def test_remove_dir_refuses_other_directories(tmp_path):
  d = tmp_path / 'd'
  d.mkdir()
  with pytest.raises(OutputError):
    io_utils.remove_dir(str(d))
  io_utils.mark(str(d), 'test')
  io_utils.remove_dir(str(d))
  assert not d.exists()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_check_name_accepts_only_one_safe_component(name):
  ok = (bool(name) and len(name) <= 128 and name not in ('.', '..')
        and all(c.isascii() and (c.isalnum() or c in '_-.') for c in name))
  if ok:
    assert io_utils.check_name(name) == name
    assert os.path.dirname(os.path.join('/root', name)) == '/root'
  else:
    with pytest.raises(OutputError):
      io_utils.check_name(name)


def test_check_path_refuses_non_utf8_and_nul():
  with pytest.raises(OutputError, match='UTF-8'):
    io_utils.check_path('dir/\udcff')
  with pytest.raises(OutputError, match='NUL'):
    io_utils.check_path('a\x00b')


def test_check_writable_dir(tmp_path):
  f = tmp_path / 'f'
  f.write_text('x')
  with pytest.raises(OutputError, match='not a directory'):
    io_utils.check_writable_dir(str(f))
  with pytest.raises(OutputError, match='is a file'):
    io_utils.check_writable_dir(str(f / 'sub'))
  assert io_utils.check_writable_dir(str(tmp_path / 'new' / 'deeper'))
  assert not (tmp_path / 'new').exists()   # checking creates nothing
