"""What the AudioNav task needs from the baked world, behind one small adapter.

:class:`TaskScene` holds one scene's navigation graph, views and an RIR lookup; :class:`TaskWorld` holds
the scenes of a split plus the sound lookup. :func:`load_world` fills them from the scene store
(``Scene``, ``SceneRirs``) and the sound bank; tests and benchmarks can build them directly from arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from asgf_nav.logging_utils import shell_command
from asgf_nav.scenes.presets import UnknownSceneError

logger = logging.getLogger(__name__)

RirFn = Callable[[int, int, int], np.ndarray]  # (receiver node, source node, yaw index) -> (L, 2) float32


@dataclass
class TaskScene:
    """One scene as the task sees it; arrays may be memory-mapped."""

    name: str
    dataset: str
    grid_size: float
    positions: np.ndarray  # (N, 3) float32, habitat coordinates
    neighbors: np.ndarray  # (N, 4) int, node reached by MOVE_FORWARD at yaw index k, -1 = wall
    geodesic_hops: np.ndarray  # (N, N) int, -1 = unreachable
    source_nodes: np.ndarray  # (S,) nodes that can hold a sound source (RIRs exist for them)
    sample_rate: int
    rir: RirFn
    rgb: np.ndarray | None = None  # (N, 4, H, W, 3) uint8
    depth: np.ndarray | None = None  # (N, 4, H, W) float16 metres
    # (N,) ids the scene's own files give its nodes (SoundSpaces graph ids, which may skip numbers);
    # None when the node ids are the indices. Only used to name nodes in messages.
    node_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.positions)
        if self.node_ids is not None and np.shape(self.node_ids) != (n,):
            raise ValueError(f"scene {self.name}: node_ids must be ({n},), got {np.shape(self.node_ids)}")
        if self.neighbors.shape != (n, 4):
            raise ValueError(f"scene {self.name}: neighbors must be ({n}, 4), got {self.neighbors.shape}")
        if self.geodesic_hops.shape != (n, n):
            raise ValueError(f"scene {self.name}: geodesic_hops must be ({n}, {n}), got {self.geodesic_hops.shape}")
        for label, arr in (("rgb", self.rgb), ("depth", self.depth)):
            if arr is not None and arr.shape[:2] != (n, 4):
                raise ValueError(f"scene {self.name}: {label} must start with ({n}, 4), got {arr.shape}")

    @property
    def num_nodes(self) -> int:
        return len(self.positions)

    @cached_property
    def position_keys(self) -> dict[str, int]:
        """SoundSpaces' position -> node lookup key '{:.2f}_{:.2f}_{:.2f}'."""
        return {position_key(p): i for i, p in enumerate(np.asarray(self.positions, dtype=np.float64))}

    @cached_property
    def source_node_set(self) -> frozenset[int]:
        """``source_nodes`` for membership tests: resolving an episode asks once per episode, and on SoundSpaces
        data every node is a source."""
        return frozenset(int(s) for s in self.source_nodes)

    def node_at(self, position: Sequence[float]) -> int:
        key = position_key(position)
        node = self.position_keys.get(key)
        if node is None:
            raise ValueError(f"Position misalignment: {list(position)} (key {key}) is no node of scene {self.name}")
        return node

    def describe_node(self, node: int) -> str:
        """A node as a user finds it in the scene's files: its own id (when it differs) and its position."""
        position = [round(float(v), 3) for v in np.asarray(self.positions[int(node)], dtype=np.float64)]
        if self.node_ids is None or int(self.node_ids[int(node)]) == int(node):
            return f"node {int(node)} at {position}"
        return f"node id {int(self.node_ids[int(node)])} (index {int(node)}) at {position}"

    def check_node(self, node: int, what: str = "node") -> int:
        if not 0 <= int(node) < self.num_nodes:
            raise ValueError(f"{what} {node} is not a node of scene {self.name} (it has {self.num_nodes} nodes)")
        return int(node)


