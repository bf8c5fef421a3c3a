"""AudioGoal episode datasets in the SoundSpaces schema: the episode record, json.gz storage, loading,
resolution to graph nodes and sampling (generation is ``tasks/episode_generation.py``).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write_bytes, is_plain_file_name
from asgf_nav.tasks.navigation import oracle_num_actions, quaternion_to_yaw_index
from asgf_nav.tasks.world import TaskWorld

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


# ------------------------------------------------------------------------------------------ storage
def _write_json_gz(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, gzip.compress(json.dumps(payload).encode(), mtime=0))


def cache_episode_file(path: Path, payload: dict[str, Any]) -> bool:
    """Save generated episodes for the next run; a data root shared read-only is used as it is (the same
    episodes are generated again, deterministically)."""
    try:
        _write_json_gz(path, payload)
    except OSError as exc:
        logger.warning("episodes not cached: cannot write %s (%s); they are generated for this run", path, exc.strerror)
        return False
    return True


def read_episode_file(path: Path) -> dict[str, Any]:
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
    records = [(r, str(path)) for r in read_episode_file(path)["episodes"]]
    content = path.parent / "content"
    if content.is_dir():
        for file in sorted(content.glob("*.json.gz")):
            name = file.name[: -len(".json.gz")]
            if scenes is None or name in scenes:
                records += [(r, str(file)) for r in read_episode_file(file)["episodes"]]
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


def require_episodes(episodes: list[Episode], where: Path) -> list[Episode]:
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
