"""Evaluation outputs: per-episode JSONL, summary JSON and Markdown, and Table-I-style comparisons.

An evaluation directory holds ``episodes.jsonl`` (one :class:`EpisodeRecord` a line), ``summary.json``
(metrics with confidence intervals plus what was evaluated: agent, dataset, sound split, split, command)
and ``summary.md``. :func:`comparison_table` and :func:`comparison_chart` combine several directories.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asgf_nav.eval.evaluator import ARCHITECTURE_KEYS, EpisodeRecord, EvaluationFileError, summarize, write_jsonl
from asgf_nav.eval.metrics import (
    BINARY_METRICS,
    METRIC_LABELS,
    ONE_EPISODE_NOTE,
    REPORTED_METRICS,
    MetricSummary,
    format_summary,
    format_wilson,
    summary_wilson,
)
from asgf_nav.io import atomic_savefig, atomic_write_text, lock_held
from asgf_nav.rl.checkpoint import RESPONSE_VERSION_KEYS

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
PROGRESS_FILE = "episodes.partial.jsonl"  # an evaluation still running, or stopped (eval/progress.py)
EPISODES_FILE = "episodes.jsonl"
TABLE_METRICS: tuple[str, ...] = ("spl", "success", "sna")  # the paper's Table I columns
TABLE_BINARY = " / ".join(METRIC_LABELS[m] for m in TABLE_METRICS if m in BINARY_METRICS)  # shown with Wilson intervals
TABLE_META: tuple[str, ...] = ("agent", "dataset", "sound_split", "split")  # names of its rows, columns and split
# what an evaluation directory holds of its own: no other command may write over them
EVALUATION_FILES: tuple[str, ...] = (SUMMARY_FILE, "summary.md", EPISODES_FILE, PROGRESS_FILE)
SOUND_SPLITS: tuple[str, ...] = ("heard", "unheard")
# A column compares agents on one task: besides the episodes (meta.episode_list) they must share every task
# setting a summary records (meta.task: the step limit, the success distance, any key recorded later) and the
# scenes' source. Not compared, being the agent's own: the task keys a checkpoint brings with its weights
# (evaluator.ARCHITECTURE_KEYS: sensors, the DoA flag and head, the travel time; Table I in docs/results.md
# sets baselines without the travel time beside a checkpoint trained with it), the checkpoint, its update and
# weights, doa_head, audio_model, seed, deterministic (how a policy acts; a baseline has no policy) and
# num_envs (the random agent's draws); nor data_root, a path on the machine that ran it, whose episodes the
# episode list compares.
AGENT_TASK_KEYS: frozenset[str] = frozenset(dict(ARCHITECTURE_KEYS)["task"])
SHARED_META_KEYS: tuple[str, ...] = ("scene_source",)
# What made an embedded scene's responses: the baked acoustics (acoustics.bake.ACOUSTICS_VERSION) and their
# rendering (acoustics.rir.RENDER_VERSION), recorded by evaluations of embedded scenes (not of SoundSpaces data,
# whose responses come with it). A column shares them too; a summary without them was written by an earlier
# release, at an older acoustics version, so it is compared only with others without them.
ACOUSTICS_META_KEYS: tuple[str, ...] = RESPONSE_VERSION_KEYS  # the keys checkpoints record them under too
# The baselines that hear nothing (evaluation.hears_audio is False for them): they record the acoustics versions
# as None, and play the same episodes on any responses. A summary of one written by an earlier release, without
# the versions, is told apart by the --agent of its command, else by the random agent's num_envs (the one
# agent of evaluation.BATCH_DRAWN_AGENTS) or by its label, a baseline's own name (``random_random_stop`` with
# --random-stop random), when it evaluated no checkpoint and no audio model.
NON_HEARING_AGENTS: tuple[str, ...] = ("random", "oracle")


class _Unrecorded:
    """The value of an acoustics key a summary written by an earlier release lacks (one for all of them)."""

    def __repr__(self) -> str:
        return "not recorded (an earlier release)"


UNRECORDED = _Unrecorded()


def interval_bounds(metrics: dict[str, Any], metric: str) -> tuple[float, float]:
    """The interval every table and chart shows for ``metric``: Student t, a binary metric's (SR's) Wilson
    interval, as stored with the overall row or else computed from its mean and count (a scene's row)."""
    summary = MetricSummary.from_dict(metrics[metric])
    if metric not in BINARY_METRICS:
        return summary.low, summary.high
    stored = metrics[metric]
    return (stored["wilson_low"], stored["wilson_high"]) if "wilson_low" in stored else summary_wilson(summary)


def summary_cell(metrics: dict[str, Any], metric: str) -> str:
    """One metric of a summary row: mean ± Student-t half-width, a binary metric (SR) its mean and Wilson
    interval (:func:`interval_bounds`), and over one episode the value and "(n=1)"."""
    summary = MetricSummary.from_dict(metrics[metric])
    if metric in BINARY_METRICS:
        return format_wilson(summary, metric, interval_bounds(metrics, metric) if summary.count > 1 else None)
    return format_summary(summary, metric)


def silence_note(meta: dict[str, Any]) -> str | None:
    """The bold line of a SoundSpaces evaluation whose RIR files were heard as silence (None if none were),
    "at least" where episodes resumed from an earlier release's progress file did not record theirs; it names
    the ``rir_on_missing`` policy the meta records (the evaluation's), whichever it is."""
    silenced = meta.get("rirs_replaced_by_silence") or {}
    partial = bool(meta.get("rirs_replaced_by_silence_partial"))
    if not silenced and not partial:
        return None
    detail = ", ".join(f"{scene}: {n}" for scene, n in sorted(silenced.items())) or "none since the resume"
    unrecorded = (
        "; the episodes resumed from a progress file of an earlier release did not record the files they heard "
        "as silence, nor the policy they ran under, so more may have been"
        if partial
        else ""
    )
    count = f"at least {sum(silenced.values())}" if partial else str(sum(silenced.values()))
    recorded = meta.get("rir_on_missing")
    policy = f"scenes.rir_on_missing={recorded}" if recorded else "scenes.rir_on_missing not recorded"
    return (
        f"**{count} binaural RIR files were missing or unreadable and heard as silence** "
        f"({policy}{unrecorded}): {detail}."
    )


# the t interval of values all alike has no width, which says nothing of what other episodes would score
ALL_ALIKE_NOTE = (
    "a ± 0 over several episodes: all scored alike, and the t interval then has no width (SPL and SNA never exceed "
    "SR, whose Wilson interval still bounds them)"
)


def _all_alike(metric: dict[str, Any]) -> bool:
    return int(metric["count"]) > 1 and metric.get("std") == 0


def summary_markdown(summary: dict[str, Any]) -> str:
    """One evaluation as Markdown: an overall row and one row per scene, mean ± CI half-width at the
    summary's confidence level (SR: mean and Wilson interval; one episode: no interval)."""
    meta = summary.get("meta", {})
    title = " / ".join(str(meta[k]) for k in ("agent", "dataset", "sound_split", "split") if k in meta)
    header = "| scope | episodes | " + " | ".join(METRIC_LABELS[m] for m in REPORTED_METRICS) + " |"
    rows = [("all", summary["metrics"]), *summary.get("per_scene", {}).items()]
    binary = " / ".join(METRIC_LABELS[m] for m in REPORTED_METRICS if m in BINARY_METRICS)
    level = f"{_level(summary):.0%}"
    note = f"Mean ± half-width of the {level} confidence interval (Student t); {binary}: mean [{level} Wilson interval]"
    if any(int(metrics["success"]["count"]) == 1 for _, metrics in rows):
        note += f"; a row of one episode shows its values with {ONE_EPISODE_NOTE}, as no interval exists"
    if any(_all_alike(metrics[m]) for _, metrics in rows for m in REPORTED_METRICS if m not in BINARY_METRICS):
        note += f"; {ALL_ALIKE_NOTE}"
    lines = [
        f"## {title or 'evaluation'}",
        "",
        f"{note}; rates in %.",
        "",
        header,
        "|" + "---|" * (len(REPORTED_METRICS) + 2),
    ]
    for scope, metrics in rows:
        cells = [summary_cell(metrics, m) for m in REPORTED_METRICS]
        lines.append(f"| {scope} | {int(metrics['success']['count'])} | " + " | ".join(cells) + " |")
    if summary.get("endings"):  # summaries written before it was recorded have none
        lines += ["", endings_note(summary["endings"])]
    silenced = silence_note(meta)
    if silenced:
        lines += ["", silenced]
    if meta.get("command"):
        lines += ["", f"Command: `{meta['command']}`"]
    return "\n".join(lines) + "\n"


def endings_note(endings: dict[str, Any]) -> str:
    """One sentence of :func:`asgf_nav.eval.evaluator.endings`: how many stopped, how many of those on success."""
    stopped, succeeded = int(endings["stopped"]), int(endings["stopped_successfully"])
    text = f"Endings: {stopped} episode(s) called STOP, {succeeded} of them successfully"
    if stopped > succeeded:
        median = float(endings["failed_stop_distance_median"])
        text += f"; the other {stopped - succeeded} a median {median:.2f} m from the goal"
    return text + f"; {int(endings['step_limit'])} reached the step limit."


def _level(summary: dict[str, Any]) -> float:
    return float(summary["metrics"]["success"].get("level", 0.95))


def write_evaluation(out_dir: str | Path, records: Sequence[EpisodeRecord], meta: dict[str, Any]) -> dict[str, Any]:
    """Write episodes.jsonl, summary.json and summary.md into ``out_dir``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / EPISODES_FILE, records)
    summary = {"meta": dict(meta), **summarize(records)}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    logger.info("wrote %d episodes and the summary to %s", len(records), out)
    return summary


def load_summary(path: str | Path, meta_keys: Sequence[str] = TABLE_META) -> dict[str, Any]:
    """summary.json of an evaluation directory (or the file itself), its ``meta_keys`` (by default what a
    comparison table names its rows and columns by) checked to be names."""
    path = Path(path)
    file = path / SUMMARY_FILE if path.is_dir() else path
    if not file.exists():
        raise EvaluationFileError(f"no {SUMMARY_FILE} at {path}; run scripts/evaluate.py first")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvaluationFileError(f"{file} is not valid JSON ({exc}); it is not an evaluation summary") from exc
    for key in ("meta", "metrics"):
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise EvaluationFileError(f"{file} lacks a {key!r} mapping; it is not an evaluation summary")
    for metric in TABLE_METRICS:  # what every table and chart reads, checked here rather than met as a KeyError
        try:
            summary = MetricSummary.from_dict(data["metrics"][metric])
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationFileError(
                f"{file}: metrics.{metric} is missing or damaged ({type(exc).__name__}: {exc}); evaluate again"
            ) from None
        values = [v for v in (summary.mean, summary.low, summary.high) if v is not None]  # None: one episode
        if not all(math.isfinite(v) for v in values):  # would print "nan ± 0.0"
            raise EvaluationFileError(
                f"{file}: metrics.{metric} is not finite (mean {summary.mean}, interval [{summary.low}, "
                f"{summary.high}]); evaluate again"
            )
    if not isinstance(data.get("episodes"), int):
        raise EvaluationFileError(f"{file}: 'episodes' (the episode count) is missing or not a whole number")
    for key in meta_keys:  # else a table row "?" or a column "tiny None"
        value = data["meta"].get(key)
        if not isinstance(value, str) or not value.strip():
            what = "missing" if key not in data["meta"] else f"{value!r}, not a name"
            raise EvaluationFileError(
                f"{file}: meta.{key} is {what}; a comparison table names its rows and columns by meta's "
                f"{', '.join(TABLE_META)}; evaluate again"
            )
    data["directory"] = str(file.parent)  # not stored: where the table's errors point
    return data


def owning_evaluation(path: str | Path, evaluations: Sequence[str | Path] = ()) -> Path | None:
    """The evaluation directory whose own file (:data:`EVALUATION_FILES`) ``path`` is, or None: a file of that
    name in one of ``evaluations`` or in any directory holding an evaluation's files, written yet or not. A
    summary.md alone marks none: it may be a table this script wrote before."""
    target = Path(path).resolve()
    if target.name not in EVALUATION_FILES:
        return None
    folder = target.parent
    marks = (SUMMARY_FILE, EPISODES_FILE, PROGRESS_FILE)
    if folder in {Path(e).resolve() for e in evaluations} or any((folder / f).exists() for f in marks):
        return folder
    return None


def lock_path(out_dir: Path) -> Path:
    """The file whose lock an evaluation holds: beside its directory, so that a refused or failed run
    creates no evaluation directory (made absolute first: "." has no name to put the lock beside)."""
    out_dir = Path(os.path.abspath(out_dir))
    return out_dir.with_name(f".{out_dir.name}.lock")


def _unfinished(directory: Path) -> str:
    """How an evaluation without its summary stands: still running (another process holds its lock), or
    stopped, which its command resumes."""
    if lock_held(lock_path(directory)):
        return "still running (its lock is held): wait for it to finish"
    return "unfinished: run its command again to finish it"


def evaluation_dir_problem(path: str | Path) -> str | None:
    """Why ``path`` is not an evaluation directory to read one evaluation from, or None: a file (an evaluation's
    own summary.json or episodes.jsonl names the directory holding it), or an evaluation without its summary
    (:func:`_unfinished`). A path that does not exist is left to :func:`load_summary`, which names it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        owner = owning_evaluation(path)
        where = f"; it is the {path.name} of the evaluation {owner}: give that directory" if owner else ""
        return f"{path} is a file, not an evaluation directory{where}"
    if path.is_dir() and not (path / SUMMARY_FILE).exists():
        if (path / PROGRESS_FILE).exists() or lock_held(lock_path(path)):
            return f"{path} holds no {SUMMARY_FILE} yet: the evaluation is {_unfinished(path)}"
    return None


def find_summaries(paths: Sequence[str | Path]) -> list[Path]:
    """Evaluation directories named directly or found below the given paths, each once; a path that holds
    none (an unfinished evaluation included) is an error, so that nothing drops out of a table unnoticed."""
    found: dict[Path, None] = {}  # resolved, in first-seen order: one directory reached twice counts once
    for p in map(Path, paths):
        if (p / SUMMARY_FILE).exists() or (p.is_file() and p.name == SUMMARY_FILE):
            here = [p if p.is_dir() else p.parent]
        elif p.is_dir():
            here = sorted(f.parent for f in p.rglob(SUMMARY_FILE))
            unfinished = sorted(f.parent for f in p.rglob(PROGRESS_FILE) if not (f.parent / SUMMARY_FILE).exists())
            if here and unfinished:
                listed = "; ".join(f"{d} is {_unfinished(d)}" for d in unfinished)
                raise EvaluationFileError(
                    f"{p} holds evaluations without a summary ({listed}); or name the finished evaluation directories"
                )
        else:
            here = []
        if not here:
            partial = sorted(p.rglob(PROGRESS_FILE)) if p.is_dir() else []
            unfinished = f" ({'; '.join(f'{f.parent} is {_unfinished(f.parent)}' for f in partial)})" if partial else ""
            raise EvaluationFileError(f"{p} is neither an evaluation directory nor holds any{unfinished}")
        found.update(dict.fromkeys(d.resolve() for d in here))
    return list(found)


def _cell_key(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta.get("dataset", "?")), str(meta.get("sound_split", "?"))


def collect(summaries: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]], dict]:
    """Agents (first-seen order), (dataset, sound split) columns and {(agent, column): summary}."""
    splits = sorted({str(s["meta"].get("split", "?")) for s in summaries})
    if len(splits) > 1:
        raise EvaluationFileError(f"the evaluations are of splits {splits}; a table compares one (report.py --split)")
    agents: list[str] = []
    columns: set[tuple[str, str]] = set()
    cells: dict[tuple[str, tuple[str, str]], dict[str, Any]] = {}
    for s in summaries:
        agent = str(s["meta"].get("agent", "?"))
        key = _cell_key(s["meta"])
        if agent not in agents:
            agents.append(agent)
        columns.add(key)
        if (agent, key) in cells:
            first, second = (str(c.get("directory", c["meta"].get("checkpoint"))) for c in (cells[(agent, key)], s))
            raise EvaluationFileError(
                f"two evaluations of agent {agent!r} on {' '.join(key)} ({first} and {second}); "
                "evaluate them under different --name labels, or pass only one"
            )
        cells[(agent, key)] = s
    _check_same_episodes(agents, columns, cells)
    _check_same_task(agents, columns, cells)
    _check_same_acoustics(list(cells.values()))
    order = sorted(columns, key=lambda c: (c[0], SOUND_SPLITS.index(c[1]) if c[1] in SOUND_SPLITS else 9, c[1]))
    return agents, order, cells