def binaural_rirs(items: Iterable[tuple[TaskScene, int, int, int]]) -> list[np.ndarray]:
    """The float32 (L, 2) binaural response of each (scene, receiver, source node, yaw index): what every
    renderer of received sound convolves (the env, the spectrogram store, the DoA observation, the audio
    baselines' training set). A lazy ``items`` is read one response at a time, so a progress bar over it
    follows the rendering."""
    return [np.asarray(scene.rir(int(r), int(s), int(y)), dtype=np.float32) for scene, r, s, y in items]


def position_key(position: Sequence[float]) -> str:
    return "{:.2f}_{:.2f}_{:.2f}".format(*(float(v) for v in position[:3]))


@dataclass
class TaskWorld:
    """The scenes of one split plus their sounds, all at one sample rate."""

    dataset: str
    sample_rate: int
    scenes: dict[str, TaskScene]
    sound_fn: Callable[[str], np.ndarray]  # name -> (sample_rate,) float32
    _sounds: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def scene(self, name: str) -> TaskScene:
        try:
            return self.scenes[name]
        except KeyError:
            raise UnknownSceneError(
                f"unknown scene {name!r} for dataset {self.dataset}; loaded scenes: {sorted(self.scenes)}"
            ) from None

    def sound(self, name: str) -> np.ndarray:
        """One-second mono waveform at the world's sample rate (loaded once)."""
        if name not in self._sounds:
            wave = np.asarray(self.sound_fn(name), dtype=np.float32)
            if wave.ndim != 1:
                raise ValueError(f"sound {name!r} must be mono, got shape {wave.shape}")
            fixed = np.zeros(self.sample_rate, dtype=np.float32)
            fixed[: min(wave.size, self.sample_rate)] = wave[: self.sample_rate]
            self._sounds[name] = fixed
        return self._sounds[name]


def refuse_unbaked(cfg: Any, split: str, names: Sequence[str], vision: bool) -> None:
    """One error for every scene of ``names`` that lacks a stage the task reads, with the one command that bakes
    them all (scenes checked one at a time sent the user back to bake once per scene and stage); scenes another
    process is baking (a training run's background bake) are named as such. A stage that is recorded but damaged
    or stale is left to the scene's own checks, which say what is wrong with it."""
    from asgf_nav.scenes.store import (
        BAKE_LOCK,
        MANIFEST,
        SAME_SETTINGS,
        SceneStore,
        SceneStoreError,
        lock_held,
        scene_dir,
    )

    needed = ["layout", "acoustics", *(["vision"] if vision else [])]
    lacking: dict[str, list[str]] = {}
    being_baked = []
    for name in names:
        directory = scene_dir(cfg.scenes.data_root, cfg.scenes.dataset, name)
        try:
            recorded = SceneStore(directory).stages if (directory / MANIFEST).is_file() else []
        except SceneStoreError:  # a damaged manifest: the scene's own check names what is wrong with it
            continue
        if absent := [stage for stage in needed if stage not in recorded]:
            lacking[name] = absent
            if lock_held(directory / BAKE_LOCK):
                being_baked.append(name)
    if not lacking:
        return
    each = "; ".join(f"{name} has no {' or '.join(absent)}" for name, absent in lacking.items())
    problem = f"{len(lacking)} of the {len(names)} {cfg.scenes.dataset} {split} scenes are not baked for this task"
    problem += f" ({each})"
    if vision:
        problem += f"; views are stage 'vision', which task.sensors {list(cfg.task.sensors)} read"
    if being_baked:
        raise SceneStoreError(
            f"{problem}; another process is baking {', '.join(being_baked)} right now (a training run's background "
            "bake, say): wait for that bake to end"
        )
    stages = [stage for stage in needed if any(stage in absent for absent in lacking.values())]
    words = ["python", "scripts/build_scenes.py", "--dataset", cfg.scenes.dataset, "--data-root", cfg.scenes.data_root,
             "--scenes", *lacking, "--stages", *stages]  # fmt: skip
    if "vision" in stages:
        words += ["--image-size", cfg.scenes.image_size]
    raise SceneStoreError(f"{problem}; bake them all: {shell_command(*words)} {SAME_SETTINGS}")


