"""Gan et al. ("Look, listen, and act") baseline: predict where the sound is, plan there, replan as it updates.

The supervised audio model (:mod:`baselines.audio_model`) regresses the source position in the agent's
frame; the agent turns each prediction into world coordinates and keeps an exponential moving average
of them over the episode. The goal estimate is the reachable graph node nearest that average; a
shortest-path planner takes the next step towards it, and the agent calls STOP when it stands on its
current goal estimate, which can happen on the first step, before it has moved.

Deviation: Gan et al. plan on a map the agent builds from what it sees; here the planner reads the
scene's full navigation graph (a privileged map: unseen rooms are known, and the agent never collides).
"""

from __future__ import annotations

import numpy as np
import torch

from asgf_nav.eval.evaluator import Agent, AgentContext
from baselines.audio_model import AudioGoalNet
from baselines.planning import agent_to_world, nearest_reachable_node, next_action_towards


class GanAgent(Agent):
    name = "gan"
    sensors: tuple[str, ...] = ("spectrogram",)

    def __init__(self, model: AudioGoalNet, smoothing: float = 0.5) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.model = model.eval()
        self.smoothing = smoothing
        self.estimates = np.zeros((0, 2))

    def reset(self, num_envs: int) -> None:
        self.estimates = np.zeros((num_envs, 2))

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        b = len(ctx.nodes)
        if len(self.estimates) != b:
            self.reset(b)
        relative = self.model(obs["spectrogram"].cpu())["position"].numpy().astype(np.float64)
        actions = np.empty(b, dtype=np.int64)
        for i in range(b):
            scene, node, yaw = ctx.scenes[i], int(ctx.nodes[i]), int(ctx.yaws[i])
            world = agent_to_world(np.asarray(scene.positions[node]), yaw, relative[i, 0], relative[i, 1])
            if ctx.new_episode[i]:
                self.estimates[i] = world
            else:
                self.estimates[i] = (1 - self.smoothing) * self.estimates[i] + self.smoothing * world
            goal = nearest_reachable_node(scene, self.estimates[i], node)
            actions[i] = next_action_towards(scene, node, yaw, goal)  # STOP when standing on the estimate
        return actions