def _check_same_episodes(agents: Sequence[str], columns: set[tuple[str, str]], cells: dict) -> None:
    """The agents of one column must have run the same episodes (their meta's episode_list fingerprint); one that
    records none (an earlier release's) cannot be checked beside others, and is refused rather than trusted."""
    for column in sorted(columns):
        seen: dict[str, str] = {}  # fingerprint -> first agent that ran it
        present = [agent for agent in agents if (agent, column) in cells]
        for agent in present:
            fingerprint = cells[(agent, column)]["meta"].get("episode_list")
            if fingerprint is None and len(present) > 1:
                where = cells[(agent, column)].get("directory", "its summary")
                raise EvaluationFileError(
                    f"the evaluation of {agent!r} on {' '.join(column)} ({where}) records no episode list (an earlier "
                    "release wrote it), so its episodes cannot be checked against the other agents': evaluate it "
                    "again, or report it alone"
                )
            if fingerprint is not None:
                seen.setdefault(str(fingerprint), agent)
        if len(seen) > 1:
            (first_list, first), (second_list, second) = list(seen.items())[:2]
            raise EvaluationFileError(
                f"the evaluations of {first!r} and {second!r} on {' '.join(column)} ran different episodes "
                f"(episode lists {first_list} and {second_list}); a column compares agents on the same episodes: "
                "evaluate them with the same --episodes, --scenes and data"
            )


