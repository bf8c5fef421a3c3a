"""AudioGoal task semantics on synthetic grid worlds: moves, episodes, reward, metrics, reference env."""

import gzip
import json
from dataclasses import replace

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

import asgf_nav.tasks  # noqa: F401  (registers AudioNav-v0)
from asgf_nav.config import ConfigError, ExperimentConfig, TaskConfig
from asgf_nav.scenes.floorplan import yaw_forward
from asgf_nav.scenes.presets import UnknownSceneError
from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.episode_generation import generate_split, load_or_generate
from asgf_nav.tasks.episodes import (
    Episode,
    EpisodeError,
    ResolvedEpisode,
    episode_dataset_path,
    load_episodes,
    resolve_episode,
    resolve_episodes,
    save_episodes,
)
from asgf_nav.tasks.navigation import (
    MOVE_FORWARD,
    STOP,
    TURN_LEFT,
    TURN_RIGHT,
    InvalidActionError,
    oracle_next_action,
    oracle_plan,
    quaternion_to_yaw_index,
    yaw_to_quaternion,
)
from asgf_nav.tasks.observations import get_observation, register_observation
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SR = 16000


@pytest.fixture(scope="module")
def world():
    return synthetic_world(sample_rate=SR)


@pytest.fixture(scope="module")
def val_episodes(world):
    return generate_split(world, "val", "unheard", ["bell", "drum", "horn"], TaskConfig(val_episodes=60))


def _episode(scene, start, yaw, goal, sound="bell"):
    hops = int(scene.geodesic_hops[start, goal])
    plan = oracle_plan(scene.neighbors, np.asarray(scene.geodesic_hops[:, goal]), start, yaw)
    return ResolvedEpisode("x", scene.name, start, yaw, goal, sound, hops * scene.grid_size, len(plan))


def _run(env, actions):
    rewards, info = [], {}
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            break
    return rewards, info


# ------------------------------------------------------------------------------------------ navigation
def test_forward_follows_habitat_heading(world):
    for scene in world.scenes.values():
        for n in range(scene.num_nodes):
            for k in range(4):
                m = scene.neighbors[n, k]
                if m >= 0:
                    d = scene.positions[m] - scene.positions[n]
                    np.testing.assert_allclose(d[[0, 2]] / np.linalg.norm(d), yaw_forward(90 * k), atol=1e-6)
                    # SoundSpaces: heading (270 - yaw) % 360 is atan2(dz, dx)
                    assert np.isclose(np.degrees(np.arctan2(d[2], d[0])) % 360, (270 - 90 * k) % 360)


def test_quaternion_round_trip_and_errors():
    for k in range(4):
        assert quaternion_to_yaw_index(yaw_to_quaternion(k)) == k
    # SoundSpaces reads the angle of habitat-sim's quat_to_angle_axis, whose axis sign is dropped
    assert yaw_to_quaternion(3) == pytest.approx([0, 0.7071068, 0, -0.7071068])
    assert quaternion_to_yaw_index([0, -0.7071068, 0, 0.7071068]) == 1
    assert quaternion_to_yaw_index([0, -0.7071068, 0, -0.7071068]) == 3
    assert quaternion_to_yaw_index([0, 0, 0, -1]) == 0 and quaternion_to_yaw_index([0, -1, 0, 0]) == 2
    with pytest.raises(ValueError, match="not a multiple of 90"):
        quaternion_to_yaw_index([0, np.sin(np.radians(22.5)), 0, np.cos(np.radians(22.5))])


def test_oracle_counts_turns_and_prefers_fewest_actions():
    scene = grid_scene("g", nx=5, nz=4)
    hops = np.asarray(scene.geodesic_hops[:, 2])
    # node 0 = cell (0,0), goal node 2 = cell (2,0): facing +X (yaw 3) -> F F STOP
    assert oracle_plan(scene.neighbors, hops, 0, 3) == [MOVE_FORWARD, MOVE_FORWARD, STOP]
    # facing -X (yaw 1): a 180-degree turn is two turns
    assert oracle_plan(scene.neighbors, hops, 0, 1) == [TURN_LEFT, TURN_LEFT, MOVE_FORWARD, MOVE_FORWARD, STOP]
    # facing -Z (yaw 0): one right turn
    assert oracle_plan(scene.neighbors, hops, 0, 0) == [TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, STOP]
    # diagonal goal: among shortest paths take the one with one turn (L shape), not a staircase
    goal = 2 * 5 + 2  # cell (2, 2)
    plan = oracle_plan(scene.neighbors, np.asarray(scene.geodesic_hops[:, goal]), 0, 3)
    assert plan == [MOVE_FORWARD, MOVE_FORWARD, TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, STOP]


