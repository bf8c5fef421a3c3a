"""Reward and metric formulas of tasks/metrics.py: one definition for both envs, scalar and array alike."""

import json

import numpy as np
import pytest
import torch
from env_helpers import reset_env_pair

from asgf_nav.config import TaskConfig
from asgf_nav.eval.metrics import (
    MetricSummary,
    format_summary,
    format_wilson,
    mean_confidence_interval,
    wilson_interval,
)
from asgf_nav.tasks import metrics
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.metrics import METRIC_NAMES, episode_metrics, episode_metrics_array
from asgf_nav.tasks.synthetic import synthetic_world


def _random_episodes(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = rng.choice([0.5, 1.0], n)
    steps = rng.integers(1, 60, n)
    return {
        "called_stop": rng.random(n) < 0.6,
        "start_distance": rng.integers(0, 12, n) * grid,  # zeros included: a start on the goal
        "distance": rng.integers(0, 6, n) * grid,
        "path_length": rng.integers(0, 30, n) * grid,
        "oracle_actions": rng.integers(1, 40, n).astype(np.float64),
        "num_actions": steps,
    }


def test_softspl_by_hand_is_zero_past_twice_the_start_distance():
    """SoftSPL = max(1 - d_T / d_0, 0) * d_0 / max(d_0, L): no negative progress pulls a mean down."""
    assert episode_metrics(False, 2.0, 5.0, 6.0, 2, 10)["softspl"] == 0.0
    assert episode_metrics(False, 2.0, 1.0, 6.0, 2, 10)["softspl"] == pytest.approx(0.5 * 2.0 / 6.0)
    array = episode_metrics_array(
        np.array([False, False]), np.full(2, 2.0), np.array([5.0, 1.0]), np.full(2, 6.0), 2, 10
    )
    np.testing.assert_allclose(array["softspl"], [0.0, 0.5 * 2.0 / 6.0])


def test_spl_and_sna_by_hand_count_only_successes_and_cap_at_one():
    """SPL = S * d_0 / max(d_0, L) and SNA = S * N_oracle / max(N_oracle, N): a failure scores 0 however short its
    path, and a path or action count below the optimum (a shorter measured path) cannot score above 1."""
    # called_stop, start distance, final distance, path length, oracle actions, actions
    won = episode_metrics(True, 2.0, 0.5, 4.0, 5, 8)
    assert (won["success"], won["spl"], won["sna"]) == (1.0, pytest.approx(0.5), pytest.approx(5 / 8))
    lost = episode_metrics(True, 2.0, 1.5, 2.0, 5, 5)  # stopped 1.5 m away: the optimal path, and still 0
    assert (lost["success"], lost["spl"], lost["sna"]) == (0.0, 0.0, 0.0)
    below = episode_metrics(True, 2.0, 0.5, 1.5, 5, 3)  # fewer actions and metres than the oracle's
    assert (below["spl"], below["sna"]) == (1.0, 1.0)
    array = episode_metrics_array(
        np.array([True, True, True]), np.full(3, 2.0), np.array([0.5, 1.5, 0.5]), np.array([4.0, 2.0, 1.5]), 5,
        np.array([8, 5, 3]),
    )  # fmt: skip
    np.testing.assert_allclose(array["spl"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(array["sna"], [5 / 8, 0.0, 1.0])


def _habitat_metrics(called_stop, d0, d_t, walked, oracle_actions, num_actions) -> dict[str, float]:
    """One episode's metrics written out as habitat-lab and SoundSpaces define them, branch by branch, with no
    code of tasks/metrics.py: the independent reference the vectorised formulas must agree with."""
    success = 1.0 if called_stop and d_t < 1.0 else 0.0
    if d0 == 0 and walked == 0:  # started on the goal and never moved: habitat's 0/0, scored as the success
        spl = soft = success
    else:
        efficiency = d0 / max(d0, walked)
        spl = success * efficiency
        soft = max(0.0, 1.0 - d_t / d0) * efficiency if d0 > 0 else 0.0
    sna = success * oracle_actions / max(oracle_actions, num_actions)
    return {"success": success, "spl": spl, "softspl": soft, "sna": sna, "distance_to_goal": d_t,
            "num_actions": float(num_actions)}  # fmt: skip


def test_array_metrics_equal_the_per_episode_ones_on_random_inputs():
    inputs = _random_episodes(2000)
    arrays = episode_metrics_array(**inputs, success_distance=1.0)
    tensors = episode_metrics_array(**{k: torch.from_numpy(v) for k, v in inputs.items()}, success_distance=1.0)
    for i in range(2000):
        values = [v[i].item() for v in inputs.values()]
        expected = _habitat_metrics(*values)
        one = episode_metrics(*values, success_distance=1.0)
        for name in METRIC_NAMES:
            assert arrays[name][i] == pytest.approx(expected[name], abs=1e-12), (name, i)
            assert one[name] == pytest.approx(expected[name], abs=1e-12), (name, i)
            assert tensors[name][i].item() == pytest.approx(expected[name], abs=1e-6), (name, i)
    assert np.isfinite(np.stack([arrays[k] for k in METRIC_NAMES])).all()
    stayed = (inputs["start_distance"] == 0) & (inputs["path_length"] == 0)
    assert stayed.any() and (arrays["spl"][stayed] == arrays["success"][stayed]).all()
    wandered = (inputs["start_distance"] == 0) & (inputs["path_length"] > 0)
    assert wandered.any() and (arrays["spl"][wandered] == 0).all() and (arrays["softspl"][wandered] == 0).all()


def test_step_reward_array_equals_scalar_on_random_inputs():
    rng = np.random.default_rng(1)
    prev, now = rng.integers(0, 12, (2, 500)) * 0.5
    at_goal = (rng.random(500) < 0.1).astype(np.float64)
    arrays = metrics.step_reward(prev, now, at_goal, -0.01, 1.0, 10.0)
    for i in range(500):  # SoundSpaces' reward: slack, the geodesic progress, the bonus for STOP on the goal node
        expected = -0.01 + (prev[i] - now[i]) + (10.0 if at_goal[i] else 0.0)
        assert arrays[i] == pytest.approx(expected, abs=1e-12)
        assert metrics.step_reward(prev[i].item(), now[i].item(), at_goal[i].item()) == pytest.approx(expected)


def test_both_envs_take_reward_and_metrics_from_tasks_metrics(monkeypatch):
    """A change to tasks/metrics.py reaches the batched env (used for training and evaluation) as well as
    the single one: neither keeps its own copy of a formula."""
    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "unheard", ["bell"], TaskConfig(train_episodes_per_scene=4))
    original_reward, original_metrics = metrics.step_reward, metrics.episode_metrics_array

    def reward_plus_100(*args, **kwargs):
        return original_reward(*args, **kwargs) + 100.0

    def spl_minus_7(*args, **kwargs):
        values = original_metrics(*args, **kwargs)
        return {**values, "spl": values["spl"] - 7.0}

    monkeypatch.setattr(metrics, "step_reward", reward_plus_100)
    monkeypatch.setattr(metrics, "episode_metrics_array", spl_minus_7)
    cfg = TaskConfig(max_steps=3, sensors=["depth"])
    batched, refs = reset_env_pair(world, episodes, 2, cfg, 3)
    for _ in range(3):
        _, reward, done, info = batched.step(np.array([2, 2]))  # turning: -0.01 a step, no success
        ref_steps = [r.step(2) for r in refs]
        for i, (_, ref_reward, _, _, _) in enumerate(ref_steps):
            assert ref_reward == pytest.approx(99.99) and reward[i].item() == pytest.approx(99.99)
    assert done.all()
    for i, (_, _, _, truncated, ref_info) in enumerate(ref_steps):
        assert truncated and info["spl"][i].item() == -7.0 and ref_info["spl"] == -7.0


def test_sna_is_zero_for_every_failed_episode() -> None:
    """SNA = success * oracle_actions / max(oracle_actions, NA): an episode that ends on the goal without STOP, or
    that stops too far away, scores 0 however short it was (without the success factor both would be 1)."""
    assert episode_metrics(False, 2.0, 0.0, 2.0, 3, 3)["sna"] == 0.0  # reached the goal, never stopped
    assert episode_metrics(True, 4.0, 2.0, 2.0, 5, 3)["sna"] == 0.0  # stopped 2 m away
    assert episode_metrics(True, 4.0, 0.0, 4.0, 5, 8)["sna"] == pytest.approx(5 / 8)
    array = episode_metrics_array(np.array([False, True]), np.full(2, 4.0), np.array([0.0, 2.0]), 4.0, 5, 3)
    np.testing.assert_array_equal(array["sna"], [0.0, 0.0])


def test_a_successful_start_on_the_goal_scores_one_in_spl_and_softspl() -> None:
    """d0 = 0 (task.min_geodesic_distance = 0): STOP at once is a perfect episode, SoftSPL as SPL, where
    the SoftSPL formula itself gives 0 * ... / 1e-12 = 0; a walk before the STOP scores 0, as in habitat."""
    done = episode_metrics(True, 0.0, 0.0, 0.0, 1, 1)
    assert (done["success"], done["spl"], done["softspl"], done["sna"]) == (1.0, 1.0, 1.0, 1.0)
    array = episode_metrics_array(np.array([True, False]), np.zeros(2), np.zeros(2), np.zeros(2), 1, 1)
    np.testing.assert_array_equal(array["softspl"], [1.0, 0.0])
    wandered = episode_metrics(True, 0.0, 0.0, 12.0, 1, 25)  # 12 m away and back: habitat's d0 / max(d0, L) = 0
    assert (wandered["success"], wandered["spl"], wandered["softspl"]) == (1.0, 0.0, 0.0)


def test_per_episode_metrics_honour_the_success_distance() -> None:
    """task.success_distance reaches the single env's metrics: a STOP 1 m away succeeds with 1.5 m and fails
    with the default 1.0 m (strict <)."""
    wide = episode_metrics(True, 3.0, 1.0, 2.0, 4, 4, success_distance=1.5)
    assert (wide["success"], wide["spl"], wide["sna"]) == (1.0, 1.0, 1.0)
    assert episode_metrics(True, 3.0, 1.0, 2.0, 4, 4)["success"] == 0.0


def test_step_reward_uses_its_scale_slack_and_success_reward() -> None:
    """reward = slack + scale * (previous - current distance) + success_reward * stop_at_goal, each term
    from its own argument (task.slack_reward, task.distance_reward_scale, task.success_reward)."""
    assert metrics.step_reward(2.0, 1.5, 0.0, -0.01, 2.0, 10.0) == pytest.approx(-0.01 + 2.0 * 0.5)
    assert metrics.step_reward(1.0, 0.0, 1.0, -0.05, 1.0, 5.0) == pytest.approx(-0.05 + 1.0 + 5.0)
    assert metrics.step_reward(1.0, 1.5, 0.0, -0.01, 3.0, 10.0) == pytest.approx(-0.01 - 1.5)


# ---------------------------------------------------------------------- eval/metrics.py: summaries of a split
@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_a_confidence_level_outside_zero_to_one_is_refused(level: float) -> None:
    """Level 0 would give a zero-width interval (t quantile 0.5 = 0) that looks like certainty: refused."""
    with pytest.raises(ValueError, match="confidence level must be in"):
        mean_confidence_interval([0.0, 1.0, 1.0], level=level)


def test_a_wilson_interval_over_zero_episodes_is_a_clear_error() -> None:
    """0 of 0 episodes is no proportion: a ValueError saying so, not a ZeroDivisionError."""
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)


def test_a_metric_summary_survives_its_dict_round_trip() -> None:
    """summary.json stores each summary as a dict: reading it back keeps low, high and a 90 % level apart;
    a dict written before levels were stored reads as 95 %."""
    summary = MetricSummary(mean=0.5, low=0.25, high=0.75, std=0.3, count=7, level=0.9)
    data = {"mean": 0.5, "low": 0.25, "high": 0.75, "std": 0.3, "count": 7, "level": 0.9}
    assert summary.to_dict() == data
    assert MetricSummary.from_dict(data) == summary
    older = {key: value for key, value in data.items() if key != "level"}
    assert MetricSummary.from_dict(older) == MetricSummary(0.5, 0.25, 0.75, 0.3, 7, 0.95)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_metric_value_is_refused(value: float) -> None:
    """An infinite value (a distance to an unreachable goal) is named, not averaged into 'inf ± nan'."""
    with pytest.raises(ValueError, match="metric values must be finite"):
        mean_confidence_interval([1.0, value, 2.0])


def test_a_single_episode_summary_keeps_the_requested_level() -> None:
    """One episode (a one-episode scene of a 90 % summary) gives no interval, recorded at 90 %."""
    assert mean_confidence_interval([0.4], level=0.9) == MetricSummary(0.4, None, None, None, 1, 0.9)


def test_one_episode_has_no_interval_in_json_nor_in_its_cell() -> None:
    """The t interval of one value is undefined: summary.json stores null, not a zero-width interval that
    claims certainty, reads it back, and the cell says (n=1) instead of '± 0.0'; so does a cell of an earlier
    release's summary, which stored the mean as both ends."""
    one = mean_confidence_interval([1.0])
    data = json.loads(json.dumps(one.to_dict()))
    assert data["low"] is None and data["high"] is None and data["std"] is None
    assert MetricSummary.from_dict(data) == one and one.half_width is None and not one.has_interval
    assert format_summary(one, "success") == "100.0 (n=1)"
    assert format_summary(mean_confidence_interval([12.0]), "num_actions") == "12.00 (n=1)"
    earlier = {"mean": 1.0, "low": 1.0, "high": 1.0, "std": 0.0, "count": 1, "level": 0.95}
    assert format_summary(MetricSummary.from_dict(earlier), "spl") == "100.0 (n=1)"
    two = mean_confidence_interval([1.0, 1.0])  # an interval exists, of zero width: shown as computed
    assert format_summary(two, "spl") == "100.0 ± 0.0"


@pytest.mark.parametrize("nulls", [("low",), ("low", "high", "std")])
def test_a_null_interval_is_read_only_over_one_episode(nulls: tuple[str, ...]) -> None:
    """Null bounds are one episode's; over more, or one bound null alone, the summary is damaged: refused."""
    data = {"mean": 0.5, "low": 0.25, "high": 0.75, "std": 0.3, "count": 7} | dict.fromkeys(nulls)
    with pytest.raises(ValueError, match="null together and only over one episode"):
        MetricSummary.from_dict(data)


def test_a_binary_metric_is_shown_with_its_wilson_interval() -> None:
    """SR where every episode fails is '0.0 [0.0, 43.4]' (Wilson, 5 episodes), not the t interval's
    '0.0 ± 0.0'; the bounds are those the overall row stores (wilson_interval), or computed from the mean and
    count alike; one episode is '(n=1)' like the rest of its row."""
    none = mean_confidence_interval([0.0] * 5)
    assert format_summary(none, "success") == "0.0 ± 0.0"  # the t interval: no uncertainty shown
    low, high = wilson_interval(0, 5)
    assert format_wilson(none, "success") == f"0.0 [0.0, {100 * high:.1f}]" == "0.0 [0.0, 43.4]"
    three_of_four = mean_confidence_interval([0.0, 1.0, 1.0, 1.0], level=0.9)
    low, high = wilson_interval(3, 4, level=0.9)
    assert format_wilson(three_of_four, "success") == f"75.0 [{100 * low:.1f}, {100 * high:.1f}]"
    assert format_wilson(three_of_four, "success", (0.2, 0.8)) == "75.0 [20.0, 80.0]"  # as stored
    assert format_wilson(mean_confidence_interval([1.0]), "success") == "100.0 (n=1)"


def test_every_metric_the_envs_compute_is_reported_labelled_and_selectable() -> None:
    """The metric names live in the task (what the envs compute), the report (order, labels, percent) and
    the config (train.best_metric): a metric added to one place and not the others fails here."""
    from typing import get_args, get_type_hints

    from asgf_nav.config import TrainConfig
    from asgf_nav.eval.metrics import METRIC_LABELS, PERCENT_METRICS, REPORTED_METRICS

    assert sorted(REPORTED_METRICS) == sorted(METRIC_NAMES) == sorted(METRIC_LABELS)
    assert PERCENT_METRICS <= set(METRIC_NAMES)
    selectable = set(get_args(get_type_hints(TrainConfig)["best_metric"])) - {"none"}
    assert selectable == PERCENT_METRICS  # the rates a best checkpoint can be picked by
