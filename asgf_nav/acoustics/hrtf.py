"""Measured head-related transfer functions (MIT KEMAR, Gardner & Martin 1994) for binaural rendering.

Directions are given in the listener's head frame: azimuth in degrees counter-clockwise from straight
ahead (90 = left ear side, 270 = right), elevation in degrees above the horizontal plane. Channel 0 is
the left ear, channel 1 the right ear. The data file is produced once by ``scripts/convert_hrtf.py``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from asgf_nav.io import load_npz

logger = logging.getLogger(__name__)

KEMAR_FILE = Path(__file__).resolve().parent / "data" / "mit_kemar.npz"


def head_vectors(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) in the head frame (front, left, up) for the given angles."""
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


@dataclass
class Hrtf:
    """A set of head-related impulse responses on a direction grid, at one sample rate."""

    hrir: np.ndarray  # (D, 2, T) float32
    azimuth: np.ndarray  # (D,) degrees
    elevation: np.ndarray  # (D,) degrees
    sample_rate: int
    _spectra: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.vectors = head_vectors(self.azimuth, self.elevation)  # (D, 3)

    @property
    def num_taps(self) -> int:
        return int(self.hrir.shape[-1])

    def nearest(self, azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
        """Index of the measured direction closest (great-circle) to each requested direction."""
        wanted = head_vectors(azimuth_deg, elevation_deg)
        return np.argmax(wanted.reshape(-1, 3) @ self.vectors.T, axis=1).reshape(np.shape(wanted)[:-1])

    def spectra(self, nfft: int) -> np.ndarray:
        """rfft of every HRIR zero-padded to ``nfft``: (D, 2, nfft // 2 + 1) complex64, cached."""
        if nfft < self.num_taps:
            raise ValueError(f"nfft {nfft} is shorter than the HRIRs ({self.num_taps} taps)")
        if nfft not in self._spectra:
            self._spectra[nfft] = np.fft.rfft(self.hrir, n=nfft, axis=-1).astype(np.complex64)
        return self._spectra[nfft]


TRIM_GUARD_SECONDS = 8 / 44100  # silence kept before the earliest HRIR onset (8 samples at the native rate)


def _trim_common_lead(hrir: np.ndarray, sample_rate: int) -> np.ndarray:
    """Drop the leading samples silent in every HRIR (the measurement's travel time), keeping ITDs and a
    guard of the same duration at every rate."""
    peak = np.abs(hrir).max(axis=-1, keepdims=True)
    onsets = np.argmax(np.abs(hrir) > 0.1 * np.maximum(peak, 1e-12), axis=-1)
    lead = max(int(onsets.min()) - round(TRIM_GUARD_SECONDS * sample_rate), 0)
    return hrir[..., lead:]


@functools.lru_cache(maxsize=4)
def load_hrtf(sample_rate: int, path: str | Path = KEMAR_FILE) -> Hrtf:
    """The KEMAR set resampled (polyphase) to ``sample_rate``; cached per rate."""
    path = Path(path)
    try:
        data = load_npz(path, ("hrir", "azimuth", "elevation", "sample_rate"))
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot read HRTF file {path} ({exc}); regenerate it with scripts/convert_hrtf.py"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"HRTF file {path} is malformed ({exc}); regenerate it with scripts/convert_hrtf.py") from exc
    hrir = data["hrir"].astype(np.float32)
    azimuth = data["azimuth"].astype(np.float64)
    elevation = data["elevation"].astype(np.float64)
    native_rate = int(data["sample_rate"])
    if hrir.ndim != 3 or hrir.shape[1] != 2 or hrir.shape[0] != azimuth.shape[0]:
        raise ValueError(f"HRTF file {path}: hrir has shape {hrir.shape}, expected (directions, 2, taps)")
    if sample_rate != native_rate:
        g = gcd(int(sample_rate), native_rate)
        # resampling keeps the waveform's sample values, which scales an impulse response's frequency response
        # by the rate ratio (-8.8 dB at 16 kHz); undo that so the early paths keep their level against the tail
        hrir = resample_poly(hrir, sample_rate // g, native_rate // g, axis=-1) * (native_rate / sample_rate)
        hrir = hrir.astype(np.float32)
        logger.debug("resampled KEMAR HRIRs %d -> %d Hz (%d taps)", native_rate, sample_rate, hrir.shape[-1])
    hrir = _trim_common_lead(hrir, sample_rate)
    return Hrtf(hrir=np.ascontiguousarray(hrir), azimuth=azimuth, elevation=elevation, sample_rate=int(sample_rate))