def test_quaternion_reader_takes_the_nearest_multiple_of_90_and_refuses_other_axes():
    """SoundSpaces files store 7-digit quaternions, so a yaw of 90 can read 89.99999 degrees: it rounds to
    the nearest multiple (within 1 degree), not down; a rotation about X or Z alone is no start yaw."""
    assert quaternion_to_yaw_index([0, 0.7071067, 0, 0.7071068]) == 1  # 89.99999 degrees
    half = np.radians(179.6 / 2)  # 179.6 degrees
    assert quaternion_to_yaw_index([0, np.sin(half), 0, np.cos(half)]) == 2
    for tilted in ([0.7071068, 0, 0, 0.7071068], [0, 0, 0.7071068, 0.7071068]):
        with pytest.raises(ValueError, match="not a rotation about"):
            quaternion_to_yaw_index(tilted)
    assert quaternion_to_yaw_index([0, 0.5, 0, 0.5]) == 1  # normalised first, as habitat-sim does
    for empty in ([0, 0, 0, 0], [0, 0, 0, float("nan")]):  # atan2(0, 0) is 0: a zero record is no yaw 0
        with pytest.raises(ValueError, match="has no direction"):
            quaternion_to_yaw_index(empty)


def _fewest_actions_by_search(neighbors, hops, start, yaw):
    """Breadth-first search over (node, yaw) poses, moving only to a neighbour one hop closer: the fewest
    actions of any shortest-hop path, STOP included (an independent count for ``oracle_plan``)."""
    frontier, seen, steps = {(start, yaw)}, {(start, yaw)}, 0
    while not any(hops[n] == 0 for n, _ in frontier):
        nxt = set()
        for n, k in frontier:
            m = int(neighbors[n, k])
            moves = [(n, (k + 1) % 4), (n, (k + 3) % 4)] + ([(m, k)] if m >= 0 and hops[m] == hops[n] - 1 else [])
            nxt.update(p for p in moves if p not in seen)
        seen |= nxt
        frontier, steps = nxt, steps + 1
    return steps + 1


def test_oracle_plan_has_the_fewest_actions_around_obstacles():
    """num_action (SNA's reference) counts every turn of the whole path, not only the next one: around
    blocked cells the oracle must not go straight first when that forces more turns later."""
    scene = grid_scene("obstacles", nx=5, nz=4, blocked=((1, 1), (3, 1), (2, 3)))
    start, goal = scene.node_at([3, 0, 0]), scene.node_at([3, 0, 3])
    hops = np.asarray(scene.geodesic_hops[:, goal])
    # facing +Z into the blocked cell (3, 1): left to +X, then up the x = 4 column and right to the goal
    plan = oracle_plan(scene.neighbors, hops, start, 2)
    assert plan == [TURN_LEFT, MOVE_FORWARD, TURN_RIGHT] + [MOVE_FORWARD] * 3 + [TURN_RIGHT, MOVE_FORWARD, STOP]
    for goal in range(scene.num_nodes):
        hops = np.asarray(scene.geodesic_hops[:, goal])
        for start in range(scene.num_nodes):
            for yaw in range(4):
                expected = _fewest_actions_by_search(scene.neighbors, hops, start, yaw)
                assert len(oracle_plan(scene.neighbors, hops, start, yaw)) == expected, (start, yaw, goal)


# ------------------------------------------------------------------------------------------ episodes
def test_episodes_deterministic_within_bounds(world, val_episodes):
    again = generate_split(world, "val", "unheard", ["bell", "drum", "horn"], TaskConfig(val_episodes=60))
    assert [e.to_json() for e in again] == [e.to_json() for e in val_episodes]
    assert len(val_episodes) == 60
    assert {e.scene_name for e in val_episodes} == {"grid_a", "grid_b"}
    for ep in resolve_episodes(val_episodes, world):
        scene = world.scene(ep.scene)
        assert ep.goal_node in set(scene.source_nodes.tolist())
        assert ep.geodesic_distance >= 1.0
        assert ep.geodesic_distance == scene.geodesic_hops[ep.start_node, ep.goal_node] * scene.grid_size
        hops = np.asarray(scene.geodesic_hops[:, ep.goal_node])
        assert ep.num_action == len(oracle_plan(scene.neighbors, hops, ep.start_node, ep.start_yaw))
        assert ep.num_action >= scene.geodesic_hops[ep.start_node, ep.goal_node] + 1


def test_heard_split_uses_one_sound_and_bounds(world):
    cfg = TaskConfig(val_episodes=30, min_geodesic_distance=2.0, max_geodesic_distance=3.0)
    eps = generate_split(world, "val", "heard", ["telephone"], cfg)
    assert {e.sound for e in eps} == {"telephone"}
    assert all(2.0 <= e.geodesic_distance <= 3.0 for e in eps)


def test_soundspaces_schema_round_trip(tmp_path, world, val_episodes):
    path = episode_dataset_path(tmp_path, "replica", "val", "unheard")
    assert path.as_posix().endswith("datasets/audionav/replica/v1/val_multiple/val_multiple.json.gz")
    save_episodes(path, val_episodes)
    with gzip.open(path.parent / "content" / "grid_a.json.gz", "rt") as f:
        record = json.load(f)["episodes"][0]
    assert set(record) >= {"episode_id", "scene_id", "start_position", "start_rotation", "goals", "info"}
    assert set(record["info"]) == {"sound", "geodesic_distance", "num_action"}
    assert record["scene_id"] == "grid_a/grid_a.glb"
    loaded = load_episodes(path)
    assert sorted(e.episode_id for e in loaded) == sorted(e.episode_id for e in val_episodes)
    assert resolve_episodes(loaded, world) and len(load_episodes(path, scenes=["grid_b"])) < len(loaded)


