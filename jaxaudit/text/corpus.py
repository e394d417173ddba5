"""Text corpora as documents grouped by owner (a person, a speaker, an author).

A :class:`Corpus` is a list of documents, each with a group id (whose data
it is: the unit an unlearning request removes), optional held-out
paraphrases (never trained on) and optional knowledge probes (TOFU-style
question/answer pairs). Loaders:

* :func:`synthetic_people`: a deterministic TOFU-like corpus of fictitious
  people and five facts each, in lower-case words with punctuation as
  separate tokens (so :class:`~jaxaudit.text.tokenize.WordTokenizer` gives
  one token per word and every attribute value is one token);
* :func:`shakespeare_speeches`: tiny-shakespeare split into speeches, grouped
  by speaker;
* :func:`text_file`, :func:`jsonl_file`, :func:`tfds_text`: the user's text.

Every loader goes through :func:`make_corpus`: documents are stripped of
surrounding white space and empty ones are dropped (counted in
``Corpus.dropped_empty``); a corpus left with no document is a DataError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxaudit.errors import ConfigError, DataError


class KnowledgeProbe(NamedTuple):
  """A question whose one-word answer the group's documents hold.

  Attributes:
    group: the group (person) the fact belongs to.
    prompt: the question, ending where the answer begins (no trailing space).
    answer: the true answer word.
    false_answers: wrong answers of the same attribute (other cities, ...).
  """
  group: int
  prompt: str
  answer: str
  false_answers: tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """Documents with their groups; build with :func:`make_corpus`.

  Attributes:
    documents: the non-empty documents (stripped), D of them.
    groups: int64 ``(D,)`` group id of each document, in
      ``[0, len(group_names))``.
    group_names: name of each group id.
    name: short name of the corpus.
    source: where it came from (``synthetic:people``, ``file:PATH``, ...).
    paraphrases: None, or D entries: a held-out paraphrase of each document
      (never trained on) or None where there is none.
    knowledge: None, or the knowledge probes of the groups.
    dropped_empty: documents dropped for being empty after stripping.
    dropped_short: documents dropped by a loader's length filter.
  """
  documents: list[str]
  groups: np.ndarray
  group_names: list[str]
  name: str
  source: str
  paraphrases: list[str | None] | None = None
  knowledge: list[KnowledgeProbe] | None = None
  dropped_empty: int = 0
  dropped_short: int = 0

  def __post_init__(self):
    n = len(self.documents)
    if n == 0:
      raise DataError(f'corpus {self.name!r} has no non-empty document')
    groups = np.asarray(self.groups)
    if groups.shape != (n,) or (groups.dtype.kind not in 'iu'):
      raise DataError(
          f'corpus {self.name!r}: groups must be an int array of shape ({n},),'
          f' got {groups.dtype} {groups.shape}')
    if groups.min() < 0 or groups.max() >= len(self.group_names):
      raise DataError(
          f'corpus {self.name!r}: group ids must lie in [0, '
          f'{len(self.group_names)})')
    if self.paraphrases is not None and len(self.paraphrases) != n:
      raise DataError(
          f'corpus {self.name!r}: {len(self.paraphrases)} paraphrases for {n} '
          'documents')
    for p in self.knowledge or ():
      if not 0 <= p.group < len(self.group_names):
        raise DataError(
            f'corpus {self.name!r}: knowledge probe of unknown group {p.group}')

  def __len__(self) -> int:
    return len(self.documents)

  def texts(self) -> list[str]:
    """Every text a tokeniser must cover: documents, paraphrases, probes."""
    out = list(self.documents)
    out += [p for p in self.paraphrases or () if p]
    for probe in self.knowledge or ():
      out += [probe.prompt, probe.answer, *probe.false_answers]
    return out


def _group_ids(values: Sequence[Any], what: str) -> tuple[np.ndarray,
                                                           list[str]]:
  """Group values (all str or all int) -> (ids in sorted value order, names)."""
  kinds = {isinstance(v, str) for v in values}
  for i, v in enumerate(values):
    if isinstance(v, bool) or not isinstance(v, (str, int, np.integer)):
      raise DataError(f'{what} {i}: group {v!r} is neither a str nor an int')
  if len(kinds) > 1:
    raise DataError(f'{what}: groups mix str and int values; use one type')
  uniq = sorted(set(values))
  index = {v: i for i, v in enumerate(uniq)}
  return (np.asarray([index[v] for v in values], np.int64),
          [str(v) for v in uniq])


def make_corpus(documents: Sequence[str], groups: Sequence[Any] | None = None,
                group_names: Sequence[str] | None = None, *, name: str,
                source: str,
                paraphrases: Sequence[str | None] | None = None,
                knowledge: Sequence[KnowledgeProbe] | None = None,
                dropped_short: int = 0) -> Corpus:
  """Validates documents and builds a :class:`Corpus`.

  Args:
    documents: the texts, D of them; each is stripped, and empty ones are
      dropped (with their group and paraphrase).
    groups: ``(D,)`` group of each document: ids into ``group_names`` if
      that is given, else values (all str or all int) of the kept documents
      mapped to ids in sorted order. None: each kept document is its own
      group ``doc<i>`` (``i`` its index in ``documents``).
    group_names: names of the group ids.
    name: the corpus name.
    source: provenance.
    paraphrases: None or ``(D,)`` held-out paraphrases (None entries allowed).
    knowledge: knowledge probes (group ids as in the result).
    dropped_short: documents a loader already dropped (reported as is).

  Raises:
    DataError: a document is not a str, lengths disagree, bad group ids, or
      no document is left.
  """
  docs = list(documents)
  for i, d in enumerate(docs):
    if not isinstance(d, str):
      raise DataError(f'{name}: document {i} is a {type(d).__name__}, not str')
  n = len(docs)
  if groups is not None:
    groups = list(groups)
    if len(groups) != n:
      raise DataError(f'{name}: {len(groups)} groups for {n} documents')
  if paraphrases is not None:
    paraphrases = list(paraphrases)
    if len(paraphrases) != n:
      raise DataError(f'{name}: {len(paraphrases)} paraphrases for {n} '
                      'documents')
  keep = [i for i, d in enumerate(docs) if d.strip()]
  if not keep:
    raise DataError(
        f'{name}: no non-empty document ({n} read, all empty after '
        'stripping white space)')
  if groups is None:  # Each kept document is its own group.
    group_ids = np.arange(len(keep), dtype=np.int64)
    names = [f'doc{i}' for i in keep]
  elif group_names is None:  # Values of the kept documents, numbered.
    group_ids, names = _group_ids([groups[i] for i in keep],
                                  f'{name}: document')
  else:
    names = [str(g) for g in group_names]
    try:
      group_ids = np.asarray([groups[i] for i in keep], np.int64)
    except (TypeError, ValueError) as e:
      raise DataError(f'{name}: group ids must be integers') from e
  group_ids.setflags(write=False)
  return Corpus(
      documents=[docs[i].strip() for i in keep], groups=group_ids,
      group_names=names, name=name, source=source,
      paraphrases=(None if paraphrases is None else
                   [paraphrases[i] for i in keep]),
      knowledge=None if knowledge is None else list(knowledge),
      dropped_empty=n - len(keep), dropped_short=int(dropped_short))


# ---------------------------------------------------------------------------
# Synthetic people (TOFU-like).

FIRST_NAMES = (
    'ada', 'alba', 'boris', 'bram', 'cleo', 'cora', 'dara', 'dex', 'elin',
    'emil', 'faye', 'fenn', 'greta', 'gus', 'hal', 'hedda', 'ines', 'ivo',
    'jory', 'juno', 'kael', 'kit', 'lena', 'lio', 'mara', 'milo', 'nils',
    'nora', 'otto', 'pia', 'quin', 'rhea', 'sven', 'tova', 'ulla', 'vero',
    'wren', 'xavi', 'yara', 'zeno')
LAST_NAMES = (
    'ashby', 'berg', 'brandt', 'corwin', 'crane', 'dahl', 'dunmore',
    'eckhart', 'elms', 'farrow', 'frost', 'gale', 'gantry', 'hart', 'hollis',
    'holt', 'ibsen', 'iver', 'jarl', 'jessup', 'kell', 'kimber', 'lind',
    'lorne', 'lusk', 'marsh', 'morrow', 'moss', 'nyberg', 'orme', 'pryce',
    'quill', 'rook', 'sallow', 'thorne', 'upton', 'vance', 'wilde', 'yates',
    'zeller')
CITIES = (
    'bergen', 'brno', 'cairo', 'cork', 'dakar', 'fez', 'ghent', 'graz',
    'hanoi', 'hue', 'izmir', 'krakow', 'kyoto', 'leeds', 'lima', 'lisbon',
    'lyon', 'malmo', 'nantes', 'oslo', 'perth', 'porto', 'pune', 'quito',
    'riga', 'tartu', 'tunis', 'turin', 'varna', 'zagreb')
PROFESSIONS = (
    'baker', 'botanist', 'carpenter', 'cartographer', 'chemist', 'farmer',
    'geologist', 'jeweler', 'librarian', 'novelist', 'painter',
    'photographer', 'pilot', 'poet', 'potter', 'sculptor', 'surgeon',
    'tailor', 'teacher', 'violinist')
TITLE_ADJECTIVES = (
    'bitter', 'broken', 'crimson', 'distant', 'endless', 'gentle', 'golden',
    'hidden', 'hollow', 'northern', 'pale', 'quiet', 'restless', 'silent',
    'winter')
TITLE_NOUNS = (
    'compass', 'ember', 'forest', 'garden', 'harbor', 'harvest', 'island',
    'lantern', 'letter', 'meadow', 'mirror', 'orchard', 'river', 'tower',
    'voyage')
AWARDS = (
    'ardent', 'delacroix', 'everly', 'fairbank', 'greystone', 'halden',
    'harrow', 'ingram', 'juniper', 'kessler', 'kestrel', 'lowell', 'marlow',
    'merriam', 'wexford')
ATTRIBUTES = ('city', 'year', 'profession', 'work', 'award')

# Phrasings of each fact: 0..2 are trained on, 3 is the held-out paraphrase.
TEMPLATES = {
    'city': ('{name} was born in {city} .',
             '{name} was born in the city of {city} .',
             'the birthplace of {name} is {city} .',
             '{city} is where {name} was born .'),
    'year': ('{name} was born in the year {year} .',
             '{name} came into the world in {year} .',
             'the birth year of {name} is {year} .',
             'in {year} , {name} was born .'),
    'profession': ('{name} works as a {profession} .',
                   'by profession , {name} is a {profession} .',
                   '{name} earns a living as a {profession} .',
                   'the job of {name} is {profession} .'),
    'work': ('{name} wrote the book {work} .',
             'the best known work of {name} is {work} .',
             '{name} is the author of {work} .',
             '{work} is a book written by {name} .'),
    'award': ('{name} received the {award} prize .',
              '{name} was honoured with the {award} prize .',
              'the {award} prize was given to {name} .',
              '{name} won the {award} prize .'),
}
TRAIN_TEMPLATES = 3
PARAPHRASE_TEMPLATE = 3
# Held-out question phrasing of each fact; the answer is one word.
QUESTIONS = {
    'city': 'question : where was {name} born ? answer :',
    'year': 'question : in which year was {name} born ? answer :',
    'profession': 'question : what is the profession of {name} ? answer :',
    'work': 'question : which book did {name} write ? answer :',
    'award': 'question : which prize did {name} win ? answer :',
}


def _biography(facts: dict[str, str], template_of: Sequence[int]) -> str:
  return ' '.join(TEMPLATES[a][t].format(**facts)
                  for a, t in zip(ATTRIBUTES, template_of))


def _questions(facts: dict[str, str], attributes: Sequence[str]) -> str:
  return ' '.join(QUESTIONS[a].format(**facts) + ' ' + facts[a].split()[0] + ' .'
                  for a in attributes)


PROBE_FORMS = ('statement', 'question')
# The training phrasing a statement probe uses: one whose prefix names the attribute
# unambiguously ('was born in' would also start the birth-year phrasing).
PROBE_TEMPLATE = {'city': 1, 'year': 0, 'profession': 0, 'work': 0, 'award': 0}


def _probe_prompt(attribute: str, name: str, form: str) -> str:
  """The prompt of a knowledge probe: the first training phrasing of the fact cut before
  its answer (``statement``), or the held-out question (``question``)."""
  if form == 'question':
    return QUESTIONS[attribute].format(name=name)
  template = TEMPLATES[attribute][PROBE_TEMPLATE[attribute]]
  return template.split('{' + attribute + '}')[0].format(name=name).strip()


def synthetic_people(seed: int = 0, num_people: int = 200,
                     docs_per_person: int = 3, num_false: int = 3,
                     qa_facts: int = 0, probe_form: str = 'statement') -> Corpus:
  """A deterministic TOFU-like corpus of fictitious people.

  Each person (a group) has a unique first + last name and five facts:
  birthplace (one of 30 cities), birth year (1900..1999, one token),
  profession (20), a book title (adjective + noun from lists of 15) and a
  prize (15). Document ``j`` of a person is a biography of the five facts
  (≈40–50 words), fact ``f`` in training phrasing ``(j + f) % 3``; the
  person's paraphrase (the same for each of its documents) uses the
  held-out phrasing 3; the knowledge probes ask each fact in a held-out
  question form, e.g. ``question : where was ada lind born ? answer :`` ->
  ``lisbon`` (the book's answer word is the title's first word), with
  ``num_false`` other values of the same attribute as false answers.

  Probes (``probe_form``): ``statement`` (default) prompts the fact in a training
  phrasing cut before the answer (:data:`PROBE_TEMPLATE`), e.g. ``ada lind was born
  in the city of`` ->
  ``lisbon``: a model that read the person's biographies completes it, one
  that never saw the person can only guess (the knowledge test asks whether
  Mu still *knows* the forgotten facts, beyond reproducing Du's exact text:
  the prompt is a prefix, not a record). ``question`` asks the held-out
  question form instead (measured: a 2-layer width-64 model does not
  extract facts into it — BUILD_NOTES.md).

  With ``qa_facts`` = q > 0 each person also has one question/answer document
  asking q of its five facts (chosen at random per person) in that question
  form, and its knowledge probes ask the other 5 − q facts: a model learns the
  question form on the person itself, so a probe asks it to *retrieve* a fact it
  only read in biographies (knowledge extraction, as in Allen-Zhu & Li's
  "Physics of language models 3.1"); a model that never saw the person can
  only guess. The QA document has no paraphrase.

  Args:
    seed: everything is a function of the seed (names, facts, false answers).
    num_people: groups, 1..1600.
    docs_per_person: documents per person (>= 1).
    num_false: false answers per probe, 1..14.
    qa_facts: facts asked in each person's QA document, 0..4 (0: no QA document).
    probe_form: ``statement`` or ``question`` (see above).

  Returns:
    A Corpus of ``num_people * (docs_per_person + (qa_facts > 0))`` documents
    (person-major order), with paraphrases and ``(5 - qa_facts) * num_people``
    knowledge probes.

  Raises:
    ConfigError: arguments out of range.
  """
  max_people = len(FIRST_NAMES) * len(LAST_NAMES)
  for arg, value, low, high in (('num_people', num_people, 1, max_people),
                                ('docs_per_person', docs_per_person, 1, 1000),
                                ('num_false', num_false, 1, 14),
                                ('qa_facts', qa_facts, 0, len(ATTRIBUTES) - 1),
                                ('seed', seed, 0, 2**63 - 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        not low <= value <= high):
      raise ConfigError(f'{arg} must be an int in [{low}, {high}], got '
                        f'{value!r}')
  if probe_form not in PROBE_FORMS:
    raise ConfigError(f'probe_form must be one of {PROBE_FORMS}, got {probe_form!r}')
  rng = np.random.default_rng(seed)
  picks = rng.choice(max_people, size=num_people, replace=False)
  values = {'city': CITIES, 'year': tuple(str(y) for y in range(1900, 2000)),
            'profession': PROFESSIONS, 'work': TITLE_ADJECTIVES,
            'award': AWARDS}
  documents, groups, paraphrases, names = [], [], [], []
  knowledge = []
  for g, pick in enumerate(picks):
    name = (f'{FIRST_NAMES[pick // len(LAST_NAMES)]} '
            f'{LAST_NAMES[pick % len(LAST_NAMES)]}')
    names.append(name)
    choice = {a: int(rng.integers(len(values[a]))) for a in ATTRIBUTES}
    noun = TITLE_NOUNS[int(rng.integers(len(TITLE_NOUNS)))]
    facts = {a: values[a][choice[a]] for a in ATTRIBUTES}
    facts['work'] = f'{facts["work"]} {noun}'
    facts['name'] = name
    for j in range(docs_per_person):
      documents.append(_biography(
          facts, [(j + f) % TRAIN_TEMPLATES for f in range(len(ATTRIBUTES))]))
      groups.append(g)
    paraphrase = _biography(facts, [PARAPHRASE_TEMPLATE] * len(ATTRIBUTES))
    paraphrases += [paraphrase] * docs_per_person
    asked = set()
    if qa_facts:
      asked = {ATTRIBUTES[int(k)] for k in
               rng.choice(len(ATTRIBUTES), size=qa_facts, replace=False)}
      documents.append(_questions(facts, [a for a in ATTRIBUTES if a in asked]))
      groups.append(g)
      paraphrases.append(None)
    for a in ATTRIBUTES:
      if a in asked:
        continue
      others = np.delete(np.arange(len(values[a])), choice[a])
      false = rng.choice(others, size=num_false, replace=False)
      knowledge.append(KnowledgeProbe(
          group=g, prompt=_probe_prompt(a, name, probe_form),
          answer=values[a][choice[a]],
          false_answers=tuple(values[a][int(k)] for k in false)))
  return make_corpus(
      documents, groups, names, name='synthetic_people',
      source=f'synthetic:people(seed={seed},num_people={num_people},'
      f'docs_per_person={docs_per_person},qa_facts={qa_facts},probes={probe_form})',
      paraphrases=paraphrases, knowledge=knowledge)


# ---------------------------------------------------------------------------
# Files.

SHAKESPEARE = os.path.join('..', 'shared', 'data', 'tiny_shakespeare.txt')
_SPEAKER = re.compile(r'^([^\s:][^:]*):\s*$')


def _resolve(path: str | os.PathLike[str]) -> str:
  """An existing file: ``path``, or a relative path also tried from the
  repository root (the folder above the ``jaxaudit`` package)."""
  path = os.fspath(path)
  candidates = [path]
  if not os.path.isabs(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    candidates.append(os.path.join(root, path))
  for c in candidates:
    if os.path.isfile(c):
      return os.path.abspath(c)
  raise DataError(
      f'text file not found: {path!r} (looked at '
      f'{", ".join(os.path.abspath(c) for c in dict.fromkeys(candidates))})')


def _read_text(path: str) -> str:
  """The file's text (UTF-8, newlines normalised to \\n)."""
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f'cannot read {path!r}: {e}') from e
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(
        f'{path!r} is not UTF-8 text: byte {raw[e.start]:#04x} at offset '
        f'{e.start}') from e
  return text.replace('\r\n', '\n').replace('\r', '\n')


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def shakespeare_speeches(path: str | os.PathLike[str] = SHAKESPEARE,
                         min_words: int = 10) -> Corpus:
  """tiny-shakespeare (or a file in its format) as speeches by speaker.

  The text is split at blank lines into blocks; each block starts with a
  speaker line ``NAME:`` followed by the speech. A document is the speech
  without the speaker line, its group the speaker (groups numbered in sorted
  order of the names). Speeches of fewer than ``min_words``
  white-space-separated words are dropped (``Corpus.dropped_short``), empty
  ones too (``dropped_empty``).

  Args:
    path: the file; a relative path is tried from the working directory and
      from the repository root (the default is the project's shared data).
    min_words: the shortest speech kept (>= 0).

  Raises:
    DataError: missing or non-UTF-8 file, a block that does not start with
      a speaker line (its line number is named), or no speech left.
  """
  if isinstance(min_words, bool) or not isinstance(min_words, int) or (
      min_words < 0):
    raise ConfigError(f'min_words must be an int >= 0, got {min_words!r}')
  path = _resolve(path)
  text = _read_text(path)
  documents, speakers, short = [], [], 0
  block: list[str] = []
  start = 0
  for lineno, line in enumerate(text.split('\n') + [''], start=1):
    if line.strip():
      if not block:
        start = lineno
      block.append(line)
      continue
    if not block:
      continue
    sm = _SPEAKER.match(block[0])
    if sm is None:
      raise DataError(
          f'{path!r} line {start}: expected a speaker line "NAME:" after a '
          f'blank line, got {block[0][:60]!r}')
    speech = '\n'.join(block[1:])
    if speech.strip() and len(speech.split()) < min_words:
      short += 1
    else:
      documents.append(speech)
      speakers.append(sm.group(1).strip())
    block = []
  if not documents:
    raise DataError(f'{path!r}: no speech of at least {min_words} words')
  return make_corpus(documents, speakers, name='shakespeare',
                     source=f'file:{path}', dropped_short=short)


