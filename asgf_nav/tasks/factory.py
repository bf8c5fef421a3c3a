"""Build AudioGoal environments from an experiment config: the world, the episodes and the batched env
(``make_env``); the per-step reference env reuses ``load_task_data``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asgf_nav.config import ExperimentConfig, check_values
from asgf_nav.devices import resolve_device
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import load_or_generate
from asgf_nav.tasks.episodes import Episode
from asgf_nav.tasks.world import TaskWorld, load_world, sound_names

logger = logging.getLogger(__name__)


def episodes_root(cfg: Any) -> Path:
    """Where episode datasets live: SoundSpaces' own root when its data is used, else {data_root}."""
    from asgf_nav.scenes.soundspaces_import import scene_source, soundspaces_root

    return soundspaces_root(cfg) if scene_source(cfg) == "soundspaces" else Path(cfg.scenes.data_root)


def split_episodes(
    cfg: Any, world: TaskWorld, split: str, sounds: Sequence[str], split_scenes: Sequence[str] | None = None
) -> list[Episode]:
    """The split's episodes: generated for the embedded scenes; read, never written, from SoundSpaces data."""
    from asgf_nav.scenes.soundspaces_import import scene_source

    generate = scene_source(cfg) != "soundspaces"
    return load_or_generate(
        episodes_root(cfg), world, split, cfg.task.sound_split, sounds, cfg.task, split_scenes, generate=generate
    )


def spectrogram_store_root(cfg: Any) -> Path | None:
    """Root of baked spectrograms for ``cfg`` (``task.spectrogram_store``), or None when switched off."""
    value = str(cfg.task.spectrogram_store or "")
    if not value:
        return None
    return episodes_root(cfg) / "spectrograms" if value == "auto" else Path(value)


def split_scene_names(cfg: Any, split: str) -> list[str] | None:
    """Scenes a val/test episode total is spread over: the whole split, even while some still bake."""
    from asgf_nav.scenes.presets import PRESETS
    from asgf_nav.scenes.soundspaces_import import scene_source

    if scene_source(cfg) == "soundspaces" or cfg.scenes.dataset not in PRESETS:
        return None
    return list(PRESETS[cfg.scenes.dataset].split_scenes(split, cfg.scenes.num_scenes))


def split_sound_names(cfg: Any, split: str, world: TaskWorld) -> list[str]:
    """The sounds a split's episodes play: the sound bank's list for the embedded scenes; for SoundSpaces
    data the sounds its episode files name in ``world``'s scenes (its sounds are not the bank's)."""
    from asgf_nav.scenes.soundspaces_import import scene_source

    if scene_source(cfg) != "soundspaces":
        return sound_names(cfg, split)
    return sorted({e.sound for e in split_episodes(cfg, world, split, [])})


def load_task_data(cfg: Any, split: str, scenes: Sequence[str] | None = None) -> tuple[TaskWorld, list[Episode]]:
    """The split's world and its episodes (generated and saved on first use)."""
    world = load_world(cfg, split, scenes)
    sounds = sound_names(cfg, split)
    episodes = split_episodes(cfg, world, split, sounds, split_scene_names(cfg, split))
    logger.info(
        "%s %s/%s (%s sounds): %d episodes in %d scene(s)",
        cfg.scenes.dataset,
        split,
        cfg.task.sound_split,
        len(set(e.sound for e in episodes)),
        len(episodes),
        len(world.scenes),
    )
    return world, episodes


def make_env(
    cfg: Any,
    split: str,
    device: str | torch.device | None = "auto",
    num_envs: int | None = None,
    scenes: Sequence[str] | None = None,
    seed: int | None = None,
    sampler_mode: str | None = None,
    world: TaskWorld | None = None,
    episodes: Sequence[Episode] | None = None,
    config_path: str | Path | None = None,
) -> BatchedAudioNavEnv:
    """Batched env for ``split``: training samples shuffled episodes, val/test stride through them once.
    ``config_path``, the config file to name in the command that bakes a stale spectrogram store file again
    (training passes the run's ``config.yaml``, every override resolved; without it: a ``<config>``
    placeholder)."""
    if isinstance(cfg, ExperimentConfig):  # load_config checked it, but code may have edited it since
        check_values(cfg)
    if world is None or episodes is None:
        world, episodes = load_task_data(cfg, split, scenes)
    return BatchedAudioNavEnv(
        world,
        episodes,
        num_envs=int(num_envs if num_envs is not None else cfg.ppo.num_envs),
        device=resolve_device(device),
        cfg=cfg,
        seed=int(seed if seed is not None else cfg.train.seed),
        sampler_mode=sampler_mode or ("shuffle" if split == "train" else "sequential"),
        spectrogram_store=spectrogram_store_root(cfg),
        split=split,
        config_path=config_path,
    )
