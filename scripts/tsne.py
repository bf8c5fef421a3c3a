#!/usr/bin/env python
"""t-SNE of ASGF-Nav's audio spatial states on the unheard split (the paper's Fig. 4).

    python scripts/tsne.py --config replica_unheard --checkpoint runs/replica_unheard/checkpoints/ckpt_040000.pt
    python scripts/tsne.py --config replica_unheard --checkpoint CKPT --samples 2000 --split test --out tsne.png

States come from rollouts of the checkpoint's policy (sampled actions, seeded by --seed) on the split's episodes of the
config's sound split (unheard in the default replica_unheard; ``--sound-split`` chooses); each is coloured by
the distance to the target and by the target's relative azimuth.
The collected states are kept next to the figure as .npz.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    add_config_arguments,
    add_scene_arguments,
    check_output,
    config_from_args,
    int_at_least,
    load_checkpoint_or_exit,
    non_negative_int,
    positive_float,
    positive_int,
    run_script,
    user_path,
)
from asgf_nav.devices import resolve_device  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402

logger = logging.getLogger("tsne")

MIN_SAMPLES = 5  # viz.tsne.embed needs at least this many states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, default="replica_unheard.yaml")
    parser.add_argument("--checkpoint", type=user_path, required=True, help="training checkpoint of an ASE policy")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--sound-split",
        choices=("heard", "unheard"),
        help="sounds of the rolled-out episodes (default: the config's task.sound_split; the paper's figure: unheard)",
    )
    parser.add_argument(
        "--samples",
        type=int_at_least(MIN_SAMPLES, "t-SNE needs that many states"),
        default=2000,
        help=f"states to collect (at least {MIN_SAMPLES})",
    )
    parser.add_argument("--episodes", type=positive_int, help="evenly spaced episodes to roll out (default: all)")
    parser.add_argument("--perplexity", type=positive_float, default=30.0)
    parser.add_argument("--num-envs", type=positive_int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the sampled actions and of t-SNE")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--out", type=user_path, default="tsne.png", help="figure (the states go next to it as .npz)")
    add_scene_arguments(parser)
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out, figure=True)
    setup_logging("INFO")
    cfg = config_from_args(args)
    # imported once the command line and config parse: --help and a usage or config error answer without torch's
    # seconds of start-up
    from asgf_nav.eval.evaluator import config_for_checkpoint, load_policy_agent, select_episodes
    from asgf_nav.evaluation import doa_head_identity
    from asgf_nav.experiment import register_auxiliary_observations, set_torch_threads
    from asgf_nav.models.policies import policy_class
    from asgf_nav.tasks.audionav_env import observation_space_for
    from asgf_nav.tasks.factory import load_task_data
    from asgf_nav.viz.tsne import TsneInputError, collect_spatial_states, plot_tsne, spatial_state_policies

    device = resolve_device(args.device, key="--device")
    set_torch_threads(cfg, background_build=False)
    checkpoint = load_checkpoint_or_exit(args.checkpoint)
    cfg = config_for_checkpoint(cfg, checkpoint)
    register_auxiliary_observations(cfg)  # the checkpoint's own DoA head, when it was trained with one
    doa_head_identity(cfg, checkpoint)  # a head replaced since training is named, as evaluate.py names it
    policy = checkpoint.get("policy_name", cfg.model.policy)
    if not policy_class(policy).has_spatial_state:
        with_state = spatial_state_policies()
        parser.error(
            f"--checkpoint: {args.checkpoint} holds policy {policy!r}, which has no ASE module (no audio spatial "
            f"states to embed); give a checkpoint of {' or '.join(with_state)}"
        )
    cfg.task.sound_split = args.sound_split or cfg.task.sound_split
    world, episodes = load_task_data(cfg, args.split)
    episodes = select_episodes(episodes, args.episodes)
    space = observation_space_for(world, list(cfg.task.sensors))
    agent = load_policy_agent(cfg, checkpoint, space, device=device, seed=args.seed)  # reproducible rollouts
    out = Path(args.out)
    try:
        data = collect_spatial_states(agent, world, episodes, cfg, args.samples, args.num_envs, device)
        title = args.title or (
            f"t-SNE of ASE audio spatial states: {Path(args.checkpoint).name} on {cfg.scenes.dataset} "
            f"{cfg.task.sound_split} sounds, {args.split} split ({len(data.states)} states)"
        )
        plot_tsne(data, out, title, args.perplexity, args.seed)
    except TsneInputError as exc:  # nothing is written
        parser.error(f"{exc} (from {len(episodes)} episode(s) of split {args.split}, --samples {args.samples})")
    data.save(out.with_suffix(".npz"))
    logger.info("wrote %s from %d states", out, len(data.states))
    return 0


if __name__ == "__main__":
    run_script(main)
