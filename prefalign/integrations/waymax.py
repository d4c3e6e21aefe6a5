"""Run the model inside Waymax: datatypes, dynamics, environment and actor.

Waymax (the distribution ``waymo-waymax``, import name ``waymax``) is an
optional dependency installed from its git repository; it imports TensorFlow
at import time. Nothing else in ``prefalign`` imports it. Install (see the
README, "Running inside Waymax")::

  pip install -e '.[waymax-deps]'   # TensorFlow and Waymax's other dependencies
  pip install 'git+https://github.com/waymo-research/waymax.git@main#egg=waymo-waymax'

(The PyPI project named after the bare import name is not Waymax; it is
refused here with these instructions.)

What is here:

* ``to_waymax(x)`` / ``from_waymax(x)`` convert ``SimulatorState`` and its
  parts (``Trajectory``, ``ObjectMetadata``, ``RoadgraphPoints``,
  ``TrafficLights``) and ``Action`` / ``TrajectoryUpdate`` field for field;
  both layouts are ``(..., num_objects, num_timesteps)`` with the same
  dtypes and enum values, so nothing is copied or recomputed.
* ``AccelerationDynamics``: our body-frame acceleration model (the one the
  tokens are actions of) as a ``waymax.dynamics.DynamicsModel``.
* ``make_environment(num_objects)``: a ``waymax.env.MultiAgentEnvironment``
  set up as the sampler drives scenarios (every object valid at the current
  step is controlled, 11 logged steps of warm-up).
* ``WaymaxEnvironment(env)``: a Waymax environment as the sampler takes it
  (``sim.env.Environment``), so the very same jitted ``sample_rollouts``
  runs inside Waymax::

    env = waymax_bridge.make_environment(num_objects=128)
    sample = jax.jit(functools.partial(
        rollout.sample_rollouts, config=config, num_rollouts=32,
        env=waymax_bridge.WaymaxEnvironment(env)))

* ``actor(config)``: ``rollout.MotionLMActor`` as a Waymax actor
  (``actor_core_factory``), for ``waymax.env.rollout``::

    out = waymax.env.rollout(to_waymax(state), actor(config), env, rng,
                             rollout_num_steps=80, actor_params=params)

With ``AccelerationDynamics`` or ``waymax.dynamics.StateDynamics`` the
rollouts equal our own for the same key (tested to 1e-4 m). With another
Waymax dynamics model (the bicycle model, say) each step asks that model's
``inverse`` for the action that reaches the state our dynamics would give,
so its own limits apply and the motion only approximates the model's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign import rollout
from prefalign.model import motion_lm
from prefalign.sim import dynamics as dynamics_lib
from prefalign.sim import env as sim_env

INSTALL = (
    "Waymax is installed from its git repository: pip install -e "
    "'.[waymax-deps]' && pip install 'git+https://github.com/waymo-research/"
    "waymax.git@main#egg=waymo-waymax' (the distribution is waymo-waymax; "
    "the PyPI project under the bare import name is an unrelated package: "
    "uninstall it).")


def _import_waymax():
  """Waymax's modules, or an ImportError that says how to install it."""
  try:
    import waymax
    from waymax import agents as wx_agents
    from waymax import config as wx_config
    from waymax import datatypes as wx_datatypes
    from waymax import dynamics as wx_dynamics
    from waymax import env as wx_env
    from waymax import metrics as wx_metrics
  except ModuleNotFoundError as e:
    if e.name == 'waymax':
      raise ImportError(f'Waymax is not installed. {INSTALL}') from e
    if e.name and e.name.split('.')[0] == 'tensorflow':
      raise ImportError(
          'Waymax imports TensorFlow at import time and it is missing: '
          f"pip install -e '.[waymax-deps]'. {INSTALL}") from e
    raise ImportError(f'Waymax could not be imported ({e}). {INSTALL}') from e
  except ImportError as e:
    raise ImportError(
        f'The installed "waymax" is not Waymax ({e}; found at '
        f'{getattr(e, "path", None) or "?"}). {INSTALL}') from e
  if not hasattr(wx_env, 'MultiAgentEnvironment'):
    raise ImportError(
        f'The installed "waymax" ({getattr(waymax, "__file__", "?")}) has no '
        f'env.MultiAgentEnvironment: it is not Waymax. {INSTALL}')
  return wx_agents, wx_config, wx_datatypes, wx_dynamics, wx_env, wx_metrics


(wx_agents, wx_config, wx_datatypes, wx_dynamics, wx_env,
 wx_metrics) = _import_waymax()

