"""Preallocated rollout tensors, GAE, and recurrent minibatches split by environment; the window of
finished-episode metrics that training and validation log.

Time index convention: ``obs[t]`` and ``masks[t]`` describe the state before action ``t``;
``masks[t] = 0`` means obs[t] is the first observation of a new episode (the previous step ended one),
so the GRU state is reset there and no value is bootstrapped across that boundary.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from asgf_nav.tasks.metrics import METRIC_NAMES as EPISODE_METRICS


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, masks: torch.Tensor, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (T, N) rewards with (T+1, N) values and masks.

    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t;  A_t = delta_t + gamma * lambda * m_{t+1} * A_{t+1}.
    Returns (advantages (T, N), returns (T, N) = advantages + V_t).
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(steps)):
        not_done = masks[t + 1]
        delta = rewards[t] + gamma * values[t + 1] * not_done - values[t]
        running = delta + gamma * gae_lambda * not_done * running
        advantages[t] = running
    return advantages, advantages + values[:-1]


@dataclass
class Minibatch:
    """A subset of environments with their full sequences: time-major (T, b, ...) tensors, ``hidden`` their
    state at the rollout's start (layers, b, H), ``env_indices`` (b,) which envs they are."""

    env_indices: torch.Tensor
    obs: dict[str, torch.Tensor]
    hidden: torch.Tensor
    masks: torch.Tensor
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    old_values: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor


