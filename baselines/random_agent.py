"""Random agent of SoundSpaces' Table I: uniform MOVE_FORWARD / TURN_LEFT / TURN_RIGHT, with a STOP rule.

SoundSpaces' papers do not spell out their random agent's STOP rule; this one is read as habitat-baselines'
``RandomAgent``, the published numbers fitting it (below): it samples uniformly among the three motion
actions and calls STOP as soon as its goal sensor says the goal is within the success distance
(``stop_rule="goal"``). That sensor (PointGoal) gives the straight-line distance in the floor plane,
while success needs the geodesic distance (here grid steps x grid size) below 1 m, and this agent keeps
habitat-baselines' rule as it is. So it also stops where the two distances disagree: on a diagonal
neighbour of the goal (0.71 m in a straight line, two steps = 1.0 m along the graph, a failure under the
strict success rule) and beside the goal behind a wall. On the Replica-like test split two thirds of its
STOPs are such failures, almost all on diagonal neighbours (counts in docs/results.md, "The random
agent's STOP rule"). The comparison is ``<``; habitat-baselines' ``<=`` would add STOPs on nodes exactly
1.0 m away in a straight line (two steps along an axis), which fail too.

A walker that never stops scores exactly 0 under "success = STOP within 1 m", so the published 18.5 % SR
on Replica (SPL 4.9, SNA 1.8) can only come from such a stopping rule: the agent succeeds when its random
walk passes near the source, and its long wandering path explains the small SPL / SR ratio (about 0.26)
and the tiny SNA. ``stop_rule="random"`` is the other reading (STOP as one of four uniform actions); it
ends most episodes within a few steps far from the goal and gives an SR near zero, far from the published
numbers. docs/results.md compares both on the embedded test split.
"""

from __future__ import annotations

import numpy as np
import torch

from asgf_nav.eval.evaluator import Agent, AgentContext
from asgf_nav.tasks.navigation import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT

MOTIONS = np.array([MOVE_FORWARD, TURN_LEFT, TURN_RIGHT], dtype=np.int64)
STOP_RULES = ("goal", "random")


class RandomAgent(Agent):
    name = "random"
    sensors: tuple[str, ...] = ()

    def __init__(self, seed: int = 0, stop_rule: str = "goal") -> None:
        if stop_rule not in STOP_RULES:
            raise ValueError(f"unknown random-agent stop rule {stop_rule!r}; expected one of {STOP_RULES}")
        self.stop_rule = stop_rule
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        b = len(ctx.nodes)
        if self.stop_rule == "random":
            return self.rng.integers(0, 4, size=b).astype(np.int64)
        actions = MOTIONS[self.rng.integers(0, len(MOTIONS), size=b)]
        for i, (scene, ep) in enumerate(zip(ctx.scenes, ctx.episodes)):
            here = np.asarray(scene.positions[int(ctx.nodes[i])], dtype=np.float64)
            goal = np.asarray(scene.positions[ep.goal_node], dtype=np.float64)
            # habitat's PointGoal sensor distance: Euclidean in the floor plane
            if np.hypot(goal[0] - here[0], goal[2] - here[2]) < ctx.success_distance:
                actions[i] = STOP
        return actions
