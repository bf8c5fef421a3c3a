"""How far the ASE's intensity attention (eqs. 1-2) is from a plain mean over frames in this world.

Eq. (2) is a softmax over the raw mean magnitudes of eq. (1), with no temperature, so how peaked the
weights are depends on the spectrogram's absolute scale. This renders spectrograms of random sounds of
the bank at random (receiver, source, yaw) triples of one baked scene, as the task does (the responses
from the straight-line arrival, ``task.keep_travel_time`` false; ``--keep-travel-time`` for true), and prints the
largest weight relative to uniform (1.0 = a plain mean) and the weights' entropy relative to the uniform
one (1.0 = a plain mean). It takes seconds per hundred triples.

    python benchmarks/ase_attention.py --scene-dir DATA/scenes/replica/frl_apartment_5 --triples 200
    python benchmarks/ase_attention.py --scene-dir DATA/scenes/replica/frl_apartment_5 --triples 200 --keep-travel-time
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from asgf_nav.acoustics.rir import NUM_YAWS, SceneRirs
from asgf_nav.cli import run_script
from asgf_nav.models.ase import default_time_pool, frame_intensity, pool_frames
from asgf_nav.scenes.store import SceneStore
from asgf_nav.sounds.bank import SoundBank
from asgf_nav.tasks.spectrogram import spectrogram_np


def attention_weights(scene_dir: Path, triples: int, seed: int, travel_time: bool = False) -> np.ndarray:
    """(triples, N) weights of eq. (2) for random sounds heard at random poses of the scene."""
    rirs, bank = SceneRirs(SceneStore(scene_dir), travel_time=travel_time), SoundBank.load()
    names, rng = bank.names(), np.random.default_rng(seed)
    found = []
    for _ in range(triples):
        source, receiver = int(rng.choice(rirs.source_nodes)), int(rng.integers(rirs.num_receivers))
        sound = bank.waveform(names[int(rng.integers(len(names)))], rirs.sample_rate)
        rir = rirs.rir(receiver, source, int(rng.integers(NUM_YAWS)))
        spectrogram = torch.from_numpy(spectrogram_np(sound, rir, rirs.sample_rate))[None]
        intensity = pool_frames(frame_intensity(spectrogram), default_time_pool(spectrogram.shape[2]))
        found.append(torch.softmax(intensity, dim=1)[0].numpy())
    return np.stack(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-dir", type=Path, required=True, help="a baked scene (layout + acoustics)")
    parser.add_argument("--triples", type=int, default=200, help="random (receiver, source, yaw) triples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-travel-time", action="store_true", help="responses with the travel time kept (task.keep_travel_time)"
    )
    args = parser.parse_args(argv)
    if args.triples < 1:
        parser.error(f"--triples: {args.triples} must be at least 1")
    weights = attention_weights(args.scene_dir, args.triples, args.seed, args.keep_travel_time)
    n = weights.shape[1]
    peak = weights.max(axis=1) * n
    entropy = -(weights * np.log(weights)).sum(axis=1) / np.log(n)
    timing = "travel time kept" if args.keep_travel_time else "from the straight-line arrival"
    print(f"{args.scene_dir.name}: {args.triples} spectrograms ({timing}), {n} weights each")
    print(
        f"  largest weight / uniform: median {np.median(peak):.2f}, "
        f"90th percentile {np.percentile(peak, 90):.2f}, max {peak.max():.2f}"
    )
    print(f"  entropy / uniform: median {np.median(entropy):.4f}, min {entropy.min():.4f}")
    return 0


if __name__ == "__main__":
    run_script(main)
