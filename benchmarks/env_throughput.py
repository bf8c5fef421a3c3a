"""Environment throughput: batched env (CPU / CUDA) next to the per-step reference, heard and unheard.

The reference is :class:`asgf_nav.tasks.audionav_env.AudioNavEnv`, which computes every observation at
every step the way SoundSpaces does (scipy fftconvolve + STFT per env per step, views from arrays).
Both run the same policy; throughput is env-steps per second (B steps per batched step).

Two columns for the batched env, because its speed depends on its spectrogram cache:
- "live": ``--steps`` timed steps right after ``--warmup`` untimed ones, misses computed at the hit rate
  reached by then (printed). This is what training sees after that many steps.
- "cached": the same steps replayed with every spectrogram already cached (the upper bound).

With ``--spectrogram-store DIR`` (baked by scripts/bake_spectrograms.py) the batched env reads its misses
from the store where it covers them; the "store" column is the share of misses read from it.

``--policy random`` (default) walks randomly; ``--policy guided`` follows the shortest path with
probability 0.7 and acts randomly otherwise, a stand-in for a learning agent (fewer revisits).

    python benchmarks/env_throughput.py                       # synthetic replica-sized world, CPU (+CUDA)
    python benchmarks/env_throughput.py --world embedded --config replica_heard.yaml --sizes 64 \
        --warmup 300 --cache-size 16384                       # baked scenes, training-like cache state
    python benchmarks/env_throughput.py --world embedded --config replica_heard.yaml --sizes 64 \
        --sound-splits heard --spectrogram-store DATA/spectrograms   # misses read from baked spectrograms
    python benchmarks/env_throughput.py --sizes 64 --steps 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from asgf_nav.cli import run_script
from asgf_nav.config import TaskConfig, load_config
from asgf_nav.logging_utils import setup_logging
from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episodes import generate_split, resolve_episodes
from asgf_nav.tasks.navigation import oracle_next_action
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SENSORS = ["rgb", "depth", "spectrogram"]
POLICY = np.array([0.02, 0.5, 0.24, 0.24])  # STOP, FORWARD, LEFT, RIGHT
GUIDED_RANDOM_FRACTION = 0.3


class Policy:
    """Random actions, or shortest-path actions mixed with random ones (``guided``)."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(seed)

    def __call__(self, env, size: int) -> np.ndarray:
        actions = self.rng.choice(4, size=size, p=POLICY)
        if self.kind == "random":
            return actions
        for i, (ep, node, yaw) in enumerate(zip(env.current_episodes(), env.local_nodes(), env.yaw)):
            if self.rng.random() >= GUIDED_RANDOM_FRACTION:
                scene = env.world.scene(ep.scene)
                hops = np.asarray(scene.geodesic_hops[:, ep.goal_node])
                actions[i] = oracle_next_action(np.asarray(scene.neighbors), hops, int(node), int(yaw))
        return actions