def test_load_or_generate_writes_once(tmp_path, world):
    cfg = TaskConfig(test_episodes=10)
    first = load_or_generate(tmp_path, world, "test", "heard", ["telephone"], cfg)
    path = episode_dataset_path(tmp_path, world.dataset, "test", "heard")
    mtime = path.stat().st_mtime_ns
    second = load_or_generate(tmp_path, world, "test", "heard", ["telephone"], cfg)
    assert path.stat().st_mtime_ns == mtime
    assert sorted(e.episode_id for e in first) == sorted(e.episode_id for e in second)


def test_episodes_are_generated_without_caching_on_a_read_only_data_root(tmp_path, world, monkeypatch, caplog):
    import errno

    from asgf_nav.tasks import episodes as episodes_module

    cfg = TaskConfig(test_episodes=10)
    cached = load_or_generate(tmp_path / "writable", world, "test", "heard", ["telephone"], cfg)

    def read_only(path, payload):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(episodes_module, "_write_json_gz", read_only)
    with caplog.at_level("WARNING"):
        generated = load_or_generate(tmp_path / "shared", world, "test", "heard", ["telephone"], cfg)
    assert [e.to_json() for e in generated] == [e.to_json() for e in cached]  # the same episodes, not cached
    assert "episodes not cached: cannot write" in caplog.text and "Read-only file system" in caplog.text


