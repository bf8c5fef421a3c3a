"""Run an agent over a split's episodes in the batched env and record every trajectory with its metrics.

An :class:`Agent` sees the observation batch plus an :class:`AgentContext` (the scene, scene-local node,
yaw and episode of every env). Learned policies use only the observations; the non-learned baselines
use what their published versions use (the map and the agent's pose; the oracle also the goal).

Episodes: the split's episodes (or an evenly spaced subset of ``num_episodes``) are run once each. The
batched env in ``sequential`` mode gives env ``i`` the episodes ``i, i+B, ...``; each env's quota is
known in advance, so every selected episode is recorded exactly once. An env whose quota is done keeps
stepping with the batch through episodes that are discarded; ``AgentContext.active`` marks it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from asgf_nav.config import is_whole_number
from asgf_nav.devices import preserved_torch_rng
from asgf_nav.errors import UserInputError
from asgf_nav.eval.metrics import REPORTED_METRICS, aggregate, success_wilson
from asgf_nav.io import atomic_write_text
from asgf_nav.logging_utils import bar_pacing
from asgf_nav.rl.checkpoint import CheckpointError
from asgf_nav.rl.validation import validation_quota
from asgf_nav.safe_load import weights_mismatch
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episodes import Episode, ResolvedEpisode
from asgf_nav.tasks.navigation import STOP, step_pose
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ agents
@dataclass
class AgentContext:
    """Per-env state the evaluator shows an agent before each step (node indices are scene-local)."""

    scenes: list[TaskScene]
    nodes: np.ndarray  # (B,) int
    yaws: np.ndarray  # (B,) int, yaw index (90 * k degrees)
    episodes: list[ResolvedEpisode]
    steps: np.ndarray  # (B,) actions taken so far in the episode
    new_episode: np.ndarray  # (B,) bool, true on an episode's first step
    collided: np.ndarray  # (B,) bool, last MOVE_FORWARD was blocked
    # (B,) bool: the env's current episode will be recorded. An env that has run its share of the episodes
    # keeps stepping (the batch moves together) through episodes that are thrown away; per-step
    # statistics (t-SNE states) must skip it.
    active: np.ndarray
    success_distance: float
    sample_rate: int


class Agent:
    """Base class: ``act`` returns (B,) integer actions; ``sensors`` names the observations it needs."""

    name = "agent"
    sensors: tuple[str, ...] = ("spectrogram",)

    def reset(self, num_envs: int) -> None:
        """Called once before the first step of an evaluation."""

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement act()")


def episode_stream(seed: int, scene: str, episode_id: str) -> np.random.Generator:
    """The random stream of one episode's sampled actions, fixed by (seed, scene, episode id) alone.

    An episode then draws the same actions whichever env, batch size or resumed run it lands in.
    """
    digest = hashlib.sha256(f"{seed}/{scene}/{episode_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class PolicyAgent(Agent):
    """A trained recurrent policy; samples actions (as SoundSpaces evaluates) unless ``deterministic``.

    With a ``seed``, each episode samples from its own :func:`episode_stream`, so an evaluation is
    reproducible and a resumed one draws what the uninterrupted one would have; without, actions come
    from torch's global generator.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        sensors: Sequence[str],
        deterministic: bool = False,
        device: torch.device | str = "cpu",
        name: str = "policy",
        seed: int | None = None,
    ) -> None:
        self.policy = policy.to(device).eval()
        self.sensors = tuple(sensors)
        self.deterministic = deterministic
        self.device = torch.device(device)
        self.name = name
        self.seed = seed
        self.hidden: torch.Tensor | None = None
        self.last_ase_state: torch.Tensor | None = None
        self.streams: list[np.random.Generator | None] = []

    def reset(self, num_envs: int) -> None:
        self.hidden = self.policy.initial_hidden(num_envs, self.device)
        self.streams = [None] * num_envs

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        if self.hidden is None:
            self.reset(len(ctx.nodes))
        obs = {k: v.to(self.device) for k, v in obs.items()}
        masks = torch.from_numpy((~ctx.new_episode).astype(np.float32)).to(self.device)
        if self.deterministic or self.seed is None:
            _, action, _, self.hidden = self.policy.act(obs, self.hidden, masks, deterministic=self.deterministic)
            actions = action.cpu().numpy().astype(np.int64)
        else:
            dist, _, self.hidden = self.policy.distribution_and_value(obs, self.hidden, masks)
            actions = self._draw(dist.probs, ctx, self.seed)
        self.last_ase_state = getattr(self.policy, "last_ase_state", None)
        return actions

    def _draw(self, probs: torch.Tensor, ctx: AgentContext, seed: int) -> np.ndarray:
        """Each env's action by inverse CDF from its episode's stream (started on the episode's first step)."""
        cdf = np.cumsum(probs.double().cpu().numpy(), axis=1)
        actions = np.empty(len(cdf), dtype=np.int64)
        for i, episode in enumerate(ctx.episodes):
            stream = self.streams[i]
            if stream is None or ctx.new_episode[i]:
                stream = self.streams[i] = episode_stream(seed, episode.scene, episode.episode_id)
            u = stream.random() * cdf[i, -1]
            actions[i] = min(int(np.searchsorted(cdf[i], u, side="right")), cdf.shape[1] - 1)
        return actions