def build_synthetic(image_size: int, sample_rate: int, nx: int, nz: int, sources: int):
    scenes = [
        grid_scene(
            f"bench_{i}",
            nx=nx,
            nz=nz,
            grid_size=0.5,
            blocked=((nx // 2, nz // 2),),
            image_size=image_size,
            sample_rate=sample_rate,
            rir_seconds=1.0,
            num_sources=sources,
            dataset="replica",
        )
        for i in range(2)
    ]
    return synthetic_world(scenes, sample_rate=sample_rate, dataset="replica")


def episodes_for(world, sound_split: str, per_scene: int, unheard_sounds: list[str]):
    sounds = ["telephone"] if sound_split == "heard" else unheard_sounds
    cfg = TaskConfig(train_episodes_per_scene=per_scene)
    return resolve_episodes(generate_split(world, "train", sound_split, sounds, cfg), world)


def time_batched(
    world,
    episodes,
    num_envs: int,
    device: str,
    steps: int,
    warmup: int,
    cache_size: int,
    policy: str,
    seed: int = 0,
    spectrogram_store: str | None = None,
) -> dict:
    """Live: ``steps`` steps after ``warmup`` steps, timing only ``env.step`` (misses included, at the hit
    rate reached). Cached: the same actions replayed from the saved env state, every spectrogram cached."""
    env = BatchedAudioNavEnv(
        world,
        episodes,
        num_envs,
        device=device,
        sensors=SENSORS,
        seed=seed,
        cache_size=cache_size,
        cfg=TaskConfig(sensors=SENSORS),
        spectrogram_store=spectrogram_store,
    )
    act = Policy(policy, seed)
    env.reset()
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        env.step(act(env, num_envs))
    state = env.state_dict()
    before = env.cache_stats()
    actions, elapsed = [], 0.0
    for _ in range(steps):
        actions.append(act(env, num_envs))
        sync()
        start = time.perf_counter()
        env.step(actions[-1])
        sync()
        elapsed += time.perf_counter() - start
    after = env.cache_stats()
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    reads = after["store_reads"] - before["store_reads"]
    result = {
        "live": num_envs * steps / elapsed,
        "hit_rate": hits / max(hits + misses, 1),
        "store_share": reads / max(misses, 1),
    }
    env.load_state_dict(state)
    sync()
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    sync()
    result["cached"] = num_envs * steps / (time.perf_counter() - start)
    return result


def time_reference(world, episodes, steps: int, seed: int = 0) -> float:
    """Per-step reference env under a random policy (its cost per step does not depend on the policy)."""
    env = AudioNavEnv(world, episodes, TaskConfig(sensors=SENSORS), seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.choice(4, p=POLICY)))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["synthetic", "embedded"], default="synthetic")
    parser.add_argument("--config", default="replica_heard.yaml", help="config for --world embedded")
    parser.add_argument("--data-root", default=None, help="scenes.data_root for --world embedded")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--sound-splits", nargs="+", default=["heard", "unheard"])
    parser.add_argument("--policy", choices=["random", "guided"], default="random")
    parser.add_argument("--steps", type=int, default=30, help="timed batched steps per setting")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (fills the cache)")
    parser.add_argument("--ref-steps", type=int, default=40)
    parser.add_argument("--cache-size", type=int, default=8192)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--grid", type=int, nargs=2, default=[14, 10], help="synthetic grid nodes (nx nz)")
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--spectrogram-store", default=None, help="baked spectrograms for the batched env")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    setup_logging("WARNING")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    if args.world == "embedded":
        from asgf_nav.sounds.bank import SoundBank
        from asgf_nav.tasks.factory import load_task_data

        cfg = load_config(args.config, [f"scenes.data_root={args.data_root}"] if args.data_root else [])
        world, _ = load_task_data(cfg, "train")
        unheard = list(SoundBank.load().names("train"))
    else:
        world = build_synthetic(args.image_size, args.sample_rate, args.grid[0], args.grid[1], args.sources)
        unheard = [f"sound_{i:02d}" for i in range(73)]
    results = []
    print(
        f"world: {args.world}, {len(world.scenes)} scenes, {world.sample_rate} Hz, sensors {SENSORS}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for sound_split in args.sound_splits:
        episodes = episodes_for(world, sound_split, 500, unheard)
        ref = time_reference(world, episodes, args.ref_steps)
        print(f"\n[{sound_split}] per-step reference: {ref:.1f} env-steps/s")
        print(
            f"{'device':>6} {'B':>5} {'live steps/s':>13} {'x ref':>7} {'hit rate':>9} {'store':>6} "
            f"{'cached steps/s':>15} {'x ref':>7}"
        )
        for device in devices:
            for b in args.sizes:
                r = time_batched(
                    world,
                    episodes,
                    b,
                    device,
                    args.steps,
                    args.warmup,
                    max(args.cache_size, b),
                    args.policy,
                    spectrogram_store=args.spectrogram_store,
                )
                row = {
                    "sound_split": sound_split,
                    "device": device,
                    "num_envs": b,
                    "policy": args.policy,
                    "warmup": args.warmup,
                    "cache_size": max(args.cache_size, b),
                    "reference": ref,
                    **r,
                    "live_ratio": r["live"] / ref,
                    "cached_ratio": r["cached"] / ref,
                }
                results.append(row)
                print(
                    f"{device:>6} {b:>5} {r['live']:>13.0f} {r['live'] / ref:>7.1f} {r['hit_rate']:>9.2f} "
                    f"{r['store_share']:>6.2f} {r['cached']:>15.0f} {r['cached'] / ref:>7.1f}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    run_script(main)
