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
stream of its own: the same command gives the same episodes, resumed or not.

A baseline loads only the observations it reads (direction_follower and gan: the spectrogram; oracle and
random: none), whatever task.sensors says, so scenes baked without views (no 'vision' stage) suffice;
task.sensors applies to checkpoints, which hold their own.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (
    add_config_arguments,
    add_scene_arguments,
    check_output,  # noqa: E402
    config_from_args,
    load_checkpoint_or_exit,
    non_negative_int,
    positive_int,
    reject_swallowed_overrides,
    run_script,
)
from asgf_nav.devices import resolve_device  # noqa: E402
from asgf_nav.eval.evaluator import (  # noqa: E402
    config_for_checkpoint,
    load_policy_agent,
    run_episodes,
    select_episodes,
)
from asgf_nav.eval.progress import EvaluationProgress, evaluation_lock  # noqa: E402
from asgf_nav.eval.report import summary_markdown, write_evaluation  # noqa: E402
from asgf_nav.experiment import register_auxiliary_observations, set_torch_threads  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.rl.checkpoint import policy_digest  # noqa: E402
from asgf_nav.scenes.soundspaces_import import scene_source  # noqa: E402
from asgf_nav.tasks.episodes import episodes_fingerprint  # noqa: E402
from asgf_nav.tasks.factory import load_task_data  # noqa: E402
from asgf_nav.tasks.spectrogram import spectrogram_shape  # noqa: E402
from baselines import (  # noqa: E402
    AUDIO_MODEL_BASELINES,
    BASELINES,
    audio_model_path,
    baseline_sensors,
    make_baseline,
)

logger = logging.getLogger("evaluate")

# task settings that change an episode's outcome (the step limit, the success radius, what the agent hears)
OUTCOME_TASK_KEYS: tuple[str, ...] = ("max_steps", "success_distance", "use_doa", "doa_checkpoint", "keep_travel_time")


def build_agent(args: argparse.Namespace, cfg, world, checkpoint: dict | None):
    """The baseline named by --agent, or the policy of the loaded --checkpoint with the config's sensors."""
    if args.agent:  # an audio model trained on spectrograms of another shape is refused
        return make_baseline(
            args.agent, cfg, args.baseline_model, seed=args.seed, random_stop_rule=args.random_stop,
            spectrogram_shape=spectrogram_shape(world.sample_rate),
        )  # fmt: skip
    from asgf_nav.tasks.audionav_env import observation_space_for

    register_auxiliary_observations(cfg)  # the checkpoint's own DoA head, when it was trained with one
    space = observation_space_for(world, list(cfg.task.sensors))
    return load_policy_agent(cfg, checkpoint, space, args.deterministic, args.device, seed=cfg.train.seed)


def audio_model_identity(cfg, args: argparse.Namespace) -> dict[str, str]:
    """Path and content digest of the audio model a baseline evaluates with."""
    path = audio_model_path(cfg, args.baseline_model)
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


def doa_head_identity(cfg, checkpoint: dict | None) -> dict[str, str] | None:
    """Path and digest of the DoA head the agent observes through (None without one); a checkpoint trained
    with other weights at that path is evaluated with a warning, as the policy's input has changed."""
    if not cfg.task.use_doa:
        return None
    from asgf_nav.models.doa.observation import head_identity

    head = head_identity(cfg.task.doa_checkpoint)
    trained = (checkpoint or {}).get("doa_head")
    if trained and trained.get("sha256") != head["sha256"]:
        logger.warning(
            "the checkpoint was trained with the DoA head %s of digest %s; %s now holds digest %s, which this "
            "evaluation uses",
            trained.get("path"),
            trained.get("sha256"),
            head["path"],
            head["sha256"],
        )
    return head


def split_config(args: argparse.Namespace, cfg, sound_split: str, checkpoint: dict | None):
    """The config one sound split is evaluated with: the checkpoint's, or the baseline's sensors."""
    cfg = config_for_checkpoint(cfg, checkpoint) if checkpoint else copy.deepcopy(cfg)
    cfg.task.sound_split = sound_split
    if args.agent:  # a baseline needs (baked) only what it reads: no RGB-D views for an audio-only bake
        cfg.task.sensors = list(baseline_sensors(args.agent))
    return cfg


def agent_label(args: argparse.Namespace, cfg) -> str:
    """The agent's name in output directories and tables: --name, else the baseline or the policy."""
    label = args.name or (args.agent if args.agent else cfg.model.policy)
    if args.agent == "random" and args.random_stop != "goal":
        label = f"{label}_{args.random_stop}_stop"
    return label


def output_dir(args: argparse.Namespace, cfg) -> Path:
    """Where one split's evaluation is written (``cfg`` from :func:`split_config`)."""
    return Path(args.out) / f"{agent_label(args, cfg)}_{cfg.scenes.dataset}_{cfg.task.sound_split}_{args.split}"


