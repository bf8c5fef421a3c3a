"""Cost of one DoA observation cache miss against a per-item numpy reference.

A miss of the ``doa`` provider (``asgf_nav.models.doa.observation``) convolves the episode sound with
the binaural RIR of the agent's pose, resamples to the head's rate and runs the frozen head on each
half-second window. The provider convolves the whole batch of misses in one torch call on the env's
device (``TorchSpectrogram.audio_from_rirs``), where the head runs too; the reference convolves one item
at a time in numpy (``binaural_audio_np``). The provider resamples to the head's rate in torch; that
part's reference is ``scipy.signal.resample_poly`` in float64, which the provider used before. Both run
in turns over ``--rounds`` so a noisy machine slows them alike; the table gives median milliseconds per
miss and the speed-up. Rendering the RIR itself from the baked scene comes on top (the same for both).
On a CPU, running all windows in one forward was measured 3-9 % slower than one forward per window, so
the head keeps the per-window loop.

A second table times whole observations of a batched env with the spectrogram and ``doa`` sensors, every
state new to both caches (as on unheard test sounds): the env hands the audio it rendered for the
spectrograms to the head (``reuse_audio``, the default) or the head renders RIR and audio again. With
``--data-root`` the env uses baked scenes of ``--config`` (the real RIR rendering), else a synthetic world.

    python benchmarks/doa_observation.py --threads 1
    python benchmarks/doa_observation.py --threads 1 --data-root DATA --config replica_unheard --split test
    python benchmarks/doa_observation.py --devices cuda --batch 64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

# sibling benchmarks (benchmarks/ is the script's path)
from env_throughput import build_synthetic, episodes_for, load_baked_world
from scipy.signal import resample_poly
from spectrogram_batch import decaying_rirs

from asgf_nav.acoustics.resample import PolyphaseResampler
from asgf_nav.cli import list_item, non_negative_int, positive_int, run_script
from asgf_nav.config import TaskConfig
from asgf_nav.devices import devices_to_compare
from asgf_nav.models.doa.observation import DoaObservation, register_doa_observation
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.spectrogram import TorchSpectrogram, binaural_audio_np


def time_parts(
    device: torch.device, rirs: list[np.ndarray], sounds_np: np.ndarray, sample_rate: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Median ms per miss of each part, (reference, provider), the two timed in turns."""
    sr, b = sample_rate, len(rirs)
    head = DoaObservation().to(device)
    prompt = torch.stack([head.prompt_for("telephone")] * b).to(device)
    spectrogram = TorchSpectrogram(sr, device)
    sounds = torch.from_numpy(sounds_np).to(device)

    def numpy_audio() -> np.ndarray:
        return np.stack([binaural_audio_np(s, r, sr).T for s, r in zip(sounds_np, rirs)])

    def torch_audio() -> torch.Tensor:
        audio = spectrogram.audio_from_rirs(sounds, rirs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return audio

    def numpy_miss() -> torch.Tensor:
        return head.compute(numpy_audio(), prompt, sr)

    def torch_miss() -> torch.Tensor:
        return head.compute(torch_audio(), prompt, sr)

    received = torch_audio()
    resampler = PolyphaseResampler(sr, head.sample_rate)

    def scipy_resample() -> np.ndarray:
        return resample_poly(received.cpu().numpy().astype(np.float64), resampler.up, resampler.down, axis=-1)

    def torch_resample() -> torch.Tensor:
        out = resampler(received)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    assert np.allclose(scipy_resample(), torch_resample().cpu().numpy(), atol=1e-5), "resampler != scipy"
    assert torch.allclose(numpy_miss(), torch_miss(), atol=1e-5), "provider != reference"
    parts: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "convolution": (numpy_audio, torch_audio),
        "resampling to the head's rate": (scipy_resample, torch_resample),
        "whole miss (without the RIR)": (numpy_miss, torch_miss),
    }
    for pair in parts.values():
        for fn in pair:
            fn()  # warm-up
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in parts}
    for _ in range(rounds):
        for part, pair in parts.items():
            for i, fn in enumerate(pair):
                start = time.perf_counter()
                fn()
                samples[part][i].append((time.perf_counter() - start) / b * 1000)
    return {k: (float(np.median(r)), float(np.median(n))) for k, (r, n) in samples.items()}


def baked_world(args: argparse.Namespace) -> tuple | None:
    """The baked scenes of ``--data-root`` (None without one): the acoustics only, no views are loaded, so
    a data root baked for audio only will do."""
    if not args.data_root:
        return None
    return load_baked_world(args.config, args.data_root, args.split, ["spectrogram"], args.overrides)


