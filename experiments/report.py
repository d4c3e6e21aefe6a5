"""The main job's report: ``WORKDIR/report/index.html`` and ``report.md``.

Everything here reads what the stages wrote into the workdir (results
tables, ``metrics.jsonl`` curves, pictures) and renders it; the pictures
that need a model (the ranking of one scenario's rollouts, the before /
after animation) are made by ``experiments.stages.stage_report`` and passed
in by file name. Images are copied into the report folder, so the folder is
self-contained and can be zipped or served as is.
"""

from __future__ import annotations

import html
import json
import os
import pathlib
import shutil

from prefalign import fileio

_METRICS = (('metametric', 'realism', '{:.4f}'),
            ('kinematic', 'kinematic', '{:.3f}'),
            ('interactive', 'interactive', '{:.3f}'),
            ('map_based', 'map-based', '{:.3f}'),
            ('min_average_displacement_error', 'minADE (m)', '{:.2f}'),
            ('simulated_collision_rate', 'collision rate', '{:.3f}'),
            ('simulated_offroad_rate', 'off-road rate', '{:.3f}'))


def read_jsonl(path: pathlib.Path) -> list[dict]:
  """Rows of a metrics.jsonl file ([] when it does not exist)."""
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def plot_curves(workdir: pathlib.Path, methods: list[str],
                path: pathlib.Path) -> str | None:
  """Pre-training and alignment curves in one figure; None without data."""
  pre = read_jsonl(workdir / 'pretrain' / 'metrics.jsonl')
  runs = {m: read_jsonl(workdir / 'compare' / m / 'metrics.jsonl')
          for m in methods}
  runs = {m: rows for m, rows in runs.items() if rows}
  if not pre and not runs:
    return None
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), layout='constrained')
  ax = axes[0]
  train = [r for r in pre if r['split'] == 'train']
  if train:
    ax.plot([r['step'] for r in train], [r['loss'] for r in train],
            label='train', color='#555555')
  for split in sorted({r['split'] for r in pre if r['split'] != 'train'}):
    rows = [r for r in pre if r['split'] == split]
    ax.plot([r['step'] for r in rows], [r['loss'] for r in rows], 'o-',
            label=split.removeprefix('eval/'))
    if rows and 'unigram_loss' in rows[-1]:
      ax.axhline(rows[-1]['unigram_loss'], ls=':', color='#999999', lw=1)
  ax.set(title='pre-training: next-token loss (dotted: unigram)',
         xlabel='step', ylabel='nats / token')
  panels = (('train', 'loss', 'alignment: training loss'),
            ('eval/heldout', 'accuracy', 'held-out pair accuracy'),
            ('eval/kl', 'kl_per_token', 'KL(policy || reference) / token'))
  for ax, (split, key, title) in zip(axes[1:], panels):
    for method, rows in runs.items():
      rows = [r for r in rows if r['split'] == split and key in r]
      if rows:
        ax.plot([r['step'] for r in rows], [r[key] for r in rows],
                'o-' if split != 'train' else '-', label=method, ms=3)
    ax.set(title=title, xlabel='step')
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fileio.save_figure(fig, path, dpi=100)
  plt.close(fig)
  return path.name


def _cell(b: dict | None, fmt: str) -> str:
  if not b or not b.get('n'):
    return '-'
  lo, hi = b['ci']
  return f'{fmt.format(b["mean"])} [{fmt.format(lo)}, {fmt.format(hi)}]'


def _signed(b: dict | None) -> str:
  if not b or not b.get('n'):
    return '-'
  lo, hi = b['ci']
  return f'{b["mean"]:+.4f} [{lo:+.4f}, {hi:+.4f}]'


def results_tables(results: dict) -> list[tuple[str, list[str],
                                                 list[list[str]]]]:
  """(title, header, rows) per evaluation set of compare/results.json."""
  tables = []
  for set_name, by_method in results.items():
    if set_name in ('runs', 'scaling'):
      continue
    n = by_method.get('reference', {}).get('metrics', {}).get(
        'metametric', {}).get('n', 0)
    header = (['model'] + [label for _, label, _ in _METRICS] +
              ['realism minus reference (paired)', 'held-out pair accuracy',
               'KL / token'])
    rows = []
    for method, row in by_method.items():
      m = row['metrics']
      acc, kl = row.get('heldout_accuracy'), row.get('kl')
      rows.append(
          [method] + [_cell(m.get(k), fmt) for k, _, fmt in _METRICS] +
          ['-' if method == 'reference' else _signed(
              row.get('diff_vs_reference')),
           '-' if acc is None else f'{acc:.3f}',
           '-' if kl is None else f'{kl:.4f}'])
    tables.append((f'{set_name} ({n} held-out scenarios)', header, rows))
  return tables


