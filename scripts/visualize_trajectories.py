#!/usr/bin/env python
"""Top-down trajectory maps (one agent, or two agents side by side on the same episode) and episode videos.

    python scripts/visualize_trajectories.py runs/eval/oracle_replica_heard_test --out traj.png
    python scripts/visualize_trajectories.py runs/eval/gan_replica_heard_test runs/eval/random_replica_heard_test \\
        --episode 17 --out compare.png --video episode17.mp4

The inputs are evaluation directories written by scripts/evaluate.py (their episodes.jsonl). Without
--episode, the episode where the agents' SPL differs most (ties: the longest one) is drawn. The video
shows the first agent's run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import (  # noqa: E402
    add_config_arguments,
    check_output,
    config_from_args,
    positive_float,
    positive_int,
    run_script,
)
from asgf_nav.eval.evaluator import EpisodeRecord, EvaluationFileError, read_jsonl  # noqa: E402
from asgf_nav.eval.report import EPISODES_FILE, load_summary  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402
from asgf_nav.scenes.presets import PRESETS  # noqa: E402
from asgf_nav.scenes.scene import Scene  # noqa: E402

logger = logging.getLogger("visualize_trajectories")

VIDEO_SUFFIXES = (".mp4", ".gif")  # what viz.video.write_video writes
SAME_EPISODES_KEYS = ("dataset", "split", "sound_split")  # summary meta that fixes which episodes were evaluated


def pick_episode(runs: list[dict[str, EpisodeRecord]]) -> str:
    """Episode present in every run where SPL differs most between runs; ties go to the longest episode."""
    common = set(runs[0])
    for run in runs[1:]:
        common &= set(run)
    if not common:
        raise EvaluationFileError(
            "the evaluations share no episode; evaluate the agents on the same split and episodes"
        )

    def score(eid: str) -> tuple[float, float, float]:
        spl = [run[eid].metrics["spl"] for run in runs]
        return max(spl) - min(spl), runs[0][eid].metrics["success"], runs[0][eid].geodesic_distance

    return max(sorted(common), key=score)


def episode_mismatch(run_dirs: list[str], summaries: list[dict]) -> str | None:
    """Why the evaluations are not of the same episodes (dataset, split, sound split differ), or None."""
    metas = [s["meta"] for s in summaries]
    differs = [
        f"{key} {metas[0][key]!r} vs {meta[key]!r}"
        for meta in metas[1:]
        for key in SAME_EPISODES_KEYS
        if key in metas[0] and key in meta and metas[0][key] != meta[key]
    ]
    if not differs:
        return None
    return (
        f"{run_dirs[0]} and {run_dirs[1]} are evaluations of different episodes ({', '.join(differs)}); "
        "give evaluations of the same dataset, split and sound split"
    )


def default_labels(run_dirs: list[str], summaries: list[dict]) -> list[str]:
    """The agents' names; the run directories' names where two runs share an agent name."""
    labels = [str(s["meta"].get("agent", f"run {i}")) for i, s in enumerate(summaries)]
    if len(set(labels)) == len(labels):
        return labels
    names = [Path(d).resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="one or two evaluation directories")
    add_config_arguments(parser, default=None)
    parser.add_argument("--episode", help="episode id to draw")
    parser.add_argument(
        "--labels",
        nargs="+",
        help="panel labels, one per run (default: the agents' names, or the run directories' names when the "
        "agents share one)",
    )
    parser.add_argument("--out", default="trajectories.png", help="PNG of the map(s)")
    parser.add_argument("--video", help="also write the first run's episode as .mp4 (with audio) or .gif")
    parser.add_argument("--fps", type=positive_float, default=2.0, help="video frames (agent steps) per second")
    parser.add_argument("--max-frames", type=positive_int, default=200, help="video length cap in steps")
    parser.add_argument("--dataset", choices=sorted(PRESETS), help="scene preset (default: the evaluation's)")
    parser.add_argument("--data-root", help="data root (overrides scenes.data_root)")
    args = parser.parse_args(argv)
    if len(args.runs) > 2:
        parser.error(f"runs: give one or two evaluation directories, got {len(args.runs)}")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} labels {args.labels} for {len(args.runs)} run(s); give one per run")
    if args.video and Path(args.video).suffix.lower() not in VIDEO_SUFFIXES:
        parser.error(f"--video: {args.video} must end in {' or '.join(VIDEO_SUFFIXES)}")
    check_output(parser, "--out", args.out, figure=True)
    check_output(parser, "--video", args.video)
    setup_logging("INFO")
    cfg = config_from_args(args)
    summaries = [load_summary(r) for r in args.runs]
    mismatch = episode_mismatch(args.runs, summaries) if len(args.runs) == 2 else None
    if mismatch:
        parser.error(f"runs: {mismatch}")
    runs = [{r.episode_id: r for r in read_jsonl(Path(d) / EPISODES_FILE)} for d in args.runs]
    episode = args.episode or pick_episode(runs)
    meta = summaries[0]["meta"]
    cfg.scenes.dataset = args.dataset or meta.get("dataset", cfg.scenes.dataset)
    if args.data_root:
        cfg.scenes.data_root = args.data_root
    missing = [d for d, run in zip(args.runs, runs) if episode not in run]
    if missing:
        parser.error(f"--episode: episode {episode} is not in {missing}")
    records = [run[episode] for run in runs]
    labels = args.labels or default_labels(args.runs, summaries)
    scene = Scene.open(cfg.scenes.data_root, cfg.scenes.dataset, records[0].scene)

    from asgf_nav.viz.trajectories import save_trajectories

    out = save_trajectories(args.out, scene, records, labels)
    logger.info("wrote %s (episode %s)", out, episode)
    if args.video:
        from asgf_nav.tasks.world import load_world
        from asgf_nav.viz.video import write_video

        world = load_world(cfg, meta.get("split", "test"), [records[0].scene])
        video = write_video(args.video, scene, world, records[0], fps=args.fps, max_frames=args.max_frames)
        logger.info("wrote %s", video)
    return 0


if __name__ == "__main__":
    run_script(main)
