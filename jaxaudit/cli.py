"""The `jaxaudit` command: `jaxaudit COMMAND [--flags]`.

Each command lives in ``jaxaudit.commands.COMMAND`` and defines its own absl
flags; only the chosen command's module is imported. ``jaxaudit --help``
lists the commands, ``jaxaudit COMMAND --help`` the command's own flags.

Every user error ends the process with exit code 1 (2 for bad flags) and one
line on stderr, ``jaxaudit COMMAND: error: ...`` — never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

COMMANDS = {
    'demo': 'train → unlearn (retrain, finetune, gradient_ascent) → audit, on digits',
    'train': 'train the original model M on D (and the retrain reference on Dr; --config.sisa.shards: SISA)',
    'unlearn': 'run an unlearning method on M and save Mu',
    'tune': 'search unlearning methods\' hyper-parameters against the retrain (Optuna, resumable)',
    'methods': 'list the unlearning methods, their families and hyper-parameters',
    'audit': 'audit an unlearned model: is it ignorant of Du?',
    'report': 'render a Markdown/HTML report from a results table',
    'data': 'import a local .npz into a TFDS data_dir, or show a data set',
}
HELP = ('-h', '--help', '-help', '--helpshort', 'help')
CONFIG_PREFIX = '--config.'


def usage() -> str:
  """The command list printed by ``jaxaudit --help``."""
  width = max(map(len, COMMANDS))
  lines = ['usage: jaxaudit COMMAND [--flags]   (jaxaudit COMMAND --help lists its flags)', '',
           'commands:']
  lines += [f'  {name:<{width}}  {doc}' for name, doc in COMMANDS.items()]
  return '\n'.join(lines)


def command_help(command: str, module) -> str:
  """The help of one command: its docstring and every flag it defines, with help text."""
  from absl import flags
  fv = flags.FLAGS
  mods = (module.__name__, 'jaxaudit.commands.common')
  own = []
  for mod in mods:
    for flag in fv.get_flags_for_module(mod):
      if flag not in own and not flag.name.startswith('config.'):
        own.append(flag)
  doc = (module.__doc__ or '').strip()
  lines = [f'usage: jaxaudit {command} [--flags]', '', doc, '', 'flags:']
  for flag in sorted(own, key=lambda f: f.name):
    default = flag.default if flag.name != 'config' else getattr(flag, 'default_as_str', '')
    lines.append(f'  --{flag.name}')
    text = ' '.join((flag.help or '').split())
    lines += textwrap.wrap(f'{text} (default: {default!r})' if default not in (None, '') and
                           flag.name != 'config' else text, 88,
                           initial_indent='      ', subsequent_indent='      ')
  if any(f.name == 'config' for f in own):
    lines += ['', 'Any config field can be set with --config.FIELD=VALUE (e.g. '
              '--config.train.epochs=5) and cleared with --config.FIELD=None. On an existing '
              'workdir, the configuration it was made with is the base.']
  return '\n'.join(lines)


def _split_config_args(args: list[str]) -> tuple[list[str], list[str]]:
  """Removes ``--config.PATH=None`` (a clear) from args; returns (args, cleared paths)."""
  kept, cleared = [], []
  for a in args:
    if a.startswith(CONFIG_PREFIX) and '=' in a and a.split('=', 1)[1] in ('None', 'none'):
      cleared.append(a[len(CONFIG_PREFIX):].split('=', 1)[0])
    else:
      kept.append(a)
  return kept, cleared


def _fail(command: str, message, code: int = 1, prefix: str = 'jaxaudit ') -> None:
  """Prints ``jaxaudit COMMAND: error: MESSAGE`` as one line and exits with ``code``."""
  message = ' '.join(str(message).split())
  print(f'{prefix}{command}: error: {message}', file=sys.stderr)
  raise SystemExit(code)


def _resolve_config(command: str, cleared: list[str]) -> None:
  """Applies the workdir's saved configuration and the command line's overrides."""
  from absl import flags
  from ml_collections import config_flags
  from jaxaudit import workdir as workdir_lib
  fv = flags.FLAGS
  if 'config' not in fv:
    return
  overrides = list(config_flags.get_override_values(fv['config']).keys())
  workdir = fv['workdir'].value if 'workdir' in fv else None
  workdir = workdir or getattr(sys.modules.get(f'jaxaudit.commands.{command}'),
                               'DEFAULT_WORKDIR', None)
  config = fv.config
  if workdir is None:
    for path in cleared:
      workdir_lib.set_field(config, path, None)
    return
  workdir_lib.check_workdir(workdir)
  fv['config'].value = workdir_lib.resolve_config(
      config, workdir, overrides=overrides, explicit_file=fv['config'].present,
      cleared=cleared, command=command,
      allow_changes=command == 'train' and 'overwrite' in fv and fv.overwrite)


def run(argv: list[str] | None = None) -> None:
  """Entry point of the ``jaxaudit`` console script."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in HELP:
    print(usage())
    raise SystemExit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    print(f'jaxaudit: error: unknown command {command!r}; commands: {", ".join(COMMANDS)} '
          '(jaxaudit --help)', file=sys.stderr)
    raise SystemExit(2)
  args, cleared = _split_config_args(argv[2:])
  # ml_collections reads the --config.X overrides from sys.argv.
  sys.argv = [f'jaxaudit {command}'] + args
  from jaxaudit.errors import JaxAuditError
  try:
    module = importlib.import_module(f'jaxaudit.commands.{command}')
  except JaxAuditError as e:
    _fail(command, e)
  if any(a in HELP for a in args):
    print(command_help(command, module))
    raise SystemExit(0)

  def before():
    _resolve_config(command, cleared)
    from jaxaudit.commands import common
    common.start_compilation_cache()   # computing commands: the persistent XLA cache

  run_guarded(f'jaxaudit {command}', module.main, sys.argv, before=before)


