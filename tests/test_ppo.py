"""PPO / DD-PPO machinery: GAE, minibatches, learning on a toy env, distributed sync, exact resume."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gymnasium import spaces

from asgf_nav.config import ExperimentConfig
from asgf_nav.eval.training_log import read_training_log
from asgf_nav.rl.checkpoint import (
    BEST_CHECKPOINT,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_best_checkpoint,
    save_checkpoint,
)
from asgf_nav.rl.ppo import PPO
from asgf_nav.rl.resume import schedule_change
from asgf_nav.rl.rollout import RolloutStorage, compute_gae
from asgf_nav.rl.trainer import Trainer

TURN_LEFT, TURN_RIGHT = 2, 3


class ToySoundSideEnv:
    """Test double following the batched env contract.

    Each step the sound is louder in the left or the right ear (chosen afresh, so no memory is needed);
    turning towards it pays 1. Episodes last ``episode_length`` steps; info reports the fraction of
    correct turns as SPL, and success when every turn was correct.
    """

    def __init__(self, num_envs: int, seed: int, episode_length: int = 5, frames: int = 26) -> None:
        self.num_envs, self.episode_length, self.frames = num_envs, episode_length, frames
        self.generator = torch.Generator().manual_seed(seed)
        box = spaces.Box(0.0, 50.0, (65, frames, 2), np.float32)
        self.observation_space = spaces.Dict({"spectrogram": box})
        self.side = torch.zeros(num_envs, dtype=torch.long)
        self.steps = torch.zeros(num_envs, dtype=torch.long)
        self.correct = torch.zeros(num_envs, dtype=torch.long)

    def observe(self) -> dict[str, torch.Tensor]:
        spectrogram = torch.rand(self.num_envs, 65, self.frames, 2, generator=self.generator) * 0.3
        loud = torch.nn.functional.one_hot(self.side, 2).float().view(self.num_envs, 1, 1, 2)
        return {"spectrogram": spectrogram + 1.5 * loud}

    def draw_sides(self) -> None:
        self.side = torch.randint(0, 2, (self.num_envs,), generator=self.generator)

    def reset(self) -> dict[str, torch.Tensor]:
        self.steps.zero_()
        self.correct.zero_()
        self.draw_sides()
        return self.observe()

    def step(self, actions: torch.Tensor):
        hit = actions.cpu() == (TURN_LEFT + self.side)
        self.correct += hit.long()
        self.steps += 1
        done = self.steps >= self.episode_length
        fraction = self.correct.float() / self.steps.float()
        info = {
            "success": (self.correct == self.steps).float(),
            "spl": fraction,
            "softspl": fraction,
            "sna": fraction,
            "distance_to_goal": (self.steps - self.correct).float(),
            "num_actions": self.steps.float(),
        }
        self.steps[done] = 0
        self.correct[done] = 0
        self.draw_sides()
        return self.observe(), hit.float(), done, info

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "generator": self.generator.get_state(),
            "side": self.side.clone(),
            "steps": self.steps.clone(),
            "correct": self.correct.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.side, self.steps = state["side"].clone(), state["steps"].clone()
        self.correct = state["correct"].clone()


def toy_env_factory(cfg: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
    seed = cfg.train.seed * 1000 + rank * 10 + (1 if split == "val" else 0)
    return ToySoundSideEnv(cfg.ppo.num_envs, seed)


pytestmark = pytest.mark.usefixtures("single_thread")


def small_cfg(
    policy: str = "av_nav", updates: int = 4, num_envs: int = 4, num_steps: int = 8, small_model: bool = True
) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.policy = policy
    if small_model:
        cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim, cfg.model.fusion_heads = 64, 64, 32, 2
    cfg.ppo.num_envs, cfg.ppo.num_steps = num_envs, num_steps
    cfg.ppo.ppo_epoch, cfg.ppo.num_mini_batch = 2, 2
    cfg.ppo.total_frames = updates * num_envs * num_steps
    cfg.train.device = "cpu"
    cfg.train.val_interval = 0
    cfg.train.checkpoint_interval = 3
    cfg.train.keep_checkpoints = 2
    cfg.task.max_steps = 5
    return cfg


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    masks = torch.tensor([[1.0], [1.0], [0.0], [1.0]])  # the episode ends after step 1
    advantages, returns = compute_gae(rewards, values, masks, gamma=0.9, gae_lambda=0.8)
    # t=2: 3 + 0.9*2.0 - 1.5 = 3.3; t=1: no bootstrap, 2 - 1.0 = 1.0; t=0: (1 + 0.9 - 0.5) + 0.72 * 1.0 = 2.12
    torch.testing.assert_close(advantages, torch.tensor([[2.12], [1.0], [3.3]]))
    torch.testing.assert_close(returns, torch.tensor([[2.62], [2.0], [4.8]]))


def test_recurrent_minibatches_cover_each_env_once() -> None:
    steps, envs = 5, 6
    storage = RolloutStorage(steps, envs, {"x": ((3,), np.float32)}, (1, 4))
    storage.obs["x"].copy_(torch.arange(envs).float().view(1, envs, 1).expand(steps + 1, envs, 3))
    storage.hidden.copy_(torch.arange(envs).float().view(1, envs, 1).expand(1, envs, 4))
    storage.actions.copy_(torch.arange(envs).expand(steps, envs))
    advantages = torch.arange(envs).float().expand(steps, envs)
    for _ in range(3):  # epochs
        seen = []
        for batch in storage.recurrent_minibatches(advantages, num_mini_batch=3):
            assert batch.obs["x"].shape == (steps, 2, 3) and batch.masks.shape == (steps, 2)
            ids = batch.env_indices
            assert (batch.obs["x"][:, :, 0] == ids.float()).all() and (batch.actions == ids).all()
            assert (batch.hidden[0, :, 0] == ids.float()).all() and (batch.advantages == ids.float()).all()
            seen += ids.tolist()
        assert sorted(seen) == list(range(envs))
    with pytest.raises(ValueError, match="num_mini_batch"):
        next(storage.recurrent_minibatches(advantages, num_mini_batch=7))
    # as many gradient steps as configured when the envs do not divide evenly (torch.chunk gives 3 of 2)
    sizes = [len(b.env_indices) for b in storage.recurrent_minibatches(advantages, num_mini_batch=4)]
    assert sizes == [2, 2, 1, 1]


def test_linear_lr_and_clip_decay() -> None:
    cfg = small_cfg()
    ppo = PPO(torch.nn.Linear(2, 2), cfg.ppo)
    ppo.set_progress(frames=3, total_frames=4)
    assert ppo.lr == pytest.approx(cfg.ppo.lr / 4) and ppo.clip == pytest.approx(cfg.ppo.clip_param / 4)
    assert ppo.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.ppo.lr / 4)
    for lr_decay, clip_decay in [(False, True), (True, False)]:  # each follows its own switch
        cfg.ppo.use_linear_lr_decay, cfg.ppo.use_linear_clip_decay = lr_decay, clip_decay
        ppo = PPO(torch.nn.Linear(2, 2), cfg.ppo)
        ppo.set_progress(frames=3, total_frames=4)
        assert ppo.lr == pytest.approx(cfg.ppo.lr / 4 if lr_decay else cfg.ppo.lr)
        assert ppo.clip == pytest.approx(cfg.ppo.clip_param / 4 if clip_decay else cfg.ppo.clip_param)


def assert_minibatches_replay_the_rollout(trainer: Trainer) -> None:
    """Before any optimiser step each minibatch, re-run from its stored GRU state with its stored masks,
    gives back the log-probabilities and values the rollout acted with (ratio 1)."""
    storage = trainer.storage
    assert (storage.masks[1:] == 0).any()  # episode ends inside the rollout: the GRU resets mid-sequence
    with torch.no_grad():
        for batch in storage.recurrent_minibatches(storage.advantages, 2):
            values, log_probs, _, _ = trainer.policy.evaluate_actions(
                batch.obs, batch.hidden, batch.masks, batch.actions
            )
            torch.testing.assert_close(log_probs, batch.old_log_probs, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(values, batch.old_values, atol=1e-5, rtol=1e-5)


def test_update_replays_the_recurrent_rollout_and_the_next_one_continues_it(tmp_path: Path) -> None:
    cfg = small_cfg("av_nav", updates=3, num_envs=4, num_steps=12)  # toy episodes end after steps 5 and 10
    first = Trainer(cfg, toy_env_factory, tmp_path / "first")
    first.collect_rollout()
    assert_minibatches_replay_the_rollout(first)  # the first rollout starts from a reset
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    trainer.train(max_updates=1)
    # the second rollout starts from the GRU state and the mask the first one ended with, not from a reset
    carried = trainer.next_rollout_hidden
    assert carried.abs().sum() > 0 and torch.equal(trainer.storage.hidden, carried)
    assert torch.equal(trainer.storage.masks[0], trainer.storage.masks[-1]) and (trainer.storage.masks[0] == 1).all()
    trainer.collect_rollout()
    assert_minibatches_replay_the_rollout(trainer)


def test_logged_episode_return_sums_over_that_episode_only(tmp_path: Path) -> None:
    trainer = Trainer(small_cfg("av_nav", num_envs=4, num_steps=16), toy_env_factory, tmp_path / "run")
    trainer.collect_rollout()  # three 5-step episodes per env end inside the rollout
    episodes = list(trainer.window.episodes)
    assert len(episodes) == 12
    for episode in episodes:  # the toy env pays 1 per correct turn and reports SPL = correct turns / 5
        assert episode["return"] == pytest.approx(episode["spl"] * 5, abs=1e-5)


def test_the_episode_window_keeps_only_the_last_stats_window_episodes(tmp_path: Path) -> None:
    """The logged episode metrics follow the policy: they average the last ``train.stats_window_episodes``
    finished episodes, not every episode since the run began."""
    trainers = {}
    for size in (5, 100):
        cfg = small_cfg("av_nav", num_envs=4, num_steps=16)
        cfg.train.stats_window_episodes = size
        trainers[size] = Trainer(cfg, toy_env_factory, tmp_path / f"run{size}")
        trainers[size].collect_rollout()  # 12 episodes end, the same ones in both runs
    every, last = list(trainers[100].window.episodes), list(trainers[5].window.episodes)
    assert len(every) == 12 and last == every[-5:]
    assert trainers[5].window.means()["spl"] == pytest.approx(np.mean([e["spl"] for e in every[-5:]]))
    assert len({e["spl"] for e in every}) > 1  # the two means differ only if the episodes do


def test_ppo_learns_sound_side(tmp_path: Path) -> None:
    """From chance (1/4 correct turns) to nearly always turning towards the louder ear within ~3k frames.

    Seeds 0-9 reach val SPL 0.91-1.00 and train SPL 0.90-1.00 here (1 and 2 threads), so another CPU's
    rounding cannot tip it; after 12 updates they spread over 0.55-0.91."""
    cfg = small_cfg("av_nav", updates=24, num_envs=8, num_steps=16, small_model=False)
    cfg.ppo.ppo_epoch, cfg.ppo.lr, cfg.ppo.entropy_coef = 4, 1e-3, 0.01
    cfg.ppo.use_linear_lr_decay = False
    cfg.train.checkpoint_interval, cfg.train.val_interval, cfg.train.val_episodes = 100, 24, 40
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    stats = trainer.train()
    expected = {
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_fraction",
        "explained_variance",
        "grad_norm",
        "lr",
        "clip",
        "fps",
    }
    assert expected <= set(stats)
    validation = trainer.validate()
    assert validation["episodes"] >= 40
    assert validation["spl"] > 0.8, validation  # chance: 0.25
    assert stats["episode/spl"] > 0.7, stats
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "config.yaml").is_file()
    # the one validation during training (update 24) made best.pt; validating again reproduces it
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT)
    assert best["update"] == 24 and best["best_validation"]["spl"] == pytest.approx(validation["spl"])
    assert best["validation_pending"] is False  # a run started from best.pt must not validate it again


class LongFailuresEnv(ToySoundSideEnv):
    """Env 0's episodes last 12 steps and fail; the others' last 2 and succeed."""

    def step(self, actions: torch.Tensor):
        obs, reward, _, info = super().step(actions)
        self.age = getattr(self, "age", torch.zeros(self.num_envs, dtype=torch.long)) + 1
        length = torch.full((self.num_envs,), 2)
        length[0] = 12
        done = self.age >= length
        self.age[done] = 0
        short = (length == 2).float()
        info = {**info, "success": short, "spl": short, "num_actions": length.float()}
        return obs, reward, done, info


def test_validation_counts_the_same_episodes_per_env_so_long_ones_are_not_dropped(tmp_path: Path) -> None:
    cfg = small_cfg("av_nav", updates=1)
    cfg.train.val_episodes, cfg.task.max_steps = 8, 12  # 4 envs: the first 2 episodes of each
    trainer = Trainer(cfg, lambda c, split, rank: LongFailuresEnv(c.ppo.num_envs, seed=0), tmp_path / "run")
    validation = trainer.validate()
    # the first 8 episodes to finish would all be short successes (SPL 1); per env, 2 of the 8 are failures
    assert validation["episodes"] == 8
    assert validation["spl"] == pytest.approx(0.75) and validation["num_actions"] == pytest.approx(4.5)


def scripted_validations(
    monkeypatch: pytest.MonkeyPatch, spls: list[float], scenes: list[float] | None = None
) -> list[dict[str, torch.Tensor]]:
    """Make Trainer.validate return the given SPLs (on the given numbers of val scenes) in turn; returns the
    policy weights seen at each call."""
    seen: list[dict[str, torch.Tensor]] = []
    values = iter(zip(spls, scenes or [None] * len(spls)))

    def validate(self: Trainer) -> dict[str, float]:
        seen.append({k: v.clone() for k, v in self.policy.state_dict().items()})
        spl, count = next(values)
        return {"spl": spl, "success": spl, "sna": spl, "episodes": 10.0} | ({} if count is None else {"scenes": count})

    monkeypatch.setattr(Trainer, "validate", validate)
    return seen


def test_best_validated_checkpoint_is_kept_across_pruning_and_resume(tmp_path: Path, monkeypatch) -> None:
    cfg = small_cfg("av_nav", updates=6)
    cfg.train.val_interval, cfg.train.keep_checkpoints, cfg.train.checkpoint_interval = 1, 1, 1
    run = tmp_path / "run"
    best_path = run / "checkpoints" / BEST_CHECKPOINT
    seen = scripted_validations(monkeypatch, [0.2, 0.5, 0.3, 0.5])
    Trainer(cfg, toy_env_factory, run).train(max_updates=4)
    best = load_checkpoint(best_path)
    # update 2 had the best SPL; the tie at update 4 keeps the earlier one; pruning left only update 4
    assert best["update"] == 2 and best["best_validation"]["spl"] == 0.5 and best["best_validation"]["update"] == 2
    assert all(torch.equal(v, seen[1][k]) for k, v in best["model"].items())
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_000004.pt"] and load_latest(run)["update"] == 4
    # a resumed run remembers the best so far: 0.4 at update 5 does not replace it, 0.6 at update 6 does
    seen = scripted_validations(monkeypatch, [0.4, 0.6])
    resumed = Trainer(cfg, toy_env_factory, run, resume=True)
    resumed.train(max_updates=5)
    assert load_checkpoint(best_path)["update"] == 2
    resumed.train()
    best = load_checkpoint(best_path)
    assert best["update"] == 6 and best["best_validation"]["spl"] == 0.6
    assert all(torch.equal(v, seen[1][k]) for k, v in best["model"].items())
    # train.best_metric=none keeps none
    cfg.train.best_metric = "none"
    scripted_validations(monkeypatch, [0.9])
    Trainer(cfg, toy_env_factory, tmp_path / "none").train(max_updates=1)
    assert not (tmp_path / "none" / "checkpoints" / BEST_CHECKPOINT).exists()


def test_resume_keeps_a_best_pt_newer_than_its_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Validation every update, checkpoints every 2: a run killed after update 3's validation leaves a best.pt
    that its newest checkpoint (update 2) does not know of; the resumed run must not replace it by worse."""
    cfg = small_cfg("av_nav", updates=5)
    cfg.train.val_interval, cfg.train.checkpoint_interval, cfg.train.keep_checkpoints = 1, 2, 5
    run = tmp_path / "run"
    best_path = run / "checkpoints" / BEST_CHECKPOINT
    scripted_validations(monkeypatch, [0.2, 0.5, 0.9])
    Trainer(cfg, toy_env_factory, run).train(max_updates=3)
    (run / "checkpoints" / "ckpt_000003.pt").unlink()  # killed before update 3's checkpoint
    assert load_checkpoint(best_path)["update"] == 3
    scripted_validations(monkeypatch, [0.6, 0.95])
    resumed = Trainer(cfg, toy_env_factory, run, resume=True)
    assert resumed.updates_done == 2 and resumed.best_validation["spl"] == 0.9
    resumed.train(max_updates=3)
    assert load_checkpoint(best_path)["best_validation"]["update"] == 3  # 0.6 does not replace 0.9
    resumed.train(max_updates=4)
    assert load_checkpoint(best_path)["best_validation"] == resumed.best_validation
    assert resumed.best_validation["spl"] == 0.95 and resumed.best_validation["update"] == 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.pop("rollout"),
        lambda s: s.__setitem__("rng", {}),
        lambda s: s["optimizer"]["optimizer"].pop("param_groups"),
    ],
    ids=["no rollout", "empty rng", "optimizer without param_groups"],
)
def test_a_checkpoint_with_a_damaged_inner_entry_is_refused_naming_where(tmp_path: Path, damage) -> None:
    """The loader checks the top-level entries; a resume reads nested ones too, and names the file's
    directory rather than failing with a bare KeyError (in checkpoints written before state digests were
    recorded)."""
    cfg = small_cfg("av_nav", updates=2)
    run = tmp_path / "run"
    Trainer(cfg, toy_env_factory, run).train(max_updates=1)
    path = run / "checkpoints" / "ckpt_000001.pt"
    state = torch.load(path, weights_only=False)
    damage(state)
    state.pop("state_digests")  # as a checkpoint written before they were recorded: the digests would catch it
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"the newest checkpoint in {run / 'checkpoints'} cannot be resumed"):
        Trainer(cfg, toy_env_factory, run, resume=True)


