"""Batched env vs the reference env: same observations, rewards, dones and metrics for the same seeds."""

import numpy as np
import pytest
import torch
from env_helpers import reset_env_pair

from asgf_nav.config import ExperimentConfig, TaskConfig
from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.episodes import ResolvedEpisode
from asgf_nav.tasks.factory import make_env
from asgf_nav.tasks.metrics import METRIC_NAMES
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SENSORS = ["rgb", "depth", "spectrogram", "pointgoal"]


@pytest.fixture(scope="module")
def world():
    return synthetic_world(sample_rate=16000)


@pytest.fixture(scope="module")
def episodes(world):
    return generate_split(world, "train", "unheard", ["bell", "drum", "horn"], TaskConfig(train_episodes_per_scene=12))


def _compare_obs(batched, refs):
    for name in SENSORS:
        stacked = np.stack([r[name] for r in refs])
        got = batched[name].cpu().numpy()
        assert got.shape == stacked.shape and got.dtype == stacked.dtype, name
        if name in ("rgb", "depth"):
            np.testing.assert_array_equal(got, stacked, err_msg=name)
        else:
            np.testing.assert_allclose(got, stacked, rtol=1e-4, atol=1e-4, err_msg=name)


def _scripted_actions(steps, num_envs, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(4, size=(steps, num_envs), p=[0.07, 0.51, 0.21, 0.21])


@pytest.mark.parametrize("cache_size,steps", [(4096, 200), (4, 40)])
def test_agrees_with_reference_over_200_steps(world, episodes, cache_size, steps):
    b, seed = 4, 11
    cfg = TaskConfig(max_steps=40, sensors=SENSORS)
    env = BatchedAudioNavEnv(world, episodes, b, cfg=cfg, seed=seed, cache_size=cache_size)
    refs = [AudioNavEnv(world, episodes, cfg, seed=seed, env_index=i, num_envs=b) for i in range(b)]
    ref_obs = [r.reset()[0] for r in refs]
    _compare_obs(env.reset(), ref_obs)
    finished = collisions = 0
    for actions in _scripted_actions(steps, b):
        obs, reward, done, info = env.step(torch.from_numpy(actions))
        assert reward.dtype == torch.float32 and done.dtype == torch.bool
        for i, r in enumerate(refs):
            o, rr, term, trunc, rinfo = r.step(int(actions[i]))
            assert bool(done[i]) == (term or trunc)
            assert reward[i].item() == pytest.approx(rr, abs=1e-5)
            assert bool(info["collided"][i]) == rinfo["collided"]
            collisions += rinfo["collided"]
            if term or trunc:
                finished += 1
                for k in METRIC_NAMES:
                    assert info[k][i].item() == pytest.approx(rinfo[k], abs=1e-5), k
                o = r.reset()[0]
                assert env.current_episodes()[i] == r.episode
            ref_obs[i] = o
        _compare_obs(obs, ref_obs)
    assert finished >= steps // 10  # many episodes, STOP and the step limit both exercised
    assert collisions > 0  # some forward moves hit a wall
    stats = env.cache_stats()
    assert stats["size"] <= stats["capacity"] and stats["capacity"] == max(cache_size, b)


def test_agrees_with_reference_on_a_half_metre_grid():
    """On Replica's 0.5 m grid STOP one hop from the goal succeeds (distance < 1 m) and an episode can be
    shorter than the oracle's action count, which a 1 m grid cannot show."""
    world = synthetic_world(
        [grid_scene("fa", grid_size=0.5), grid_scene("fb", grid_size=0.5, blocked=((2, 1), (2, 2)))]
    )
    episodes = generate_split(world, "train", "unheard", ["bell", "drum"], TaskConfig(train_episodes_per_scene=12))
    b, seed = 4, 11
    cfg = TaskConfig(max_steps=40, sensors=["depth"])
    env, refs = reset_env_pair(world, episodes, b, cfg, seed)
    near_successes = 0
    for actions in np.random.default_rng(0).choice(4, size=(400, b), p=[0.15, 0.45, 0.2, 0.2]):
        _, reward, _, info = env.step(torch.from_numpy(actions))
        for i, r in enumerate(refs):
            _, ref_reward, term, trunc, ref_info = r.step(int(actions[i]))
            assert reward[i].item() == pytest.approx(ref_reward, abs=1e-5)
            if term or trunc:
                for name in METRIC_NAMES:
                    assert info[name][i].item() == pytest.approx(ref_info[name], abs=1e-5), name
                assert 0.0 <= ref_info["sna"] <= 1.0
                near_successes += ref_info["success"] == 1.0 and ref_info["distance_to_goal"] > 0
                r.reset()
    assert near_successes > 0


def test_spl_uses_the_graph_start_distance_in_both_envs(world, episodes):
    """Stored ``info.geodesic_distance`` 0.5 m short of the graph distance: the oracle still scores SPL =
    SoftSPL = 1 in both envs (d0 comes from the graph); only an episode's first reward sees the stored value."""
    from dataclasses import replace

    from asgf_nav.tasks.episodes import resolve_episodes
    from asgf_nav.tasks.navigation import oracle_next_action

    shifted = [replace(e, geodesic_distance=e.geodesic_distance - 0.5) for e in resolve_episodes(episodes, world)]
    b, seed = 3, 7
    cfg = TaskConfig(max_steps=100, sensors=["depth"])
    env, refs = reset_env_pair(world, shifted, b, cfg, seed)
    finished, first_forward, first_step = 0, 0, np.ones(b, dtype=bool)
    while finished < 12:
        actions = []
        for i, ep in enumerate(env.current_episodes()):
            scene = world.scene(ep.scene)
            hops = np.asarray(scene.geodesic_hops[:, ep.goal_node])
            actions.append(oracle_next_action(scene.neighbors, hops, int(env.local_nodes()[i]), int(env.yaw[i])))
        _, reward, done, info = env.step(np.asarray(actions))
        for i, r in enumerate(refs):
            _, ref_reward, term, trunc, ref_info = r.step(actions[i])
            assert reward[i].item() == pytest.approx(ref_reward, abs=1e-5)
            if first_step[i] and actions[i] == 1:  # a first forward step gains 0.5 m less than the graph says
                assert ref_reward == pytest.approx(0.49)
                first_forward += 1
            first_step[i] = False
            if term or trunc:
                assert bool(done[i])
                for name in ("success", "spl", "softspl"):
                    assert info[name][i].item() == 1.0 and ref_info[name] == 1.0, name
                finished += 1
                first_step[i] = True
                r.reset()
    assert first_forward > 0


def test_state_dict_resumes_exactly(world, episodes):
    cfg = TaskConfig(max_steps=25, sensors=["depth", "spectrogram"])
    actions = _scripted_actions(60, 3, seed=4)
    env = BatchedAudioNavEnv(world, episodes, 3, cfg=cfg, seed=2)
    env.reset()
    for a in actions[:30]:
        env.step(a)
    state = env.state_dict()
    tail = [env.step(a) for a in actions[30:]]
    other = BatchedAudioNavEnv(world, episodes, 3, cfg=cfg, seed=99)
    other.load_state_dict(state)
    restored = other.state_dict()
    for key, value in state.items():  # every per-env field, path lengths included (SPL after a resume)
        if key != "samplers":
            np.testing.assert_array_equal(restored[key], value, err_msg=key)
    for a, (obs, reward, done, info) in zip(actions[30:], tail):
        obs2, reward2, done2, info2 = other.step(a)
        assert torch.equal(done, done2) and torch.allclose(reward, reward2)
        assert torch.allclose(obs["spectrogram"], obs2["spectrogram"], atol=1e-5)
        assert torch.equal(info["spl"], info2["spl"])
    fewer_episodes = BatchedAudioNavEnv(world, episodes[:-1], 3, cfg=cfg, seed=2)
    with pytest.raises(ValueError, match="the scene pool changed"):
        fewer_episodes.load_state_dict(state)
    with pytest.raises(ValueError, match=r"for 3 envs .* this env has 2 / \d+$"):
        BatchedAudioNavEnv(world, episodes, 2, cfg=cfg, seed=2).load_state_dict(state)

    # as many episodes, other content (a scene baked again under its name): not this state's episodes
    regenerated = generate_split(
        world, "train", "unheard", ["horn", "bell", "drum"], TaskConfig(train_episodes_per_scene=12)
    )
    assert len(regenerated) == len(episodes) and regenerated != episodes
    with pytest.raises(ValueError, match="env state is for other episodes"):
        BatchedAudioNavEnv(world, regenerated, 3, cfg=cfg, seed=2).load_state_dict(state)
    # a state saved before it recorded its episodes is still checked for agents outside their scenes
    older = {k: v for k, v in state.items() if k != "episodes"}
    other.load_state_dict(older)
    older["node_local"] = np.full(3, 10_000)
    with pytest.raises(ValueError, match="outside their scenes"):
        other.load_state_dict(older)


@pytest.mark.parametrize("split", ["train", "val"])
def test_the_reference_env_draws_the_episodes_make_env_draws(world, episodes, split):
    """Both take their sampler mode from the split: training shuffles, val and test stride through."""
    cfg = ExperimentConfig()
    cfg.task.sensors = ["depth"]
    batched = make_env(cfg, split, device="cpu", num_envs=3, seed=5, world=world, episodes=episodes)
    refs = [AudioNavEnv(world, episodes, cfg, split=split, seed=5, env_index=i, num_envs=3) for i in range(3)]
    batched.reset()
    for r in refs:
        r.reset()
    got = [e.episode_id for e in batched.current_episodes()]
    assert got == [r.episode.episode_id for r in refs]
    if split == "val":
        assert got == [e.episode_id for e in episodes[:3]]  # env i starts at episode i


def test_invalid_actions_raise(world, episodes):
    """Every refusal is the single env's InvalidActionError (a ValueError, and for a wrong type a TypeError too);
    a bool tensor is refused like a bool array, not read as MOVE_FORWARD / STOP."""
    from asgf_nav.tasks import InvalidActionError

    env = BatchedAudioNavEnv(world, episodes, 2, sensors=["depth"])
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="observe called before reset"):  # node 0 need not hold a source
        env.observe()
    env.reset()
    for refused in (torch.tensor([True, False]), np.array([True, False]), torch.tensor([1.0, 0.0]), [1, 9]):
        with pytest.raises(InvalidActionError):
            env.step(refused)
    with pytest.raises(ValueError, match=r"invalid action\(s\) \[7\] for env\(s\) \[1\]"):
        env.step(torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="expected 2 actions"):
        env.step(torch.tensor([1, 1, 1]))
    with pytest.raises(TypeError, match="integer"):
        env.step(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"invalid action\(s\) \[4\] for env\(s\) \[1\]"):  # one past TURN_RIGHT
        env.step(np.array([1, 4]))
    with pytest.raises(TypeError, match="integers, got dtype float64"):  # 1.7 would truncate to MOVE_FORWARD
        env.step(np.array([1.7, 0.0]))
    with pytest.raises(ValueError, match=r"invalid action\(s\) \[-1\] for env\(s\) \[0\]"):  # not a silent no-op
        env.step(np.array([-1, 1]))


