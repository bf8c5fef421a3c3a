"""Plain helpers shared by the selective DoA head's test modules."""

from __future__ import annotations

import numpy as np

from asgf_nav.models.doa.features import StftConfig
from asgf_nav.models.doa.network import DoaNetConfig

SR = 16000


def _source_at(receiver: np.ndarray, azimuth: float, yaw: float, distance: float = 2.0) -> np.ndarray:
    """Habitat position at ``azimuth`` (CCW from the heading) seen from ``receiver`` facing ``yaw``."""
    world = np.deg2rad(yaw + azimuth)  # heading at yaw y points to (-sin y, -cos y) in (x, z)
    return receiver + distance * np.array([-np.sin(world), 0.0, -np.cos(world)])


def _tiny_config() -> DoaNetConfig:
    return DoaNetConfig(
        band_widths=(32, 64),
        patch_dim=32,
        model_dim=32,
        stft=StftConfig(sample_rate=SR, n_fft=256, hop=256, num_bins=128),
    )
