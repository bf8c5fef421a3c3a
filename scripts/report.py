#!/usr/bin/env python
"""Combine evaluations of several agents into one Table-I-style Markdown table and a bar chart.

    python scripts/report.py runs/eval --out docs/images/baselines_replica_test.png --table report.md
    python scripts/report.py runs/eval/gan_replica_heard_test runs/eval/gan_replica_unheard_test ...

Each RUN is an evaluation directory of scripts/evaluate.py or a folder holding several; rows are agents,
column groups are (dataset, heard / unheard) with SPL, SR and SNA in % and their 95 % confidence intervals.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, run_script  # noqa: E402
from asgf_nav.eval.report import comparison_chart, comparison_table, find_summaries, load_summary  # noqa: E402
from asgf_nav.io import atomic_write_text  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402

logger = logging.getLogger("report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="evaluation directories (or folders holding them)")
    parser.add_argument("--split", default=None, help="only evaluations of this split (train / val / test)")
    parser.add_argument("--agents", nargs="+", help="rows to include, in this order (default: all, as found)")
    parser.add_argument("--table", help="write the Markdown table here (it is printed either way)")
    parser.add_argument("--out", help="bar chart PNG")
    parser.add_argument("--no-ci", action="store_true", help="means only, without interval half-widths")
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out, figure=True)
    check_output(parser, "--table", args.table)
    setup_logging("INFO")
    summaries = [load_summary(d) for d in find_summaries(args.runs)]
    if args.split:
        summaries = [s for s in summaries if s["meta"].get("split") == args.split]
    if args.agents:
        available = list(dict.fromkeys(s["meta"]["agent"] for s in summaries if "agent" in s["meta"]))
        unknown = [a for a in args.agents if a not in available]
        if unknown:
            where = f" of split {args.split!r}" if args.split else ""
            parser.error(
                f"--agents: no evaluation{where} of {unknown} under {args.runs}; available agents: {available}"
            )
        order = {a: i for i, a in enumerate(args.agents)}
        summaries = sorted(
            (s for s in summaries if s["meta"].get("agent") in order), key=lambda s: order[s["meta"]["agent"]]
        )
    if not summaries:
        parser.error(f"no evaluation summaries found under {args.runs} with the given filters")
    table = comparison_table(summaries, with_ci=not args.no_ci)
    print(table)
    if args.table:
        atomic_write_text(args.table, table)
        logger.info("wrote %s", args.table)
    if args.out:
        logger.info("wrote %s", comparison_chart(summaries, args.out, with_ci=not args.no_ci))
    return 0


if __name__ == "__main__":
    run_script(main)
