"""Episode generation details a researcher relies on."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.config import TaskConfig
from asgf_nav.tasks.episode_generation import generate_scene_episodes, generate_split, load_or_generate
from asgf_nav.tasks.episodes import Episode, EpisodeError, EpisodeSampler, resolve_episode
from asgf_nav.tasks.navigation import quaternion_to_yaw_index, yaw_to_quaternion
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SR = 16000


def test_geodesic_distance_is_in_metres_and_bounds_are_inclusive_on_a_half_metre_grid():
    """Replica's grid is 0.5 m: distances are hops x grid size, and min = max = 1.0 m means exactly 2 hops."""
    scene = grid_scene("half", grid_size=0.5, sample_rate=SR)
    episodes = generate_scene_episodes(scene, 40, ["bell"], seed=3, min_distance=1.0, max_distance=1.0)
    world = synthetic_world([scene], SR)
    for ep in episodes:
        resolved = resolve_episode(ep, world)
        assert scene.geodesic_hops[resolved.start_node, resolved.goal_node] == 2
        assert ep.geodesic_distance == pytest.approx(1.0)
    wide = generate_scene_episodes(scene, 40, ["bell"], seed=3, min_distance=0.5, max_distance=3.0)
    for ep in wide:
        r = resolve_episode(ep, world)
        assert ep.geodesic_distance == pytest.approx(scene.geodesic_hops[r.start_node, r.goal_node] * 0.5)


def test_start_yaws_cover_all_four_headings():
    scene = grid_scene("yaws", sample_rate=SR)
    episodes = generate_scene_episodes(scene, 200, ["bell"], seed=0)
    assert {quaternion_to_yaw_index(ep.start_rotation) for ep in episodes} == {0, 1, 2, 3}


def _content(episodes):
    return [(e.start_position, e.start_rotation, e.goal_position, e.sound) for e in episodes]


def test_cached_splits_are_drawn_independently_and_as_generate_split_draws_them(tmp_path):
    """val and test (same counts) must not be the same episodes; the cached path must reproduce generate_split."""
    world = synthetic_world(sample_rate=SR)
    cfg = TaskConfig(val_episodes=12, test_episodes=12)
    sounds = ["bell", "drum", "horn"]
    val = load_or_generate(tmp_path, world, "val", "unheard", sounds, cfg)
    test = load_or_generate(tmp_path, world, "test", "unheard", sounds, cfg)
    assert _content(val) != _content(test)
    for split, written in (("val", val), ("test", test)):  # the same episodes, ids included
        generated = generate_split(world, split, "unheard", sounds, cfg)
        assert [e.to_json() for e in written] == [e.to_json() for e in generated]


def test_the_same_sounds_in_another_order_regenerate_the_cache_as_a_fresh_root_would(tmp_path):
    """Generation draws a sound by its index, so a reordered list must not reuse episodes drawn from the old order."""
    world = synthetic_world(sample_rate=SR)
    cfg = TaskConfig(val_episodes=24, test_episodes=24)
    load_or_generate(tmp_path / "cached", world, "test", "heard", ["bell", "drum", "horn"], cfg)
    reordered = load_or_generate(tmp_path / "cached", world, "test", "heard", ["horn", "bell", "drum"], cfg)
    fresh = load_or_generate(tmp_path / "fresh", world, "test", "heard", ["horn", "bell", "drum"], cfg)
    assert _content(reordered) == _content(fresh)


def test_a_damaged_generated_episode_file_says_deleting_it_generates_it_again(tmp_path):
    from asgf_nav.tasks.episodes import EpisodeError

    world = synthetic_world(sample_rate=SR)
    cfg = TaskConfig(val_episodes=24, test_episodes=24)
    first = load_or_generate(tmp_path, world, "test", "heard", ["bell", "drum"], cfg)
    file = sorted(tmp_path.rglob("content/*.json.gz"))[0]  # one scene's episodes
    file.write_bytes(file.read_bytes()[:40])  # cut off mid-stream
    with pytest.raises(EpisodeError, match=f"cannot read episode file {file}: .*delete it and it is generated again"):
        load_or_generate(tmp_path, world, "test", "heard", ["bell", "drum"], cfg)
    file.unlink()
    assert _content(load_or_generate(tmp_path, world, "test", "heard", ["bell", "drum"], cfg)) == _content(first)