def task_scene_from_store(scene, rirs) -> TaskScene:
    """Adapter from ``asgf_nav.scenes.scene.Scene`` and ``asgf_nav.acoustics.rir.SceneRirs``."""
    return TaskScene(
        name=scene.name,
        dataset=scene.dataset,
        grid_size=float(scene.grid_size),
        positions=np.asarray(scene.positions, dtype=np.float32),
        neighbors=np.asarray(scene.neighbors),
        geodesic_hops=scene.geodesic_hops,
        source_nodes=np.asarray(rirs.source_nodes, dtype=np.int64),
        sample_rate=int(rirs.sample_rate),
        rir=rirs.rir,
        rgb=scene.rgb if scene.has_vision else None,
        depth=scene.depth if scene.has_vision else None,
    )


def check_acoustics_settings(directory: Path, cfg) -> None:
    """Refuse (SceneStoreError) a scene whose responses were baked with other acoustics settings than ``cfg``
    asks: a run or an evaluation would otherwise hear other sound than its config says, without a word."""
    from asgf_nav.scenes.build import acoustics_changes
    from asgf_nav.scenes.store import SceneStoreError

    changed = acoustics_changes(directory, cfg)
    if changed:
        version = changed.pop("version", None)  # the code's, not a setting: only a new bake changes it
        listed = "; ".join(f"{key}: baked {old}, the config asks {new}" for key, (old, new) in changed.items())
        parts = []
        if version is not None:
            baked, ours = version
            which = "a later" if isinstance(baked, int) and baked > ours else "an earlier"
            parts.append(f"by {which} release (acoustics version {baked}; this one bakes {ours})")
        parts += [f"with other settings than the config asks ({listed})"] if listed else []
        what = " and ".join(parts)
        # the version cannot be asked for: only a bake with this release's code makes them usable
        advice = (
            "Bake them again" if version or not listed else "Use the settings they were baked with, or bake them again"
        )
        command = shell_command(
            "python", "scripts/build_scenes.py", "--config", "CONFIG", "--dataset", directory.parent.name,
            "--data-root", cfg.scenes.data_root, "--stages", "acoustics", "--scenes", directory.name,
        )  # fmt: skip
        raise SceneStoreError(
            f"scene {directory}: its acoustics were baked {what}. "
            f"{advice} for these (training does; or {command}, with the run's config, its acoustics.* overrides "
            "given before --stages)"
        )


