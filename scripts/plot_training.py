#!/usr/bin/env python
"""Learning curves and a table of means over windows of frames, read from training runs' TensorBoard logs.

    python scripts/plot_training.py runs/replica_unheard --out curves.png
    python scripts/plot_training.py runs/with_doa runs/without_doa --labels "with doa" "without" --out ablation.png
    python scripts/plot_training.py runs/exp1 --window-frames 51200 --tags softspl distance_to_goal lr

Each RUN is a training run's directory (train.run_dir, holding tb/) or a directory of event files. The table of
the first RUN (each RUN with --all-tables) is printed and, with --table, written: one row per window of frames,
each cell the mean of the values logged in it. The episode figures are those the trainer logs at each update,
means over its last train.stats_window_episodes finished episodes, so a window's mean is a smoothed figure.
A resumed run reads as one run: what a resume from an older checkpoint repeats replaces what was logged after it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, positive_int, run_script, user_path  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402

logger = logging.getLogger("plot_training")

DEFAULT_TAGS = ["success", "spl", "softspl", "distance_to_goal", "num_actions", "return"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=user_path, nargs="+", help="training run directories")
    parser.add_argument("--labels", nargs="+", help="one per run, for the legend (default: the directories' names)")
    parser.add_argument(
        "--tags",
        nargs="+",
        help="scalars to show: full TensorBoard tags (train/episode/spl) or their last part (spl: the training "
        f"figure; val/spl the validation one) (default: those of {' '.join(DEFAULT_TAGS)} every run logged)",
    )
    windows = parser.add_mutually_exclusive_group()
    windows.add_argument("--windows", type=positive_int, help="this many equal windows per run (default: 8)")
    windows.add_argument("--window-frames", type=positive_int, help="windows of this many frames")
    parser.add_argument("--out", type=user_path, help="the figure (PNG, PDF, SVG ...)")
    parser.add_argument("--table", type=user_path, help="write the printed Markdown table(s) here too")
    parser.add_argument("--all-tables", action="store_true", help="a table for every run, not only the first")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} label(s) for {len(args.runs)} run(s); give one per run")
    check_output(parser, "--out", args.out, figure=True)
    check_output(parser, "--table", args.table)
    from asgf_nav.eval.training_log import TrainingLogError, read_training_log, window_edges, window_table
    from asgf_nav.io import atomic_write_text

    setup_logging("INFO")
    try:
        logs = [read_training_log(run) for run in args.runs]
        if args.tags is None:  # a run that has not yet finished an episode has no episode figures
            args.tags = [tag for tag in DEFAULT_TAGS if all(log.has(tag) for log in logs)] or ["value_loss"]
        for log in logs:
            for tag in args.tags:
                log.resolve_tag(tag)
    except TrainingLogError as exc:
        parser.error(str(exc))
    labels = args.labels or [(log.source.parent if log.source.name == "tb" else log.source).name for log in logs]
    edges = [
        window_edges(log.last_frame, windows=None if args.window_frames else (args.windows or 8),
                     window_frames=args.window_frames)
        for log in logs
    ]  # fmt: skip
    tables = []
    for log, label, run_edges in list(zip(logs, labels, edges))[: None if args.all_tables else 1]:
        resumed = f"; resumed after frame {', '.join(f'{r:,}' for r in log.resumed_at)}" if log.resumed_at else ""
        tables.append(f"{label} ({log.last_frame:,} frames{resumed})\n\n{window_table(log, args.tags, run_edges)}")
    text = "\n".join(tables)
    print(text)
    if args.table:
        atomic_write_text(args.table, text)
        logger.info("wrote %s", args.table)
    if args.out:
        from asgf_nav.viz.training_curves import plot_training_curves

        logger.info("wrote %s", plot_training_curves(logs, labels, args.tags, edges, args.out))
    return 0


if __name__ == "__main__":
    run_script(main)
