"""Benchmark DoA methods on the same clips: the selective head, the audio-only CRNN, GCC-PHAT, SRP-PHAT,
MUSIC, binaural HRTF template matching, time-averaged and onset-weighted, each learned head's posterior
sharpened by the onset-weighted templates (--sharpen-smooth-bins, --sharpen-weight; the templates and
the sharpened rows not for --rooms shoebox_pair, which has no head) and a GMM regression on ILD/IPD;
unseen rooms, unheard test sounds at 0 / -5 / -10 dB and heard sounds at 0 dB.
Writes a JSON of all metrics and prints one markdown table. For head receivers the JSON also holds
``direct_sound_reference``: HRTF template matching on the direct-sound window of each line-of-sight test
response alone, how well the direct sound tells the azimuth in the test rooms. For every kind of room it
holds ``prompt_choice_reference``: how often the prompt's spectral shape is closer to the separated
target's than to the distractor's, how well the prompt tells the two sources apart at all. ``test_pools``
and ``head_training_pools`` record what the test pools and each head's training pools were rendered from
(sources, and ``render_version`` / ``shoebox_pool_version``); a head trained on pools of another renderer
version than the test pools' is named in a warning.

--rooms: shoebox (KEMAR head), scenes (baked scenes, needs --scenes-root), both, or shoebox_pair
(AV-SSAN's protocol: a free-field microphone pair, front-hemisphere labels); the heads must have been
trained on the same kind.

Example: python scripts/eval_doa.py --selective data/doa/selective.pt --crnn data/doa/crnn.pt
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
    finite_float,
    number_type,
    run_script,
)
from asgf_nav.eval.doa_config import EVAL_CHOICES, NO_CHECKPOINT, EvalConfig, condition_label  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.models.doa.config import GMM_PCA_DIMS  # noqa: E402

POSITIVE = ("test_poses", "examples", "gmm_train_examples", "train_poses")  # counts that must be > 0
NON_NEGATIVE = ("threads", "sharpen_smooth_bins", "sharpen_weight")
PATHS = ("selective", "crnn", "pool_dir", "scenes_root", "out")  # files and directories: "~" is the home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = field_help(EvalConfig)
    for f in dataclasses.fields(EvalConfig):
        if f.name == "snrs":
            parser.add_argument("--snrs", type=finite_float, nargs="+", default=list(f.default), help=helps[f.name])
        else:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=number_type(type(f.default), f.name, POSITIVE, NON_NEGATIVE, PATHS),
                default=f.default,
                choices=EVAL_CHOICES.get(f.name),
                help=helps[f.name],
            )
    args = vars(parser.parse_args(argv))
    for key in ("selective", "crnn"):  # a missing default is left out of the table; a named file must exist
        path, default = args[key], getattr(EvalConfig, key)
        if path != default and path.lower() not in NO_CHECKPOINT and not Path(path).is_file():
            parser.error(f"--{key}: checkpoint {path} does not exist (use '--{key} none' to leave it out)")
    check_doa_rooms(parser, args)
    check_clip_seconds(parser, args["clip_seconds"])
    args["snrs"] = tuple(args["snrs"])
    labels = [condition_label("unheard", snr) for snr in args["snrs"]]
    if len(set(labels)) < len(labels):  # one condition each: a repeat would replace the other's results
        parser.error(f"--snrs: {list(args['snrs'])} names a condition twice")
    if args["gmm_train_examples"] < GMM_PCA_DIMS:
        parser.error(
            f"--gmm-train-examples: {args['gmm_train_examples']} clips cannot fit the GMM regression's "
            f"{GMM_PCA_DIMS}-dimensional PCA; give at least {GMM_PCA_DIMS}"
        )
    check_output(parser, "--out", args["out"])
    setup_logging("INFO")
    from asgf_nav.eval.doa_eval import evaluate, markdown_table  # the benchmark and torch, once the command line holds

    results = evaluate(EvalConfig(**args))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    run_script(main)