__all__ = [
    'INSTALL',
    'to_waymax',
    'from_waymax',
    'AccelerationDynamics',
    'make_environment',
    'WaymaxEnvironment',
    'actor',
    'env_action',
    'with_wosac_road_edges',
]

# ---------------------------------------------------------------------------
# Datatypes.

_PAIRS = (
    (datatypes.Trajectory, wx_datatypes.Trajectory),
    (datatypes.ObjectMetadata, wx_datatypes.ObjectMetadata),
    (datatypes.RoadgraphPoints, wx_datatypes.RoadgraphPoints),
    (datatypes.TrafficLights, wx_datatypes.TrafficLights),
    (dynamics_lib.Action, wx_datatypes.Action),
    (dynamics_lib.TrajectoryUpdate, wx_datatypes.TrajectoryUpdate),
)
_OURS = dict(_PAIRS)
_THEIRS = {w: o for o, w in _PAIRS}


def _fields(obj) -> dict[str, Any]:
  return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _convert(obj, table: dict, state_cls, direction: str):
  if isinstance(obj, (datatypes.SimulatorState, wx_datatypes.SimulatorState)):
    fields = _fields(obj)
    if fields.get('sdc_paths') is not None:
      raise ValueError(
          f'{direction}: sdc_paths is set ({type(fields["sdc_paths"])}); '
          'public WOMD has no SDC paths and prefalign does not carry them.')
    if fields.get('roadgraph_points') is None:
      raise ValueError(f'{direction}: the state has no roadgraph_points.')
    out = {k: (_convert(v, table, state_cls, direction)
               if k not in ('timestep', 'sdc_paths') else v)
           for k, v in fields.items()}
    return state_cls(**out)
  for cls in type(obj).__mro__:
    if cls in table:
      return table[cls](**_fields(obj))
  raise TypeError(f'{direction}: cannot convert {type(obj).__name__}; it '
                  'takes a SimulatorState, Trajectory, ObjectMetadata, '
                  'RoadgraphPoints, TrafficLights, Action or TrajectoryUpdate.')


def to_waymax(x):
  """Our datatype as Waymax's (same fields, arrays shared, any batch)."""
  return _convert(x, _OURS, wx_datatypes.SimulatorState, 'to_waymax')


def from_waymax(x):
  """Waymax's datatype as ours (inverse of ``to_waymax``)."""
  return _convert(x, _THEIRS, datatypes.SimulatorState, 'from_waymax')


def with_wosac_road_edges(state: datatypes.SimulatorState
                          ) -> datatypes.SimulatorState:
  """The state with its road edges as Waymax's off-road metric reads them.

  Waymax's ``OffroadMetric`` takes only ROAD_EDGE_BOUNDARY and
  ROAD_EDGE_MEDIAN points (WOSAC, and ``sim.env.metrics``, also count
  ROAD_EDGE_UNKNOWN, the type of most edges of converted maps), and signs a
  corner by the stored direction of its nearest edge point (our maps store
  a zero direction at a polyline's last point, where Waymax's sign then
  vanishes). This relabels UNKNOWN edge points BOUNDARY and gives each
  zero-direction point its polyline's previous direction, so that Waymax's
  metric sees the edges WOSAC sees. Apply it before ``to_waymax`` when
  Waymax's metrics or rewards should count off-road as WOSAC does.

  Args:
    state: SimulatorState (...) or RoadgraphPoints (..., P).

  Returns:
    The same type, only ``roadgraph_points`` types and directions changed.
  """
  rg = (state.roadgraph_points if isinstance(state, datatypes.SimulatorState)
        else state)
  ids = datatypes.MapElementIds
  types = jnp.where(rg.types == ids.ROAD_EDGE_UNKNOWN,
                    ids.ROAD_EDGE_BOUNDARY, rg.types)
  zero = (rg.dir_x == 0) & (rg.dir_y == 0) & (rg.dir_z == 0)
  same = rg.ids == jnp.roll(rg.ids, 1, axis=-1)
  fill = lambda a: jnp.where(zero & same, jnp.roll(a, 1, axis=-1), a)
  rg = rg.replace(types=types, dir_x=fill(rg.dir_x), dir_y=fill(rg.dir_y),
                  dir_z=fill(rg.dir_z))
  if isinstance(state, datatypes.SimulatorState):
    return state.replace(roadgraph_points=rg)
  return rg


# ---------------------------------------------------------------------------
# Dynamics.


