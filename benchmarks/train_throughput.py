"""End-to-end PPO training throughput (frames/s) per policy, on CPU and (when present) CUDA.

Each measurement builds the real :class:`asgf_nav.rl.trainer.Trainer` around an env, runs warm-up
updates, then times full updates (``Trainer.update_once``: rollout + PPO epochs; no checkpoint, config file
or TensorBoard writer is timed). Envs:
  synthetic  the batched AudioGoal env on a synthetic grid world (no baked scenes needed; default)
  embedded   the batched env on the config's baked scenes (asgf_nav.tasks.factory.make_env)
  random     random observations of the right shapes: the learner's own ceiling, no env cost

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --env random --policies asgf av_nav --devices cpu cuda --updates 3
    python benchmarks/train_throughput.py --env embedded --config replica_unheard --json out.json
    python benchmarks/train_throughput.py --env embedded --config replica_heard task.spectrogram_store=
    python benchmarks/train_throughput.py --env synthetic task.use_doa=true --policies asgf   # with the DoA head

Every policy (and every ``--variant NAME:KEY=V,KEY=V``, repeatable, applied after the positional
overrides) gets its own trainer, and on each device their timed updates run in turns (A, B, A, B, ...), so
a busy machine slows them alike. Each one's frames/s is printed with its ratio to the first policy (and
first variant) on that device, each labelled by the policy it ran (a variant's model.policy= included):

    python benchmarks/train_throughput.py --env embedded --config replica_heard --policies asgf --num-envs 16 \
        --updates 6 --variant store --variant no_store:task.spectrogram_store=
    python benchmarks/train_throughput.py --env synthetic --policies asgf --variant plain \
        --variant doa:task.use_doa=true,task.doa_cache_size=0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from asgf_nav.cli import check_output, int_at_least, list_item, non_negative_int, positive_int, run_script
from asgf_nav.config import load_config
from asgf_nav.devices import devices_to_compare
from asgf_nav.experiment import register_auxiliary_observations
from asgf_nav.io import atomic_write_text
from asgf_nav.logging_utils import setup_logging
from asgf_nav.models.encoders import smallest_visual_size
from asgf_nav.models.policies import POLICY_REGISTRY
from asgf_nav.rl.trainer import Trainer
from asgf_nav.tasks.observations import BUILTIN_SENSORS, ObservationProvider, get_observation, register_observation

SENSORS = ["rgb", "depth", "spectrogram"]


class RandomObservationEnv:
    """Random observations in the env contract's shapes; episodes end with probability 1/100 per step."""

    def __init__(self, num_envs: int, image_size: int, frames: int, device: str | torch.device, seed: int = 0) -> None:
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


def synthetic_env(cfg: Any, device: torch.device, image_size: int) -> Any:
    from asgf_nav.config import TaskConfig
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.episodes import resolve_episodes
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


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``--variant NAME:KEY=V,KEY=V`` -> (NAME, overrides). A comma inside brackets belongs to its value
    (``task.sensors=[depth,spectrogram]``); ``NAME`` alone (or ``NAME:``) times the base config."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} has no name; use NAME:KEY=V,KEY=V")
    overrides, depth, item = [], 0, ""
    for char in rest:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            overrides.append(item)
            item = ""
        else:
            item += char
    overrides = [o.strip() for o in [*overrides, item] if o.strip()]
    bad = [o for o in overrides if "=" not in o or not o.partition("=")[0].strip()]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r}: {bad[0]!r} is not a KEY=V override")
    return name.strip(), overrides


@dataclass
class Contender:
    """One config variant's trainer, its own observation providers and the seconds its timed updates took."""

    name: str
    overrides: list[str]
    trainer: Trainer
    providers: dict[str, ObservationProvider]
    seconds: float = 0.0

    def update(self) -> float:
        """Seconds of one ``Trainer.update_once`` (rollout + PPO epochs), the device synchronised on both sides;
        nothing else the trainer does (config file, TensorBoard writer, checkpoints) is timed."""
        for name, p in self.providers.items():  # the registry is process-wide: this variant's own head and cache
            register_observation(name, p.compute, p.space, p.compute_batch, True, p.needs_spectrogram)
        device = self.trainer.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        self.trainer.update_once()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start


def build_trainer(
    cfg: Any, env_kind: str, device: torch.device, warmup: int, updates: int, image_size: int, run_dir: str
) -> Trainer:
    """The real trainer around an env of ``env_kind``, with a frame budget of ``warmup + updates`` updates (its
    learning-rate schedule) and no checkpoints or validation."""
    frames = 69 if cfg.scenes.dataset == "replica" else 26

    def factory(cfg: Any, split: str, rank: int) -> Any:
        if env_kind == "random":
            seed = cfg.train.seed + rank
            return RandomObservationEnv(cfg.ppo.num_envs, image_size, frames, device, seed)
        if env_kind == "synthetic":
            return synthetic_env(cfg, device, image_size)
        from asgf_nav.tasks.factory import make_env

        return make_env(cfg, split, device=device, seed=cfg.train.seed + rank)

    if env_kind != "random":
        register_auxiliary_observations(cfg)  # task.use_doa=true adds the frozen DoA head's observation
    cfg.train.device = str(device)
    cfg.ppo.total_frames = (warmup + updates) * cfg.ppo.num_steps * cfg.ppo.num_envs
    cfg.train.checkpoint_interval, cfg.train.val_interval = 10**9, 0
    return Trainer(cfg, factory, run_dir)


