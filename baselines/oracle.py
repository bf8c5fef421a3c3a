"""Oracle agent: follows the fewest-action shortest path to the goal on the navigation graph and stops there.

It reads the goal from the episode, so it is an upper bound (SR = SPL = SNA = 1 on every reachable
episode), used to check the evaluator and to draw the reference path in trajectory maps.
"""

from __future__ import annotations

import numpy as np
import torch

from asgf_nav.eval.evaluator import Agent, AgentContext
from baselines.planning import next_action_towards


class OracleAgent(Agent):
    name = "oracle"
    sensors: tuple[str, ...] = ()

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        actions = np.empty(len(ctx.nodes), dtype=np.int64)
        for i, (scene, ep) in enumerate(zip(ctx.scenes, ctx.episodes)):
            actions[i] = next_action_towards(scene, int(ctx.nodes[i]), int(ctx.yaws[i]), ep.goal_node)
        return actions
