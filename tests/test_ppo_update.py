"""One PPO update on a one-parameter bandit: each loss term moves the parameters the way it should, and
the reported statistics have their hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asgf_nav.config import ExperimentConfig
from asgf_nav.rl.ppo import PPO, explained_variance, normalized_advantages
from asgf_nav.rl.rollout import RolloutStorage


class Bandit(nn.Module):
    """A policy without observations: four action logits and one value."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([2.0, 0.0, 0.0, 0.0]))
        self.value = nn.Parameter(torch.tensor(0.0))

    def dist(self, shape: tuple[int, ...]) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits.expand(*shape, 4))

    def evaluate_actions(self, obs, hidden, masks, actions):
        d = self.dist(tuple(actions.shape))
        return self.value.expand(actions.shape), d.log_prob(actions), d.entropy(), hidden


def _storage(policy: Bandit, ratio: torch.Tensor, advantages: torch.Tensor | None = None) -> RolloutStorage:
    """Four steps of two envs, all action 0, old values 0, returns 1; old log-probabilities giving ``ratio``;
    the given advantages (zero by default)."""
    storage = RolloutStorage(4, 2, {"x": ((1,), "float32")}, (1, 1))
    with torch.no_grad():
        storage.log_probs.copy_(policy.dist((4, 2)).log_prob(storage.actions) - ratio.log())
    storage.returns = torch.ones(4, 2)
    if advantages is not None:
        storage.advantages = advantages
    return storage


def _ppo_config(**changes):
    cfg = ExperimentConfig().ppo
    cfg.ppo_epoch, cfg.num_mini_batch = 1, 1
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_entropy_bonus_raises_entropy_and_the_value_moves_towards_the_returns():
    policy = Bandit()
    before = policy.dist(()).entropy().item()
    PPO(policy, _ppo_config(entropy_coef=0.5, lr=1e-2)).update(_storage(policy, torch.ones(4, 2)))
    assert policy.dist(()).entropy().item() > before  # zero advantages: only the bonus moves the logits
    assert policy.value.item() > 0.0  # returns of 1 pull the value up from 0


def test_approx_kl_and_clip_fraction_have_their_hand_computed_values():
    policy = Bandit()
    ratio = torch.ones(4, 2)
    ratio[:2] = 1.5  # half the samples moved by 50 %, outside the 0.2 clip range
    stats = PPO(policy, _ppo_config(clip_param=0.2, lr=1e-6)).update(_storage(policy, ratio))
    assert stats["approx_kl"] == pytest.approx(0.5 * (0.5 - math.log(1.5)), rel=1e-4)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert stats["clip"] == pytest.approx(0.2) and stats["lr"] == pytest.approx(1e-6)


def test_explained_variance_of_known_predictions():
    targets = torch.randn(1000, generator=torch.Generator().manual_seed(0)) + 3.0
    assert explained_variance(torch.zeros(1000), targets) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(targets + 5.0, targets) == pytest.approx(
        1.0, abs=1e-6
    )  # a constant offset is not variance
    assert explained_variance(0.5 * targets, targets) == pytest.approx(0.75, abs=1e-5)
    assert math.isnan(explained_variance(torch.zeros(4), torch.ones(4)))


def test_a_one_transition_rollout_leaves_the_parameters_finite():
    """The unbiased std of one advantage is nan; normalising by it would write nan into every weight."""
    policy = Bandit()
    storage = RolloutStorage(1, 1, {"x": ((1,), "float32")}, (1, 1))
    with torch.no_grad():
        storage.log_probs.copy_(policy.dist((1, 1)).log_prob(storage.actions))
    storage.returns, storage.advantages = torch.full((1, 1), 2.0), torch.full((1, 1), 1.5)
    stats = PPO(policy, _ppo_config(use_normalized_advantage=True, entropy_coef=0.0, lr=1e-2)).update(storage)
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert math.isfinite(stats["policy_loss"]) and math.isfinite(stats["grad_norm"])
    assert policy.dist(()).probs[0].item() > torch.softmax(torch.tensor([2.0, 0.0, 0.0, 0.0]), 0)[0].item()
    assert math.isnan(explained_variance(torch.zeros(1), torch.ones(1)))  # undefined for one sample