def test_sequential_sampler_covers_dataset_once(world, episodes):
    env = BatchedAudioNavEnv(world, episodes, 4, sensors=["depth"], sampler_mode="sequential")
    env.reset()
    seen = [e.episode_id for e in env.current_episodes()]
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.int64))  # STOP: every env moves to its next episode
        seen += [e.episode_id for e in env.current_episodes()]
    assert sorted(seen) == sorted(e.episode_id for e in episodes)


def test_make_env_with_given_world(world, episodes):
    cfg = ExperimentConfig()
    cfg.task.sensors = ["depth", "spectrogram"]
    env = make_env(cfg, "train", device="cpu", num_envs=3, world=world, episodes=episodes, seed=5)
    obs = env.reset()
    assert env.num_envs == 3 and set(obs) == {"depth", "spectrogram"}
    assert obs["depth"].shape == (3, *env.observation_space["depth"].shape)
    assert obs["spectrogram"].shape == (3, 65, 26, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(world, episodes):
    cfg = TaskConfig(max_steps=30, sensors=SENSORS)
    cpu = BatchedAudioNavEnv(world, episodes, 8, cfg=cfg, seed=1)
    gpu = BatchedAudioNavEnv(world, episodes, 8, cfg=cfg, seed=1, device="cuda")
    cpu.reset(), gpu.reset()
    for a in _scripted_actions(50, 8):
        o1, r1, d1, i1 = cpu.step(a)
        o2, r2, d2, i2 = gpu.step(torch.from_numpy(a).cuda())
        assert torch.equal(d1, d2.cpu()) and torch.allclose(r1, r2.cpu())
        assert torch.equal(o1["rgb"], o2["rgb"].cpu()) and torch.equal(o1["depth"], o2["depth"].cpu())
        assert torch.allclose(o1["spectrogram"], o2["spectrogram"].cpu(), atol=1e-3)
        assert i1.keys() == i2.keys()
        for name in i1:  # the metrics, distances and episode indices the trainer logs
            assert torch.allclose(i1[name].double(), i2[name].cpu().double(), atol=1e-5), name


def test_spectrogram_cache_evicts_the_least_recent_and_clear_forgets_all():
    from asgf_nav.tasks.spectrogram_cache import SpectrogramCache

    computed = []

    def compute(keys):
        computed.append(keys.tolist())
        return torch.from_numpy(keys.astype(np.float32))[:, None].repeat(1, 3)

    cache = SpectrogramCache(3, (3,), "cpu", compute)
    assert cache.lookup(np.array([5, 6, 5]))[:, 0].tolist() == [5.0, 6.0, 5.0] and computed == [[5, 6]]
    cache.lookup(np.array([7, 5]))  # 6 is now the least recent
    cache.lookup(np.array([8]))  # evicts 6
    assert cache.lookup(np.array([6, 7]))[:, 0].tolist() == [6.0, 7.0] and computed[-1] == [6]
    assert (cache.hits, cache.misses) == (2, 5) and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.lookup(np.array([8, 5, 6]))[:, 0].tolist() == [8.0, 5.0, 6.0]
    assert computed[-1] == [8, 5, 6] and (cache.hits, cache.misses) == (2, 8)


def test_a_spectrogram_cache_without_room_is_refused_when_made():
    """A cache of capacity 0 (or less) is refused with its value named, not at its first lookup."""
    from asgf_nav.tasks.spectrogram_cache import SpectrogramCache

    for capacity in (0, -2):
        with pytest.raises(ValueError, match=f"capacity must be positive, got {capacity}"):
            SpectrogramCache(capacity, (3,), "cpu", lambda keys: torch.zeros(len(keys), 3))


def test_a_provider_that_reads_the_spectrogram_gets_it_without_the_spectrogram_sensor(world, episodes, monkeypatch):
    import gymnasium

    from asgf_nav.tasks import observations

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))  # the test's names stay here
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)  # noqa: E731
    level = lambda s: np.array([-1.0 if s.spectrogram is None else s.spectrogram.mean()], np.float32)  # noqa: E731
    observations.register_observation("level", level, space, needs_spectrogram=True)
    observations.register_observation("blind_level", level, space)
    cfg = TaskConfig(max_steps=40, sensors=["depth", "level", "blind_level"])
    env = BatchedAudioNavEnv(world, episodes, 2, cfg=cfg, seed=3)
    refs = [AudioNavEnv(world, episodes, cfg, seed=3, env_index=i, num_envs=2) for i in range(2)]
    batched, ref_obs = env.reset(), [r.reset()[0] for r in refs]
    for name in ("level", "blind_level"):
        np.testing.assert_allclose(batched[name].cpu().numpy(), np.stack([o[name] for o in ref_obs]), rtol=1e-4)
    assert (batched["level"] > 0).all() and "spectrogram" not in batched
    # a provider that does not ask for it costs no spectrogram, in either env
    cfg = TaskConfig(max_steps=40, sensors=["depth", "blind_level", "pointgoal"])
    assert (BatchedAudioNavEnv(world, episodes, 2, cfg=cfg, seed=3).reset()["blind_level"] == -1).all()
    assert AudioNavEnv(world, episodes, cfg, seed=3).reset()[0]["blind_level"][0] == -1


