"""SoundSpaces 1.0 data as the task's world: the split's downloaded scenes as ``TaskScene``s.

The readers of the SoundSpaces layout live in :mod:`asgf_nav.scenes.soundspaces`; this module only
assembles what they read into the :class:`~asgf_nav.tasks.world.TaskWorld` that
:func:`asgf_nav.tasks.world.load_world` returns when the config resolves to SoundSpaces data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.config import ConfigError
from asgf_nav.logging_utils import bar_disabled, bar_pacing
from asgf_nav.scenes.presets import UnknownSceneError
from asgf_nav.scenes.scene import Scene
from asgf_nav.scenes.soundspaces import (
    RIR_REMEDY,
    SoundSpacesDataError,
    SoundSpacesPaths,
    SoundSpacesRirs,
    SoundSpacesSounds,
    dataset_spec,
)
from asgf_nav.scenes.soundspaces_import import check_downloaded, import_scene, scene_source, soundspaces_root
from asgf_nav.tasks.episodes import episode_dataset_path, load_episodes
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)


def split_scenes(paths: SoundSpacesPaths, split: str, sound_split: str) -> list[str]:
    """Every scene of a split, downloaded or not: the scenes of its SoundSpaces episode dataset."""
    path = episode_dataset_path(paths.root, paths.dataset, split, sound_split)
    content = path.parent / "content"
    files = [f for f in content.glob("*.json.gz") if not f.name.startswith(".")] if content.is_dir() else []
    if files:  # a hidden file (macOS's "._" companions) is no scene
        return sorted(f.name[: -len(".json.gz")] for f in files)
    if path.exists():
        names = sorted({e.scene_name for e in load_episodes(path)})
        if not names:  # not "none of the scenes [] is downloaded"
            raise SoundSpacesDataError(
                f"SoundSpaces episode dataset {path} lists no episodes and {content} holds no scene file; "
                "extract the split again from the SoundSpaces download"
            )
        return names
    also = f" (nor episodes in {path.parent}_unheard/)" if sound_split == "unheard" and split != "train" else ""
    raise SoundSpacesDataError(
        f"SoundSpaces episode dataset {path} does not exist{also}; the {split} scenes are the scenes of its "
        f"content/ folder (download datasets/audionav/{paths.dataset}, see docs/data.md)"
    )


def downloaded_split_scenes(paths: SoundSpacesPaths, split: str, sound_split: str) -> list[str]:
    """Downloaded scenes of a split."""
    names = split_scenes(paths, split, sound_split)
    path = episode_dataset_path(paths.root, paths.dataset, split, sound_split)
    available = set(paths.available_scenes())
    chosen = [n for n in names if n in available]
    if not chosen:
        raise SoundSpacesDataError(
            f"none of the {split} scenes {names} of {path} is downloaded under {paths.root}: {names[0]} lacks "
            f"{' and '.join(paths.missing_parts(names[0]))}"
        )
    if len(chosen) < len(names):
        # results on a test split with scenes missing do not compare with the papers': said as a warning
        logger.log(
            logging.WARNING if split == "test" else logging.INFO,
            "SoundSpaces %s/%s: using the %d downloaded scenes of %d (%s missing)",
            paths.dataset,
            split,
            len(chosen),
            len(names),
            sorted(set(names) - available),
        )
    return chosen


def soundspaces_split_scenes(cfg: Any, split: str) -> list[str]:
    """The downloaded SoundSpaces scenes of ``split`` that a run on ``cfg`` loads (each DD-PPO rank its share)."""
    paths = SoundSpacesPaths(soundspaces_root(cfg), cfg.scenes.dataset)
    return downloaded_split_scenes(paths, split, cfg.task.sound_split)


def open_task_scene(
    paths: SoundSpacesPaths,
    data_root: str | Path,
    scene: str,
    need_vision: bool = False,
    rir_cache_bytes: int = 64 * 2**20,
    on_missing: str = "error",
) -> TaskScene:
    """One SoundSpaces scene as a ``TaskScene``: imported graph/views, RIRs read lazily from the wav files.

    The scene keeps SoundSpaces' node ids, so that messages name a node by the id its files use.
    """
    store_scene = Scene(import_scene(paths, data_root, scene))
    if need_vision and not store_scene.has_vision:
        raise SoundSpacesDataError(
            f"scene {paths.dataset}/{scene} has no rendered views: {paths.observations_file(scene)} "
            "does not exist. "
            "Render them with SoundSpaces' scripts/cache_observations.py, or run audio-only by removing "
            "rgb and "
            "depth from task.sensors"
        )
    absent = [str(a) for a in (0, 90, 180, 270) if not (paths.rir_dir(scene) / str(a)).is_dir()]
    if absent:  # found here, not as one error (or, with silence, one warning per file) deep in training
        problem = f"{paths.rir_dir(scene)} lacks the azimuth folders {absent}; {RIR_REMEDY}"
        if on_missing == "error":
            raise SoundSpacesDataError(problem)
        logger.warning("%s (every RIR of those azimuths is heard as silence)", problem)
    node_ids = np.array(store_scene.store.array("soundspaces_node_ids"))
    sources = np.array(store_scene.store.array("source_nodes"))
    rirs = SoundSpacesRirs(
        paths, scene, node_ids, sources, cache_bytes=rir_cache_bytes, on_missing=on_missing, data_root=data_root
    )
    return TaskScene(
        name=scene,
        dataset=paths.dataset,
        grid_size=store_scene.grid_size,
        positions=np.asarray(store_scene.positions, dtype=np.float64),  # float64: SoundSpaces' position keys
        neighbors=np.asarray(store_scene.neighbors),
        geodesic_hops=store_scene.geodesic_hops,
        source_nodes=sources,
        sample_rate=rirs.sample_rate,
        rir=rirs.rir,
        rgb=store_scene.rgb if store_scene.has_vision else None,
        depth=store_scene.depth if store_scene.has_vision else None,
        node_ids=node_ids,
    )


def check_soundspaces_view_sizes(paths: SoundSpacesPaths, scenes: dict[str, TaskScene], image_size: int) -> None:
    """One observation space and one visual CNN serve a world, so every views pickle must hold images of
    one size (users render them with habitat-sim, so sizes can differ between scenes or sensors), and that
    size is ``scenes.image_size``: the run's config.yaml and its checkpoints record the size it saw."""
    sizes = {}
    for name, scene in scenes.items():
        for sensor, views in (("rgb", scene.rgb), ("depth", scene.depth)):
            if views is not None:
                sizes[f"{paths.observations_file(name)} {sensor}"] = tuple(int(n) for n in np.shape(views)[2:4])
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{where}: {h}x{w}" for where, (h, w) in sizes.items())
        raise SoundSpacesDataError(f"the views differ in size ({listed}); render them all at one size")
    if sizes and set(sizes.values()) != {(image_size, image_size)}:
        where, (height, width) = next(iter(sizes.items()))
        fix = f"set scenes.image_size={height}" if height == width else "render them square"
        raise SoundSpacesDataError(
            f"the views are {height}x{width} ({where}), not the scenes.image_size={image_size} the config asks for; "
            f"{fix}"
        )


