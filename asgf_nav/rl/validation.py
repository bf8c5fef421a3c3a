"""Validation during training: the policy's sampled actions on the val split, each episode counted once.

Validation samples actions from the policy (as SoundSpaces evaluates AV-Nav) with its own seed, inside an
isolated RNG scope, so numbers are comparable across validations and training randomness is untouched;
the trainer restores the val env to the same initial state before each one (``Trainer.validate``).
The val env holds the episodes to validate on (``experiment.make_rank_env``: ``train.val_episodes`` evenly
spaced over the val scenes baked so far, the whole split once the background build ends, so every val scene
counts in proportion; ``val/scenes`` says how many); its sequential stride runs each of
them once. A pending stop (SIGTERM, Ctrl-C) cuts a validation short and drops its partial numbers, so the
checkpoint the stop waits for is written at once; the resumed run starts with that validation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from asgf_nav.config import ExperimentConfig
from asgf_nav.models.policies import Policy
from asgf_nav.rl.rng import capture_rng_state, restore_rng_state, seed_everything
from asgf_nav.rl.rollout import EpisodeWindow, to_device
from asgf_nav.termination import stop_requested

if TYPE_CHECKING:  # the trainer imports this module
    from asgf_nav.rl.trainer import TrainingEnv

VALIDATION_SEED_OFFSET = 7919


class ValidationStopped(RuntimeError):
    """A stop signal arrived during a validation; its partial metrics are not comparable and are dropped."""


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with freshly seeded global generators and restore the previous states afterwards."""
    saved = capture_rng_state(device)
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng_state(saved, device)


def validation_quota(num_envs: int, val_episodes: int, dataset_size: int | None = None) -> list[int]:
    """Episodes each val env counts. Env ``i`` of a sequential stride runs episodes i, i+n, ..., so these
    shares count each of the first ``val_episodes`` episodes (all of them when the env has fewer,
    ``dataset_size``; None: unknown) exactly once, none twice."""
    total = val_episodes if dataset_size is None else min(val_episodes, dataset_size)
    return [len(range(i, total, num_envs)) for i in range(num_envs)]


def run_validation(policy: Policy, env: TrainingEnv, cfg: ExperimentConfig, device: torch.device) -> dict[str, float]:
    """Mean metrics on ``env`` (sampled actions) over each env's share of its first ``train.val_episodes``
    episodes (:func:`validation_quota`). Waiting for every env's fixed share keeps long episodes: stopping
    at the first ``val_episodes`` to finish would favour short ones, and flatter a policy that wanders.

    Raises ValidationStopped once a stop signal is pending: a stopped run checkpoints first."""
    num_envs = int(env.num_envs)
    dataset = len(env.episodes) if hasattr(env, "episodes") else None
    shares = validation_quota(num_envs, int(cfg.train.val_episodes), dataset)
    quota = torch.tensor(shares, dtype=torch.long, device=device)
    window = EpisodeWindow(max(1, sum(shares)))
    finished = torch.zeros(num_envs, dtype=torch.long, device=device)
    policy.eval()
    with isolated_rng(cfg.train.seed + VALIDATION_SEED_OFFSET, device), torch.no_grad():
        obs = to_device(env.reset(), device)
        hidden = policy.initial_hidden(num_envs, device)
        masks = torch.zeros(num_envs, device=device)
        episode_returns = torch.zeros(num_envs, device=device)
        for _ in range((max(shares) + 1) * int(cfg.task.max_steps)):  # a bound; episodes end sooner
            if stop_requested():
                raise ValidationStopped(f"a stop was requested after {len(window.episodes)} episode(s)")
            _, action, _, hidden = policy.act(obs, hidden, masks, deterministic=False)
            obs, reward, done, info = env.step(action.to(getattr(env, "device", "cpu")))
            obs = to_device(obs, device)
            done = torch.as_tensor(done, device=device, dtype=torch.bool)
            episode_returns += torch.as_tensor(reward, device=device, dtype=torch.float32)
            window.add(episode_returns, done & (finished < quota), info)
            finished += done.long()
            episode_returns.masked_fill_(done, 0.0)
            masks = (~done).float()
            if bool((finished >= quota).all()):
                break
    result = window.means()
    result["episodes"] = float(len(window.episodes))
    if hasattr(env, "scene_names"):  # the val split grows while its scenes bake in the background
        result["scenes"] = float(len(env.scene_names))
    return result
