"""Train a direction-of-arrival head: the selective (prompted) network or the audio-only CRNN baseline.

Every field of ``DoaTrainConfig`` is a flag (on/off ones as ``--augment`` / ``--no-augment``). Runs
resume from ``--out`` when it exists; checkpoints are written atomically every ``--checkpoint-every``
steps, and when SIGTERM or Ctrl-C stops the run (after its current step). A resume may change only how long,
where and how often it runs (``config.RESUMABLE_TRAIN_KEYS``), and a second run on an ``--out`` in use is
refused. ``--init-from`` starts a new run from another checkpoint's weights (fine-tuning). ``--mask-target
direct`` trains the mask to reconstruct the target's direct sound instead of all of it (renders a second
RIR pool of the same poses, their direct paths alone). ``--stft-nfft`` / ``--stft-hop`` set the selective
head's frames. ``--export`` also writes weights-only copies.

Example: python scripts/pretrain_doa.py --model selective --out data/doa/selective.pt --max-minutes 15
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    check_clip_seconds,
    check_doa_rooms,
    check_output,
    field_help,
    number_type,
    run_script,
    user_path,
)
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.models.doa.config import (  # noqa: E402
    SBF_HEADS,
    STFT_SIZES,
    TRAIN_CHOICES,
    DoaTrainConfig,
    check_bin_width,
    train_pool_seed,
    unused_settings,
)

# numbers that must be > 0 or >= 0; a zero count would otherwise fail deep inside the sampler
POSITIVE = ("train_poses", "val_poses", "sources_per_pose", "batch_size", "lr", "max_steps", "max_minutes")
POSITIVE += ("checkpoint_every", "val_every", "val_examples", "bin_width", "patch_dim", "model_dim", "clip_seconds")
POSITIVE += ("stft_hop",)
NON_NEGATIVE = ("weight_decay", "curriculum_db", "curriculum_steps", "threads", "generated_categories", "doa_weight")
NON_NEGATIVE += ("seed",)  # numpy seeds its generators from integers >= 0 only
PATHS = ("init_from", "out", "pool_dir", "scenes_root")  # files and directories: a leading "~" is the home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = field_help(DoaTrainConfig)
    for f in dataclasses.fields(DoaTrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):  # --augment / --no-augment
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helps[f.name])
        else:
            kind = number_type(type(f.default), f.name, POSITIVE, NON_NEGATIVE, PATHS)
            choices = STFT_SIZES if f.name == "stft_nfft" else TRAIN_CHOICES.get(f.name)
            parser.add_argument(flag, type=kind, default=f.default, choices=choices, help=helps[f.name])
    parser.add_argument(
        "--export", type=user_path, help="also write a weights-only checkpoint (no optimizer) to this path"
    )
    args = vars(parser.parse_args(argv))
    export = args.pop("export")
    check_doa_rooms(parser, args)
    check_clip_seconds(parser, args["clip_seconds"])
    try:
        check_bin_width(args["bin_width"])
    except ValueError as err:
        parser.error(f"--bin-width: {err}")
    if not 0 <= args["lr_final_fraction"] <= 1:
        parser.error(f"--lr-final-fraction: {args['lr_final_fraction']} is not a fraction of --lr in [0, 1]")
    unused = unused_settings(DoaTrainConfig(**args))
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        parser.error(f"{flags}: set the selective model only; --model {args['model']} does not read them")
    try:
        train_pool_seed(args["seed"])
    except ValueError as err:
        parser.error(f"--seed: {err}")
    if args["snr_low"] > args["snr_high"]:
        parser.error(f"--snr-low: {args['snr_low']} dB is above --snr-high {args['snr_high']} dB")
    if args["model"] == "selective" and args["model_dim"] % SBF_HEADS:
        parser.error(f"--model-dim: {args['model_dim']} is no multiple of {SBF_HEADS}, the heads attention splits")
    if args["sources_per_pose"] < 2:
        parser.error(f"--sources-per-pose: {args['sources_per_pose']}; a pose needs 2 sources (target and distractor)")
    if args["stft_hop"] > args["stft_nfft"]:
        parser.error(f"--stft-hop: {args['stft_hop']} samples is longer than a frame (--stft-nfft {args['stft_nfft']})")
    from asgf_nav.sounds.families import MAX_INSTANCES  # after --help: it reads the sound bank (scipy)

    if not 2 <= args["generated_instances"] <= MAX_INSTANCES:
        parser.error(
            f"--generated-instances: {args['generated_instances']}; a category needs 2 (one prompts another) "
            f"to {MAX_INSTANCES}"
        )
    if not 0 <= args["generated_share"] <= 1:
        parser.error(f"--generated-share: {args['generated_share']} is not a share in [0, 1]")
    if args["generated_categories"] and args["prompt"] == "category":
        parser.error(
            "--generated-categories needs --prompt audio or descriptor: a category embedding cannot name "
            "made-up categories"
        )
    if args["init_from"] and not Path(args["init_from"]).is_file():
        parser.error(f"--init-from: DoA checkpoint {args['init_from']} does not exist")
    if args["init_from"]:  # the kind is known at once; the weights' fit is checked once the model is built
        from asgf_nav.models.doa.checkpoint import DoaCheckpointError, read_checkpoint

        try:
            kind = read_checkpoint(args["init_from"])["kind"]
        except DoaCheckpointError as err:
            parser.error(f"--init-from: {err}")
        if kind != args["model"]:
            parser.error(f"--init-from: {args['init_from']} holds a {kind!r} model, not --model {args['model']}")
    check_output(parser, "--out", args["out"])
    check_output(parser, "--export", export)
    if export and Path(export).resolve() == Path(args["out"]).resolve():
        parser.error(f"--export: {export} is --out; the weights-only copy would replace the checkpoint a resume needs")
    setup_logging("INFO")
    from asgf_nav.models.doa.checkpoint import export_weights  # the training and torch, once the command line holds
    from asgf_nav.models.doa.train import train

    cfg = DoaTrainConfig(**args)
    metrics = train(cfg)
    if export:
        export_weights(cfg.out, export)
    print(metrics)
    return 0


if __name__ == "__main__":
    run_script(main)
