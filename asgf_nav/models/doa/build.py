"""The DoA model a training config builds, and what it takes as its prompt.

Apart from ``config.py`` so that the settings can be read (the scripts' command lines, a checkpoint's record)
without importing torch and the networks.
"""

from __future__ import annotations

from typing import Any

import torch

from asgf_nav.models.doa.config import MODEL_KINDS, STFT_SIZES, DoaTrainConfig
from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
from asgf_nav.models.doa.data import DoaBatch
from asgf_nav.models.doa.features import StftConfig
from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet


def selective_stft(cfg: DoaTrainConfig) -> dict[str, Any]:
    """The selective head's STFT and band widths for ``cfg.stft_nfft``: the bands keep their width in Hz
    (32 and 128 bins of a 512-point frame, 1 and 4 kHz at 16 kHz), so a shorter frame has narrower bands."""
    n_fft, hop = cfg.stft_nfft, cfg.stft_hop
    if n_fft not in STFT_SIZES:
        raise ValueError(f"stft_nfft must be one of {STFT_SIZES}, got {n_fft}")
    if not 0 < hop <= n_fft:
        raise ValueError(f"stft_hop must be in 1..stft_nfft ({n_fft}) so that no sample is skipped, got {hop}")
    scale = n_fft // 256  # 1, 2 or 4
    return {
        "stft": StftConfig(n_fft=n_fft, hop=hop, num_bins=n_fft // 2),
        "band_widths": (16 * scale, 64 * scale),
    }


def build_model(
    kind: str,
    cfg: DoaTrainConfig | None = None,
    categories: list[str] | None = None,
    config: dict | None = None,
) -> torch.nn.Module:
    """A fresh model of ``kind``; ``config`` (from a checkpoint) overrides the training config."""
    if kind == "selective":
        if config is not None:
            return SelectiveDoaNet(DoaNetConfig.from_dict(config))
        cats = list(categories or [])
        return SelectiveDoaNet(
            DoaNetConfig(
                bin_width=cfg.bin_width,
                prompt=cfg.prompt,
                patch_dim=cfg.patch_dim,
                model_dim=cfg.model_dim,
                num_categories=len(cats),
                categories=cats,
                mask_head=cfg.mask_head,
                **selective_stft(cfg),
            )
        )
    if kind == "crnn":
        return SeldCrnn(CrnnConfig.from_dict(config) if config is not None else CrnnConfig(bin_width=cfg.bin_width))
    raise ValueError(f"unknown DoA model kind {kind!r}; expected one of {MODEL_KINDS}")


def model_prompt(model: torch.nn.Module, batch: DoaBatch) -> torch.Tensor:
    """What the model takes as its prompt: the reference clip or the category index."""
    if isinstance(model, SelectiveDoaNet) and model.cfg.prompt == "category":
        return batch.category
    return batch.prompt
