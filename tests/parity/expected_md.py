"""Reads the expected official numbers from ``shared/.../EXPECTED.md``.

The numbers are derived from WOMD data, so they stay in the shared folder and
are parsed at test time rather than copied into the repository.
"""

import re

# EXPECTED.md row label -> (record part, field) of an official_metrics.py line.
_BUCKETS = {'kinematic': 'kinematic_metrics',
            'interactive': 'interactive_metrics',
            'map-based': 'map_based_metrics'}


def _cells(line: str) -> list[str]:
  return [c.strip().replace('**', '').strip()
          for c in line.strip().strip('|').split('|')]


def parse_tables(markdown: str) -> dict[str, list[list[str]]]:
  """Markdown tables keyed by the nearest heading above them."""
  tables, heading, rows = {}, None, []
  for line in markdown.splitlines() + ['']:
    if line.startswith('#'):
      heading = line.lstrip('#').strip()
    if line.startswith('|'):
      if not re.fullmatch(r'\|[\s\-:|]+\|', line.strip()):
        rows.append(_cells(line))
    elif rows:
      tables.setdefault(heading, rows)
      rows = []
  return tables


def expected_column(table: list[list[str]], column_prefix: str
                    ) -> dict[tuple[str, str], float | None]:
  """One column of an EXPECTED.md table as {(part, field): value}.

  ``None`` marks a field the package version does not have ('—').
  """
  header = table[0]
  (col,) = [i for i, h in enumerate(header) if h.startswith(column_prefix)]
  out = {}
  for row in table[1:]:
    label, cell = row[0], row[col]
    labels = [s.strip() for s in label.split('/')]
    values = [s.strip() for s in cell.split('/')]
    if label.startswith('bucket:'):
      labels = [s.strip() for s in label[len('bucket:'):].split('/')]
      keys = [('buckets', _BUCKETS[name]) for name in labels]
    elif label == 'ADE / minADE':
      keys = [('metrics', 'average_displacement_error'),
              ('metrics', 'min_average_displacement_error')]
    else:
      keys = [('metrics', label.split()[0])]
    assert len(keys) == len(values), (label, cell)
    for key, value in zip(keys, values):
      out[key] = None if value.startswith('—') else float(value.split()[0])
  return out


