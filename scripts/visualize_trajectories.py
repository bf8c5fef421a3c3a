#!/usr/bin/env python
"""Top-down trajectory maps (one agent, or two agents side by side on the same episode) and episode videos.

    python scripts/visualize_trajectories.py runs/eval/oracle_replica_heard_test --out traj.png
    python scripts/visualize_trajectories.py runs/eval/gan_replica_heard_test runs/eval/random_replica_heard_test \\
        --episode room_2/room_2:17 --out compare.png --video episode17.mp4
    python scripts/visualize_trajectories.py runs/eval/oracle_replica_heard_test scenes.data_root=data --out traj.png

The inputs are evaluation directories written by scripts/evaluate.py (their episodes.jsonl), followed by
any KEY=VALUE config overrides. An episode is named SCENE/EPISODE_ID (episode ids repeat across the scenes
of a SoundSpaces split), or by its id alone where only one scene has it. Without --episode, the episode
where the agents' SPL differs most is drawn (ties: one the first agent succeeded in, then the longest).
The video shows the first agent's run with the scene's responses as they are baked and rendered now, and
warns when those are of other acoustics or render versions than the evaluation recorded. The scenes are
read where the evaluation read them (its recorded data root, where that exists here) unless --data-root
or scenes.data_root= says otherwise.
Only evaluations of generated scenes can be drawn: imported SoundSpaces graphs have no floor plan.
Outputs are written atomically: a write killed outright leaves only hidden .NAME.*.tmp files beside them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    check_output,
    config_from_args,
    list_item,
    positive_float,
    positive_int,
    run_script,
    user_path,
)
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.presets import PRESETS, UnknownSceneError, get_preset  # noqa: E402

logger = logging.getLogger("visualize_trajectories")

VIDEO_SUFFIXES = (".mp4", ".gif")  # what viz.video.write_video writes


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """The evaluation directories and the KEY=VALUE config overrides among the positional arguments.

    One positional list holds both (two of them could not be told apart by argparse); an item with '='
    that is not an existing path is an override, so a bad key is named by the config loader.
    """
    runs, overrides = [], []
    for item in items:
        (overrides if "=" in item and not Path(item).exists() else runs).append(item)
    return runs, overrides


def scene_not_in_preset(run_dir: str, meta: dict, scene: str, dataset: str) -> str | None:
    """Why ``--dataset dataset`` cannot hold the evaluation's scene, naming the dataset it was of, or None."""
    try:
        get_preset(dataset).spec(scene)
    except UnknownSceneError:
        recorded = meta.get("dataset")
        of = f"an evaluation of dataset {recorded!r}" if recorded else "an evaluation that does not record its dataset"
        return f"the evaluation's scene {scene!r} is not in preset {dataset!r}; {run_dir} is {of}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs",
        type=user_path,
        nargs="+",
        metavar="RUN",
        help="one or two evaluation directories, then any KEY=VALUE config overrides (every key: asgf_nav/config.py)",
    )
    parser.add_argument("--config", type=user_path, help="config name in asgf_nav/configs/ or a path to a YAML file")
    parser.add_argument("--episode", help="episode to draw: SCENE/EPISODE_ID, or EPISODE_ID where one scene has it")
    parser.add_argument(
        "--labels",
        type=list_item(),
        nargs="+",
        help="panel labels, one per run (default: the agents' names, or the run directories' names when the "
        "agents share one)",
    )
    parser.add_argument("--out", type=user_path, default="trajectories.png", help="PNG of the map(s)")
    parser.add_argument(
        "--video", type=user_path, help="also write the first run's episode as .mp4 (with audio) or .gif"
    )
    parser.add_argument("--fps", type=positive_float, default=2.0, help="video frames (agent steps) per second")
    parser.add_argument("--max-frames", type=positive_int, default=200, help="video length cap in steps")
    parser.add_argument("--dataset", choices=sorted(PRESETS), help="scene preset (default: the evaluation's)")
    parser.add_argument(
        "--data-root", type=user_path, help="data root (default: the evaluation's, else scenes.data_root)"
    )
    args = parser.parse_intermixed_args(argv)  # overrides may stand on both sides of an option
    # imported once the command line parses: --help and a usage error answer without torch's seconds of start-up
    from asgf_nav.eval.report import evaluation_dir_problem, load_summary
    from asgf_nav.viz.evaluated_episode import (
        default_labels,
        episode_mismatch,
        episode_name,
        open_scene_of,
        pick_episode,
        read_run,
        record_mismatch,
        resolve_episode,
        responses_mismatch,
    )

    args.runs, args.overrides = split_overrides(args.runs)
    if not args.runs:
        parser.error(f"runs: give one or two evaluation directories (got only the overrides {args.overrides})")
    if len(args.runs) > 2:
        parser.error(f"runs: give one or two evaluation directories, got {len(args.runs)}")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} labels {args.labels} for {len(args.runs)} run(s); give one per run")
    if args.video and Path(args.video).suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"--video: {args.video} must end in {' or '.join(VIDEO_SUFFIXES)}")
    if args.video and Path(args.video).resolve() == Path(args.out).resolve():  # before the format: a GIF may be both
        parser.error(f"--out and --video both name {args.out}; the video would overwrite the map")
    check_output(parser, "--out", args.out, figure=True)
    check_output(parser, "--video", args.video)
    for run in args.runs:  # a file, or an evaluation still running or stopped: named before anything is read
        problem = evaluation_dir_problem(run)
        if problem:
            parser.error(f"runs: each RUN must be an evaluation directory: {problem}")
    setup_logging("INFO")
    cfg = config_from_args(args)
    summaries = [load_summary(r, meta_keys=()) for r in args.runs]  # a map needs no table's names
    mismatch = episode_mismatch(args.runs, summaries) if len(args.runs) == 2 else None
    if mismatch:
        parser.error(f"runs: {mismatch}")
    runs = [read_run(d) for d in args.runs]
    if args.episode:
        try:
            key = resolve_episode(args.episode, runs)
        except ValueError as exc:
            parser.error(f"--episode: {exc}")
    else:
        key = pick_episode(runs)
    meta = summaries[0]["meta"]
    cfg.scenes.dataset = args.dataset or meta.get("dataset", cfg.scenes.dataset)
    root_given = args.data_root or any(item.startswith("scenes.data_root=") for item in args.overrides)
    recorded = meta.get("data_root")
    if not root_given and recorded and Path(recorded).is_dir():  # where the evaluation found its scenes (not
        cfg.scenes.data_root = recorded  # on a machine the evaluation directory was copied to)
    missing = [d for d, run in zip(args.runs, runs) if key not in run]
    if missing:
        parser.error(f"--episode: episode {episode_name(key)} is not in {missing}")
    records = [run[key] for run in runs]
    mismatch = record_mismatch(args.runs, records) if len(records) == 2 else None
    if mismatch:
        parser.error(f"--episode: {mismatch}")
    if args.dataset and args.dataset != meta.get("dataset"):  # not a scene to bake: name the evaluation's dataset
        problem = scene_not_in_preset(args.runs[0], meta, records[0].scene, args.dataset)
        if problem:
            parser.error(f"--dataset: {problem}")
    labels = args.labels or default_labels(args.runs, summaries)
    try:
        scene = open_scene_of(args.runs, summaries, records, cfg.scenes.data_root, cfg.scenes.dataset)
    except ValueError as exc:
        parser.error(f"runs: {exc}")

    from asgf_nav.viz.trajectories import save_trajectories

    out = save_trajectories(args.out, scene, records, labels)
    logger.info("wrote %s (episode %s)", out, episode_name(key))
    if args.video:
        from asgf_nav.tasks.world import load_world
        from asgf_nav.viz.video import write_video

        # the views come from ``scene``: the world gives the RIRs and the sound only, so a scene baked
        # without the vision stage has a video too (its view panels say so)
        video_cfg = copy.deepcopy(cfg)
        video_cfg.task.sensors, video_cfg.scenes.source = ["spectrogram"], "embedded"
        # the travel time as the agent heard it (an evaluation recorded before the key heard it), in the scene's
        # responses as baked and rendered now: said when those are not the versions the evaluation recorded
        video_cfg.task.keep_travel_time = bool((meta.get("task") or {}).get("keep_travel_time", True))
        world = load_world(video_cfg, meta.get("split", "test"), [records[0].scene], acoustics_as_baked=True)
        other_responses = responses_mismatch(args.runs[0], meta, scene)
        if other_responses:
            logger.warning(other_responses)
        video = write_video(args.video, scene, world, records[0], fps=args.fps, max_frames=args.max_frames)
        logger.info("wrote %s", video)
    return 0


if __name__ == "__main__":
    run_script(main)
