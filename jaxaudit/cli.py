"""The `jaxaudit` command: `jaxaudit COMMAND [--flags]`.

Each command lives in ``jaxaudit.commands.COMMAND`` and defines its own absl
flags; only the chosen command's module is imported.
"""

from __future__ import annotations

import importlib
import sys

from absl import app

COMMANDS = {
    'demo': 'train → unlearn (retrain, finetune, gradient_ascent) → audit, on digits',
    'train': 'train the original model M on D (and the retrain reference on Dr; --config.sisa.shards: SISA)',
    'unlearn': 'run an unlearning method on M and save Mu',
    'methods': 'list the unlearning methods, their families and hyper-parameters',
    'audit': 'audit an unlearned model: is it ignorant of Du?',
    'report': 'render a Markdown/HTML report from a results table',
    'data': 'import a local .npz into a TFDS data_dir, or show a data set',
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ['usage: jaxaudit COMMAND [--flags]   (jaxaudit COMMAND --helpfull for flags)', '',
           'commands:']
  lines += [f'  {name:<{width}}  {doc}' for name, doc in COMMANDS.items()]
  return '\n'.join(lines)


def run(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    raise SystemExit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    print(f'jaxaudit: unknown command {command!r}\n\n{usage()}', file=sys.stderr)
    raise SystemExit(2)
  module = importlib.import_module(f'jaxaudit.commands.{command}')
  from jaxaudit.errors import JaxAuditError

  def main(args):
    from absl import logging
    logging.set_verbosity(logging.WARNING)   # keep Orbax's INFO lines out of the output
    try:
      return module.main(args)
    except JaxAuditError as e:   # user errors: a clear message, no traceback
      print(f'jaxaudit {command}: error: {e}', file=sys.stderr)
      raise SystemExit(1) from None

  app.run(main, argv=[f'jaxaudit {command}'] + argv[2:])


if __name__ == '__main__':
  run()
