"""Which evaluated episode to draw, and the generated scene it was run on.

``scripts/visualize_trajectories.py`` draws one episode of one or two evaluation directories. The
episode is named (SCENE/EPISODE_ID, or an id only one scene has) or chosen where the agents differ most;
the scene is the generated one whose nodes the records index, refused by name when the evaluation ran on
an imported SoundSpaces graph (which has no floor plan to draw) or on another scene. A video plays the
scene's responses as they are baked and rendered now: :func:`responses_mismatch` says when those are not the
ones the evaluated agent heard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asgf_nav.acoustics.rir import RENDER_VERSION
from asgf_nav.eval.evaluator import EpisodeRecord, EvaluationFileError, read_jsonl, record_problem
from asgf_nav.eval.progress import episode_key
from asgf_nav.eval.report import EPISODES_FILE, hears_nothing
from asgf_nav.rl.checkpoint import (
    RESPONSE_VERSION_KEYS,
    VERSION_CONSTANTS,
    describe_versions,
    response_version_changes,
)
from asgf_nav.scenes.scene import Scene
from asgf_nav.scenes.soundspaces_import import imported_scene_dir
from asgf_nav.scenes.store import SceneStoreError, scene_dir

SAME_EPISODES_KEYS = ("dataset", "split", "sound_split", "scene_source")
POSITION_TOLERANCE = 1e-3  # metres between a record's start / goal position and the drawn scene's node

EpisodeKey = tuple[str, str]  # (scene, episode id): ids alone repeat across the scenes of a SoundSpaces split
Run = dict[EpisodeKey, EpisodeRecord]


def episode_name(key: EpisodeKey) -> str:
    return f"{key[0]}/{key[1]}"


def read_run(run_dir: str | Path) -> Run:
    """The records of an evaluation directory's episodes.jsonl by (scene, episode id); EvaluationFileError
    naming the file (and the episode) for a file without episodes or a record that cannot be drawn, before
    one is picked by its metrics or drawn from its path."""
    file = Path(run_dir) / EPISODES_FILE
    records = read_jsonl(file)
    if not records:
        raise EvaluationFileError(f"{file} holds no episodes; evaluate again")
    for record in records:
        problem = record_problem(record.to_json())
        if problem is None and not record.path:  # an older or edited file: every evaluated episode has a pose
            problem = "it has no path (the [node, yaw] poses the agent went through)"
        if problem:
            raise EvaluationFileError(
                f"{file}: episode {episode_name(episode_key(record))} cannot be drawn: {problem}; evaluate again"
            )
    return {episode_key(r): r for r in records}


def resolve_episode(value: str, runs: Sequence[Run]) -> EpisodeKey:
    """The episode ``--episode`` names: SCENE/ID, or an ID that only one scene of the evaluations has."""
    keys = {key for run in runs for key in run}
    if not keys:
        raise ValueError("the evaluations hold no episodes")
    scene, sep, episode_id = value.partition("/")
    if sep and (scene, episode_id) in keys:
        return scene, episode_id
    matches = sorted(key for key in keys if key[1] == value)
    if len(matches) == 1:
        return matches[0]
    if matches:
        scenes = ", ".join(scene for scene, _ in matches)
        raise ValueError(
            f"episode id {value!r} is in several scenes ({scenes}); name one as SCENE/ID, e.g. "
            f"{episode_name(matches[0])}"
        )
    raise ValueError(f"no episode {value!r} in the evaluations; name one as SCENE/ID, e.g. {episode_name(min(keys))}")


def pick_episode(runs: Sequence[Run]) -> EpisodeKey:
    """Episode present in every run, as the same episode (:func:`differing_fields`: an id reused for another
    start, goal or sound is not), where SPL differs most between runs; ties go to one the first run succeeded
    in, then to the longest episode."""
    common = set(runs[0])
    for run in runs[1:]:
        common &= set(run)
    common = {key for key in common if not differing_fields([run[key] for run in runs])}  # ids reused: not one
    if not common:
        raise EvaluationFileError(
            "the evaluations share no episode; evaluate the agents on the same split and episodes"
        )

    def score(key: EpisodeKey) -> tuple[float, float, float]:
        spl = [run[key].metrics["spl"] for run in runs]
        return max(spl) - min(spl), runs[0][key].metrics["success"], runs[0][key].geodesic_distance

    return max(sorted(common), key=score)


def episode_mismatch(run_dirs: list[str], summaries: list[dict]) -> str | None:
    """Why the evaluations are not of the same episodes (dataset, split, sound split or scene source differ),
    or None. Their episode lists may differ (``--episodes``, ``--scenes``): :func:`record_mismatch` checks the
    one episode drawn."""
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
        "give evaluations of the same dataset, split, sound split and scene source"
    )


EPISODE_FIELDS = ("start_node", "start_yaw", "goal_node", "sound")  # what makes an episode under its id


def differing_fields(records: Sequence[EpisodeRecord]) -> list[str]:
    """``start_node 12 vs 40``, ... for each field of :data:`EPISODE_FIELDS` the records of one id disagree on."""
    return [
        f"{name} {getattr(records[0], name)!r} vs {getattr(record, name)!r}"
        for record in records[1:]
        for name in EPISODE_FIELDS
        if getattr(records[0], name) != getattr(record, name)
    ]


def record_mismatch(run_dirs: Sequence[str], records: Sequence[EpisodeRecord]) -> str | None:
    """Why the records of one episode id are not the same episode (episodes generated from other data or
    settings reuse ids), or None: two panels under one title must show one start, goal and sound."""
    differs = differing_fields(records)
    if not differs:
        return None
    return (
        f"episode {episode_name((records[0].scene, records[0].episode_id))} is another episode in {run_dirs[1]} "
        f"than in {run_dirs[0]} ({', '.join(differs)}): the evaluations ran on other episode files"
    )


def scene_mismatch(run_dir: str, record: EpisodeRecord, scene: Scene) -> str | None:
    """Why ``record`` was not run on ``scene``'s graph (its start or goal is not at that node), or None."""
    positions = np.asarray(scene.positions, dtype=np.float64)
    for what, node, position in (
        ("start", record.start_node, record.start_position),
        ("goal", record.goal_node, record.goal_position),
    ):
        if not 0 <= node < len(positions):
            return f"its {what} node {node} is not one of the {len(positions)} nodes of {scene.directory}"
        if not np.allclose(positions[node], position, rtol=0.0, atol=POSITION_TOLERANCE):
            return (
                f"its {what} node {node} is at {[round(float(v), 3) for v in position]} in {run_dir}, "
                f"at {[round(float(v), 3) for v in positions[node]]} in {scene.directory}"
            )
    for step, (node, _) in enumerate(record.path):  # drawn by indexing the positions: an IndexError otherwise
        if not 0 <= node < len(positions):
            return (
                f"its path goes to node {node} (pose {step} in {Path(run_dir) / EPISODES_FILE}), which is not one "
                f"of the {len(positions)} nodes of {scene.directory}"
            )
    return None


