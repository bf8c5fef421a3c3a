"""The batched env and the per-step reference env over the same episodes, for tests that compare them."""

from __future__ import annotations

from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv


def reset_env_pair(world, episodes, num_envs: int, cfg, seed: int) -> tuple[BatchedAudioNavEnv, list[AudioNavEnv]]:
    """A batched env of ``num_envs`` and one reference env per slot (env i draws what slot i draws), reset."""
    batched = BatchedAudioNavEnv(world, episodes, num_envs, cfg=cfg, seed=seed)
    refs = [AudioNavEnv(world, episodes, cfg, seed=seed, env_index=i, num_envs=num_envs) for i in range(num_envs)]
    batched.reset()
    for ref in refs:
        ref.reset()
    return batched, refs
