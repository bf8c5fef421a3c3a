#!/usr/bin/env python
"""Combine evaluations of several agents into one Table-I-style Markdown table and a bar chart.

    python scripts/report.py runs/eval --out docs/images/baselines_replica_test.png --table report.md
    python scripts/report.py runs/eval/gan_replica_heard_test runs/eval/gan_replica_unheard_test ...

Each RUN is an evaluation directory of scripts/evaluate.py or a folder holding several; rows are agents,
column groups are (dataset, heard / unheard) with SPL, SR and SNA in % and their 95 % confidence intervals.
The agents of a column must have run the same episodes under the same task settings (task.max_steps,
task.success_distance, the scenes' source); a column mixing them is refused, naming what differs. Every
evaluation of embedded scenes in the table, in all its columns, must have heard responses of the same acoustics
and render versions (acoustics_version, render_version in its summary: acoustics.bake.ACOUSTICS_VERSION and
acoustics.rir.RENDER_VERSION when it ran; summaries of an earlier release, which lack them, go only with each
other); a table mixing them is refused, naming two summaries and their versions, and the table's note names the
versions. The random and oracle agents hear nothing and go beside any versions.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgf_nav.cli import check_output, run_script, user_path  # noqa: E402
from asgf_nav.io import atomic_write_text  # noqa: E402
from asgf_nav.logging_utils import setup_logging  # noqa: E402

logger = logging.getLogger("report")


def check_not_an_evaluation_file(
    parser: argparse.ArgumentParser, flag: str, path: str | None, evaluations: Sequence[Path]
) -> None:
    """Beside :func:`check_output`: an output is none of the summaries read, nor any other file an evaluation
    directory holds of its own (``--table RUN/summary.json`` would write the table over the summary)."""
    from asgf_nav.eval.report import owning_evaluation

    if path is None:
        return
    owner = owning_evaluation(path, evaluations)
    if owner is not None:
        parser.error(
            f"{flag}: {path} is the {Path(path).name} of the evaluation {owner}, which {flag} would overwrite; "
            "write it outside the evaluation directories, or under another name"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=user_path, nargs="+", help="evaluation directories (or folders holding them)")
    parser.add_argument("--split", default=None, help="only evaluations of this split (train / val / test)")
    parser.add_argument("--agents", nargs="+", help="rows to include, in this order (default: all, as found)")
    parser.add_argument("--table", type=user_path, help="write the Markdown table here (it is printed either way)")
    parser.add_argument("--out", type=user_path, help="bar chart PNG")
    parser.add_argument("--no-ci", action="store_true", help="means only, without interval half-widths")
    args = parser.parse_args(argv)
    check_output(parser, "--out", args.out, figure=True)
    check_output(parser, "--table", args.table)
    if args.table and args.out and Path(args.table).resolve() == Path(args.out).resolve():
        parser.error(f"--table and --out both name {args.table}; the chart would overwrite the table")
    # imported once the command line parses: --help and a usage error answer without torch's seconds of start-up
    from asgf_nav.eval.report import comparison_chart, comparison_table, find_summaries, load_summary

    setup_logging("INFO")
    evaluations = find_summaries(args.runs)
    check_not_an_evaluation_file(parser, "--table", args.table, evaluations)
    check_not_an_evaluation_file(parser, "--out", args.out, evaluations)
    summaries = [load_summary(d) for d in evaluations]
    if args.split:
        found = sorted({str(s["meta"].get("split", "?")) for s in summaries})
        summaries = [s for s in summaries if s["meta"].get("split") == args.split]
        if not summaries:
            parser.error(f"--split: no evaluation of split {args.split!r} under {args.runs}; splits found: {found}")
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
