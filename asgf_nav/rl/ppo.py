"""PPO update (clipped surrogate, clipped value loss, entropy bonus) with linear lr / clip decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from asgf_nav.config import PPOConfig
from asgf_nav.rl.rollout import RolloutStorage

GradientHook = Callable[[nn.Module], None]


def explained_variance(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """1 - Var(target - prediction) / Var(target); nan when the targets are constant or fewer than two.
    Under DD-PPO (``mean_over_ranks``) over every rank's rollout together (they are of one size)."""
    if mean_over_ranks is not None:
        errors = (targets - predictions).double()
        moments = torch.stack(
            [targets.double().mean(), targets.double().pow(2).mean(), errors.mean(), errors.pow(2).mean()]
        )
        target_mean, target_square, error_mean, error_square = mean_over_ranks(moments).tolist()
        target_var, error_var = target_square - target_mean**2, error_square - error_mean**2
        return float("nan") if target_var <= 0 else 1.0 - error_var / target_var
    if targets.numel() < 2:  # the unbiased variance of one sample is undefined (and torch warns)
        return float("nan")
    target_var = targets.var()
    if target_var.item() == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_var)


def normalized_advantages(
    advantages: torch.Tensor, mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Advantages shifted to mean 0 and scaled to std 1 over the rollout.

    A rollout of one transition is returned as it is: the unbiased std of one sample is nan, and a nan
    advantage would write nan into every weight on the first optimiser step. Under DD-PPO
    (``mean_over_ranks``) the mean and variance are those of every rank's rollout together, as
    habitat-baselines' ``distributed_mean_and_var`` computes them (the ranks' rollouts are of one size).
    """
    if mean_over_ranks is not None:
        mean = mean_over_ranks(advantages.mean())
        variance = mean_over_ranks((advantages - mean).pow(2).mean())
        return (advantages - mean) / (variance.sqrt() + 1e-5)
    if advantages.numel() < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + 1e-5)


class PPO:
    """One optimiser and the schedule state; ``update(storage)`` runs ppo_epoch passes over the rollout.

    ``gradient_hook`` runs after every backward pass and before clipping: DD-PPO passes the gradient
    all-reduce there so that every rank clips and steps with the same averaged gradient. DD-PPO also
    passes ``mean_over_ranks``, so that advantages are normalised over every rank's rollout.
    """

    def __init__(
        self,
        policy: nn.Module,
        ppo_cfg: PPOConfig,
        gradient_hook: GradientHook | None = None,
        mean_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.policy, self.cfg, self.gradient_hook = policy, ppo_cfg, gradient_hook
        self.mean_over_ranks = mean_over_ranks
        self.parameters = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.parameters, lr=ppo_cfg.lr, eps=ppo_cfg.eps)
        self.lr, self.clip = float(ppo_cfg.lr), float(ppo_cfg.clip_param)

    def set_progress(self, frames: int, total_frames: int) -> None:
        """Linear decay of lr and clip range from their configured values towards 0 at ``total_frames``. By
        frames, not updates (as habitat-lab's DD-PPO), so that a resume on another number of DD-PPO ranks,
        which changes the frames per update, continues the decay where it was."""
        remaining = max(0.0, 1.0 - frames / max(total_frames, 1))
        self.lr = self.cfg.lr * (remaining if self.cfg.use_linear_lr_decay else 1.0)
        self.clip = self.cfg.clip_param * (remaining if self.cfg.use_linear_clip_decay else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def update(self, storage: RolloutStorage) -> dict[str, float]:
        """One PPO update: ``ppo_epoch`` passes over ``num_mini_batch`` recurrent minibatches. Returns the
        means over those gradient steps of policy_loss, value_loss (before ``value_loss_coef``), entropy,
        approx_kl (``(r - 1) - log r``), clip_fraction and grad_norm (before clipping, after the DD-PPO
        all-reduce); the explained variance of the rollout's values (before the update) against its
        returns; and the lr and clip it used. Under DD-PPO the means and the explained variance are over
        every rank's minibatches and rollout, so every rank returns the same figures.

        The first gradient step of an update sees the rollout's own policy (r = 1), so approx_kl and
        clip_fraction count it as 0: they measure the average drift over the update, not the final
        policy's distance from the rollout's. The value loss is clipped with the same (decaying) clip."""
        cfg, clip = self.cfg, self.clip
        advantages = storage.advantages
        if cfg.use_normalized_advantage:
            advantages = normalized_advantages(advantages, self.mean_over_ranks)
        totals: dict[str, torch.Tensor] = {}
        gradient_steps = 0
        for _ in range(cfg.ppo_epoch):
            for batch in storage.recurrent_minibatches(advantages, cfg.num_mini_batch):
                values, log_probs, entropy, _ = self.policy.evaluate_actions(
                    batch.obs, batch.hidden, batch.masks, batch.actions
                )
                log_ratio = log_probs - batch.old_log_probs
                ratio = log_ratio.exp()
                surrogate = ratio * batch.advantages
                clipped_surrogate = ratio.clamp(1.0 - clip, 1.0 + clip) * batch.advantages
                policy_loss = -torch.min(surrogate, clipped_surrogate).mean()
                if cfg.use_clipped_value_loss:
                    clipped_values = batch.old_values + (values - batch.old_values).clamp(-clip, clip)
                    value_loss = (
                        0.5 * torch.max((values - batch.returns).pow(2), (clipped_values - batch.returns).pow(2)).mean()
                    )
                else:
                    value_loss = 0.5 * (values - batch.returns).pow(2).mean()
                entropy_mean = entropy.mean()
                loss = policy_loss + cfg.value_loss_coef * value_loss - cfg.entropy_coef * entropy_mean

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.gradient_hook is not None:
                    self.gradient_hook(self.policy)
                grad_norm = nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
                if not torch.isfinite(grad_norm):  # a step would write nan into the weights and every later checkpoint
                    raise FloatingPointError(
                        f"PPO gradient norm is {float(grad_norm)} (loss {float(loss.detach())}): training stops before "
                        "this step reaches the weights (the last checkpoint holds them from before this update); look "
                        "for nan in the observations, or lower ppo.lr"
                    )
                self.optimizer.step()

                with torch.no_grad():
                    step_stats = {
                        "policy_loss": policy_loss.detach(),
                        "value_loss": value_loss.detach(),
                        "entropy": entropy_mean.detach(),
                        "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
                        "clip_fraction": ((ratio - 1.0).abs() > clip).float().mean(),
                        "grad_norm": grad_norm.detach(),
                    }
                for key, value in step_stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                gradient_steps += 1
        means = torch.stack([value / gradient_steps for value in totals.values()])
        if self.mean_over_ranks is not None:  # every rank's minibatches (grad_norm is already the same on each)
            means = self.mean_over_ranks(means)
        stats = dict(zip(totals, means.tolist(), strict=True))
        stats["explained_variance"] = explained_variance(storage.values[:-1], storage.returns, self.mean_over_ranks)
        stats["lr"], stats["clip"] = self.lr, clip
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "lr": self.lr, "clip": self.clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr, self.clip = float(state["lr"]), float(state["clip"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
