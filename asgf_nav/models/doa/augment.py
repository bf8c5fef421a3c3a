"""Timbre augmentation of dry sounds for training the selective DoA head.

With about two clips per category, a prompt encoder can learn to recognise the exact training clips
rather than what their category sounds like, and then fails on unheard instances. Changing each clip's
playback rate (pitch and tempo together) and spectral envelope independently for the target, the
distractor and the prompt makes the exact clip an unreliable cue. Only training draws are augmented;
validation and the benchmark hear the sounds as they are.

A timbre is ``TIMBRE_SIZE`` numbers: the playback rate, a spectral tilt (dB per octave about 1 kHz) and
``NUM_BUMPS`` bell-shaped bumps (centre in octaves about 1 kHz, width in octaves, gain in dB).
"""

from __future__ import annotations

import numpy as np
import torch

SPEED_RANGE = (0.84, 1.19)  # about +-3 semitones
TILT_DB_PER_OCTAVE = 3.0
NUM_BUMPS = 3
BUMP_GAIN_DB = 6.0
TIMBRE_SIZE = 2 + 3 * NUM_BUMPS


def random_timbre(rng: np.random.Generator) -> np.ndarray:
    """One random timbre (``TIMBRE_SIZE``,), rate drawn log-uniformly."""
    speed = float(np.exp(rng.uniform(np.log(SPEED_RANGE[0]), np.log(SPEED_RANGE[1]))))
    tilt = float(rng.uniform(-TILT_DB_PER_OCTAVE, TILT_DB_PER_OCTAVE))
    bumps = np.stack(
        [
            rng.uniform(-3.0, 3.0, NUM_BUMPS),
            rng.uniform(0.3, 1.5, NUM_BUMPS),
            rng.uniform(-BUMP_GAIN_DB, BUMP_GAIN_DB, NUM_BUMPS),
        ],
        axis=1,
    )
    return np.concatenate([[speed, tilt], bumps.ravel()])


def identity_timbre() -> np.ndarray:
    """The timbre that leaves a sound unchanged."""
    timbre = np.zeros(TIMBRE_SIZE)
    timbre[0] = 1.0
    timbre[3::3] = 1.0  # bump widths (their gains stay 0 dB)
    return timbre


def resampled_length(length: int, speed: float) -> int:
    """Samples of a ``length``-sample sound played ``speed`` times faster."""
    return max(1, int(np.floor((length - 1) / speed)) + 1)


def change_speed(waves: torch.Tensor, lengths: torch.Tensor, speed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Play each row of ``waves`` (B, N), zero-padded after ``lengths`` (B,), ``speed`` (B,) times faster.

    Linear interpolation: cheap and batched; its small aliasing is harmless for augmentation. Returns the
    new zero-padded rows and their lengths.
    """
    speed = speed.to(torch.float64)
    new_lengths = torch.floor((lengths - 1).to(torch.float64) / speed).long() + 1
    positions = torch.arange(int(new_lengths.max()), device=waves.device, dtype=torch.float64)[None, :] * speed[:, None]
    left = positions.floor().long().clamp(max=waves.shape[1] - 1)
    right = (left + 1).clamp(max=waves.shape[1] - 1)
    frac = (positions - left).to(waves.dtype)
    out = waves.gather(1, left) * (1 - frac) + waves.gather(1, right) * frac
    inside = torch.arange(out.shape[1], device=waves.device)[None, :] < new_lengths[:, None]
    return out * inside, new_lengths


def spectral_gains(timbre: torch.Tensor, freqs_hz: torch.Tensor) -> torch.Tensor:
    """(B, F) amplitude gains of the timbres' spectral envelopes at ``freqs_hz`` (F,)."""
    octaves = torch.log2(freqs_hz.clamp_min(20.0) / 1000.0)[None, :]  # (1, F)
    db = timbre[:, 1:2] * octaves
    bumps = timbre[:, 2:].reshape(-1, NUM_BUMPS, 3)
    for k in range(NUM_BUMPS):
        centre, width, gain = bumps[:, k, 0:1], bumps[:, k, 1:2], bumps[:, k, 2:3]
        db = db + gain * torch.exp(-0.5 * ((octaves - centre) / width) ** 2)
    return 10.0 ** (db / 20.0)


def apply_spectral_gains(signal: torch.Tensor, timbre: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Filter rows of ``signal`` (B, ..., N) by the timbres' envelopes (FFT, zero-padded to twice N)."""
    n = signal.shape[-1]
    nfft = 1 << (2 * n - 1).bit_length()
    freqs = torch.fft.rfftfreq(nfft, 1.0 / sample_rate).to(signal.device, torch.float64)
    gains = spectral_gains(timbre.to(torch.float64), freqs).to(signal.dtype)
    gains = gains.reshape(gains.shape[0], *([1] * (signal.dim() - 2)), gains.shape[-1])
    return torch.fft.irfft(torch.fft.rfft(signal, nfft) * gains, nfft)[..., :n]