def test_best_pt_is_chosen_afresh_when_the_val_split_grows(tmp_path: Path, monkeypatch) -> None:
    """Val scenes bake in the background: a validation on one scene is not comparable with one on all four."""
    cfg = small_cfg("av_nav", updates=4)
    cfg.train.val_interval = 1
    scripted_validations(monkeypatch, [0.9, 0.4, 0.3, 0.5], scenes=[1.0, 4.0, 4.0, 4.0])
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    trainer.train(max_updates=2)
    assert trainer.best_validation["update"] == 2 and trainer.best_validation["spl"] == 0.4
    trainer.train()
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT)
    assert best["update"] == 4 and best["best_validation"]["spl"] == 0.5


def test_tensorboard_keeps_the_history_of_a_resumed_run(tmp_path: Path) -> None:
    """Scalars are logged at frame counts; a resume hides only what was logged after its checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_cfg("av_nav", updates=4)
    cfg.train.checkpoint_interval, cfg.train.keep_checkpoints = 1, 5
    run, frames = tmp_path / "run", cfg.ppo.num_envs * cfg.ppo.num_steps
    Trainer(cfg, toy_env_factory, run).train(max_updates=3)
    (run / "checkpoints" / "ckpt_000003.pt").unlink()  # killed after logging update 3, before saving it
    Trainer(cfg, toy_env_factory, run, resume=True).train()
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/value_loss")] == [frames * k for k in (1, 2, 3, 4)]
    # scripts/plot_training.py's reader sees the same run, and where it was resumed
    log = read_training_log(run)
    steps, values = log.series("value_loss")
    assert steps.tolist() == [frames * k for k in (1, 2, 3, 4)]
    assert values.tolist() == [e.value for e in events.Scalars("train/value_loss")]
    assert log.resumed_at == [2 * frames]  # the checkpoint it resumed from


def test_tensorboard_hides_a_dead_runs_curves_from_a_fresh_run_in_its_directory(tmp_path: Path) -> None:
    """A run killed before its first checkpoint leaves only TensorBoard events; a new run there starts at frame
    0 and must not show the dead run's points among its own."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_cfg("av_nav", updates=3)
    run, frames = tmp_path / "run", cfg.ppo.num_envs * cfg.ppo.num_steps
    Trainer(cfg, toy_env_factory, run).train()
    for path in (run / "checkpoints").iterdir():  # killed before any checkpoint was written
        path.unlink()
    fresh = small_cfg("av_nav", updates=2)
    fresh.train.seed = 5
    Trainer(fresh, toy_env_factory, run).train()
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/value_loss")] == [frames, 2 * frames]
    log = read_training_log(run)  # a fresh start, not a resume
    assert log.series("train/value_loss")[0].tolist() == [frames, 2 * frames] and log.resumed_at == []


