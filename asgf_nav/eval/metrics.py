"""Aggregation of per-episode metrics into means with 95 % confidence intervals.

Each metric's interval is the Student-t interval of the mean (episodes are independent draws from the
split's episode distribution); for a binary metric (success) the Wilson score interval is reported as
well, because it stays inside [0, 1] and behaves when almost every episode succeeds or fails (where the
t interval shrinks to "0.0 ± 0.0"). One episode has no t interval (its sample deviation is undefined): its
summary records none (``low``, ``high`` and ``std`` are None, null in summary.json) and prints as
"100.0 (n=1)".
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
BINARY_METRICS = frozenset({"success"})  # 0 or 1 per episode: a proportion, whose interval is Wilson's


@dataclass(frozen=True)
class MetricSummary:
    """Mean of one metric over ``count`` episodes with a confidence interval [low, high]; ``low``, ``high``
    and ``std`` are None over one episode, where neither is defined (an earlier release stored the mean as
    both ends and 0 as the deviation: read back, those print as one episode too)."""

    mean: float
    low: float | None
    high: float | None
    std: float | None
    count: int
    level: float = 0.95

    @property
    def has_interval(self) -> bool:
        """Whether an interval exists: not over one episode, whatever an earlier release stored for it."""
        return self.count > 1 and self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, or None without an interval (:attr:`has_interval`)."""
        if not self.has_interval:
            return None
        return (self.high - self.low) / 2.0

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> MetricSummary:
        """Read back :meth:`to_dict`; a null interval is refused but over one episode, where it is the norm."""
        count = int(data["count"])
        low, high, std = data["low"], data["high"], data["std"]
        nulls = [value is None for value in (low, high, std)]
        if any(nulls) and not (all(nulls) and count == 1):
            raise ValueError(f"low, high and std are null together and only over one episode, got {dict(data)}")
        return cls(
            float(data["mean"]),
            None if low is None else float(low),
            None if high is None else float(high),
            None if std is None else float(std),
            count,
            float(data.get("level", 0.95)),
        )


def mean_confidence_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> MetricSummary:
    """Mean and Student-t interval; one value gives no interval (``low``, ``high``, ``std`` None: the t
    interval is undefined, and a zero-width one would claim certainty), no values raise."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot summarise a metric over zero episodes")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"metric values must be finite, got {x[~np.isfinite(x)][:3].tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    mean = float(x.mean())
    if x.size == 1:
        return MetricSummary(mean, None, None, None, 1, level)
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


def summary_wilson(summary: MetricSummary) -> tuple[float, float]:
    """The Wilson interval of a binary metric's summary at its level: its mean times its count is the number
    of successes, so a summary without stored Wilson bounds (a scene's) gets them as the overall one does."""
    return wilson_interval(int(round(summary.mean * summary.count)), summary.count, summary.level)


ONE_EPISODE_NOTE = "(n=1)"  # a cell over one episode: its value, and no interval


def _value(value: float, metric: str) -> str:
    return f"{100 * value:.1f}" if metric in PERCENT_METRICS else f"{value:.2f}"


def format_summary(summary: MetricSummary, metric: str) -> str:
    """'82.7 ± 2.3' (percent for rate-like metrics) or '1.42 ± 0.10' for distances and counts; over one
    episode, which has no interval, '100.0 (n=1)'."""
    if not summary.has_interval:
        return f"{_value(summary.mean, metric)} {ONE_EPISODE_NOTE}"
    return f"{_value(summary.mean, metric)} ± {_value(summary.half_width, metric)}"


def format_wilson(summary: MetricSummary, metric: str, bounds: tuple[float, float] | None = None) -> str:
    """A binary metric as its mean and Wilson interval, '0.0 [0.0, 16.8]' in %, which does not shrink to
    '0.0 ± 0.0' when every episode fails (nor reach past 0 or 100 %); ``bounds`` where the summary stores them
    (else :func:`summary_wilson`); over one episode '100.0 (n=1)', like every other cell of its row."""
    if summary.count <= 1:
        return format_summary(summary, metric)
    low, high = bounds if bounds is not None else summary_wilson(summary)
    return f"{_value(summary.mean, metric)} [{_value(low, metric)}, {_value(high, metric)}]"
