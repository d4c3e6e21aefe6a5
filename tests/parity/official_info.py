"""Counts per scenario with the *official* WOMD protos (in the official venv).

Usage: python official_info.py FILE...  -> one JSON line per scenario.
Uses only the official ``scenario_pb2`` and the plain TFRecord framing; it
never imports prefalign.
"""

import json
import struct
import sys

from waymo_open_dataset.protos import scenario_pb2

_TYPES = {0: 'unset', 1: 'vehicle', 2: 'pedestrian', 3: 'cyclist',
          4: 'other'}


def records(path):
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if not header:
        return
      (n,) = struct.unpack('<Q', header[:8])
      yield f.read(n)
      f.read(4)


def points(feature):
  kind = feature.WhichOneof('feature_data')
  data = getattr(feature, kind)
  if kind in ('lane', 'road_line', 'road_edge'):
    return len(data.polyline)
  if kind == 'stop_sign':
    return 1 if data.HasField('position') else 0
  return len(data.polygon)


for path in sys.argv[1:]:
  for raw in records(path):
    s = scenario_pb2.Scenario.FromString(raw)
    per_type, features = {}, {}
    for t in s.tracks:
      name = _TYPES[t.object_type]
      per_type[name] = per_type.get(name, 0) + 1
    for f in s.map_features:
      kind = f.WhichOneof('feature_data')
      features[kind] = features.get(kind, 0) + 1
    print(json.dumps({
        'scenario_id': s.scenario_id,
        'num_tracks': len(s.tracks),
        'tracks_per_type': dict(sorted(per_type.items())),
        'num_valid_at_current': sum(
            t.states[s.current_time_index].valid for t in s.tracks),
        'num_map_features': dict(sorted(features.items())),
        'num_roadgraph_points': sum(points(f) for f in s.map_features),
        'sdc_track_index': s.sdc_track_index,
        'tracks_to_predict': [r.track_index for r in s.tracks_to_predict],
        'objects_of_interest': list(s.objects_of_interest),
        'num_traffic_light_steps': sum(
            1 for d in s.dynamic_map_states if len(d.lane_states)),
        'num_timesteps': len(s.timestamps_seconds),
        'current_time_index': s.current_time_index,
    }))