def test_reseed_restarts_the_samplers_from_the_new_seed(world, episodes):
    env = BatchedAudioNavEnv(world, episodes, 3, sensors=["depth"], seed=5)
    env.reset()
    start = env.ep_index.tolist()
    env.reseed((5, 0, 7))  # e.g. seed, rank, update
    env.reset()
    fresh = env.ep_index.tolist()
    env.reseed((5, 0, 7))
    env.reset()
    assert env.ep_index.tolist() == fresh != start
    env.reseed(5)  # an int seed is the constructor's
    env.reset()
    assert env.ep_index.tolist() == start


@pytest.mark.parametrize("failure", [RuntimeError("store unreadable"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_cache_compute_leaves_no_entry_behind(failure: BaseException):
    """The keys of a compute that raised, or was stopped by Ctrl-C (a KeyboardInterrupt, not an Exception),
    are not hits afterwards (they would return the never-written zeros of their slots): their slots are free."""
    from asgf_nav.tasks.spectrogram_cache import SpectrogramCache

    fail = [True]

    def compute(keys):
        if fail[0]:
            raise failure
        return torch.from_numpy(keys.astype(np.float32))[:, None].repeat(1, 2) + 1.0

    cache = SpectrogramCache(2, (2,), "cpu", compute)
    with pytest.raises(type(failure)):
        cache.lookup(np.array([3, 4]))
    assert len(cache) == 0 and sorted(cache.free) == [0, 1]
    fail[0] = False
    assert cache.lookup(np.array([4, 3])).tolist() == [[5.0, 5.0], [4.0, 4.0]]  # not never-written slots
    assert (cache.hits, cache.misses) == (0, 4)


def test_cache_refuses_more_distinct_keys_than_it_holds_with_its_message():
    """Capacity + 1 distinct keys raise the error that names the cache size; capacity is fine."""
    from asgf_nav.tasks.spectrogram_cache import SpectrogramCache

    cache = SpectrogramCache(2, (1,), "cpu", lambda k: torch.from_numpy(k.astype(np.float32))[:, None])
    with pytest.raises(ValueError, match="3 distinct spectrograms requested at once but the cache holds 2"):
        cache.lookup(np.array([1, 2, 3]))
    assert cache.lookup(np.array([1, 2, 1]))[:, 0].tolist() == [1.0, 2.0, 1.0]  # exactly capacity is fine


def test_per_env_and_batch_providers_see_each_envs_own_node_yaw_and_step(monkeypatch):
    """Per-env and batch providers see each env's own scene-local node, yaw and step, as the per-step
    env gives them, over steps that end and restart episodes in both scenes (grid_b's nodes are offset
    by grid_a's count in the batched env)."""
    import gymnasium

    from asgf_nav.config import TaskConfig
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.audionav_env import AudioNavEnv
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "unheard", ["bell", "drum"], TaskConfig(train_episodes_per_scene=6))
    assert len({e.scene_name for e in episodes}) == 2
    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)  # noqa: E731
    per_env = lambda s: np.array([s.node, s.yaw, s.step], np.float32)  # noqa: E731
    batch = lambda st: torch.stack([st.node, st.yaw, st.step], dim=1).float()  # noqa: E731
    observations.register_observation("pose_single", per_env, space)
    observations.register_observation("pose_batch", per_env, space, compute_batch=batch)
    cfg = TaskConfig(max_steps=6, sensors=["pose_single", "pose_batch"])
    b, seed = 4, 2
    env = BatchedAudioNavEnv(world, episodes, b, cfg=cfg, seed=seed)
    refs = [AudioNavEnv(world, episodes, cfg, seed=seed, env_index=i, num_envs=b) for i in range(b)]
    obs, ref_obs = env.reset(), [r.reset()[0] for r in refs]
    rng = np.random.default_rng(0)
    steps_seen, scenes_seen = set(), set()
    for _ in range(20):
        expected = np.stack([o["pose_single"] for o in ref_obs])
        np.testing.assert_array_equal(obs["pose_single"].numpy(), expected)
        np.testing.assert_array_equal(obs["pose_batch"].numpy(), expected)
        steps_seen.update(expected[:, 2].tolist())
        scenes_seen.update(e.scene for e in env.current_episodes())
        actions = rng.choice(4, size=b, p=[0.05, 0.55, 0.2, 0.2])
        obs, _, done, _ = env.step(torch.from_numpy(actions))
        for i, r in enumerate(refs):
            o, _, term, trunc, _ = r.step(int(actions[i]))
            ref_obs[i] = r.reset()[0] if term or trunc else o
    assert len(steps_seen) > 2 and scenes_seen == {"grid_a", "grid_b"}


def test_cache_holds_at_least_one_spectrogram_per_env():
    """A spectrogram_cache_size below num_envs is raised to num_envs (else every observation would
    raise "distinct spectrograms requested at once")."""
    from asgf_nav.config import TaskConfig
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "unheard", ["bell", "drum"], TaskConfig(train_episodes_per_scene=6))
    env = BatchedAudioNavEnv(world, episodes, 4, sensors=["spectrogram"], seed=0, cache_size=1)
    assert env.cache_stats()["capacity"] == 4
    for zero in ({"cache_size": 0}, {"cfg": TaskConfig(spectrogram_cache_size=0)}):  # 0 means num_envs, both ways
        assert BatchedAudioNavEnv(world, episodes, 4, sensors=["spectrogram"], **zero).cache_stats()["capacity"] == 4
    obs = env.reset()
    assert obs["spectrogram"].shape[0] == 4
    env.step(torch.ones(4, dtype=torch.long))


