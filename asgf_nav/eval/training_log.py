"""A training run's TensorBoard scalars as series over frames, and their means over windows of frames.

The trainer logs every scalar at the run's frame count. A resumed run writes a new event file that begins with a
restart marker (``SummaryWriter(purge_step=...)``): what earlier files logged at or after that step is dropped,
as TensorBoard itself shows the run, so a run resumed from an older checkpoint does not count twice the updates
it repeats. ``train/episode/*`` values are means over the last ``train.stats_window_episodes`` finished episodes
at each update, so a window's mean of them is a smoothed figure, not a mean over the episodes of that window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EVENT_FILE_GLOB = "events.out.tfevents.*"
PERCENT_METRICS = ("success", "spl", "softspl", "sna")  # logged as fractions, shown in percent


class TrainingLogError(ValueError):
    """A run directory without a readable TensorBoard log, or a tag it did not log."""


@dataclass
class TrainingLog:
    """Scalars by tag as (frames, values) in frame order, and where the run was resumed: the last frame kept
    before each resume (in the trainer's runs the frames of the checkpoint it resumed from)."""

    source: Path
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """(frames, values) of ``tag``: a full tag (``train/episode/spl``) or the last part of one (``spl``)
        when exactly one training tag (``train/...``), or else exactly one tag, ends with it (``val/spl`` names
        the validation figure)."""
        return self.scalars[self.resolve_tag(tag)]

    def has(self, tag: str) -> bool:
        try:
            self.resolve_tag(tag)
        except TrainingLogError:
            return False
        return True

    def resolve_tag(self, tag: str) -> str:
        if tag in self.scalars:
            return tag
        matches = sorted(t for t in self.scalars if t.endswith("/" + tag))
        training = [t for t in matches if t.startswith("train/")]
        if len(matches) == 1 or len(training) == 1:
            return (training or matches)[0]
        if matches:
            raise TrainingLogError(f"{self.source}: tag {tag!r} is ambiguous: {', '.join(matches)}")
        raise TrainingLogError(f"{self.source}: no scalar {tag!r} was logged; it has {', '.join(sorted(self.scalars))}")

    @property
    def last_frame(self) -> int:
        return max((int(frames[-1]) for frames, _ in self.scalars.values() if frames.size), default=0)


def event_directory(run: str | Path) -> Path:
    """The directory holding a run's event files: ``RUN/tb`` of a run directory, or RUN itself."""
    run = Path(run)
    if not run.exists():
        raise TrainingLogError(f"{run}: no such run directory")
    for candidate in (run / "tb", run):
        if candidate.is_dir() and any(candidate.glob(EVENT_FILE_GLOB)):
            return candidate
    raise TrainingLogError(
        f"{run}: no TensorBoard log ({EVENT_FILE_GLOB} files) in it or in {run / 'tb'}; give a training run's "
        "directory (train.run_dir)"
    )


def read_training_log(run: str | Path) -> TrainingLog:
    """Every scalar a run logged, across its resumes (see the module docstring)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    directory = event_directory(run)
    points: dict[str, dict[int, float]] = {}
    resumed_at: list[int] = []
    files = []
    for path in directory.glob(EVENT_FILE_GLOB):
        try:
            events = list(LegacyEventFileLoader(str(path)).Load())
        except Exception as exc:  # name the file rather than raise a protobuf or OS error
            raise TrainingLogError(f"{path}: cannot read this TensorBoard event file ({exc})") from exc
        first_wall_time = min((e.wall_time for e in events), default=math.inf)
        files.append((first_wall_time, path.name, events))
    for _, _, events in sorted(files, key=lambda item: item[:2]):
        for event in events:
            kind = event.WhichOneof("what")
            if kind == "session_log" and event.session_log.status == event.session_log.START:
                restart = int(event.step)
                resumed_at = [frame for frame in resumed_at if frame < restart]  # resumes it goes back behind
                kept = [step for values in points.values() for step in values if step < restart]
                if kept and max(kept) not in resumed_at:  # it continues what is kept; else it starts afresh
                    resumed_at.append(max(kept))
                for values in points.values():
                    for step in [s for s in values if s >= restart]:
                        del values[step]
            elif kind == "summary":
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = float(value.simple_value)
                    elif value.HasField("tensor") and _is_number(array := make_ndarray(value.tensor)):
                        number = float(array.reshape(()))
                    else:
                        continue  # images, histograms, text: not scalars
                    points.setdefault(value.tag, {})[int(event.step)] = number
    if not any(points.values()):  # the loader reads a file's records up to the first incomplete one
        raise TrainingLogError(
            f"{directory}: its event files hold no scalars (a run stopped before its first update, or files "
            "that are not TensorBoard's)"
        )
    scalars = {}
    for tag, values in points.items():
        if not values:
            continue  # all it logged was gone back behind by a resume
        steps = np.array(sorted(values), dtype=np.int64)
        scalars[tag] = (steps, np.array([values[s] for s in steps], dtype=np.float64))
    return TrainingLog(directory, scalars, resumed_at)


def _is_number(array: np.ndarray) -> bool:
    return array.size == 1 and array.dtype.kind in "biuf"


def window_edges(last_frame: int, windows: int | None = None, window_frames: int | None = None) -> np.ndarray:
    """Frame edges (0, ..., last_frame) of ``windows`` equal windows or of windows of ``window_frames`` frames
    (the last one shorter when they do not divide the run)."""
    if (windows is None) == (window_frames is None):
        raise ValueError("give exactly one of windows and window_frames")
    if windows is not None:
        if windows < 1:
            raise ValueError(f"windows must be at least 1, got {windows}")
        return np.linspace(0, last_frame, windows + 1) if last_frame > 0 else np.zeros(2)
    if window_frames is None or window_frames < 1:
        raise ValueError(f"window_frames must be at least 1, got {window_frames}")
    edges = np.arange(0, max(last_frame, 1), window_frames, dtype=np.float64)
    return np.append(edges, last_frame)


def window_means(frames: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the values logged in each window (edges[i], edges[i + 1]], the first one closed on both sides (a
    log may begin at step 0); nan for a window without any."""
    means = np.full(len(edges) - 1, np.nan)
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = ((frames > low) if i else (frames >= low)) & (frames <= high)
        if inside.any():
            means[i] = float(values[inside].mean())
    return means


def is_percent(tag: str) -> bool:
    return tag.rsplit("/", 1)[-1] in PERCENT_METRICS


def window_table(log: TrainingLog, tags: list[str], edges: np.ndarray) -> str:
    """A Markdown table: one row per window of frames, one column per tag (rates in percent)."""
    resolved = [log.resolve_tag(tag) for tag in tags]
    header = ["frames"] + [f"{tag.removeprefix('train/')}{' %' if is_percent(tag) else ''}" for tag in resolved]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    columns = []
    for tag in resolved:
        frames, values = log.scalars[tag]
        columns.append((window_means(frames, values, edges), is_percent(tag)))
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        cells = [f"{int(low):,} - {int(high):,}"] + [_cell(means[i], percent) for means, percent in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float, percent: bool) -> str:
    if not math.isfinite(value):
        return "-"  # nothing logged in the window
    return f"{100.0 * value:.1f}" if percent else f"{value:.3g}"
