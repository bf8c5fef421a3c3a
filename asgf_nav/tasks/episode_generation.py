"""Generating AudioGoal episodes from the baked scene graphs, deterministically: the same world and settings
give the same episodes. ``load_or_generate`` caches them in the SoundSpaces layout (``tasks/episodes.py``) with
a record of what they were generated from, and generates a scene again when that record changes.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.config import TaskConfig
from asgf_nav.logging_utils import bar_disabled, bar_pacing
from asgf_nav.scenes.presets import UnknownSceneError
from asgf_nav.tasks.episodes import (
    Episode,
    EpisodeError,
    cache_episode_file,
    episode_dataset_path,
    load_episodes,
    read_episode_file,
    require_episodes,
    scene_id_for,
)
from asgf_nav.tasks.navigation import oracle_num_actions, yaw_to_quaternion
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)


def reachable_goals(
    dist: np.ndarray, source_nodes: Sequence[int], min_distance: float, max_distance: float
) -> list[int]:
    """The source nodes some start node reaches within the geodesic distance bounds (``dist``: (N, N) metres,
    negative where unreachable): the goals an episode can have."""
    return [int(g) for g in source_nodes if np.any((dist[:, g] >= min_distance) & (dist[:, g] <= max_distance))]


def check_distance_bounds(cfg, directories: Sequence[Path]) -> None:
    """Refuse (EpisodeError naming the scenes) ``task.min/max_geodesic_distance`` that leave a baked layout with
    no possible episode: a run finds out in seconds, not when a validation or a later scene needs episodes.
    The goals are the nodes the acoustics stage puts sources on (``acoustics.*``), found from the layout."""
    from asgf_nav.acoustics.bake import select_source_nodes
    from asgf_nav.scenes.scene import Scene

    low, high = float(cfg.task.min_geodesic_distance), float(cfg.task.max_geodesic_distance)
    empty = []
    for directory in directories:
        scene = Scene(directory)
        hops = np.asarray(scene.geodesic_hops)
        dist = np.where(hops >= 0, hops * scene.grid_size, -1.0)
        sources = select_source_nodes(scene.positions, cfg.acoustics.sources_per_scene, cfg.acoustics.source_spread)
        if not reachable_goals(dist, sources, low, high):
            found = dist[:, sources][dist[:, sources] > 0]
            below, above = found[found < low], found[found > high]
            nearest = [f"{below.max():g} m" if below.size else None, f"{above.min():g} m" if above.size else None]
            empty.append(f"{Path(directory).name} (nearest: {' and '.join(d for d in nearest if d) or 'none'})")
    if empty:
        raise EpisodeError(
            f"task.min_geodesic_distance={low} / task.max_geodesic_distance={high} m leave no episode in scene(s) "
            f"{', '.join(empty)}: no start node lies that far from a source node there; widen the bounds"
        )


def generate_scene_episodes(
    scene: TaskScene,
    count: int,
    sounds: Sequence[str],
    seed: int,
    min_distance: float = 1.0,
    max_distance: float = 1000.0,
    first_id: int = 0,
    id_prefix: str = "",
) -> list[Episode]:
    """``count`` episodes in one scene: goal among the acoustic source nodes, start within the distance bounds."""
    if not sounds:
        raise EpisodeError(f"no sounds given for episodes of scene {scene.name}")
    rng = np.random.default_rng(seed)
    hops = np.asarray(scene.geodesic_hops)
    dist = np.where(hops >= 0, hops * scene.grid_size, -1.0)
    goals = reachable_goals(dist, scene.source_nodes, min_distance, max_distance)
    if not goals:
        raise EpisodeError(
            f"scene {scene.name}: no source node has a start node within geodesic distance "
            f"[{min_distance}, {max_distance}] m"
        )
    episodes = []
    for i in range(count):
        goal = goals[int(rng.integers(len(goals)))]
        starts = np.flatnonzero((dist[:, goal] >= min_distance) & (dist[:, goal] <= max_distance))
        start = int(starts[int(rng.integers(starts.size))])
        yaw = int(rng.integers(4))
        sound = str(sounds[int(rng.integers(len(sounds)))])
        num_action = oracle_num_actions(scene.neighbors, hops[:, goal], start, yaw)
        episodes.append(
            Episode(
                episode_id=f"{id_prefix}{first_id + i}",
                scene_id=scene_id_for(scene.dataset, scene.name),
                start_position=[round(float(v), 6) for v in scene.positions[start]],
                start_rotation=yaw_to_quaternion(yaw),
                goal_position=[round(float(v), 6) for v in scene.positions[goal]],
                sound=sound,
                geodesic_distance=round(float(dist[start, goal]), 6),
                num_action=num_action,
            )
        )
    return episodes


def episode_counts(split: str, scenes: Sequence[str], task_cfg: TaskConfig) -> dict[str, int]:
    """Episodes per scene: train has a per-scene count, val/test a total spread evenly over the scenes."""
    if split == "train":
        return {s: int(task_cfg.train_episodes_per_scene) for s in scenes}
    total = int(task_cfg.val_episodes if split == "val" else task_cfg.test_episodes)
    base, extra = divmod(total, len(scenes))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(scenes)}


def generate_split(
    world: TaskWorld, split: str, sound_split: str, sounds: Sequence[str], task_cfg: TaskConfig
) -> list[Episode]:
    """All episodes of one split over the world's scenes (sorted by name), deterministic: the episodes
    ``load_or_generate`` writes for the same world and config, ids included (``scene:i``)."""
    names = sorted(world.scenes)
    counts = episode_counts(split, names, task_cfg)
    episodes: list[Episode] = []
    for name in tqdm(
        names, desc=f"episodes {world.dataset}/{split}", disable=bar_disabled(len(names) >= 4), **bar_pacing()
    ):
        episodes += split_scene_episodes(world, name, split, sound_split, sounds, counts[name], task_cfg)
    return episodes


def split_scene_episodes(
    world: TaskWorld, name: str, split: str, sound_split: str, sounds: Sequence[str], count: int, task_cfg: TaskConfig
) -> list[Episode]:
    """One scene's episodes of a split, seeded by the dataset, split, sound split and scene alone: a scene's
    episodes do not change when other scenes join the world."""
    seed = zlib.crc32(f"{world.dataset}/{split}/{sound_split}/{name}".encode())
    return generate_scene_episodes(
        world.scene(name), count, sounds, seed,
        float(task_cfg.min_geodesic_distance), float(task_cfg.max_geodesic_distance), id_prefix=f"{name}:",
    )  # fmt: skip


GENERATION_KEY = "asgf_nav_generation"
GENERATION_FORMAT = 3  # 2: yaw 270 written as [0, 0.707, 0, -0.707] (1 wrote [0, -0.707, 0, 0.707]); 3: graph


def graph_digest(scene: TaskScene) -> int:
    """Checksum of what generated episodes read of a scene's navigation graph: grid, node positions (as
    episodes store them), forward neighbours (num_action) and geodesic hops (distances, start choice).

    A scene baked or imported again with another graph but the same source nodes thus gets new episodes.
    """
    crc = zlib.crc32(np.float64(scene.grid_size).tobytes())
    positions = np.round(np.asarray(scene.positions, dtype=np.float64), 6)
    hops = np.asarray(scene.geodesic_hops)  # N x N: hashed as stored (a memory map is read, not copied)
    for array in (positions, np.asarray(scene.neighbors, dtype=np.int64), hops):
        crc = zlib.crc32(np.ascontiguousarray(array), crc)
    return crc


def generation_record(
    world: TaskWorld, scene: str, split: str, sound_split: str, sounds: Sequence[str], count: int, task_cfg: TaskConfig
) -> dict[str, Any]:
    """Everything a generated scene's episodes depend on; a content file whose record differs is regenerated."""
    return {
        "format": GENERATION_FORMAT,
        "dataset": world.dataset, "scene": scene, "split": split, "sound_split": sound_split, "count": int(count),
        "sounds": zlib.crc32("\n".join(sounds).encode()),  # in order: generation draws sounds by index
        "source_nodes": zlib.crc32(np.asarray(world.scene(scene).source_nodes, dtype=np.int64).tobytes()),
        "graph": graph_digest(world.scene(scene)),
        "min_geodesic_distance": float(task_cfg.min_geodesic_distance),
        "max_geodesic_distance": float(task_cfg.max_geodesic_distance),
    }  # fmt: skip


