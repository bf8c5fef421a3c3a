"""Learning curves of one or more training runs: one panel per scalar, frames on the x axis.

Each run is drawn as its logged values (faint) and their means over windows of frames (a step line), so the
trend reads through the noise of a 50-episode window; dotted vertical lines mark where a run was resumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from asgf_nav.eval.training_log import TrainingLog, is_percent, window_means
from asgf_nav.io import atomic_savefig


def plot_training_curves(
    logs: Sequence[TrainingLog],
    labels: Sequence[str],
    tags: Sequence[str],
    edges: Sequence[np.ndarray],
    out: str | Path,
    columns: int | None = None,
) -> Path:
    """Write the figure to ``out``; ``edges[i]`` are the frame windows of ``logs[i]``; by default three panels
    a row (two for four)."""
    if columns is None:
        columns = 2 if len(tags) == 4 else 3
    columns = min(columns, len(tags))
    rows = math.ceil(len(tags) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    colours = matplotlib.colormaps["tab10"].colors
    for panel, tag in enumerate(tags):
        ax = fig.add_subplot(rows, columns, panel + 1)
        full_tag = logs[0].resolve_tag(tag)
        scale = 100.0 if is_percent(full_tag) else 1.0
        for i, (log, label, run_edges) in enumerate(zip(logs, labels, edges)):
            colour = colours[i % len(colours)]
            frames, values = log.series(tag)
            ax.plot(frames, values * scale, color=colour, alpha=0.25, linewidth=0.8)
            means = window_means(frames, values, run_edges) * scale
            ax.stairs(means, run_edges, color=colour, linewidth=1.8, label=label, baseline=None)
            for resumed in log.resumed_at:
                ax.axvline(resumed, color=colour, linestyle=":", linewidth=1.0)
        ax.set_title(full_tag.removeprefix("train/") + (" (%)" if scale != 1.0 else ""), fontsize=10)
        ax.set_xlabel("frames")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.grid(alpha=0.3)
        if panel == 0 and (len(logs) > 1 or any(log.resumed_at for log in logs)):
            ax.legend(fontsize=8, title="dotted: resumed" if any(log.resumed_at for log in logs) else None)
    return atomic_savefig(fig, out, dpi=110)