def test_rendered_audio_is_released_after_each_observation():
    """The audio of spectrogram misses (2 x sample_rate floats each) is kept only for the observation
    that rendered it, not for every key ever missed."""
    from asgf_nav.config import TaskConfig
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "unheard", ["bell", "drum"], TaskConfig(train_episodes_per_scene=6))
    env = BatchedAudioNavEnv(world, episodes, 3, sensors=["spectrogram"], seed=0)
    env.reset()
    assert env.cache.misses > 0 and env._heard == {}
    for _ in range(5):
        env.step(torch.ones(3, dtype=torch.long))
        assert env._heard == {}


def _two_node_episode(scene) -> ResolvedEpisode:
    """Start on node 0 at (0, 0) facing +x (yaw 3), goal on node 1 at (1, 0): FORWARD then STOP solves it."""
    return ResolvedEpisode("near", scene.name, 0, 3, 1, "bell", 1.0, 2)


def test_info_names_the_finished_episode_not_the_one_started_after_it(world, episodes):
    """``info["episode_index"]`` is what the evaluator files a finished episode's record under: it names the
    episode that ended at this step, not the one the automatic reset started in its place."""
    env = BatchedAudioNavEnv(world, episodes, 3, sensors=["depth"], sampler_mode="sequential")
    env.reset()
    assert env.ep_index.tolist() == [0, 1, 2]
    _, _, done, info = env.step(np.zeros(3, dtype=np.int64))  # STOP everywhere
    assert done.all() and info["episode_index"].tolist() == [0, 1, 2]
    assert env.ep_index.tolist() == [3, 4, 5]  # the next episodes already run
    _, _, _, info = env.step(np.array([2, 2, 2]))  # no episode ends: each env names its current one
    assert info["episode_index"].tolist() == [3, 4, 5]


