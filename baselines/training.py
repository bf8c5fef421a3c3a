"""Training the supervised audio model of the Direction Follower and Gan et al. baselines on the train split.

Samples (receiver, source, yaw, sound) are drawn from the train split's scenes and sounds (telephone for heard,
the train sound list for unheard). ``VAL_FRACTION`` of them validate the model: they are drawn at that share of
each scene's source nodes, held out whole, so no validation sample repeats a training sample's geometry. The
saved model's meta records the held-out sources, the validation scores and the seconds the split's own
spectrograms and training took (rir_seconds: the RIRs, rendered once for all sound splits).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from asgf_nav.config import ExperimentConfig
from asgf_nav.io import code_version
from asgf_nav.scenes.soundspaces_import import scene_source
from asgf_nav.tasks.factory import split_sound_names
from asgf_nav.tasks.world import load_world
from baselines.audio_model import (
    AudioSamples,
    build_samples,
    chance_scores,
    default_model_path,
    render_rirs,
    save_model,
    split_geometry,
    train_model,
)
from baselines.recipe import PATIENCE, VAL_FRACTION, train_size

logger = logging.getLogger(__name__)


def train_scene_names(cfg: ExperimentConfig) -> list[str]:
    """The scenes of the train split that --scenes may name (SoundSpaces data: its downloaded train scenes)."""
    from asgf_nav.scenes.presets import get_preset

    if scene_source(cfg) == "soundspaces":
        from asgf_nav.scenes.soundspaces import SoundSpacesPaths
        from asgf_nav.scenes.soundspaces_import import soundspaces_root
        from asgf_nav.tasks.soundspaces_world import downloaded_split_scenes

        paths = SoundSpacesPaths(soundspaces_root(cfg), cfg.scenes.dataset)
        return downloaded_split_scenes(paths, "train", cfg.task.sound_split)
    return get_preset(cfg.scenes.dataset).split_scenes("train")


def split_samples(samples: AudioSamples, cut: int) -> tuple[AudioSamples, AudioSamples]:
    """The first ``cut`` samples (training) and the rest (validation)."""
    n = len(samples.direction)

    def part(sl: slice) -> AudioSamples:
        return AudioSamples(samples.spectrogram[sl], samples.direction[sl], samples.close[sl], samples.position[sl])

    return part(slice(0, cut)), part(slice(cut, n))


def train_audio_models(
    cfg: ExperimentConfig,
    sound_splits: list[str],
    scenes: list[str] | None,
    samples: int,
    epochs: int,
    seed: int,
    out: str | None = None,
    patience: int | None = PATIENCE,
) -> list[Path]:
    """One model per sound split, saved to ``out`` or its default path; the sampled geometry and its RIRs are
    shared, only the sounds differ."""
    code = code_version()  # as it starts: the checkout may change while it trains
    world = load_world(cfg, "train", scenes)
    success = float(cfg.task.success_distance)
    start = time.perf_counter()
    cut = train_size(samples)
    train_geometry, val_geometry, val_sources = split_geometry(world, cut, samples - cut, seed, success, VAL_FRACTION)
    geometry = train_geometry + val_geometry
    rirs = render_rirs(world, geometry)
    rir_seconds = round(time.perf_counter() - start, 1)
    outputs = []
    for k, sound_split in enumerate(sound_splits):
        split_start = time.perf_counter()
        split_cfg = copy.deepcopy(cfg)
        split_cfg.task.sound_split = sound_split
        sounds = split_sound_names(split_cfg, "train", world)
        rng = np.random.default_rng(seed + 1 + k)
        with_sounds = [(s, r, src, y, str(sounds[int(rng.integers(len(sounds)))])) for s, r, src, y, _ in geometry]
        train, val = split_samples(build_samples(world, with_sounds, success, rirs=rirs), cut)
        model, scores = train_model(train, val, epochs=epochs, seed=seed, patience=patience)
        path = Path(out) if out else default_model_path(cfg.scenes.data_root, cfg.scenes.dataset, sound_split)
        meta = {
            "dataset": cfg.scenes.dataset,
            "sound_split": sound_split,
            "scenes": sorted(world.scenes),
            "sounds": len(sounds),
            "samples": samples,
            "val_samples": len(val_geometry),
            "val_sources": val_sources,  # per scene: the source nodes only validation samples use
            "epochs": epochs,
            "seed": seed,
            # baked scenes: whether the responses kept their leading travel time (None on SoundSpaces data)
            "keep_travel_time": cfg.task.keep_travel_time if scene_source(cfg) == "embedded" else None,
            "val_scores": scores,  # of the epoch with the lowest validation loss (best_epoch of epochs_run)
            "val_chance": chance_scores(train, val),  # what ignoring the sound scores on the same samples
            "patience": patience,
            "seconds": round(time.perf_counter() - split_start, 1),  # this split's spectrograms and training
            "rir_seconds": rir_seconds,  # the geometry and RIRs all splits share, before the first
            "code": code,
        }
        save_model(path, model, meta, embedded=scene_source(cfg) == "embedded")
        logger.info("saved %s: %s", path, json.dumps(meta))
        outputs.append(path)
    return outputs
