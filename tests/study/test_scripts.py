"""The experiment scripts are thin: under 150 lines, no sys.path, importing only jaxaudit.

The scripts are read as text (never imported); each one's ``--help`` runs.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(REPO, 'experiments')
SCRIPTS = sorted(f for f in os.listdir(EXPERIMENTS) if f.endswith('.py'))
ALLOWED = {'jaxaudit', 'absl', 'ml_collections', '__future__'}


@pytest.mark.parametrize('name', SCRIPTS)
def test_script_is_thin(name):
  src = open(os.path.join(EXPERIMENTS, name), encoding='utf-8').read()
  assert len(src.splitlines()) < 150
  assert 'sys.path' not in src
  for node in ast.walk(ast.parse(src)):
    mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
            [node.module] if isinstance(node, ast.ImportFrom) else [])
    for mod in mods:
      top = mod.split('.')[0]
      assert top in ALLOWED or top in sys.stdlib_module_names, (name, mod)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in SCRIPTS if 'cli.run_script(main)' in open(
    os.path.join(EXPERIMENTS, n), encoding='utf-8').read()])
def test_script_help(name):
  """``--help`` prints the script's flags and exits 0 (jaxaudit.cli.run_script)."""
  proc = subprocess.run([sys.executable, os.path.join('experiments', name), '--help'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert '--' in proc.stdout
