"""AudioGoal navigation task (SoundSpaces 1.0 semantics): episodes, reference gymnasium env, batched env."""

from __future__ import annotations

import gymnasium

from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.episodes import (
    Episode,
    EpisodeError,
    EpisodeSampler,
    ResolvedEpisode,
    episode_dataset_path,
    load_episodes,
    resolve_episodes,
    save_episodes,
)
from asgf_nav.tasks.factory import load_task_data, make_env
from asgf_nav.tasks.navigation import ACTION_NAMES, MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, InvalidActionError
from asgf_nav.tasks.observations import register_observation
from asgf_nav.tasks.world import TaskScene, TaskWorld

ENV_ID = "AudioNav-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="asgf_nav.tasks.audionav_env:AudioNavEnv")

__all__ = [
    "ACTION_NAMES",
    "AudioNavEnv",
    "BatchedAudioNavEnv",
    "ENV_ID",
    "Episode",
    "EpisodeError",
    "EpisodeSampler",
    "InvalidActionError",
    "MOVE_FORWARD",
    "ResolvedEpisode",
    "STOP",
    "TURN_LEFT",
    "TURN_RIGHT",
    "TaskScene",
    "TaskWorld",
    "episode_dataset_path",
    "generate_split",
    "load_episodes",
    "load_task_data",
    "make_env",
    "register_observation",
    "resolve_episodes",
    "save_episodes",
]
