"""Audio-only CRNN DoA baseline in the style of SELDnet (Adavanne et al. 2018).

Binaural interaural features (cos/sin IPD, ILD, log level) -> three conv blocks pooling frequency ->
bidirectional GRU over time -> time average -> linear -> softmax posterior over azimuth bins. It sees
no prompt, so with a distractor it can only localise whichever source dominates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from asgf_nav.models.doa.features import AzimuthGrid, StftConfig, binaural_stft, interaural_features


@dataclass
class CrnnConfig:
    bin_width: float = 5.0
    laplace_scale: float = 5.0
    channels: int = 32
    rnn_size: int = 64
    stft: StftConfig = field(default_factory=StftConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CrnnConfig:
        data = dict(data)
        data["stft"] = StftConfig(**data.get("stft", {}))
        return cls(**data)

    @property
    def grid(self) -> AzimuthGrid:
        return AzimuthGrid(self.bin_width, self.laplace_scale)


class SeldCrnn(nn.Module):
    def __init__(self, cfg: CrnnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels

        def block(cin: int, pool: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d((1, pool))]

        self.conv = nn.Sequential(*block(4, 8), *block(c, 4), *block(c, 4))
        bins_left = cfg.stft.num_bins // 128
        self.rnn = nn.GRU(c * bins_left, cfg.rnn_size, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * cfg.rnn_size, 128), nn.ReLU(), nn.Linear(128, cfg.grid.num_bins))

    def forward(self, audio: torch.Tensor, prompt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, 2, N) binaural audio -> {"posterior": (B, K)}; ``prompt`` is accepted and ignored."""
        feats = interaural_features(binaural_stft(audio, self.cfg.stft))  # (B, 4, T, F)
        h = self.conv(feats)  # (B, C, T, F/128)
        h, _ = self.rnn(h.permute(0, 2, 1, 3).flatten(2))
        logits = self.head(h.mean(dim=1))
        return {"posterior": torch.softmax(logits, dim=-1), "log_posterior": torch.log_softmax(logits, dim=-1)}