def torch_dtype(dtype: object) -> torch.dtype:
    """torch dtype of a numpy / gymnasium dtype (or a torch dtype passed through)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


class RolloutStorage:
    """Fixed-size buffers for ``num_steps`` transitions of ``num_envs`` environments on one device."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        observation_specs: Mapping[str, tuple[tuple[int, ...], object]],
        hidden_shape: tuple[int, int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        self.obs = {
            key: torch.zeros(num_steps + 1, num_envs, *shape, dtype=torch_dtype(dtype), device=self.device)
            for key, (shape, dtype) in observation_specs.items()
        }
        layers, hidden_size = hidden_shape
        self.hidden = torch.zeros(layers, num_envs, hidden_size, device=self.device)  # before step 0
        self.actions = torch.zeros(num_steps, num_envs, dtype=torch.long, device=self.device)
        self.log_probs = torch.zeros(num_steps, num_envs, device=self.device)
        self.values = torch.zeros(num_steps + 1, num_envs, device=self.device)
        self.rewards = torch.zeros(num_steps, num_envs, device=self.device)
        self.masks = torch.ones(num_steps + 1, num_envs, device=self.device)
        self.advantages = torch.zeros(num_steps, num_envs, device=self.device)
        self.returns = torch.zeros(num_steps, num_envs, device=self.device)
        self.step = 0

    @classmethod
    def for_space(
        cls,
        num_steps: int,
        num_envs: int,
        observation_space: object,
        hidden_shape: tuple[int, int],
        device: torch.device | str,
    ) -> RolloutStorage:
        spaces = getattr(observation_space, "spaces", observation_space)
        specs = {k: (tuple(s.shape), s.dtype) for k, s in spaces.items()}
        return cls(num_steps, num_envs, specs, hidden_shape, device)

    def start(self, obs: Mapping[str, torch.Tensor], hidden: torch.Tensor, masks: torch.Tensor) -> None:
        """Set the state before step 0 (first rollout, or after restoring a checkpoint)."""
        for key, buffer in self.obs.items():
            buffer[0].copy_(obs[key])
        self.hidden.copy_(hidden)
        self.masks[0].copy_(masks)
        self.step = 0

    def current(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Observations and masks at the current step (inputs to the next ``policy.act``)."""
        return {k: v[self.step] for k, v in self.obs.items()}, self.masks[self.step]

    def insert(
        self,
        next_obs: Mapping[str, torch.Tensor],
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        next_masks: torch.Tensor,
    ) -> None:
        t = self.step
        if t >= self.num_steps:
            raise IndexError(f"rollout storage is full ({self.num_steps} steps); call after_update first")
        for key, buffer in self.obs.items():
            buffer[t + 1].copy_(next_obs[key])
        self.actions[t].copy_(actions)
        self.log_probs[t].copy_(log_probs)
        self.values[t].copy_(values)
        self.rewards[t].copy_(rewards)
        self.masks[t + 1].copy_(next_masks)
        self.step = t + 1

    def compute_advantages_and_returns(self, next_value: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE over the filled rollout, bootstrapped from ``next_value``: sets ``advantages`` and ``returns``
        (new tensors), which ``PPO.update`` reads."""
        self.values[-1].copy_(next_value)
        self.advantages, self.returns = compute_gae(self.rewards, self.values, self.masks, gamma, gae_lambda)

    def after_update(self, next_rollout_hidden: torch.Tensor) -> None:
        """The last observation and mask, and the GRU state after the last step, start the next rollout."""
        for buffer in self.obs.values():
            buffer[0].copy_(buffer[-1])
        self.masks[0].copy_(self.masks[-1])
        self.hidden.copy_(next_rollout_hidden)
        self.step = 0

    def recurrent_minibatches(self, advantages: torch.Tensor, num_mini_batch: int) -> Iterator[Minibatch]:
        """Shuffle environments and yield ``num_mini_batch`` disjoint groups covering each exactly once."""
        if not 1 <= num_mini_batch <= self.num_envs:
            raise ValueError(f"ppo.num_mini_batch ({num_mini_batch}) must be in 1..number of envs ({self.num_envs})")
        permutation = torch.randperm(self.num_envs)
        for env_indices in permutation.tensor_split(num_mini_batch):  # chunk() may give fewer groups
            idx = env_indices.to(self.device)
            t = self.num_steps
            yield Minibatch(  # index_select: on the CPU much faster than v[:, idx] for the observations
                env_indices=env_indices,
                obs={k: v[:t].index_select(1, idx) for k, v in self.obs.items()},
                hidden=self.hidden.index_select(1, idx),
                masks=self.masks[:t].index_select(1, idx),
                actions=self.actions.index_select(1, idx),
                old_log_probs=self.log_probs.index_select(1, idx),
                old_values=self.values[:t].index_select(1, idx),
                returns=self.returns.index_select(1, idx),
                advantages=advantages.index_select(1, idx),
            )


def to_device(obs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """An env's observations (tensors or arrays) on the policy's device."""
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in obs.items()}


class EpisodeWindow:
    """Running window of finished-episode metrics: ``return`` (the undiscounted sum of the episode's rewards)
    and the env's info fields."""

    def __init__(self, size: int) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=size)

    def add(self, episode_returns: torch.Tensor, done: torch.Tensor, info: dict[str, torch.Tensor]) -> None:
        """``episode_returns``: each env's running reward sum (not the GAE targets of RolloutStorage.returns)."""
        done_idx = done.nonzero().flatten().tolist()
        if not done_idx:
            return
        columns = {"return": episode_returns.detach().cpu()}
        columns.update({k: info[k].detach().float().cpu() for k in EPISODE_METRICS if k in info})
        for i in done_idx:
            self.episodes.append({k: float(v[i]) for k, v in columns.items()})

    def means(self) -> dict[str, float]:
        if not self.episodes:
            return {}
        keys = self.episodes[0].keys()
        return {k: float(np.mean([e[k] for e in self.episodes if k in e])) for k in keys}

    def totals(self) -> torch.Tensor:
        """(len(WINDOW_KEYS), 2) float64: each key's sum and count over the window, which DD-PPO ranks add up."""
        rows = [[sum(e[k] for e in self.episodes if k in e), sum(k in e for e in self.episodes)] for k in WINDOW_KEYS]
        return torch.tensor(rows, dtype=torch.float64)


WINDOW_KEYS = ("return", *EPISODE_METRICS)  # what EpisodeWindow keeps, in one order on every rank
