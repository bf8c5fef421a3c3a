"""Selective binaural DoA head after AV-SSAN's MB-SSA Net (tri-band semantic-spatial alignment).

Pipeline for a binaural mixture and a prompt that names the target:

1. STFT -> interaural features (cos/sin IPD, ILD, level) split into fine (32-bin), mid (128-bin) and
   full-band patches (``band_widths``, at 512-point frames); one conv encoder per band resolution, shared
   by that resolution's patches, maps each patch to a (T, patch_dim) sequence.
2. Semantic-band fusion (SBF): the prompt embedding, broadcast over time and concatenated with a per-frame
   semantic embedding of the mixture, goes through a Transformer encoder layer -> query sequence (T, D).
3. SSA: per patch, cross-attention with the SBF as query and that patch's sequence as keys/values
   (per-patch projections W^q, W^k, W^v); band-importance weights are the softmax over patches of the
   mean-pooled raw attention maps q k^T; the patch outputs are summed with those weights.
4. Spatial refiner: an MLP gives per-frame softmax weights over the three resolutions; the fused (T, patch_dim)
   feature drives an MLP predicting a time-frequency mask over the mixture's spectrogram. With
   ``mask_head="template"`` (the default) that MLP's output is one input of a small prompt-conditioned
   conv net over the (T, F) grid, which also sees the mixture's level, the prompt's spectral template
   per bin and the interaural cues per bin, and whose hidden channels are modulated (FiLM) by the prompt
   embedding: a per-frame 64-d feature alone cannot say which of 256 bins belong to the target.
5. The mask weights the interaural spectrum (a mask-weighted temporal average of cos/sin IPD and ILD per
   bin); an MLP with softmax gives the posterior over azimuth bins covering 360 degrees.

Prompt: no pretrained image encoder can be used here, so the cross-instance prompt is a reference clip of
another instance of the target's category, encoded by a small log-spectrogram CNN trained jointly
(``prompt="audio"``); ``prompt="descriptor"`` encodes the same clip through a fixed spectral-shape
descriptor and a small MLP instead, and ``prompt="category"`` uses a learned embedding of the category index.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from asgf_nav.models.doa.config import POSTERIOR_LOSSES, SBF_HEADS
from asgf_nav.models.doa.features import (
    EPS,
    AzimuthGrid,
    StftConfig,
    binaural_stft,
    compressed_magnitude,
    interaural_features,
    tri_band_patches,
)


@dataclass
class DoaNetConfig:
    """Architecture of :class:`SelectiveDoaNet` (stored in checkpoints)."""

    bin_width: float = 5.0
    laplace_scale: float = 5.0
    band_widths: tuple[int, int] = (32, 128)
    patch_dim: int = 64  # per-frame size of an encoded patch
    model_dim: int = 64  # D of the attention
    prompt: str = "audio"  # audio | descriptor | category
    num_categories: int = 0  # size of the category vocabulary (prompt="category")
    categories: list[str] = field(default_factory=list)
    mask_head: str = "template"  # template | mlp (the fused-feature MLP alone)
    stft: StftConfig = field(default_factory=StftConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DoaNetConfig:
        data = dict(data)
        data["stft"] = StftConfig(**data.get("stft", {}))
        data["band_widths"] = tuple(data.get("band_widths", (32, 128)))
        data.setdefault("mask_head", "mlp")  # checkpoints from before the template mask head
        return cls(**data)

    @property
    def grid(self) -> AzimuthGrid:
        return AzimuthGrid(self.bin_width, self.laplace_scale)


class PatchEncoder(nn.Module):
    """(N, C, T, W) band patch -> (N, T, out_dim): a strided conv that cuts the patch into 16 frequency
    pieces, a second conv, pooling to 4 frequency bins and a linear map per frame."""

    def __init__(self, in_channels: int, width: int, out_dim: int) -> None:
        super().__init__()
        stride = max(1, width // 16)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 12, (3, max(3, stride)), stride=(1, stride), padding=(1, 1 if stride < 3 else 0)),
            nn.BatchNorm2d(12),
            nn.GELU(),
            nn.Conv2d(12, 24, 3, stride=(1, 2), padding=1),
            nn.BatchNorm2d(24),
            nn.GELU(),
            nn.AdaptiveAvgPool2d((None, 4)),
        )
        self.proj = nn.Linear(24 * 4, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (N, 24, T, 4)
        return self.proj(h.permute(0, 2, 1, 3).flatten(2))


class AudioPromptEncoder(nn.Module):
    """Mono reference clip -> prompt embedding: log power in 4-bin bands, 2-D CNN, mean and max pooling."""

    def __init__(self, stft: StftConfig, out_dim: int) -> None:
        super().__init__()
        self.stft = stft
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=(2, 1), padding=1),
            nn.BatchNorm2d(16),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.GELU(),
        )
        self.proj = nn.Linear(128, out_dim)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.embed_and_template(clip)[0]

    def embed_and_template(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) clip -> embedding (B, D) and spectral template (B, F): the clip's time-averaged log
        power per 4-bin band, repeated to every bin, mean removed."""
        power = prompt_power(clip, self.stft)
        b, f, t = power.shape
        power = power.reshape(b, f // 4, 4, t).mean(2)  # 4-bin bands
        logmag = torch.log(power + 1e-8)
        logmag = (logmag - logmag.mean(dim=(1, 2), keepdim=True)) / 8.0
        h = self.net(logmag[:, None])  # (B, 64, F', T')
        embedding = self.proj(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))
        return embedding, band_template(power)