def check_no_scene_count(cfg: Any) -> None:
    """``scenes.num_scenes`` on SoundSpaces data would be recorded as the run's and change nothing."""
    if cfg.scenes.num_scenes is not None:
        raise ConfigError(
            f"scenes.num_scenes={cfg.scenes.num_scenes} picks among the embedded scene set's scenes, but the scenes "
            "are SoundSpaces data here (scenes.source), of which every downloaded scene of a split is loaded; "
            "remove it (scenes.num_scenes=null)"
        )


def load_soundspaces_world(cfg: Any, split: str, scenes: Sequence[str] | None = None):
    """The split's ``TaskWorld`` from SoundSpaces data, or None when ``cfg`` resolves to embedded scenes."""
    if scene_source(cfg) != "soundspaces":
        return None
    check_no_scene_count(cfg)
    paths = SoundSpacesPaths(soundspaces_root(cfg), cfg.scenes.dataset)
    if scenes is not None:
        names = list(scenes)
        in_split = split_scenes(paths, split, cfg.task.sound_split)
        outside = [n for n in names if n not in in_split]
        if outside:  # a test scene evaluated as val, or trained on, would leak silently
            raise UnknownSceneError(
                f"SoundSpaces {paths.dataset} split {split!r} has no scene {', '.join(map(repr, outside))}; "
                f"its scenes: {in_split}"
            )
        check_downloaded(paths, names, paths.available_scenes())
    else:
        names = downloaded_split_scenes(paths, split, cfg.task.sound_split)
    if not names:
        raise UnknownSceneError(f"SoundSpaces {paths.dataset} split {split!r}: no scene to load")
    need_vision = any(s in ("rgb", "depth") for s in getattr(cfg.task, "sensors", ()))
    # scenes.rir_cache_mb bounds this split's world: each scene gets its share, with no floor that would
    # let a split of many scenes exceed it (a scene's cache still keeps its latest RIR); a process holding
    # a train and a val world holds up to twice as much
    cache_bytes = int(cfg.scenes.rir_cache_mb * 2**20) // len(names)
    on_missing = cfg.scenes.rir_on_missing
    task_scenes = {
        name: open_task_scene(paths, cfg.scenes.data_root, name, need_vision, cache_bytes, on_missing)
        for name in tqdm(
            names, desc=f"soundspaces {paths.dataset}/{split}", disable=bar_disabled(len(names) >= 4), **bar_pacing()
        )
    }
    if need_vision:
        check_soundspaces_view_sizes(paths, task_scenes, int(cfg.scenes.image_size))
    rate = dataset_spec(paths.dataset).sample_rate
    logger.info(
        "scenes: SoundSpaces %s data from %s (%d %s scenes, RIRs read on demand at %d Hz)",
        paths.dataset,
        paths.root,
        len(names),
        split,
        rate,
    )
    return TaskWorld(paths.dataset, rate, task_scenes, SoundSpacesSounds(paths.sounds_dir(), rate))