def load_world(cfg, split: str, scenes: Sequence[str] | None = None, acoustics_as_baked: bool = False) -> TaskWorld:
    """Open the baked scenes of ``split`` (or the named ``scenes``) and the sound bank for ``cfg``.

    Scenes baked with other acoustics than ``cfg`` asks are refused, unless ``acoustics_as_baked``: a
    figure of what an evaluation heard reads the responses as they were baked, whatever the config says."""
    from asgf_nav.acoustics.rir import SceneRirs
    from asgf_nav.scenes.presets import UnknownSceneError, get_preset
    from asgf_nav.scenes.scene import Scene
    from asgf_nav.scenes.store import SceneStoreError
    from asgf_nav.sounds.bank import SoundBank
    from asgf_nav.tasks.soundspaces_world import load_soundspaces_world

    # --- SoundSpaces 1.0 data, when cfg resolves to it (asgf_nav.tasks.soundspaces_world) ---
    soundspaces_world = load_soundspaces_world(cfg, split, scenes)
    if soundspaces_world is not None:
        return soundspaces_world
    # --- embedded scenes ---
    dataset = cfg.scenes.dataset
    preset = get_preset(dataset)
    names = list(scenes) if scenes is not None else list(preset.split_scenes(split, cfg.scenes.num_scenes))
    outside = [n for n in names if n not in preset.split_scenes(split)]
    if outside:  # a test scene evaluated as val, or trained on, would leak silently
        raise UnknownSceneError(
            f"{dataset} split {split!r} has no scene {', '.join(map(repr, outside))}; "
            f"its scenes: {preset.split_scenes(split)}"
        )
    if not names:
        raise ValueError(f"dataset {dataset} has no scenes in split {split!r}")
    task_scenes: dict[str, TaskScene] = {}
    visual = [s for s in getattr(cfg.task, "sensors", ()) if s in ("rgb", "depth")]
    refuse_unbaked(cfg, split, names, vision=bool(visual))
    view_sizes: dict[str, int] = {}
    travel_time = bool(getattr(cfg.task, "keep_travel_time", False))
    for name in names:
        scene = Scene.open(cfg.scenes.data_root, dataset, name)
        if visual and not scene.has_vision:
            command = shell_command(
                "python", "scripts/build_scenes.py", "--dataset", dataset, "--data-root", cfg.scenes.data_root,
                "--stages", "vision", "--scenes", name, "--image-size", cfg.scenes.image_size,
            )  # fmt: skip
            raise SceneStoreError(
                f"scene {scene.directory} has no views (stage 'vision'), which task.sensors {visual} need; "
                f"bake them: {command}"
            )
        if visual:
            view_sizes[str(scene.directory)] = scene.image_size
        if not acoustics_as_baked:
            check_acoustics_settings(scene.directory, cfg)
        task_scenes[name] = task_scene_from_store(scene, SceneRirs(scene.store, travel_time=travel_time))
    check_view_sizes(view_sizes, cfg)
    rates = {s.sample_rate for s in task_scenes.values()}
    if len(rates) != 1:
        by_scene = ", ".join(f"{name}: {s.sample_rate} Hz" for name, s in task_scenes.items())
        raise ValueError(f"scenes of {dataset}/{split} mix RIR sample rates ({by_scene}); bake them at one rate")
    sample_rate = rates.pop()
    bank = SoundBank.load()
    bank.check_files(sound_names(cfg, split))
    logger.info("loaded %d %s scene(s) for split %s at %d Hz", len(task_scenes), dataset, split, sample_rate)
    return TaskWorld(dataset, sample_rate, task_scenes, lambda n: bank.waveform(n, sample_rate))


def check_view_sizes(view_sizes: dict[str, int], cfg) -> None:
    """The scenes' views must be of the size ``cfg.scenes.image_size`` says: one observation space and one
    visual CNN serve a world, and a run or evaluation would otherwise see other views than its config says,
    without a word. ``view_sizes`` maps scene directories to their baked image size."""
    from asgf_nav.scenes.store import SceneStoreError

    asked = int(cfg.scenes.image_size)
    other = {directory: size for directory, size in view_sizes.items() if size != asked}
    if other:
        listed = ", ".join(f"{directory}: {size} px" for directory, size in other.items())
        command = shell_command(
            "python", "scripts/build_scenes.py", "--dataset", cfg.scenes.dataset, "--data-root", cfg.scenes.data_root,
            "--stages", "vision", "--image-size", asked, "--scenes", *(Path(directory).name for directory in other),
        )  # fmt: skip
        raise SceneStoreError(
            f"views baked at another size than the config's scenes.image_size={asked} ({listed}); use the size "
            f"they were baked with, or bake them at this one (training does): {command}"
        )


def sound_names(cfg, split: str) -> list[str]:
    """Sounds of an episode split: the heard task uses the telephone everywhere, unheard the split's list."""
    from asgf_nav.sounds.bank import SoundBank

    bank = SoundBank.load()
    if cfg.task.sound_split == "heard":
        return list(bank.names("heard"))
    return list(bank.names(split))