def evaluate_one(args: argparse.Namespace, cfg, checkpoint: dict | None) -> tuple[Path, EvaluationProgress]:
    """Evaluate one sound split (``cfg`` from :func:`split_config`) and write its outputs; the caller holds
    the output directory's lock and removes the progress file (``finish``) once every split is written, so
    that a stopped ``--sound-split both`` reruns none of a finished one."""
    sound_split = cfg.task.sound_split
    world, episodes = load_task_data(cfg, args.split, args.scenes)
    episodes = select_episodes(episodes, args.episodes)
    agent = build_agent(args, cfg, world, checkpoint)
    label = agent_label(args, cfg)
    out = output_dir(args, cfg)
    identity = {
        "agent": label, "dataset": cfg.scenes.dataset, "sound_split": sound_split, "split": args.split,
        "checkpoint": args.checkpoint, "deterministic": bool(args.deterministic),
        # best.pt is rewritten while training goes on, and a run directory retrained keeps its file names:
        # a resume must not mix two checkpoints' episodes
        "checkpoint_update": int(checkpoint["update"]) if checkpoint else None,
        "checkpoint_weights": policy_digest(checkpoint) if checkpoint else None,
        "seed": args.seed if args.agent else cfg.train.seed, "episode_list": episodes_fingerprint(episodes),
        # another audio model is another agent: its episodes must not be mixed with these, nor replace them
        "audio_model": audio_model_identity(cfg, args) if args.agent in AUDIO_MODEL_BASELINES else None,
        # the same episodes under another step limit or success radius, or in other scenes, score otherwise
        "task": {key: getattr(cfg.task, key) for key in OUTCOME_TASK_KEYS},
        # the head's weights, not only its path: the file at that path may hold another head since
        "doa_head": None if args.agent else doa_head_identity(cfg, checkpoint),
        "data_root": str(Path(cfg.scenes.data_root).resolve()),
        # node indices are those of this source's graphs: a generated scene and the imported SoundSpaces
        # scene of the same name number their nodes differently (read by visualize_trajectories.py)
        "scene_source": scene_source(cfg),
    }  # fmt: skip
    progress = EvaluationProgress(out, identity)  # a killed evaluation resumes with the episodes it finished
    remaining = progress.remaining(episodes)
    if remaining:
        run_episodes(agent, world, remaining, cfg, num_envs=args.num_envs, device=args.device,
                     on_record=progress.add)  # fmt: skip
    records = progress.records(episodes)
    meta = {
        **identity, "episodes_requested": args.episodes, "scenes": sorted({r.scene for r in records}),
        "command": "python " + shlex.join(sys.argv),
    }  # fmt: skip
    summary = write_evaluation(out, records, meta)
    print(summary_markdown(summary))
    return out, progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="replica_unheard.yaml")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="training checkpoint (.pt); its policy and settings come from the checkpoint")
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
    parser.add_argument("--scenes", nargs="+", help="restrict to these scenes of the split")
    parser.add_argument("--deterministic", action="store_true", help="policy takes its most likely action")
    parser.add_argument("--num-envs", type=positive_int, default=8, help="episodes stepped together")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--out", default="runs/eval", help="parent directory of the evaluation outputs")
    parser.add_argument(
        "--name",
        help="label of the agent in outputs and tables (--random-stop random appends _random_stop to it)",
    )
    parser.add_argument("--baseline-model", help="audio model of direction_follower / gan (default under data root)")
    parser.add_argument(
        "--random-stop",
        default="goal",
        choices=("goal", "random"),
        help="random agent's STOP rule (see baselines/random_agent.py)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the random baseline, >= 0 (a checkpoint's sampling: train.seed)",
    )
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    reject_swallowed_overrides(parser, args, "scenes")
    if args.baseline_model and args.sound_split == "both":
        parser.error(
            "--baseline-model names one audio model, and --sound-split both evaluates heard and unheard sounds, "
            "each with its own model by default; evaluate each split with its model"
        )
    if args.baseline_model and args.agent not in AUDIO_MODEL_BASELINES:
        parser.error(
            f"--baseline-model is the audio model of {' / '.join(AUDIO_MODEL_BASELINES)}, not of --agent {args.agent}"
        )
    setup_logging("INFO")
    cfg = config_from_args(args)
    args.device = resolve_device(args.device, key="--device")  # a device this machine lacks stops here
    set_torch_threads(cfg, background_build=False)  # train.torch_threads holds here too: no oversubscribing
    # loaded once: with --sound-split both, both splits evaluate the same version of a rewritten best.pt
    checkpoint = load_checkpoint_or_exit(args.checkpoint) if args.checkpoint else None
    check_output(parser, "--out", args.out, directory=True)  # after the inputs: it creates the directory
    splits = ["heard", "unheard"] if args.sound_split == "both" else [args.sound_split or cfg.task.sound_split]
    configs = [split_config(args, cfg, sound_split, checkpoint) for sound_split in splits]
    with ExitStack() as held:  # every split's directory is locked before any task data loads, until all are written
        for split_cfg in configs:
            held.enter_context(evaluation_lock(output_dir(args, split_cfg)))
        finished = []
        for split_cfg in configs:
            out, progress = evaluate_one(args, split_cfg, checkpoint)
            finished.append(progress)
            logger.info("evaluation written to %s", out)
        for progress in finished:
            progress.finish()
    return 0


if __name__ == "__main__":
    run_script(main)
