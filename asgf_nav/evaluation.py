"""The evaluation job wired end to end: a checkpoint or a baseline -> task data -> agent -> episodes -> outputs.

Orchestration, as ``experiment.py`` is for training: it may use every layer and ``baselines``, and no layer
imports it. ``scripts/evaluate.py`` parses the command line into an :class:`EvaluationRequest` and calls
:func:`run_evaluation`. Finished episodes are saved as they end, so the same request resumes a killed
evaluation (not once the checkpoint holds another update, nor with other task limits, data or episodes, nor
the random agent with another ``num_envs``, which its draws depend on, nor once the embedded scenes' acoustics
were baked or rendered at another version: :data:`ACOUSTICS_VERSION`, :data:`RENDER_VERSION`). A checkpoint's
summary also records the versions it was trained at, and a checkpoint evaluated at others is warned about.
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
from asgf_nav.acoustics.rir import RENDER_VERSION
from asgf_nav.config import ExperimentConfig, import_plugins
from asgf_nav.devices import resolve_device
from asgf_nav.eval.evaluator import config_for_checkpoint, load_policy_agent, run_episodes, select_episodes
from asgf_nav.eval.progress import EvaluationProgress, evaluation_lock
from asgf_nav.eval.report import summary_markdown, write_evaluation
from asgf_nav.experiment import register_auxiliary_observations
from asgf_nav.io import code_version, file_identity
from asgf_nav.rl.checkpoint import RESPONSE_VERSION_KEYS, policy_digest, warn_if_trained_at_other_versions
from asgf_nav.rl.rng import capture_rng_state, restore_rng_state
from asgf_nav.scenes.soundspaces import silenced_rir_files
from asgf_nav.scenes.soundspaces_import import scene_source
from asgf_nav.tasks.episodes import episodes_fingerprint
from asgf_nav.tasks.factory import load_task_data, spectrogram_store_root
from asgf_nav.tasks.observations import restored_observations
from asgf_nav.tasks.spectrogram import spectrogram_shape
from baselines import AUDIO_MODEL_BASELINES, audio_model_path, baseline_sensors, make_baseline

logger = logging.getLogger("evaluate")

# task settings that change an episode's outcome (the step limit, the success radius, what the agent hears)
OUTCOME_TASK_KEYS: tuple[str, ...] = ("max_steps", "success_distance", "use_doa", "doa_checkpoint", "keep_travel_time")
# baselines whose draws depend on how many episodes are stepped together: the random agent draws a batch of
# actions per step from one stream, so another --num-envs gives other episodes. A checkpoint draws each episode
# from a stream of its own (the same episodes whatever --num-envs) and the other baselines draw nothing.
BATCH_DRAWN_AGENTS: tuple[str, ...] = ("random",)


def name_problem(name: str | None) -> str | None:
    """Why ``name`` cannot label an evaluation, or None: it begins the name of a directory under --out
    (``{name}_{dataset}_{sound_split}_{split}``), so only a path separator (``--name ../elsewhere``) would write
    the outputs outside --out, and a NUL byte names no file; dots are part of a plain label ("v1..v2")."""
    if name is None:
        return None
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if any(sep in name for sep in separators) or "\0" in name:
        return (
            f"--name {name!r} holds a path separator or a NUL byte; it labels the agent and begins the name of a "
            "directory under --out, so give a plain label (e.g. asgf_compact) and choose the parent directory "
            "with --out"
        )
    return None


@dataclass(frozen=True)
class EvaluationRequest:
    """Who is evaluated on what: a checkpoint (``checkpoint``) or a baseline (``agent``), never both."""

    split: str = "test"
    checkpoint: str | None = None  # the path, recorded in the outputs (the loaded state is passed separately)
    agent: str | None = None  # a baseline of baselines.BASELINES
    episodes: int | None = None  # evenly spaced episodes of the split (None: all)
    scenes: tuple[str, ...] | None = None  # restrict to these scenes of the split
    deterministic: bool = False  # the policy takes its most likely action
    num_envs: int = 8  # episodes stepped together
    device: str = "cpu"
    out: str = "runs/eval"  # parent directory of the outputs
    name: str | None = None  # the agent's label in outputs and tables
    baseline_model: str | None = None  # audio model of direction_follower / gan (default under the data root)
    random_stop: str = "goal"  # the random agent's STOP rule
    seed: int = 0  # the random baseline's seed (a checkpoint samples with train.seed)
    command: str = ""  # the command line, recorded in the summary
    config: str | None = None  # the config file (or packaged config name) loaded: named in a re-bake command

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.agent is None):
            raise ValueError("an evaluation names either a checkpoint or a baseline agent, exactly one")
        problem = name_problem(self.name)
        if problem:
            raise ValueError(problem)


def checkpoint_path(request: EvaluationRequest) -> str | None:
    """The checkpoint file as an absolute path without symlinks: a path typed relative to the run directory
    and the same file's absolute path are one evaluation, and the summary names the file from anywhere."""
    return str(Path(request.checkpoint).resolve()) if request.checkpoint else None


