"""PPO / DD-PPO training: rollout storage, the PPO update, distributed helpers, checkpoints, the trainer."""
