"""Reward and episode metrics of SoundSpaces 1.0 AudioGoal: one formula each, called by both envs.

Every function works elementwise on python floats, numpy arrays and torch tensors alike, so the single
env applies them to one agent and the batched env to its (B,) arrays in one call.

- reward = slack + scale * (previous geodesic distance - current) + success_reward if STOP at the goal node
- success = STOP called and distance to goal < success_distance (strict)
- SPL = success * d0 / max(d0, L), L the Euclidean length walked, d0 the graph distance at the start
- SoftSPL = max(0, 1 - dT / d0) * d0 / max(d0, L)
- SNA = success * oracle_actions / max(oracle_actions, NA), oracle_actions the episode's ``num_action``
  (the oracle's action count), NA the agent's actions including STOP (logged as ``num_actions``)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

METRIC_NAMES = ("success", "spl", "softspl", "sna", "distance_to_goal", "num_actions")


def _is_tensor(*values: Any) -> bool:
    return any(isinstance(v, torch.Tensor) for v in values)


def _maximum(a: Any, b: Any) -> Any:
    if _is_tensor(a, b):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return np.maximum(a, b)


def _where(cond: Any, a: Any, b: Any) -> Any:
    if _is_tensor(cond, a, b):
        return torch.where(torch.as_tensor(cond), torch.as_tensor(a), torch.as_tensor(b))
    return np.where(cond, a, b)


def step_reward(
    prev_distance, distance, stop_at_goal, slack: float = -0.01, scale: float = 1.0, success_reward: float = 10.0
):
    """Per-step reward; ``stop_at_goal`` is true only when STOP is called on the goal node itself."""
    return slack + scale * (prev_distance - distance) + success_reward * stop_at_goal


def success(called_stop, distance, success_distance: float = 1.0):
    return called_stop & (distance < success_distance)


def spl(succ, start_distance, path_length):
    # the 1e-12 floor only keeps d0 = L = 0 from dividing 0 by 0 (episode_metrics scores that case apart)
    return succ * start_distance / _maximum(_maximum(start_distance, path_length), 1e-12)


def softspl(start_distance, distance, path_length):
    safe_d0 = _maximum(start_distance, 1e-9)
    progress = _maximum(1.0 - distance / safe_d0, 0.0)
    return progress * start_distance / _maximum(_maximum(start_distance, path_length), 1e-12)


def sna(succ, oracle_actions, num_actions):
    return succ * oracle_actions / _maximum(oracle_actions, num_actions)


def episode_metrics_array(
    called_stop: Any,
    start_distance: Any,
    distance: Any,
    path_length: Any,
    oracle_actions: Any,
    num_actions: Any,
    success_distance: float = 1.0,
) -> dict[str, Any]:
    """All metrics of finished episodes, elementwise (keys :data:`METRIC_NAMES`, float64 / float values).

    A start on the goal (d0 = 0, possible only with ``task.min_geodesic_distance=0``) left without a step scores
    SPL and SoftSPL as its success, where habitat would divide 0 by 0; a walk away and back scores habitat's
    d0 / max(d0, L) = 0, as any path longer than needed is charged.
    """
    succ = success(called_stop, distance, success_distance) * 1.0
    stayed_on_goal = (start_distance <= 0) & (path_length <= 0)
    return {
        "success": succ,
        "spl": _where(stayed_on_goal, succ, spl(succ, start_distance, path_length)),
        "softspl": _where(stayed_on_goal, succ, softspl(start_distance, distance, path_length)),
        "sna": sna(succ, oracle_actions, num_actions),
        "distance_to_goal": distance * 1.0,
        "num_actions": num_actions * 1.0,
    }


def episode_metrics(
    called_stop: bool,
    start_distance: float,
    distance: float,
    path_length: float,
    oracle_actions: int,
    num_actions: int,
    success_distance: float = 1.0,
) -> dict[str, float]:
    """All metrics of one finished episode as python floats (keys :data:`METRIC_NAMES`)."""
    values = episode_metrics_array(
        bool(called_stop),
        float(start_distance),
        float(distance),
        float(path_length),
        float(oracle_actions),
        float(num_actions),
        success_distance,
    )
    return {k: float(v) for k, v in values.items()}