def test_each_scene_measures_distance_with_its_own_grid_size():
    """A 1 m scene next to a 0.5 m one (sorted first, so index 0): rewards, the per-step distance to the goal
    and the metrics of the 0.5 m scene use 0.5 m per hop in both envs, and both envs report the same
    distance on every step, not only at an episode's end."""
    world = synthetic_world([grid_scene("a_coarse"), grid_scene("b_fine", grid_size=0.5)])
    episodes = generate_split(world, "train", "unheard", ["bell"], TaskConfig(train_episodes_per_scene=8))
    b = 4
    env, refs = reset_env_pair(world, episodes, b, TaskConfig(max_steps=12, sensors=["depth"]), seed=3)
    fine_steps = odd_hops = 0
    for actions in np.random.default_rng(1).choice(4, size=(60, b), p=[0.1, 0.5, 0.2, 0.2]):
        fine = [e.scene == "b_fine" for e in env.current_episodes()]
        _, reward, done, info = env.step(torch.from_numpy(actions))
        for i, r in enumerate(refs):
            _, ref_reward, term, trunc, ref_info = r.step(int(actions[i]))
            assert reward[i].item() == pytest.approx(ref_reward, abs=1e-5)
            assert (done[i].item(), info["truncated"][i].item()) == (term or trunc, trunc)  # as gymnasium tells them
            assert info["distance_to_goal"][i].item() == pytest.approx(ref_info["distance_to_goal"], abs=1e-5)
            if fine[i]:
                fine_steps += 1
                assert ref_info["distance_to_goal"] % 0.5 == 0.0
                odd_hops += ref_info["distance_to_goal"] % 1.0 == 0.5  # whole metres would pass at 1 m per hop
            if term or trunc:
                for name in METRIC_NAMES:
                    assert info[name][i].item() == pytest.approx(ref_info[name], abs=1e-5), name
                r.reset()
    assert fine_steps > 20 and odd_hops > 0


