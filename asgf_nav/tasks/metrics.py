"""Reward and episode metrics of SoundSpaces 1.0 AudioGoal (one formula each, shared by both envs).

Every function works elementwise on python floats, numpy arrays and torch tensors alike.

- reward = slack + scale * (previous geodesic distance - current) + success_reward if STOP at the goal node
- success = STOP called and distance to goal < success_distance (strict)
- SPL = success * d0 / max(d0, L), L the Euclidean length walked
- SoftSPL = max(0, 1 - dT / d0) * d0 / max(d0, L)
- SNA = success * num_action / max(num_action, NA), NA the actions taken including STOP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

METRIC_NAMES = ("success", "spl", "softspl", "sna", "distance_to_goal", "num_actions")


def _maximum(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return np.maximum(a, b)


def step_reward(
    prev_distance, distance, stop_at_goal, slack: float = -0.01, scale: float = 1.0, success_reward: float = 10.0
):
    """Per-step reward; ``stop_at_goal`` is true only when STOP is called on the goal node itself."""
    return slack + scale * (prev_distance - distance) + success_reward * stop_at_goal


def success(called_stop, distance, success_distance: float = 1.0):
    return called_stop & (distance < success_distance)


def spl(succ, start_distance, path_length):
    return succ * start_distance / _maximum(start_distance, path_length)


def softspl(start_distance, distance, path_length):
    safe_d0 = _maximum(start_distance, 1e-9)
    progress = _maximum(1.0 - distance / safe_d0, 0.0)
    return progress * start_distance / _maximum(start_distance, path_length)


def sna(succ, num_action, num_actions):
    return succ * num_action / _maximum(num_action, num_actions)


def episode_metrics(
    called_stop: bool,
    start_distance: float,
    distance: float,
    path_length: float,
    num_action: int,
    num_actions: int,
    success_distance: float = 1.0,
) -> dict[str, float]:
    """All metrics of one finished episode as python floats (keys :data:`METRIC_NAMES`)."""
    succ = float(bool(called_stop) and distance < success_distance)
    return {
        "success": succ,
        "spl": float(spl(succ, start_distance, path_length)) if start_distance > 0 else succ,
        "softspl": float(softspl(start_distance, distance, path_length)) if start_distance > 0 else succ,
        "sna": float(sna(succ, num_action, num_actions)),
        "distance_to_goal": float(distance),
        "num_actions": float(num_actions),
    }