def test_soundspaces_episodes_are_read_and_never_written(tmp_path, world):
    """SoundSpaces' own download is read as it is: nothing is generated or written under its root, a missing or
    damaged file is named with the download as its remedy, and a split without episodes is refused up front."""
    cfg = TaskConfig(test_episodes=6)
    path = save_episodes(episode_dataset_path(tmp_path, world.dataset, "test", "heard"),
                         generate_split(world, "test", "heard", ["telephone"], cfg))  # fmt: skip
    path.unlink()  # the split file lost, the scenes' content files kept
    before = sorted(p.name for p in tmp_path.rglob("*"))
    episodes = load_or_generate(tmp_path, world, "test", "heard", [], cfg, generate=False)
    assert len(episodes) == 6 and sorted(p.name for p in tmp_path.rglob("*")) == before
    content = path.parent / "content"
    (content / "grid_a.json.gz").write_bytes(b"not gzip")
    with pytest.raises(EpisodeError, match="grid_a.json.gz.*extract it again from the SoundSpaces") as damaged:
        load_or_generate(tmp_path, world, "test", "heard", [], cfg, generate=False)
    assert "delete it" not in str(damaged.value)
    (content / "grid_a.json.gz").unlink()
    with pytest.raises(EpisodeError, match="grid_a.json.gz does not exist"):
        load_or_generate(tmp_path, world, "test", "heard", [], cfg, generate=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(set(before) - {"grid_a.json.gz"})
    only_b = synthetic_world([world.scene("grid_b")], sample_rate=SR)
    save_episodes(path, [])
    (content / "grid_b.json.gz").write_bytes(gzip.compress(b'{"episodes": []}'))
    with pytest.raises(EpisodeError, match="no episodes: .*content lists none"):
        load_or_generate(tmp_path, only_b, "test", "heard", [], cfg, generate=False)


def test_val_and_test_totals_are_the_configured_ones_while_the_split_bakes(tmp_path, world):
    """5 test episodes over 2 scenes are 3 + 2, as generate_split spreads them, not 3 + 3."""
    cfg = TaskConfig(test_episodes=5)
    whole = load_or_generate(tmp_path, world, "test", "heard", ["telephone"], cfg)
    expected = generate_split(world, "test", "heard", ["telephone"], cfg)
    assert len(whole) == 5 and [e.scene_name for e in whole] == [e.scene_name for e in expected]
    only_b = synthetic_world([world.scene("grid_b")], sample_rate=SR)  # grid_a still bakes
    partial = load_or_generate(tmp_path / "partial", only_b, "test", "heard", ["telephone"], cfg, ["grid_a", "grid_b"])
    assert len(partial) == 2
    with pytest.raises(UnknownSceneError, match="grid_b"):
        load_or_generate(tmp_path / "other", only_b, "test", "heard", ["telephone"], cfg, ["grid_a"])


def test_episodes_follow_a_growing_world_and_changed_settings(tmp_path, world):
    cfg = TaskConfig(train_episodes_per_scene=7)
    only_a = synthetic_world([world.scene("grid_a")], sample_rate=SR)
    first = load_or_generate(tmp_path, only_a, "train", "heard", ["telephone"], cfg)
    assert {e.scene_name for e in first} == {"grid_a"} and len(first) == 7
    content = episode_dataset_path(tmp_path, world.dataset, "train", "heard").parent / "content"
    mtime_a = (content / "grid_a.json.gz").stat().st_mtime_ns
    grown = load_or_generate(tmp_path, world, "train", "heard", ["telephone"], cfg)
    assert {e.scene_name for e in grown} == {"grid_a", "grid_b"} and len(grown) == 14
    assert (content / "grid_a.json.gz").stat().st_mtime_ns == mtime_a  # the first scene's episodes are kept
    assert len({(e.scene_name, e.episode_id) for e in grown}) == len({e.episode_id for e in grown}) == 14
    closer = TaskConfig(train_episodes_per_scene=7, max_geodesic_distance=2.0)
    regenerated = load_or_generate(tmp_path, world, "train", "heard", ["telephone"], closer)
    assert max(e.geodesic_distance for e in regenerated) <= 2.0 < max(e.geodesic_distance for e in grown)
    assert min(e.geodesic_distance for e in regenerated) < 2.0
    only_far = replace(closer, min_geodesic_distance=2.0)  # a change of the lower bound alone also regenerates
    regenerated = load_or_generate(tmp_path, world, "train", "heard", ["telephone"], only_far)
    assert {e.geodesic_distance for e in regenerated} == {2.0}


def _walled(scene):
    """``scene`` with a wall between columns 1 and 2 of rows 0-2: same nodes and sources, another graph."""
    x, z = np.asarray(scene.positions)[:, 0], np.asarray(scene.positions)[:, 2]
    neighbors = np.array(scene.neighbors)
    for i, k in zip(*np.nonzero(neighbors >= 0)):
        j = neighbors[i, k]
        if {x[i], x[j]} == {1.0, 2.0} and max(z[i], z[j]) < 2.5:
            neighbors[i, k] = -1
    rows, cols = np.nonzero(neighbors >= 0)
    adj = csr_matrix((np.ones(rows.size), (rows, neighbors[rows, cols])), shape=(scene.num_nodes,) * 2)
    hops = shortest_path(adj, unweighted=True)
    return replace(scene, neighbors=neighbors, geodesic_hops=np.where(np.isfinite(hops), hops, -1).astype(np.int32))


def test_episodes_follow_a_scene_whose_graph_changed(tmp_path):
    """A scene baked again with another graph but the same source nodes gets episodes of its new graph."""
    cfg = TaskConfig(train_episodes_per_scene=30)
    scene = grid_scene("g", nx=5, nz=4, sample_rate=SR, num_sources=4)
    load_or_generate(tmp_path, synthetic_world([scene], SR), "train", "heard", ["telephone"], cfg)
    walled = _walled(scene)
    world = synthetic_world([walled], SR)
    episodes = resolve_episodes(load_or_generate(tmp_path, world, "train", "heard", ["telephone"], cfg), world)
    for ep in episodes:
        assert ep.geodesic_distance == walled.geodesic_hops[ep.start_node, ep.goal_node] * walled.grid_size
        hops = np.asarray(walled.geodesic_hops[:, ep.goal_node])
        assert ep.num_action == len(oracle_plan(walled.neighbors, hops, ep.start_node, ep.start_yaw))


def _grid_a_record(**fields) -> dict:
    """A SoundSpaces episode record in grid_a from (1, 0, 2) to the source at (4, 0, 3), with ``fields`` replaced."""
    record = {
        "episode_id": "3",
        "scene_id": "data/scene_datasets/replica/grid_a/habitat/mesh_semantic.ply",
        "start_position": [1.0, 0.0, 2.0],
        "start_rotation": [0.0, 0.0, 0.0, 1.0],
        "goals": [{"position": [4.0, 0.0, 3.0], "radius": 1e-5}],
        "info": {"sound": "telephone", "geodesic_distance": 4.0},
    }
    return {**record, **fields}


def test_real_soundspaces_record_and_scene_ids(world):
    scene = world.scene("grid_a")
    record = _grid_a_record(episode_id=7, start_position=[1.0000001, 0.0, 2.0], start_rotation=[0, 1.0, 0, 0.0])
    ep = resolve_episode(Episode.from_json(record), world)
    assert (ep.scene, ep.start_yaw) == ("grid_a", 2)
    assert ep.start_node == scene.node_at([1, 0, 2]) and ep.goal_node == scene.node_at([4, 0, 3])
    assert ep.num_action == len(
        oracle_plan(scene.neighbors, np.asarray(scene.geodesic_hops[:, ep.goal_node]), ep.start_node, 2)
    )


@pytest.mark.parametrize(
    "change,match",
    [
        ({"scene_id": "nowhere/nowhere.glb"}, "unknown scene 'nowhere'"),
        ({"start_position": [1.03, 0.0, 2.0]}, "Position misalignment"),
        ({"goals": [{"position": [9.0, 0.0, 9.0]}]}, "Position misalignment"),
        ({"start_rotation": [0, 0.3826834, 0, 0.9238795]}, "not a multiple of 90"),
        ({"info": {"sound": "x"}}, "malformed"),
    ],
)
def test_bad_episodes_raise_clear_errors(world, change, match):
    record = {
        "episode_id": "1",
        "scene_id": "grid_a/grid_a.glb",
        "start_position": [1.0, 0.0, 2.0],
        "start_rotation": [0, 0, 0, 1],
        "goals": [{"position": [4.0, 0.0, 3.0]}],
        "info": {"sound": "bell", "geodesic_distance": 4.0},
    }
    record.update(change)
    with pytest.raises(EpisodeError, match=match):
        resolve_episode(Episode.from_json(record), world)


def test_goal_must_be_a_source_node():
    scene = grid_scene("few", num_sources=2)
    world = synthetic_world([scene])
    non_source = next(n for n in range(scene.num_nodes) if n not in set(scene.source_nodes.tolist()))
    rec = Episode(
        "1", "few/few.glb", scene.positions[0].tolist(), [0, 0, 0, 1], scene.positions[non_source].tolist(), "bell", 1.0
    )
    with pytest.raises(EpisodeError, match="not an acoustic source node"):
        resolve_episode(rec, world)


def test_a_soundspaces_record_keeps_its_stored_distance_for_the_first_reward(world):
    """SoundSpaces starts the reward's previous distance at info.geodesic_distance (navmesh, may differ
    from the graph); resolving must keep the stored 4.5 m, not replace it with the graph's 4 hops x 1 m."""
    record = _grid_a_record(info={"sound": "telephone", "geodesic_distance": 4.5})
    resolved = resolve_episode(Episode.from_json(record), world)
    assert resolved.geodesic_distance == 4.5
    env = AudioNavEnv(world, [resolved], sensors=["depth"])
    env.reset()
    _, reward, *_ = env.step(TURN_LEFT)
    assert reward == pytest.approx(-0.01 + 4.5 - 4.0)


def test_a_record_round_trips_with_its_extra_fields():
    """Fields this project does not read (e.g. SoundSpaces' shortest_paths) are written back unchanged."""
    record = _grid_a_record(
        scene_id="grid_a/grid_a.glb",
        info={"sound": "telephone", "geodesic_distance": 4.0, "num_action": 7},
        shortest_paths=None,
        start_room="kitchen",
    )
    assert Episode.from_json(record).to_json() == record


# ------------------------------------------------------------------------------------------ reference env
def test_scripted_success_reward_spl_sna(world):
    scene = world.scene("grid_a")
    env = AudioNavEnv(world, [_episode(scene, 0, 3, 2)], sensors=["depth"])
    env.reset()
    rewards, info = _run(env, [TURN_LEFT, TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, STOP])
    np.testing.assert_allclose(rewards, [-0.01, -0.01, 0.99, 0.99, 9.99])
    assert info["success"] == 1.0 and info["spl"] == 1.0 and info["softspl"] == 1.0
    assert info["sna"] == pytest.approx(3 / 5) and info["num_actions"] == 5 and info["distance_to_goal"] == 0.0


def test_scripted_detour(world):
    scene = world.scene("grid_a")
    env = AudioNavEnv(world, [_episode(scene, 0, 3, 2)], sensors=["depth"])
    env.reset()
    plan = [MOVE_FORWARD, TURN_RIGHT, MOVE_FORWARD, TURN_LEFT, MOVE_FORWARD, TURN_LEFT, MOVE_FORWARD, STOP]
    rewards, info = _run(env, plan)
    np.testing.assert_allclose(rewards, [0.99, -0.01, -1.01, -0.01, 0.99, -0.01, 0.99, 9.99], atol=1e-12)
    assert info["spl"] == pytest.approx(0.5) and info["sna"] == pytest.approx(3 / 8)


def test_stop_one_hop_away(world):
    scene = world.scene("grid_a")  # grid 1.0 m: one hop away is not < 1.0 m
    env = AudioNavEnv(world, [_episode(scene, 0, 3, 2)], sensors=["depth"])
    env.reset()
    rewards, info = _run(env, [MOVE_FORWARD, STOP])
    assert info["success"] == 0.0 and info["spl"] == 0.0 and info["softspl"] == pytest.approx(0.5)
    fine = grid_scene("fine", grid_size=0.5)  # Replica grid: one hop is 0.5 m -> success, but no +10
    fine_world = synthetic_world([fine])
    env = AudioNavEnv(fine_world, [_episode(fine, 0, 3, 2)], sensors=["depth"])
    env.reset()
    rewards, info = _run(env, [MOVE_FORWARD, STOP])
    assert info["success"] == 1.0 and info["spl"] == 1.0 and info["sna"] == pytest.approx(1.0)
    assert env.start_distance == pytest.approx(1.0)  # d0 in metres: 2 hops x 0.5 m
    assert info["softspl"] == pytest.approx(0.5)  # 1 - 0.5 / 1.0 (0.75 if d0 were counted in hops)
    np.testing.assert_allclose(rewards, [0.49, -0.01])


def test_spl_takes_d0_from_the_graph_and_warns_once_when_the_stored_distance_differs(world, monkeypatch, caplog):
    """habitat's SPL reads d0 from the distance-to-goal measure at reset (graph hops x grid), not from
    ``info.geodesic_distance``; the stored value only starts the reward, as in SoundSpaces."""
    from asgf_nav.tasks import audionav_env

    monkeypatch.setattr(audionav_env, "_warned_start_distances", set())
    scene = world.scene("grid_a")
    ep = replace(_episode(scene, 0, 3, 2), episode_id="stored-off", geodesic_distance=1.5)  # graph: 2.0 m
    with caplog.at_level("WARNING", logger="asgf_nav.tasks.audionav_env"):
        envs = [AudioNavEnv(world, [ep], sensors=["depth"]) for _ in range(3)]
        env = envs[0]
        env.reset()
        rewards, info = _run(env, [MOVE_FORWARD, MOVE_FORWARD, STOP])
        env.reset()
        _run(env, [STOP])
    np.testing.assert_allclose(rewards, [0.49, 0.99, 9.99])  # first step: 1.5 (stored) - 1.0
    assert info["success"] == 1.0 and info["spl"] == 1.0 and info["softspl"] == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # one per episode set, not per env, reset or step
    assert "1 of 1 episodes" in warnings[0] and "stored-off" in warnings[0]
    assert "stored 1.5 m" in warnings[0] and "graph 2 m" in warnings[0]


def test_generated_episodes_store_the_graph_distance_and_raise_no_warning(world, val_episodes, monkeypatch, caplog):
    from asgf_nav.tasks import audionav_env

    monkeypatch.setattr(audionav_env, "_warned_start_distances", set())
    with caplog.at_level("WARNING", logger="asgf_nav.tasks.audionav_env"):
        env = AudioNavEnv(world, val_episodes, sensors=["depth"])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    np.testing.assert_array_equal(env.start_distances, [e.geodesic_distance for e in env.episodes])


def test_collision_and_step_limit(world):
    scene = world.scene("grid_a")
    env = AudioNavEnv(world, [_episode(scene, 0, 1, 2)], TaskConfig(max_steps=7), sensors=["depth"])
    env.reset()
    _, r, term, trunc, info = env.step(MOVE_FORWARD)  # facing -X at x=0: wall
    assert info["collided"] and env.node == 0 and r == pytest.approx(-0.01)
    rewards, info = _run(env, [TURN_LEFT] * 10)
    assert len(rewards) == 6 and info["num_actions"] == 7 and info["success"] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(TURN_LEFT)


def test_oracle_agent_is_perfect(world, val_episodes):
    env = AudioNavEnv(world, val_episodes, sensors=["depth"], sampler_mode="sequential")
    totals = []
    for i in range(50):
        env.reset(options={"episode_index": i})
        for _ in range(100):
            hops = np.asarray(env.scene.geodesic_hops[:, env.episode.goal_node])
            _, _, term, trunc, info = env.step(oracle_next_action(env.scene.neighbors, hops, env.node, env.yaw))
            if term or trunc:
                break
        totals.append((info["success"], info["spl"], info["sna"]))
    assert np.mean(totals, axis=0).tolist() == [1.0, 1.0, 1.0]


def test_observations(world, val_episodes):
    env = AudioNavEnv(world, val_episodes, sensors=["rgb", "depth", "spectrogram", "pointgoal"], seed=5)
    obs, info = env.reset()
    assert obs["rgb"].shape == (16, 16, 3) and obs["rgb"].dtype == np.uint8
    assert obs["spectrogram"].shape == (65, 26, 2) and obs["spectrogram"].dtype == np.float32
    raw = env.scene.depth[env.node, env.yaw].astype(np.float32)
    np.testing.assert_array_equal(obs["depth"][..., 0], np.clip(raw, 0, 10) / np.float32(10))
    assert obs["depth"].max() <= 1.0 and (raw > 10).any()
    assert env.observation_space["depth"].high.max() == 1.0  # the space says what depth is: clipped / 10
    rho, _ = obs["pointgoal"]
    goal = env.scene.positions[env.episode.goal_node]
    assert rho == pytest.approx(np.linalg.norm(goal - env.scene.positions[env.node]))


def test_pointgoal_frame():
    scene = grid_scene("pg")
    world = synthetic_world([scene])
    env = AudioNavEnv(world, [_episode(scene, 0, 3, 2)], sensors=["pointgoal"])
    obs, _ = env.reset()
    np.testing.assert_allclose(obs["pointgoal"], [2.0, 0.0], atol=1e-6)  # straight ahead
    obs, *_ = env.step(TURN_LEFT)  # now facing -Z: goal (+X) is to the right -> phi = -90 deg
    np.testing.assert_allclose(obs["pointgoal"], [2.0, -np.pi / 2], atol=1e-6)


def test_registered_observation_and_errors(world, val_episodes):
    register_observation(
        "goal_hops",
        lambda s: np.array([s.scene.geodesic_hops[s.node, s.episode.goal_node]], dtype=np.float32),
        lambda w: gymnasium.spaces.Box(0, np.inf, (1,), np.float32),
        overwrite=True,
    )
    env = AudioNavEnv(world, val_episodes, sensors=["depth", "goal_hops"])
    obs, _ = env.reset()
    assert obs["goal_hops"][0] == env.scene.geodesic_hops[env.node, env.episode.goal_node]
    with pytest.raises(KeyError, match="unknown observation 'nope'"):
        get_observation("nope")
    with pytest.raises(ConfigError, match="^task.sensors: unknown observation 'nope'"):
        AudioNavEnv(world, val_episodes, sensors=["depth", "nope"])
    with pytest.raises(ConfigError, match=r"^task.sensors: \['depth', 'depth'\] names a sensor twice"):
        AudioNavEnv(world, val_episodes, sensors=["depth", "depth"])
    for bad in (4, -1, 1.5, "go", 1.0, np.float64(2.0), True, [1]):  # as the batched env: integers only
        with pytest.raises(InvalidActionError, match="valid actions"):
            env.step(bad)


def test_resolved_episode_with_unknown_node_raises(world):
    with pytest.raises(ValueError, match="not a node of scene grid_a"):
        AudioNavEnv(world, [ResolvedEpisode("1", "grid_a", 999, 0, 2, "bell", 1.0, 2)])
    with pytest.raises(KeyError, match="unknown scene 'zzz'"):
        AudioNavEnv(world, [ResolvedEpisode("1", "zzz", 0, 0, 2, "bell", 1.0, 2)])
    with pytest.raises(ValueError, match="episode 1 goal node 999 is not a node of scene grid_a"):
        AudioNavEnv(world, [ResolvedEpisode("1", "grid_a", 0, 0, 999, "bell", 1.0, 2)])


def test_gymnasium_check_env_and_registry(world, val_episodes):
    """gymnasium's checker passes; its one warning is the spectrogram's truthful upper bound of infinity."""
    env = AudioNavEnv(world, val_episodes[:8], seed=0)
    with pytest.warns(UserWarning, match="maximum value is infinity"):
        check_env(env, skip_render_check=True)
    assert env.observation_space["spectrogram"].high.max() == np.inf
    made = gymnasium.make("AudioNav-v0", world=world, episodes=val_episodes[:4], disable_env_checker=True)
    obs, _ = made.reset(seed=1)
    assert made.observation_space.contains(obs) and made.action_space.n == 4


def test_scenes_whose_views_are_not_of_the_configured_size_are_refused_by_name():
    from asgf_nav.scenes.store import SceneStoreError
    from asgf_nav.tasks.world import check_view_sizes

    cfg = ExperimentConfig()
    cfg.scenes.dataset, cfg.scenes.data_root, cfg.scenes.image_size = "replica", "DATA", 128
    check_view_sizes({"DATA/scenes/replica/a": 128, "DATA/scenes/replica/b": 128}, cfg)
    check_view_sizes({}, cfg)  # blind tasks read no views
    with pytest.raises(
        SceneStoreError,
        match=r"scenes.image_size=128 \(DATA/scenes/replica/b: 64 px\).*--dataset replica --data-root DATA "
        r".*--image-size 128 --scenes b$",
    ):
        check_view_sizes({"DATA/scenes/replica/a": 128, "DATA/scenes/replica/b": 64}, cfg)
    cfg.scenes.image_size = 64  # every scene at another size than the config's, though all alike
    with pytest.raises(SceneStoreError, match=r"image_size=64 \(DATA/scenes/replica/a: 128 px, .*/b: 128 px\)"):
        check_view_sizes({"DATA/scenes/replica/a": 128, "DATA/scenes/replica/b": 128}, cfg)


def test_an_unregistered_doa_observation_names_task_use_doa(monkeypatch: pytest.MonkeyPatch) -> None:
    from asgf_nav.tasks import observations

    monkeypatch.delitem(observations._REGISTRY, "doa", raising=False)
    with pytest.raises(KeyError, match=r"'doa' is registered by task.use_doa=true"):
        get_observation("doa")
    with pytest.raises(KeyError) as other:
        get_observation("gps")
    assert "task.use_doa" not in str(other.value)


def test_registering_a_taken_name_without_overwrite_raises(monkeypatch):
    """A second provider under a registered name does not silently replace the first."""
    import gymnasium

    from asgf_nav.tasks import observations

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)  # noqa: E731
    first = observations.register_observation("probe_once", lambda s: np.zeros(1, np.float32), space)
    with pytest.raises(ValueError, match="'probe_once' is already registered"):
        observations.register_observation("probe_once", lambda s: np.ones(1, np.float32), space)
    assert observations.get_observation("probe_once") is first
    with pytest.raises(ValueError, match="built-in sensor"):
        observations.register_observation("depth", lambda s: 0, space)
    with pytest.raises(ValueError, match="already registered"):  # pointgoal is built in and registered
        observations.register_observation("pointgoal", lambda s: 0, space)


