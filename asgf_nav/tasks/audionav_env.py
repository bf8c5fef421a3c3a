"""Reference AudioGoal environment (gymnasium id ``AudioNav-v0``): one agent, computed step by step.

This is the readable statement of the task: every observation is computed with scipy at each step,
the way SoundSpaces 1.0 computes it. The batched env must reproduce it exactly (tests compare them); both
take reward and metrics from :mod:`asgf_nav.tasks.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from asgf_nav.config import TaskConfig, import_plugins
from asgf_nav.tasks import metrics
from asgf_nav.tasks.episodes import Episode, EpisodeSampler, ResolvedEpisode, resolve_episodes
from asgf_nav.tasks.navigation import NUM_ACTIONS, STOP, check_action, step_pose
from asgf_nav.tasks.observations import (
    ObservationState,
    check_provided,
    check_sensors,
    check_sounds_served,
    get_observation,
    spectrogram_needed,
)
from asgf_nav.tasks.spectrogram import spectrogram_np, spectrogram_shape
from asgf_nav.tasks.world import TaskWorld

logger = logging.getLogger(__name__)


def apply_task_rules(env: Any, cfg: Any, sensors: Sequence[str] | None) -> None:
    """Set what both envs (this reference and ``batched_env.BatchedAudioNavEnv``) play by, from ``cfg`` (an
    ExperimentConfig, its TaskConfig, or None for SoundSpaces' defaults): ``sensors``, ``needs_spectrogram``,
    ``max_steps``, ``success_distance``, ``slack_reward``, ``success_reward`` and ``distance_scale``; here once,
    so that the two envs cannot drift apart. The modules of ``model.plugins`` are imported first."""
    task_cfg = getattr(cfg, "task", cfg)
    import_plugins(getattr(getattr(cfg, "model", None), "plugins", ()))  # the observations they register
    env.sensors = check_sensors(list(sensors if sensors is not None else task_setting(task_cfg, "sensors")))
    env.needs_spectrogram = spectrogram_needed(env.sensors)  # a sensor, or a provider's input
    env.max_steps = int(task_setting(task_cfg, "max_steps"))
    env.success_distance = float(task_setting(task_cfg, "success_distance"))
    env.slack_reward = float(task_setting(task_cfg, "slack_reward"))
    env.success_reward = float(task_setting(task_cfg, "success_reward"))
    env.distance_scale = float(task_setting(task_cfg, "distance_reward_scale"))


_SOUNDSPACES_TASK = TaskConfig()  # the defaults: SoundSpaces 1.0's rules


def task_setting(task_cfg: TaskConfig | None, name: str) -> Any:
    """``task_cfg.name``, or its SoundSpaces default for an env made without a config (tests, benchmarks)."""
    default = getattr(_SOUNDSPACES_TASK, name)
    return default if task_cfg is None else getattr(task_cfg, name, default)


def observation_space_for(world: TaskWorld, sensors: Sequence[str]) -> gym.spaces.Dict:
    """Per-env Dict space: rgb (H,W,3) uint8, depth (H,W,1) in [0,1], spectrogram (F,T,2), extras."""
    scene = next(iter(world.scenes.values()))
    spaces: dict[str, gym.Space] = {}
    for name in sensors:
        if name == "rgb":
            if scene.rgb is None:
                raise ValueError(f"sensor 'rgb' requested but scene {scene.name} has no rgb views")
            h, w = scene.rgb.shape[2:4]
            spaces[name] = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        elif name == "depth":
            if scene.depth is None:
                raise ValueError(f"sensor 'depth' requested but scene {scene.name} has no depth views")
            h, w = scene.depth.shape[2:4]
            spaces[name] = gym.spaces.Box(0.0, 1.0, (h, w, 1), np.float32)
        elif name == "spectrogram":
            spaces[name] = gym.spaces.Box(0.0, np.inf, spectrogram_shape(world.sample_rate), np.float32)
        else:
            spaces[name] = get_observation(name).space(world)
    return gym.spaces.Dict(spaces)


class AudioNavEnv(gym.Env):
    """SoundSpaces 1.0 AudioGoal: walk to the sounding node and STOP.

    Actions: 0 STOP, 1 MOVE_FORWARD, 2 TURN_LEFT, 3 TURN_RIGHT. Episodes come from ``episodes`` (stored
    :class:`Episode` or already resolved) drawn by an :class:`EpisodeSampler` seeded with ``seed`` and
    ``env_index``; ``reset(options={"episode_index": i})`` runs a given one. With no ``world`` the scenes
    of ``split`` are loaded from ``cfg`` (see :func:`asgf_nav.tasks.factory.load_task_data`).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        world: TaskWorld | None = None,
        episodes: Sequence[Episode | ResolvedEpisode] | None = None,
        cfg: Any = None,
        split: str = "train",
        sensors: Sequence[str] | None = None,
        seed: int = 0,
        env_index: int = 0,
        num_envs: int = 1,
        sampler_mode: str | None = None,
    ) -> None:
        if world is None or episodes is None:
            from asgf_nav.tasks.factory import load_task_data

            if cfg is None:  # gymnasium.make("AudioNav-v0") without arguments
                raise TypeError(
                    "AudioNavEnv needs cfg (an ExperimentConfig: its split is loaded), or world and episodes"
                )

            world, episodes = load_task_data(cfg, split)
        self.world = world
        self.episodes = resolved_episodes(episodes, world)
        self.start_distances = graph_start_distances(self.episodes, world)
        apply_task_rules(self, cfg, sensors)
        check_sounds_served(self.sensors, sorted({e.sound for e in self.episodes}))  # as the batched env
        self.observation_space = observation_space_for(world, self.sensors)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        # as make_env: training shuffles, val and test stride through their episodes once
        sampler_mode = sampler_mode or ("shuffle" if split == "train" else "sequential")
        self._sampler_args = (len(self.episodes), env_index, num_envs, sampler_mode)
        self.sampler = EpisodeSampler(len(self.episodes), seed, env_index, num_envs, sampler_mode)
        self.episode: ResolvedEpisode | None = None
        self._done = True

    # -------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            n, env_index, num_envs, mode = self._sampler_args
            self.sampler = EpisodeSampler(n, seed, env_index, num_envs, mode)
        options = options or {}
        if "episode_index" in options:
            index = int(options["episode_index"])
            if not 0 <= index < len(self.episodes):
                raise IndexError(f"episode_index {index} out of range (0..{len(self.episodes) - 1})")
        else:
            index = self.sampler.next()
        ep = self.episodes[index]
        self.episode = ep
        self.scene = self.world.scene(ep.scene)
        self.node, self.yaw = ep.start_node, ep.start_yaw
        self.steps = 0
        self.path_length = 0.0
        self.start_distance = float(self.start_distances[index])
        self.prev_distance = float(ep.geodesic_distance)  # SoundSpaces' reward starts from the stored value
        self.called_stop = False
        self._done = False
        return self._observe(), {"episode_id": ep.episode_id, "scene": ep.scene, "episode_index": index}

    def step(self, action):
        action = check_action(action)
        if self._done:
            raise RuntimeError("AudioNavEnv.step called on a finished episode; call reset() first")
        ep = self.episode
        old = self.node
        self.node, self.yaw, collided = step_pose(self.scene.neighbors, self.node, self.yaw, action)
        if self.node != old:
            delta = self.scene.positions[self.node].astype(np.float64) - self.scene.positions[old]
            self.path_length += float(np.linalg.norm(delta))
        self.steps += 1
        distance = self.distance_to_goal()
        self.called_stop = action == STOP
        reward = float(
            metrics.step_reward(
                self.prev_distance,
                distance,
                float(self.called_stop and self.node == ep.goal_node),
                self.slack_reward,
                self.distance_scale,
                self.success_reward,
            )
        )
        self.prev_distance = distance
        terminated = self.called_stop
        truncated = not terminated and self.steps >= self.max_steps
        info: dict[str, Any] = {"collided": collided, "distance_to_goal": distance, "episode_id": ep.episode_id}
        if terminated or truncated:
            self._done = True
            info.update(
                metrics.episode_metrics(
                    self.called_stop,
                    self.start_distance,
                    distance,
                    self.path_length,
                    ep.num_action,
                    self.steps,
                    self.success_distance,
                )
            )
        return self._observe(), reward, terminated, truncated, info

    # -------------------------------------------------------------------------------------- state
    def distance_to_goal(self) -> float:
        return float(self.scene.geodesic_hops[self.node, self.episode.goal_node]) * float(self.scene.grid_size)

    def state(self) -> ObservationState:
        return ObservationState(self.world, self.scene, self.episode, self.node, self.yaw, self.steps)

    def _observe(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        spec = None
        if self.needs_spectrogram:
            rir = self.scene.rir(self.node, self.episode.goal_node, self.yaw)
            spec = spectrogram_np(self.world.sound(self.episode.sound), rir, self.world.sample_rate)
        for name in self.sensors:
            if name == "rgb":
                obs[name] = np.array(self.scene.rgb[self.node, self.yaw], dtype=np.uint8)
            elif name == "depth":
                depth = np.asarray(self.scene.depth[self.node, self.yaw], dtype=np.float32)
                obs[name] = (np.clip(depth, 0.0, 10.0) / np.float32(10.0))[..., None]
            elif name == "spectrogram":
                obs[name] = spec
            else:
                state = ObservationState(self.world, self.scene, self.episode, self.node, self.yaw, self.steps, spec)
                space = self.observation_space[name]
                value = check_provided(name, np.asarray(get_observation(name).compute(state)), space.shape)
                obs[name] = value.astype(space.dtype, copy=False)
        return obs


START_DISTANCE_TOLERANCE = 1e-5  # m; generated episodes store the graph distance rounded to 6 decimals
_warned_start_distances: set[tuple[str, str, float, float, int]] = set()


def graph_start_distances(episodes: Sequence[ResolvedEpisode], world: TaskWorld) -> np.ndarray:
    """(E,) float64 start-to-goal graph distances (hops x grid size): the d0 of SPL and SoftSPL.

    habitat's SPL takes d0 from SoundSpaces' distance-to-goal measure at reset, i.e. from the graph, not
    from the episode's ``info.geodesic_distance``. Where a dataset's stored values disagree with the graph,
    one warning names the first such episode (once per process and episode set, not per env or step).
    """
    d0 = np.empty(len(episodes), dtype=np.float64)
    by_scene: dict[str, list[int]] = {}
    for i, e in enumerate(episodes):
        by_scene.setdefault(e.scene, []).append(i)
    for name, items in by_scene.items():
        scene = world.scene(name)
        start = np.array([episodes[i].start_node for i in items], dtype=np.int64)
        goal = np.array([episodes[i].goal_node for i in items], dtype=np.int64)
        hops = scene.geodesic_hops[start, goal]
        d0[items] = hops.astype(np.float64) * float(scene.grid_size)
    stored = np.array([e.geodesic_distance for e in episodes], dtype=np.float64)
    off = np.flatnonzero(~np.isclose(stored, d0, rtol=1e-6, atol=START_DISTANCE_TOLERANCE))
    if off.size:
        first = episodes[int(off[0])]
        key = (first.episode_id, first.scene, float(stored[off[0]]), float(d0[off[0]]), int(off.size))
        if key not in _warned_start_distances:
            _warned_start_distances.add(key)
            logger.warning(
                "%d of %d episodes store an info.geodesic_distance other than their graph distance (hops x grid "
                "size), first episode %s in %s: stored %.6g m, graph %.6g m. SPL and SoftSPL use the graph "
                "distance, as SoundSpaces does; the stored one is only the reward's first previous distance",
                off.size,
                len(episodes),
                first.episode_id,
                first.scene,
                stored[off[0]],
                d0[off[0]],
            )
    return d0


def resolved_episodes(episodes: Sequence[Episode | ResolvedEpisode], world: TaskWorld) -> list[ResolvedEpisode]:
    """Stored episodes are resolved against the world; resolved ones are checked against it."""
    if not episodes:
        raise ValueError(
            f"no episodes to run in the {world.dataset} scenes {sorted(world.scenes)}: the episode count of this "
            "split (task.train_episodes_per_scene, task.val_episodes, task.test_episodes) or its episode files "
            "gave none"
        )
    if all(isinstance(e, ResolvedEpisode) for e in episodes):
        for e in episodes:
            scene = world.scene(e.scene)
            scene.check_node(e.start_node, f"episode {e.episode_id} start node")
            scene.check_node(e.goal_node, f"episode {e.episode_id} goal node")
        return list(episodes)
    if all(isinstance(e, Episode) for e in episodes):
        return resolve_episodes(list(episodes), world)
    raise TypeError("episodes must be all Episode or all ResolvedEpisode")
