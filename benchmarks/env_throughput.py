"""Environment throughput: batched env (CPU / CUDA) next to the per-step reference, heard and unheard.

The reference is :class:`asgf_nav.tasks.audionav_env.AudioNavEnv`, which computes every observation at
every step the way SoundSpaces does (scipy fftconvolve + STFT per env per step, views from arrays).
The reference always walks randomly (its cost per step does not depend on the policy); the batched env
follows ``--policy``. Throughput is env-steps per second (B steps per batched step). Each row's
``--ref-steps`` reference steps run in turns with its timed batched steps, so each row's ratios compare
speeds measured over the same stretch of a noisy machine.

Two columns for the batched env, because its speed depends on its spectrogram cache:
- "live": ``--steps`` timed steps right after ``--warmup`` untimed ones, misses computed at the hit rate
  reached by then (printed). This is what training sees after that many steps. The reference also takes
  ``--warmup`` untimed steps (once per sound split) before its first timed ones.
- "cached": the same steps replayed from the same state by an env whose cache holds every spectrogram of
  those steps (the upper bound). Its cache is sized to the distinct spectrograms of the timed steps (at
  least ``--cache-size``) and filled by one untimed replay; the timed replay's hit rate is printed ("cached
  hits") and is 1.00 unless something evicted an entry, which is reported as a warning.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from asgf_nav.cli import check_output, list_item, non_negative_int, positive_int, run_script
from asgf_nav.config import TaskConfig, load_config
from asgf_nav.devices import devices_to_compare
from asgf_nav.io import atomic_write_text
from asgf_nav.logging_utils import setup_logging
from asgf_nav.tasks.audionav_env import AudioNavEnv
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.episodes import Episode, resolve_episodes
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world
from asgf_nav.tasks.world import TaskWorld
from baselines.planning import next_action_towards

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
                actions[i] = next_action_towards(env.world.scene(ep.scene), int(node), int(yaw), ep.goal_node)
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


def load_baked_world(
    config: str, data_root: str | None, split: str, sensors: list[str], overrides: Sequence[str] = ()
) -> tuple[TaskWorld, list[Episode]]:
    """The config's baked scenes of ``split`` and their episodes, loading only the views ``sensors`` need
    (``task.sensors`` is overridden): a spectrogram-only benchmark then runs on a data root baked for audio
    only, and loads no RGB-D views it would not use. ``overrides``: the config overrides of the bake
    (``acoustics.*``), which the scenes must match."""
    from asgf_nav.tasks.factory import load_task_data

    root = [f"scenes.data_root={data_root}"] if data_root else []
    cfg = load_config(config, [*overrides, *root, f"task.sensors=[{','.join(sensors)}]"])
    return load_task_data(cfg, split)


def episodes_for(world, sound_split: str, per_scene: int, unheard_sounds: list[str]):
    sounds = ["telephone"] if sound_split == "heard" else unheard_sounds
    cfg = TaskConfig(train_episodes_per_scene=per_scene)
    return resolve_episodes(generate_split(world, "train", sound_split, sounds, cfg), world)


def batched_env(
    world,
    episodes,
    num_envs: int,
    device: str | torch.device,
    cache_size: int,
    seed: int,
    spectrogram_store: str | None,
) -> BatchedAudioNavEnv:
    """The batched env under test, with a spectrogram cache of ``cache_size`` entries (at least ``num_envs``)."""
    return BatchedAudioNavEnv(
        world,
        episodes,
        num_envs,
        device=device,
        sensors=SENSORS,
        seed=seed,
        cache_size=max(cache_size, num_envs),
        cfg=TaskConfig(sensors=SENSORS),
        spectrogram_store=spectrogram_store,
    )


def timed_step(env: BatchedAudioNavEnv, actions: np.ndarray) -> float:
    """Seconds of one ``env.step``, the device synchronised on both sides."""
    sync = (lambda: torch.cuda.synchronize(env.device)) if env.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    env.step(actions)
    sync()
    return time.perf_counter() - start


def hit_rate(before: dict[str, int], after: dict[str, int]) -> float:
    """Share of the cache lookups between two ``cache_stats()`` that hit."""
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    return hits / max(hits + misses, 1)


def time_batched(
    world,
    episodes,
    num_envs: int,
    device: str | torch.device,
    steps: int,
    warmup: int,
    cache_size: int,
    policy: str,
    seed: int = 0,
    spectrogram_store: str | None = None,
    between: Callable[[], None] = lambda: None,
) -> dict:
    """Live: ``steps`` steps after ``warmup`` steps, timing only ``env.step`` (misses included, at the hit
    rate reached). Cached: the same actions replayed from the saved env state by a second env whose cache
    holds every spectrogram of those steps: a cache of ``cache_size`` entries can hold fewer than the timed
    steps look up (B x steps at most), and a replay through it would thrash instead of bounding the speed.
    ``between`` runs after each timed step (live and cached): the reference's turn, timed by itself."""
    env = batched_env(world, episodes, num_envs, device, cache_size, seed, spectrogram_store)
    act = Policy(policy, seed)
    env.reset()
    for _ in range(warmup):
        env.step(act(env, num_envs))
    state = env.state_dict()
    before = env.cache_stats()
    actions, keys, elapsed = [], set(), 0.0
    for _ in range(steps):
        actions.append(act(env, num_envs))
        elapsed += timed_step(env, actions[-1])
        keys.update(env.spectrogram_keys().tolist())  # what this step's observation looked up
        between()
    after = env.cache_stats()
    misses = after["misses"] - before["misses"]
    result = {
        "live": num_envs * steps / elapsed,
        "hit_rate": hit_rate(before, after),
        "store_share": (after["store_reads"] - before["store_reads"]) / max(misses, 1),
    }
    del env  # its cache is freed before the replay's is allocated
    replay = batched_env(world, episodes, num_envs, device, max(cache_size, len(keys)), seed, spectrogram_store)
    replay.load_state_dict(state)
    for a in actions:  # untimed: fills the cache with every spectrogram the timed replay looks up
        replay.step(a)
    replay.load_state_dict(state)
    before = replay.cache_stats()
    elapsed = 0.0
    for a in actions:
        elapsed += timed_step(replay, a)
        between()
    result["cached"] = num_envs * steps / elapsed
    result["cached_hit_rate"] = hit_rate(before, replay.cache_stats())
    result["cached_cache_size"] = replay.cache_stats()["capacity"]
    return result