def build_agent(request: EvaluationRequest, cfg: ExperimentConfig, world: Any, checkpoint: dict | None) -> Any:
    """The baseline named by ``request.agent``, or the policy of the loaded checkpoint with the config's sensors."""
    if request.agent:  # an audio model trained on spectrograms of another shape is refused
        return make_baseline(
            request.agent, cfg, request.baseline_model, seed=request.seed, random_stop_rule=request.random_stop,
            spectrogram_shape=spectrogram_shape(world.sample_rate),
        )  # fmt: skip
    from asgf_nav.tasks.audionav_env import observation_space_for

    register_auxiliary_observations(cfg)  # the checkpoint's own DoA head, when it was trained with one
    space = observation_space_for(world, list(cfg.task.sensors))
    return load_policy_agent(
        cfg, checkpoint, space, request.deterministic, request.device, seed=cfg.train.seed, source=request.checkpoint
    )


def audio_model_identity(cfg: ExperimentConfig, baseline_model: str | None) -> dict[str, str]:
    """Path and content digest of the audio model a baseline evaluates with."""
    return file_identity(audio_model_path(cfg, baseline_model))


def doa_head_identity(cfg: ExperimentConfig, checkpoint: dict | None) -> dict[str, str] | None:
    """Path and digest of the DoA head the agent observes through (None without one); a checkpoint trained
    with other weights at that path is evaluated with a warning, as the policy's input has changed."""
    if not cfg.task.use_doa:
        return None
    from asgf_nav.models.doa.observation import head_identity

    head = head_identity(cfg.task.doa_checkpoint)
    trained = (checkpoint or {}).get("doa_head")
    if trained and trained.get("sha256") != head["sha256"]:
        logger.warning(
            "the checkpoint was trained with the DoA head %s of digest %s; %s now holds digest %s, which its "
            "policy now observes through",
            trained.get("path"),
            trained.get("sha256"),
            head["path"],
            head["sha256"],
        )
    return head


def split_config(
    request: EvaluationRequest, cfg: ExperimentConfig, sound_split: str, checkpoint: dict | None
) -> ExperimentConfig:
    """The config one sound split is evaluated with: the checkpoint's, or the baseline's sensors."""
    cfg = config_for_checkpoint(cfg, checkpoint) if checkpoint else copy.deepcopy(cfg)
    cfg.task.sound_split = sound_split
    if request.agent:  # a baseline needs (baked) only what it reads: no RGB-D views for an audio-only bake
        cfg.task.sensors = list(baseline_sensors(request.agent))
    return cfg


def agent_label(request: EvaluationRequest, cfg: ExperimentConfig) -> str:
    """The agent's name in output directories and tables: ``name``, else the baseline or the policy."""
    label = request.name or (request.agent if request.agent else cfg.model.policy)
    if request.agent == "random" and request.random_stop != "goal":
        label = f"{label}_{request.random_stop}_stop"
    return label


def output_dir(request: EvaluationRequest, cfg: ExperimentConfig) -> Path:
    """Where one sound split's evaluation is written (``cfg`` from :func:`split_config`)."""
    dataset, sound_split = cfg.scenes.dataset, cfg.task.sound_split
    return Path(request.out) / f"{agent_label(request, cfg)}_{dataset}_{sound_split}_{request.split}"


def hears_audio(request: EvaluationRequest) -> bool:
    """A checkpoint's policy and the baselines that read the spectrogram; not the random and oracle agents."""
    return not request.agent or bool(baseline_sensors(request.agent))


