"""Implicit preferences from demonstrations (DPA-OMF's ranking).

``occupancy`` (the feature space), ``ot`` (batched masked Sinkhorn),
``ranking`` (distances, rankings, pairs), ``dataset`` (offline collection,
shards, streaming).
"""

from prefalign.preference import dataset
from prefalign.preference import occupancy
from prefalign.preference import ot
from prefalign.preference import ranking
from prefalign.preference.ot import SinkhornConfig
from prefalign.preference.ranking import rank_rollouts
from prefalign.preference.ranking import RankingConfig

__all__ = ['dataset', 'occupancy', 'ot', 'ranking', 'SinkhornConfig',
           'rank_rollouts', 'RankingConfig']