# ---------------------------------------------------------------------------- each loss term, by hand
# Adam's first step is nearly the same whatever the gradient's scale, so a dropped coefficient or clip
# would not show in the parameters: these tests check the reported losses and the gradient itself.


def test_gradient_is_clipped_to_max_grad_norm_before_the_step():
    policy = Bandit()
    cfg = _ppo_config(entropy_coef=0.0, use_clipped_value_loss=False, max_grad_norm=0.1, value_loss_coef=0.5)
    ppo = PPO(policy, cfg)
    stats = ppo.update(_storage(policy, torch.ones(4, 2)))
    assert stats["grad_norm"] == pytest.approx(0.5)  # the norm before clipping is reported
    exp_avg = torch.cat([ppo.optimizer.state[p]["exp_avg"].reshape(-1) for p in ppo.parameters])
    assert exp_avg.norm().item() == pytest.approx((1 - 0.9) * 0.1, rel=1e-4)  # Adam saw the clipped gradient


def test_value_loss_takes_the_worse_of_the_clipped_and_unclipped_prediction():
    policy = Bandit()
    with torch.no_grad():
        policy.value.fill_(0.5)  # old values 0 and clip 0.1: the clipped prediction is 0.1
    cfg = _ppo_config(entropy_coef=0.0, clip_param=0.1, lr=1e-6, use_clipped_value_loss=True)
    stats = PPO(policy, cfg).update(_storage(policy, torch.ones(4, 2)))
    assert stats["value_loss"] == pytest.approx(0.5 * max(0.5**2, 0.9**2), rel=1e-4)
    with torch.no_grad():
        policy.value.fill_(-0.5)  # the same below the old value: clipped to -0.1, returns -1
    storage = _storage(policy, torch.ones(4, 2))
    storage.returns = -torch.ones(4, 2)
    stats = PPO(policy, cfg).update(storage)
    assert stats["value_loss"] == pytest.approx(0.5 * max(0.5**2, 0.9**2), rel=1e-4)


def test_policy_loss_is_the_pessimistic_clipped_surrogate():
    policy = Bandit()
    ratio, advantages = torch.ones(4, 2), -torch.ones(4, 2)
    ratio[:2], advantages[:2] = 1.5, 1.0  # half: ratio 1.5 with A = +1 counts as 1.2; half: ratio 1, A = -1
    cfg = _ppo_config(entropy_coef=0.0, clip_param=0.2, lr=1e-6, use_normalized_advantage=False)
    stats = PPO(policy, cfg).update(_storage(policy, ratio, advantages))
    assert stats["policy_loss"] == pytest.approx(-(0.5 * 1.2 - 0.5 * 1.0), rel=1e-4)
    ratio, advantages = torch.full((4, 2), 0.5), -torch.ones(4, 2)  # below 1 - clip with A < 0: counts as 0.8
    stats = PPO(policy, cfg).update(_storage(policy, ratio, advantages))
    assert stats["policy_loss"] == pytest.approx(0.8, rel=1e-4)


def test_normalised_advantages_are_centred_before_the_surrogate():
    policy = Bandit()
    advantages = torch.arange(8.0).view(4, 2) + 10.0  # all positive: uncentred, every action looks good
    cfg = _ppo_config(entropy_coef=0.0, lr=1e-6, use_normalized_advantage=True)
    stats = PPO(policy, cfg).update(_storage(policy, torch.ones(4, 2), advantages))
    assert stats["policy_loss"] == pytest.approx(0.0, abs=1e-4)  # ratio 1: minus the mean advantage


def test_normalised_advantages_have_unit_standard_deviation():
    out = normalized_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(out, torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (math.sqrt(5.0 / 3.0) + 1e-5))


def test_statistics_are_averaged_over_epochs_and_minibatches():
    policy = Bandit()
    ratio = torch.ones(4, 2)
    ratio[:2] = 1.5  # each env's minibatch has 2 of its 4 steps outside the clip range
    cfg = _ppo_config(clip_param=0.2, lr=1e-8, ppo_epoch=3, num_mini_batch=2)
    stats = PPO(policy, cfg).update(_storage(policy, ratio))
    assert stats["clip_fraction"] == pytest.approx(0.5)  # 6 gradient steps of 0.5 each