def measure(
    variants: list[tuple[str, list[str], Any]],
    env_kind: str,
    device: torch.device,
    warmup: int,
    updates: int,
    image_size: int,
) -> list[dict]:
    """Frames/s of each (name, overrides, config) variant: ``warmup`` untimed updates each, then ``updates``
    timed ones in turns (A, B, A, B, ...), so that a busy machine slows every variant alike and their
    ratios hold even where the absolute numbers drift."""
    contenders = []
    with tempfile.TemporaryDirectory() as run_dir:  # update_once writes nothing there; a trainer needs one
        for i, (name, overrides, cfg) in enumerate(variants):
            trainer = build_trainer(cfg, env_kind, device, warmup, updates, image_size, f"{run_dir}/{i}")
            extra = [s for s in cfg.task.sensors if s not in BUILTIN_SENSORS]  # providers it just registered
            contenders.append(Contender(name, overrides, trainer, {s: get_observation(s) for s in extra}))
        for contender in contenders:
            for _ in range(warmup):
                contender.update()
        for _ in range(updates):
            for contender in contenders:
                contender.seconds += contender.update()
    results = []
    for contender in contenders:
        trainer = contender.trainer
        results.append(
            {
                "variant": contender.name,
                "overrides": contender.overrides,
                "policy": trainer.cfg.model.policy,
                "device": str(device),
                "env": env_kind,
                "num_envs": trainer.num_envs,
                "num_steps": trainer.cfg.ppo.num_steps,
                "fps": updates * trainer.frames_per_update / contender.seconds,
                "seconds": contender.seconds,
            }
        )
    for result in results:
        result["ratio"] = result["fps"] / results[0]["fps"]
    return results


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--env", choices=["synthetic", "embedded", "random"], default="synthetic")
    parser.add_argument("--config", default=None, help="config name or YAML path (default: defaults)")
    parser.add_argument("--policies", type=list_item(), nargs="+", default=sorted(POLICY_REGISTRY))
    parser.add_argument(
        "--devices", type=list_item(), nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument("--num-envs", type=positive_int, default=None, help="default: the config's")
    parser.add_argument("--num-steps", type=positive_int, default=32)
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed updates per variant")
    parser.add_argument("--updates", type=positive_int, default=2, help="timed updates per variant")
    parser.add_argument(
        "--image-size",
        type=int_at_least(smallest_visual_size(), "the policies' visual CNN leaves no pixel of a smaller image"),
        default=None,
        help="rgb/depth side for --env random and synthetic (default: 128); --env embedded takes its config's",
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        type=parse_variant,
        default=[],
        metavar="NAME:KEY=V,...",
        help="a config variant timed in turns with the others (repeat; the first is the ratios' base); its "
        "overrides come last, so a variant may set model.policy or ppo.num_steps itself",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides like task.spectrogram_store=")
    args = parser.parse_args()
    if args.image_size is not None and args.env == "embedded":  # its views are baked at scenes.image_size
        parser.error("--image-size: not used by --env embedded, whose images come from its config (scenes.image_size=)")
    image_size = args.image_size or 128
    unknown = sorted(set(args.policies) - set(POLICY_REGISTRY))
    if unknown:
        parser.error(f"--policies: {unknown} are not policies; choose from {sorted(POLICY_REGISTRY)}")
    check_output(parser, "--json", args.json)
    setup_logging("WARNING")
    devices = devices_to_compare(args.devices)  # a device this machine lacks ends the run before any work
    variants = args.variants or [("", [])]
    names = [name for name, _ in variants]
    width = max(len(name) for name in names)
    if len(set(names)) != len(names):
        parser.error(f"--variant: the names {names} repeat one")

    results = []
    print(f"torch threads {torch.get_num_threads()}", flush=True)  # the CPU frames/s depend on it
    for device in devices:
        configs = []  # every policy and variant on this device, timed in turns: their ratios hold together
        for policy in args.policies:
            for name, overrides in variants:
                chosen = [f"model.policy={policy}", f"ppo.num_steps={args.num_steps}"]
                chosen += [f"ppo.num_envs={args.num_envs}"] if args.num_envs else []
                cfg = load_config(args.config, [*args.overrides, *chosen, *overrides])  # the variant's win
                if cfg.task.use_doa and args.env == "random":
                    where = f"--variant {name}: " if name else ""
                    parser.error(
                        f"{where}task.use_doa=true needs --env embedded or synthetic (random observations have no doa)"
                    )
                configs.append((name, overrides, cfg))
        measured = measure(configs, args.env, device, args.warmup, args.updates, image_size)
        # the policy each ran, which a variant's model.policy= may have changed from --policies
        base = f"{measured[0]['policy']}{'/' + measured[0]['variant'] if args.variants else ''}"
        for result in measured:
            result["threads"] = torch.get_num_threads()
            results.append(result)
            line = (
                f"{result['policy']:14s} {str(device):5s} env={args.env:9s} envs={result['num_envs']:3d} "
                f"steps={result['num_steps']:4d}  "
            )
            if args.variants:
                line += f"{result['variant']:>{width}s} "
            line += f"{result['fps']:8.1f} frames/s {result['ratio']:6.2f}x {base}"
            if args.variants:
                line += f"  ({','.join(result['overrides']) or 'no overrides'})"
            print(line, flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    run_script(main)