def test_running_out_of_steps_on_the_goal_is_no_success_and_stop_at_the_limit_terminates():
    """SoundSpaces counts a success only for STOP: an episode cut at the step limit while standing on the
    goal scores success = SPL = 0 (SoftSPL still 1: all the progress was made). STOP on the last allowed
    step ends the episode as terminated, not also truncated (gymnasium: truncated only when not terminated)."""
    scene = grid_scene("g")
    world = synthetic_world([scene])
    ep = _two_node_episode(scene)
    cfg = TaskConfig(max_steps=2, sensors=["depth"])
    env = BatchedAudioNavEnv(world, [ep], 1, cfg=cfg)
    ref = AudioNavEnv(world, [ep], cfg)
    env.reset(), ref.reset()
    for action in (1, 2):  # FORWARD onto the goal, then TURN_LEFT on step 2 = max_steps
        _, reward, done, info = env.step(np.array([action]))
        _, ref_reward, term, trunc, ref_info = ref.step(action)
    assert bool(done[0]) and (term, trunc) == (False, True)
    assert reward[0].item() == pytest.approx(-0.01) and ref_reward == pytest.approx(-0.01)
    for name, value in (("success", 0.0), ("spl", 0.0), ("softspl", 1.0), ("distance_to_goal", 0.0)):
        assert info[name][0].item() == value and ref_info[name] == value, name
    env.reset(), ref.reset()
    for action in (1, 0):  # FORWARD, then STOP on step 2 = max_steps
        _, reward, done, info = env.step(np.array([action]))
        _, ref_reward, term, trunc, ref_info = ref.step(action)
    assert bool(done[0]) and (term, trunc) == (True, False)
    assert info["success"][0].item() == 1.0 and ref_info["success"] == 1.0
    assert reward[0].item() == pytest.approx(9.99) and ref_reward == pytest.approx(9.99)


def test_reseed_keeps_a_sequential_env_striding():
    """A val/test env reseeded (a resume whose sampler state could not be loaded) still strides through the
    episodes from env i's own index, as its docstring says, instead of switching to shuffled draws."""
    world = synthetic_world([grid_scene("g")])
    episodes = generate_split(world, "train", "unheard", ["bell"], TaskConfig(train_episodes_per_scene=12))
    env = BatchedAudioNavEnv(world, episodes, 3, sensors=["depth"], sampler_mode="sequential")
    env.reset()
    env.step(np.zeros(3, dtype=np.int64))
    assert env.ep_index.tolist() == [3, 4, 5]
    env.reseed((9, 1, 4))
    env.reset()
    assert env.ep_index.tolist() == [0, 1, 2] and all(s.mode == "sequential" for s in env.samplers)
    env.step(np.zeros(3, dtype=np.int64))
    assert env.ep_index.tolist() == [3, 4, 5]


def test_reference_env_refuses_episode_indices_outside_its_list():
    """``options={"episode_index": -1}`` would silently run the last episode (a python negative index)."""
    scene = grid_scene("g")
    env = AudioNavEnv(synthetic_world([scene]), [_two_node_episode(scene)], sensors=["depth"])
    for index in (-1, 1):
        with pytest.raises(IndexError, match=rf"episode_index {index} out of range \(0\.\.0\)"):
            env.reset(options={"episode_index": index})
    assert env.reset(options={"episode_index": 0})[1]["episode_index"] == 0


def test_a_saved_node_one_past_its_scene_is_refused(world, episodes):
    """``node_local`` equal to a scene's node count is already outside it (in the batched env's global
    numbering it would be the next scene's first node)."""
    env = BatchedAudioNavEnv(world, episodes, 2, sensors=["depth"], seed=1)
    env.reset()
    state = env.state_dict()
    state["node_local"] = np.array([env.scenes[k].num_nodes for k in env.scene_idx])
    with pytest.raises(ValueError, match="outside their scenes"):
        env.load_state_dict(state)
    state["node_local"] -= 1  # each scene's last node is fine
    env.load_state_dict(state)
    state["node_local"] = np.array([-1, 0])  # a negative node would wrap to the last scene's last node
    with pytest.raises(ValueError, match="outside their scenes"):
        env.load_state_dict(state)