def _evaluated_baseline(meta: dict[str, Any]) -> str | None:
    """The baseline an evaluation ran, as far as its summary tells: the ``--agent`` of its command, else the
    random agent where it records num_envs (only the random agent's draws depend on it), else its label when
    that is a baseline's own name; None for a checkpoint (or a summary that tells nothing)."""
    if meta.get("checkpoint") is not None:
        return None
    try:
        words = shlex.split(str(meta.get("command") or ""))  # evaluate.py records "python " + shlex.join(argv)
    except ValueError:  # not a command line this code wrote
        words = []
    for i, word in enumerate(words):
        if word == "--agent" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--agent="):
            return word.partition("=")[2]
    if "num_envs" in meta:
        return "random"
    label = str(meta.get("agent", ""))
    return "random" if label in ("random", "random_random_stop") else label or None


def hears_nothing(meta: dict[str, Any]) -> bool:
    """Whether the evaluation is of an agent that hears nothing (:data:`NON_HEARING_AGENTS`): recorded so by
    the acoustics versions None, or, in a summary of an earlier release that lacks them, told by
    :func:`_evaluated_baseline` (and no audio model)."""
    if any(meta.get(key, UNRECORDED) is None for key in ACOUSTICS_META_KEYS):
        return True
    return meta.get("audio_model") is None and _evaluated_baseline(meta) in NON_HEARING_AGENTS


