"""Every ```python block of README.md runs (each in a fresh interpreter and working directory)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')


def python_blocks(text: str) -> list[str]:
  """The bodies of the fenced ```python blocks of a Markdown text, in order."""
  return re.findall(r'^```python[ \t]*\n(.*?)^```[ \t]*$', text, flags=re.M | re.S)


BLOCKS = python_blocks(open(README, encoding='utf-8').read())


def test_readme_has_python_blocks():
  assert len(BLOCKS) >= 2
  assert python_blocks('x\n```python\nprint(1)\n```\n```\nnot python\n```\n') == ['print(1)\n']


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.setdefault('JAX_PLATFORMS', 'cpu')
  res = subprocess.run([sys.executable, '-c', BLOCKS[index]], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
  assert res.returncode == 0, (f'README.md python block {index + 1} raised:\n{BLOCKS[index]}\n'
                               f'--- stderr ---\n{res.stderr[-4000:]}')
