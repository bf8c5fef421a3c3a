"""Cost of one spectrogram observation against the number computed per torch call, per device.

A cache miss of the batched env (and every state of scripts/bake_spectrograms.py) is one FFT convolution
of a one-second sound with a one-second binaural RIR plus an STFT (``TorchSpectrogram.from_rirs``). The
chunk size that call works in sets its speed: large chunks amortise launches on a GPU, while on a CPU a
chunk whose spectra outgrow the caches is slower per observation. The batch sizes are timed in turns
(round robin over ``--rounds``) so that a noisy machine slows them alike; the table gives the median
milliseconds per observation and that time relative to the device's default chunk
(``spectrogram.default_batch``): above 1 is slower than the default, below 1 faster.

    python benchmarks/spectrogram_batch.py --threads 1
    python benchmarks/spectrogram_batch.py --devices cuda --observations 1024 --batches 16 64 256 1024
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from asgf_nav.cli import non_negative_int, positive_float, positive_int, run_script
from asgf_nav.devices import devices_to_compare
from asgf_nav.tasks.spectrogram import TorchSpectrogram, default_batch


def decaying_rirs(count: int, sample_rate: int, seconds: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Binaural noise responses with a 0.5 s T60: as long as the embedded world's, so the FFT sizes match."""
    length = int(seconds * sample_rate)
    decay = np.exp(-6.9 * np.arange(length) / (0.5 * sample_rate))[:, None]
    return [(rng.standard_normal((length, 2)) * decay).astype(np.float32) for _ in range(count)]


def time_batches(
    device: torch.device, batches: list[int], observations: int, rounds: int, sample_rate: int, rir_seconds: float
) -> dict[int, float]:
    """Median seconds per observation for each chunk size, the sizes timed in turns."""
    rng = np.random.default_rng(0)
    spectrogram = TorchSpectrogram(sample_rate, device)
    sounds = torch.from_numpy(rng.standard_normal((observations, sample_rate)).astype(np.float32)).to(device)
    rirs = decaying_rirs(observations, sample_rate, rir_seconds, rng)
    for batch in batches:  # warm-up: every chunk shape a timed call makes (FFT plans, allocations) is made once
        warm = min(observations, batch + observations % batch)  # a full chunk and the timed calls' last one
        spectrogram.from_rirs(sounds[:warm], rirs[:warm], batch)
    samples: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(rounds):
        for batch in batches:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            spectrogram.from_rirs(sounds, rirs, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            samples[batch].append((time.perf_counter() - start) / observations)
    return {b: float(np.median(s)) for b, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--observations", type=positive_int, default=256, help="spectrograms per timed call")
    parser.add_argument("--rounds", type=positive_int, default=5, help="timed turns over all batch sizes")
    parser.add_argument("--sample-rate", type=positive_int, default=44100)
    parser.add_argument("--rir-seconds", type=positive_float, default=1.0)
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = devices_to_compare(args.devices)
    print(f"{args.observations} observations per call, {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print("| device | batch | ms per observation | time / default's (>1: slower) |")
    print("|---|---|---|---|")
    for device in devices:
        default = default_batch(device)
        batches = sorted(set(args.batches) | {default})
        seconds = time_batches(device, batches, args.observations, args.rounds, args.sample_rate, args.rir_seconds)
        for batch in batches:
            mark = " (default)" if batch == default else ""
            ratio = seconds[batch] / seconds[default]
            print(f"| {device} | {batch}{mark} | {1000 * seconds[batch]:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    run_script(main)