def evaluation_identity(
    request: EvaluationRequest, cfg: ExperimentConfig, checkpoint: dict | None, episodes: list[Any]
) -> dict[str, Any]:
    """What one sound split's evaluation is of (``cfg`` from :func:`split_config`): a resume or a rerun into its
    directory with anything different is refused (:class:`EvaluationProgress`), the keys that differ named."""
    identity = {
        "agent": agent_label(request, cfg), "dataset": cfg.scenes.dataset, "sound_split": cfg.task.sound_split,
        "split": request.split, "checkpoint": checkpoint_path(request), "deterministic": request.deterministic,
        # best.pt is rewritten while training goes on, and a run directory retrained keeps its file names:
        # a resume must not mix two checkpoints' episodes
        "checkpoint_update": int(checkpoint["update"]) if checkpoint else None,
        "checkpoint_weights": policy_digest(checkpoint) if checkpoint else None,
        "seed": request.seed if request.agent else cfg.train.seed, "episode_list": episodes_fingerprint(episodes),
        # another audio model is another agent: its episodes must not be mixed with these, nor replace them
        "audio_model": (
            audio_model_identity(cfg, request.baseline_model) if request.agent in AUDIO_MODEL_BASELINES else None
        ),
        # the same episodes under another step limit or success radius, or in other scenes, score otherwise
        "task": {key: getattr(cfg.task, key) for key in OUTCOME_TASK_KEYS},
        # the head's weights, not only its path: the file at that path may hold another head since
        "doa_head": None if request.agent else doa_head_identity(cfg, checkpoint),
        "data_root": str(Path(cfg.scenes.data_root).resolve()),
        # node indices are those of this source's graphs: a generated scene and the imported SoundSpaces
        # scene of the same name number their nodes differently (read by visualize_trajectories.py)
        "scene_source": scene_source(cfg),
    }  # fmt: skip
    if identity["scene_source"] == "embedded":  # the responses heard (report.ACOUSTICS_META_KEYS): a re-bake or
        # another renderer changes them; SoundSpaces data brings its own responses. None for an agent that hears
        # nothing (random, oracle): its episodes are the same on any responses, and compared on none
        identity["acoustics_version"] = ACOUSTICS_VERSION if hears_audio(request) else None
        identity["render_version"] = RENDER_VERSION if hears_audio(request) else None
    if identity["scene_source"] == "soundspaces":  # silence for a missing RIR file changes what the episodes hear:
        # a resume under the other policy is refused, naming it (a progress file of an earlier release lacks it)
        identity["rir_on_missing"] = cfg.scenes.rir_on_missing
    # what the checkpoint was trained on is not part of the identity: its weights' digest already is
    if request.agent in BATCH_DRAWN_AGENTS:  # only where the draws depend on it: no other result is refused
        identity["num_envs"] = request.num_envs
    return identity


def unread_task_keys(request: EvaluationRequest, cfg: ExperimentConfig) -> tuple[str, ...]:
    """The recorded task keys (``OUTCOME_TASK_KEYS``) that change none of this agent's episodes, so a rerun or
    resume that sets them otherwise is the same evaluation: a baseline reads no DoA head, and an agent that
    hears nothing, or SoundSpaces responses (read as given), hear no travel time."""
    unread = ("use_doa", "doa_checkpoint") if request.agent else ()
    if not hears_audio(request) or scene_source(cfg) == "soundspaces":
        unread += ("keep_travel_time",)
    return unread


def trained_versions(checkpoint: dict | None) -> dict[str, Any]:
    """The acoustics and render versions a checkpoint was trained at, as ``trained_acoustics_version`` and
    ``trained_render_version`` for its summary beside the versions it is evaluated at (None where it recorded
    none: an earlier release, or SoundSpaces data); nothing for a baseline."""
    if checkpoint is None:
        return {}
    return {f"trained_{key}": checkpoint.get(key) for key in RESPONSE_VERSION_KEYS}


def warn_if_trained_on_other_responses(request: EvaluationRequest, checkpoint: dict | None, identity: dict) -> None:
    """Say when a checkpoint is evaluated on embedded scenes' responses of other acoustics or render versions
    than it was trained on (the code was updated since), or when it cannot tell (a checkpoint of an earlier
    release): its figures are then not those it gave, nor those of a policy trained on these responses."""
    if checkpoint is None:  # a baseline: an audio model's load warns of its own versions
        return
    warn_if_trained_at_other_versions(
        f"checkpoint {request.checkpoint}",
        checkpoint,
        {key: identity.get(key) for key in RESPONSE_VERSION_KEYS},
        "its figures may differ from those it gave then, and from a policy trained on these responses",
        logger,
    )


@dataclass
class SplitEvaluation:
    """One sound split made ready to run: its episodes, what it evaluates (checked against its directory), and
    the world and agent to run it with until it has run."""

    cfg: ExperimentConfig
    out: Path
    episodes: list[Any]
    identity: dict[str, Any]
    progress: EvaluationProgress
    world: Any
    agent: Any
    checkpoint: dict | None = None  # the evaluated checkpoint (None: a baseline), for what it was trained on


