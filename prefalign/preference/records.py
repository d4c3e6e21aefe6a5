"""Preference data on disk: the record, its shards and their metadata.

A preference directory holds::

  DIR/meta.json                     what was collected, and how
  DIR/preferences-00000.tfrecord    records of scenarios 0 .. S - 1
  DIR/preferences-00001.tfrecord    scenarios S .. 2S - 1, ...
  DIR/summary.json, DIR/distances.png   distance distributions (at the end)

Shards use the TFRecord framing of ``data.tfrecord`` (checksummed); each
record is an ``.npz`` payload of a ``PreferenceRecord`` (``encode_record``,
``decode_record``). ``read_records`` streams a directory back shard by shard.
``meta.json`` names the collection's setup, its model config included:
``check_meta`` refuses to mix setups in one directory and ``check_model``
refuses to train another model on the shards.

A record holds token ids, not trajectories: the scenario (re-read from its
source file, checked by scenario id) and the ids determine the rollouts
(``rollout.replay_tokens``); the logged demonstration is the sequence of
rollout index ``LOG`` (-1).
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import io
import json
import os
import pathlib
from typing import Any

import numpy as np

from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.model import motion_lm
from prefalign.preference import ranking as ranking_lib

__all__ = ['PreferenceRecord', 'encode_record', 'decode_record',
           'shard_path', 'read_records', 'meta_json', 'check_meta',
           'check_model', 'compact', 'LOG']

LOG = ranking_lib.LOG
_SHARD = 'preferences-{:05d}.tfrecord'
_ARRAYS = ('sequences', 'sequence_rollout', 'pairs', 'distances',
           'ot_distances', 'ade', 'agent_distances', 'agent_counted')


@dataclasses.dataclass
class PreferenceRecord:
  """The preference data of one scenario (R rollouts, U sequences, P pairs).

  Attributes:
    scenario_id: the scenario's id.
    source: the WOMD file it was read from.
    record: its record index in that file.
    sequences: int16 (U, N, K) token ids of every rollout some pair uses.
    sequence_rollout: int32 (U,) which rollout each sequence is (-1: the
      logged demonstration, closed-loop tokenized).
    pairs: int32 (P, 2) (preferred, unpreferred) indices into ``sequences``.
    distances: float32 (R,) the distance the ranking used.
    ot_distances: float32 (R,) OT occupancy distance of every rollout.
    ade: float32 (R,) mean displacement from the log.
    agent_distances: float32 (R, E) per-agent OT distance.
    agent_counted: bool (E,) agents in the scene distance.
  """
  scenario_id: str
  source: str
  record: int
  sequences: np.ndarray
  sequence_rollout: np.ndarray
  pairs: np.ndarray
  distances: np.ndarray
  ot_distances: np.ndarray
  ade: np.ndarray
  agent_distances: np.ndarray
  agent_counted: np.ndarray

  @property
  def preferred_rollouts(self) -> np.ndarray:
    """int32 (P,) rollout index of each pair's preferred side (-1: log)."""
    return self.sequence_rollout[self.pairs[:, 0]]

  @property
  def unpreferred_rollouts(self) -> np.ndarray:
    """int32 (P,) rollout index of each pair's unpreferred side."""
    return self.sequence_rollout[self.pairs[:, 1]]


def encode_record(rec: PreferenceRecord) -> bytes:
  """The record as ``.npz`` bytes (no pickling)."""
  buf = io.BytesIO()
  np.savez_compressed(
      buf, scenario_id=np.array(rec.scenario_id), source=np.array(rec.source),
      record=np.array(rec.record, np.int64),
      **{k: np.asarray(getattr(rec, k)) for k in _ARRAYS})
  return buf.getvalue()