def acoustics_versions(meta: dict[str, Any]) -> dict[str, Any]:
    """``{key: version}`` (:data:`ACOUSTICS_META_KEYS`) of the responses an evaluation heard, :data:`UNRECORDED`
    where an earlier release did not record them; empty for responses this code did not make (SoundSpaces
    data) and for an agent that hears nothing (random, oracle: the same episodes on any responses)."""
    if meta.get("scene_source", "embedded") != "embedded":  # written before scene_source was: embedded scenes
        return {}
    if hears_nothing(meta):
        return {}
    return {key: meta.get(key, UNRECORDED) for key in ACOUSTICS_META_KEYS}


def _shared_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The settings of one evaluation that the others of its column must share, as its summary records them
    (one written before a key was recorded is not compared on it, as with episode lists; but the acoustics
    versions of embedded scenes it lacks are :data:`UNRECORDED`, compared with others lacking them alone)."""
    task = meta.get("task")
    settings = {f"task.{k}": v for k, v in task.items() if k not in AGENT_TASK_KEYS} if isinstance(task, dict) else {}
    settings.update({key: meta[key] for key in SHARED_META_KEYS if key in meta})
    settings.update(acoustics_versions(meta))
    return settings


def _describe_versions(versions: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value!r}" for key, value in versions.items())


def _check_same_acoustics(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every evaluation of embedded scenes in one table, whatever its column, must have heard responses of the
    same acoustics and render versions: a row whose heard cells are of one renderer and its unheard cells of
    another compares nothing. Returns those versions (empty when no evaluation heard embedded scenes)."""
    first: tuple[dict[str, Any], dict[str, Any]] | None = None
    for summary in summaries:
        versions = acoustics_versions(summary["meta"])
        if not versions:
            continue
        if first is None:
            first = (summary, versions)
            continue
        if versions != first[1]:
            named = [
                f"{s['meta'].get('agent', '?')!r} on {' '.join(_cell_key(s['meta']))} "
                f"({s.get('directory', 'no directory')}) at {_describe_versions(v)}"
                for s, v in (first, (summary, versions))
            ]
            old = any(value is UNRECORDED for v in (first[1], versions) for value in v.values())
            earlier = (
                " (one that does not record them was written by an earlier release, at an older acoustics or "
                "render version)"
                if old
                else ""
            )
            raise EvaluationFileError(
                f"the evaluations in one table heard responses of different acoustics: {named[0]}, but {named[1]}; "
                "a table compares agents on the same responses in all its columns: evaluate them again on the "
                f"responses the scenes are baked and rendered with now{earlier}, or report them in separate tables"
            )
    return first[1] if first else {}


