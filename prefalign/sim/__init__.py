"""Simulation: invertible dynamics, box / road-edge geometry, environment."""

from prefalign.sim import dynamics
from prefalign.sim import env
from prefalign.sim import geometry
from prefalign.sim import replay
from prefalign.sim.dynamics import Action
from prefalign.sim.dynamics import DynamicsConfig
from prefalign.sim.dynamics import TrajectoryUpdate
from prefalign.sim.dynamics import apply_trajectory_update
from prefalign.sim.dynamics import compute_update
from prefalign.sim.dynamics import integrate
from prefalign.sim.dynamics import inverse
from prefalign.sim.dynamics import inverse_all
from prefalign.sim.env import ControlledObject
from prefalign.sim.env import EnvConfig
from prefalign.sim.env import Environment
from prefalign.sim.env import KinematicEnvironment
from prefalign.sim.env import StepEnvironment
from prefalign.sim.env import control_mask
from prefalign.sim.env import metrics
from prefalign.sim.env import reset
from prefalign.sim.env import step
from prefalign.sim.env import update_state_by_log
from prefalign.sim.geometry import EXTREMELY_LARGE_DISTANCE
from prefalign.sim.geometry import box_corners
from prefalign.sim.geometry import distance_to_nearest_object
from prefalign.sim.geometry import has_overlap
from prefalign.sim.geometry import pairwise_overlap
from prefalign.sim.geometry import pairwise_signed_distance
from prefalign.sim.geometry import signed_distance_between_boxes
from prefalign.sim.geometry import signed_distance_to_polylines
from prefalign.sim.geometry import signed_distance_to_road_edge

__all__ = [
    'replay',
    'dynamics',
    'env',
    'geometry',
    'Action',
    'DynamicsConfig',
    'TrajectoryUpdate',
    'apply_trajectory_update',
    'compute_update',
    'inverse',
    'integrate',
    'inverse_all',
    'ControlledObject',
    'Environment',
    'KinematicEnvironment',
    'StepEnvironment',
    'EnvConfig',
    'control_mask',
    'metrics',
    'reset',
    'step',
    'update_state_by_log',
    'EXTREMELY_LARGE_DISTANCE',
    'box_corners',
    'distance_to_nearest_object',
    'has_overlap',
    'pairwise_overlap',
    'pairwise_signed_distance',
    'signed_distance_between_boxes',
    'signed_distance_to_polylines',
    'signed_distance_to_road_edge',
]
