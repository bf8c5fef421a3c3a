"""A learned head's posterior (the selective head's or the CRNN's) sharpened by the onset-weighted HRTF templates.

The two are right on different clips. The head chooses which source to follow and roughly where it is
(the lowest MAE and highest ACC within 20 degrees of the benchmark), but its 24 ms frames blur the first
arrival of each sound event. The onset-weighted templates read those first arrivals against the exact
model of the head, but have no idea which source is the target. Their product lets the templates place
the estimate within the region the head chose:

    fused(k)  ∝  smooth(posterior)(k) * exp(template_weight * score(k))

where ``smooth`` spreads the head's posterior over ``smooth_bins`` bins on each side (its peak is often a
bin or two off) and ``score`` is :meth:`HrtfTemplateDoa.scores`, in [-1, 1]. With ``template_weight`` 0 it
is the head alone; as it grows it becomes the templates alone. The defaults were chosen on the validation
scenes and sounds (``benchmarks/doa_fusion_weights.py``); the benchmark's table is in
docs/doa-benchmark.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from asgf_nav.models.doa.classical import HrtfTemplateDoa
from asgf_nav.models.doa.config import SHARPEN_SMOOTH_BINS, SHARPEN_WEIGHT
from asgf_nav.models.doa.features import AzimuthGrid


@dataclass(frozen=True)
class TemplateSharpening:
    """Settings of the product of the head's posterior and the templates' evidence."""

    smooth_bins: int = SHARPEN_SMOOTH_BINS  # the head's posterior spread over this many bins on each side
    template_weight: float = SHARPEN_WEIGHT  # nats of log-posterior per unit of template score

    def __post_init__(self) -> None:
        if isinstance(self.smooth_bins, bool) or not isinstance(self.smooth_bins, int) or self.smooth_bins < 0:
            raise ValueError(f"smooth_bins must be a whole number >= 0, got {self.smooth_bins!r}")
        if not (math.isfinite(self.template_weight) and self.template_weight >= 0):
            raise ValueError(f"template_weight must be a finite number >= 0, got {self.template_weight!r}")

    def check_bins(self, num_bins: int) -> None:
        """Refuse a spread wider than a posterior of ``num_bins`` bins (known once the head is loaded)."""
        if 2 * self.smooth_bins + 1 > num_bins:
            raise ValueError(f"smooth_bins={self.smooth_bins} spreads wider than the head's {num_bins} bins")

    def fuse(self, posterior: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(B, K) head posteriors and (B, K) template scores on the same azimuth bins -> (B, K) fused
        posteriors, each summing to 1."""
        posterior, scores = np.asarray(posterior, dtype=np.float64), np.asarray(scores, dtype=np.float64)
        if posterior.ndim != 2 or posterior.shape != scores.shape:
            raise ValueError(
                f"posterior {posterior.shape} and template scores {scores.shape} must both be (B, K) on the same bins"
            )
        self.check_bins(posterior.shape[1])
        spread = sum(np.roll(posterior, shift, axis=1) for shift in range(-self.smooth_bins, self.smooth_bins + 1))
        log_fused = np.log(spread / (2 * self.smooth_bins + 1) + 1e-9) + self.template_weight * scores
        fused = np.exp(log_fused - log_fused.max(axis=1, keepdims=True))
        return fused / fused.sum(axis=1, keepdims=True)


def template_scores(
    template: HrtfTemplateDoa, mixtures: np.ndarray, grid: AzimuthGrid, progress: str | None = None
) -> np.ndarray:
    """(B, 2, N) clips -> (B, K) template scores on ``grid``'s bins, which must be the templates' azimuths;
    ``progress`` names a progress bar (none without it)."""
    if template.azimuths.shape != grid.centers.shape or not np.allclose(template.azimuths, grid.centers):
        raise ValueError(
            f"the templates' azimuth step ({360 / len(template.azimuths):g} deg) differs from the head's "
            f"bin width ({grid.bin_width:g} deg): build the templates with azimuth_step={grid.bin_width:g}"
        )
    clips = np.asarray(mixtures, dtype=np.float64)
    bar = tqdm(clips, desc=progress, disable=progress is None, mininterval=5, leave=False)
    return np.stack([template.scores(clip) for clip in bar])
