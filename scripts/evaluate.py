#!/usr/bin/env python
"""Evaluate a trained policy or a baseline on a split: per-episode JSONL, summary JSON and Markdown table.

    python scripts/evaluate.py --config replica_unheard --checkpoint runs/replica_unheard/checkpoints/ckpt_000050.pt
    python scripts/evaluate.py --config replica_unheard --checkpoint runs/replica_unheard/checkpoints/best.pt
    python scripts/evaluate.py --config replica_heard --agent oracle --split test --episodes 200
    python scripts/evaluate.py --config replica_unheard --agent gan --sound-split both --out runs/eval

Outputs go to {out}/{agent}_{dataset}_{sound_split}_{split}/ (episodes.jsonl, summary.json, summary.md);
the summary's meta names the scenes' source (embedded: generated scenes, soundspaces: imported graphs).
Finished episodes are saved as they end, so the same command resumes a killed evaluation (not once the
checkpoint file holds another update: best.pt is rewritten while training goes on, nor with other task
limits, data or episodes). A checkpoint's sampled actions are seeded by train.seed, each episode with a
stream of its own: the same command gives the same episodes, resumed or not, whatever --num-envs. The random
agent draws from one stream for the episodes stepped together, so its --num-envs is part of what it is
evaluated with: another one is refused where a finished result (or a stopped one) is. The checkpoint is
recorded by its resolved path, so a relative and an absolute path to one file are one evaluation. An evaluation
of the embedded scenes records the acoustics and render versions of their responses: one stopped or finished
before the scenes were baked (or their responses rendered) at another version is neither resumed nor replaced,
and one an earlier release wrote, without them, is refused saying so: move it aside, or choose another --out.

A baseline loads only the observations it reads (direction_follower and gan: the spectrogram; oracle and
random: none), whatever task.sensors says, so scenes baked without views (no 'vision' stage) suffice;
task.sensors applies to checkpoints, which hold their own.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    add_config_arguments,
    add_scene_arguments,
    check_output,
    config_from_args,
    list_item,
    load_checkpoint_or_exit,
    non_negative_int,
    positive_int,
    run_script,
    scene_options,
    user_path,
)
from asgf_nav.config import load_config  # noqa: E402
from asgf_nav.devices import resolve_device  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from baselines import AUDIO_MODEL_BASELINES, BASELINES, SEEDED_BASELINES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="replica_unheard.yaml")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--checkpoint",
        type=user_path,
        help="training checkpoint (.pt); the policy (the model section) and task.sensors / use_doa / doa_checkpoint "
        "/ keep_travel_time come from the checkpoint, everything else (scenes, sounds, episodes, task limits, "
        "train.seed) from --config, default replica_unheard.yaml: pass the config the run trained with",
    )
    who.add_argument("--agent", choices=BASELINES, help="evaluate a baseline instead of a checkpoint")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--sound-split",
        choices=("heard", "unheard", "both"),
        help="override the config's task.sound_split ('both' runs heard and unheard)",
    )
    parser.add_argument(
        "--episodes", type=positive_int, help="evaluate this many evenly spaced episodes (default: all)"
    )
    parser.add_argument("--scenes", type=list_item(), nargs="+", help="restrict to these scenes of the split")
    parser.add_argument("--deterministic", action="store_true", help="policy takes its most likely action")
    parser.add_argument("--num-envs", type=positive_int, default=8, help="episodes stepped together")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--out", type=user_path, default="runs/eval", help="parent directory of the evaluation outputs")
    parser.add_argument(
        "--name",
        help="label of the agent in outputs and tables (--random-stop random appends _random_stop to it)",
    )
    parser.add_argument(
        "--baseline-model", type=user_path, help="audio model of direction_follower / gan (default under data root)"
    )
    parser.add_argument(
        "--random-stop",
        default="goal",
        choices=("goal", "random"),
        help="random agent's STOP rule (see baselines/random_agent.py)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        help="seed of the random baseline, >= 0 (default 0; a checkpoint's sampling: train.seed=N)",
    )
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    if args.baseline_model and args.sound_split == "both":
        parser.error(
            "--baseline-model names one audio model, and --sound-split both evaluates heard and unheard sounds, "
            "each with its own model by default; evaluate each split with its model"
        )
    if args.deterministic and args.agent:
        parser.error(f"--deterministic sets how a checkpoint's policy acts; --agent {args.agent} has no policy")
    # an ignored seed would label three identical draws as three
    if args.seed is not None and args.agent not in SEEDED_BASELINES:
        what = f"--agent {args.agent} draws nothing" if args.agent else "a checkpoint samples with train.seed=N"
        parser.error(f"--seed seeds the {' / '.join(SEEDED_BASELINES)} baseline; {what}")
    if args.random_stop != "goal" and args.agent != "random":
        parser.error(f"--random-stop is the random agent's STOP rule, not one of {args.agent or 'a checkpoint'}")
    if args.baseline_model and args.agent not in AUDIO_MODEL_BASELINES:
        parser.error(
            f"--baseline-model is the audio model of {' / '.join(AUDIO_MODEL_BASELINES)}, not of --agent {args.agent}"
        )
    setup_logging("INFO")
    cfg = config_from_args(args)
    # imported once the command line and config parse: --help and a usage or config error answer without torch's
    # seconds of start-up
    from asgf_nav.evaluation import EvaluationRequest, name_problem, run_evaluation
    from asgf_nav.experiment import set_torch_threads

    if name_problem(args.name):  # --name ../x would write outside --out
        parser.error(name_problem(args.name))
    if args.overrides:  # training's keys, which no evaluation reads, however the override spelt them
        given = load_config(args.config, [], scene_options(args))
        for key, flag in {"train.device": "--device", "ppo.num_envs": "--num-envs"}.items():
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name) != getattr(getattr(given, section), name):
                parser.error(f"{key} sets training's; an evaluation takes {flag}")
    args.device = resolve_device(args.device, key="--device")  # a device this machine lacks stops here
    set_torch_threads(cfg, background_build=False)  # train.torch_threads holds here too: no oversubscribing
    # loaded once: with --sound-split both, both splits evaluate the same version of a rewritten best.pt
    checkpoint = load_checkpoint_or_exit(args.checkpoint) if args.checkpoint else None
    check_output(parser, "--out", args.out, directory=True)  # after the inputs: it creates the directory
    splits = ["heard", "unheard"] if args.sound_split == "both" else [args.sound_split or cfg.task.sound_split]
    request = EvaluationRequest(
        split=args.split, checkpoint=args.checkpoint, agent=args.agent, episodes=args.episodes,
        scenes=tuple(args.scenes) if args.scenes else None, deterministic=args.deterministic,
        num_envs=args.num_envs, device=args.device, out=args.out, name=args.name,
        baseline_model=args.baseline_model, random_stop=args.random_stop, seed=args.seed or 0,
        command="python " + shlex.join(sys.argv), config=args.config,
    )  # fmt: skip
    run_evaluation(request, cfg, checkpoint, splits)
    return 0


if __name__ == "__main__":
    run_script(main)