def test_check_node_accepts_exactly_the_indices_of_the_scene():
    """A scene with 3 nodes accepts nodes 0..2 and refuses 3 (one past the end) and -1."""
    scene = grid_scene("three", nx=3, nz=1)
    assert [scene.check_node(n) for n in (0, 1, 2)] == [0, 1, 2]
    for bad in (3, -1):
        with pytest.raises(ValueError, match="is not a node of scene three"):
            scene.check_node(bad)


def test_reference_env_gives_a_providers_value_the_dtype_of_its_space(world, val_episodes, monkeypatch):
    """A provider that returns a list of python floats (float64) still yields its space's float32 in the
    reference env, as the batched env gives it, so the observation lies in ``observation_space``."""
    from asgf_nav.tasks import observations

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))
    space = lambda w: gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # noqa: E731
    register_observation("step_and_yaw", lambda s: [float(s.step), float(s.yaw)], space)
    env = AudioNavEnv(world, val_episodes, sensors=["step_and_yaw"])
    obs, _ = env.reset()
    yaw = env.yaw
    assert obs["step_and_yaw"].dtype == np.float32 and env.observation_space.contains(obs)
    obs, *_ = env.step(TURN_LEFT)
    assert obs["step_and_yaw"].dtype == np.float32
    np.testing.assert_array_equal(obs["step_and_yaw"], [1.0, (yaw + 1) % 4])


