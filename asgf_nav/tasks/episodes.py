"""AudioGoal episode datasets in the SoundSpaces schema: generation, json.gz storage, loading, resolution.

Layout (relative to a data root, as SoundSpaces)::

    datasets/audionav/{dataset}/v1/{split}_{telephone|multiple}/{split}_{...}.json.gz   ({"episodes": []})
    datasets/audionav/{dataset}/v1/{split}_{telephone|multiple}/content/{scene}.json.gz

``telephone`` is the heard-sound split and ``multiple`` the unheard one, as in SoundSpaces. Episodes are
generated deterministically from the scene graphs: same world and settings, same episodes. Real
SoundSpaces episode files load through the same code: positions map to nodes with SoundSpaces'
2-decimal key and a position that matches no node raises.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write_bytes, is_plain_file_name
from asgf_nav.logging_utils import bar_disabled, bar_pacing
from asgf_nav.scenes.presets import UnknownSceneError
from asgf_nav.tasks.navigation import oracle_num_actions, quaternion_to_yaw_index, yaw_to_quaternion
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SOUND_SPLIT_SUFFIX = {"heard": "telephone", "unheard": "multiple"}


class EpisodeError(UserInputError, ValueError):
    """An episode file or record is malformed, or names a scene, node or sound the world lacks."""


@dataclass
class Episode:
    """One AudioGoal episode as stored (SoundSpaces fields)."""

    episode_id: str
    scene_id: str
    start_position: list[float]
    start_rotation: list[float]
    goal_position: list[float]
    sound: str
    geodesic_distance: float
    num_action: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False, repr=False)  # the file it was read from, for errors

    def where(self) -> str:
        """How an error names the episode: its id, scene and file."""
        return f"episode {self.episode_id} ({self.scene_name}{f' in {self.source}' if self.source else ''})"

    @property
    def scene_name(self) -> str:
        return scene_name_from_id(self.scene_id)

    def to_json(self) -> dict[str, Any]:
        info = {"sound": self.sound, "geodesic_distance": self.geodesic_distance}
        if self.num_action is not None:
            info["num_action"] = self.num_action
        return {
            "episode_id": self.episode_id,
            "scene_id": self.scene_id,
            "start_position": self.start_position,
            "start_rotation": self.start_rotation,
            "goals": [{"position": self.goal_position, "radius": 1e-5}],
            "info": info,
            **self.extra,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any], source: str = "") -> Episode:
        try:
            info = record["info"]
            extra = {
                k: v
                for k, v in record.items()
                if k not in ("episode_id", "scene_id", "start_position", "start_rotation", "goals", "info")
            }
            num_action = info.get("num_action")
            episode = cls(
                episode_id=str(record["episode_id"]),
                scene_id=str(record["scene_id"]),
                start_position=[float(v) for v in record["start_position"]],
                start_rotation=[float(v) for v in record["start_rotation"]],
                goal_position=[float(v) for v in record["goals"][0]["position"]],
                sound=str(info["sound"]),
                geodesic_distance=float(info["geodesic_distance"]),
                num_action=None if num_action is None else int(num_action),
                extra=extra,
                source=source,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            eid = record.get("episode_id", "?") if isinstance(record, dict) else "?"
            raise EpisodeError(f"episode {eid} in {source or 'record'} is malformed: {exc!r}") from exc
        if not is_plain_file_name(episode.sound):  # joined to sounds/1s_all and to spectrogram store paths
            raise EpisodeError(
                f"episode {episode.episode_id} in {source or 'record'} names sound {episode.sound!r}; a sound name "
                "must be a plain file name (no '/', '\\', NUL, not '', '.' or '..'), since it is joined to the "
                "sounds folder"
            )
        return episode


@dataclass(frozen=True)
class ResolvedEpisode:
    """An episode mapped onto a loaded world: graph nodes and a yaw index instead of coordinates."""

    episode_id: str
    scene: str
    start_node: int
    start_yaw: int
    goal_node: int
    sound: str
    geodesic_distance: float
    num_action: int


def episode_content(episode: Any) -> dict[str, Any]:
    """Everything that defines an episode (scene, start, goal, sound, distances) of a stored or resolved one."""
    if isinstance(episode, Episode):
        return episode.to_json()
    if dataclasses.is_dataclass(episode) and not isinstance(episode, type):
        return dataclasses.asdict(episode)
    raise TypeError(f"not an episode: {type(episode).__name__}")


def episodes_fingerprint(episodes: Sequence[Any]) -> str:
    """A short hash of the ordered episodes' full content, so a resume runs over exactly the same episodes.

    Ids alone would not do: generated episodes are numbered "{scene}:{i}", and regenerated ones (after a
    rebake, or with other task settings) keep their ids with other starts, goals or sounds.
    """
    digest = hashlib.sha256()
    for episode in episodes:
        digest.update(json.dumps(episode_content(episode), sort_keys=True).encode() + b"\n")
    return digest.hexdigest()[:16]


def scene_name_from_id(scene_id: str) -> str:
    """'office_1/habitat/mesh_semantic.ply', 'x/x.glb' or 'data/scene_datasets/replica/office_1/...' -> name."""
    parts = Path(scene_id).parts
    if "scene_datasets" in parts:
        i = parts.index("scene_datasets")
        if len(parts) > i + 2:
            return parts[i + 2]
    if not parts:
        raise EpisodeError(f"empty scene_id {scene_id!r}")
    return parts[0]


def scene_id_for(dataset: str, scene: str) -> str:
    return f"{scene}/habitat/mesh_semantic.ply" if dataset == "replica" else f"{scene}/{scene}.glb"


def split_dir_name(split: str, sound_split: str) -> str:
    if split not in SPLITS:
        raise EpisodeError(f"unknown split {split!r}; valid: {SPLITS}")
    if sound_split not in SOUND_SPLIT_SUFFIX:
        raise EpisodeError(f"unknown sound split {sound_split!r}; valid: {sorted(SOUND_SPLIT_SUFFIX)}")
    return f"{split}_{SOUND_SPLIT_SUFFIX[sound_split]}"


def episode_dataset_path(root: str | Path, dataset: str, split: str, sound_split: str) -> Path:
    """The split's json.gz. SoundSpaces publishes the unheard val and test episodes as
    ``{val,test}_multiple_unheard`` (the folders its baselines evaluate on); some downloads name them
    ``{split}_multiple``. The ``_unheard`` folder is used when it holds episodes, else ``{split}_multiple``,
    which is also where this project writes its own."""
    name = split_dir_name(split, sound_split)
    versions = Path(root) / "datasets" / "audionav" / dataset / "v1"
    unheard = versions / f"{name}_unheard"
    if sound_split == "unheard" and split != "train" and _holds_episodes(unheard):
        name = unheard.name
    return versions / name / f"{name}.json.gz"


def _holds_episodes(folder: Path) -> bool:
    """Whether an episode dataset folder has its split file or a per-scene file (an empty one is no split)."""
    return (folder / f"{folder.name}.json.gz").is_file() or any((folder / "content").glob("*.json.gz"))


# ------------------------------------------------------------------------------------------ generation
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


def episode_counts(split: str, scenes: Sequence[str], task_cfg) -> dict[str, int]:
    """Episodes per scene: train has a per-scene count, val/test a total spread evenly over the scenes."""
    if split == "train":
        return {s: int(task_cfg.train_episodes_per_scene) for s in scenes}
    total = int(task_cfg.val_episodes if split == "val" else task_cfg.test_episodes)
    base, extra = divmod(total, len(scenes))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(scenes)}


def generate_split(world: TaskWorld, split: str, sound_split: str, sounds: Sequence[str], task_cfg) -> list[Episode]:
    """All episodes of one split over the world's scenes (sorted by name), deterministic: the episodes
    ``load_or_generate`` writes for the same world and config, ids included (``scene:i``)."""
    names = sorted(world.scenes)
    counts = episode_counts(split, names, task_cfg)
    episodes: list[Episode] = []
    for name in tqdm(
        names, desc=f"episodes {world.dataset}/{split}", disable=bar_disabled(len(names) >= 4), **bar_pacing()
    ):
        seed = zlib.crc32(f"{world.dataset}/{split}/{sound_split}/{name}".encode())
        episodes += generate_scene_episodes(
            world.scene(name),
            counts[name],
            sounds,
            seed,
            float(task_cfg.min_geodesic_distance),
            float(task_cfg.max_geodesic_distance),
            id_prefix=f"{name}:",
        )
    return episodes


# ------------------------------------------------------------------------------------------ storage
def _write_json_gz(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, gzip.compress(json.dumps(payload).encode(), mtime=0))


def _cache_json_gz(path: Path, payload: dict[str, Any]) -> bool:
    """Save generated episodes for the next run; a data root shared read-only is used as it is (the same
    episodes are generated again, deterministically)."""
    try:
        _write_json_gz(path, payload)
    except OSError as exc:
        logger.warning("episodes not cached: cannot write %s (%s); they are generated for this run", path, exc.strerror)
        return False
    return True


def _read_json_gz(path: Path) -> dict[str, Any]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, EOFError) as exc:
        raise EpisodeError(f"cannot read episode file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise EpisodeError(f"episode file {path} must hold {{'episodes': [...]}}")
    return data


def save_episodes(path: str | Path, episodes: Sequence[Episode]) -> Path:
    """Write the split file (empty episode list) and one content file per scene, each atomically."""
    path = Path(path)
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for ep in episodes:
        by_scene.setdefault(ep.scene_name, []).append(ep.to_json())
    for scene, records in by_scene.items():
        _write_json_gz(path.parent / "content" / f"{scene}.json.gz", {"episodes": records})
    _write_json_gz(path, {"episodes": []})
    return path


def load_episodes(path: str | Path, scenes: Sequence[str] | None = None) -> list[Episode]:
    """Episodes of a split file and its per-scene content files (only ``scenes`` when given)."""
    path = Path(path)
    if not path.exists():
        raise EpisodeError(f"episode dataset {path} does not exist")
    records = [(r, str(path)) for r in _read_json_gz(path)["episodes"]]
    content = path.parent / "content"
    if content.is_dir():
        for file in sorted(content.glob("*.json.gz")):
            name = file.name[: -len(".json.gz")]
            if scenes is None or name in scenes:
                records += [(r, str(file)) for r in _read_json_gz(file)["episodes"]]
    episodes = [Episode.from_json(r, src) for r, src in records]
    if scenes is not None:
        episodes = [e for e in episodes if e.scene_name in set(scenes)]
    return episodes


def resolve_episode(ep: Episode, world: TaskWorld) -> ResolvedEpisode:
    """Map positions and rotation to nodes and a yaw index; unknown scenes, nodes or goals raise."""
    try:
        scene = world.scene(ep.scene_name)
    except KeyError as exc:
        raise EpisodeError(f"{ep.where()}: {exc}") from None
    try:
        start = scene.node_at(ep.start_position)
        goal = scene.node_at(ep.goal_position)
        yaw = quaternion_to_yaw_index(ep.start_rotation)
    except ValueError as exc:
        raise EpisodeError(f"{ep.where()}: {exc}") from None
    if goal not in scene.source_node_set:
        raise EpisodeError(
            f"{ep.where()}: goal {scene.describe_node(goal)} is not an acoustic source node of the scene "
            "(SoundSpaces data: listed in its metadata's source_nodes.txt)"
        )
    hops = int(scene.geodesic_hops[start, goal])
    if hops < 0:
        raise EpisodeError(
            f"{ep.where()}: goal {scene.describe_node(goal)} is unreachable from start {scene.describe_node(start)}"
        )
    num_action = ep.num_action
    if num_action is None:
        num_action = oracle_num_actions(scene.neighbors, np.asarray(scene.geodesic_hops[:, goal]), start, yaw)
    return ResolvedEpisode(ep.episode_id, scene.name, start, yaw, goal, ep.sound, ep.geodesic_distance, num_action)


def resolve_episodes(episodes: Sequence[Episode], world: TaskWorld) -> list[ResolvedEpisode]:
    if not episodes:
        raise EpisodeError("no episodes to resolve")
    return [resolve_episode(e, world) for e in episodes]


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
    world: TaskWorld, scene: str, split: str, sound_split: str, sounds: Sequence[str], count: int, task_cfg
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
    task_cfg,
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
    if path.exists() and _read_json_gz(path)["episodes"]:  # a dataset listing its episodes in the split file
        return _non_empty(load_episodes(path, scenes=names), path)
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
            data = _read_json_gz(file) if file.exists() else None
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
        seed = zlib.crc32(f"{world.dataset}/{split}/{sound_split}/{name}".encode())
        generated = generate_scene_episodes(
            world.scene(name), per_scene, sounds, seed,
            float(task_cfg.min_geodesic_distance), float(task_cfg.max_geodesic_distance), id_prefix=f"{name}:",
        )  # fmt: skip
        if _cache_json_gz(file, {"episodes": [e.to_json() for e in generated], GENERATION_KEY: wanted}):
            logger.info("wrote %d %s episodes of %s to %s", len(generated), split, name, file)
        episodes += generated
    if generate and not path.exists():
        _cache_json_gz(path, {"episodes": []})
    return _non_empty(episodes, path.parent / "content")


def _non_empty(episodes: list[Episode], where: Path) -> list[Episode]:
    """Found here, naming the files, rather than as an empty sampler in the env or after an evaluation."""
    if not episodes:
        raise EpisodeError(f"no episodes: {where} lists none for the chosen scenes")
    return episodes


# ------------------------------------------------------------------------------------------ sampling
class EpisodeSampler:
    """Which episode an env runs next: ``shuffle`` walks reshuffled permutations, ``sequential`` strides.

    In ``sequential`` mode env ``i`` of ``n`` runs episodes i, i+n, i+2n, ... so that n envs together
    cover a dataset once (evaluation). ``seed`` is an int or a sequence of ints (e.g. seed, rank, update:
    distinct sequences give independent streams, where summing them into one int could collide). The
    state is plain data for checkpoints.
    """

    def __init__(
        self,
        num_episodes: int,
        seed: int | Sequence[int],
        env_index: int = 0,
        num_envs: int = 1,
        mode: str = "shuffle",
    ) -> None:
        if num_episodes <= 0:
            raise EpisodeError("episode sampler needs at least one episode")
        if mode not in ("shuffle", "sequential"):
            raise ValueError(f"sampler mode must be 'shuffle' or 'sequential', got {mode!r}")
        self.num_episodes = num_episodes
        self.mode = mode
        self.env_index = env_index
        self.num_envs = num_envs
        seeds = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        self.rng = np.random.default_rng([*seeds, int(env_index)])
        self.order: list[int] = []
        self.cursor = 0

    def next(self) -> int:
        if self.mode == "sequential":
            idx = (self.env_index + self.cursor * self.num_envs) % self.num_episodes
            self.cursor += 1
            return idx
        if self.cursor >= len(self.order):
            self.order = self.rng.permutation(self.num_episodes).tolist()
            self.cursor = 0
        idx = self.order[self.cursor]
        self.cursor += 1
        return int(idx)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_episodes": self.num_episodes,
            "rng": self.rng.bit_generator.state,
            "order": list(self.order),
            "cursor": self.cursor,
            "mode": self.mode,
            "env_index": self.env_index,
            "num_envs": self.num_envs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved walk; its order indexes the saved dataset, so another episode count is refused."""
        saved = state.get("num_episodes")  # absent from older states, whose order gives a lower bound
        needed = max(state["order"], default=-1) + 1
        if (saved is not None and saved != self.num_episodes) or needed > self.num_episodes:
            count = saved if saved is not None else f"at least {needed}"
            raise EpisodeError(f"sampler state is for {count} episodes, this sampler has {self.num_episodes}")
        self.rng.bit_generator.state = state["rng"]
        self.order = list(state["order"])
        self.cursor = int(state["cursor"])
        self.mode = state["mode"]
        self.env_index = int(state["env_index"])
        self.num_envs = int(state["num_envs"])
