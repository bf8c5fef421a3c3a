"""What a run must pass before anything is baked or trained, and the hold on its run directory.

The checks of a training run (``experiment.run_training`` calls them in order): the DD-PPO ranks run one
config (``check_ranks_agree``); what the config names exists here and fits together (``check_components``,
``check_doa_sensor``); the run directory is made, checked and claimed by rank 0 (``claim_on_rank0``: never a
directory another live run writes, never a previous run's checkpoints overwritten without ``--resume``); and a
resumed run continues with a config its checkpoint allows (``check_resumed_config``). Each failure is a
``ConfigError`` (or ``CheckpointError``) naming the key, raised before a scene is baked.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from asgf_nav.config import ConfigError, ExperimentConfig, config_to_dict, flatten_dotted, import_plugins
from asgf_nav.devices import resolve_device
from asgf_nav.io import dir_creation_problem, exclusive_lock, writable_dir_problem
from asgf_nav.logging_utils import resume_option, shell_command

logger = logging.getLogger(__name__)


def make_named_dir(path: str | Path, key: str, writable: bool = True) -> Path:
    """Create the directory a config key names, before any work is done; one that cannot be created (or,
    with ``writable``, written to) is a ConfigError naming the key."""
    problem = writable_dir_problem(path)
    if problem and (writable or not Path(path).is_dir()):
        raise ConfigError(f"{key}: {problem}")
    return Path(path)


RUN_LOCK = ".run.lock"


RUN_DIRECTORIES = ("checkpoints", "tb")  # what a run writes into its directory, made (or checked) up front


RUN_FILES = ("config.yaml", "train.log", "build_scenes.log")


def check_run_entries(run_dir: Path) -> None:
    """Make the run's subdirectories and refuse a directory where it writes a file: found at the first
    checkpoint instead, the training done until then would be lost."""
    for name in RUN_DIRECTORIES:
        make_named_dir(run_dir / name, "train.run_dir")
    for name in RUN_FILES:
        if (run_dir / name).is_dir():
            raise ConfigError(f"train.run_dir: {run_dir / name} is a directory, where the run writes its {name}")


@contextmanager
def claim_run_dir(run_dir: Path, resume: bool) -> Iterator[None]:
    """Hold the run directory for this run: never one another live run writes, and never a previous run's
    checkpoints to overwrite and prune by accident (they are continued with ``--resume``)."""
    from asgf_nav.rl.checkpoint import BEST_CHECKPOINT, checkpoint_dir, list_checkpoints

    def in_use() -> ConfigError:
        return ConfigError(
            f"train.run_dir: {run_dir} is in use by another training process (it holds {run_dir / RUN_LOCK}); "
            "choose another"
        )

    try:  # TensorBoard writes its event files under UTF-8 names only
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"train.run_dir: {str(run_dir)!r} is no text under this locale's file-system encoding "
            f"({sys.getfilesystemencoding()}), and TensorBoard cannot write its logs there: run with PYTHONUTF8=1 "
            "(or a UTF-8 locale), or choose a run_dir of ASCII characters"
        ) from None
    with exclusive_lock(run_dir / RUN_LOCK, f"run directory {run_dir}", busy=in_use):
        checkpoints = list_checkpoints(run_dir)
        if checkpoints and not resume:
            raise ConfigError(
                f"train.run_dir: {run_dir} already holds a run (latest checkpoint {checkpoints[-1].name}); "
                f"continue it with {resume_option()}, or choose another train.run_dir"
            )
        best = checkpoint_dir(run_dir) / BEST_CHECKPOINT
        if not checkpoints and best.exists():  # a run killed before its first periodic checkpoint
            raise ConfigError(
                f"train.run_dir: {run_dir} holds a previous run's {best.name} (its best validation) but no periodic "
                "checkpoint to continue from; a new run there would overwrite it: move it aside, or choose "
                "another train.run_dir"
            )
        yield


def check_components(cfg: ExperimentConfig) -> None:
    """What the config names exists here and fits together (policy, sensors, image size, device), checked
    before any scene is baked."""
    from asgf_nav.models.encoders import VISUAL_SENSORS, smallest_visual_size
    from asgf_nav.models.policies import policy_class
    from asgf_nav.scenes.soundspaces_import import scene_source
    from asgf_nav.tasks.observations import BUILTIN_SENSORS, check_sensors, registered_observations
    from asgf_nav.tasks.soundspaces_world import check_no_scene_count

    import_plugins(cfg.model.plugins)
    policy = policy_class(cfg.model.policy)
    check_doa_sensor(cfg, registered_observations())
    sensors = check_sensors(cfg.task.sensors)
    missing = [name for name in policy.required_sensors if name not in sensors]
    if missing:
        unknown = [name for name in missing if name not in (*BUILTIN_SENSORS, *registered_observations())]
        hint = f" ({unknown} not registered: see register_observation in docs/task.md)" if unknown else ""
        raise ConfigError(f"task.sensors: policy {cfg.model.policy!r} needs {missing}, got {sensors}{hint}")
    reads = list(dict.fromkeys((*policy.required_sensors, *policy.reads_sensors)))  # what it needs, it reads
    unread = [name for name in sensors if name not in reads]
    if cfg.task.use_doa and "doa" in unread:  # added by task.use_doa itself, not listed by the user
        raise ConfigError(
            f"task.use_doa: policy {cfg.model.policy!r} does not read the DoA head's 'doa' observation (it reads "
            f"{reads}); set task.use_doa=false, or use a policy that reads it"
        )
    if unread:  # computed every step and ignored: the run would be labelled with an input it never used
        raise ConfigError(
            f"task.sensors: policy {cfg.model.policy!r} does not read {unread} (it reads {reads}); remove them, "
            "or use a policy that reads them"
        )
    embedded = scene_source(cfg) == "embedded"
    if not embedded:
        check_no_scene_count(cfg)
    problem = embedded and dir_creation_problem(Path(cfg.scenes.data_root) / "scenes" / cfg.scenes.dataset)
    if problem:  # found before the run directory is made and claimed; nothing is created yet
        raise ConfigError(f"scenes.data_root: {problem}")
    smallest = smallest_visual_size()
    visual = any(name in VISUAL_SENSORS for name in sensors)
    if visual and cfg.scenes.image_size < smallest and embedded:
        raise ConfigError(
            f"scenes.image_size: {cfg.scenes.image_size} px is too small for the policies' visual CNN (>= {smallest})"
        )
    resolve_device(cfg.train.device)
    store = str(cfg.task.spectrogram_store or "")
    if store not in ("", "auto") and not Path(store).is_dir():  # a mistyped path: a baked store unused, silently
        config = Path(cfg.train.run_dir) / "config.yaml"
        logger.warning(
            "task.spectrogram_store: %s is no directory, so every spectrogram is computed; bake it with %s (the "
            "run's config.yaml: its data root and acoustics are the store's)",
            store,
            shell_command("python", "scripts/bake_spectrograms.py", "--config", config, "--out", store),
        )


def check_doa_sensor(cfg: ExperimentConfig, registered: list[str]) -> None:
    """``task.sensors`` and ``task.use_doa`` agree about the ``doa`` observation.

    Only ``task.use_doa=true`` registers the DoA head (:func:`register_auxiliary_observations`, which also
    appends "doa" to the sensors), so a "doa" sensor without it would otherwise be reported as an unknown
    observation (or, with the head registered by hand, computed and ignored: the policies build their DoA
    input only with the flag), and a DoA flag without the sensor as a policy that silently trains without DoA.
    """
    if cfg.task.use_doa and ("doa" not in registered or "doa" not in cfg.task.sensors):
        raise ConfigError(
            "task.use_doa=true but the 'doa' observation is not set up: register_auxiliary_observations(cfg) "
            "registers the DoA head and adds 'doa' to task.sensors, and must run first"
        )
    if not cfg.task.use_doa and "doa" in cfg.task.sensors:  # also when a notebook registered the head itself
        without = ",".join(sensor for sensor in cfg.task.sensors if sensor != "doa")
        raise ConfigError(
            f"task.sensors: {cfg.task.sensors} lists 'doa', the DoA head's observation, which only "
            "task.use_doa=true provides (it registers the head and adds 'doa' to task.sensors itself); "
            "set task.use_doa=true instead of listing 'doa'. A run trained with the head lists it in its "
            f"config.yaml: to go without, add {shell_command(f'task.sensors=[{without}]')} to task.use_doa=false"
        )


def check_resumed_config(cfg: ExperimentConfig, run_dir: Path, is_main: bool = True) -> None:
    """Refuse (CheckpointError naming the keys) to continue the newest checkpoint of ``run_dir`` with a
    config that changes the experiment or on responses of other acoustics or render versions, and say which
    settings of how it runs change; the trainer checks again when it restores the checkpoint. Called before
    any scene is baked: a new acoustics version would bake the run's scenes again in place."""
    from asgf_nav.rl.checkpoint import (
        check_resume_config,
        check_same_responses,
        describe_versions,
        load_latest,
        newest_checkpoint,
        response_version_changes,
        response_versions,
        resumable_changes,
    )

    state = load_latest(run_dir, map_location="cpu")
    if state is None:
        return
    check_resume_config(state, config_to_dict(cfg), run_dir)
    versions = response_versions(cfg)
    check_same_responses(state, versions, run_dir)
    if response_version_changes(state, versions) is None and versions["acoustics_version"] is not None and is_main:
        logger.warning(
            "checkpoint %s was written by an earlier release that did not record the acoustics and render versions "
            "it trained on, so it cannot be told whether the responses this code makes (%s) are those; a run "
            "trained before an acoustics or render version change goes on with other sound",
            newest_checkpoint(run_dir),
            describe_versions(versions),
        )
    changed = resumable_changes(state["config"], config_to_dict(cfg))
    if changed and is_main:
        logger.warning(
            "resuming with other settings than the checkpoint was saved with (allowed: they do not change the "
            "experiment): %s",
            ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed),
        )