def test_a_run_removes_the_temporaries_of_checkpoint_saves_that_were_killed(tmp_path: Path) -> None:
    """A save killed outright (SIGKILL, the OOM killer) leaves a temporary as large as a checkpoint; the next
    run in the directory, fresh or resumed, removes it, and no other file."""
    cfg = small_cfg("av_nav", updates=2)
    cfg.train.checkpoint_interval = 1
    stale = [".ckpt_000002.pt.1a2b3c4d.tmp", f".{BEST_CHECKPOINT}.0f9e8d7c.tmp"]
    kept = [".ckpt_000002.pt.notahex0.tmp", ".notes.txt.1a2b3c4d.tmp", "ckpt_000002.pt.1a2b3c4d.tmp", "notes.txt"]
    for run, resume in ((tmp_path / "fresh", False), (tmp_path / "resumed", True)):
        if resume:
            Trainer(cfg, toy_env_factory, run).train(max_updates=1)
        directory = run / "checkpoints"
        directory.mkdir(parents=True, exist_ok=True)
        for name in stale + kept:
            (directory / name).write_bytes(b"partial")
        trainer = Trainer(cfg, toy_env_factory, run, resume=resume)
        assert trainer.updates_done == (1 if resume else 0)
        assert not any((directory / name).exists() for name in stale), sorted(p.name for p in directory.iterdir())
        assert all((directory / name).read_bytes() == b"partial" for name in kept), run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(tmp_path: Path) -> None:
    """The checkpoint's RNG states must reach torch as CPU tensors, whatever device the policy runs on."""
    cfg = small_cfg("asgf", updates=3)
    cfg.train.device = "cuda"
    Trainer(cfg, toy_env_factory, tmp_path / "run").train(max_updates=2)
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "run", resume=True)
    assert resumed.updates_done == 2 and next(resumed.policy.parameters()).is_cuda
    resumed.train()
    assert resumed.updates_done == 3


@pytest.mark.parametrize("doa_cache_size", [1000, 12])  # 12: the DoA cache evicts as a long run's does
def test_validation_leaves_training_bit_identical_on_the_batched_env(
    tmp_path: Path, monkeypatch, doa_cache_size: int
) -> None:
    """Validation shares the process with training: the DoA head, the torch and numpy generators and the
    allocator. The batched env recomputes an evicted observation in whatever batch it misses in, and a
    batch's float results depend on its composition, so any contact would show in the weights (validation
    states that evicted training ones from a shared DoA cache did, by 6e-8 within 3 updates)."""
    from asgf_nav.config import TaskConfig
    from asgf_nav.models.doa.checkpoint import save_checkpoint
    from asgf_nav.models.doa.config import DoaTrainConfig
    from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet, StftConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))  # the test's "doa" stays here
    head_cfg = DoaNetConfig(
        band_widths=(32, 64),
        patch_dim=32,
        model_dim=32,
        stft=StftConfig(sample_rate=16000, n_fft=256, hop=256, num_bins=128),
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "head.pt", "selective", SelectiveDoaNet(head_cfg), None, 0, DoaTrainConfig(), {})
    task = TaskConfig(max_steps=10, sensors=["spectrogram", "doa"], train_episodes_per_scene=12, use_doa=True)
    worlds = {"train": synthetic_world([grid_scene("grid_a")]), "val": synthetic_world([grid_scene("grid_b")])}
    episodes = {split: generate_split(world, split, "heard", ["telephone", "alarm_synth"], task)
                for split, world in worlds.items()}  # fmt: skip

    def factory(cfg: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        # a spectrogram cache of 6 for 4 envs evicts all the time, so observations are recomputed
        return BatchedAudioNavEnv(
            worlds[split],
            episodes[split],
            cfg.ppo.num_envs,
            cfg=cfg.task,
            seed=cfg.train.seed,
            cache_size=6,
            sampler_mode="shuffle" if split == "train" else "sequential",
        )

    weights = []
    for val_interval in (0, 1):
        register_doa_observation(tmp_path / "head.pt", cache_size=doa_cache_size)  # a fresh head per run
        cfg = small_cfg("asgf", updates=3)
        cfg.task, cfg.train.val_interval, cfg.train.val_episodes = task, val_interval, 4
        trainer = Trainer(cfg, factory, tmp_path / f"val_{val_interval}")
        trainer.train()
        weights.append(trainer.policy.state_dict())
    assert trainer.best_validation is not None  # the second run did validate
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), f"validation changed training: {key}"


def test_kill_and_resume_gives_identical_parameters(tmp_path: Path) -> None:
    cfg = small_cfg("asgf", updates=4)
    uninterrupted = Trainer(cfg, toy_env_factory, tmp_path / "full")
    uninterrupted.train()
    partial = Trainer(cfg, toy_env_factory, tmp_path / "resumed")
    partial.train(max_updates=2)  # stops (as if killed) after a checkpoint at update 2
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["ckpt_000002.pt"]
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "resumed", resume=True)
    assert resumed.updates_done == 2 and resumed.frames == 2 * cfg.ppo.num_envs * cfg.ppo.num_steps
    resumed.train()
    assert resumed.updates_done == 4
    full_state, resumed_state = uninterrupted.policy.state_dict(), resumed.policy.state_dict()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), f"parameter {key} differs after resume"
    # the logged episode statistics too: returns of episodes that span the resume, and the window's episodes
    assert torch.equal(uninterrupted.episode_returns, resumed.episode_returns)
    assert list(uninterrupted.window.episodes) == list(resumed.window.episodes)
    # checkpoints at 2, 3 (interval) and 4 (end); only the newest 2 are kept
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["ckpt_000003.pt", "ckpt_000004.pt"]


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoints" / "ckpt_000007.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="ckpt_000007.pt") as only:
        load_latest(tmp_path)
    assert "also has" not in str(only.value)
    (bad.parent / "ckpt_000005.pt").write_bytes(b"")  # an older one: the message says how to fall back to it
    with pytest.raises(CheckpointError, match="the run also has ckpt_000005.pt: move the broken file aside"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "empty") is None


