"""Implicit preferences from demonstrations (DPA-OMF's ranking).

``occupancy`` (the feature space), ``ot`` (batched masked Sinkhorn),
``ranking`` (distances, rankings, pairs), ``records`` (the preference
record, its shards and their metadata), ``collection`` (offline collection
from the reference model, summaries), ``dataset`` (training inputs from the
records, re-pairing for the baselines).

``rank_rollouts(state, rollouts, rng, config)`` ranks one scenario: an
unbatched SimulatorState (the log) and a Trajectory (R, N, 80) as the WOSAC
metric takes it; it returns a ``Ranking`` with (R,) distances and order and
(P,) preferred / unpreferred rollout indices. Jit it with ``config`` static.
"""

from prefalign.preference import collection
from prefalign.preference import dataset
from prefalign.preference import occupancy
from prefalign.preference import ot
from prefalign.preference import ranking
from prefalign.preference import records
from prefalign.preference.collection import sequence_tokens
from prefalign.preference.occupancy import occupancy_features
from prefalign.preference.ot import OTResult
from prefalign.preference.ot import SinkhornConfig
from prefalign.preference.ot import transport_cost
from prefalign.preference.ranking import Ranking
from prefalign.preference.ranking import RankingConfig
from prefalign.preference.ranking import make_pairs
from prefalign.preference.ranking import rank_rollouts
from prefalign.preference.ranking import rank_rollouts_jit
from prefalign.preference.records import PreferenceRecord

__all__ = ['collection', 'dataset', 'occupancy', 'ot', 'ranking', 'records',
           'PreferenceRecord', 'sequence_tokens', 'occupancy_features',
           'OTResult', 'SinkhornConfig', 'transport_cost', 'make_pairs',
           'Ranking', 'rank_rollouts', 'rank_rollouts_jit',
           'RankingConfig']