def acoustics_note(versions: dict[str, Any]) -> str:
    """What a table's note says of the responses its evaluations of embedded scenes heard (empty: none did)."""
    if not versions:
        return ""
    if all(value is UNRECORDED for value in versions.values()):
        return "; embedded scenes' responses of acoustics and render versions not recorded (an earlier release)"
    shown = " and ".join(f"{key.replace('_', ' ')} {value!r}" for key, value in versions.items())
    return f"; embedded scenes' responses of {shown}"


def _check_same_task(agents: Sequence[str], columns: set[tuple[str, str]], cells: dict) -> None:
    """The agents of one column must have run under the same task settings (:data:`SHARED_META_KEYS`, the
    task keys but :data:`AGENT_TASK_KEYS`) and heard the same responses (:data:`ACOUSTICS_META_KEYS`): an SR at
    20 steps beside one at 500 compares nothing."""
    for column in sorted(columns):
        values: dict[str, list[tuple[Any, list[str]]]] = {}  # setting -> [(value, the evaluations of it)]
        for agent in agents:
            cell = cells.get((agent, column))
            if cell is None:
                continue
            where = f"{agent!r} ({cell['directory']})" if "directory" in cell else repr(agent)
            for key, value in _shared_settings(cell["meta"]).items():
                groups = values.setdefault(key, [])
                for known, names in groups:
                    if known == value:
                        names.append(where)
                        break
                else:
                    groups.append((value, [where]))
        differing = {key: groups for key, groups in sorted(values.items()) if len(groups) > 1}
        if differing:
            listed = "; ".join(
                f"{key} is " + ", ".join(f"{value!r} for {' and '.join(names)}" for value, names in groups)
                for key, groups in differing.items()
            )
            settings = [key for key in differing if key not in ACOUSTICS_META_KEYS]
            versions = [key for key in differing if key in ACOUSTICS_META_KEYS]
            remedies = [f"evaluate them with the same {', '.join(settings)}"] if settings else []
            if versions:
                old = any(value is UNRECORDED for key in versions for value, _ in differing[key])
                remedies.append(
                    "evaluate them again on the responses the scenes are baked and rendered with now"
                    + (" (one that does not record them was written by an earlier release, at an older acoustics "
                       "or render version)" if old else "")
                )  # fmt: skip
            what = " and ".join(["task settings"] * bool(settings) + ["acoustics"] * bool(versions))
            raise EvaluationFileError(
                f"the evaluations on {' '.join(column)} ran under different {what} ({listed}); a column "
                f"compares agents on the same task: {'; '.join(remedies)}"
            )