def test_reset_with_a_seed_keeps_the_envs_share_of_a_sequential_split(world, val_episodes):
    """``reset(seed=...)`` rebuilds the sampler for the same env slot: env 1 of 3 striding through val still
    runs episodes 1, 4, 7 (not env 0's 0, 1, 2)."""
    env = AudioNavEnv(world, val_episodes, split="val", sensors=["depth"], env_index=1, num_envs=3)
    first = env.reset(seed=9)[1]["episode_index"]
    assert [first] + [env.reset()[1]["episode_index"] for _ in range(2)] == [1, 4, 7]


def test_an_explicit_sampler_mode_wins_over_the_splits_default(world, val_episodes):
    """``sampler_mode`` given to the reference env is used: a train env asked to stride runs env 2 of 4's
    episodes 2, 6, 10 in order, and a val env asked to shuffle shuffles."""
    env = AudioNavEnv(
        world, val_episodes, split="train", sensors=["depth"], sampler_mode="sequential", env_index=2, num_envs=4
    )
    assert [env.reset()[1]["episode_index"] for _ in range(3)] == [2, 6, 10]
    shuffled = AudioNavEnv(world, val_episodes, split="val", sensors=["depth"], sampler_mode="shuffle")
    assert shuffled.sampler.mode == "shuffle"
    assert [shuffled.reset()[1]["episode_index"] for _ in range(5)] != [0, 1, 2, 3, 4]