def test_damage_inside_the_weights_is_caught_by_their_digest(tmp_path: Path) -> None:
    """A flipped bit in a weight still unpickles; the digest saved with the weights catches it. A checkpoint
    written before digests were recorded loads as before."""
    state = {"model": {"w": torch.arange(4.0)}, "optimizer": {}, "update": 3, "frames": 0, "rng": {}, "config": {}}
    path = save_checkpoint(tmp_path, state, keep=0)
    assert load_checkpoint(path)["model"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    on_disk = torch.load(path, weights_only=False)
    on_disk["model"]["w"][2] = 2.5  # the file's bytes changed under the digest
    torch.save(on_disk, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is damaged: its weights no longer match"):
        load_checkpoint(path)
    del on_disk["weights_digest"]
    torch.save(on_disk, path)
    assert load_checkpoint(path)["model"]["w"][2] == 2.5


def test_damage_inside_the_optimizer_or_rng_state_is_caught_by_their_digests(tmp_path: Path) -> None:
    """A resume would go on from damaged Adam moments or RNG states without a word: each entry besides the
    weights has a digest too, and the error names the damaged entries."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
    optimizer.step()  # moments, and a 0-dim step count
    state = {"model": {"w": torch.zeros(2)}, "optimizer": optimizer.state_dict(), "update": 3, "frames": 0,
             "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
                     "torch": torch.get_rng_state()},
             "config": {"ppo": {"lr": 1e-3}},
             "rollout": {"obs": np.arange(6, dtype=np.float32), "step": np.int64(4)}}  # fmt: skip
    path = save_checkpoint(tmp_path, state, keep=0)
    assert torch.equal(
        load_checkpoint(path)["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )
    for entry, damage in [
        ("optimizer", lambda s: s["optimizer"]["state"][0]["exp_avg_sq"].mul_(1e30)),
        ("rng", lambda s: s["rng"]["torch"].__setitem__(5, 7)),
        ("rollout", lambda s: s["rollout"]["obs"].__setitem__(2, 9.0)),
    ]:
        on_disk = torch.load(path, weights_only=False)
        damage(on_disk)
        torch.save(on_disk, tmp_path / "damaged.pt")
        with pytest.raises(CheckpointError, match=rf"is damaged: its entries \['{entry}'\] no longer match"):
            load_checkpoint(tmp_path / "damaged.pt")
    on_disk = torch.load(path, weights_only=False)
    on_disk["state_digests"] = "not a mapping"
    torch.save(on_disk, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="its state_digests entry is not a mapping"):
        load_checkpoint(tmp_path / "damaged.pt")


def test_a_best_pt_write_that_dies_half_way_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    """best.pt is replaced in place: a run killed while writing it must not lose the best policy so far."""

    def state(update: int) -> dict[str, object]:
        return {"model": {"w": torch.full((3,), float(update))}, "optimizer": {}, "update": update, "frames": 0,
                "rng": {}, "config": {}}  # fmt: skip

    def dies_half_way(obj: object, f: str | Path, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    path = save_best_checkpoint(tmp_path, state(1))
    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(torch, "save", dies_half_way)
        save_best_checkpoint(tmp_path, state(2))
    assert load_checkpoint(path)["update"] == 1
    assert [p.name for p in path.parent.iterdir()] == [BEST_CHECKPOINT]  # no half-written file left beside it


def test_a_resume_may_not_switch_between_embedded_scenes_and_soundspaces_data() -> None:
    """A run records scenes.source=auto as resolved; SoundSpaces data that appeared since must not take over."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes

    began, now = ExperimentConfig(), ExperimentConfig()
    began.scenes.source, now.scenes.source = "embedded", "soundspaces"
    assert config_changes(config_to_dict(began), config_to_dict(now)) == [("scenes.source", "embedded", "soundspaces")]
    began.scenes.source = "auto"  # a checkpoint from before the source was recorded cannot say which it was
    assert config_changes(config_to_dict(began), config_to_dict(now)) == []


def test_a_checkpoint_from_before_keep_travel_time_resumes_only_with_the_travel_time_it_heard() -> None:
    """Checkpoints written before task.keep_travel_time heard responses with their travel time; resuming one
    under the new default (cut) would change its observations, so it is refused with the override to pass."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import CheckpointError, check_resume_config, config_changes

    saved = config_to_dict(ExperimentConfig())
    del saved["task"]["keep_travel_time"]
    now = ExperimentConfig()
    assert config_changes(saved, config_to_dict(now)) == [("task.keep_travel_time", True, False)]
    state = {"config": saved, "policy_name": now.model.policy}
    with pytest.raises(CheckpointError, match=r"task\.keep_travel_time: True -> False.*task\.keep_travel_time=true"):
        check_resume_config(state, config_to_dict(now), "runs/old")
    now.task.keep_travel_time = True
    check_resume_config(state, config_to_dict(now), "runs/old")
    saved["scenes"]["source"], now.scenes.source, now.task.keep_travel_time = "soundspaces", "soundspaces", False
    assert config_changes(saved, config_to_dict(now)) == []  # SoundSpaces' stored responses are heard as they are


def test_paths_recorded_relative_by_earlier_runs_are_the_same_paths_made_absolute(tmp_path, monkeypatch) -> None:
    """Runs now record their data paths and DoA head absolute; a checkpoint of an earlier release, which recorded
    them as typed, resumes from the same directory without a refusal (the head) or a 'changed' warning (the
    data root), while a path that really is another is still one."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes, resumable_changes

    monkeypatch.chdir(tmp_path)
    saved, now = ExperimentConfig(), ExperimentConfig()
    saved.scenes.data_root, saved.task.doa_checkpoint = "data", "heads/sel.pt"
    now.scenes.data_root, now.task.doa_checkpoint = str(tmp_path / "data"), str(tmp_path / "heads" / "sel.pt")
    assert config_changes(config_to_dict(saved), config_to_dict(now)) == []
    assert resumable_changes(config_to_dict(saved), config_to_dict(now)) == []
    now.scenes.data_root, now.task.doa_checkpoint = "/elsewhere/data", "/elsewhere/sel.pt"
    assert config_changes(config_to_dict(saved), config_to_dict(now)) == [
        ("task.doa_checkpoint", "heads/sel.pt", "/elsewhere/sel.pt")
    ]
    assert resumable_changes(config_to_dict(saved), config_to_dict(now)) == [
        ("scenes.data_root", "data", "/elsewhere/data")
    ]


def test_a_resume_may_hear_missing_rir_files_as_silence_as_the_error_that_stopped_it_says() -> None:
    """A run stopped by a missing SoundSpaces RIR file is told to set scenes.rir_on_missing=silence; its resume
    with that setting was refused as another experiment, so the advice could not be followed."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes, resumable_changes

    saved, now = ExperimentConfig(), ExperimentConfig()
    now.scenes.rir_on_missing = "silence"
    assert config_changes(config_to_dict(saved), config_to_dict(now)) == []
    assert resumable_changes(config_to_dict(saved), config_to_dict(now)) == [
        ("scenes.rir_on_missing", "error", "silence")
    ]  # said as the run resumes


def test_image_size_and_num_scenes_recorded_but_unapplied_on_soundspaces_data_may_be_set_right() -> None:
    """Runs on SoundSpaces data recorded both without applying them; now that they must match the data, the
    resume that sets them right is not refused as another experiment (on the embedded scenes it still is)."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes

    saved, now = ExperimentConfig(), ExperimentConfig()
    saved.scenes.num_scenes, now.scenes.image_size = 6, 64
    assert [key for key, _, _ in config_changes(config_to_dict(saved), config_to_dict(now))] == [
        "scenes.image_size", "scenes.num_scenes"
    ]  # fmt: skip
    saved.scenes.source = now.scenes.source = "soundspaces"
    assert config_changes(config_to_dict(saved), config_to_dict(now)) == []


def test_a_checkpoint_from_before_source_spread_resumes_only_on_the_farthest_point_sources() -> None:
    """Its scenes put their sources at the farthest-point nodes; another spread would bake other goals under it."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import CheckpointError, check_resume_config, config_changes

    saved = config_to_dict(ExperimentConfig())
    del saved["acoustics"]["source_spread"]
    now = ExperimentConfig()
    assert config_changes(saved, config_to_dict(now)) == []
    now.acoustics.source_spread = "stratified"
    state = {"config": saved, "policy_name": now.model.policy}
    with pytest.raises(
        CheckpointError, match=r"source_spread: 'farthest' -> 'stratified'.*acoustics\.source_spread=farthest"
    ):
        check_resume_config(state, config_to_dict(now), "runs/old")


def test_a_resume_refuses_a_doa_head_file_that_changed_under_the_run(tmp_path: Path) -> None:
    """The config names the DoA head by path; pretraining continued at that path (or a new packaged head)
    would change the policy's input under the resumed run, so the checkpoint records the head's digest."""
    from asgf_nav.rl.checkpoint import CheckpointError

    class WithPosterior(ToySoundSideEnv):  # a constant posterior stands in for the head's
        def __init__(self, num_envs: int, seed: int) -> None:
            super().__init__(num_envs, seed)
            doa = spaces.Box(0.0, 1.0, (72,), np.float32)
            self.observation_space = spaces.Dict({**self.observation_space.spaces, "doa": doa})

        def observe(self) -> dict[str, torch.Tensor]:
            return {**super().observe(), "doa": torch.full((self.num_envs, 72), 1 / 72)}

    def factory(cfg: ExperimentConfig, split: str, rank: int) -> WithPosterior:
        return WithPosterior(cfg.ppo.num_envs, cfg.train.seed)

    head = tmp_path / "head.pt"
    head.write_bytes(b"the weights it was trained with")
    cfg = small_cfg("av_nav", updates=4)
    cfg.task.use_doa, cfg.task.doa_checkpoint = True, str(head)
    Trainer(cfg, factory, tmp_path / "run").train(max_updates=3)
    head.write_bytes(b"weights trained further")
    with pytest.raises(CheckpointError, match=rf"DoA head {re.escape(str(head))} of digest [0-9a-f]{{16}}, but"):
        Trainer(cfg, factory, tmp_path / "run", resume=True)
    head.write_bytes(b"the weights it was trained with")
    assert Trainer(cfg, factory, tmp_path / "run", resume=True).updates_done == 3


def test_resume_refuses_a_config_that_changes_the_experiment(tmp_path: Path, caplog) -> None:
    """A resume continues the run it names: another sound split, env count or learning rate would make the
    checkpoint's run something else under its name (and overrun its frame budget), so it is refused."""
    import copy

    from asgf_nav.config import load_config

    cfg = small_cfg("av_nav", updates=4)
    run, frames = tmp_path / "run", cfg.ppo.num_envs * cfg.ppo.num_steps
    Trainer(cfg, toy_env_factory, run).train(max_updates=2)
    saved_config = (run / "config.yaml").read_text()
    other = copy.deepcopy(cfg)
    other.task.sound_split, other.ppo.num_envs, other.ppo.num_mini_batch, other.ppo.lr = "heard", 2, 1, 0.5
    with pytest.raises(CheckpointError) as refused:
        Trainer(other, toy_env_factory, run, resume=True)
    message = str(refused.value)
    for named in ("task.sound_split: 'unheard' -> 'heard'", "ppo.num_envs: 4 -> 2", "ppo.lr: 0.00025 -> 0.5"):
        assert named in message, message
    assert f"--config {run / 'config.yaml'} --resume" in message
    assert (run / "config.yaml").read_text() == saved_config  # the run's own config is kept

    # a longer budget, another device, thread count and cadence continue the run; frames end at the budget
    longer = copy.deepcopy(cfg)
    longer.ppo.total_frames, longer.train.log_interval, longer.train.checkpoint_interval = 5 * frames, 5, 100
    longer.train.torch_threads, longer.train.device, longer.train.val_interval = 1, "auto", 100
    with caplog.at_level(logging.INFO, logger="asgf_nav.rl.trainer"):
        resumed = Trainer(longer, toy_env_factory, run, resume=True)
    assert (resumed.updates_done, resumed.frames, resumed.num_updates) == (2, 2 * frames, 5)
    # the linear decay is stretched over the new end and says so: at 2 of 5 x frames instead of 2 of 4
    expected = (
        f"ppo.total_frames {4 * frames} -> {5 * frames}: the linear lr and clip decay now ends at frame "
        f"{5 * frames} instead of {4 * frames}, so it continues at 0.600 of the configured value instead of 0.500"
    )
    assert expected in caplog.text
    first_update = resumed.update_once()
    assert first_update["lr"] == pytest.approx(cfg.ppo.lr * (1 - 2 / 5))
    resumed.train()
    assert (resumed.updates_done, resumed.frames) == (5, longer.ppo.total_frames)
    assert load_config(run / "config.yaml").ppo.total_frames == 5 * frames  # what --resume will continue with


def test_a_resume_on_another_world_size_continues_the_decay_where_it_was(tmp_path: Path, caplog) -> None:
    """Under DD-PPO the frames per update scale with the ranks, so a resume on fewer ranks has more updates
    left for the same ppo.total_frames; the decays run over the frames, so they go on from where they were
    (the trainer's logging of a moved schedule: test_resume_refuses_a_config_that_changes_the_experiment)."""
    cfg = small_cfg("av_nav", updates=4)
    cfg.ppo.use_linear_clip_decay = False
    run, frames = tmp_path / "run", cfg.ppo.num_envs * cfg.ppo.num_steps
    trainer = Trainer(cfg, toy_env_factory, run)
    trainer.train(max_updates=1)
    state = trainer.state_dict()
    # as if a run on two ranks had stopped after its first update of 4: 2 x the frames per update
    state["frames"], state["num_updates"], state["frames_per_update"] = 2 * frames, 4, 2 * frames
    state["world_size"] = 2
    state["config"]["ppo"]["total_frames"] = cfg.ppo.total_frames = 8 * frames
    assert schedule_change(state, cfg.ppo) is None  # on one rank the 6 x frames to go take 6 updates, not 3
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "other")
    with caplog.at_level(logging.INFO, logger="asgf_nav.rl.trainer"):
        resumed.restore(state)
    assert f"frames per update {2 * frames} -> {frames} (DD-PPO ranks: 2 in the checkpoint, 1 now)" in caplog.text
    assert (resumed.updates_done, resumed.num_updates) == (1, 7)
    assert resumed.update_once()["lr"] == pytest.approx(cfg.ppo.lr * 0.75)  # where two ranks left it
    cfg.ppo.total_frames = 10 * frames  # a longer run moves the end, and says where from and to
    assert schedule_change(state, cfg.ppo) == (
        f"ppo.total_frames {8 * frames} -> {10 * frames}: the linear lr decay now ends at frame {10 * frames} "
        "instead of " + f"{8 * frames}, so it continues at 0.800 of the configured value instead of 0.750"
    )
    # rank 0's episodes on its share of the scenes do not fit an env on all of them: the log says why
    from types import SimpleNamespace

    def refuse(env_state: dict) -> None:
        raise ValueError("env state is for 4 envs / 6 episodes, this env has 4 / 12")

    trainer.env = SimpleNamespace(load_state_dict=refuse)
    assert trainer.try_restore_env_state({**state, "world_size": 2}) == (
        "it is rank 0's of 2 DD-PPO ranks, on its share of the training scenes"
    )
    assert trainer.try_restore_env_state({**state, "world_size": 1}).startswith("env state is for 4 envs")


class SignalledEnv(ToySoundSideEnv):
    """A toy env that receives SIGTERM (as the trainer's handler records it) at its ``signal_at``-th step."""

    def __init__(self, num_envs: int, seed: int, signal_at: int) -> None:
        super().__init__(num_envs, seed)
        self.signal_at, self.steps_taken = signal_at, 0

    def step(self, actions: torch.Tensor):
        from asgf_nav import termination

        self.steps_taken += 1
        if self.steps_taken == self.signal_at:
            termination._on_signal(signal.SIGTERM, None)
        return super().step(actions)


def test_a_stop_during_validation_cuts_it_short_and_checkpoints_at_once(tmp_path: Path, monkeypatch) -> None:
    """The first SIGTERM waits for the update to end, not for a long validation after it (a scheduler's grace
    period is short); the cut-short validation neither logs nor chooses best.pt, and the resumed run runs it."""
    from asgf_nav import termination

    monkeypatch.setattr(termination, "_received", None)  # restored after the test: the signal was only simulated
    monkeypatch.setattr(termination, "_deferred", False)
    cfg = small_cfg("av_nav", updates=4)
    cfg.train.val_interval, cfg.train.val_episodes, cfg.task.max_steps = 1, 400, 5  # 100 episodes per env

    val_envs: list[SignalledEnv] = []

    def factory(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        if split != "val":
            return toy_env_factory(c, split, rank)
        val_envs.append(SignalledEnv(c.ppo.num_envs, 1, signal_at=3))
        return val_envs[-1]

    trainer = Trainer(cfg, factory, tmp_path / "run")
    with pytest.raises(SystemExit) as stopped:
        trainer.train()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert [env.steps_taken for env in val_envs] == [3]  # a whole validation is 100 episodes x 5 steps
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_000001.pt"]
    assert trainer.best_validation is None and not (tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT).exists()

    # the resumed run starts with the validation the stop cut short, of the checkpoint's update, and saves its
    # outcome at once: a run killed before its next checkpoint must not make a later resume validate (and log) again
    monkeypatch.setattr(termination, "_received", None)
    monkeypatch.setattr(termination, "_deferred", False)

    def crashing_factory(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        env = toy_env_factory(c, split, rank)
        if split == "train":
            env.step = lambda actions: (_ for _ in ()).throw(MemoryError("killed"))
        return env

    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "run", saved)
    with pytest.raises(MemoryError):
        Trainer(cfg, crashing_factory, tmp_path / "run", resume=True).train()
    assert torch.load(list_checkpoints(tmp_path / "run")[-1], weights_only=False)["validation_pending"] is False
    shutil.rmtree(tmp_path / "run")
    shutil.move(saved, tmp_path / "run")
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "run", resume=True)
    assert resumed.validation_pending and resumed.updates_done == 1
    resumed.train(max_updates=1)  # no update to run: only the pending validation
    assert resumed.updates_done == 1 and not resumed.validation_pending
    assert resumed.best_validation is not None and resumed.best_validation["update"] == 1.0
    assert (tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT).exists()
    (latest,) = list_checkpoints(tmp_path / "run")  # saved again: a later resume does not repeat it
    assert latest.name == "ckpt_000001.pt" and torch.load(latest, weights_only=False)["validation_pending"] is False


def test_a_stop_during_the_last_updates_validation_still_stops_the_run(tmp_path: Path, monkeypatch) -> None:
    """No update follows to see the stop, yet the run must end as stopped (not as finished, exit status 0, with
    its last validation pending forever); resumed with validation switched off, nothing is left pending."""
    from asgf_nav import termination

    monkeypatch.setattr(termination, "_received", None)
    monkeypatch.setattr(termination, "_deferred", False)
    cfg = small_cfg("av_nav", updates=1)
    cfg.train.val_interval, cfg.train.val_episodes, cfg.task.max_steps = 1, 400, 5

    def factory(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        return SignalledEnv(c.ppo.num_envs, 1, signal_at=3) if split == "val" else toy_env_factory(c, split, rank)

    with pytest.raises(SystemExit) as stopped:
        Trainer(cfg, factory, tmp_path / "run").train()
    assert stopped.value.code == 128 + signal.SIGTERM
    monkeypatch.setattr(termination, "_received", None)
    monkeypatch.setattr(termination, "_deferred", False)
    cfg.train.val_interval = 0  # may change on resume: "0 disables" holds for the pending one too
    resumed = Trainer(cfg, factory, tmp_path / "run", resume=True)
    assert resumed.validation_pending
    resumed.train()
    assert not resumed.validation_pending and resumed.best_validation is None


def test_a_validation_that_fails_keeps_its_updates_checkpoint_and_stays_due(tmp_path: Path) -> None:
    """Damaged val data found at the first validation, perhaps hours in, loses none of the training done: the
    update is saved with its validation pending, which the resumed run (once the data is mended) runs first."""
    cfg = small_cfg("av_nav", updates=4)
    cfg.train.val_interval, cfg.train.val_episodes = 2, 8

    def damaged_val(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        if split == "val":
            raise FileNotFoundError("val_telephone.json.gz")
        return toy_env_factory(c, split, rank)

    with pytest.raises(FileNotFoundError, match="val_telephone"):
        Trainer(cfg, damaged_val, tmp_path / "run").train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_000002.pt"]
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "run", resume=True)
    assert resumed.updates_done == 2 and resumed.validation_pending
    resumed.train(max_updates=2)
    assert not resumed.validation_pending and resumed.best_validation["update"] == 2.0


def test_an_error_between_updates_keeps_the_updates_done(tmp_path: Path) -> None:
    """A scene pool that fails under the run (another process re-baked its scenes) ends it after a checkpoint
    of the updates done since the last one, not with them lost."""
    cfg = small_cfg("av_nav", updates=6)
    cfg.train.checkpoint_interval = 100

    made: list[Trainer] = []

    def scenes_changed(split: str) -> bool:
        if made and made[0].updates_done == 3:
            raise RuntimeError("no train scene of tiny is baked yet")
        return False

    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run", scenes_changed=scenes_changed)
    made.append(trainer)
    with pytest.raises(RuntimeError, match="no train scene"):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_000003.pt"]

    # a grown pool whose new env fails to reset: the checkpoint is of the run as it was, on its old env
    calls: list[str] = []

    def damaged_on_reload(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        env = toy_env_factory(c, split, rank)
        calls.append(split)
        if len(calls) > 1:
            env.reset = lambda: (_ for _ in ()).throw(OSError("a new scene's spectrogram store is damaged"))
        return env

    made.clear()
    grown = Trainer(
        cfg,
        damaged_on_reload,
        tmp_path / "grown",
        scenes_changed=lambda split: bool(made) and made[0].updates_done == 2,
    )
    made.append(grown)
    first_env = grown.env
    with pytest.raises(OSError, match="damaged"):
        grown.train()
    assert grown.env is first_env and grown.storage.masks[0].sum() > 0  # still the old env's episodes
    state = torch.load(list_checkpoints(tmp_path / "grown")[-1], weights_only=False)
    assert state["update"] == 2 and grown.updates_done == 2


def ddppo_worker(rank: int, world: int, init_file: str, run_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # 6 updates' worth of single-process frames = 3 updates of 2 ranks
        trainer = Trainer(small_cfg("asgf", updates=6), toy_env_factory, run_dir)
        from asgf_nav.rl import distributed

        assert trainer.ppo.mean_over_ranks is distributed.mean_over_ranks  # advantages over both rollouts
        initial = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        trainer.train()
        final = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        stats = trainer.ppo.update(trainer.storage)  # one more pass over the last rollouts, for its figures
        window = {"totals": trainer.window.totals(), "means": trainer.episode_means()}
        torch.save({"initial": initial, "final": final, "stats": stats, **window}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddppo_two_ranks_keep_identical_parameters(tmp_path: Path) -> None:
    world = 2
    mp.spawn(
        ddppo_worker,
        args=(world, str(tmp_path / "init"), str(tmp_path / "run"), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    states = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    changed = False
    for key, value in states[0]["final"].items():
        assert torch.equal(value, states[1]["final"][key]), f"{key} differs between ranks"
        assert torch.equal(states[0]["initial"][key], states[1]["initial"][key]), f"{key} not broadcast"
        changed |= not torch.equal(value, states[0]["initial"][key])
    assert changed, "training did not change the parameters"
    assert (tmp_path / "run" / "checkpoints" / "ckpt_000003.pt").is_file()
    # the logged losses are the update's over both ranks, not each rank's share (which differ, even in sign)
    assert states[0]["stats"] == pytest.approx(states[1]["stats"], rel=1e-6, abs=1e-9)
    # so are the episode figures: both ranks' windows pooled, not rank 0's share of the scenes
    from asgf_nav.rl.rollout import WINDOW_KEYS

    pooled = states[0]["totals"] + states[1]["totals"]
    assert states[0]["totals"][0, 1] > 0 and states[1]["totals"][0, 1] > 0  # both ranks finished episodes ...
    assert not torch.equal(states[0]["totals"], states[1]["totals"])  # ... with other figures
    expected = {key: total / count for key, (total, count) in zip(WINDOW_KEYS, pooled.tolist()) if count > 0}
    assert states[0]["means"] == pytest.approx(expected) and states[1]["means"] == pytest.approx(expected)


def ddppo_stop_worker(rank: int, world: int, init_file: str, run_dir: str, out_dir: str, signalled: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

    def factory(c: ExperimentConfig, split: str, r: int) -> ToySoundSideEnv:  # one rank, at a step of update 2
        return SignalledEnv(c.ppo.num_envs, r, signal_at=12) if r == signalled else toy_env_factory(c, split, r)

    try:
        trainer = Trainer(small_cfg("av_nav", updates=12), factory, run_dir)  # 6 updates of 2 ranks
        try:
            trainer.train()
            code = 0
        except SystemExit as stopped:
            code = stopped.code
        torch.save({"code": code, "update": trainer.updates_done}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("signalled", [0, 1])
def test_ddppo_a_stop_on_one_rank_stops_every_rank_after_the_same_update_with_a_checkpoint(
    tmp_path: Path, signalled: int
) -> None:
    """A scheduler's SIGTERM may reach one rank first: the ranks agree before each update, so none waits in
    an all-reduce for a peer that left, and rank 0 saves the update they all finished."""
    world = 2
    mp.spawn(
        ddppo_stop_worker,
        args=(world, str(tmp_path / "init"), str(tmp_path / "run"), str(tmp_path), signalled),
        nprocs=world,
        join=True,
    )
    outcomes = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    assert outcomes == [{"code": 128 + signal.SIGTERM, "update": 2}] * world
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["ckpt_000002.pt"]  # the interval is 3


# ---------------------------------------------------------------------------- rollout boundaries
def test_after_update_carries_the_last_observation_into_the_next_rollout() -> None:
    storage = RolloutStorage(2, 1, {"x": ((1,), np.float32)}, (1, 1))
    storage.start({"x": torch.zeros(1, 1)}, torch.zeros(1, 1, 1), torch.zeros(1))
    for t in (1.0, 2.0):
        step = (torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.ones(1))
        storage.insert({"x": torch.full((1, 1), t)}, *step)
    storage.after_update(torch.zeros(1, 1, 1))
    assert storage.current()[0]["x"].item() == 2.0


def test_the_bootstrap_value_reads_the_hidden_state_at_the_end_of_the_rollout(tmp_path: Path) -> None:
    trainer = Trainer(small_cfg("av_nav", num_steps=8), toy_env_factory, tmp_path / "run")  # episodes end at 5
    trainer.collect_rollout()
    storage = trainer.storage
    assert (storage.masks[-1] == 1).all()  # mid-episode: the value depends on the hidden state
    with torch.no_grad():
        last_obs = {k: v[-1] for k, v in storage.obs.items()}
        expected = trainer.policy.get_value(last_obs, trainer.next_rollout_hidden, storage.masks[-1])
    torch.testing.assert_close(storage.values[-1], expected)


def test_a_checkpoint_keeps_an_episode_end_on_the_last_step_of_the_rollout(tmp_path: Path) -> None:
    trainer = Trainer(small_cfg("av_nav", num_steps=5), toy_env_factory, tmp_path / "run")  # 5-step episodes
    trainer.train(max_updates=1)
    assert (trainer.state_dict()["rollout"]["masks"] == 0).all()


def test_validation_resets_the_recurrent_state_at_each_new_episode(tmp_path: Path) -> None:
    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 8
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    seen, act = [], trainer.policy.act

    def recording_act(obs, hidden, masks, **kwargs):
        seen.append(masks.clone())
        return act(obs, hidden, masks, **kwargs)

    trainer.policy.act = recording_act
    trainer.validate()
    assert (seen[0] == 0).all() and (seen[1] == 1).all() and (seen[5] == 0).all()  # toy episodes: 5 steps


def _another_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, value[0]] if value else ["other"]
    return 1 if value is None else None


@pytest.mark.parametrize("section", ["ppo", "model"])
def test_a_resume_refuses_a_change_of_any_optimisation_or_architecture_key(section: str) -> None:
    """Only how long a run trains may change between PPO's hyperparameters and the model's widths."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes

    saved = config_to_dict(ExperimentConfig())
    for name, value in saved[section].items():
        changed = config_to_dict(ExperimentConfig())
        changed[section][name] = _another_value(value)
        expected = [] if f"{section}.{name}" == "ppo.total_frames" else [f"{section}.{name}"]
        assert [key for key, *_ in config_changes(saved, changed)] == expected, name


def _average_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    from asgf_nav.rl.distributed import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        layer = torch.nn.Linear(2, 1)
        for p in layer.parameters():
            p.grad = torch.full_like(p, float(rank + 1))
        all_reduce_gradients(layer)
        torch.save([p.grad for p in layer.parameters()], os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddppo_gradients_are_averaged_over_ranks(tmp_path: Path) -> None:
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_average_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        for grad in torch.load(tmp_path / f"{rank}.pt"):
            assert torch.all(grad == 1.5)  # mean of 1 and 2, not their sum


def _bare_state(update: int) -> dict:
    return {"model": {}, "optimizer": {}, "update": update, "frames": 10 * update, "rng": {}, "config": {}}


def test_load_latest_takes_the_highest_update_and_pruning_keeps_the_newest(tmp_path):
    """With several checkpoints kept, pruning drops the oldest and a resume loads the highest update."""
    from asgf_nav.rl.checkpoint import list_checkpoints, load_latest, save_checkpoint

    for update in (5, 50, 500, 1000):  # numeric order, not the order of the names' digits
        save_checkpoint(tmp_path, _bare_state(update), keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000050.pt", "ckpt_000500.pt", "ckpt_001000.pt"]
    latest = load_latest(tmp_path)
    assert (latest["update"], latest["frames"]) == (1000, 10000)


def test_restore_rng_state_restores_python_numpy_and_torch(tmp_path):
    """All three global generators come back, numpy's included, though no project code draws from it today."""
    import random

    from asgf_nav.rl.rng import capture_rng_state, restore_rng_state

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state("cpu")
    first = (random.random(), np.random.random(3).tolist(), torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(state, "cpu")
    assert (random.random(), np.random.random(3).tolist(), torch.rand(3).tolist()) == first


# ---------------------------------------------------------------------------- minibatches, resume, schedule
def test_every_minibatch_field_comes_from_the_envs_and_steps_it_names() -> None:
    """Masks, old log-probabilities, old values and returns travel with their env and their step: entry
    (t, e) of each holds 100 t + e (plus an offset per field), so any other env or step shows."""
    steps, envs = 3, 4
    storage = RolloutStorage(steps, envs, {"x": ((1,), np.float32)}, (1, 2))
    code = 100 * torch.arange(steps + 1).float().view(-1, 1) + torch.arange(envs).float().view(1, -1)
    storage.masks.copy_(code)
    storage.values.copy_(code + 0.25)
    storage.log_probs.copy_(-code[:steps])
    storage.returns = code[:steps] + 0.5
    for _ in range(3):  # epochs: a new shuffle each
        for batch in storage.recurrent_minibatches(torch.zeros(steps, envs), num_mini_batch=2):
            expected = 100 * torch.arange(steps).float().view(-1, 1) + batch.env_indices.float().view(1, -1)
            torch.testing.assert_close(batch.masks, expected)
            torch.testing.assert_close(batch.old_values, expected + 0.25)
            torch.testing.assert_close(batch.old_log_probs, -expected)
            torch.testing.assert_close(batch.returns, expected + 0.5)


def test_minibatches_draw_their_env_groups_afresh_each_epoch() -> None:
    """The envs are shuffled before each pass (as CleanRL does): fixed groups would make every epoch's
    gradient steps the same ones."""
    storage = RolloutStorage(2, 6, {"x": ((1,), np.float32)}, (1, 1))
    groups = {
        tuple(sorted(batch.env_indices.tolist()))
        for _ in range(10)
        for batch in storage.recurrent_minibatches(torch.zeros(2, 6), num_mini_batch=3)
    }
    assert len(groups) > 3  # fixed groups: only 3 pairs, whatever the epoch


def test_kill_and_resume_right_after_an_episode_end_gives_identical_parameters(tmp_path: Path) -> None:
    """5-step rollouts of 5-step episodes: every checkpoint follows an episode end, so the resumed run's first
    step must reset the GRU (mask 0) as the uninterrupted run's does, not carry the old episode's memory."""
    cfg = small_cfg("av_nav", updates=2, num_steps=5)
    uninterrupted = Trainer(cfg, toy_env_factory, tmp_path / "full")
    uninterrupted.train()
    Trainer(cfg, toy_env_factory, tmp_path / "resumed").train(max_updates=1)
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "resumed", resume=True)
    assert (resumed.storage.masks[0] == 0).all() and resumed.storage.hidden.abs().sum() > 0
    resumed.train()
    resumed_state = resumed.policy.state_dict()
    for key, value in uninterrupted.policy.state_dict().items():
        assert torch.equal(value, resumed_state[key]), f"parameter {key} differs after resume"


def test_a_resume_ends_a_budget_that_is_not_a_whole_number_of_updates_where_the_run_would(tmp_path: Path) -> None:
    """ppo.total_frames of 2.5 updates runs 3 updates; a resumed run must still end at 3 (its lr and clip
    decays with it), not at 2 because it rounded the frames left down."""
    cfg = small_cfg("av_nav", updates=3)
    cfg.ppo.total_frames = 5 * cfg.ppo.num_envs * cfg.ppo.num_steps // 2
    first = Trainer(cfg, toy_env_factory, tmp_path / "run")
    assert first.num_updates == 3
    first.train(max_updates=1)
    resumed = Trainer(cfg, toy_env_factory, tmp_path / "run", resume=True)
    assert (resumed.updates_done, resumed.num_updates) == (1, 3)


# what a resumed run may change besides ppo.total_frames: where and how it runs, logs and caches, and whether a
# missing SoundSpaces RIR file stops it
RESUMABLE_OUTSIDE_PPO_AND_MODEL = {
    "scenes.data_root", "scenes.soundspaces_root", "scenes.rir_cache_mb", "scenes.rir_on_missing", "scenes.workers",
    "task.doa_cache_size", "task.spectrogram_cache_size", "task.spectrogram_store", "task.test_episodes",
    "train.run_dir", "train.device", "train.torch_threads", "train.log_interval", "train.checkpoint_interval",
    "train.keep_checkpoints", "train.val_interval", "train.stats_window_episodes",
}  # fmt: skip


@pytest.mark.parametrize("section", ["scenes", "acoustics", "task", "train"])
def test_a_resume_refuses_a_change_of_any_scene_task_or_training_key_but_how_it_runs(section: str) -> None:
    """A reward, a sensor, the seed or the scenes' acoustics changed under a resumed run make it another
    experiment; only the keys above may change (scenes.source recorded as resolved, so it is compared)."""
    import copy

    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes

    saved = config_to_dict(ExperimentConfig())
    saved["scenes"]["source"] = "embedded"
    for name, value in saved[section].items():
        changed = copy.deepcopy(saved)
        changed[section][name] = _another_value(value)
        key = f"{section}.{name}"
        expected = [] if key in RESUMABLE_OUTSIDE_PPO_AND_MODEL else [key]
        assert [k for k, *_ in config_changes(saved, changed)] == expected, key


# ---------------------------------------------------------------------------- update inputs, validation, env rebuild
def test_the_update_re_evaluates_the_rollout_with_its_gru_states_and_episode_resets(tmp_path: Path) -> None:
    """Before the first gradient step the policy is the one that acted, so the ratio is 1 everywhere (approx
    KL 0, nothing clipped) only when PPO replays each env from its stored GRU state with its stored resets."""
    cfg = small_cfg("av_nav", num_steps=12)  # toy episodes end after steps 5 and 10: resets mid-sequence
    cfg.ppo.ppo_epoch, cfg.ppo.num_mini_batch = 1, 1  # one gradient step, its statistics taken before it
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    trainer.train(max_updates=1)
    trainer.collect_rollout()  # the second rollout starts from the first one's (non-zero) GRU state
    assert trainer.storage.hidden.abs().sum() > 0 and (trainer.storage.masks[1:] == 0).any()
    trainer.policy.train()
    stats = trainer.ppo.update(trainer.storage)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-9)
    assert stats["clip_fraction"] == 0.0


def test_the_validation_return_sums_over_each_episode_only(tmp_path: Path) -> None:
    """The toy env pays 1 per correct turn and reports SPL = correct turns / 5: a validated episode's return
    is 5 x its SPL, not the sum over every episode its env ran before."""
    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 12  # 4 envs: 3 five-step episodes each
    validation = Trainer(cfg, toy_env_factory, tmp_path / "run").validate()
    assert validation["episodes"] == 12
    assert validation["return"] == pytest.approx(5 * validation["spl"], abs=1e-5)


def test_the_policy_diagnostics_are_averaged_over_the_rollout_steps(tmp_path: Path) -> None:
    """A policy that reports 2.0 at every step logs 2.0, not the sum over the rollout's 8 steps."""
    trainer = Trainer(small_cfg("av_nav", num_steps=8), toy_env_factory, tmp_path / "run")
    trainer.policy.diagnostics = lambda: {"fusion/attention_entropy": torch.tensor(2.0)}
    assert trainer.collect_rollout() == {"fusion/attention_entropy": pytest.approx(2.0)}


def test_a_rebuilt_training_env_starts_fresh_episodes_from_its_own_reset(tmp_path: Path) -> None:
    """When the scene pool grows the training env is rebuilt: the next rollout acts on the new env's first
    observation with a reset GRU (mask 0), and no return of a dropped episode carries into the new ones."""
    cfg = small_cfg("av_nav", num_steps=3)  # 3 steps into 5-step episodes: every env is mid-episode
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    trainer.train(max_updates=1)
    assert (trainer.storage.masks[0] == 1).all() and trainer.episode_returns.sum() > 0
    trainer.reload_train_env()
    expected = toy_env_factory(cfg, "train", 0).reset()  # the same seed: what the rebuilt env's reset returns
    obs, masks = trainer.storage.current()
    torch.testing.assert_close(obs["spectrogram"], expected["spectrogram"])
    assert (masks == 0).all() and (trainer.episode_returns == 0).all()


class ThreeEpisodeEnv(ToySoundSideEnv):
    """A val split of only three episodes (its sequential stride would run them again and again)."""

    episodes = ["a", "b", "c"]


def test_a_val_split_smaller_than_val_episodes_counts_each_episode_once(tmp_path: Path) -> None:
    """Early in a background bake the val split may hold fewer episodes than train.val_episodes: each is
    counted once, not again as the envs' strides wrap around."""
    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 8  # 4 envs, 3 episodes: envs 0-2 count one each, env 3 none
    trainer = Trainer(cfg, lambda c, split, rank: ThreeEpisodeEnv(c.ppo.num_envs, seed=0), tmp_path / "run")
    assert trainer.validate()["episodes"] == 3


def test_a_validation_without_any_metric_never_becomes_best_pt(tmp_path: Path, monkeypatch) -> None:
    """A validation whose SPL is nan (no episode finished) is not better than anything: best.pt keeps the
    earlier validation, and a run whose only validation is nan writes none."""
    cfg = small_cfg("av_nav", updates=2)
    cfg.train.val_interval = 1
    best_path = tmp_path / "run" / "checkpoints" / BEST_CHECKPOINT
    scripted_validations(monkeypatch, [0.5, float("nan")])
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    trainer.train()
    assert trainer.best_validation["update"] == 1 and load_checkpoint(best_path)["update"] == 1
    scripted_validations(monkeypatch, [float("nan")])
    Trainer(small_cfg("av_nav", updates=1), toy_env_factory, tmp_path / "nan").train()
    assert not (tmp_path / "nan" / "checkpoints" / BEST_CHECKPOINT).exists()


def test_validation_runs_on_a_rebuilt_val_env_once_the_val_split_grows(tmp_path: Path) -> None:
    """A val scene baked in the background joins the next validation: the val env is rebuilt when
    scenes_changed("val") reports new scenes, and kept otherwise."""
    built: list[str] = []
    grown = {"val": False}

    def factory(c: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        built.append(split)
        return toy_env_factory(c, split, rank)

    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 4
    trainer = Trainer(cfg, factory, tmp_path / "run", scenes_changed=lambda split: grown.get(split, False))
    trainer.validate()
    trainer.validate()
    assert built.count("val") == 1
    grown["val"] = True
    trainer.validate()
    assert built.count("val") == 2


def test_two_validations_of_the_same_policy_give_the_same_numbers(tmp_path: Path) -> None:
    """Validation restores the val env to its initial state each time (with its own action seed), so a
    change in the numbers is the policy's, not the val env's generator having moved on."""
    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 8
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    assert trainer.validate() == trainer.validate()


def test_validation_samples_its_actions_inside_its_own_random_state(tmp_path: Path) -> None:
    """Validation samples actions (as SoundSpaces evaluates AV-Nav) and leaves the training generators where
    they were: the torch, numpy and Python states after it are those before it."""
    import random

    cfg = small_cfg("av_nav")
    cfg.train.val_episodes = 8
    trainer = Trainer(cfg, toy_env_factory, tmp_path / "run")
    flags, act = [], trainer.policy.act

    def recording_act(obs, hidden, masks, **kwargs):
        flags.append(kwargs.get("deterministic"))
        return act(obs, hidden, masks, **kwargs)

    trainer.policy.act = recording_act
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    trainer.validate()
    assert flags and all(flag is False for flag in flags)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


# ---------------------------------------------------------------------------- checkpoint files and configs
def test_a_checkpoint_state_without_a_required_entry_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A state that could not be resumed (no RNG states here) raises at save time, and leaves no file."""
    from asgf_nav.rl.checkpoint import save_checkpoint

    state = _bare_state(3)
    del state["rng"]
    with pytest.raises(ValueError, match="rng"):
        save_checkpoint(tmp_path, state, keep=2)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_a_checkpoint_file_that_holds_no_dict_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A file holding a bare tensor (a saved weight, say) is named as no checkpoint, not a torch traceback."""
    path = tmp_path / "checkpoints" / "ckpt_000001.pt"
    path.parent.mkdir(parents=True)
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="ckpt_000001.pt"):
        load_checkpoint(path)


def test_a_key_added_to_the_schema_after_the_checkpoint_is_not_compared() -> None:
    """A checkpoint written before a config key existed resumes: the key is not listed as changed, and the
    comparison does not fail on it."""
    from asgf_nav.config import config_to_dict
    from asgf_nav.rl.checkpoint import config_changes

    saved, current = config_to_dict(ExperimentConfig()), config_to_dict(ExperimentConfig())
    del saved["ppo"]["clip_param"], saved["train"]["best_metric"]
    current["ppo"]["clip_param"] = 0.5  # unknown to the checkpoint: not comparable
    assert config_changes(saved, current) == []
    current["ppo"]["lr"] = 0.5
    assert config_changes(saved, current) == [("ppo.lr", saved["ppo"]["lr"], 0.5)]


def _advantage_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    from asgf_nav.rl.distributed import mean_over_ranks
    from asgf_nav.rl.ppo import normalized_advantages

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        advantages = torch.arange(6, dtype=torch.float32).reshape(3, 2) + 10.0 * rank  # ranks far apart
        torch.save(normalized_advantages(advantages, mean_over_ranks), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddppo_normalises_advantages_over_every_ranks_rollout(tmp_path: Path) -> None:
    """Each rank normalised on its own would give both ranks the same advantages, though rank 1's rollout
    went 10 better: over both rollouts together rank 1's are all above rank 0's."""
    mp.spawn(_advantage_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    together = torch.cat([torch.arange(6.0), torch.arange(6.0) + 10.0])
    expected = (together - together.mean()) / (together.var(unbiased=False).sqrt() + 1e-5)
    torch.testing.assert_close(torch.cat([r.reshape(-1) for r in ranks]), expected)
    assert ranks[1].min() > ranks[0].max()


def _two_free_ports() -> tuple[int, int]:
    """Two ports free a moment ago, held together so that they differ. env:// rendezvous needs the port before
    rank 0 binds it, so another process could take one in between; on a CI machine that is very unlikely."""
    import socket

    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]


def _refused_run_worker(
    rank: int, world: int, ports: tuple[int, int], run_dir: str, out_dir: str, own: tuple[str, ...] = ()
) -> None:
    """``own``: overrides that rank 1 alone is started with."""
    import os

    from asgf_nav.config import ConfigError, load_config
    from asgf_nav.experiment import run_training
    from asgf_nav.rl.distributed import is_distributed, process_group_for_run

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(ports[0]))  # fmt: skip
    with process_group_for_run(None):
        joined = is_distributed()
    lines = [f"joined {joined}, left {not is_distributed()}"]
    os.environ["MASTER_PORT"] = str(ports[1])  # a fresh rendezvous for the run's own group
    try:
        overrides = [f"train.run_dir={run_dir}", f"scenes.data_root={out_dir}/data", *(own if rank == 1 else ())]
        run_training(load_config("tiny_heard", overrides))
    except ConfigError as exc:
        lines.append(f"ConfigError: {exc}")
    lines.append(f"left {not is_distributed()}")
    Path(out_dir, f"{rank}.txt").write_text("\n".join(lines))


def test_ddppo_ranks_all_stop_with_rank_0s_message_when_it_refuses_the_run_directory(tmp_path: Path) -> None:
    """Only rank 0 claims the run directory: the others used to wait for it at a collective and die with a
    gloo 'connection closed' traceback. Every rank also leaves the process group it joined for the run."""
    import torch.multiprocessing as mp

    from asgf_nav.io import exclusive_lock
    from asgf_nav.run_checks import RUN_LOCK

    ports = _two_free_ports()
    run = tmp_path / "run"
    run.mkdir()
    with exclusive_lock(run / RUN_LOCK, "a live run"):  # another training process holds it
        mp.spawn(_refused_run_worker, args=(2, ports, str(run), str(tmp_path)), nprocs=2, join=True)
    refusal = f"train.run_dir: {run} is in use by another training process (it holds {run / RUN_LOCK}); choose another"
    assert (tmp_path / "0.txt").read_text().splitlines() == [
        "joined True, left True",
        f"ConfigError: {refusal}",
        "left True",
    ]
    assert (tmp_path / "1.txt").read_text().splitlines() == [
        "joined True, left True",
        f"ConfigError: {refusal} (found by rank 0)",
        "left True",
    ]
    assert not (tmp_path / "data").exists()  # refused before any bake


def test_ddppo_ranks_started_with_different_configs_all_stop_naming_the_keys(tmp_path: Path) -> None:
    """Ranks started by hand with other arguments averaged gradients of other experiments (another lr), or
    waited for each other forever (another ppo.total_frames); now every rank stops before any work."""
    import torch.multiprocessing as mp

    ports = _two_free_ports()
    own = ("ppo.lr=0.1", "ppo.total_frames=64", "train.torch_threads=2")  # the threads may differ per node
    mp.spawn(_refused_run_worker, args=(2, ports, str(tmp_path / "run"), str(tmp_path), own), nprocs=2, join=True)
    started = "ConfigError: the DD-PPO ranks were started with different configs"
    rank0 = (tmp_path / "0.txt").read_text().splitlines()
    assert rank0[1] == f"{started} (another rank's message names the keys); start them alike"
    assert (tmp_path / "1.txt").read_text().splitlines()[1] == (
        f"{started} (rank 1 differs from rank 0 in ['ppo.lr', 'ppo.total_frames']); start them alike"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_a_resume_across_an_acoustics_or_render_version_change_is_refused_before_any_env_is_built(
    tmp_path: Path, monkeypatch
) -> None:
    """Checkpoints record the acoustics and render versions of the responses the run trained on; once the code
    makes others, a resume is refused naming the file and both versions, before the env factory runs (it may
    bake scenes) and with every checkpoint kept. One of an earlier release, which recorded none, resumes."""
    from asgf_nav.rl import checkpoint

    cfg = small_cfg("av_nav", updates=4)
    run = tmp_path / "run"
    Trainer(cfg, toy_env_factory, run).train(max_updates=2)
    newest = run / "checkpoints" / "ckpt_000002.pt"
    state = load_checkpoint(newest)
    trained = (checkpoint.ACOUSTICS_VERSION, checkpoint.RENDER_VERSION)
    assert (state["acoustics_version"], state["render_version"]) == trained
    files = {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()}
    built: list[str] = []

    def factory(cfg: ExperimentConfig, split: str, rank: int) -> ToySoundSideEnv:
        built.append(split)
        return toy_env_factory(cfg, split, rank)

    acoustics, render = trained
    for constant, now, changed in (
        ("ACOUSTICS_VERSION", f"acoustics version {acoustics + 1}, render version {render}", "ACOUSTICS_VERSION"),
        ("RENDER_VERSION", f"acoustics version {acoustics}, render version {render + 1}", "RENDER_VERSION"),
    ):
        with monkeypatch.context() as updated:
            updated.setattr(checkpoint, constant, getattr(checkpoint, constant) + 1)  # the code was updated
            with pytest.raises(CheckpointError) as refused:
                Trainer(cfg, factory, run, resume=True)
        message = str(refused.value)
        assert message.startswith(
            f"checkpoint {newest} was trained on responses of acoustics version {acoustics}, render version "
            f"{render}, and this code makes {now} ({changed} "
        ), message
        assert "Start a new run in another train.run_dir" in message
    assert built == []  # refused before any env (or scene) was made
    assert {path.name: path.read_bytes() for path in (run / "checkpoints").iterdir()} == files

    for key in ("acoustics_version", "render_version"):  # as an earlier release wrote it
        del state[key]
    save_checkpoint(run, state, keep=0)
    monkeypatch.setattr(checkpoint, "RENDER_VERSION", render + 1)
    assert Trainer(cfg, factory, run, resume=True).updates_done == 2  # it cannot tell: not refused
    assert checkpoint.response_versions(cfg) == {"acoustics_version": acoustics, "render_version": render + 1}
    cfg.scenes.source = "soundspaces"
    monkeypatch.setattr(checkpoint, "scene_source", lambda cfg: cfg.scenes.source)
    assert checkpoint.response_versions(cfg) == {"acoustics_version": None, "render_version": None}
