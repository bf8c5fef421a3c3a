"""The main job, wired end to end: config -> scenes -> environments -> policy -> PPO trainer.

Only orchestration lives here; each step is one call into the package that owns it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asgf_nav.config import ExperimentConfig, save_config
from asgf_nav.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def prepare_run_dir(cfg: ExperimentConfig) -> Path:
    """Create the run directory and save the resolved config beside the outputs."""
    run_dir = Path(cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


def prepare_training_data(cfg: ExperimentConfig) -> None:
    """Say which data the run uses and bake what the first updates need."""
    from asgf_nav.scenes.build import ensure_scenes
    from asgf_nav.scenes.presets import get_preset

    preset = get_preset(cfg.scenes.dataset)
    train_scenes = preset.split_scenes("train", cfg.scenes.num_scenes)
    logger.info(
        "dataset: embedded %s scene set (%d train scenes) under %s/scenes/%s",
        preset.name, len(train_scenes), cfg.scenes.data_root, preset.name,
    )
    ensure_scenes(cfg, preset.name, train_scenes, stages=("layout", "vision", "acoustics"))


def run_training(cfg: ExperimentConfig, resume: bool = False) -> None:
    from asgf_nav.rl.distributed import init_distributed, is_main_process

    init_distributed()
    run_dir = Path(cfg.train.run_dir)
    setup_logging("INFO" if is_main_process() else "WARNING", run_dir / "train.log" if is_main_process() else None)
    if is_main_process():
        prepare_run_dir(cfg)
    if cfg.train.torch_threads > 0:
        import torch

        torch.set_num_threads(cfg.train.torch_threads)

    prepare_training_data(cfg)

    from asgf_nav.rl.trainer import Trainer
    from asgf_nav.tasks.batched_env import make_env

    trainer = Trainer(cfg, env_factory=make_env, run_dir=run_dir)
    trainer.train(resume=resume)
    logger.info("training finished; outputs in %s (rank %s)", run_dir, os.environ.get("RANK", "0"))