def test_explained_variance_compares_each_value_with_its_own_return():
    policy = Bandit()
    storage = _storage(policy, torch.ones(4, 2))
    storage.returns = torch.arange(8.0).view(4, 2)
    storage.values[:-1] = storage.returns
    storage.values[-1] = 100.0  # the bootstrap value after the last step predicts no return
    stats = PPO(policy, _ppo_config(lr=1e-8)).update(storage)
    assert stats["explained_variance"] == pytest.approx(1.0)
    storage.values[:-1] = 0.5 * storage.returns  # 1 - Var(R - 0.5 R) / Var(R) = 0.75
    stats = PPO(policy, _ppo_config(lr=1e-8)).update(storage)
    assert stats["explained_variance"] == pytest.approx(0.75, abs=1e-5)


# ---------------------------------------------------------------------------- schedule, optimiser, hooks
def test_the_update_clips_with_the_decayed_clip_range() -> None:
    """Halfway through the schedule clip_param 0.4 has decayed to 0.2: the ratio clip, the value clip and the
    clip fraction must all use 0.2 (with 0.4 the policy loss is -0.15, the value loss 0.18, no sample clipped)."""
    policy = Bandit()
    with torch.no_grad():
        policy.value.fill_(0.5)  # old values 0 and returns 1: clipped to 0.2 under the decayed range
    ratio, advantages = torch.ones(4, 2), -torch.ones(4, 2)
    ratio[:2], advantages[:2] = 1.3, 1.0  # inside 0.4 but outside 0.2: ratio 1.3 with A = +1 counts as 1.2
    cfg = _ppo_config(entropy_coef=0.0, clip_param=0.4, lr=1e-6, use_normalized_advantage=False)
    ppo = PPO(policy, cfg)
    ppo.set_progress(frames=1, total_frames=2)
    stats = ppo.update(_storage(policy, ratio, advantages))
    assert stats["clip"] == pytest.approx(0.2)
    assert stats["policy_loss"] == pytest.approx(-(0.5 * 1.2 - 0.5 * 1.0), rel=1e-4)
    assert stats["value_loss"] == pytest.approx(0.5 * max(0.5**2, 0.8**2), rel=1e-4)
    assert stats["clip_fraction"] == pytest.approx(0.5)


def test_each_gradient_step_uses_its_own_minibatch_gradient_scaled_by_the_value_coefficient() -> None:
    """The gradients are zeroed before every backward pass: accumulated over the 4 steps of 2 epochs x 2
    minibatches, the value gradient would grow 0.5, 1.0, 1.5, 2.0 and its mean norm be 1.25, not 0.5.
    Without value_loss_coef (0.5) each step's norm would be 1.0."""
    policy = Bandit()
    cfg = _ppo_config(entropy_coef=0.0, use_clipped_value_loss=False, max_grad_norm=100.0, value_loss_coef=0.5,
                      lr=1e-8, ppo_epoch=2, num_mini_batch=2)  # fmt: skip
    stats = PPO(policy, cfg).update(_storage(policy, torch.ones(4, 2)))
    assert stats["grad_norm"] == pytest.approx(0.5, rel=1e-4)  # d/dv of 0.5 * coef * (v - 1)^2 at v = 0


def test_the_gradient_hook_runs_before_the_gradient_is_clipped() -> None:
    """DD-PPO all-reduces the gradients in the hook: the averaged gradient is the one clipped and stepped
    with, else each rank would clip its own and the average could exceed max_grad_norm."""
    policy = Bandit()

    def average_with_a_peer(module: nn.Module) -> None:  # a peer rank whose gradient is 3 x this one's
        for p in module.parameters():
            p.grad.mul_(2.0)

    cfg = _ppo_config(entropy_coef=0.0, use_clipped_value_loss=False, max_grad_norm=0.1, value_loss_coef=0.5)
    ppo = PPO(policy, cfg, gradient_hook=average_with_a_peer)
    stats = ppo.update(_storage(policy, torch.ones(4, 2)))
    assert stats["grad_norm"] == pytest.approx(1.0)  # the averaged gradient (2 x 0.5), before clipping
    exp_avg = torch.cat([ppo.optimizer.state[p]["exp_avg"].reshape(-1) for p in ppo.parameters])
    assert exp_avg.norm().item() == pytest.approx((1 - 0.9) * 0.1, rel=1e-4)  # clipped after the hook: 0.1