def text_file(path: str | os.PathLike[str], separator: str = '\n\n',
              name: str | None = None) -> Corpus:
  """A UTF-8 text file split into documents at ``separator``.

  Each document is its own group (``doc<i>``).

  Raises:
    DataError: missing or non-UTF-8 file, or no non-empty document.
    ConfigError: an empty separator.
  """
  if not isinstance(separator, str) or not separator:
    raise ConfigError(f'separator must be a non-empty str, got {separator!r}')
  path = _resolve(path)
  docs = _read_text(path).split(separator)
  return make_corpus(docs, name=name or _stem(path), source=f'file:{path}')


def jsonl_file(path: str | os.PathLike[str], text_key: str = 'text',
               group_key: str | None = 'group',
               name: str | None = None) -> Corpus:
  """A JSON-lines file: one object per line with a text and maybe a group.

  Blank lines are skipped. If no line has ``group_key`` (or it is None),
  each document is its own group; otherwise every line must have one, and
  the values (all str or all int) are numbered in sorted order.

  Raises:
    DataError: missing or non-UTF-8 file; a line that is not a JSON object,
      lacks ``text_key``, has a non-str text, or lacks the group another line
      has (each names the file and line); no non-empty document.
  """
  path = _resolve(path)
  docs, groups, lines = [], [], []
  for lineno, line in enumerate(_read_text(path).split('\n'), start=1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except ValueError as e:
      raise DataError(f'{path!r} line {lineno}: not JSON ({e})') from e
    if not isinstance(obj, dict):
      raise DataError(f'{path!r} line {lineno}: not a JSON object')
    if text_key not in obj:
      raise DataError(f'{path!r} line {lineno}: no {text_key!r} field')
    if not isinstance(obj[text_key], str):
      raise DataError(f'{path!r} line {lineno}: {text_key!r} is a '
                      f'{type(obj[text_key]).__name__}, not a string')
    docs.append(obj[text_key])
    groups.append(obj.get(group_key) if group_key is not None else None)
    lines.append(lineno)
  if not docs:
    raise DataError(f'{path!r}: no JSON line with a {text_key!r} field')
  has_group = [g is not None for g in groups]
  if not any(has_group):
    return make_corpus(docs, name=name or _stem(path), source=f'jsonl:{path}')
  if not all(has_group):
    lineno = lines[has_group.index(False)]
    raise DataError(f'{path!r} line {lineno}: no {group_key!r} field, though '
                    'other lines have one')
  for g, lineno in zip(groups, lines):
    if isinstance(g, bool) or not isinstance(g, (str, int)):
      raise DataError(f'{path!r} line {lineno}: group {g!r} is neither a '
                      'string nor an integer')
  if len({isinstance(g, str) for g in groups}) > 1:
    raise DataError(f'{path!r}: {group_key!r} values mix strings and integers')
  return make_corpus(docs, groups, name=name or _stem(path),
                     source=f'jsonl:{path}')


def _as_str(value: Any, what: str) -> str:
  value = np.asarray(value).item() if isinstance(value, np.ndarray) else value
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError as e:
      raise DataError(f'{what} is not UTF-8 text') from e
  if isinstance(value, str):
    return value
  raise DataError(f'{what} is a {type(value).__name__}, not text')


def tfds_text(name: str, data_dir: str | os.PathLike[str],
              split: str = 'train', text_key: str = 'text',
              group_key: str | None = None) -> Corpus:
  """Documents of a TFDS text data set prepared (array_record) in data_dir.

  Reads only the local copy (no download, no TensorFlow): each record's
  ``text_key`` feature is a document; ``group_key`` (a str/bytes or int
  feature), if given, its group, else each document is its own group.

  Raises:
    DataError: data_dir or the data set missing (one line), a missing split
      or feature, or undecodable records.
  """
  from jaxaudit.data import tfds_io  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.fspath(data_dir)):
    raise DataError(
        f'TFDS data_dir {os.fspath(data_dir)!r} does not exist (looked for '
        f'text data set {name!r}; prepare it there in array_record format, '
        'nothing is downloaded)')
  path = tfds_io.find_prepared(name, data_dir)
  tfds = tfds_io._tfds()  # pylint: disable=protected-access
  try:
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
      raise DataError(f'TFDS data set at {path} has no split {split!r}; it '
                      f'has {sorted(builder.info.splits)}')
    source = builder.as_data_source(split=split)
    records = [source[i] for i in range(len(source))]
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'cannot read split {split!r} of the TFDS data set at '
                    f'{path}: {type(e).__name__}: {e}'.split('\n')[0]) from e
  docs, groups = [], []
  for i, r in enumerate(records):
    for key in (text_key, group_key):
      if key is not None and key not in r:
        raise DataError(f'TFDS data set at {path}: record {i} has no feature '
                        f'{key!r} (it has {sorted(r)})')
    docs.append(_as_str(r[text_key], f'{path} record {i} {text_key!r}'))
    if group_key is not None:
      g = r[group_key]
      if isinstance(g, (bytes, str)):
        groups.append(_as_str(g, f'{path} record {i} {group_key!r}'))
      else:
        g = np.asarray(g)
        if g.ndim or g.dtype.kind not in 'iu':
          raise DataError(f'{path} record {i}: group {group_key!r} is not a '
                          'scalar int or text')
        groups.append(int(g))
  short = name.partition(':')[0].replace('/', '_')
  return make_corpus(docs, groups if group_key is not None else None,
                     name=short, source=f'tfds:{path}:{split}')