class AccelerationDynamics(wx_dynamics.DynamicsModel):
  """``prefalign.sim.dynamics`` as a Waymax dynamics model.

  Action: float32 (..., num_objects, 2), the body-frame acceleration
  (a_lon, a_lat) in m/s^2 (``DynamicsConfig``'s bounds; unbounded by
  default). ``compute_update`` and ``inverse`` are ours, so a Waymax
  environment built on it steps exactly as ``sim.env.step``.

  Args:
    config: the dynamics constants; the model's are
      ``config.tokenizer.dynamics``.
  """

  def __init__(
      self,
      config: dynamics_lib.DynamicsConfig = dynamics_lib.DynamicsConfig()):
    super().__init__()
    self.config = config

  def action_spec(self):
    from dm_env import specs
    big = np.finfo(np.float32).max
    low = np.maximum([-self.config.max_lon_accel, -self.config.max_lat_accel],
                     -big).astype(np.float32)
    return specs.BoundedArray(shape=(dynamics_lib.ACTION_DIM,),
                              dtype=np.float32, minimum=low, maximum=-low)

  def compute_update(self, action, trajectory):
    update = dynamics_lib.compute_update(from_waymax(action),
                                         from_waymax(trajectory), self.config)
    return to_waymax(update)

  def inverse(self, trajectory, metadata, timestep):
    del metadata  # unused, as in our inverse
    action = dynamics_lib.inverse(from_waymax(trajectory), None, timestep,
                                  self.config)
    return to_waymax(action)

  def __repr__(self):
    return f'AccelerationDynamics({self.config})'


def make_environment(num_objects: int, *,
                     dynamics_model: Any | None = None,
                     **config_overrides) -> Any:
  """A Waymax ``MultiAgentEnvironment`` set up as the sampler drives it.

  Args:
    num_objects: N of the scenarios (Waymax asserts it equals the state's).
    dynamics_model: a ``waymax.dynamics.DynamicsModel``; default
      ``AccelerationDynamics()``.
    **config_overrides: further ``waymax.config.EnvironmentConfig`` fields
      (metrics, rewards, ...).

  Returns:
    ``waymax.env.MultiAgentEnvironment`` controlling every object valid at
    the current step (``ObjectType.VALID``, no objects injected after the
    11-step warm-up).
  """
  fields = dict(max_num_objects=num_objects,
                init_steps=datatypes.CURRENT_TIME_INDEX + 1,
                controlled_object=wx_config.ObjectType.VALID,
                allow_new_objects_after_warmup=False)
  fields.update(config_overrides)
  return wx_env.MultiAgentEnvironment(
      dynamics_model=dynamics_model or AccelerationDynamics(),
      config=wx_config.EnvironmentConfig(**fields))


def env_action(action: dynamics_lib.Action, wx_state, dynamics_model,
               config: dynamics_lib.DynamicsConfig) -> Any:
  """Our acceleration action in the action space of ``dynamics_model``.

  Args:
    action: ``Action`` data (..., N, 2), valid (..., N, 1).
    wx_state: the Waymax ``SimulatorState`` (...) it acts on.
    dynamics_model: the environment's Waymax dynamics model.
    config: our dynamics constants.

  Returns:
    A Waymax ``Action``: ours for ``AccelerationDynamics``; the next
    (x, y, yaw, vel_x, vel_y) for ``StateDynamics``; otherwise
    ``dynamics_model.inverse`` of (now -> the state ours would reach).
  """
  if isinstance(dynamics_model, AccelerationDynamics):
    return to_waymax(action)
  cur = from_waymax(wx_state).current_sim_trajectory  # (..., N, 1)
  nxt = dynamics_lib.compute_update(action, cur, config)
  if isinstance(dynamics_model, wx_dynamics.StateDynamics):
    data = jnp.concatenate([nxt.x, nxt.y, nxt.yaw, nxt.vel_x, nxt.vel_y], -1)
    return wx_datatypes.Action(data=data, valid=action.valid)
  pair = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), cur,
                      cur.replace(x=nxt.x, y=nxt.y, yaw=nxt.yaw,
                                  vel_x=nxt.vel_x, vel_y=nxt.vel_y))
  inv = dynamics_model.inverse(to_waymax(pair), wx_state.object_metadata, 0)
  return inv.replace(valid=inv.valid & action.valid)


def _vmapped(fn, num_batch: int):
  for _ in range(num_batch):
    fn = jax.vmap(fn)
  return fn


# ---------------------------------------------------------------------------
# The sampler's environment.


