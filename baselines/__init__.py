"""Non-learned and supervised baselines of the AudioGoal task, run by the same evaluator as the policies.

``random`` (SoundSpaces' random agent), ``direction_follower`` and ``gan`` (Gan et al.) with a supervised
audio model trained by scripts/train_baselines.py, and ``oracle`` (shortest path, an upper bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the evaluator imports torch; the names below serve command-line parsers too
    from asgf_nav.eval.evaluator import Agent

BASELINES: tuple[str, ...] = ("random", "direction_follower", "gan", "oracle")
AUDIO_MODEL_BASELINES: tuple[str, ...] = ("direction_follower", "gan")
# baselines that draw their actions from a seeded stream (evaluate.py --seed); the others act deterministically
SEEDED_BASELINES: tuple[str, ...] = ("random",)


def audio_model_path(cfg: Any, model_path: str | Path | None = None) -> Path:
    """The audio model an audio-model baseline loads: ``model_path``, else the config's sound split's own."""
    from baselines.audio_model import default_model_path

    return Path(model_path or default_model_path(cfg.scenes.data_root, cfg.scenes.dataset, cfg.task.sound_split))


def baseline_class(name: str) -> type[Agent]:
    """The agent class of the baseline ``name`` (imported on demand: the audio ones pull in their model)."""
    if name == "random":
        from baselines.random_agent import RandomAgent

        return RandomAgent
    if name == "oracle":
        from baselines.oracle import OracleAgent

        return OracleAgent
    if name == "gan":
        from baselines.gan import GanAgent

        return GanAgent
    if name == "direction_follower":
        from baselines.direction_follower import DirectionFollowerAgent

        return DirectionFollowerAgent
    raise ValueError(f"unknown baseline {name!r}; available: {list(BASELINES)}")


def baseline_sensors(name: str) -> tuple[str, ...]:
    """The observations the baseline ``name`` reads: an evaluation of it loads (and needs baked) no others."""
    return tuple(baseline_class(name).sensors)


def make_baseline(
    name: str,
    cfg: Any,
    model_path: str | Path | None = None,
    seed: int = 0,
    random_stop_rule: str = "goal",
    spectrogram_shape: Sequence[int] | None = None,
) -> Agent:
    """The baseline ``name``; the audio-model baselines load ``model_path`` (default under the data root) and,
    given the env's ``spectrogram_shape``, refuse a model trained on another (CheckpointError)."""
    agent_class: Any = baseline_class(name)  # an unknown name raises here; each class takes its own arguments
    if name in SEEDED_BASELINES:
        return agent_class(seed=seed, stop_rule=random_stop_rule)
    if name in AUDIO_MODEL_BASELINES:
        from asgf_nav.rl.checkpoint import response_versions
        from asgf_nav.scenes.soundspaces_import import scene_source
        from baselines.audio_model import load_model

        embedded = scene_source(cfg) == "embedded"
        travel_time = cfg.task.keep_travel_time if embedded else None  # baked scenes only
        heard = response_versions(cfg) if embedded else None
        path = audio_model_path(cfg, model_path)
        return agent_class(load_model(path, spectrogram_shape, travel_time, cfg.task.sound_split, heard))
    return agent_class()


__all__ = [
    "AUDIO_MODEL_BASELINES",
    "BASELINES",
    "SEEDED_BASELINES",
    "audio_model_path",
    "baseline_class",
    "baseline_sensors",
    "make_baseline",
]