def comparison_table(summaries: Sequence[dict[str, Any]], with_ci: bool = True) -> str:
    """Table I: rows are agents, column groups (dataset, heard/unheard) of SPL / SR / SNA in %."""
    agents, columns, cells = collect(summaries)
    group = " | ".join(f"{d} {s} {METRIC_LABELS[m]}" for d, s in columns for m in TABLE_METRICS)
    lines = [f"| method | {group} |", "|---|" + "---|" * (len(columns) * len(TABLE_METRICS))]
    for agent in agents:
        row = []
        for col in columns:
            s = cells.get((agent, col))
            for m in TABLE_METRICS:
                if s is None:
                    row.append("-")
                    continue
                ms = MetricSummary.from_dict(s["metrics"][m])
                row.append(summary_cell(s["metrics"], m) if with_ci else f"{100 * ms.mean:.1f}")
        lines.append(f"| {agent} | " + " | ".join(row) + " |")
    counts = sorted({int(s["episodes"]) for s in summaries})
    levels = " / ".join(f"{100 * level:g} %" for level in sorted({_level(s) for s in summaries}))
    shown = (
        f"mean ± half-width of the {levels} confidence interval (Student t), {TABLE_BINARY} mean "
        f"[{levels} Wilson interval]"
        if with_ci
        else "mean"
    )
    if with_ci and any(int(s["metrics"][m]["count"]) == 1 for s in summaries for m in TABLE_METRICS):
        shown += f" ({ONE_EPISODE_NOTE}: one episode, no interval)"
    if with_ci and any(
        _all_alike(s["metrics"][m]) for s in summaries for m in TABLE_METRICS if m not in BINARY_METRICS
    ):
        shown += f"; {ALL_ALIKE_NOTE}"
    versions = acoustics_note(_check_same_acoustics(list(cells.values())))
    note = f"SPL / SR / SNA in %, {shown}{versions}; episodes per evaluation: {', '.join(map(str, counts))}."
    return "\n".join(lines) + "\n\n" + note + "\n"