def test_per_env_providers_see_each_envs_own_spectrogram_and_scene(world, episodes, monkeypatch):
    """A provider with only ``compute`` is called per env in the batched env: env i's call must get env i's
    spectrogram and scene, as the reference env gives them, also when the envs are in different scenes."""
    import gymnasium

    from asgf_nav.tasks import observations

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # noqa: E731
    level = lambda s: np.array([s.spectrogram.mean(), s.scene.num_nodes], np.float32)  # noqa: E731
    observations.register_observation("level_and_size", level, space, needs_spectrogram=True)
    b = 4
    cfg = TaskConfig(max_steps=6, sensors=["level_and_size"])
    env = BatchedAudioNavEnv(world, episodes, b, cfg=cfg, seed=11)
    refs = [AudioNavEnv(world, episodes, cfg, seed=11, env_index=i, num_envs=b) for i in range(b)]
    obs, ref_obs = env.reset(), [r.reset()[0] for r in refs]
    mixed_scenes = distinct_levels = 0
    for actions in np.random.default_rng(5).choice(4, size=(12, b), p=[0.1, 0.5, 0.2, 0.2]):
        expected = np.stack([o["level_and_size"] for o in ref_obs])
        np.testing.assert_allclose(obs["level_and_size"].numpy(), expected, rtol=1e-4)
        mixed_scenes += len(set(expected[:, 1].tolist())) == 2
        distinct_levels += len(set(np.round(expected[:, 0], 4).tolist())) > 1
        obs, _, _, _ = env.step(torch.from_numpy(actions))
        for i, r in enumerate(refs):
            o, _, term, trunc, _ = r.step(int(actions[i]))
            ref_obs[i] = r.reset()[0] if term or trunc else o
    assert mixed_scenes > 0 and distinct_levels > 0


def test_providers_hear_the_right_audio_when_some_misses_come_from_a_store(tmp_path, monkeypatch):
    """With a store baked for one sound only, one observation's misses are part read, part rendered; the
    audio handed on to providers (``received``) must be each env's own, the same as a provider that renders
    it itself gets (``reuse_audio = False``)."""
    import gymnasium

    from asgf_nav.tasks import observations
    from asgf_nav.tasks.spectrogram_bake import bake_world

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))
    scenes = [grid_scene("grid_a", num_sources=2), grid_scene("grid_b", blocked=((2, 1),), num_sources=2)]
    world = synthetic_world(scenes)
    episodes = generate_split(world, "train", "unheard", ["bell", "drum"], TaskConfig(train_episodes_per_scene=6))
    bake_world(tmp_path, world, ["bell"])
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # noqa: E731
    energy = lambda st: st.received(list(range(len(st.episodes)))).pow(2).sum(dim=2)  # noqa: E731
    observations.register_observation("ear_energy", lambda s: np.zeros(2, np.float32), space, compute_batch=energy)
    cfg = TaskConfig(max_steps=8, sensors=["spectrogram", "ear_energy"])
    actions = torch.from_numpy(np.random.default_rng(2).choice(4, size=(12, 4), p=[0.1, 0.5, 0.2, 0.2]))
    runs = {}
    for reuse in (True, False):
        env = BatchedAudioNavEnv(world, episodes, 4, cfg=cfg, seed=1, spectrogram_store=tmp_path)
        env.reuse_audio = reuse
        runs[reuse] = torch.stack([env.reset()["ear_energy"]] + [env.step(a)[0]["ear_energy"] for a in actions])
        stats = env.cache_stats()
        assert 0 < stats["store_reads"] < stats["misses"]  # both kinds of miss happened
    torch.testing.assert_close(runs[True], runs[False], rtol=1e-4, atol=1e-6)


def test_task_settings_reach_the_reward_and_metrics_of_both_envs():
    """``task.success_distance``, ``slack_reward``, ``success_reward`` and ``distance_reward_scale`` are used by
    both envs: with 1.5 m, -0.05, 2.5 and 0.5, STOP 1 m short of the goal succeeds without the success reward
    and STOP on the goal earns 2.5 (SoundSpaces' defaults would give a failure and rewards 0.99 / 9.99)."""
    scene = grid_scene("g")
    world = synthetic_world([scene])
    ep = ResolvedEpisode("far", "g", 0, 3, 2, "bell", 2.0, 3)  # goal 2 m straight ahead: FORWARD, FORWARD, STOP
    cfg = TaskConfig(
        max_steps=10,
        sensors=["depth"],
        success_distance=1.5,
        slack_reward=-0.05,
        success_reward=2.5,
        distance_reward_scale=0.5,
    )
    env = BatchedAudioNavEnv(world, [ep], 1, cfg=cfg)
    ref = AudioNavEnv(world, [ep], cfg)
    short = {"success": 1.0, "spl": 1.0, "softspl": 0.5, "sna": 1.0, "distance_to_goal": 1.0}  # 1.0 < 1.5 m
    on_goal = {"success": 1.0, "spl": 1.0, "softspl": 1.0, "sna": 1.0, "distance_to_goal": 0.0}
    for actions, rewards, expected in (((1, 0), (0.45, -0.05), short), ((1, 1, 0), (0.45, 0.45, 2.45), on_goal)):
        env.reset(), ref.reset()
        for action, value in zip(actions, rewards):  # -0.05 + 0.5 x (metres gained) [+ 2.5 for STOP on the goal]
            _, reward, done, info = env.step(np.array([action]))
            _, ref_reward, term, trunc, ref_info = ref.step(action)
            assert reward[0].item() == pytest.approx(value) and ref_reward == pytest.approx(value)
        assert bool(done[0]) and (term, trunc) == (True, False)
        for name, value in expected.items():
            assert info[name][0].item() == pytest.approx(value) and ref_info[name] == pytest.approx(value), name