def test_an_episode_whose_goal_is_unreachable_is_refused_even_with_a_stored_num_action():
    scene = grid_scene("split", nx=5, nz=3, blocked=((2, 0), (2, 1), (2, 2)), sample_rate=SR, num_sources=None)
    world = synthetic_world([scene], SR)
    hops = np.asarray(scene.geodesic_hops)
    goal = int(scene.source_nodes[0])
    start = int(np.flatnonzero(hops[:, goal] < 0)[0])
    ep = Episode(
        "1",
        "split/split.glb",
        scene.positions[start].tolist(),
        yaw_to_quaternion(0),
        scene.positions[goal].tolist(),
        "bell",
        3.0,
        num_action=5,
    )
    with pytest.raises(EpisodeError, match="unreachable"):
        resolve_episode(ep, world)


@pytest.mark.parametrize("split", ["val", "test"])
def test_unheard_val_and_test_episodes_play_their_own_splits_sounds(tmp_path, monkeypatch, split):
    from asgf_nav.config import ExperimentConfig
    from asgf_nav.sounds.bank import SoundBank
    from asgf_nav.tasks import factory
    from asgf_nav.tasks.synthetic import synthetic_world

    seen = {}
    monkeypatch.setattr(factory, "load_world", lambda cfg, split, scenes: synthetic_world())
    monkeypatch.setattr(factory, "episodes_root", lambda cfg: tmp_path)
    monkeypatch.setattr(factory, "split_scene_names", lambda cfg, split: None)
    monkeypatch.setattr(
        factory,
        "load_or_generate",
        lambda root, world, split, sound_split, sounds, *a, **kw: seen.setdefault("sounds", sounds) and [],
    )
    cfg = ExperimentConfig()
    cfg.task.sound_split = "unheard"
    factory.load_task_data(cfg, split)
    bank = SoundBank.load()
    assert seen["sounds"] == bank.names(split) and not set(seen["sounds"]) & set(bank.names("train"))


def test_generate_split_orders_the_scenes_by_name_whatever_the_world_order():
    """Ids (``scene:i``, as load_or_generate writes them) and the val/test spread (5 over 2 scenes: 3 + 2) follow
    the sorted names, as load_or_generate reads them, not the order in which the world lists its scenes."""
    world = synthetic_world(sample_rate=SR)
    backwards = synthetic_world([world.scene("grid_b"), world.scene("grid_a")], SR)
    assert list(backwards.scenes) == ["grid_b", "grid_a"]
    cfg = TaskConfig(val_episodes=5)
    episodes = generate_split(backwards, "val", "heard", ["bell"], cfg)
    assert [e.scene_name for e in episodes] == ["grid_a"] * 3 + ["grid_b"] * 2
    assert [e.episode_id for e in episodes] == ["grid_a:0", "grid_a:1", "grid_a:2", "grid_b:0", "grid_b:1"]
    in_order = generate_split(world, "val", "heard", ["bell"], cfg)
    assert [e.to_json() for e in episodes] == [e.to_json() for e in in_order]


def test_a_source_without_a_start_in_the_distance_bounds_is_never_a_goal():
    """In a 5-node corridor with min = max = 3 m the middle node has no start 3 hops away: episodes use
    only the four other sources (drawing it would leave no start to choose)."""
    scene = grid_scene("corridor", nx=5, nz=1, sample_rate=SR)
    assert len(scene.source_nodes) == 5
    episodes = generate_scene_episodes(scene, 40, ["bell"], seed=0, min_distance=3.0, max_distance=3.0)
    assert {ep.geodesic_distance for ep in episodes} == {3.0}
    assert {ep.goal_position[0] for ep in episodes} == {0.0, 1.0, 3.0, 4.0}


def test_a_changed_train_count_regenerates_the_cached_episodes(tmp_path):
    """task.train_episodes_per_scene from 3 to 5 gives 5 episodes per scene, not the 3 cached ones."""
    world = synthetic_world(sample_rate=SR)
    fewer = load_or_generate(tmp_path, world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=3))
    assert len(fewer) == 6
    more = load_or_generate(tmp_path, world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=5))
    assert len(more) == 10