def prepare_split(request: EvaluationRequest, cfg: ExperimentConfig, checkpoint: dict | None) -> SplitEvaluation:
    """Load one sound split (``cfg`` from :func:`split_config`), build its agent and open its progress file,
    which refuses a directory holding an evaluation of something else: done for every split before any runs."""
    world, episodes = load_task_data(cfg, request.split, list(request.scenes) if request.scenes else None)
    if request.episodes is not None and request.episodes > len(episodes):  # else only the summary's count would tell
        logger.warning(
            "--episodes %d asks for more episodes than the %s split holds for %s sounds%s (%d); evaluating all %d",
            request.episodes, request.split, cfg.task.sound_split,
            f" in scenes {', '.join(request.scenes)}" if request.scenes else "", len(episodes), len(episodes),
        )  # fmt: skip
    episodes = select_episodes(episodes, request.episodes)
    agent = build_agent(request, cfg, world, checkpoint)
    out = output_dir(request, cfg)
    identity = evaluation_identity(request, cfg, checkpoint, episodes)
    # a killed evaluation resumes with the episodes it finished
    progress = EvaluationProgress(out, identity, unread_task_keys=unread_task_keys(request, cfg))
    return SplitEvaluation(cfg, out, episodes, identity, progress, world, agent, checkpoint)


def run_split(request: EvaluationRequest, split: SplitEvaluation) -> Path:
    """Run the episodes a prepared split has not finished and write its outputs; the caller holds the output
    directory's lock and removes the progress file (``finish``) once every split is written, so that a stopped
    evaluation of both sound splits reruns none of a finished one."""
    cfg, progress, world = split.cfg, split.progress, split.world
    scenes = list(getattr(world, "scenes", {}).values())

    def save(record: Any) -> None:  # with the RIR files this split's world read as silence so far
        progress.add(record, silenced_rir_files(scenes))

    remaining = progress.remaining(split.episodes)
    if remaining:
        run_episodes(split.agent, world, remaining, cfg, num_envs=request.num_envs, device=request.device,
                     on_record=save, spectrogram_store=spectrogram_store_root(cfg), split=request.split,
                     config_path=request.config)  # fmt: skip
    # this split's own world's (every file it read while evaluating, for an env past its share of episodes too,
    # and those listed by the spectrogram store files it opened), saved by the processes before a resume too:
    # not the process-wide count, which holds the files an earlier split of this process heard as silence
    silenced = progress.silenced_files(silenced_rir_files(scenes))
    split.world = split.agent = None  # not held while the next split runs
    records = progress.records(split.episodes)
    meta = {
        **split.identity, "episodes_requested": request.episodes, "scenes": sorted({r.scene for r in records}),
        "command": request.command, "code": code_version(), **trained_versions(split.checkpoint),
    }  # fmt: skip
    if split.identity["scene_source"] == "soundspaces":  # results heard with silence where RIRs were bad say so
        meta["rir_on_missing"] = cfg.scenes.rir_on_missing  # the identity's, which a resume cannot change
        meta["rirs_replaced_by_silence"] = {label: len(files) for label, files in sorted(silenced.items())}
        if progress.silence_unrecorded:  # a lower bound, whatever this process's policy: an earlier release's
            meta["rirs_replaced_by_silence_partial"] = True  # progress file recorded neither files nor policy
    summary = write_evaluation(split.out, records, meta)
    print(summary_markdown(summary))
    return split.out


def run_evaluation(
    request: EvaluationRequest, cfg: ExperimentConfig, checkpoint: dict | None, sound_splits: list[str]
) -> list[Path]:
    """Evaluate each sound split in turn and return their output directories. Every split's directory is
    locked before any task data loads, until all are written, and checked against what it holds before any
    episode runs (a conflict in the second split must not cost the hours of the first, nor its earlier
    results); the progress files go only once all are written. The checkpoint's DoA head is registered only
    while it runs: a later env in the same process (a notebook) must not find it. The random generators are given
    back as they were: building the policy draws its initial weights before the checkpoint's replace them."""
    configs = [split_config(request, cfg, sound_split, checkpoint) for sound_split in sound_splits]
    code_version()  # recorded as the code of this process now, not of a checkout changed while it runs
    device = resolve_device(request.device, key="device")
    with ExitStack() as held:
        held.callback(restore_rng_state, capture_rng_state(device), device)
        for split_cfg in configs:  # before the registry is saved: a plugin's providers stay, as its module stays
            import_plugins(split_cfg.model.plugins)  # imported (a later run in this process would not find them)
        held.enter_context(restored_observations())
        for split_cfg in configs:
            held.enter_context(evaluation_lock(output_dir(request, split_cfg)))
        # the worlds are memory-mapped stores, and a split's world and agent are dropped once it has run
        splits: list[SplitEvaluation] = []
        try:
            for split_cfg in configs:
                splits.append(prepare_split(request, split_cfg, checkpoint))
        except BaseException:  # refused before any episode ran: no progress file of this run stays behind
            for split in splits:
                split.progress.discard()
            raise
        warn_if_trained_on_other_responses(request, checkpoint, splits[0].identity)  # once, before any episode
        written = []
        for split in splits:
            written.append(run_split(request, split))
            logger.info("evaluation written to %s", split.out)
        for split in splits:
            split.progress.finish()
    return written