class ReferenceTimer:
    """The per-step reference env under a random policy (its cost per step does not depend on the policy),
    stepped in turns with the batched env's timed steps, so that both are timed over the same stretch of a
    busy machine and their ratio holds where the absolute speeds drift. ``warmup`` untimed steps come first,
    as for the batched env: its cold start (memmap page-in, HRTF load, first FFTs) would slow the first row."""

    def __init__(self, world, episodes, seed: int = 0, warmup: int = 0) -> None:
        self.env = AudioNavEnv(world, episodes, TaskConfig(sensors=SENSORS), seed=seed)
        self.rng = np.random.default_rng(seed)
        self.env.reset()
        self._walk(warmup)
        self.steps, self.seconds = 0, 0.0

    def _walk(self, steps: int) -> None:
        for _ in range(steps):
            _, _, term, trunc, _ = self.env.step(int(self.rng.choice(4, p=POLICY)))
            if term or trunc:
                self.env.reset()

    def run(self, steps: int) -> None:
        start = time.perf_counter()
        self._walk(steps)
        self.seconds += time.perf_counter() - start
        self.steps += steps

    def spread(self, total: int, turns: int) -> Callable[[], None]:
        """A ``between`` for ``turns`` timed batched steps that runs ``total`` reference steps over them."""
        done = iter(range(1, turns + 1))

        def turn() -> None:
            i = next(done, turns)
            self.run(i * total // turns - (i - 1) * total // turns)

        return turn


SYNTHETIC_ONLY = ("image_size", "sample_rate", "grid", "sources")
EMBEDDED_ONLY = ("config", "data_root", "overrides")


def check_world_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Each world takes only its own options: the embedded world's sizes come from its config and bake, the
    synthetic world has no config; an option of the other world would be dropped without a word."""
    other = SYNTHETIC_ONLY if args.world == "embedded" else EMBEDDED_ONLY
    given = [name for name in other if getattr(args, name)]
    if given:
        flags = ", ".join(
            f"config overrides {args.overrides}" if name == "overrides" else "--" + name.replace("_", "-")
            for name in given
        )
        where = "its config (scenes.*=, acoustics.*= overrides)" if args.world == "embedded" else "its options"
        parser.error(f"{flags}: not used by --world {args.world}, whose settings come from {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["synthetic", "embedded"], default="synthetic")
    parser.add_argument("--config", default=None, help="config for --world embedded (default: replica_heard.yaml)")
    parser.add_argument("--data-root", default=None, help="scenes.data_root for --world embedded")
    parser.add_argument("--sizes", type=list_item(positive_int), nargs="+", default=[1, 16, 64, 256, 1024])
    parser.add_argument(
        "--devices", type=list_item(), nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument(
        "--sound-splits", type=list_item(), nargs="+", choices=["heard", "unheard"], default=["heard", "unheard"]
    )
    parser.add_argument("--policy", choices=["random", "guided"], default="random")
    parser.add_argument("--steps", type=positive_int, default=30, help="timed batched steps per setting")
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=30,
        help="untimed steps first, for the batched env (fills the cache) and for the reference (once per sound split)",
    )
    parser.add_argument(
        "--ref-steps", type=positive_int, default=40, help="reference steps per row, in turns with its timed steps"
    )
    parser.add_argument("--cache-size", type=non_negative_int, default=8192)
    parser.add_argument("--image-size", type=positive_int, default=None, help="synthetic world (default: 128)")
    parser.add_argument("--sample-rate", type=positive_int, default=None, help="synthetic world (default: 44100)")
    parser.add_argument(
        "--grid", type=positive_int, nargs=2, default=None, help="synthetic world's grid nodes nx nz (default: 14 10)"
    )
    parser.add_argument("--sources", type=positive_int, default=None, help="synthetic world's sources (default: 24)")
    parser.add_argument("--spectrogram-store", default=None, help="baked spectrograms for the batched env")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("overrides", nargs="*", help="config overrides the scenes were baked with (acoustics.*=...)")
    args = parser.parse_intermixed_args()
    check_output(parser, "--json", args.json)
    check_world_options(parser, args)
    if args.spectrogram_store and not Path(args.spectrogram_store).is_dir():
        parser.error(f"--spectrogram-store: {args.spectrogram_store} is not a directory")
    setup_logging("WARNING")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = devices_to_compare(args.devices)  # a device this machine lacks ends the run before any work

    if args.world == "embedded":
        from asgf_nav.sounds.bank import SoundBank

        world, _ = load_baked_world(
            args.config or "replica_heard.yaml", args.data_root, "train", SENSORS, args.overrides
        )
        unheard = list(SoundBank.load().names("train"))
    else:
        grid = args.grid or (14, 10)
        world = build_synthetic(args.image_size or 128, args.sample_rate or 44100, *grid, args.sources or 24)
        unheard = [f"sound_{i:02d}" for i in range(73)]
    results = []
    print(
        f"world: {args.world}, {len(world.scenes)} scenes, {world.sample_rate} Hz, sensors {SENSORS}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for sound_split in args.sound_splits:
        episodes = episodes_for(world, sound_split, 500, unheard)
        reference = ReferenceTimer(world, episodes, warmup=args.warmup)
        print(f"\n[{sound_split}] the per-step reference timed in turns with each row's timed steps")
        print(
            f"{'device':>6} {'B':>5} {'ref steps/s':>12} {'live steps/s':>13} {'x ref':>7} {'hit rate':>9} "
            f"{'store':>6} {'cached steps/s':>15} {'x ref':>7} {'cached hits':>12}"
        )
        for device in devices:
            for b in args.sizes:
                steps_before, seconds_before = reference.steps, reference.seconds
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
                    between=reference.spread(args.ref_steps, 2 * args.steps),  # live and cached turns
                )
                ref = (reference.steps - steps_before) / (reference.seconds - seconds_before)
                row = {
                    "sound_split": sound_split,
                    "device": str(device),
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
                share = f"{r['store_share']:>6.2f}" if args.spectrogram_store else f"{'-':>6}"  # no store, no share
                print(
                    f"{str(device):>6} {b:>5} {ref:>12.1f} {r['live']:>13.0f} {r['live'] / ref:>7.1f} "
                    f"{r['hit_rate']:>9.2f} {share} {r['cached']:>15.0f} {r['cached'] / ref:>7.1f} "
                    f"{r['cached_hit_rate']:>12.2f}",
                    flush=True,
                )
                if r["cached_hit_rate"] < 1.0:
                    print(
                        f"warning: the cached replay ({r['cached_cache_size']} entries) hit only "
                        f"{r['cached_hit_rate']:.2f} of its lookups; its column is not the upper bound",
                        flush=True,
                    )
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    run_script(main)
