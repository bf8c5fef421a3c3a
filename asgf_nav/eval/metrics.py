"""Aggregation of per-episode metrics into means with 95 % confidence intervals.

Each metric's interval is the Student-t interval of the mean (episodes are independent draws from the
split's episode distribution); for a binary metric (success) the Wilson score interval is reported as
well, because it stays inside [0, 1] and behaves when almost every episode succeeds or fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

REPORTED_METRICS: tuple[str, ...] = ("success", "spl", "sna", "softspl", "distance_to_goal", "num_actions")
METRIC_LABELS: dict[str, str] = {
    "success": "SR", "spl": "SPL", "sna": "SNA", "softspl": "SoftSPL",
    "distance_to_goal": "DTG (m)", "num_actions": "Actions",
}  # fmt: skip
PERCENT_METRICS = frozenset({"success", "spl", "sna", "softspl"})


@dataclass(frozen=True)
class MetricSummary:
    """Mean of one metric over ``count`` episodes with a confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    std: float
    count: int
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> MetricSummary:
        return cls(
            float(data["mean"]),
            float(data["low"]),
            float(data["high"]),
            float(data["std"]),
            int(data["count"]),
            float(data.get("level", 0.95)),
        )


def mean_confidence_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> MetricSummary:
    """Mean and Student-t interval; one value gives a zero-width interval, no values raise."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot summarise a metric over zero episodes")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"metric values must be finite, got {x[~np.isfinite(x)][:3].tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    mean = float(x.mean())
    if x.size == 1:
        return MetricSummary(mean, mean, mean, 0.0, 1, level)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2.0, df=x.size - 1)) * std / math.sqrt(x.size)
    return MetricSummary(mean, mean - half, mean + half, std, int(x.size), level)


def wilson_interval(successes: int, count: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if count <= 0:
        raise ValueError("Wilson interval needs at least one trial")
    if not 0 <= successes <= count:
        raise ValueError(f"successes must be in [0, {count}], got {successes}")
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    p = successes / count
    denom = 1.0 + z * z / count
    centre = (p + z * z / (2 * count)) / denom
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denom
    # exact at 0 / n and n / n, where rounding would put the bound one step inside and leave out p itself
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == count else min(1.0, centre + half)
    return low, high


def aggregate(
    records: Iterable[Mapping[str, float]], metrics: Sequence[str] = REPORTED_METRICS, level: float = 0.95
) -> dict[str, MetricSummary]:
    """Summaries of ``metrics`` over per-episode metric dicts (every record must hold every metric)."""
    rows = list(records)
    if not rows:
        raise ValueError("no episodes to aggregate")
    out: dict[str, MetricSummary] = {}
    for name in metrics:
        missing = [i for i, r in enumerate(rows) if name not in r]
        if missing:
            raise KeyError(f"metric {name!r} missing from episode record(s) {missing[:5]}")
        out[name] = mean_confidence_interval([float(r[name]) for r in rows], level)
    return out


def success_wilson(records: Iterable[Mapping[str, float]], level: float = 0.95) -> tuple[float, float]:
    rows = [float(r["success"]) for r in records]
    return wilson_interval(int(round(sum(rows))), len(rows), level)


def format_summary(summary: MetricSummary, metric: str) -> str:
    """'82.7 ± 2.3' (percent for rate-like metrics) or '1.42 ± 0.10' for distances and counts."""
    if metric in PERCENT_METRICS:
        return f"{100 * summary.mean:.1f} ± {100 * summary.half_width:.1f}"
    return f"{summary.mean:.2f} ± {summary.half_width:.2f}"