def test_changed_source_nodes_regenerate_the_cached_episodes(tmp_path):
    """The same graph with other acoustic sources (another bake) must not keep goals that are no sources."""
    cfg = TaskConfig(train_episodes_per_scene=20)
    scene = replace(grid_scene("g", sample_rate=SR), source_nodes=np.array([0, 19]))
    load_or_generate(tmp_path / "cached", synthetic_world([scene], SR), "train", "heard", ["bell"], cfg)
    moved = synthetic_world([replace(scene, source_nodes=np.array([7, 12]))], SR)
    episodes = load_or_generate(tmp_path / "cached", moved, "train", "heard", ["bell"], cfg)
    assert {resolve_episode(ep, moved).goal_node for ep in episodes} <= {7, 12}
    fresh = load_or_generate(tmp_path / "fresh", moved, "train", "heard", ["bell"], cfg)
    assert [e.to_json() for e in episodes] == [e.to_json() for e in fresh]


def test_the_envs_of_a_run_draw_different_episode_orders():
    """Each env's sampler is seeded with its index too: envs sharing a seed must not run the same episodes
    in lockstep."""
    samplers = [EpisodeSampler(50, seed=0, env_index=i, num_envs=3) for i in range(3)]
    orders = [tuple(s.next() for _ in range(10)) for s in samplers]
    assert len(set(orders)) == 3
    again = EpisodeSampler(50, seed=0, env_index=1, num_envs=3)
    assert tuple(again.next() for _ in range(10)) == orders[1]


def test_generated_episodes_resolve_in_a_scene_off_round_coordinates():
    """Replica nodes sit at heights like -1.5528907 m and arbitrary x, z offsets: stored positions must keep
    enough decimals to map back to their nodes with SoundSpaces' 2-decimal key."""
    base = grid_scene("offset", grid_size=0.5, sample_rate=SR)
    offset = np.array([0.1234567, -1.5528907, 0.3456789], dtype=np.float32)
    scene = replace(base, positions=np.asarray(base.positions) + offset)
    world = synthetic_world([scene], SR)
    episodes = generate_scene_episodes(scene, 30, ["bell"], seed=1)
    for ep in episodes:
        resolved = resolve_episode(ep, world)
        np.testing.assert_allclose(scene.positions[resolved.start_node], ep.start_position, atol=1e-6)
        assert ep.geodesic_distance == pytest.approx(scene.geodesic_hops[resolved.start_node, resolved.goal_node] * 0.5)


def test_a_zero_minimum_distance_puts_some_starts_on_their_goal_and_none_off_its_graph() -> None:
    """min = 0 m, max = 1 m in a grid cut in two: starts are the goal itself (0 m, num_action 1: STOP) or a
    neighbour on its side of the wall, never a node of the other half that cannot reach it."""
    scene = grid_scene("cut", nx=5, nz=3, blocked=((2, 0), (2, 1), (2, 2)), sample_rate=SR, num_sources=None)
    world = synthetic_world([scene], SR)
    episodes = generate_scene_episodes(scene, 60, ["bell"], seed=2, min_distance=0.0, max_distance=1.0)
    assert {ep.geodesic_distance for ep in episodes} == {0.0, 1.0}
    for ep in episodes:
        resolved = resolve_episode(ep, world)
        assert scene.geodesic_hops[resolved.start_node, resolved.goal_node] == ep.geodesic_distance
        assert (ep.start_position[0] < 2.0) == (ep.goal_position[0] < 2.0)  # same side of the wall at x = 2
        if ep.geodesic_distance == 0.0:
            assert ep.start_position == ep.goal_position and ep.num_action == resolved.num_action == 1


def test_every_start_within_the_distance_bounds_can_be_drawn() -> None:
    """A 5-node corridor with its only source at x = 0 and bounds [1, 4] m: starts cover x = 1, 2, 3 and 4."""
    scene = replace(grid_scene("corridor", nx=5, nz=1, sample_rate=SR), source_nodes=np.array([0]))
    episodes = generate_scene_episodes(scene, 100, ["bell"], seed=0, min_distance=1.0, max_distance=4.0)
    assert {ep.goal_position[0] for ep in episodes} == {0.0}
    assert {ep.start_position[0] for ep in episodes} == {1.0, 2.0, 3.0, 4.0}
    assert {ep.geodesic_distance for ep in episodes} == {1.0, 2.0, 3.0, 4.0}