def comparison_chart(summaries: Sequence[dict[str, Any]], path: str | Path, with_ci: bool = True) -> Path:
    """Grouped bar chart (one panel per dataset / sound split) of SPL, SR and SNA, with the confidence
    intervals as error bars (cut at 0 and 100 %, where a Student-t interval of a rate may reach past)."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    agents, columns, cells = collect(summaries)
    split = summaries[0]["meta"].get("split", "?")  # one split: collect refuses several
    fig = Figure(figsize=(4.2 * len(columns) + 1, 3.8))
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(agents))
    colors = matplotlib.colormaps["tab10"]
    x = np.arange(len(TABLE_METRICS))
    for ax, col in zip(axes[0], columns):
        for j, agent in enumerate(agents):
            s = cells.get((agent, col))
            if s is None:
                continue
            ms = [MetricSummary.from_dict(s["metrics"][m]) for m in TABLE_METRICS]
            means = np.array([100 * m.mean for m in ms])
            # one episode has no interval: its bar gets no error bar (NaN draws none), not a zero-width one;
            # SR's is its Wilson interval, as in the table (a Student-t one shrinks to nothing at 0 or 100 %)
            bounds = np.array(
                [interval_bounds(s["metrics"], m) if ms[i].has_interval else (np.nan, np.nan)
                 for i, m in enumerate(TABLE_METRICS)]
            )  # fmt: skip
            low, high = np.clip(100 * bounds[:, 0], 0, 100), np.clip(100 * bounds[:, 1], 0, 100)
            ax.bar(
                x + (j - (len(agents) - 1) / 2) * width,
                means,
                width,
                yerr=np.stack([means - low, high - means]) if with_ci else None,
                capsize=2,
                label=agent,
                color=colors(j % 10),
            )
        ax.set_xticks(x, [METRIC_LABELS[m] for m in TABLE_METRICS])
        ax.set_title(f"{col[0]} {col[1]} ({split} split)")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    levels = " / ".join(f"{100 * level:g} %" for level in sorted({_level(s) for s in summaries}))
    axes[0][0].set_ylabel(f"% (bars: {levels} confidence intervals, {TABLE_BINARY} Wilson)" if with_ci else "% (means)")
    handles: dict[str, Any] = {}  # every agent once, also one evaluated only in a later panel
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    names = [agent for agent in agents if agent in handles]
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=len(agents), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return atomic_savefig(fig, path, dpi=130)