def decode_record(data: bytes, where: str = '<bytes>') -> PreferenceRecord:
  """Inverse of ``encode_record``; ``where`` names the record in errors."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
    rec = PreferenceRecord(
        scenario_id=str(fields.pop('scenario_id')),
        source=str(fields.pop('source')),
        record=int(fields.pop('record')),
        **{k: fields.pop(k) for k in _ARRAYS})
  except (ValueError, KeyError, OSError, TypeError) as e:
    raise tfrecord.DataError(f'{where}: not a preference record ({e})') from e
  u = rec.sequences.shape[0]
  if rec.pairs.ndim != 2 or rec.pairs.shape[1] != 2 or (
      rec.pairs.size and (rec.pairs.min() < 0 or rec.pairs.max() >= u)):
    raise tfrecord.DataError(f'{where} ({rec.scenario_id}): pairs index '
                             f'outside the {u} stored sequences')
  return rec


def shard_path(directory: os.PathLike, index: int) -> pathlib.Path:
  """DIR/preferences-{index:05d}.tfrecord."""
  return pathlib.Path(directory) / _SHARD.format(index)


def _shards(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(directory.glob('preferences-*.tfrecord'))


def read_records(directory: os.PathLike) -> Iterator[PreferenceRecord]:
  """Streams every record of a preference directory, shard by shard.

  Raises:
    FileNotFoundError: no shard in ``directory``.
    tfrecord.DataError: a corrupt shard or record (named).
  """
  directory = pathlib.Path(directory)
  shards = _shards(directory)
  if not shards:
    raise FileNotFoundError(f'{directory}: no preference shards '
                            '(preferences-*.tfrecord); run the collect stage')
  for path in shards:
    for index, data in tfrecord.read_records(path):
      yield decode_record(data, f'{path} record {index}')


def meta_json(facts: dict[str, Any]) -> dict[str, Any]:
  """``facts`` as meta.json holds them (a JSON round trip, sorted keys)."""
  return json.loads(json.dumps(facts, sort_keys=True, default=str))


def check_meta(directory: pathlib.Path, meta: dict[str, Any]) -> None:
  """Writes DIR/meta.json, or checks that the one there is ``meta``.

  Raises:
    ValueError: DIR/meta.json differs from ``meta`` (naming the keys).
  """
  path = directory / 'meta.json'
  if not path.exists():
    fileio.atomic_write_text(path, json.dumps(meta, indent=1,
                                              sort_keys=True))
    return
  old = json.loads(path.read_text())
  if old != meta:
    keys = sorted(k for k in set(old) | set(meta)
                  if old.get(k) != meta.get(k))
    raise ValueError(
        f'{path}: this directory holds preference data collected with a '
        f'different setup ({", ".join(keys)} differ); use a new directory '
        'or remove it')


def _differences(old, new, prefix: str = '') -> list[str]:
  """Dotted keys whose values differ between two JSON-like trees."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      out += _differences(old.get(k), new.get(k), f'{prefix}{k}.')
    return out
  return [] if old == new else [f'{prefix[:-1]} ({old!r} vs {new!r})']


def check_model(directory: os.PathLike,
                model_config: motion_lm.ModelConfig) -> None:
  """Refuses preference data collected with another model config.

  A record stores token ids of the collecting model's tokenizer, and its
  pairs were ranked from that model's rollouts: read by another model the
  ids mean other motions (or index past the vocabulary). The collection's
  ``meta.json`` names its model config.

  Raises:
    ValueError: naming the directory and each differing config key, or the
      missing meta.json.
  """
  path = pathlib.Path(directory) / 'meta.json'
  if not path.exists():
    raise ValueError(
        f'{path} is missing: the preference shards in {directory} cannot be '
        'matched to a model config (collect writes it); collect them again')
  try:
    stored = json.loads(path.read_text()).get('model')
  except (json.JSONDecodeError, AttributeError) as e:
    raise ValueError(f'{path}: not a collection meta.json ({e})') from None
  want = meta_json(dataclasses.asdict(model_config))
  diffs = _differences(stored, want)
  if diffs:
    raise ValueError(
        f'{directory}: preference shards collected with a different model '
        f'config (stored vs this run): {"; ".join(diffs[:6])}'
        f'{" ..." if len(diffs) > 6 else ""}. Align the model that collected '
        'them, or collect again with this one')


def compact(rec: PreferenceRecord) -> PreferenceRecord:
  """The record with only the sequences its pairs use (pairs re-indexed)."""
  used, inverse = np.unique(rec.pairs.reshape(-1), return_inverse=True)
  return dataclasses.replace(
      rec, sequences=rec.sequences[used],
      sequence_rollout=rec.sequence_rollout[used],
      pairs=inverse.reshape(-1, 2).astype(np.int32))