def test_a_scene_imported_again_at_another_height_regenerates_its_episodes(tmp_path: Path) -> None:
    """The same graph with its nodes 0.0528907 m lower (Replica's 1.5528907 offset instead of 1.5) must not
    keep cached positions that no longer match a node."""
    cfg = TaskConfig(train_episodes_per_scene=10)
    scene = grid_scene("g", sample_rate=SR)
    load_or_generate(tmp_path / "cached", synthetic_world([scene], SR), "train", "heard", ["bell"], cfg)
    lowered = replace(scene, positions=np.asarray(scene.positions) + np.float32([0.0, -0.0528907, 0.0]))
    world = synthetic_world([lowered], SR)
    episodes = load_or_generate(tmp_path / "cached", world, "train", "heard", ["bell"], cfg)
    assert {round(ep.start_position[1], 4) for ep in episodes} == {round(ep.goal_position[1], 4) for ep in episodes}
    assert {round(ep.start_position[1], 4) for ep in episodes} == {-0.0529}
    fresh = load_or_generate(tmp_path / "fresh", world, "train", "heard", ["bell"], cfg)
    assert [e.to_json() for e in episodes] == [e.to_json() for e in fresh]


def test_a_scene_whose_forward_directions_changed_regenerates_its_episodes(tmp_path: Path) -> None:
    """Same nodes, edges and hop table, but yaw 1 and 3 swapped (a re-import with the other turn convention):
    num_action counts turns, so the cached episodes must not be kept."""
    cfg = TaskConfig(train_episodes_per_scene=20)
    scene = grid_scene("g", sample_rate=SR)
    before = load_or_generate(tmp_path / "cached", synthetic_world([scene], SR), "train", "heard", ["bell"], cfg)
    mirrored = replace(scene, neighbors=np.asarray(scene.neighbors)[:, [0, 3, 2, 1]])
    world = synthetic_world([mirrored], SR)
    episodes = load_or_generate(tmp_path / "cached", world, "train", "heard", ["bell"], cfg)
    fresh = load_or_generate(tmp_path / "fresh", world, "train", "heard", ["bell"], cfg)
    assert [e.to_json() for e in episodes] == [e.to_json() for e in fresh]
    assert [e.num_action for e in episodes] != [e.num_action for e in before]


def test_a_yaw_just_under_360_degrees_reads_as_yaw_0_and_tilted_rotations_are_refused() -> None:
    """[0, 1e-7, 0, -1] is 359.99999 degrees, i.e. yaw index 0 (not 4, nor an error); a 5.7-degree tilt about X
    is no rotation about +Y; yaw indices outside 0..3 are written as their value modulo 4."""
    assert quaternion_to_yaw_index([0.0, 1e-7, 0.0, -1.0]) == 0
    with pytest.raises(ValueError, match="not a rotation about"):
        quaternion_to_yaw_index([0.05, 0.0, 0.0, 0.99875])
    half = 0.5**0.5
    assert yaw_to_quaternion(-1) == pytest.approx([0.0, half, 0.0, -half])  # 270, as the module writes it
    assert yaw_to_quaternion(5) == pytest.approx([0.0, half, 0.0, half])


def test_a_changed_sound_of_a_read_record_is_written_back() -> None:
    """A record's own fields are no extra fields: a read episode with another sound and num_action saves them."""
    record = {
        "episode_id": "3",
        "scene_id": "grid_a/grid_a.glb",
        "start_position": [1.0, 0.0, 2.0],
        "start_rotation": [0.0, 0.0, 0.0, 1.0],
        "goals": [{"position": [4.0, 0.0, 3.0], "radius": 1e-5}],
        "info": {"sound": "telephone", "geodesic_distance": 4.0},
    }
    ep = Episode.from_json(record)
    assert ep.extra == {}
    info = replace(ep, sound="drum", num_action=9).to_json()["info"]
    assert info == {"sound": "drum", "geodesic_distance": 4.0, "num_action": 9}
