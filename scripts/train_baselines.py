#!/usr/bin/env python
"""Train the supervised audio model of the Direction Follower and Gan et al. baselines (train split only).

    python scripts/train_baselines.py --config replica_heard
    python scripts/train_baselines.py --config replica_unheard --samples 6000 --epochs 8
    python scripts/train_baselines.py --config replica_unheard --sound-split both --scenes office_0 room_0

Samples (receiver, source, yaw, sound) are drawn from the train split's scenes and sounds (telephone for
heard, the train sound list for unheard). 10 % of them validate the model: they are drawn at 10 % of each
scene's source nodes, held out whole, so no validation sample repeats a training sample's geometry. The
model goes to {data_root}/baselines/audio_goal_{dataset}_{sound_split}.pt unless --out is given; its meta
records the held-out sources, the validation scores and the seconds the split's own spectrograms and
training took (rir_seconds: the RIRs, rendered once for all sound splits).

The model hears only the spectrogram, so scenes baked without views (no 'vision' stage) suffice, whatever
task.sensors says.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from asgf_nav.cli import (  # noqa: E402
    add_config_arguments,
    add_scene_arguments,
    check_output,
    config_from_args,
    int_at_least,
    list_item,
    non_negative_int,
    positive_int,
    run_script,
)
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.soundspaces_import import scene_source  # noqa: E402
from asgf_nav.tasks.factory import split_sound_names  # noqa: E402
from asgf_nav.tasks.world import load_world  # noqa: E402
from baselines.audio_model import (  # noqa: E402
    AudioSamples,
    build_samples,
    default_model_path,
    render_rirs,
    save_model,
    split_geometry,
    train_model,
)

logger = logging.getLogger("train_baselines")

VAL_FRACTION = 0.1  # of the samples (and of each scene's source nodes), held out to report accuracy


def train_size(n: int, val_fraction: float = VAL_FRACTION) -> int:
    """How many of ``n`` samples split_samples trains on (the rest are validated on)."""
    return max(1, int(round(n * (1 - val_fraction))))


# the fewest samples whose split leaves both the training and the validation part non-empty
MIN_SAMPLES = next(n for n in range(2, 1000) if train_size(n) < n)


def train_scene_names(cfg) -> list[str]:
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


def train_splits(args: argparse.Namespace, cfg, sound_splits: list[str]) -> list[Path]:
    """One model per sound split; the sampled geometry and its RIRs are shared, only the sounds differ."""
    world = load_world(cfg, "train", args.scenes)
    success = float(cfg.task.success_distance)
    start = time.perf_counter()
    cut = train_size(args.samples)
    train_geometry, val_geometry, val_sources = split_geometry(
        world, cut, args.samples - cut, args.seed, success, VAL_FRACTION
    )
    geometry = train_geometry + val_geometry
    rirs = render_rirs(world, geometry)
    rir_seconds = round(time.perf_counter() - start, 1)
    outputs = []
    for k, sound_split in enumerate(sound_splits):
        split_start = time.perf_counter()
        split_cfg = copy.deepcopy(cfg)
        split_cfg.task.sound_split = sound_split
        sounds = split_sound_names(split_cfg, "train", world)
        rng = np.random.default_rng(args.seed + 1 + k)
        with_sounds = [(s, r, src, y, str(sounds[int(rng.integers(len(sounds)))])) for s, r, src, y, _ in geometry]
        train, val = split_samples(build_samples(world, with_sounds, success, rirs=rirs), cut)
        model, scores = train_model(train, val, epochs=args.epochs, seed=args.seed)
        out = Path(args.out) if args.out else default_model_path(cfg.scenes.data_root, cfg.scenes.dataset, sound_split)
        meta = {
            "dataset": cfg.scenes.dataset,
            "sound_split": sound_split,
            "scenes": sorted(world.scenes),
            "sounds": len(sounds),
            "samples": args.samples,
            "val_samples": len(val_geometry),
            "val_sources": val_sources,  # per scene: the source nodes only validation samples use
            "epochs": args.epochs,
            "seed": args.seed,
            # baked scenes: whether the responses kept their leading travel time (None on SoundSpaces data)
            "keep_travel_time": cfg.task.keep_travel_time if scene_source(cfg) == "embedded" else None,
            "val_scores": scores,
            "seconds": round(time.perf_counter() - split_start, 1),  # this split's spectrograms and training
            "rir_seconds": rir_seconds,  # the geometry and RIRs all splits share, before the first
        }
        save_model(out, model, meta)
        logger.info("saved %s: %s", out, json.dumps(meta))
        outputs.append(out)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="replica_unheard.yaml")
    parser.add_argument("--sound-split", choices=("heard", "unheard", "both"), help="override task.sound_split")
    parser.add_argument(
        "--scenes", type=list_item(), nargs="+", help="train scenes to use (default: the whole train split)"
    )
    parser.add_argument(
        "--samples",
        type=int_at_least(MIN_SAMPLES, f"{VAL_FRACTION:.0%} are held out for validation, and fewer leave none"),
        default=6000,
        help=f"spectrogram samples to draw (at least {MIN_SAMPLES})",
    )
    parser.add_argument("--epochs", type=positive_int, default=8)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples and the training (>= 0)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--out", help="model path (only with a single sound split)")
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out)
    setup_logging("INFO")
    import torch  # below asgf_nav.cli, whose Ctrl-C hook comes first

    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    cfg.task.sensors = ["spectrogram"]  # all the model hears: scenes need no baked views
    splits = ["heard", "unheard"] if args.sound_split == "both" else [args.sound_split or cfg.task.sound_split]
    if args.out and len(splits) > 1:
        parser.error("--out: a model path names one file; give a single --sound-split, not both")
    if args.scenes:  # a val or test scene trained on would leak into the evaluation
        valid = train_scene_names(cfg)
        outside = [n for n in args.scenes if n not in valid]
        if outside:
            parser.error(
                f"--scenes: {outside} not in the train split of {cfg.scenes.dataset}; its train scenes: {valid}"
            )
    train_splits(args, cfg, splits)
    return 0


if __name__ == "__main__":
    run_script(main)
