"""`jaxaudit report`: render a study's results table as Markdown + HTML with plots.

  jaxaudit report --results=runs/sweep_local/results.jsonl,runs/fake_local/fake_results.jsonl \
      --out=docs/example_report

Reads the JSON-lines rows of ``experiments/sweep.py`` (and of
``experiments/fake_unlearning.py``) and writes OUT/report.md, OUT/report.html
(self-contained) and the plots, replacing OUT atomically; an existing OUT is
replaced only if jaxaudit wrote it (or with --overwrite).
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS
# Guarded: other command modules define --out too; only one is imported by the CLI, but a
# process that imports several (tests) must not fail on a duplicate definition.
if 'results' not in FLAGS:
  flags.DEFINE_list('results', None, 'Results table(s) (JSON lines), comma-separated.')
if 'out' not in FLAGS:
  flags.DEFINE_string('out', None, 'Output directory of the report.')
if 'title' not in FLAGS:
  flags.DEFINE_string('title', 'jaxaudit study report', 'Title of the report.')
if 'overwrite' not in FLAGS:
  flags.DEFINE_bool('overwrite', False, 'Replace --out even if jaxaudit did not write it.')


def main(argv):
  from jaxaudit.errors import ConfigError
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {argv[1:]}')
  from jaxaudit.report import render_report
  if not FLAGS.results or not FLAGS.out:
    raise ConfigError('give --results=FILE[,FILE...] and --out=DIR')
  out = render_report(FLAGS.results, FLAGS.out, title=FLAGS.title, overwrite=FLAGS.overwrite)
  print(f'report: {out}/report.md and {out}/report.html')
