"""Oracle turn costs, sampler resume and split-file scene filtering."""

import numpy as np
import pytest

from asgf_nav.config import TaskConfig
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.episodes import EpisodeError, EpisodeSampler, _write_json_gz, load_episodes, resolve_episodes
from asgf_nav.tasks.navigation import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, oracle_plan, turn_cost
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world


def test_a_right_turn_costs_one_action_and_the_oracle_uses_it():
    assert [turn_cost(0, k) for k in range(4)] == [0, 1, 2, 1]
    assert turn_cost(1, 0) == 1 and turn_cost(3, 1) == 2
    scene = grid_scene("g", nx=5, nz=4)
    goal = 2 * 5 + 2  # cell (2, 2), start cell (0, 0) facing -Z (yaw 0)
    plan = oracle_plan(scene.neighbors, np.asarray(scene.geodesic_hops[:, goal]), 0, 0)
    # right, two forward, right, two forward: 6 actions + STOP (not left-left-... with 7)
    assert plan == [TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, STOP]


def test_shuffle_sampler_state_round_trip_continues_the_same_order_over_new_permutations():
    a = EpisodeSampler(7, seed=3, env_index=1, num_envs=2)
    for _ in range(5):
        a.next()
    state = a.state_dict()
    b = EpisodeSampler(7, seed=3, env_index=1, num_envs=2)  # as a resumed run rebuilds it
    b.load_state_dict(state)
    assert [a.next() for _ in range(30)] == [b.next() for _ in range(30)]  # spans several reshuffles


def test_a_sampler_state_for_another_episode_count_is_refused():
    """Its order indexes the saved dataset: loading it into a smaller one would later index past the end."""
    a = EpisodeSampler(7, seed=3)
    a.next()
    with pytest.raises(EpisodeError, match="sampler state is for 7 episodes, this sampler has 5"):
        EpisodeSampler(5, seed=3).load_state_dict(a.state_dict())
    legacy = {k: v for k, v in a.state_dict().items() if k != "num_episodes"}  # written before the count was kept
    with pytest.raises(EpisodeError, match="sampler state is for at least 7 episodes, this sampler has 5"):
        EpisodeSampler(5, seed=3).load_state_dict(legacy)


def test_a_split_file_listing_episodes_is_filtered_to_the_requested_scenes(tmp_path):
    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "val", "unheard", ["bell"], TaskConfig(val_episodes=10))
    path = tmp_path / "val.json.gz"
    _write_json_gz(path, {"episodes": [e.to_json() for e in episodes]})  # episodes inline, no content dir
    only_a = load_episodes(path, scenes=["grid_a"])
    assert only_a and {e.scene_name for e in only_a} == {"grid_a"}
    assert len(load_episodes(path)) == 10


def test_the_oracle_may_reach_the_goal_facing_any_way() -> None:
    """4x4 grid without (0,3), (2,1), (3,3): from (2,3) facing -X to (0,0) the 8-action plan F R F F F L F STOP
    arrives facing -X; the 9-action F R F L F R F F STOP that arrives facing -Z must not be preferred."""
    scene = grid_scene("walls", nx=4, nz=4, blocked=((0, 3), (2, 1), (3, 3)))
    node = {(int(p[0]), int(p[2])): i for i, p in enumerate(np.asarray(scene.positions))}
    hops = np.asarray(scene.geodesic_hops[:, node[0, 0]])
    plan = oracle_plan(scene.neighbors, hops, node[2, 3], 1)
    assert plan == [MOVE_FORWARD, TURN_RIGHT, MOVE_FORWARD, MOVE_FORWARD, MOVE_FORWARD, TURN_LEFT, MOVE_FORWARD, STOP]


def test_a_sequential_sampler_wraps_around_the_dataset() -> None:
    """Env 1 of 2 over 5 episodes strides 1, 3, then wraps to 0, 2, 4, 1 (it does not stick to the last one)."""
    sampler = EpisodeSampler(5, seed=0, env_index=1, num_envs=2, mode="sequential")
    assert [sampler.next() for _ in range(6)] == [1, 3, 0, 2, 4, 1]


def test_an_empty_split_is_refused_with_an_episode_error() -> None:
    """No episodes must raise a clear EpisodeError, not an IndexError or ZeroDivisionError at the first reset."""
    with pytest.raises(EpisodeError, match="at least one episode"):
        EpisodeSampler(0, seed=0)
    with pytest.raises(EpisodeError, match="no episodes to resolve"):
        resolve_episodes([], synthetic_world(sample_rate=16000))


def test_a_loaded_sampler_state_carries_its_mode_and_stride() -> None:
    """Env 2 of 3 striding over 10 episodes (2, 5 done) continues 8, 1, 4, 7 in any sampler it is loaded into."""
    saved = EpisodeSampler(10, seed=0, env_index=2, num_envs=3, mode="sequential")
    assert [saved.next(), saved.next()] == [2, 5]
    resumed = EpisodeSampler(10, seed=9)
    resumed.load_state_dict(saved.state_dict())
    assert [resumed.next() for _ in range(4)] == [8, 1, 4, 7]


def test_seed_sequences_with_the_same_sum_give_different_orders() -> None:
    """Seeds (seed, rank) = (1, 2), (2, 1) and (0, 3) are distinct streams, not one stream of their sum."""
    samplers = [EpisodeSampler(50, seed=seed) for seed in [(1, 2), (2, 1), (0, 3)]]
    orders = {tuple(sampler.next() for _ in range(10)) for sampler in samplers}
    assert len(orders) == 3