def env_for(
    args: argparse.Namespace, device: torch.device, baked: tuple | None = None
) -> tuple[BatchedAudioNavEnv, DoaObservation]:
    """A batched env with the spectrogram and packaged-head ``doa`` sensors on baked (``baked``, or loaded
    here from ``--data-root``) or synthetic scenes."""
    head = register_doa_observation()
    sensors = ["spectrogram", "doa"]
    if args.data_root:
        world, episodes = baked if baked is not None else baked_world(args)
    else:
        world = build_synthetic(16, args.sample_rate, 14, 10, 24)
        episodes = episodes_for(world, "heard", 40, [])
    env = BatchedAudioNavEnv(
        world, episodes, args.batch, device=device, sensors=sensors, cfg=TaskConfig(sensors=sensors), seed=1
    )
    return env, head


def time_observations(env: BatchedAudioNavEnv, head: DoaObservation, rounds: int) -> tuple[float, float]:
    """Median ms per state of an observation whose states are new to both caches, (audio reused, audio
    rendered again by the head), the two timed in turns on the same states."""
    sync = (lambda: torch.cuda.synchronize(env.device)) if env.device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    env.reset()
    samples: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds + 1):  # the first round warms up
        env.step(rng.choice(4, size=env.num_envs, p=[0.0, 0.6, 0.2, 0.2]))
        states = len(set(env.spectrogram_keys().tolist()))
        for i, reuse in enumerate((True, False)):
            env.cache.clear()
            head.cache.rows.clear()
            env.reuse_audio = reuse
            sync()
            start = time.perf_counter()
            env.observe()
            sync()
            if r:
                samples[i].append((time.perf_counter() - start) / states * 1000)
    env.reuse_audio = True
    return float(np.median(samples[0])), float(np.median(samples[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--devices", type=list_item(), nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument("--batch", type=positive_int, default=16, help="misses per provider call (one per env at most)")
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--sample-rate", type=positive_int, default=44100, help="the world's rate (the head resamples)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--data-root", default=None, help="baked scenes for the env table (default: synthetic)")
    parser.add_argument("--config", default=None, help="config of the baked scenes (default: replica_unheard)")
    parser.add_argument(
        "--split",
        default=None,
        choices=["train", "val", "test"],
        help="scene split of the baked scenes (default: test)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides the scenes were baked with (acoustics.*=...)")
    args = parser.parse_intermixed_args()
    given = [flag for flag, value in (("--config", args.config), ("--split", args.split)) if value is not None]
    if args.overrides:
        given.append(f"config overrides {args.overrides}")
    if given and not args.data_root:  # they say which baked scenes; the synthetic world has none
        parser.error(f"{', '.join(given)}: set the baked scenes of --data-root, and none is given")
    args.config, args.split = args.config or "replica_unheard", args.split or "test"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = devices_to_compare(args.devices)
    baked = baked_world(args)  # a bad data root or split ends the run before any timing
    rng = np.random.default_rng(0)
    rirs = decaying_rirs(args.batch, args.sample_rate, 1.0, rng)
    sounds = rng.standard_normal((args.batch, args.sample_rate)).astype(np.float32)
    print(
        f"DoA observation misses: batch {args.batch}, {args.sample_rate} Hz world, 1 s RIRs, "
        f"torch threads {torch.get_num_threads()}, median of {args.rounds} turns"
    )
    print(f"{'device':<7} {'part':<28} {'reference ms':>13} {'provider ms':>12} {'speed-up':>9}")
    for device in devices:
        for part, (ref, new) in time_parts(device, rirs, sounds, args.sample_rate, args.rounds).items():
            print(f"{device.type:<7} {part:<28} {ref:>13.2f} {new:>12.2f} {ref / new:>8.2f}x")
    world = f"baked {args.config} {args.split} scenes" if args.data_root else "synthetic world, 1 s RIRs"
    print(f"\nEnv observations (spectrogram + doa), {args.batch} envs, states new to both caches, {world}")
    print(f"{'device':<7} {'audio rendered twice ms':>24} {'audio reused ms':>16} {'speed-up':>9}")
    for device in devices:
        env, head = env_for(args, device, baked)
        reused, twice = time_observations(env, head, args.rounds)
        print(f"{device.type:<7} {twice:>24.2f} {reused:>16.2f} {twice / reused:>8.2f}x")


if __name__ == "__main__":
    run_script(main)
