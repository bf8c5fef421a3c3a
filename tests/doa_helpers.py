"""Plain helpers shared by the selective DoA head's test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asgf_nav.models.doa.checkpoint import save_checkpoint
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.features import StftConfig
from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet

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


def tiny_head_checkpoint(path: Path, train_config: DoaTrainConfig | None = None, seed: int | None = None) -> Path:
    """A freshly initialised tiny selective head saved as a step-0 checkpoint; ``seed`` fixes its weights."""
    if seed is not None:
        torch.manual_seed(seed)
    save_checkpoint(path, "selective", SelectiveDoaNet(_tiny_config()), None, 0, train_config or DoaTrainConfig(), {})
    return path
