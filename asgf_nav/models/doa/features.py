"""Binaural STFT features, azimuth geometry and circular label coding for direction-of-arrival heads.

Azimuth convention (everywhere in :mod:`asgf_nav.models.doa`): degrees in [0, 360), measured
counter-clockwise from the agent's heading seen from above, so 0 = straight ahead, +90 = to the agent's
left, 180 = behind, 270 = to the right. This matches the KEMAR head frame of
:mod:`asgf_nav.acoustics.hrtf`. With habitat yaw (0 faces -Z, 90 faces -X) the heading is
``(-sin yaw, -cos yaw)`` in (x, z) and the left direction ``(-cos yaw, sin yaw)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asgf_nav.models.doa.config import check_bin_width

EPS = 1e-6


# --------------------------------------------------------------------------------------------- geometry
def relative_azimuth(receiver: np.ndarray, source: np.ndarray, yaw_deg: np.ndarray | float) -> np.ndarray:
    """Azimuth (deg, [0, 360), CCW from the heading) of ``source`` seen from ``receiver`` at ``yaw_deg``.

    ``receiver`` and ``source`` are habitat positions (..., 3); only x and z matter (direct-path azimuth).
    """
    receiver = np.asarray(receiver, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    yaw = np.deg2rad(np.asarray(yaw_deg, dtype=np.float64))
    dx = source[..., 0] - receiver[..., 0]
    dz = source[..., 2] - receiver[..., 2]
    front = dx * -np.sin(yaw) + dz * -np.cos(yaw)
    left = dx * -np.cos(yaw) + dz * np.sin(yaw)
    return wrap_degrees(np.rad2deg(np.arctan2(left, front)))


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles (deg) into [0, 360): ``np.mod`` alone rounds a tiny negative angle, -1e-15, up to 360.0."""
    wrapped = np.mod(angle, 360.0)
    return np.where(wrapped >= 360.0, 0.0, wrapped)


def lateral_fold(azimuth_deg: np.ndarray) -> np.ndarray:
    """Map azimuths onto the front hemisphere by mirroring about the interaural axis (a -> 180 - a).

    All a two-microphone array can measure: the label of the ``shoebox_pair`` rooms and the answer of
    the classical two-microphone methods.
    """
    a = np.mod(np.asarray(azimuth_deg, dtype=np.float64), 360.0)
    lateral = np.rad2deg(np.arcsin(np.clip(np.sin(np.deg2rad(a)), -1, 1)))
    return wrap_degrees(lateral)


def circular_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor):
    """Absolute angular difference in degrees, in [0, 180] (359 and 1 are 2 degrees apart)."""
    diff = (a - b) % 360.0
    if isinstance(diff, torch.Tensor):
        return torch.minimum(diff, 360.0 - diff)
    return np.minimum(diff, 360.0 - diff)


# --------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class AzimuthGrid:
    """K bins of ``bin_width`` degrees covering 360 degrees; bin k is centred on ``k * bin_width``."""

    bin_width: float = 5.0
    laplace_scale: float = 5.0  # sigma of the Laplacian-shaped target, degrees

    def __post_init__(self) -> None:
        check_bin_width(self.bin_width)
        if not self.laplace_scale > 0:  # -d / 0 makes every target nan
            raise ValueError(
                f"the Laplacian target's scale must be a positive number of degrees, got {self.laplace_scale}"
            )

    @property
    def num_bins(self) -> int:
        return int(round(360.0 / self.bin_width))

    @property
    def centers(self) -> np.ndarray:
        return np.arange(self.num_bins, dtype=np.float64) * self.bin_width

    def encode(self, azimuth_deg: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B,) azimuths -> (B, K) targets ``exp(-d_circ / sigma)`` normalised to sum 1 (a softmax, so a sigma
        far under the bin width gives the nearest bin, not exp's underflow to 0 / 0)."""
        az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1, 1)
        centers = torch.as_tensor(self.centers, dtype=torch.float32, device=az.device)[None, :]
        return torch.softmax(-circular_distance(centers, az) / self.laplace_scale, dim=1)

    def decode(self, posterior: np.ndarray | torch.Tensor, window: int = 2) -> np.ndarray:
        """(B, K) posteriors -> (B,) azimuths: argmax bin refined by the circular mean of its neighbours."""
        p = torch.as_tensor(posterior).detach().cpu().double()  # a GPU posterior too
        if p.ndim != 2 or p.shape[1] != self.num_bins:
            raise ValueError(f"posterior must be (B, {self.num_bins}), got {tuple(p.shape)}")
        peak = p.argmax(dim=1)
        offsets = torch.arange(-window, window + 1)
        idx = (peak[:, None] + offsets[None, :]) % self.num_bins
        weights = torch.gather(p, 1, idx).clamp_min(0)
        angles = torch.deg2rad(torch.as_tensor(self.centers)[idx])
        mean = torch.atan2((weights * torch.sin(angles)).sum(1), (weights * torch.cos(angles)).sum(1))
        return wrap_degrees(np.rad2deg(mean.numpy()))