def test_the_spectrogram_cache_size_comes_from_the_task_config():
    """``task.spectrogram_cache_size`` bounds the cache (the memory a long run holds); an explicit
    ``cache_size`` argument wins over it."""
    scene = grid_scene("g")
    world = synthetic_world([scene])
    cfg = TaskConfig(sensors=["spectrogram"], spectrogram_cache_size=5)
    assert BatchedAudioNavEnv(world, [_two_node_episode(scene)], 2, cfg=cfg).cache_stats()["capacity"] == 5
    explicit = BatchedAudioNavEnv(world, [_two_node_episode(scene)], 2, cfg=cfg, cache_size=7)
    assert explicit.cache_stats()["capacity"] == 7


def test_an_env_count_below_one_is_refused_when_made():
    """``num_envs`` 0 would build an env that runs no episode and returns empty batches: it is refused."""
    scene = grid_scene("g")
    world = synthetic_world([scene])
    for num_envs in (0, -1):
        with pytest.raises(ValueError, match=f"num_envs must be positive, got {num_envs}"):
            BatchedAudioNavEnv(world, [_two_node_episode(scene)], num_envs, sensors=["depth"])


def test_a_state_saved_before_the_first_reset_restores_an_env_that_must_be_reset(world, episodes):
    """Loading the state of an env that was never reset leaves an env that refuses to step (not one that
    steps agents from zeroed nodes) and whose reset draws the saved env's first episodes."""
    fresh = BatchedAudioNavEnv(world, episodes, 2, sensors=["depth"], seed=1)
    state = fresh.state_dict()
    other = BatchedAudioNavEnv(world, episodes, 2, sensors=["depth"], seed=8)
    other.reset()
    other.load_state_dict(state)
    with pytest.raises(RuntimeError, match="before reset"):
        other.step(np.array([1, 1]))
    fresh.reset(), other.reset()
    assert other.ep_index.tolist() == fresh.ep_index.tolist()


def test_store_reads_count_each_spectrogram_read_from_the_store(tmp_path):
    """``cache_stats()["store_reads"]`` counts spectrograms, not store look-ups: with every sound baked, each
    cache miss is one read."""
    from asgf_nav.tasks.spectrogram_bake import bake_world

    world = synthetic_world([grid_scene("g", num_sources=2)])
    episodes = generate_split(world, "train", "unheard", ["bell"], TaskConfig(train_episodes_per_scene=4))
    bake_world(tmp_path, world, ["bell"])
    env = BatchedAudioNavEnv(world, episodes, 3, sensors=["spectrogram"], seed=0, spectrogram_store=tmp_path)
    env.reset()
    for _ in range(3):
        env.step(np.array([1, 2, 3]))
    stats = env.cache_stats()
    assert stats["misses"] > 4 and stats["store_reads"] == stats["misses"]


def test_spectrograms_read_from_a_store_are_the_ones_computed_live(tmp_path):
    """With every node a source, a store holds the spectrogram of each (receiver, source) pair and of its
    reverse: the env must read the one of the agent's node hearing the goal, exactly what it computes live."""
    from asgf_nav.tasks.spectrogram_bake import bake_world

    world = synthetic_world([grid_scene("g", nx=3, nz=2)])  # all 6 nodes are sources
    episodes = generate_split(world, "train", "unheard", ["bell"], TaskConfig(train_episodes_per_scene=6))
    bake_world(tmp_path, world, ["bell"])
    stored = BatchedAudioNavEnv(world, episodes, 3, sensors=["spectrogram"], seed=2, spectrogram_store=tmp_path)
    live = BatchedAudioNavEnv(world, episodes, 3, sensors=["spectrogram"], seed=2)
    pairs = [(stored.reset(), live.reset())]
    for actions in np.random.default_rng(3).choice(4, size=(8, 3), p=[0.1, 0.5, 0.2, 0.2]):
        pairs.append((stored.step(actions)[0], live.step(actions)[0]))
    assert stored.cache_stats()["store_reads"] == stored.cache_stats()["misses"] > 0
    for a, b in pairs:
        torch.testing.assert_close(a["spectrogram"], b["spectrogram"], rtol=1e-4, atol=1e-4)


def test_a_dropped_env_is_freed_at_once_not_at_the_next_garbage_collection(world, episodes):
    """A training run drops its env at each scene-pool reload and validation: held in a reference cycle,
    its spectrogram cache (hundreds of MB) and open scene files lived on until Python's cycle collector ran."""
    import gc
    import weakref

    cfg = TaskConfig(max_steps=25, sensors=["depth", "spectrogram"])
    env = BatchedAudioNavEnv(world, episodes, 3, cfg=cfg, seed=2)
    env.reset()
    env.step(np.array([1, 2, 3]))
    dropped = weakref.ref(env)
    gc.disable()
    try:
        del env
        assert dropped() is None
    finally:
        gc.enable()