# what may differ between DD-PPO ranks: where each node keeps its files and how it runs (another mount of the
# same data, the device name that resolves to its own GPU, its own thread counts)
RANK_LOCAL_KEYS = frozenset({
    "scenes.data_root", "scenes.soundspaces_root", "scenes.workers", "train.run_dir", "train.device",
    "train.torch_threads",
})  # fmt: skip


def check_ranks_agree(cfg: ExperimentConfig, device: Any) -> None:
    """Every DD-PPO rank runs rank 0's config: ranks started by hand (or on several nodes) with other arguments
    would average gradients of other experiments, or wait for each other forever. Every rank stops together,
    each naming the keys its own config differs in."""
    from asgf_nav.rl.distributed import any_rank, rank, rank0_object, world_size

    if world_size() == 1:
        return
    mine = flatten_dotted(config_to_dict(cfg))
    theirs = rank0_object(mine)  # a collective: every rank takes part
    keys = (mine.keys() | theirs.keys()) - RANK_LOCAL_KEYS
    differ = sorted(key for key in keys if mine.get(key) != theirs.get(key))
    if any_rank(bool(differ), device):
        where = f"rank {rank()} differs from rank 0 in {differ}" if differ else "another rank's message names the keys"
        raise ConfigError(f"the DD-PPO ranks were started with different configs ({where}); start them alike")


def claim_on_rank0(held: ExitStack, run_dir: Path, resume: bool, is_main: bool) -> None:
    """Rank 0 makes, checks and claims the run directory (held until ``held`` closes). Every rank meets it
    afterwards, so when rank 0 refuses, every rank stops with its message, not with a gloo error."""
    from asgf_nav.rl.distributed import rank0_error

    refused = None
    if is_main:
        try:
            make_named_dir(run_dir, "train.run_dir")
            check_run_entries(run_dir)
            held.enter_context(claim_run_dir(run_dir, resume))
        except Exception as exc:  # noqa: BLE001 - re-raised below, once the other ranks have its message
            refused = exc
    message = rank0_error(refused)
    if refused is not None:
        raise refused
    if message is not None:
        raise ConfigError(f"{message} (found by rank 0)")
