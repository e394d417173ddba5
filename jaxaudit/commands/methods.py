"""`jaxaudit methods`: the unlearning methods, their families and hyper-parameters."""

from __future__ import annotations

import textwrap

from absl import flags

flags.DEFINE_bool('docs', False, 'Also print each method\'s description.')
FLAGS = flags.FLAGS


def main(argv):
  from jaxaudit.unlearn import list_methods
  del argv
  rows = list_methods()
  width = max(len(r.name) for r in rows)
  family = None
  for r in rows:
    if r.family != family:
      family = r.family
      print(f'\n{family}:')
    hp = ', '.join(f'{k}={v!r}' for k, v in r.defaults.items())
    print(f'  {r.name:<{width}}  {hp}')
    if FLAGS.docs and r.doc:
      print(textwrap.indent(textwrap.fill(' '.join(r.doc.split()), 90), ' ' * (width + 4)))
  print(f'\n{len(rows)} methods. Override with --hparam=name=value (repeatable).')
