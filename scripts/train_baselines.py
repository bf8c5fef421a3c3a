#!/usr/bin/env python
"""Train the supervised audio model of the Direction Follower and Gan et al. baselines (train split only).

    python scripts/train_baselines.py --config replica_heard
    python scripts/train_baselines.py --config replica_unheard --samples 6000
    python scripts/train_baselines.py --config replica_unheard --sound-split both --scenes office_0 room_0

The sampling, the held-out validation and what the model's meta records: baselines/training.py. The model
goes to {data_root}/baselines/audio_goal_{dataset}_{sound_split}.pt unless --out is given.

The model hears only the spectrogram, so scenes baked without views (no 'vision' stage) suffice, whatever
task.sensors says.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    user_path,
)
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from baselines.recipe import EPOCHS, MIN_SAMPLES, PATIENCE, VAL_FRACTION  # noqa: E402


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
    parser.add_argument(
        "--epochs", type=positive_int, default=EPOCHS, help=f"most passes over the samples (default {EPOCHS})"
    )
    parser.add_argument(
        "--patience", type=positive_int, default=PATIENCE,
        help=f"stop this many epochs after the lowest validation loss (default {PATIENCE}); the weights of that "
        "epoch are kept",
    )  # fmt: skip
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples and the training (>= 0)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=user_path, help="model path (only with a single sound split)")
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out)
    if args.out and Path(args.out).is_file():  # replace an earlier audio model, never a checkpoint or other file
        from asgf_nav.rl.checkpoint import CheckpointError
        from baselines.audio_model import load_model

        try:
            load_model(args.out)
        except CheckpointError as exc:
            parser.error(
                f"--out: {args.out} exists and is no baseline audio model to replace ({exc}); if it is a damaged "
                "audio model, delete it first"
            )
    setup_logging("INFO")
    cfg = config_from_args(args)
    # imported once the command line and config parse: --help and a usage or config error answer without torch's
    # seconds of start-up
    import torch

    from baselines.training import train_audio_models, train_scene_names

    torch.set_num_threads(args.threads)
    cfg.task.sensors = ["spectrogram"]  # all the model hears: scenes need no baked views
    splits = ["heard", "unheard"] if args.sound_split == "both" else [args.sound_split or cfg.task.sound_split]
    if args.out and len(splits) > 1:
        parser.error("--out: a model path names one file; give a single --sound-split, not both")
    if not args.out:  # the default paths lie under the data root, which a lab may share read-only
        from baselines.audio_model import default_model_path

        for sound_split in splits:
            path = default_model_path(cfg.scenes.data_root, cfg.scenes.dataset, sound_split)
            check_output(parser, "the default model path (--out with one --sound-split writes elsewhere)", path)
    if args.scenes:  # a val or test scene trained on would leak into the evaluation
        valid = train_scene_names(cfg)
        outside = [n for n in args.scenes if n not in valid]
        if outside:
            parser.error(
                f"--scenes: {outside} not in the train split of {cfg.scenes.dataset}; its train scenes: {valid}"
            )
    train_audio_models(cfg, splits, args.scenes, args.samples, args.epochs, args.seed, args.out, patience=args.patience)
    return 0


if __name__ == "__main__":
    run_script(main)