# --------------------------------------------------------------------------------------------- STFT
@dataclass(frozen=True)
class StftConfig:
    """STFT of the DoA heads: 32 ms frames every 24 ms at 16 kHz (AV-SSAN uses 64 / 32 ms; the shorter
    frame halves the bins, and so the cost, on CPU)."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 384
    num_bins: int = 256  # bins kept (the Nyquist bin is dropped so bands divide evenly)

    def frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop


def binaural_stft(audio: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """(B, 2, N) waveforms -> (B, 2, F, T) complex STFT (Hann window, centred frames)."""
    if audio.ndim != 3 or audio.shape[1] != 2:
        raise ValueError(f"binaural audio must be (B, 2, N), got {tuple(audio.shape)}")
    b, _, n = audio.shape
    window = torch.hann_window(cfg.n_fft, device=audio.device)
    spec = torch.stft(
        audio.reshape(b * 2, n).float(),
        n_fft=cfg.n_fft,
        hop_length=cfg.hop,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec[:, : cfg.num_bins].reshape(b, 2, cfg.num_bins, -1)


def compressed_magnitude(spec: torch.Tensor, power: float = 0.3) -> torch.Tensor:
    """(B, 2, F, T) complex -> (B, T, F) ear-averaged |X|^power (the reconstruction target)."""
    return spec.abs().clamp_min(EPS).pow(power).mean(dim=1).transpose(1, 2)


def interaural_features(spec: torch.Tensor) -> torch.Tensor:
    """(B, 2, F, T) complex -> (B, 4, T, F): cos IPD, sin IPD, ILD / 10 dB, log level.

    IPD is coded as cos/sin so that it does not wrap at +-pi; the log level (ear-averaged log magnitude,
    per-example mean removed) tells the band encoders what each band sounds like, which the semantic
    cross-attention needs to tell the target's bands from the distractor's.
    """
    left, right = spec[:, 0], spec[:, 1]
    cross = left * right.conj()
    ipd = torch.angle(cross)
    mag_l, mag_r = left.abs(), right.abs()
    ild = 20.0 * torch.log10((mag_l + EPS) / (mag_r + EPS))
    level = torch.log(0.5 * (mag_l + mag_r) + EPS)
    level = level - level.mean(dim=(1, 2), keepdim=True)
    feats = torch.stack([torch.cos(ipd), torch.sin(ipd), ild.clamp(-30, 30) / 10.0, level / 4.0], dim=1)
    return feats.transpose(2, 3).contiguous()


def tri_band_patches(features: torch.Tensor, widths: tuple[int, ...] = (32, 128)) -> list[torch.Tensor]:
    """(B, C, T, F) -> per band resolution (B, n, C, T, width): fine (F/32 x 32), mid (F/128 x 128), full.

    The full band is the whole spectrum as one patch of width F.
    """
    b, c, t, f = features.shape
    out = []
    for width in (*widths, f):
        if f % width:
            raise ValueError(f"{f} frequency bins do not split into bands of {width}")
        n = f // width
        out.append(features.reshape(b, c, t, n, width).permute(0, 3, 1, 2, 4).contiguous())
    return out
