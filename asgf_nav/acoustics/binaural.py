"""Binaural impulse responses from image-source paths and late-energy envelopes.

Early part: every specular path (direct sound and reflections up to the image-source order) is rendered
with the measured HRIR nearest to its direction of arrival relative to the listener's yaw, coloured by
its per-octave-band amplitude (a smooth gain curve through the band values) and delayed by its travel
time, rounded to the nearest sample (<= 11 us at 44.1 kHz). Late part: per octave band, fixed
band-limited Gaussian noise shaped by the ray-tracing energy envelope, read at offsets that depend on
(receiver, source, yaw) so no two responses share a tail. The tail is heard through the same head as the
early part, averaged over all directions (:func:`diffuse_field`): each band takes the HRIRs' diffuse-field
gain at each ear, and the ears' noise is mixed to the HRIRs' diffuse-field interaural coherence (0.7-0.9
at 125 Hz, near 0 from 500 Hz up). Rendering is deterministic.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra

from asgf_nav.acoustics.hrtf import Hrtf

logger = logging.getLogger(__name__)

NOISE_SECONDS = 4.0  # length of the fixed noise bank per band and ear
_NOISE_SEED = 20240611


@dataclass
class EarlyPaths:
    """Specular paths of one (receiver, source) pair."""

    delay: np.ndarray  # (I,) seconds
    azimuth: np.ndarray  # (I,) world yaw angle (deg) at which an agent faces the arriving path
    elevation: np.ndarray  # (I,) degrees
    band_amplitude: np.ndarray  # (I, B)


def _next_pow2(n: int) -> int:
    return 1 << max(1, int(np.ceil(np.log2(max(n, 2)))))


def band_gain_basis(band_centers: np.ndarray, sample_rate: int, nfft: int) -> np.ndarray:
    """(B, nfft//2+1) weights: a path's frequency response is ``band_amplitude @ basis``.

    Piecewise-linear in log frequency between band centres, flat beyond the first and last band.
    Cached (read-only): every rendered response of a scene uses the same few bases.
    """
    return _band_gain_basis(tuple(float(c) for c in np.asarray(band_centers).ravel()), int(sample_rate), int(nfft))


@functools.lru_cache(maxsize=32)
def _band_gain_basis(band_centers: tuple[float, ...], sample_rate: int, nfft: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    logf = np.log2(np.maximum(freqs, 1.0))
    logc = np.log2(np.asarray(band_centers, dtype=float))
    basis = np.zeros((len(logc), len(freqs)))
    for b in range(len(logc)):
        unit = np.zeros(len(logc))
        unit[b] = 1.0
        basis[b] = np.interp(logf, logc, unit)
    basis.setflags(write=False)
    return basis


def render_early(
    paths: EarlyPaths, yaws_deg: np.ndarray, hrtf: Hrtf, band_centers: np.ndarray, length: int
) -> np.ndarray:
    """Early binaural responses (Y, length, 2) for each yaw in ``yaws_deg``; time 0 = emission."""
    yaws = np.atleast_1d(np.asarray(yaws_deg, dtype=float))
    out = np.zeros((len(yaws), length, 2), dtype=np.float32)
    fs = hrtf.sample_rate
    n = np.rint(np.asarray(paths.delay) * fs).astype(np.int64)
    keep = n < length
    if not keep.any():
        return out
    n = n[keep]
    start = int(n.min())
    span = int(n.max()) - start + hrtf.num_taps
    nfft = _next_pow2(span)
    nbins = nfft // 2 + 1
    gains = (paths.band_amplitude[keep] @ band_gain_basis(band_centers, fs, nfft)).astype(np.float32)  # (I, F)
    k = np.arange(nbins, dtype=np.int64)
    roots = np.exp(-2j * np.pi * np.arange(nfft) / nfft).astype(np.complex64)
    paths_f = gains * roots[((n - start)[:, None] * k[None, :]) % nfft]  # (I, F) delayed, coloured impulses
    spectra = hrtf.spectra(nfft)  # (D, 2, F)
    elevation = np.asarray(paths.elevation, dtype=float)[keep]
    azimuth = np.asarray(paths.azimuth, dtype=float)[keep]
    seg = min(length - start, nfft)
    for y, yaw in enumerate(yaws):
        idx = hrtf.nearest((azimuth - yaw) % 360.0, elevation)
        order = np.argsort(idx, kind="stable")
        uniq, first = np.unique(idx[order], return_index=True)
        grouped = np.add.reduceat(paths_f[order], first, axis=0)  # (U, F): paths sharing an HRIR
        ears = np.einsum("uef,uf->ef", spectra[uniq], grouped)
        out[y, start : start + seg] = np.fft.irfft(ears, n=nfft, axis=-1)[:, :seg].T
    return out


@functools.lru_cache(maxsize=4)
def noise_bank(sample_rate: int, hist_bin_samples: int, seconds: float = NOISE_SECONDS) -> np.ndarray:
    """Fixed band-limited noise (2 ears, B, N) float32: unit energy per histogram bin before filtering.

    pyroomacoustics scales its tail sequence the same way, so ``noise * sqrt(histogram energy)`` has
    the histogram's energy per band and bin.
    """
    rng = np.random.default_rng(_NOISE_SEED + sample_rate)
    bands = pra.acoustics.OctaveBandsFactory(fs=sample_rate, base_frequency=125)
    num = int(seconds * sample_rate)
    bank = np.zeros((2, bands.n_bands, num), dtype=np.float32)
    for ear in range(2):
        white = rng.standard_normal(num) / np.sqrt(hist_bin_samples)
        for b in range(bands.n_bands):
            bank[ear, b] = bands.analysis(white, band=b)
    return bank


@dataclass(frozen=True)
class DiffuseField:
    """How a sound arriving from every direction at once (the late tail) reaches the two ears, per octave band."""

    gain: np.ndarray  # (2, B) energy gain of each ear, against a flat response
    coherence: np.ndarray  # (B,) interaural coherence, the normalised zero-lag correlation of the two ears


_DIFFUSE_NFFT = 8192  # frequency resolution of the band averages (2 Hz at 16 kHz)


def diffuse_field(hrtf: Hrtf, num_bands: int) -> DiffuseField:
    """The HRIRs averaged over all directions, each weighted by the solid angle its 10-degree elevation ring
    covers, per octave band (the noise bank's band filters).

    The early paths go through the HRIRs, which also hold the colour of the measurement chain (KEMAR's set
    is not equalised: -11 dB at 125-500 Hz, +8 dB at 2 kHz straight ahead); a tail of flat band noise beside
    them had the wrong balance with them, by band. And a diffuse field is nearly the same at both ears at
    low frequencies, which independent noise per ear was not."""
    key = (id(hrtf), num_bands)  # the entry keeps ``hrtf`` alive, so its id is not reused while cached
    if key not in _DIFFUSE_CACHE:
        bands = pra.acoustics.OctaveBandsFactory(fs=hrtf.sample_rate, base_frequency=125)
        impulse = np.zeros(_DIFFUSE_NFFT)
        impulse[_DIFFUSE_NFFT // 2] = 1.0
        band_power = np.stack(
            [np.abs(np.fft.rfft(bands.analysis(impulse, band=b))) ** 2 for b in range(num_bands)]
        )  # (B, F): each band filter's power response
        spectra = np.fft.rfft(hrtf.hrir.astype(np.float64), n=_DIFFUSE_NFFT, axis=-1)  # (D, 2, F)
        elevation = np.asarray(hrtf.elevation, dtype=np.float64)
        rings, counts = np.unique(elevation, return_counts=True)
        top, bottom = np.minimum(rings + 5.0, 90.0), rings - 5.0
        ring_area = np.sin(np.deg2rad(top)) - np.sin(np.deg2rad(bottom))  # / 2 pi: the ring's solid angle
        weight = (ring_area / counts)[np.searchsorted(rings, elevation)]
        weight /= weight.sum()
        power = np.einsum("d,def,bf->eb", weight, np.abs(spectra) ** 2, band_power)  # (2, B)
        cross = np.einsum("d,df,bf->b", weight, (spectra[:, 0] * np.conj(spectra[:, 1])).real, band_power)
        gain = power / band_power.sum(axis=1)[None, :]
        coherence = np.clip(cross / np.sqrt(power[0] * power[1]), -1.0, 1.0)
        _DIFFUSE_CACHE[key] = (hrtf, DiffuseField(gain.astype(np.float32), coherence.astype(np.float32)))
        while len(_DIFFUSE_CACHE) > _DIFFUSE_CACHE_SIZE:  # load_hrtf's cache makes a new set for a rate it dropped
            del _DIFFUSE_CACHE[next(iter(_DIFFUSE_CACHE))]  # the least recently used
    _DIFFUSE_CACHE[key] = _DIFFUSE_CACHE.pop(key)  # now the most recently used
    return _DIFFUSE_CACHE[key][1]


_DIFFUSE_CACHE: dict[tuple[int, int], tuple[Hrtf, DiffuseField]] = {}  # in order of use, the latest last
_DIFFUSE_CACHE_SIZE = 8


def noise_offsets(receiver: int, source_node: int, yaw_index: int, span: int) -> tuple[int, int]:
    """Deterministic, well-spread start offsets of the two ears' noise for one response."""
    key = np.uint64(((receiver * 1_000_003 + source_node) * 7 + yaw_index) * 2654435761 % (2**61 - 1))
    rng = np.random.default_rng(int(key))
    left, right = rng.integers(0, span, size=2)
    return int(left), int(right)


def render_late(
    energy: np.ndarray,
    hist_bin_seconds: float,
    sample_rate: int,
    length: int,
    offsets: tuple[int, int],
    onset: int = 0,
    head: DiffuseField | None = None,
) -> np.ndarray:
    """Late tail (length, 2) from per-band energies ``energy`` (B, bins) per histogram bin, silent before
    sample ``onset``, heard through ``head`` (:func:`diffuse_field`; both ears then read at ``offsets[0]``)
    or, with None, flat and independent at each ear (each at its own offset), as pyroomacoustics renders an
    omnidirectional tail.

    Pass the straight-line travel time as ``onset``: the envelope interpolates between bin centres, so
    the energy of the bin that holds the direct sound would otherwise start up to a bin and a half before
    it (pyroomacoustics starts its own tail sequence at the direct sound's time too).
    """
    hbss = int(round(hist_bin_seconds * sample_rate))
    bank = noise_bank(sample_rate, hbss)
    if bank.shape[-1] < length + max(offsets):
        raise ValueError(f"noise bank of {bank.shape[-1]} samples too short for {length} + offset {max(offsets)}")
    # float32 like the noise: the tail agrees with a float64 envelope to ~1e-7 of its peak, in half the time
    amp = np.sqrt(np.maximum(_envelope(np.asarray(energy, dtype=np.float32), hbss, length), 0.0))
    amp[:, : max(int(onset), 0)] = 0.0
    out = np.empty((length, 2), dtype=np.float32)
    bands = energy.shape[0]

    def window(noise: np.ndarray, ear: int) -> np.ndarray:
        return noise[:bands, offsets[ear] : offsets[ear] + length]

    if head is None:
        for ear in range(2):
            out[:, ear] = np.einsum("bt,bt->t", window(bank[ear], ear), amp)
        return out
    # both ears read the head's banks at the left ear's offset: their noise is coherent sample by sample
    for ear, noise in enumerate(_heard_banks(bank, head)):
        out[:, ear] = np.einsum("bt,bt->t", window(noise, 0), amp)
    return out


def diffuse_noise(sample_rate: int, head: DiffuseField, length: int, offset: int) -> np.ndarray:
    """(length, 2) noise as the two ears hear a diffuse field through ``head``, read from the fixed noise bank at
    ``offset``: what :func:`render_late` renders under a flat envelope, for tails drawn from a decay law rather
    than an energy histogram (the DoA heads' shoebox rooms)."""
    bank = noise_bank(sample_rate, 1)
    if bank.shape[-1] < length + offset:
        raise ValueError(f"noise bank of {bank.shape[-1]} samples too short for {length} + offset {offset}")
    left, right = _heard_banks(bank, head)
    return np.stack([ear[:, offset : offset + length].sum(axis=0) for ear in (left, right)], axis=1)


_HEARD_BANKS: dict[tuple[int, int], tuple[np.ndarray, DiffuseField, tuple[np.ndarray, np.ndarray]]] = {}


def _heard_banks(bank: np.ndarray, head: DiffuseField) -> tuple[np.ndarray, np.ndarray]:
    """The two ears' noise for ``head``, scaled per band by sqrt(gain): the left ear's bank, and for the right
    ear coherence x the left's + sqrt(1 - coherence^2) x its own, sample by sample (the same energy, since the
    two banks are independent). Cached: the entry keeps ``bank`` and ``head`` alive, so ids are not reused
    while it lives."""
    key = (id(bank), id(head))
    if key not in _HEARD_BANKS:
        if len(_HEARD_BANKS) >= 8:  # a few sample rates at most; a bank evicted from its cache is not kept
            _HEARD_BANKS.clear()
        bands = bank.shape[1]
        gain = np.sqrt(head.gain[:, :bands])[:, :, None].astype(np.float32)
        c = head.coherence[:bands, None].astype(np.float32)
        parts = (bank[0] * gain[0], gain[1] * (c * bank[0] + np.sqrt(1.0 - c * c) * bank[1]))
        _HEARD_BANKS[key] = (bank, head, parts)
    return _HEARD_BANKS[key][2]


def _envelope(energy: np.ndarray, hbss: int, length: int) -> np.ndarray:
    """(B, length) in ``energy``'s dtype: per band, ``energy`` linearly interpolated between histogram-bin centres.

    Equal to ``np.interp(t, (k + 0.5) * hbss, e, left=e[0], right=0)``; for an even bin length the
    centres fall on samples and each bin-to-bin segment is one broadcast ramp, several times faster.
    """
    bands, bins = energy.shape
    if hbss % 2 or bins < 2:
        centres = (np.arange(bins) + 0.5) * hbss
        t = np.arange(length)
        return np.stack([np.interp(t, centres, e, left=e[0], right=0.0) for e in energy]).astype(energy.dtype)
    half = hbss // 2
    ramp = (np.arange(hbss) / hbss).astype(energy.dtype)
    segments = energy[:, :-1, None] + (energy[:, 1:] - energy[:, :-1])[:, :, None] * ramp
    out = np.zeros((bands, max(length, half + (bins - 1) * hbss + 1)), dtype=energy.dtype)
    out[:, :half] = energy[:, :1]
    out[:, half : half + (bins - 1) * hbss] = segments.reshape(bands, -1)
    out[:, half + (bins - 1) * hbss] = energy[:, -1]
    return out[:, :length]
