"""Audio Spatial State Encoder (ASE): frame embeddings from a CNN + BiGRU, pooled by sound intensity.

Equations (ASGF-Nav, section III-A):
    I_{t,i} = mean_{f,c} X_t(f, i, c)                      (1)  frame intensity from the magnitude X
    w_{t,i} = exp(I_{t,i}) / sum_j exp(I_{t,j})            (2)  softmax over frames
    e_t     = sum_i w_{t,i} e_{t,i}                        (3)  audio spatial state

The spectrogram observation holds log1p(|STFT|), so the magnitude in eq. (1) is recovered with expm1.
Time alignment: for long spectrograms (T >= 48, the 44.1 kHz Replica family with T = 69) frames are
grouped in non-overlapping pairs (``time_pool`` = 2) to halve the CNN and BiGRU cost; short ones (MP3D,
T = 26) keep every frame. The first convolution has time kernel = time stride = ``time_pool`` (the input is
zero-padded at the end to a whole number of groups), so its column ``i`` reads exactly the frames of group
``i``; the two later convolutions (time kernel 3, padding 1, stride 1) keep one column per group, each
widening the view by one group on either side, so the CNN's column ``i`` is centred on group ``i`` and
reads groups ``i-2 .. i+2`` (the BiGRU then sees every column). The frame intensities are averaged over
the same groups (a short last group averages only its real frames), so weight ``i`` belongs to the
embedding centred on the frames it measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asgf_nav.models.encoders import conv_output_size, init_conv_and_linear

FREQ_KERNELS = (5, 3, 3)
FREQ_STRIDES = (2, 2, 2)
CHANNELS = (32, 32, 32)
LONG_SPECTROGRAM_FRAMES = 48


def default_time_pool(frames: int) -> int:
    """Pool frames in pairs for long spectrograms (Replica, 69 frames); keep every frame otherwise."""
    return 2 if frames >= LONG_SPECTROGRAM_FRAMES else 1


def frame_intensity(spectrogram: torch.Tensor) -> torch.Tensor:
    """Eq. (1): mean magnitude over frequency and channel per frame; (B,F,T,C) log1p spectrogram -> (B,T)."""
    magnitude = torch.expm1(spectrogram.float().clamp_min(0.0))
    return magnitude.mean(dim=(1, 3))


def pool_frames(sequence: torch.Tensor, time_pool: int) -> torch.Tensor:
    """Average groups of ``time_pool`` frames along dim 1 of a (B,T,...) tensor (last group may be short)."""
    if time_pool == 1:
        return sequence
    squeeze = sequence.dim() == 2
    x = sequence.unsqueeze(-1) if squeeze else sequence
    pooled = F.avg_pool1d(x.transpose(1, 2), kernel_size=time_pool, stride=time_pool, ceil_mode=True)
    pooled = pooled.transpose(1, 2)
    return pooled.squeeze(-1) if squeeze else pooled


class AudioSpatialStateEncoder(nn.Module):
    """Spectrogram (B,F,T,C) -> audio spatial state e_t (B, ase_dim) and the frame weights w (B, N)."""

    def __init__(
        self,
        spectrogram_shape: tuple[int, int, int],
        ase_dim: int = 512,
        frame_feature_size: int = 256,
        time_pool: int | None = None,
    ) -> None:
        super().__init__()
        if ase_dim % 2:
            raise ValueError(f"ase_dim must be even (two GRU directions), got {ase_dim}")
        freq_bins, frames, channels = spectrogram_shape
        self.time_pool = default_time_pool(frames) if time_pool is None else int(time_pool)
        if self.time_pool < 1:
            raise ValueError(f"time_pool must be >= 1, got {self.time_pool}")
        self.num_frames = -(-frames // self.time_pool)
        layers: list[nn.Module] = []
        in_channels, height = channels, freq_bins
        for layer, (out_channels, kernel, stride) in enumerate(zip(CHANNELS, FREQ_KERNELS, FREQ_STRIDES)):
            if layer == 0:  # one output column per group of time_pool frames
                pool = self.time_pool
                conv = nn.Conv2d(in_channels, out_channels, (kernel, pool), stride=(stride, pool))
            else:  # time kernel 3, padding 1, stride 1: the column count is kept
                conv = nn.Conv2d(in_channels, out_channels, (kernel, 3), stride=(stride, 1), padding=(0, 1))
            layers += [conv, nn.ReLU(inplace=True)]
            in_channels, height = out_channels, conv_output_size(height, kernel, stride)
        if height < 1:
            raise ValueError(f"spectrogram shape {spectrogram_shape} has too few frequency bins for the ASE")
        self.cnn = nn.Sequential(*layers)
        self.frame_projection = nn.Sequential(nn.Linear(in_channels * height, frame_feature_size), nn.ReLU())
        init_conv_and_linear(self.cnn)
        init_conv_and_linear(self.frame_projection)
        self.bigru = nn.GRU(frame_feature_size, ase_dim // 2, batch_first=True, bidirectional=True)
        self.output_size = ase_dim

    def frame_embeddings(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Per-frame BiGRU embeddings e_{t,i}: (B,F,T,C) -> (B,N,ase_dim), N = ceil(T / time_pool)."""
        x = spectrogram.float().permute(0, 3, 1, 2)  # (B, C, F, T)
        missing = self.num_frames * self.time_pool - x.shape[-1]
        if missing:
            x = F.pad(x, (0, missing))
        x = self.cnn(x).permute(0, 3, 1, 2).flatten(2)  # (B, C', F', N) -> (B, N, C'*F')
        embeddings, _ = self.bigru(self.frame_projection(x))
        return embeddings

    def intensity_weights(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Eqs. (1)-(2): softmax over (pooled) frames of the mean magnitude; (B,N), rows sum to 1."""
        return torch.softmax(pool_frames(frame_intensity(spectrogram), self.time_pool), dim=1)

    def forward(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (e_t (B,ase_dim), frame weights w (B,N)) -- eq. (3)."""
        embeddings = self.frame_embeddings(spectrogram)
        weights = self.intensity_weights(spectrogram)
        state = torch.bmm(weights.unsqueeze(1), embeddings).squeeze(1)
        return state, weights