def verdict(results: dict, main: str) -> list[str]:
  """Plain sentences on what the paired differences show."""
  out = []
  for set_name, by_method in results.items():
    if set_name in ('runs', 'scaling') or main not in by_method:
      continue
    for method, row in by_method.items():
      if method == 'reference':
        continue
      d = row.get('diff_vs_reference') or {}
      if not d.get('n'):
        continue
      lo, hi = d['ci']
      if lo > 0:
        what = 'better than the reference (the 95 % CI excludes 0)'
      elif hi < 0:
        what = 'worse than the reference (the 95 % CI excludes 0)'
      else:
        what = ('not distinguishable from the reference at this budget '
                '(the 95 % CI spans 0)')
      out.append(f'{set_name}: {method} {d["mean"]:+.4f} realism, {what}.')
  return out


def copy_figure(src: os.PathLike | None, out: pathlib.Path,
                name: str | None = None) -> str | None:
  """Copies an image into the report folder: its name there, or None when
  there is no such image (a figure the run did not make)."""
  if not src or not pathlib.Path(src).exists():
    return None
  dst = out / (name or pathlib.Path(src).name)
  if pathlib.Path(src).resolve() != dst.resolve():
    shutil.copyfile(src, dst)
  return dst.name


def write(out: pathlib.Path, *, title: str, intro: list[str],
          results: dict, main: str, stage_lines: list[str],
          figures: list[tuple[str, str | None, str]]) -> dict[str, str]:
  """Writes index.html and report.md into ``out``.

  Args:
    out: the report folder (images already in it).
    title: the page title.
    intro: paragraphs on what ran.
    results: compare/results.json.
    main: the aligned method the verdict is about.
    stage_lines: one line per stage (what it did, how long it took).
    figures: (heading, image file name in ``out`` or None, caption); a
      missing image is left out, never linked.

  Returns:
    {'html': path, 'md': path}.
  """
  tables = results_tables(results)
  lines = verdict(results, main)
  md = [f'# {title}', ''] + [p + '\n' for p in intro]
  md += ['## Results', '']
  for t, header, rows in tables:
    md += [f'### {t}', '', '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
    md += ['| ' + ' | '.join(r) + ' |' for r in rows]
    md.append('')
  md += ['Mean [95 % bootstrap CI over scenarios]; the realism difference is '
         'paired per scenario (same sampling seeds).', '']
  md += [f'- {v}' for v in lines] + ['']
  for heading, image, caption in figures:
    if image:
      md += [f'## {heading}', '', f'![{heading}]({image})', '', caption, '']
  md += ['## Stages', ''] + [f'- {s}' for s in stage_lines] + ['']
  (out / 'report.md').write_text('\n'.join(md))

  e = html.escape
  body = [f'<h1>{e(title)}</h1>'] + [f'<p>{e(p)}</p>' for p in intro]
  body.append('<h2>Results</h2>')
  for t, header, rows in tables:
    body.append(f'<h3>{e(t)}</h3><table><tr>' +
                ''.join(f'<th>{e(h)}</th>' for h in header) + '</tr>')
    for r in rows:
      body.append('<tr>' + ''.join(
          f'<td>{e(c)}</td>' for c in r) + '</tr>')
    body.append('</table>')
  body.append('<p class="note">Mean [95 % bootstrap CI over scenarios]; '
              'the realism difference is paired per scenario (same sampling '
              'seeds).</p>')
  if lines:
    body.append('<ul>' + ''.join(f'<li>{e(v)}</li>' for v in lines) +
                '</ul>')
  for heading, image, caption in figures:
    if image:
      body.append(f'<h2>{e(heading)}</h2><figure><img src="{e(image)}" '
                  f'alt="{e(heading)}"><figcaption>{e(caption)}'
                  '</figcaption></figure>')
  body.append('<h2>Stages</h2><ul>' +
              ''.join(f'<li>{e(s)}</li>' for s in stage_lines) + '</ul>')
  page = f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
th {{ background: #f2f2f2; }} td:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption, .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
{os.linesep.join(body)}
</body></html>
'''
  (out / 'index.html').write_text(page)
  return {'html': str(out / 'index.html'), 'md': str(out / 'report.md')}