def load_or_generate(
    root: str | Path,
    world: TaskWorld,
    split: str,
    sound_split: str,
    sounds: Sequence[str],
    task_cfg: TaskConfig,
    split_scenes: Sequence[str] | None = None,
    generate: bool = True,
) -> list[Episode]:
    """The split's episodes for the world's scenes, generating (and saving) any scene whose file is missing.

    Generated per-scene files record their generation settings and are regenerated when those change
    (e.g. other distance bounds, a val/test total spread over a different number of scenes, or a scene
    whose navigation graph changed when it was baked or imported again); files
    without that record (real SoundSpaces datasets) are read as they are. ``split_scenes`` are the scenes
    the val/test total is spread over, as ``generate_split`` spreads it (default: the world's scenes), so a
    scene's count does not depend on which of them are baked yet. Without ``generate`` (SoundSpaces' own
    download) nothing is generated or written under ``root``: a missing file is an error.
    """
    path = episode_dataset_path(root, world.dataset, split, sound_split)
    names = sorted(world.scenes)
    if path.exists() and read_episode_file(path)["episodes"]:  # a dataset listing its episodes in the split file
        return require_episodes(load_episodes(path, scenes=names), path)
    episodes: list[Episode] = []
    counts: dict[str, int] = {}
    for name in names:
        file = path.parent / "content" / f"{name}.json.gz"
        if not generate and not file.exists():
            raise EpisodeError(
                f"SoundSpaces episode file {file} does not exist (nor episodes in {path}); extract it again from "
                "the SoundSpaces download"
            )
        try:
            data = read_episode_file(file) if file.exists() else None
        except EpisodeError as exc:  # it may be a dataset's own file, so it is not replaced unasked
            if not generate:
                raise EpisodeError(f"{exc}; extract it again from the SoundSpaces download") from None
            raise EpisodeError(
                f"{exc}; if this project generated it, delete it and it is generated again; if it came with the "
                "SoundSpaces data, extract it again from that download"
            ) from None
        if data is not None and (GENERATION_KEY not in data or not generate):  # not generated by us: as it is
            episodes += [Episode.from_json(r, str(file)) for r in data["episodes"]]
            continue
        counts = counts or episode_counts(split, sorted(split_scenes or names), task_cfg)  # once, when needed
        if name not in counts:
            raise UnknownSceneError(f"scene {name!r} is not among the {split} scenes {sorted(counts)}")
        per_scene = counts[name]
        wanted = generation_record(world, name, split, sound_split, sounds, per_scene, task_cfg)
        if data is not None and data[GENERATION_KEY] == wanted:
            episodes += [Episode.from_json(r, str(file)) for r in data["episodes"]]
            continue
        generated = split_scene_episodes(world, name, split, sound_split, sounds, per_scene, task_cfg)
        if cache_episode_file(file, {"episodes": [e.to_json() for e in generated], GENERATION_KEY: wanted}):
            logger.info("wrote %d %s episodes of %s to %s", len(generated), split, name, file)
        episodes += generated
    if generate and not path.exists():
        cache_episode_file(path, {"episodes": []})
    return require_episodes(episodes, path.parent / "content")
