"""Batched AudioGoal environment: B episodes stepped at once, observations as torch tensors on a device.

Same task as :class:`asgf_nav.tasks.audionav_env.AudioNavEnv` (tests check observations, rewards, dones
and metrics agree step by step for the same seeds; both take reward and metrics from
:mod:`asgf_nav.tasks.metrics`, here applied to (B,) arrays), organised for throughput:

- the pose logic is a few vectorised numpy operations over B (cheap and exact),
- RGB-D views are preloaded once into device tensors and gathered by (node, yaw),
- spectrograms come from a bounded LRU cache of device tensors keyed (scene, receiver, source, yaw,
  sound); misses are read from a baked spectrogram store when one covers them
  (:mod:`asgf_nav.tasks.spectrogram_store`), else computed together on the device (FFT convolution +
  STFT); the convolved audio is handed on to extra observations that need it (the DoA head).

Finished episodes are reset automatically: the observation returned with ``done`` is the first
observation of the env's next episode, and ``info`` holds the finished episode's metrics.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.tasks import metrics
from asgf_nav.tasks.audionav_env import (
    apply_task_rules,
    graph_start_distances,
    observation_space_for,
    resolved_episodes,
    task_setting,
)
from asgf_nav.tasks.episodes import Episode, EpisodeSampler, ResolvedEpisode, episodes_fingerprint
from asgf_nav.tasks.navigation import (
    ACTION_NAMES,
    MOVE_FORWARD,
    NUM_ACTIONS,
    STOP,
    TURN_LEFT,
    TURN_RIGHT,
    InvalidActionError,
)
from asgf_nav.tasks.observations import (
    BatchObservationState,
    check_provided,
    check_sounds_served,
    get_observation,
)
from asgf_nav.tasks.spectrogram import TorchSpectrogram, default_batch
from asgf_nav.tasks.spectrogram_cache import SpectrogramCache
from asgf_nav.tasks.spectrogram_store import SpectrogramStore
from asgf_nav.tasks.world import TaskWorld, binaural_rirs

logger = logging.getLogger(__name__)


class BatchedAudioNavEnv:
    """``num_envs`` AudioGoal episodes in one process; see the module docstring for the contract."""

    def __init__(
        self,
        world: TaskWorld,
        episodes: Sequence[Episode | ResolvedEpisode],
        num_envs: int,
        device: torch.device | str = "cpu",
        cfg: Any = None,
        sensors: Sequence[str] | None = None,
        seed: int = 0,
        sampler_mode: str = "shuffle",
        cache_size: int | None = None,
        spectrogram_batch: int | None = None,
        spectrogram_store: str | Path | None = None,
        split: str | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        """``spectrogram_store``: root of baked spectrograms (scripts/bake_spectrograms.py), or None. ``split``
        (of the episodes) and ``config_path`` (the config file to name; training's is the run's ``config.yaml``)
        fill in the bake command a stale store file's refusal prints, which names them as placeholders when they
        are not given."""
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        task_cfg = getattr(cfg, "task", cfg)
        self.world = world
        self.episodes = resolved_episodes(episodes, world)
        self.start_distances = graph_start_distances(self.episodes, world)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        apply_task_rules(self, cfg, sensors)
        # 0, from the constructor or the config, means num_envs (the floor below): the smallest working cache
        cache_size = int(cache_size if cache_size is not None else task_setting(task_cfg, "spectrogram_cache_size"))
        self.spectrogram_batch = spectrogram_batch  # None: TorchSpectrogram's default for the device
        self.observation_space = observation_space_for(world, self.sensors)
        self.seed = int(seed)
        self.samplers = [EpisodeSampler(len(self.episodes), seed, i, num_envs, sampler_mode) for i in range(num_envs)]
        self._build_tables()
        self.spectrogram = TorchSpectrogram(world.sample_rate, self.device)
        self.store: SpectrogramStore | None = None
        if spectrogram_store:
            config = str(config_path) if config_path is not None else None
            self.store = SpectrogramStore(spectrogram_store, world, self.spectrogram, split=split, config=config)
        if self.store is not None and Path(spectrogram_store).is_dir():  # "auto" points at a store none baked yet
            logger.info("spectrogram misses are read from %s where baked", spectrogram_store)
        self.store_reads = 0
        self.reuse_audio = True  # hand providers (the DoA head) the spectrogram misses' audio; False: they render it
        self._heard: dict[int, torch.Tensor] = {}  # that audio by cache key, emptied after each observation
        self.cache: SpectrogramCache | None = None
        if self.needs_spectrogram:
            shape = self.spectrogram.shape
            # through a weak reference: the cache holding this env's bound method would keep a dropped env (a
            # training run drops one at each scene-pool reload) and its cache alive until a garbage collection
            compute = weakref.WeakMethod(self._compute_spectrograms)
            self.cache = SpectrogramCache(max(cache_size, num_envs), shape, self.device, lambda keys: compute()(keys))
        self._init_state()

    # ------------------------------------------------------------------------------------ tables
    def _build_tables(self) -> None:
        names = sorted({e.scene for e in self.episodes})
        self.scene_names = names
        self.scenes = [self.world.scene(n) for n in names]
        self.scene_index = {n: i for i, n in enumerate(names)}
        sizes = np.array([s.num_nodes for s in self.scenes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.max_nodes = int(sizes.max())
        self.grid_sizes = np.array([s.grid_size for s in self.scenes], dtype=np.float64)
        self.positions = np.concatenate([np.asarray(s.positions, dtype=np.float64) for s in self.scenes])
        nb = [
            np.where(np.asarray(s.neighbors) >= 0, np.asarray(s.neighbors) + off, -1)
            for s, off in zip(self.scenes, self.offsets)
        ]
        self.neighbors = np.concatenate(nb).astype(np.int64)
        self.positions_t = torch.from_numpy(self.positions.astype(np.float32)).to(self.device)
        self.views: dict[str, torch.Tensor] = {}
        for name in ("rgb", "depth"):
            if name in self.sensors:
                arrays = [np.asarray(getattr(s, name)) for s in self.scenes]
                flat = np.concatenate([a.reshape(a.shape[0] * 4, *a.shape[2:]) for a in arrays])
                self.views[name] = torch.from_numpy(flat).to(self.device)
                logger.info("preloaded %s views: %.1f MB on %s", name, flat.nbytes / 2**20, self.device)
        self.sound_names = sorted({e.sound for e in self.episodes})
        check_sounds_served(self.sensors, self.sound_names)
        self.sound_index = {n: i for i, n in enumerate(self.sound_names)}
        self.sound_table = torch.from_numpy(np.stack([self.world.sound(n) for n in self.sound_names])).to(self.device)

    def _init_state(self) -> None:
        b = self.num_envs
        self.ep_index = np.zeros(b, dtype=np.int64)
        self.scene_idx = np.zeros(b, dtype=np.int64)
        self.node = np.zeros(b, dtype=np.int64)  # global node id
        self.yaw = np.zeros(b, dtype=np.int64)
        self.goal = np.zeros(b, dtype=np.int64)  # global node id
        self.steps = np.zeros(b, dtype=np.int64)
        self.path_length = np.zeros(b, dtype=np.float64)
        self.start_distance = np.zeros(b, dtype=np.float64)  # d0 of SPL / SoftSPL: the graph distance
        self.oracle_actions = np.zeros(b, dtype=np.float64)  # the episode's num_action, for SNA
        self.prev_distance = np.zeros(b, dtype=np.float64)
        self.goal_hops = np.zeros((b, self.max_nodes), dtype=np.int64)
        self._started = False

    def _start_episode(self, i: int, index: int) -> None:
        ep = self.episodes[index]
        s = self.scene_index[ep.scene]
        scene = self.scenes[s]
        self.ep_index[i] = index
        self.scene_idx[i] = s
        self.node[i] = self.offsets[s] + ep.start_node
        self.yaw[i] = ep.start_yaw
        self.goal[i] = self.offsets[s] + ep.goal_node
        self.steps[i] = 0
        self.path_length[i] = 0.0
        self.start_distance[i] = self.start_distances[index]
        self.oracle_actions[i] = ep.num_action
        self.prev_distance[i] = float(ep.geodesic_distance)  # SoundSpaces' reward starts from the stored value
        self.goal_hops[i, : scene.num_nodes] = np.asarray(scene.geodesic_hops[:, ep.goal_node])

    # ------------------------------------------------------------------------------------ API
    def reset(self) -> dict[str, torch.Tensor]:
        """Start a new episode in every env (drawn from each env's sampler) and return the observations."""
        for i, sampler in enumerate(self.samplers):
            self._start_episode(i, sampler.next())
        self._started = True
        return self.observe()

    def step(self, actions: torch.Tensor | np.ndarray | Sequence[int]):
        """Apply (B,) actions; returns obs, reward (B,) float32, done (B,) bool, info of (B,) tensors."""
        if not self._started:
            raise RuntimeError("BatchedAudioNavEnv.step called before reset()")
        act = self._check_actions(actions)
        b = np.arange(self.num_envs)
        old = self.node.copy()
        ahead = self.neighbors[old, self.yaw]
        forward = act == MOVE_FORWARD
        moved = forward & (ahead >= 0)
        self.node = np.where(moved, ahead, old)
        self.path_length += np.where(
            moved, np.linalg.norm(self.positions[self.node] - self.positions[old], axis=1), 0.0
        )
        self.yaw = np.where(
            act == TURN_LEFT, (self.yaw + 1) % 4, np.where(act == TURN_RIGHT, (self.yaw + 3) % 4, self.yaw)
        )
        self.steps += 1
        local = self.local_nodes()
        distance = self.goal_hops[b, local].astype(np.float64) * self.grid_sizes[self.scene_idx]
        stop = act == STOP
        at_goal = self.node == self.goal
        reward = metrics.step_reward(
            self.prev_distance,
            distance,
            (stop & at_goal).astype(np.float64),
            self.slack_reward,
            self.distance_scale,
            self.success_reward,
        )
        self.prev_distance = distance
        done = stop | (self.steps >= self.max_steps)
        info_np = self._metrics(stop, distance)
        info_np["collided"] = forward & ~moved
        info_np["truncated"] = done & ~stop  # ended by the step limit: where a bootstrapping learner keeps the value
        info_np["episode_index"] = self.ep_index.copy()
        for i in np.flatnonzero(done):
            self._start_episode(int(i), self.samplers[i].next())
        obs = self.observe()
        info = {k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in info_np.items()}
        reward_t = torch.from_numpy(reward.astype(np.float32)).to(self.device)
        done_t = torch.from_numpy(done).to(self.device)
        return obs, reward_t, done_t, info

    def _check_actions(self, actions) -> np.ndarray:
        if isinstance(actions, torch.Tensor):  # True would be MOVE_FORWARD, 1.7 too: refused as the single env does
            if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
                raise InvalidActionError(f"actions must be an integer tensor, got {actions.dtype}")
            act = actions.detach().cpu().numpy()
        else:
            act = np.asarray(actions)
            if act.dtype.kind not in "iu":
                raise InvalidActionError(f"actions must be integers, got dtype {act.dtype}")
        act = act.reshape(-1).astype(np.int64)
        if act.shape != (self.num_envs,):
            raise InvalidActionError(f"expected {self.num_envs} actions, got shape {tuple(np.shape(actions))}")
        bad = np.flatnonzero((act < 0) | (act >= NUM_ACTIONS))
        if bad.size:
            raise InvalidActionError(
                f"invalid action(s) {act[bad[:5]].tolist()} for env(s) {bad[:5].tolist()}; valid actions are "
                f"0..3 = {', '.join(ACTION_NAMES)}"
            )
        return act

    def _metrics(self, stop: np.ndarray, distance: np.ndarray) -> dict[str, np.ndarray]:
        """Every env's metrics as if its episode ended now (only the rows of envs that are done mean anything)."""
        values = metrics.episode_metrics_array(
            stop,
            self.start_distance,
            distance,
            self.path_length,
            self.oracle_actions,
            self.steps,
            self.success_distance,
        )
        return {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}

    # ------------------------------------------------------------------------------------ observations
    def observe(self) -> dict[str, torch.Tensor]:
        """Observations of the current state (also the way to get them after :meth:`load_state_dict`)."""
        if not self._started:  # the zeroed state is no episode: node 0 need not even hold a source
            raise RuntimeError("BatchedAudioNavEnv.observe called before reset() (or a loaded state that had none)")
        view_index = torch.from_numpy(self.node * 4 + self.yaw).to(self.device)
        obs: dict[str, torch.Tensor] = {}
        spec = None
        try:
            if self.cache is not None:
                spec = self.cache.lookup(self.spectrogram_keys())
            for name in self.sensors:
                if name == "rgb":  # index_select: on the CPU 10-25x faster than t[index] for these rows
                    obs[name] = self.views["rgb"].index_select(0, view_index)
                elif name == "depth":
                    depth = self.views["depth"].index_select(0, view_index)
                    obs[name] = depth.float().clamp_(0.0, 10.0).div_(10.0).unsqueeze(-1)
                elif name == "spectrogram":
                    obs[name] = spec
                else:
                    obs[name] = self._extra_observation(name, spec)
        finally:
            self._heard.clear()
        return obs

    def _extra_observation(self, name: str, spec: torch.Tensor | None) -> torch.Tensor:
        provider = get_observation(name)
        node_t = torch.from_numpy(self.node).to(self.device)
        state = BatchObservationState(
            world=self.world,
            episodes=[self.episodes[i] for i in self.ep_index],
            node=torch.from_numpy(self.local_nodes()).to(self.device),
            yaw=torch.from_numpy(self.yaw).to(self.device),
            step=torch.from_numpy(self.steps).to(self.device),
            position=self.positions_t[node_t],
            goal_position=self.positions_t[torch.from_numpy(self.goal).to(self.device)],
            spectrogram=spec,
            received=self.received_audio,
        )
        space = self.observation_space[name]
        dtype = torch.from_numpy(np.zeros(0, dtype=space.dtype)).dtype
        if provider.compute_batch is not None:
            batch = check_provided(name, provider.compute_batch(state), (self.num_envs, *space.shape))
            return torch.as_tensor(batch).to(device=self.device, dtype=dtype)
        rows = [
            check_provided(name, np.asarray(provider.compute(state.single(i))), space.shape)
            for i in range(self.num_envs)
        ]
        return torch.from_numpy(np.stack(rows)).to(device=self.device, dtype=dtype)

    def spectrogram_keys(self) -> np.ndarray:
        """(B,) int64 cache keys of the current spectrograms: codes of (scene, receiver, source, yaw, sound)."""
        sound = np.array([self.sound_index[self.episodes[i].sound] for i in self.ep_index], dtype=np.int64)
        local = self.local_nodes()
        source = self.goal - self.offsets[self.scene_idx]
        n, s = self.max_nodes, len(self.sound_index)
        return (((self.scene_idx * n + local) * n + source) * 4 + self.yaw) * s + sound

    def _decode_keys(self, keys: np.ndarray) -> tuple[np.ndarray, ...]:
        n, s = self.max_nodes, len(self.sound_index)
        rest, sound = np.divmod(keys, s)
        rest, yaw = np.divmod(rest, 4)
        rest, source = np.divmod(rest, n)
        scene, receiver = np.divmod(rest, n)
        return scene, receiver, source, yaw, sound

    def _compute_spectrograms(self, keys: np.ndarray) -> torch.Tensor:
        """Spectrograms for unique cache misses: read from the store where baked, else computed on the device."""
        scene, receiver, source, yaw, sound = self._decode_keys(keys)
        out = torch.empty((len(keys), *self.spectrogram.shape), dtype=torch.float32, device=self.device)
        live = np.ones(len(keys), dtype=bool)
        if self.store is not None:
            pairs = scene * len(self.sound_names) + sound
            for pair in np.unique(pairs):
                items = np.flatnonzero(pairs == pair)
                a, s = divmod(int(pair), len(self.sound_names))
                stored = self.store.lookup(
                    self.scenes[a], self.sound_names[s], receiver[items], source[items], yaw[items]
                )
                if stored is not None:
                    out[torch.from_numpy(items).to(self.device)] = torch.from_numpy(stored).to(self.device)
                    live[items] = False
                    self.store_reads += len(items)
        items = np.flatnonzero(live)
        if items.size:
            audio = self._render_audio(keys[items])
            if self.reuse_audio:
                self._heard.update(zip(keys[items].tolist(), audio))
            batch = self.spectrogram_batch or default_batch(self.device)
            values = torch.cat([self.spectrogram.from_audio(chunk) for chunk in audio.split(batch)])
            out[torch.from_numpy(items).to(self.device)] = values
        return out

    def _render_audio(self, keys: np.ndarray) -> torch.Tensor:
        """(len(keys), 2, sr) sounds of cache ``keys`` through their binaural RIRs, on the device."""
        scene, receiver, source, yaw, sound = self._decode_keys(keys)
        rirs = binaural_rirs((self.scenes[a], r, src, y) for a, r, src, y in zip(scene, receiver, source, yaw))
        waves = self.sound_table[torch.from_numpy(sound).to(self.device)]
        return self.spectrogram.audio_from_rirs(waves, rirs, self.spectrogram_batch)

    def received_audio(self, items: Sequence[int]) -> torch.Tensor:
        """(len(items), 2, sr): the goal sound as envs ``items`` hear it now, on the device; what this
        observation's spectrogram misses already rendered is reused, the rest is rendered."""
        keys = self.spectrogram_keys()[np.asarray(items, dtype=np.int64)].tolist()
        if not keys:
            return torch.zeros((0, 2, self.world.sample_rate), device=self.device)
        fresh = [k for k in dict.fromkeys(keys) if k not in self._heard]
        rendered = dict(zip(fresh, self._render_audio(np.asarray(fresh, dtype=np.int64)))) if fresh else {}
        return torch.stack([self._heard[k] if k in self._heard else rendered[k] for k in keys])

    # ------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Sampler RNGs and per-env episode state; restoring it continues the exact same trajectories."""
        return {
            "num_envs": self.num_envs,
            "num_episodes": len(self.episodes),
            "episodes": self.episodes_fingerprint(),
            "started": self._started,
            "samplers": [s.state_dict() for s in self.samplers],
            "ep_index": self.ep_index.copy(),
            "node_local": self.local_nodes(),
            "yaw": self.yaw.copy(),
            "steps": self.steps.copy(),
            "path_length": self.path_length.copy(),
            "prev_distance": self.prev_distance.copy(),
        }

    def episodes_fingerprint(self) -> str:
        """What the saved per-env state refers to: the episodes' content, not only their number (a scene
        baked again under its name gets other episodes, as many as before)."""
        if not hasattr(self, "_episodes_fingerprint"):
            self._episodes_fingerprint = episodes_fingerprint(self.episodes)
        return self._episodes_fingerprint

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart every env's episode sampler from ``seed`` (an int or a sequence of ints); takes effect
        at the next episode an env starts (``reset``, or the automatic reset inside ``step``). Shuffle
        samplers then walk fresh permutations, sequential ones restart their stride. A resumed run whose
        saved sampler state cannot be loaded uses it with a seed of its own, so it does not replay the
        episodes the run began with."""
        mode = self.samplers[0].mode
        n = self.num_envs
        self.samplers = [EpisodeSampler(len(self.episodes), seed, i, n, mode) for i in range(n)]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_envs"] != self.num_envs or state["num_episodes"] != len(self.episodes):
            why = "; the scene pool changed, e.g. more scenes were baked" if state["num_envs"] == self.num_envs else ""
            raise ValueError(
                f"env state is for {state['num_envs']} envs / {state['num_episodes']} episodes, this env has "
                f"{self.num_envs} / {len(self.episodes)}{why}"
            )
        if state.get("episodes", self.episodes_fingerprint()) != self.episodes_fingerprint():
            raise ValueError(
                f"env state is for other episodes than this env's {len(self.episodes)} (as many, other content: "
                "a scene baked again, or other episode files)"
            )
        for sampler, s in zip(self.samplers, state["samplers"]):
            sampler.load_state_dict(s)
        self._started = bool(state["started"])
        if not self._started:
            return
        for i, index in enumerate(np.asarray(state["ep_index"])):
            self._start_episode(i, int(index))
        local = np.asarray(state["node_local"], dtype=np.int64)
        sizes = np.array([self.scenes[k].num_nodes for k in self.scene_idx], dtype=np.int64)
        if ((local < 0) | (local >= sizes)).any():  # a state saved before it recorded its episodes
            raise ValueError(
                f"env state places agents at nodes {local.tolist()} outside their scenes' {sizes.tolist()}"
            )
        self.node = self.offsets[self.scene_idx] + local
        self.yaw = np.asarray(state["yaw"], dtype=np.int64).copy()
        self.steps = np.asarray(state["steps"], dtype=np.int64).copy()
        self.path_length = np.asarray(state["path_length"], dtype=np.float64).copy()
        self.prev_distance = np.asarray(state["prev_distance"], dtype=np.float64).copy()

    # ------------------------------------------------------------------------------------ introspection
    def current_episodes(self) -> list[ResolvedEpisode]:
        return [self.episodes[i] for i in self.ep_index]

    def local_nodes(self) -> np.ndarray:
        """(B,) each env's current node within its own scene."""
        return self.node - self.offsets[self.scene_idx]

    def cache_stats(self) -> dict[str, int]:
        if self.cache is None:
            return {"hits": 0, "misses": 0, "size": 0, "capacity": 0, "store_reads": 0}
        return {
            "hits": self.cache.hits,
            "misses": self.cache.misses,
            "size": len(self.cache),
            "capacity": self.cache.capacity,
            "store_reads": self.store_reads,
        }