def test_the_episode_list_must_be_non_empty_and_of_one_kind(world, val_episodes):
    """No episodes is refused with the settings that give them named (in both envs); a mix of stored and
    resolved episodes is refused as a TypeError."""
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv

    with pytest.raises(ValueError, match=r"no episodes to run .*task\.train_episodes_per_scene"):
        AudioNavEnv(world, [], sensors=["depth"])
    with pytest.raises(ValueError, match=r"no episodes to run .*task\.train_episodes_per_scene"):
        BatchedAudioNavEnv(world, [], 2, sensors=["depth"])
    mixed = [val_episodes[0], *resolve_episodes(val_episodes[1:2], world)]
    with pytest.raises(TypeError, match="episodes must be all Episode or all ResolvedEpisode"):
        AudioNavEnv(world, mixed, sensors=["depth"])


def test_scenes_of_an_earlier_acoustics_version_are_told_to_bake_again_not_to_change_a_setting(monkeypatch, tmp_path):
    """The version is the code's, not a config key: "use the settings they were baked with" cannot apply to it."""
    from asgf_nav.scenes import build
    from asgf_nav.scenes.store import SceneStoreError
    from asgf_nav.tasks.world import check_acoustics_settings

    scene = tmp_path / "scenes" / "tiny" / "tiny_room"
    cfg = ExperimentConfig()
    monkeypatch.setattr(build, "acoustics_changes", lambda directory, cfg: {"version": (2, 3)})
    with pytest.raises(SceneStoreError) as only_version:
        check_acoustics_settings(scene, cfg)
    message = str(only_version.value)
    assert "baked by an earlier release (acoustics version 2; this one bakes 3). Bake them again for these" in message
    assert "config asks" not in message and "Use the settings" not in message
    monkeypatch.setattr(build, "acoustics_changes", lambda directory, cfg: {"version": (2, 3), "rays": (200, 3000)})
    with pytest.raises(
        SceneStoreError,
        match=r"version 2; this one bakes 3\) and with other settings than the "
        r"config asks \(rays: baked 200, the config asks 3000\)\. Bake them again for these",
    ):
        check_acoustics_settings(scene, cfg)
    monkeypatch.setattr(build, "acoustics_changes", lambda directory, cfg: {"version": (4, 3)})
    with pytest.raises(SceneStoreError, match=r"baked by a later release \(acoustics version 4; this one bakes 3\)"):
        check_acoustics_settings(scene, cfg)
