"""The evaluation job wired end to end: a checkpoint or a baseline -> task data -> agent -> episodes -> outputs.

Orchestration, as ``experiment.py`` is for training: it may use every layer and ``baselines``, and no layer
imports it. ``scripts/evaluate.py`` parses the command line into an :class:`EvaluationRequest` and calls
:func:`run_evaluation`. Finished episodes are saved as they end, so the same request resumes a killed
evaluation (not once the checkpoint holds another update, nor with other task limits, data or episodes).
"""

from __future__ import annotations

import copy
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgf_nav.config import ExperimentConfig
from asgf_nav.eval.evaluator import config_for_checkpoint, load_policy_agent, run_episodes, select_episodes
from asgf_nav.eval.progress import EvaluationProgress, evaluation_lock
from asgf_nav.eval.report import summary_markdown, write_evaluation
from asgf_nav.experiment import register_auxiliary_observations
from asgf_nav.io import code_version, file_identity
from asgf_nav.rl.checkpoint import policy_digest
from asgf_nav.scenes.soundspaces_import import scene_source
from asgf_nav.tasks.episodes import episodes_fingerprint
from asgf_nav.tasks.factory import load_task_data, spectrogram_store_root
from asgf_nav.tasks.spectrogram import spectrogram_shape
from baselines import AUDIO_MODEL_BASELINES, audio_model_path, baseline_sensors, make_baseline

logger = logging.getLogger("evaluate")

# task settings that change an episode's outcome (the step limit, the success radius, what the agent hears)
OUTCOME_TASK_KEYS: tuple[str, ...] = ("max_steps", "success_distance", "use_doa", "doa_checkpoint", "keep_travel_time")


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

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.agent is None):
            raise ValueError("an evaluation names either a checkpoint or a baseline agent, exactly one")


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
            "the checkpoint was trained with the DoA head %s of digest %s; %s now holds digest %s, which this "
            "evaluation uses",
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


def evaluate_one(
    request: EvaluationRequest, cfg: ExperimentConfig, checkpoint: dict | None
) -> tuple[Path, EvaluationProgress]:
    """Evaluate one sound split (``cfg`` from :func:`split_config`) and write its outputs; the caller holds
    the output directory's lock and removes the progress file (``finish``) once every split is written, so
    that a stopped evaluation of both sound splits reruns none of a finished one."""
    world, episodes = load_task_data(cfg, request.split, list(request.scenes) if request.scenes else None)
    episodes = select_episodes(episodes, request.episodes)
    agent = build_agent(request, cfg, world, checkpoint)
    out = output_dir(request, cfg)
    identity = {
        "agent": agent_label(request, cfg), "dataset": cfg.scenes.dataset, "sound_split": cfg.task.sound_split,
        "split": request.split, "checkpoint": request.checkpoint, "deterministic": request.deterministic,
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
    progress = EvaluationProgress(out, identity)  # a killed evaluation resumes with the episodes it finished
    remaining = progress.remaining(episodes)
    if remaining:
        run_episodes(agent, world, remaining, cfg, num_envs=request.num_envs, device=request.device,
                     on_record=progress.add, spectrogram_store=spectrogram_store_root(cfg))  # fmt: skip
    records = progress.records(episodes)
    meta = {
        **identity, "episodes_requested": request.episodes, "scenes": sorted({r.scene for r in records}),
        "command": request.command, "code": code_version(),
    }  # fmt: skip
    if identity["scene_source"] == "soundspaces":  # results heard with silence where RIRs were bad say so
        from asgf_nav.scenes.soundspaces import silence_fallback_summary

        meta["rir_on_missing"] = cfg.scenes.rir_on_missing
        meta["rirs_replaced_by_silence"] = silence_fallback_summary()  # distinct files, this process
    summary = write_evaluation(out, records, meta)
    print(summary_markdown(summary))
    return out, progress


def run_evaluation(
    request: EvaluationRequest, cfg: ExperimentConfig, checkpoint: dict | None, sound_splits: list[str]
) -> list[Path]:
    """Evaluate each sound split in turn and return their output directories. Every split's directory is
    locked before any task data loads, until all are written; the progress files go only then."""
    configs = [split_config(request, cfg, sound_split, checkpoint) for sound_split in sound_splits]
    code_version()  # recorded as the code of this process now, not of a checkout changed while it runs
    with ExitStack() as held:
        for split_cfg in configs:
            held.enter_context(evaluation_lock(output_dir(request, split_cfg)))
        written, finished = [], []
        for split_cfg in configs:
            out, progress = evaluate_one(request, split_cfg, checkpoint)
            written.append(out)
            finished.append(progress)
            logger.info("evaluation written to %s", out)
        for progress in finished:
            progress.finish()
    return written
