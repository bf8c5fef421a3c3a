"""Direction Follower baseline (SoundSpaces / AV-WAN): follow the predicted direction of arrival.

A supervised audio model (:mod:`baselines.audio_model`) predicts the source azimuth (8 bins) and whether
the goal is within the success distance. The agent sets an intermediate goal ``waypoint_distance`` metres
along the predicted direction, walks there along the navigation graph (a shortest-path planner stands in
for the PointNav agent of the published baseline) and predicts again when it arrives, when it has
followed one waypoint for ``replan_steps`` steps, or after a collision. It calls STOP when the model
says the goal is close.

Deviations: the planner reads the scene's full navigation graph (a privileged map the published
baseline's learned PointNav agent does not have), and ``waypoint_distance`` is fixed at 2 m rather than
tuned on the validation split.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from asgf_nav.eval.evaluator import Agent, AgentContext
from asgf_nav.tasks.navigation import STOP
from baselines.audio_model import AudioGoalNet, bin_angle
from baselines.planning import agent_to_world, nearest_reachable_node, next_action_towards


class DirectionFollowerAgent(Agent):
    name = "direction_follower"
    sensors: tuple[str, ...] = ("spectrogram",)

    def __init__(
        self, model: AudioGoalNet, waypoint_distance: float = 2.0, replan_steps: int = 8, close_threshold: float = 0.5
    ) -> None:
        self.model = model.eval()
        self.waypoint_distance = waypoint_distance
        self.replan_steps = replan_steps
        self.close_threshold = close_threshold
        self.waypoints = np.full(0, -1, dtype=np.int64)
        self.age = np.zeros(0, dtype=np.int64)

    def reset(self, num_envs: int) -> None:
        self.waypoints = np.full(num_envs, -1, dtype=np.int64)
        self.age = np.zeros(num_envs, dtype=np.int64)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        b = len(ctx.nodes)
        if len(self.waypoints) != b:
            self.reset(b)
        out = self.model(obs["spectrogram"].cpu())
        close = torch.sigmoid(out["close"]).numpy() > self.close_threshold
        azimuth = bin_angle(out["direction"].argmax(-1).numpy())
        actions = np.empty(b, dtype=np.int64)
        for i in range(b):
            scene, node, yaw = ctx.scenes[i], int(ctx.nodes[i]), int(ctx.yaws[i])
            if ctx.new_episode[i]:
                self.waypoints[i] = -1
            if close[i]:
                actions[i] = STOP
                continue
            stale = (
                self.waypoints[i] < 0
                or self.waypoints[i] == node
                or self.age[i] >= self.replan_steps
                or ctx.collided[i]
            )
            if stale:
                point = agent_to_world(
                    np.asarray(scene.positions[node]),
                    yaw,
                    self.waypoint_distance * math.cos(azimuth[i]),
                    self.waypoint_distance * math.sin(azimuth[i]),
                )
                # another node: where the direction points into a wall the agent's own node can be the
                # closest, and it would stand (or bump ahead) there until the step limit
                self.waypoints[i] = nearest_reachable_node(scene, point, node, leave=True)
                self.age[i] = 0
            self.age[i] += 1
            actions[i] = next_action_towards(scene, node, yaw, int(self.waypoints[i]))
        return actions
