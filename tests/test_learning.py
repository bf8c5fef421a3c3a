"""PPO actually learns the AudioGoal task: the asgf policy on the tiny heard scene reaches SR >= 0.8.

The task is the real one (baked views and binaural RIRs, SoundSpaces rewards and success rule), made small
enough for a CPU budget: two goal sources, starts two grid steps from the goal, 20-step episodes and a
compact ASGF (D = 64, GRU 128). A uniformly random agent succeeds in about 11 % of these episodes, so
reaching 80 % needs the policy to learn to approach the goal and STOP there; that the sound leads it there,
not the scene's two source places learnt by sight, is checked by playing each episode another's spectrogram
(the trained policy must then succeed at least 25 points less often). On an idle 2-core machine this takes
30-50k frames (5-8 minutes).
"""

import dataclasses

import pytest
import torch

from asgf_nav.config import load_config
from asgf_nav.experiment import make_rank_env
from asgf_nav.rl.trainer import Trainer
from asgf_nav.rl.validation import run_validation
from asgf_nav.scenes.build import build_scenes

TARGET_SR = 0.8
MAX_UPDATES = 150  # 77k frames; at lr 1e-3 seeds 1, 2 and 3 needed 55, 70 and 65 updates, and seed 1
# needed 90 after the RIR tails' float32 envelope (equal to 1e-7) changed its trajectory: SR sits at
# 0.73-0.78 for a while before it crosses 0.8, so the cap leaves room for that plateau
# (at lr 2e-3, seed 1 oscillated around SR 0.5 and collapsed to SR 0 after update 80)


@pytest.mark.slow
def test_asgf_policy_learns_tiny_heard_scene(tmp_path):
    cfg = load_config("tiny_heard", [
        f"scenes.data_root={tmp_path / 'data'}", f"train.run_dir={tmp_path / 'run'}",
        "acoustics.sources_per_scene=2", "acoustics.rays=500",
        "task.max_steps=20", "task.max_geodesic_distance=1.0",
        "model.policy=asgf", "model.hidden_size=128", "model.fusion_dim=64", "model.fusion_heads=2",
        "model.ase_dim=64",
        "ppo.num_envs=16", "ppo.num_steps=32", "ppo.lr=1e-3", "ppo.entropy_coef=0.01", "ppo.clip_param=0.2",
        "ppo.num_mini_batch=4", "ppo.use_linear_lr_decay=false", "ppo.use_linear_clip_decay=false",
        "ppo.total_frames=1000000", "train.val_interval=0", "train.checkpoint_interval=1000",
        "train.stats_window_episodes=100", "train.torch_threads=2",
    ])  # fmt: skip
    build_scenes(cfg, "tiny", ["tiny_apartment"], workers=2)
    torch.set_num_threads(2)
    trainer = Trainer(cfg, env_factory=make_rank_env, run_dir=tmp_path / "run")

    history = []
    while trainer.updates_done < MAX_UPDATES:
        stats = trainer.train(max_updates=trainer.updates_done + 5)
        history.append((trainer.updates_done, round(stats["episode/success"], 3)))
        if len(trainer.window.episodes) >= 100 and stats["episode/success"] >= TARGET_SR:
            break
    success = history[-1][1]
    assert success >= TARGET_SR, f"training-episode SR by update: {history}"
    assert history[0][1] < 0.5, f"the task should not be solved before learning: {history}"

    # the same policy with each episode hearing another's spectrogram: if it found the goal by sight alone
    # (the scene's two sources learnt from its views), its success would not depend on what it hears
    check = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, val_episodes=96))
    heard = run_validation(trainer.policy, make_rank_env(check, "train", 0), check, trainer.device)
    swapped = run_validation(trainer.policy, SwappedAudio(make_rank_env(check, "train", 0)), check, trainer.device)
    assert heard["success"] >= swapped["success"] + 0.25, (heard, swapped)


class SwappedAudio:
    """An env whose episodes each hear the spectrogram of the next env's episode: another pose, and with two
    sources often another goal, so the sound no longer says where this episode's goal is."""

    def __init__(self, env) -> None:
        self.env, self.num_envs = env, env.num_envs

    def swap(self, obs: dict) -> dict:
        return {**obs, "spectrogram": torch.roll(torch.as_tensor(obs["spectrogram"]), 1, dims=0)}

    def reset(self) -> dict:
        return self.swap(self.env.reset())

    def step(self, action):
        obs, reward, done, info = self.env.step(action)
        return self.swap(obs), reward, done, info