def test_adam_steps_with_the_configured_epsilon() -> None:
    """Adam's first step is lr * g / (|g| + eps); with ppo.eps = |g| = 0.5 it is half the learning rate
    (with torch's default eps of 1e-8 it would be the whole of it)."""
    policy = Bandit()
    cfg = _ppo_config(entropy_coef=0.0, use_clipped_value_loss=False, max_grad_norm=100.0, value_loss_coef=0.5,
                      lr=0.1, eps=0.5)  # fmt: skip
    PPO(policy, cfg).update(_storage(policy, torch.ones(4, 2)))
    assert policy.value.item() == pytest.approx(0.1 * 0.5 / (0.5 + 0.5), rel=1e-4)  # value gradient -0.5


def test_the_entropy_bonus_is_the_mean_entropy_per_step() -> None:
    """The bonus is entropy_coef times the mean entropy over the steps, not their sum (8 x here): checked
    against the analytic gradient of -c H(softmax(z)), c p_i (log p_i + H)."""
    policy = Bandit()
    p = torch.softmax(torch.tensor([2.0, 0.0, 0.0, 0.0]), 0)
    entropy = -(p * p.log()).sum()
    expected_grad = 0.5 * p * (p.log() + entropy)
    cfg = _ppo_config(entropy_coef=0.5, value_loss_coef=0.0, use_clipped_value_loss=False, max_grad_norm=100.0,
                      lr=1e-8)  # fmt: skip
    stats = PPO(policy, cfg).update(_storage(policy, torch.ones(4, 2)))  # zero advantages: no policy gradient
    assert stats["entropy"] == pytest.approx(entropy.item(), rel=1e-5)
    assert stats["grad_norm"] == pytest.approx(expected_grad.norm().item(), rel=1e-4)


# ---------------------------------------------------------------------------- logged statistics, edge cases
def test_the_logged_lr_is_the_decayed_one_adam_steps_with() -> None:
    """A quarter into the schedule the lr is 3/4 of ppo.lr: Adam's first step (lr * g / (|g| + eps), about
    lr) moves the value by it, and the logged lr says so."""
    policy = Bandit()
    cfg = _ppo_config(entropy_coef=0.0, use_clipped_value_loss=False, max_grad_norm=100.0, lr=0.1, eps=1e-8)
    ppo = PPO(policy, cfg)
    ppo.set_progress(frames=1, total_frames=4)
    stats = ppo.update(_storage(policy, torch.ones(4, 2)))  # returns 1 pull the value up from 0
    assert stats["lr"] == pytest.approx(0.075)
    assert policy.value.item() == pytest.approx(0.075, rel=1e-4)


def test_clip_fraction_counts_ratios_below_one_minus_clip_too() -> None:
    """A ratio of 0.5 is as far outside the 0.2 clip range as one of 1.5: both count as clipped."""
    policy = Bandit()
    ratio = torch.ones(4, 2)
    ratio[:2] = 0.5  # half the samples halved in probability
    stats = PPO(policy, _ppo_config(clip_param=0.2, lr=1e-6)).update(_storage(policy, ratio))
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert stats["approx_kl"] == pytest.approx(0.5 * (-0.5 - math.log(0.5)), rel=1e-4)


def test_explained_variance_is_nan_for_constant_returns_whatever_the_predictions() -> None:
    """Constant returns leave the statistic undefined: nan, not -inf from dividing by a zero variance."""
    assert math.isnan(explained_variance(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.ones(4)))


def test_two_advantages_are_normalised_too() -> None:
    """Only a single advantage (std undefined) is left as it is: two are centred and scaled to -1/√2, 1/√2."""
    out = normalized_advantages(torch.tensor([1.0, 3.0]))
    std = math.sqrt(2.0)  # unbiased std of 1 and 3
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0]) / (std + 1e-5))


def test_a_non_finite_gradient_stops_the_update_before_it_reaches_the_weights() -> None:
    """A nan return (a damaged observation upstream) would make every weight nan, and every later checkpoint."""
    policy = Bandit()
    storage = _storage(policy, torch.ones(4, 2))
    storage.returns[2, 1] = float("nan")
    ppo = PPO(policy, _ppo_config(lr=1e-2, use_normalized_advantage=False))
    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(FloatingPointError, match=r"PPO gradient norm is nan .*training stops before this step"):
        ppo.update(storage)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert not ppo.optimizer.state  # Adam's moments untouched too
