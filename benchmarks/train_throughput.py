"""End-to-end PPO training throughput (frames/s) per policy, on CPU and (when present) CUDA.

Each measurement builds the real :class:`asgf_nav.rl.trainer.Trainer` around an env, runs warm-up
updates, then times full updates (rollout + PPO epochs). Envs:
  synthetic  the batched AudioGoal env on a synthetic grid world (no baked scenes needed; default)
  embedded   the batched env on the config's baked scenes (asgf_nav.tasks.factory.make_env)
  random     random observations of the right shapes: the learner's own ceiling, no env cost

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --env random --policies asgf av_nav --devices cpu cuda --updates 3
    python benchmarks/train_throughput.py --env embedded --config replica_unheard --json out.json
    python benchmarks/train_throughput.py --env embedded --config replica_heard task.spectrogram_store=
    python benchmarks/train_throughput.py --env synthetic task.use_doa=true --policies asgf   # with the DoA head
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from asgf_nav.cli import run_script
from asgf_nav.config import load_config
from asgf_nav.experiment import register_auxiliary_observations
from asgf_nav.logging_utils import setup_logging
from asgf_nav.models.policies import POLICY_REGISTRY
from asgf_nav.rl.trainer import Trainer

SENSORS = ["rgb", "depth", "spectrogram"]


class RandomObservationEnv:
    """Random observations in the env contract's shapes; episodes end with probability 1/100 per step."""

    def __init__(self, num_envs: int, image_size: int, frames: int, device: str, seed: int = 0) -> None:
        self.num_envs, self.device = num_envs, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.observation_space = spaces.Dict(
            {
                "rgb": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
                "depth": spaces.Box(0.0, 1.0, (image_size, image_size, 1), np.float32),
                "spectrogram": spaces.Box(0.0, 50.0, (65, frames, 2), np.float32),
            }
        )

    def observe(self) -> dict[str, torch.Tensor]:
        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(self.num_envs, *shape, generator=self.generator, device=self.device)

        shapes = {k: s.shape for k, s in self.observation_space.spaces.items()}
        return {
            "rgb": (rand(*shapes["rgb"]) * 255).to(torch.uint8),
            "depth": rand(*shapes["depth"]),
            "spectrogram": rand(*shapes["spectrogram"]) * 3,
        }

    def reset(self) -> dict[str, torch.Tensor]:
        return self.observe()

    def step(self, actions: torch.Tensor):
        done = torch.rand(self.num_envs, generator=self.generator, device=self.device) < 0.01
        zeros = torch.zeros(self.num_envs, device=self.device)
        info = {k: zeros for k in ("success", "spl", "softspl", "sna", "distance_to_goal", "num_actions")}
        return self.observe(), zeros - 0.01, done, info


def synthetic_env(cfg: Any, device: str, image_size: int) -> Any:
    from asgf_nav.config import TaskConfig
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episodes import generate_split, resolve_episodes
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

    sample_rate = 44100 if cfg.scenes.dataset == "replica" else 16000
    scenes = [
        grid_scene(
            f"bench_{i}",
            nx=10,
            nz=8,
            grid_size=0.5,
            image_size=image_size,
            sample_rate=sample_rate,
            rir_seconds=0.5,
            num_sources=12,
            dataset=cfg.scenes.dataset,
        )
        for i in range(2)
    ]
    world = synthetic_world(scenes, sample_rate=sample_rate, dataset=cfg.scenes.dataset)
    episodes = resolve_episodes(
        generate_split(world, "train", "heard", ["telephone"], TaskConfig(train_episodes_per_scene=50)), world
    )
    sensors = [*SENSORS, "doa"] if cfg.task.use_doa else SENSORS
    return BatchedAudioNavEnv(
        world, episodes, cfg.ppo.num_envs, device=device, sensors=sensors, seed=cfg.train.seed, cfg=cfg
    )


def measure(cfg: Any, env_kind: str, device: str, warmup: int, updates: int, image_size: int) -> dict:
    frames = 69 if cfg.scenes.dataset == "replica" else 26
    env_device = device

    def factory(cfg: Any, split: str, rank: int) -> Any:
        if env_kind == "random":
            seed = cfg.train.seed + rank
            return RandomObservationEnv(cfg.ppo.num_envs, image_size, frames, env_device, seed)
        if env_kind == "synthetic":
            return synthetic_env(cfg, env_device, image_size)
        from asgf_nav.tasks.factory import make_env

        return make_env(cfg, split, device=env_device, seed=cfg.train.seed + rank)

    if env_kind != "random":
        register_auxiliary_observations(cfg)  # task.use_doa=true adds the frozen DoA head's observation
    cfg.train.device = device
    cfg.ppo.total_frames = (warmup + updates) * cfg.ppo.num_steps * cfg.ppo.num_envs
    cfg.train.checkpoint_interval, cfg.train.val_interval = 10**9, 0
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, factory, run_dir)
        trainer.train(max_updates=warmup)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train(max_updates=warmup + updates)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    frames_done = updates * cfg.ppo.num_steps * cfg.ppo.num_envs
    return {
        "policy": cfg.model.policy,
        "device": device,
        "env": env_kind,
        "num_envs": cfg.ppo.num_envs,
        "num_steps": cfg.ppo.num_steps,
        "fps": frames_done / seconds,
        "seconds": seconds,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--env", choices=["synthetic", "embedded", "random"], default="synthetic")
    parser.add_argument("--config", default=None, help="config name or YAML path (default: defaults)")
    parser.add_argument("--policies", nargs="+", default=sorted(POLICY_REGISTRY))
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=devices)
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument("--num-steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides like task.spectrogram_store=")
    args = parser.parse_args()
    setup_logging("WARNING")

    results = []
    for device in args.devices:
        for policy in args.policies:
            cfg = load_config(args.config, args.overrides)
            if cfg.task.use_doa and args.env == "random":
                parser.error("task.use_doa=true needs --env embedded or synthetic (random observations have no doa)")
            cfg.model.policy, cfg.ppo.num_steps = policy, args.num_steps
            if args.num_envs:
                cfg.ppo.num_envs = args.num_envs
            result = measure(cfg, args.env, device, args.warmup, args.updates, args.image_size)
            results.append(result)
            print(
                f"{policy:14s} {device:5s} env={args.env:9s} envs={result['num_envs']:3d} "
                f"steps={result['num_steps']:4d}  {result['fps']:8.1f} frames/s",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    run_script(main)
