"""Grid-graph navigation rules of SoundSpaces 1.0: actions, yaw arithmetic, moves and the oracle path.

The agent stands on a node of an axis-aligned grid graph facing one of four yaws. Yaw index ``k`` means
habitat yaw ``90*k`` degrees (yaw 0 faces -Z, TURN_LEFT adds 90, TURN_RIGHT subtracts 90) and
``neighbors[n, k]`` is the node that MOVE_FORWARD reaches from ``n`` at yaw index ``k`` (-1: a collision,
the agent stays).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT")
NUM_ACTIONS = 4


class InvalidActionError(ValueError, TypeError):
    """An action outside {0: STOP, 1: MOVE_FORWARD, 2: TURN_LEFT, 3: TURN_RIGHT}, or not an integer (a
    TypeError too, as a float or bool action is a wrong type)."""


def check_action(action: int) -> int:
    """The action as an int; refuses what the batched env refuses too (floats and bools, however whole)."""
    value = np.asarray(action)
    if value.ndim != 0 or value.dtype.kind not in "iu":
        raise InvalidActionError(f"action {action!r} is not an integer; valid actions are {ACTION_NAMES}")
    if not 0 <= int(value) < NUM_ACTIONS:
        raise InvalidActionError(f"action {action!r} is invalid; valid actions are 0..3 = {', '.join(ACTION_NAMES)}")
    return int(value)


def step_pose(neighbors: np.ndarray, node: int, yaw: int, action: int) -> tuple[int, int, bool]:
    """(node, yaw, collided) after ``action``; STOP leaves the pose unchanged."""
    if action == MOVE_FORWARD:
        nxt = int(neighbors[node, yaw])
        return (node, yaw, True) if nxt < 0 else (nxt, yaw, False)
    if action == TURN_LEFT:
        return node, (yaw + 1) % 4, False
    if action == TURN_RIGHT:
        return node, (yaw - 1) % 4, False
    return node, yaw, False


def turn_cost(from_yaw: int, to_yaw: int) -> int:
    """Number of 90-degree turns from one yaw index to another (a 180-degree turn is two)."""
    d = (to_yaw - from_yaw) % 4
    return min(d, 4 - d)


def turn_actions(from_yaw: int, to_yaw: int) -> list[int]:
    """The turn actions (left preferred on a 180) that rotate ``from_yaw`` to ``to_yaw``."""
    d = (to_yaw - from_yaw) % 4
    if d == 0:
        return []
    if d == 3:
        return [TURN_RIGHT]
    return [TURN_LEFT] * d


def yaw_to_quaternion(yaw_index: int) -> list[float]:
    """Quaternion [x, y, z, w] of a rotation by ``90*yaw_index`` degrees about +Y, axis kept at +Y (yaw 270
    is [0, 0.707, 0, -0.707], not the same rotation as [0, -0.707, 0, 0.707], which SoundSpaces reads as 90)."""
    half = math.radians(90.0 * (yaw_index % 4)) / 2.0
    return [0.0, math.sin(half), 0.0, math.cos(half)]


def quaternion_to_yaw_index(q: list[float] | tuple[float, ...], tol_deg: float = 1.0) -> int:
    """Yaw index of a [x, y, z, w] rotation about +Y as SoundSpaces reads it; raises if it is not a multiple
    of 90 degrees.

    SoundSpaces takes the start yaw as the angle of habitat-sim's ``quat_to_angle_axis``, 2 atan2(|v|, w),
    and drops the axis' sign, so [0, -0.707, 0, 0.707] is yaw 90 there, not 270; the RIRs and views it
    serves follow that angle, and so does this reader.
    """
    if len(q) != 4:
        raise ValueError(f"rotation {q!r} must be a quaternion [x, y, z, w]")
    norm = math.hypot(*(float(v) for v in q))
    if not norm > 1e-6:  # habitat-sim normalises first; atan2(0, 0) = 0 would read [0, 0, 0, 0] as yaw 0
        raise ValueError(f"rotation {q!r} has no direction: its norm is {norm:g}")
    x, y, z, w = (float(v) / norm for v in q)
    if abs(x) > 1e-3 or abs(z) > 1e-3:
        raise ValueError(f"rotation {q!r} is not a rotation about +Y")
    deg = math.degrees(2.0 * math.atan2(abs(y), w)) % 360.0
    k = round(deg / 90.0) % 4
    off = abs((deg - 90.0 * k + 180.0) % 360.0 - 180.0)
    if off > tol_deg:
        raise ValueError(f"rotation {q!r} is yaw {deg:.2f} degrees, not a multiple of 90")
    return int(k)


def oracle_plan(neighbors: np.ndarray, hops_to_goal: np.ndarray, start: int, yaw: int) -> list[int]:
    """Fewest-action action sequence (ending with STOP) along a shortest path from ``start`` to the goal.

    Among all shortest-hop paths it picks the one needing the fewest turns: per hop the turns to face the
    next node, then MOVE_FORWARD. ``hops_to_goal[n]`` is the hop distance from node ``n`` to the goal.
    """
    if hops_to_goal[start] < 0:
        raise ValueError(f"node {start} cannot reach the goal")
    cost = _cost_to_go(neighbors, hops_to_goal)
    actions: list[int] = []
    node = start
    while hops_to_goal[node] > 0:
        best = min(
            (turn_cost(yaw, k) + 1 + cost(int(neighbors[node, k]), k), k)
            for k in range(4)
            if neighbors[node, k] >= 0 and hops_to_goal[neighbors[node, k]] == hops_to_goal[node] - 1
        )
        k = best[1]
        actions += turn_actions(yaw, k) + [MOVE_FORWARD]
        node, yaw = int(neighbors[node, k]), k
    return actions + [STOP]


def _cost_to_go(neighbors: np.ndarray, hops_to_goal: np.ndarray):
    """Memoised fewest actions (without STOP) from (node, yaw) to the goal along shortest paths."""

    @cache
    def cost(node: int, yaw: int) -> int:
        if hops_to_goal[node] == 0:
            return 0
        options = [
            turn_cost(yaw, k) + 1 + cost(int(neighbors[node, k]), k)
            for k in range(4)
            if neighbors[node, k] >= 0 and hops_to_goal[neighbors[node, k]] == hops_to_goal[node] - 1
        ]
        if not options:
            raise ValueError(f"node {node} has no neighbour closer to the goal; the geodesic table is inconsistent")
        return min(options)

    return cost


def oracle_num_actions(neighbors: np.ndarray, hops_to_goal: np.ndarray, start: int, yaw: int) -> int:
    """Length of :func:`oracle_plan` (the SNA reference ``num_action``, STOP included)."""
    return len(oracle_plan(neighbors, hops_to_goal, start, yaw))


def oracle_next_action(neighbors: np.ndarray, hops_to_goal: np.ndarray, node: int, yaw: int) -> int:
    """First action of the oracle plan from the current pose."""
    return oracle_plan(neighbors, hops_to_goal, node, yaw)[0]


def pointgoal_polar(position: np.ndarray, yaw_index: int, goal: np.ndarray) -> np.ndarray:
    """GPS+compass goal in the agent frame as habitat's polar PointGoal sensor: [rho, phi], phi > 0 to the left."""
    dx = float(goal[0] - position[0])
    dz = float(goal[2] - position[2])
    theta = math.radians(90.0 * yaw_index)
    # rotate the world vector by -yaw about +Y into the agent frame (agent looks down -Z)
    ax = dx * math.cos(theta) - dz * math.sin(theta)
    az = dx * math.sin(theta) + dz * math.cos(theta)
    rho = math.hypot(ax, az)
    phi = math.atan2(ax, -az)
    return np.array([rho, -phi], dtype=np.float32)