# what the weights were trained on, taken from the checkpoint: the model, what the policy observes, and the size of
# the views its visual CNN was built for (an evaluation config of another size asked for the checkpoint's views to be
# baked over at that size, and the checkpoint was then refused)
ARCHITECTURE_KEYS = (
    ("model", None),
    ("task", ("sensors", "use_doa", "doa_checkpoint", "keep_travel_time")),
    ("scenes", ("image_size",)),
)


def checkpoint_state(checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint given as a file, or one already loaded (the scripts load it once)."""
    from asgf_nav.rl.checkpoint import load_checkpoint

    return checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, map_location=device)


def config_for_checkpoint(cfg: Any, checkpoint: str | Path | dict[str, Any]) -> Any:
    """A copy of ``cfg`` whose model section, sensors and DoA flag are the checkpoint's (the weights need them)."""
    from asgf_nav.rl.checkpoint import FORMER_VALUES_OF_ADDED_KEYS

    saved = checkpoint_state(checkpoint).get("config") or {}
    out = copy.deepcopy(cfg)
    for section, keys in ARCHITECTURE_KEYS:
        former = {k.split(".", 1)[1]: v for k, v in FORMER_VALUES_OF_ADDED_KEYS.items() if k.startswith(f"{section}.")}
        values = {**former, **(saved.get(section) or {})}  # a key the checkpoint predates: what it ran with
        target = getattr(out, section)
        for key, value in values.items():
            if (keys is None or key in keys) and hasattr(target, key) and getattr(target, key) != value:
                logger.info(
                    "using the checkpoint's %s.%s=%r (config has %r)", section, key, value, getattr(target, key)
                )
                setattr(target, key, value)
    trained_on = (saved.get("scenes") or {}).get("dataset")
    if trained_on and trained_on != out.scenes.dataset:  # legitimate (another scene set), or a forgotten --config
        logger.warning(
            "the checkpoint was trained on %s scenes and is evaluated on %s (the config's scenes.dataset; "
            "--config or --dataset chooses)",
            trained_on,
            out.scenes.dataset,
        )
    return out


def load_policy_agent(
    cfg: Any,
    checkpoint: str | Path | dict[str, Any],
    observation_space: Any,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    source: str | Path | None = None,
) -> PolicyAgent:
    """Build ``cfg.model.policy`` for ``observation_space`` and load the weights of a training checkpoint.

    ``seed`` makes its sampled actions reproducible (see :class:`PolicyAgent`); ``source`` names the file
    of an already loaded ``checkpoint`` in errors.
    """
    from asgf_nav.models.policies import build_policy

    state = checkpoint_state(checkpoint, device)
    trained = state.get("policy_name", cfg.model.policy)
    named = source if isinstance(checkpoint, dict) else checkpoint
    where = f" {named}" if named else ""
    if trained != cfg.model.policy:
        raise CheckpointError(f"checkpoint{where} holds policy {trained!r}, config asks for {cfg.model.policy!r}")
    try:
        sized = _sized_policy(cfg, observation_space)  # the model section is the file's: it sizes the network
        with preserved_torch_rng():  # initial weights, replaced by the checkpoint's: the caller's draws stay
            policy = build_policy(cfg, observation_space) if sized is None else sized
    except ValueError as exc:  # the sensors are the checkpoint's: ones its policy cannot run on
        raise CheckpointError(f"checkpoint{where}: {exc}") from None
    try:
        with warnings.catch_warnings():  # loading into the meta network copies nothing, by design
            warnings.filterwarnings("ignore", message=".*non-meta parameter in the checkpoint to a meta parameter")
            policy.load_state_dict(state["model"])
    except RuntimeError as exc:  # the model section is the checkpoint's, so the observations differ
        first = " ".join(str(exc).strip().splitlines()[:3])
        hints = "; ".join(_shape_hints(str(exc), state.get("config") or {}, observation_space))
        hint = f" ({hints})" if hints else ""
        raise CheckpointError(
            f"checkpoint{where} does not fit the policy built for these observations{hint}: {first}"
        ) from None
    if sized is not None:  # shapes fit; the weights must hold their data too before the network is built for real
        mismatch = weights_mismatch(sized.state_dict(keep_vars=True), state["model"])
        if mismatch is not None:
            raise CheckpointError(f"checkpoint{where} does not fit the policy built for these observations: {mismatch}")
        with preserved_torch_rng():
            policy = build_policy(cfg, observation_space)
        policy.load_state_dict(state["model"])
    sensors = list(getattr(observation_space, "spaces", observation_space))
    return PolicyAgent(policy, sensors, deterministic, device, name=cfg.model.policy, seed=seed)


def _sized_policy(cfg: Any, observation_space: Any) -> torch.nn.Module | None:
    """The policy built on the meta device, allocating nothing: a few bytes of a checkpoint's model section
    (``hidden_size=6000``) would otherwise build gigabytes before its weights were compared. None for a
    (plugin) policy that cannot be built there, which is then built and checked as it is."""
    from asgf_nav.models.policies import build_policy

    try:
        with torch.device("meta"):
            return build_policy(cfg, observation_space)
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _shape_hints(error: str, trained: dict[str, Any], observation_space: Any) -> list[str]:
    """What a checkpoint's shape mismatch says about the data: the views' size sets the visual encoder's
    shapes, the dataset's sample rate the spectrogram's and so the audio encoder's and the ASE's."""
    from asgf_nav.scenes.presets import PRESETS
    from asgf_nav.tasks.spectrogram import spectrogram_shape

    hints = []
    scenes = trained.get("scenes", {})
    if "visual" in error:
        size = scenes.get("image_size")
        hints.append(f"it was trained on {size} px views: are the scenes baked at another scenes.image_size?")
    spaces = getattr(observation_space, "spaces", {})
    if ("audio" in error or "ase." in error) and "spectrogram" in spaces:
        dataset = scenes.get("dataset")
        rate = PRESETS[dataset].sample_rate if dataset in PRESETS else None
        shape = f"{spectrogram_shape(rate)} spectrograms ({rate} Hz)" if rate else "other spectrograms"
        hints.append(
            f"it was trained on dataset {dataset!r}, whose responses give {shape}; these observations' are "
            f"{tuple(spaces['spectrogram'].shape)}"
        )
    return hints


# ------------------------------------------------------------------------------------------ records
@dataclass
class EpisodeRecord:
    """One finished episode: where it started and ended, what the agent did and how it scored."""

    episode_id: str
    scene: str
    sound: str
    start_node: int
    start_yaw: int
    goal_node: int
    start_position: list[float]
    goal_position: list[float]
    geodesic_distance: float
    num_action: int
    actions: list[int] = field(default_factory=list)
    path: list[list[int]] = field(default_factory=list)  # [node, yaw] before each action and at the end
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpisodeRecord:
        return cls(**data)


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) or is_whole_number(value)) and math.isfinite(value)


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one field of an episode record as evaluate.py writes it, or None."""
    if name in ("episode_id", "scene", "sound"):
        return None if isinstance(value, str) else f"{name} is {value!r}, not a string"
    if name in ("start_node", "goal_node", "num_action"):
        return None if is_whole_number(value) and value >= 0 else f"{name} is {value!r}, not a whole number >= 0"
    if name == "start_yaw":
        return None if is_whole_number(value) and 0 <= value < 4 else f"start_yaw is {value!r}, not a yaw index 0-3"
    if name in ("start_position", "goal_position"):
        ok = isinstance(value, list) and len(value) == 3 and all(map(_is_number, value))
        return None if ok else f"{name} is {value!r}, not an [x, y, z] of 3 numbers"
    if name == "geodesic_distance":
        return None if _is_number(value) and value >= 0 else f"geodesic_distance is {value!r}, not a distance"
    if name == "actions":
        ok = isinstance(value, list) and all(map(is_whole_number, value))
        return None if ok else f"actions is {value!r:.60}, not a list of action numbers"
    if name == "path":
        if not isinstance(value, list):
            return f"path is {value!r:.60}, not a list of [node, yaw] poses"
        for i, pose in enumerate(value):
            if not (isinstance(pose, list) and len(pose) == 2 and is_whole_number(pose[0]) and pose[0] >= 0):
                return f"path[{i}] is {pose!r}, not a [node, yaw] pose"
            if not (is_whole_number(pose[1]) and 0 <= pose[1] < 4):
                return f"path[{i}] is {pose!r}: its yaw is not a yaw index 0-3"
        return None
    if name == "metrics":
        if not isinstance(value, dict):
            return f"metrics is {value!r:.60}, not a mapping of metric names to values"
        bad = {k: v for k, v in value.items() if not _is_number(v)}
        if bad:
            return f"metrics {bad} are not finite numbers"
        missing = [k for k in REPORTED_METRICS if k not in value]  # every summary aggregates them all
        return f"metrics lacks {missing}" if missing else None
    return None


def record_problem(data: Any) -> str | None:
    """What is wrong with one parsed line of episodes.jsonl or episodes.partial.jsonl (a missing or unknown
    field, or a field of another type than evaluate.py writes), or None; checked where a file is read, so
    that a damaged record is named there rather than met as a KeyError after the episodes ran."""
    if not isinstance(data, dict):
        return f"it is a JSON {type(data).__name__}, not an object of episode fields"
    names = [f.name for f in fields(EpisodeRecord)]
    missing = [n for n in names if n not in data]
    if missing:
        return f"it lacks the field(s) {missing}"
    unknown = sorted(set(data) - set(names))
    if unknown:
        return f"it has the unknown field(s) {unknown}"
    return next(filter(None, (_field_problem(n, data[n]) for n in names)), None)


def select_episodes(episodes: Sequence[Episode], num_episodes: int | None) -> list[Episode]:
    """All episodes, or ``num_episodes`` evenly spaced ones (so every scene of the split is represented)."""
    if num_episodes is None or num_episodes >= len(episodes):
        return list(episodes)
    if num_episodes <= 0:
        raise ValueError(f"num_episodes must be positive, got {num_episodes}")
    index = np.unique(np.round(np.linspace(0, len(episodes) - 1, num_episodes)).astype(np.int64))
    return [episodes[int(i)] for i in index]


def _context(
    env: BatchedAudioNavEnv, new_episode: np.ndarray, collided: np.ndarray, active: np.ndarray
) -> AgentContext:
    return AgentContext(
        scenes=[env.scenes[s] for s in env.scene_idx],
        nodes=env.local_nodes(),
        yaws=env.yaw.copy(),
        episodes=env.current_episodes(),
        steps=env.steps.copy(),
        new_episode=new_episode.copy(),
        collided=collided.copy(),
        active=active.copy(),
        success_distance=env.success_distance,
        sample_rate=env.world.sample_rate,
    )


def _new_record(env: BatchedAudioNavEnv, i: int) -> EpisodeRecord:
    ep = env.episodes[int(env.ep_index[i])]
    scene = env.world.scene(ep.scene)
    return EpisodeRecord(
        episode_id=ep.episode_id, scene=ep.scene, sound=ep.sound, start_node=ep.start_node,
        start_yaw=ep.start_yaw, goal_node=ep.goal_node,
        start_position=[float(v) for v in scene.positions[ep.start_node]],
        goal_position=[float(v) for v in scene.positions[ep.goal_node]],
        geodesic_distance=float(ep.geodesic_distance), num_action=int(ep.num_action),
    )  # fmt: skip


def run_episodes(
    agent: Agent,
    world: TaskWorld,
    episodes: Sequence[Episode | ResolvedEpisode],
    cfg: Any,
    num_envs: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    step_callback: Any = None,
    on_record: Callable[[EpisodeRecord], None] | None = None,
    spectrogram_store: str | Path | None = None,
    split: str | None = None,
    config_path: str | Path | None = None,
) -> list[EpisodeRecord]:
    """Run every episode once with ``agent``; records come back in episode order.

    ``step_callback(obs, ctx, agent)``, when given, is called before each step (t-SNE collection uses it);
    ``on_record(record)`` as each episode ends (a resumable evaluation saves it there); ``spectrogram_store``
    is the root of baked spectrograms the env reads its misses from (``tasks.factory.spectrogram_store_root``).
    ``split`` (of the episodes) and ``config_path`` (the config file ``cfg`` was loaded from) are named in the
    command that bakes a stale store file again.
    """
    num_envs = max(1, min(int(num_envs), len(episodes)))
    env = BatchedAudioNavEnv(
        world,
        list(episodes),
        num_envs,
        device=device,
        cfg=cfg,
        sensors=list(agent.sensors),
        seed=int(getattr(getattr(cfg, "train", None), "seed", 0)),
        sampler_mode="sequential",
        spectrogram_store=spectrogram_store,
        split=split,
        config_path=config_path,
    )
    total = len(env.episodes)
    quota = np.array(validation_quota(num_envs, total), dtype=np.int64)  # each episode once, none twice
    finished = np.zeros(num_envs, dtype=np.int64)
    records: dict[int, EpisodeRecord] = {}
    agent.reset(num_envs)
    obs = env.reset()
    current = [_new_record(env, i) for i in range(num_envs)]
    new_episode = np.ones(num_envs, dtype=bool)
    collided = np.zeros(num_envs, dtype=bool)
    bar = tqdm(total=total, desc=f"eval {agent.name}", unit="ep", disable=not progress, **bar_pacing())
    start = time.perf_counter()
    while len(records) < total:
        ctx = _context(env, new_episode, collided, finished < quota)
        if step_callback is not None:
            step_callback(obs, ctx, agent)
        actions = np.asarray(agent.act(obs, ctx), dtype=np.int64).reshape(-1)
        before = list(zip(ctx.nodes.tolist(), ctx.yaws.tolist()))
        obs, _, done, info = env.step(torch.from_numpy(actions))
        done_np = done.cpu().numpy()
        collided = info["collided"].cpu().numpy().astype(bool)
        for i in range(num_envs):
            rec = current[i]
            rec.actions.append(int(actions[i]))
            rec.path.append([int(before[i][0]), int(before[i][1])])
            if not done_np[i]:
                continue
            scene = ctx.scenes[i]
            node, yaw, _ = step_pose(scene.neighbors, before[i][0], before[i][1], int(actions[i]))
            rec.path.append([int(node), int(yaw)])
            rec.metrics = {k: float(info[k][i]) for k in REPORTED_METRICS}
            index = int(info["episode_index"][i])
            if finished[i] < quota[i]:
                records[index] = rec
                finished[i] += 1
                bar.update(1)
                if on_record is not None:
                    on_record(rec)
            current[i] = _new_record(env, i)
        new_episode = done_np.astype(bool)
    bar.close()
    elapsed = time.perf_counter() - start
    logger.info("%s: %d episodes in %.1f s", agent.name, total, elapsed)
    return [records[i] for i in range(total)]


# ------------------------------------------------------------------------------------------ outputs
def summarize(records: Sequence[EpisodeRecord], level: float = 0.95) -> dict[str, Any]:
    """Metric means with confidence intervals (and the Wilson interval of SR), overall and per scene."""
    metrics = [r.metrics for r in records]
    summary = {k: v.to_dict() for k, v in aggregate(metrics, level=level).items()}
    low, high = success_wilson(metrics, level)
    summary["success"]["wilson_low"], summary["success"]["wilson_high"] = low, high
    per_scene = {}
    for scene in sorted({r.scene for r in records}):
        rows = [r.metrics for r in records if r.scene == scene]
        per_scene[scene] = {k: v.to_dict() for k, v in aggregate(rows, level=level).items()}
    return {"episodes": len(records), "metrics": summary, "per_scene": per_scene, "endings": endings(records)}


def endings(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """How the episodes ended: STOP called (and how many of those succeeded, how far from the goal the others
    stopped) or the step limit reached. An SR far under the SoftSPL reads differently for a policy that stops
    short than for one that never stops."""
    stopped = [r for r in records if r.actions and r.actions[-1] == STOP]
    failed = [float(r.metrics["distance_to_goal"]) for r in stopped if not r.metrics.get("success")]
    return {
        "stopped": len(stopped),
        "stopped_successfully": len(stopped) - len(failed),
        "failed_stop_distance_median": float(np.median(failed)) if failed else None,
        "step_limit": len(records) - len(stopped),
    }


def write_jsonl(path: str | Path, records: Sequence[EpisodeRecord]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r.to_json()) + "\n" for r in records))


class EvaluationFileError(UserInputError, ValueError):
    """An evaluation's files are missing or are not what evaluate.py writes; the message names the file."""


def read_jsonl(path: str | Path) -> list[EpisodeRecord]:
    path = Path(path)
    if not path.is_file():
        raise EvaluationFileError(f"no episode records at {path}; run scripts/evaluate.py first")
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(EpisodeRecord.from_json(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise EvaluationFileError(f"{path}:{line_no}: not an episode record: {exc}") from exc
    return out
