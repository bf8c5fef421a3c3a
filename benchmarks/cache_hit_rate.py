"""Spectrogram-cache hit rate over a long run, for several cache sizes at once, without computing audio.

The batched env's CPU speed is set by its spectrogram cache: a hit is a gather, a miss costs about one
reference step (RIR rendering, FFT convolution, STFT). This replays the cache's keys (scene, receiver,
source, yaw, sound) through the env's own LRU cache, one float per entry, at each size while B envs walk,
and prints the hit rate per window of the run, so a cache size can be chosen from measurements instead of
guesses.

    python benchmarks/cache_hit_rate.py --data-root /tmp/asgf_data --config replica_heard.yaml \\
        --policy random --steps 4000 --sizes 8192 16384 32768 65536
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from env_throughput import Policy, load_baked_world  # noqa: E402

from asgf_nav.cli import check_output, list_item, non_negative_int, positive_int, run_script  # noqa: E402
from asgf_nav.config import TaskConfig, load_config  # noqa: E402
from asgf_nav.io import atomic_write_text  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv  # noqa: E402
from asgf_nav.tasks.spectrogram import spectrogram_shape  # noqa: E402
from asgf_nav.tasks.spectrogram_cache import SpectrogramCache  # noqa: E402


def key_only_cache(capacity: int) -> SpectrogramCache:
    """The env's own cache with one float per entry in place of a spectrogram: the same replacement policy
    and hit counting, with nothing computed on a miss."""
    return SpectrogramCache(capacity, (1,), "cpu", lambda keys: torch.zeros(len(keys), 1))


def window_ends(steps: int, windows: int) -> list[int]:
    """The last step of each of ``windows`` windows over steps 1..``steps``: the windows differ by one step at
    most, the remainder spread over them, and the last ends at ``steps`` (no step left uncounted)."""
    return [(i + 1) * steps // windows for i in range(windows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="replica_heard.yaml")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--num-envs", type=positive_int, default=64)
    parser.add_argument("--steps", type=positive_int, default=4000, help="batched steps")
    parser.add_argument("--windows", type=positive_int, default=8, help="report the hit rate over this many windows")
    parser.add_argument("--sizes", type=list_item(positive_int), nargs="+", default=[8192, 16384, 32768, 65536])
    parser.add_argument("--policy", choices=["random", "guided"], default="random")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides the scenes were baked with (acoustics.*=...)")
    args = parser.parse_intermixed_args()
    check_output(parser, "--json", args.json)
    if min(args.sizes) < args.num_envs:  # as SpectrogramCache, which refuses a step that does not fit
        parser.error(f"--sizes: {min(args.sizes)} entries cannot hold one step of {args.num_envs} envs")
    if args.windows > args.steps:
        parser.error(f"--windows: {args.windows} windows of {args.steps} steps leave some empty")
    setup_logging("WARNING")
    # only the acoustics are loaded (a data root baked for audio only will do), and the env has no sensor at
    # all: the cache's keys come from the agents' states, no spectrogram or view is computed
    world, episodes = load_baked_world(args.config, args.data_root, "train", ["spectrogram"], args.overrides)
    env = BatchedAudioNavEnv(world, episodes, args.num_envs, sensors=[], cfg=TaskConfig(sensors=[]), seed=args.seed)
    act = Policy(args.policy, args.seed)
    caches = [key_only_cache(size) for size in args.sizes]
    seen: set[int] = set()  # the unbounded cache: a key seen before is a hit
    labels = [str(size) for size in args.sizes] + ["unbounded"]
    sound_split = load_config(args.config, args.overrides).task.sound_split
    entry_mib = 4 * int(np.prod(spectrogram_shape(world.sample_rate))) / 2**20  # one float32 spectrogram
    print(
        f"{args.config} ({sound_split} sounds): {len(world.scenes)} train scenes, {len(episodes)} episodes, "
        f"B = {args.num_envs}, policy {args.policy}; cache sizes in entries ({entry_mib:.3f} MiB each at "
        f"{world.sample_rate} Hz)"
    )
    print(f"{'env-steps':>10} " + " ".join(f"{label:>10}" for label in labels) + f" {'distinct':>9}")
    env.reset()
    ends = set(window_ends(args.steps, args.windows))
    hits, lookups, rows = np.zeros(len(labels)), 0, []
    for step in range(1, args.steps + 1):
        keys = list(dict.fromkeys(int(k) for k in env.spectrogram_keys()))
        lookups += len(keys)
        for j, cache in enumerate(caches):
            before = cache.hits
            cache.lookup(np.asarray(keys, dtype=np.int64))
            hits[j] += cache.hits - before
        hits[-1] += sum(key in seen for key in keys)
        seen.update(keys)
        if step in ends:
            rates = hits / max(lookups, 1)
            rows.append(
                {
                    "env_steps": step * args.num_envs,
                    **dict(zip(labels, rates.tolist())),
                    "distinct": len(seen),
                }
            )
            print(
                f"{step * args.num_envs:>10} " + " ".join(f"{r:>10.3f}" for r in rates) + f" {len(seen):>9}",
                flush=True,
            )
            hits[:], lookups = 0, 0
        env.step(act(env, args.num_envs))
    if args.json:
        atomic_write_text(args.json, json.dumps({"args": vars(args), "windows": rows}, indent=1))


if __name__ == "__main__":
    run_script(main)