def prompt_power(clip: torch.Tensor, stft: StftConfig) -> torch.Tensor:
    """(B, N) mono clip -> (B, F, T) short-time power on the heads' STFT (Nyquist bin dropped)."""
    window = torch.hann_window(stft.n_fft, device=clip.device)
    spec = torch.stft(
        clip.float(), n_fft=stft.n_fft, hop_length=stft.hop, window=window, center=True, return_complex=True
    )
    return spec[:, : stft.num_bins].abs().pow(2)


def band_template(band_power: torch.Tensor) -> torch.Tensor:
    """(B, F / 4, T) power in 4-bin bands -> (B, F) spectral template: the time-averaged log magnitude per
    band (as the level feature), mean removed, repeated to every bin."""
    template = 0.5 * torch.log(band_power.mean(dim=2) + 1e-8)
    template = (template - template.mean(dim=1, keepdim=True)) / 4.0
    return template.repeat_interleave(4, dim=1)


class DescriptorPromptEncoder(nn.Module):
    """Mono reference clip -> prompt embedding through a fixed descriptor, then a small MLP.

    The descriptor is ``classical.spectral_shape``'s: per log-spaced band the time-averaged log energy
    (relative to the mean over bands) and its spread over frames, unit norm, so it ignores gain. A CNN over
    the whole log-spectrogram can learn the few training recordings themselves; this summary keeps only
    what two recordings of one kind of sound tend to share (it picks the target between perfectly
    separated sources in about two thirds of the benchmark's clips, untrained).
    """

    def __init__(self, stft: StftConfig, out_dim: int, bands: int = 40, freq_range=(60.0, 8000.0)) -> None:
        super().__init__()
        self.stft = stft
        # in numpy, made a tensor once: a network built on the meta device (a checkpoint's sizes checked before
        # anything is allocated) must not mix in a CPU tensor
        freqs = np.arange(stft.num_bins).astype(np.float32) * np.float32(stft.sample_rate / stft.n_fft)
        edges = np.geomspace(freq_range[0], min(freq_range[1], stft.sample_rate / 2), bands + 1)
        member = (freqs[None, :] >= edges[:-1, None]) & (freqs[None, :] < edges[1:, None])
        member = member[member.any(axis=1)]  # a band narrower than the bin spacing holds no bin: dropped
        self.register_buffer("member", torch.tensor(member, dtype=torch.float32), persistent=False)
        self.descriptor_size = 2 * member.shape[0]
        self.net = nn.Sequential(
            nn.Linear(self.descriptor_size, 2 * out_dim), nn.GELU(), nn.Linear(2 * out_dim, out_dim)
        )

    def descriptor(self, power: torch.Tensor) -> torch.Tensor:
        """(B, F, T) power -> (B, 2 * bands) unit-norm spectral-shape descriptor."""
        power = power / (power.mean(dim=(1, 2), keepdim=True) + 1e-30)
        level = torch.log(torch.einsum("kf,bft->bkt", self.member, power) + 1e-10)  # (B, bands, T)
        shape = torch.cat([level.mean(dim=2) - level.mean(dim=(1, 2))[:, None], level.std(dim=2, correction=0)], 1)
        shape = shape - shape.mean(dim=1, keepdim=True)
        return shape / (shape.norm(dim=1, keepdim=True) + EPS)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.embed_and_template(clip)[0]

    def embed_and_template(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) clip -> embedding (B, D) and the spectral template (B, F) of :class:`AudioPromptEncoder`."""
        power = prompt_power(clip, self.stft)
        b, f, t = power.shape
        embedding = self.net(self.descriptor(power) * math.sqrt(self.descriptor_size))  # unit-variance entries
        return embedding, band_template(power.reshape(b, f // 4, 4, t).mean(2))


class PromptMaskHead(nn.Module):
    """Time-frequency mask from per-bin evidence, conditioned on the prompt.

    Input channels per (t, f): the fused-feature MLP's mask logit, the mixture's log level, the prompt's
    template, their difference, cos/sin IPD and ILD; two 3x3 conv layers whose hidden channels are
    scaled and shifted by the prompt embedding (FiLM), then a 1x1 conv to the mask logit.
    """

    IN_CHANNELS = 7

    def __init__(self, prompt_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(self.IN_CHANNELS, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=(1, 2), dilation=(1, 2))
        self.out = nn.Conv2d(hidden, 1, 1)
        self.film = nn.Linear(prompt_dim, 4 * hidden)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(
        self, mlp_logit: torch.Tensor, feats: torch.Tensor, template: torch.Tensor, prompt: torch.Tensor
    ) -> torch.Tensor:
        """mlp_logit (B, T, F), feats (B, 4, T, F), template (B, F), prompt (B, D) -> logit (B, T, F)."""
        level = feats[:, 3]
        tmpl = template[:, None, :].expand_as(level)
        x = torch.stack([mlp_logit, level, tmpl, level - tmpl, feats[:, 0], feats[:, 1], feats[:, 2]], dim=1)
        g1, b1, g2, b2 = self.film(prompt)[:, :, None, None].chunk(4, dim=1)
        h = nn.functional.gelu(self.conv1(x) * (1 + g1) + b1)
        h = nn.functional.gelu(self.conv2(h) * (1 + g2) + b2)
        return mlp_logit + self.out(h)[:, 0]


class SelectiveDoaNet(nn.Module):
    """Prompted binaural DoA posterior; see the module docstring for the stages."""

    def __init__(self, cfg: DoaNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.stft.num_bins
        self.num_patches = [f // w for w in cfg.band_widths] + [1]
        d, p = cfg.model_dim, cfg.patch_dim
        if d % SBF_HEADS:
            raise ValueError(f"model_dim {d} must be a multiple of {SBF_HEADS}, the SBF layer's attention heads")
        widths = [*cfg.band_widths, f]
        self.patch_encoders = nn.ModuleList(PatchEncoder(4, w, p) for w in widths)
        # per-patch projections W^k_{b,i}, W^v_{b,i} and a per-band query projection W^q_{b,i}
        self.key = nn.ParameterList(nn.Parameter(torch.randn(n, p, d) / math.sqrt(p)) for n in self.num_patches)
        self.value = nn.ParameterList(nn.Parameter(torch.randn(n, p, p) / math.sqrt(p)) for n in self.num_patches)
        self.query = nn.ParameterList(nn.Parameter(torch.randn(n, d, d) / math.sqrt(d)) for n in self.num_patches)
        if cfg.prompt == "audio":
            self.prompt_encoder: nn.Module = AudioPromptEncoder(cfg.stft, d)
        elif cfg.prompt == "descriptor":
            self.prompt_encoder = DescriptorPromptEncoder(cfg.stft, d)
        elif cfg.prompt == "category":
            if cfg.num_categories < 1:
                raise ValueError("prompt='category' needs num_categories >= 1")
            self.prompt_encoder = nn.Embedding(cfg.num_categories, d)
        else:
            raise ValueError(f"unknown DoA prompt kind {cfg.prompt!r}; expected 'audio', 'descriptor' or 'category'")
        if cfg.mask_head == "template":
            self.mask_head: PromptMaskHead | None = PromptMaskHead(d)
            if cfg.prompt == "category":  # a learned spectral template per category
                self.category_template = nn.Embedding(cfg.num_categories, f)
                nn.init.zeros_(self.category_template.weight)
        elif cfg.mask_head == "mlp":
            self.mask_head = None
        else:
            raise ValueError(f"unknown DoA mask head {cfg.mask_head!r}; expected 'template' or 'mlp'")
        self.mixture_semantic = nn.Sequential(nn.Linear(f // 4, d), nn.GELU(), nn.Linear(d, d))
        self.sbf_in = nn.Linear(2 * d, d)
        self.sbf = nn.TransformerEncoderLayer(d, nhead=SBF_HEADS, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
        self.band_weights = nn.Sequential(nn.Linear(3 * p, p), nn.GELU(), nn.Linear(p, 3))
        self.mask_mlp = nn.Sequential(nn.Linear(p, 2 * p), nn.GELU(), nn.Linear(2 * p, f))
        self.doa_mlp = nn.Sequential(
            nn.Linear(3 * f // 2 + f // 4, 256),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(256, 256),
            nn.GELU(),
            nn.Linear(256, cfg.grid.num_bins),
        )

    # ---------------------------------------------------------------------------------------- pieces
    def encode_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        """(B, N) reference waveforms (prompt="audio" or "descriptor") or (B,) category indices -> (B, D)."""
        return self.prompt_encoder(prompt)

    def _prompt_and_template(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompt embedding (B, D) and, for the template mask head, the spectral template (B, F)."""
        if self.mask_head is None:
            return self.encode_prompt(prompt), None
        if self.cfg.prompt in ("audio", "descriptor"):
            return self.prompt_encoder.embed_and_template(prompt)
        return self.encode_prompt(prompt), self.category_template(prompt)

    def _semantic_query(self, level: torch.Tensor, prompt_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, F) mixture log level and (B, D) prompt -> SBF query sequence (B, T, D)."""
        b, t, f = level.shape
        coarse = level.reshape(b, t, f // 4, 4).mean(-1)
        audio = self.mixture_semantic(coarse)
        fused = self.sbf_in(torch.cat([prompt_emb[:, None].expand(-1, t, -1), audio], dim=-1))
        return self.sbf(fused)

    def _align_band(self, band: int, patches: torch.Tensor, query: torch.Tensor):
        """SSA block of one resolution: (B, n, C, T, W) patches -> fused (B, T, P) and weights beta (B, n)."""
        b, n, c, t, w = patches.shape
        enc = self.patch_encoders[band](patches.reshape(b * n, c, t, w)).reshape(b, n, t, -1)
        q = torch.einsum("btd,nde->bnte", query, self.query[band])
        k = torch.einsum("bntp,npd->bntd", enc, self.key[band])
        v = torch.einsum("bntp,npq->bntq", enc, self.value[band])
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, n, T, T)
        z = torch.softmax(scores, dim=-1) @ v  # (B, n, T, P)
        beta = torch.softmax(scores.mean(dim=(2, 3)), dim=1)  # band importance from mean-pooled maps
        return (beta[:, :, None, None] * z).sum(dim=1), beta

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, audio: torch.Tensor, prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 2, N) binaural mixture at ``cfg.stft.sample_rate`` and prompt -> dict with ``posterior``
        (B, K), ``mask`` (B, T, F), ``masked`` (B, T, F) compressed magnitude, ``band_weights`` (B, T, 3)."""
        spec = binaural_stft(audio, self.cfg.stft)
        feats = interaural_features(spec)  # (B, 4, T, F)
        prompt_emb, template = self._prompt_and_template(prompt)
        query = self._semantic_query(feats[:, 3], prompt_emb)
        fused_bands, betas = [], []
        for band, patches in enumerate(tri_band_patches(feats, self.cfg.band_widths)):
            z, beta = self._align_band(band, patches, query)
            fused_bands.append(z)
            betas.append(beta)
        stacked = torch.stack(fused_bands, dim=2)  # (B, T, 3, P)
        alpha = torch.softmax(self.band_weights(stacked.flatten(2)), dim=-1)  # (B, T, 3)
        fused = (alpha[..., None] * stacked).sum(dim=2)  # (B, T, P)
        mask_logit = self.mask_mlp(fused)  # (B, T, F)
        if self.mask_head is not None:
            mask_logit = self.mask_head(mask_logit, feats, template, prompt_emb)
        mask = torch.sigmoid(mask_logit)
        magnitude = compressed_magnitude(spec)
        masked = mask * magnitude
        logits = self.doa_mlp(self._masked_spatial_spectrum(feats, masked))
        return {
            "posterior": torch.softmax(logits, dim=-1),
            "log_posterior": torch.log_softmax(logits, dim=-1),
            "mask": mask,
            "masked": masked,
            "band_weights": alpha,
            "patch_weights": betas,
        }

    @staticmethod
    def _masked_spatial_spectrum(feats: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Mask-weighted temporal mean of cos/sin IPD and ILD per bin (bin pairs averaged) plus the masked
        level per 4 bins: what the DoA MLP reads of the masked spectrogram."""
        w = masked[:, None]  # (B, 1, T, F)
        spatial = (w * feats[:, :3]).sum(dim=2) / (w.sum(dim=2) + EPS)  # (B, 3, F)
        b, c, f = spatial.shape
        spatial = spatial.reshape(b, c, f // 2, 2).mean(-1).flatten(1)
        level = torch.log(masked.mean(dim=1) + EPS)
        level = level.reshape(b, f // 4, 4).mean(-1)
        return torch.cat([spatial, (level - level.mean(dim=1, keepdim=True)) / 4.0], dim=1)


def posterior_loss(
    out: dict[str, torch.Tensor], target_posterior: torch.Tensor, kind: str = "mse"
) -> tuple[torch.Tensor, dict[str, float]]:
    """``mse``: sum over bins of (p_hat - p)^2, as AV-SSAN. ``cross_entropy``: -sum p log p_hat against the
    same soft target (KL up to a constant), whose gradient does not vanish while p_hat is still spread
    out over the 72 bins, as the squared error's does."""
    if kind == "mse":
        loss = torch.sum((out["posterior"] - target_posterior) ** 2, dim=1).mean()
    elif kind == "cross_entropy":
        loss = -torch.sum(target_posterior * out["log_posterior"], dim=1).mean()
    else:
        raise ValueError(f"posterior loss must be one of {POSTERIOR_LOSSES}, got {kind!r}")
    return loss, {f"posterior_{kind}": float(loss.detach())}


def doa_loss(
    out: dict[str, torch.Tensor],
    target_magnitude: torch.Tensor,
    target_posterior: torch.Tensor,
    doa_weight: float = 1.0,
    posterior_kind: str = "mse",
) -> tuple[torch.Tensor, dict[str, float]]:
    """AV-SSAN's joint loss: MSE(masked, target-only spectrogram) + the posterior loss (:func:`posterior_loss`).

    The posterior term is scaled by ``doa_weight`` (1 in the paper's equation (14)).
    """
    recon = torch.mean((out["masked"] - target_magnitude) ** 2)
    posterior, posterior_parts = posterior_loss(out, target_posterior, posterior_kind)
    total = recon + doa_weight * posterior
    parts = {"recon": float(recon.detach()), **posterior_parts}
    if "mask" in out:  # a mean near 1 means the mask has saturated open and selects nothing
        parts["mask_mean"] = float(out["mask"].detach().mean())
    return total, parts