def other_scene_error(run_dir: str, record: EpisodeRecord, data_root: str, dataset: str, why: str) -> str:
    """The refusal of an evaluation whose node indices are not those of the generated scene."""
    generated = scene_dir(data_root, dataset, record.scene)
    imported = imported_scene_dir(data_root, dataset, record.scene)
    return (
        f"{run_dir}: episode {episode_name(episode_key(record))} was not run on the generated scene {generated} "
        f"({why}); an evaluation on the imported SoundSpaces scene {imported} numbers its nodes by that graph, "
        "which has no floor plan to draw; draw an evaluation that ran on generated scenes (evaluate.py with "
        "scenes.source=embedded)"
    )


def open_scene_of(
    run_dirs: Sequence[str], summaries: Sequence[dict], records: Sequence[EpisodeRecord], data_root: str, dataset: str
) -> Scene:
    """The generated scene the records were run on; ValueError (naming both scene directories) when they
    were run on an imported SoundSpaces graph, or on any other scene than the one at that path."""
    first = records[0]
    for run_dir, summary in zip(run_dirs, summaries):
        if summary["meta"].get("scene_source") == "soundspaces":
            why = "its summary's scene_source is 'soundspaces'"
            raise ValueError(other_scene_error(run_dir, first, data_root, dataset, why))
    try:
        scene = Scene.open(data_root, dataset, first.scene)
    except SceneStoreError as exc:
        if imported_scene_dir(data_root, dataset, first.scene).is_dir():  # an older evaluation of SoundSpaces
            raise ValueError(other_scene_error(run_dirs[0], first, data_root, dataset, str(exc))) from None
        raise
    for run_dir, record in zip(run_dirs, records):
        why = scene_mismatch(run_dir, record, scene)
        if why:
            raise ValueError(other_scene_error(run_dir, record, data_root, dataset, why))
    return scene


def default_labels(run_dirs: list[str], summaries: list[dict]) -> list[str]:
    """The agents' names; the run directories' names where two runs share an agent name."""
    labels = [str(s["meta"].get("agent", f"run {i}")) for i, s in enumerate(summaries)]
    if len(set(labels)) == len(labels):
        return labels
    names = [Path(d).resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def played_versions(scene: Scene) -> dict[str, int | None]:
    """The acoustics and render versions of the responses a video of ``scene`` plays: its acoustics as baked
    (None where the stage predates the version), rendered by this code."""
    return {"acoustics_version": scene.store.meta("acoustics").get("version"), "render_version": RENDER_VERSION}


def responses_mismatch(run_dir: str, meta: dict, scene: Scene) -> str | None:
    """Why the responses a video of the evaluation in ``run_dir`` (its summary's ``meta``) plays are not those
    its agent heard, naming both versions, or None: the scenes were baked or rendered again since, or the
    summary (of an earlier release) records no versions. An agent that heard nothing (None) is not compared."""
    if hears_nothing(meta):  # random, oracle: the same episode on any responses (also of an earlier release)
        return None
    played = played_versions(scene)
    where = f"the video plays {scene.directory}'s responses of {describe_versions(played)}"
    changes = response_version_changes(meta, played)
    if changes is None:
        return (
            f"{run_dir} was evaluated by an earlier release that did not record the acoustics and render versions "
            f"its agent heard; {where}, which may not be those"
        )
    heard = {key: meta.get(key) for key in RESPONSE_VERSION_KEYS}
    if not changes or all(value is None for value in heard.values()):  # the same, or an agent that hears nothing
        return None
    changed = ", ".join(f"{VERSION_CONSTANTS[key]} {old} -> {new}" for key, old, new in changes)
    return (
        f"{run_dir} was evaluated on responses of {describe_versions(heard)}; {where} ({changed}), not the sound "
        "its agent heard"
    )