def run_guarded(name: str, main, argv: list[str], before=None) -> None:
  """``absl.app.run(main)`` where every user error is one line ``NAME: error: ...``.

  Flag errors exit 2; :class:`~jaxaudit.errors.JaxAuditError`, ``OSError`` on a
  user's path and ``MemoryError`` exit 1; other exceptions are bugs and keep
  their traceback. ``before`` runs after flag parsing, inside the guard.
  Experiment scripts call :func:`run_script`.
  """
  from absl import app, flags
  from jaxaudit.errors import JaxAuditError
  prog = name[len('jaxaudit '):] if name.startswith('jaxaudit ') else name

  def fail(message, code=1):
    _fail(prog, message, code, prefix='jaxaudit ' if name.startswith('jaxaudit ') else '')

  def parse_flags(full_argv):
    try:
      return flags.FLAGS(full_argv)
    except flags.Error as e:
      fail(e, 2)
    except JaxAuditError as e:
      fail(e)
    except (TypeError, ValueError, OverflowError) as e:   # a config file or override that fails
      fail(f'{type(e).__name__}: {e}', 2)

  def guarded(rest):
    from absl import logging
    logging.set_verbosity(logging.WARNING)   # keep Orbax's INFO lines out of the output
    try:
      from jaxaudit import distributed
      distributed.initialize_from_flags(log=lambda s: print(s, flush=True))   # before any JAX work
      if before is not None:
        before()
      return main(rest)
    except JaxAuditError as e:   # user errors: a clear message, no traceback
      fail(e)
    except OSError as e:   # a path the user gave: unreadable, unwritable, full disk
      where = f': {e.filename}' if getattr(e, 'filename', None) else ''
      fail(f'{e.strerror or type(e).__name__}{where}')
    except MemoryError:
      fail('out of memory; use a smaller batch_size or request')

  app.run(guarded, argv=argv, flags_parser=parse_flags)


def run_script(main) -> None:
  """Runs an experiment script's absl ``main`` under :func:`run_guarded`.

  ``--help`` (any of :data:`HELP`) prints the script's docstring and flags and
  exits 0 (absl's own help exits 1).
  """
  if any(a in HELP for a in sys.argv[1:]):
    from absl import app
    app.usage(shorthelp=True, writeto_stdout=True)
    raise SystemExit(0)
  run_guarded(os.path.basename(sys.argv[0]), main, sys.argv)


if __name__ == '__main__':
  run()