@dataclasses.dataclass(frozen=True, eq=False)
class WaymaxEnvironment:
  """A Waymax environment as ``rollout.sample_rollouts`` takes it.

  The sampler's rows (scenarios x rollouts) are one leading batch axis;
  Waymax's ``reset`` and ``step`` run vmapped over it, as Waymax's own
  tutorials batch scenarios. The state carried is Waymax's
  ``SimulatorState`` (every object, every step). Hashable by identity, so
  it can be bound with ``functools.partial`` or passed as a static jit
  argument.

  Attributes:
    env: a ``waymax.env.MultiAgentEnvironment`` (``make_environment``);
      it must control ``ObjectType.VALID`` without injected objects, with
      11 warm-up steps, as the sampler drives every object valid at the
      current step.
    dynamics: our dynamics constants (those of ``AccelerationDynamics`` when
      the environment uses it).
  """
  env: Any
  dynamics: dynamics_lib.DynamicsConfig = dynamics_lib.DynamicsConfig()

  def __post_init__(self):
    if not isinstance(self.env, wx_env.BaseEnvironment):
      raise TypeError(f'WaymaxEnvironment takes a Waymax environment '
                      f'(waymax.env.MultiAgentEnvironment), got {self.env!r}.')
    config = self.env.config
    problems = []
    if config.controlled_object != wx_config.ObjectType.VALID:
      problems.append(f'controlled_object={config.controlled_object} (needs '
                      'ObjectType.VALID)')
    if config.allow_new_objects_after_warmup:
      problems.append('allow_new_objects_after_warmup=True (needs False)')
    if config.init_steps != datatypes.CURRENT_TIME_INDEX + 1:
      problems.append(f'init_steps={config.init_steps} (needs '
                      f'{datatypes.CURRENT_TIME_INDEX + 1})')
    if problems:
      raise ValueError(
          'The sampler drives every object valid at the current step, but '
          'the Waymax environment has ' + '; '.join(problems) +
          '. Build it with integrations.waymax.make_environment.')
    model = self.env.dynamics
    if (isinstance(model, AccelerationDynamics) and
        model.config != self.dynamics):
      object.__setattr__(self, 'dynamics', model.config)

  def reset(self, state: datatypes.SimulatorState):
    n = self.env.config.max_num_objects
    if state.num_objects != n:
      raise ValueError(
          f'The scenarios have {state.num_objects} object rows but the Waymax '
          f'environment was built for max_num_objects={n}.')
    return _vmapped(self.env.reset, len(state.shape))(to_waymax(state))

  def step(self, env_state, action: dynamics_lib.Action):
    num_batch = len(env_state.shape)

    def one(s, a):
      return self.env.step(s, env_action(a, s, self.env.dynamics,
                                         self.dynamics))

    return _vmapped(one, num_batch)(env_state, action)

  def current(self, env_state) -> datatypes.Trajectory:
    return sim_env.current_state(from_waymax(env_state))


# ---------------------------------------------------------------------------
# The actor.


def actor(config: motion_lm.ModelConfig, *, dynamics_model: Any = None,
          sampling: rollout.SamplingConfig = rollout.SamplingConfig(),
          name: str = 'prefalign_motion_lm'):
  """The model as a Waymax actor (``waymax.agents.actor_core_factory``).

  ``init(rng, state)`` and ``select_action(params, state, actor_state,
  rng)`` take and return Waymax's types; underneath is
  ``rollout.MotionLMActor``, whose tokens come from the key given to
  ``init`` (Waymax's ``env.rollout`` derives it from its own key), so a
  rollout equals ``sample_rollouts(..., num_rollouts=1)`` with that key.

  Args:
    config: the model's config.
    dynamics_model: the environment's Waymax dynamics model, for the
      action's space (``env_action``); default ``AccelerationDynamics``.
    sampling: how tokens are drawn (``rollout.SamplingConfig``).
    name: the actor's name.

  Returns:
    A ``waymax.agents.WaymaxActorCore``; it controls the objects valid at the
    current step.
  """
  inner = rollout.MotionLMActor(config, sampling=sampling)
  model = dynamics_model or AccelerationDynamics(config.tokenizer.dynamics)

  def init(rng, state):
    return inner.init(rng, from_waymax(state))

  def select_action(params, state, actor_state, rng):
    out = inner.select_action(params, from_waymax(state), actor_state, rng)
    return wx_agents.WaymaxActorOutput(
        actor_state=out.actor_state,
        action=env_action(out.action, state, model,
                          config.tokenizer.dynamics),
        is_controlled=out.is_controlled)

  return wx_agents.actor_core_factory(init, select_action, name=name)

