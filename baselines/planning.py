"""Geometry and shortest-path planning on the navigation graph shared by the map-based baselines."""

from __future__ import annotations

import math

import numpy as np

from asgf_nav.tasks.navigation import oracle_next_action
from asgf_nav.tasks.world import TaskScene


def agent_to_world(position: np.ndarray, yaw_index: int, forward: float, left: float) -> np.ndarray:
    """World (x, z) of a point ``forward`` / ``left`` metres from an agent at ``position`` facing yaw 90*k."""
    theta = math.radians(90.0 * yaw_index)
    fx, fz = -math.sin(theta), -math.cos(theta)  # yaw 0 faces -Z, yaw 90 faces -X
    lx, lz = -math.cos(theta), math.sin(theta)
    return np.array([position[0] + forward * fx + left * lx, position[2] + forward * fz + left * lz])


def nearest_reachable_node(scene: TaskScene, point_xz: np.ndarray, from_node: int, leave: bool = False) -> int:
    """Node reachable from ``from_node`` closest (Euclidean, floor plane) to ``point_xz``; with ``leave``, the
    closest other than ``from_node`` itself (a scene with one node has no other)."""
    hops = np.asarray(scene.geodesic_hops[from_node])
    reachable = np.flatnonzero(hops > 0 if leave and (hops > 0).any() else hops >= 0)
    pos = np.asarray(scene.positions, dtype=np.float64)[reachable][:, [0, 2]]
    return int(reachable[int(np.argmin(np.sum((pos - point_xz) ** 2, axis=1)))])


def next_action_towards(scene: TaskScene, node: int, yaw: int, target: int) -> int:
    """First action of the fewest-action shortest path from (node, yaw) to ``target`` (STOP when there)."""
    return oracle_next_action(scene.neighbors, np.asarray(scene.geodesic_hops[:, target]), node, yaw)
