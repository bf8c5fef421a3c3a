"""The main job, wired end to end: config -> scenes -> environments -> policy -> PPO trainer.

Orchestration lives here, with the checks that must pass before anything is baked (components, sensors,
DD-PPO ranks, the run directory and its lock, torch threads); each step of the job is one call into the
package that owns it. On the embedded
scene set the smallest training scene is baked first (all cores), training starts on it, and the other
scenes bake in a background process and join the training pool as they complete.

Read ``run_training`` first: it checks the components, claims the run directory and hands over to
``train_in_claimed_run_dir``, which resolves the data paths and calls ``bake_scenes_and_train``: the job itself
in thirty lines (bake, build the ``Trainer`` with ``make_rank_env`` as its env factory, train).

The package's layers are imported inside the functions that use them, so that
importing this module stays cheap: ``scripts/train_ppo.py`` imports it before it parses its arguments, and
``--help`` or a bad flag should not wait for torch.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from asgf_nav.config import (
    ConfigError,
    ExperimentConfig,
    check_values,
    config_to_dict,
    flatten_dotted,
    import_plugins,
    save_config,
)
from asgf_nav.devices import omp_thread_cap, resolve_device, usable_cpus
from asgf_nav.errors import UserInputError
from asgf_nav.io import dir_creation_problem, exclusive_lock, writable_dir_problem
from asgf_nav.logging_utils import logging_scope, record_in_log_files, resume_option, setup_logging, shell_command
from asgf_nav.termination import stop_handling

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


def make_rank_env(cfg: ExperimentConfig, split: str, rank: int, pool: Any | None = None) -> Any:
    """Batched env of one DD-PPO rank: its own share of the (baked, or downloaded SoundSpaces) training scenes
    and its own seed, so that each rank holds only its share's views and RIR caches. Only
    rank 0 validates, so a val env draws on every baked val scene: it holds ``train.val_episodes`` episodes
    spaced evenly over the val split (evaluation's selection, so each scene counts in proportion and every
    validation runs the same ones), which its sequential stride runs once. The run's ``config.yaml`` (every
    override resolved) is the config a stale spectrogram store file's re-bake command names."""
    from asgf_nav.eval.evaluator import select_episodes
    from asgf_nav.rl.distributed import world_size
    from asgf_nav.scenes.background import ScenesNotReadyError
    from asgf_nav.scenes.soundspaces_import import scene_source
    from asgf_nav.tasks.factory import load_task_data, make_env
    from asgf_nav.tasks.soundspaces_world import soundspaces_split_scenes

    scenes = None
    ranks = world_size()
    if pool is not None:
        scenes = pool.ready(split)
        if not scenes:
            raise ScenesNotReadyError(f"no {split} scene of {cfg.scenes.dataset} is baked yet")
    elif split == "train" and ranks > 1 and scene_source(cfg) == "soundspaces":  # every downloaded scene is ready
        scenes = soundspaces_split_scenes(cfg, split)
    if split == "train" and scenes is not None and len(scenes) >= ranks:
        scenes = scenes[rank::ranks]
    seed = cfg.train.seed + 1000 * rank
    config_path = Path(cfg.train.run_dir) / "config.yaml"  # written before any env is made (save_config)
    if split != "val":
        return make_env(cfg, split, device=cfg.train.device, scenes=scenes, seed=seed, config_path=config_path)
    world, episodes = load_task_data(cfg, split, scenes)
    chosen = select_episodes(episodes, int(cfg.train.val_episodes))
    if len(chosen) < int(cfg.train.val_episodes):  # the interval of the validation's figures is wider than asked
        logger.warning(
            "validation runs %d episodes, not train.val_episodes=%d: the %d val scene(s) ready hold no more "
            "(embedded scenes hold task.val_episodes=%d over the whole val split)",
            len(chosen), cfg.train.val_episodes, len(world.scenes), cfg.task.val_episodes,
        )  # fmt: skip
    return make_env(
        cfg, split, device=cfg.train.device, seed=seed, world=world, episodes=chosen, config_path=config_path
    )


def scene_pool(cfg: ExperimentConfig, run_dir: Path) -> Any | None:
    """The pool of baked embedded scenes the run trains on (nothing bakes yet); None for SoundSpaces data."""
    from asgf_nav.scenes.soundspaces_import import scene_source

    if scene_source(cfg) == "soundspaces":
        return None
    from asgf_nav.scenes.background import ScenePool

    # the core left to the builder while it bakes comes back to training when it ends
    return ScenePool(
        cfg, cfg.scenes.dataset, log_file=run_dir / "build_scenes.log",
        on_build_end=partial(set_torch_threads, cfg, background_build=False, warn=False),  # warned at the start
    )  # fmt: skip


def prepare_scenes(cfg: ExperimentConfig, pool: Any | None, is_main: bool) -> None:
    """Say which data the run uses; for embedded scenes bake the first one and start the rest in background
    (the caller stops ``pool``'s build however this ends)."""
    if pool is None:
        from asgf_nav.scenes.soundspaces_import import soundspaces_root
        from asgf_nav.tasks.factory import load_task_data

        logger.info("dataset: SoundSpaces %s data under %s", cfg.scenes.dataset, soundspaces_root(cfg))
        if is_main and cfg.train.val_interval > 0:  # damaged val data found now, not at the first validation
            load_task_data(cfg, "val")
        return

    from asgf_nav.rl.distributed import barrier
    from asgf_nav.scenes.background import quick_start_order
    from asgf_nav.scenes.build import build_scenes, refuse_unbakeable

    if is_main:  # baked scenes may sit on a read-only share; only a bake needs to write there
        make_named_dir(Path(cfg.scenes.data_root) / "scenes" / cfg.scenes.dataset, "scenes.data_root", writable=False)
    train = quick_start_order(cfg.scenes.dataset, pool.split_scenes("train"))
    logger.info(
        "dataset: embedded %s scene set (%d train / %d val / %d test scenes) under %s/scenes/%s",
        cfg.scenes.dataset, len(train), len(pool.split_scenes("val")), len(pool.split_scenes("test")),
        cfg.scenes.data_root, cfg.scenes.dataset,
    )  # fmt: skip
    if is_main:  # every layout first (seconds): distance bounds that leave a scene no episode stop the run now
        from asgf_nav.scenes.store import scene_dir
        from asgf_nav.tasks.episodes import check_distance_bounds

        every = [name for split in ("train", "val", "test") for name in pool.split_scenes(split)]
        # a read-only data root lacking a stage of any scene is refused now, not when the background build gets there
        refuse_unbakeable(cfg, cfg.scenes.dataset, every, pool.stages)
        build_scenes(cfg, cfg.scenes.dataset, every, stages=("layout",), workers=cfg.scenes.workers)
        check_distance_bounds(cfg, [scene_dir(cfg.scenes.data_root, cfg.scenes.dataset, name) for name in every])
        if "acoustics" in pool.stages:  # a response too short for a scene stops the run now, not its build later
            from asgf_nav.acoustics.bake import check_scene_response_length

            for name in every:
                check_scene_response_length(scene_dir(cfg.scenes.data_root, cfg.scenes.dataset, name), cfg)
        if not pool.ready("train"):
            logger.info("baking the first training scene (%s) before training starts", train[0])
            build_scenes(cfg, cfg.scenes.dataset, [train[0]], stages=pool.stages, workers=cfg.scenes.workers)
        later = train + quick_start_order(cfg.scenes.dataset, pool.split_scenes("val"))
        later += quick_start_order(cfg.scenes.dataset, pool.split_scenes("test"))
        pool.start_background_build(later)
    barrier()
    pool.changed("train")
    pool.changed("val")


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


def set_torch_threads(cfg: ExperimentConfig, background_build: bool, warn: bool = True) -> None:
    """``train.torch_threads`` or, when 0, this rank's share of the usable cores (the process's affinity:
    taskset, Slurm) less one for background baking, and no more than ``OMP_NUM_THREADS`` when it is set.

    Oversubscribed intra-op threads make small CPU models several times slower, so never exceed the cores;
    an explicit count above them is kept, with a warning (once: ``warn``, and on rank 0 only).
    """
    import torch

    from asgf_nav.rl.distributed import is_main_process, world_size

    threads, share = cfg.train.torch_threads, max(1, usable_cpus() // world_size())  # this rank's cores
    if threads <= 0:
        threads = max(1, share - (1 if background_build else 0))
        cap = omp_thread_cap()  # the user's cap on this process's threads
        if cap is not None and cap < threads and world_size() > 1 and warn and is_main_process():
            logger.warning(  # torchrun sets OMP_NUM_THREADS=1 itself where it is unset, which cannot be told apart
                "OMP_NUM_THREADS=%d keeps each rank at %d torch thread(s) though it has %d usable core(s) (torchrun "
                "sets OMP_NUM_THREADS=1 where it is unset); export OMP_NUM_THREADS=%d before torchrun or set "
                "train.torch_threads (train.torch_threads=%d keeps this count and silences this warning)",
                cap, cap, share, threads, cap,
            )  # fmt: skip
        threads = min(threads, cap or threads)
    elif threads > share and warn and is_main_process():  # kept as asked (a benchmark may want it), rarely meant
        logger.warning(
            "train.torch_threads=%d is more than the %d usable core(s) of this process: oversubscribed threads "
            "make small models several times slower; 0 takes the cores' share",
            threads, share,
        )  # fmt: skip
    changed = threads != torch.get_num_threads()
    torch.set_num_threads(threads)
    if warn or changed:  # the second call (the background bake ended) says so only where it changes the count
        logger.info("torch uses %d CPU thread(s) per process", threads)


def register_auxiliary_observations(cfg: ExperimentConfig) -> None:
    """Plug the config's plugins and optional observation providers into the task before any env is built."""
    import_plugins(cfg.model.plugins)
    if cfg.task.use_doa:
        from asgf_nav.models.doa.observation import DEFAULT_WEIGHTS, register_doa_observation

        try:
            register_doa_observation(cfg.task.doa_checkpoint or DEFAULT_WEIGHTS, cache_size=cfg.task.doa_cache_size)
        except (FileNotFoundError, ValueError) as exc:  # missing, unreadable or not a selective head
            raise ConfigError(f"task.doa_checkpoint: {exc}") from exc
        if "doa" not in cfg.task.sensors:
            cfg.task.sensors = [*cfg.task.sensors, "doa"]
        logger.info("auxiliary observation: frozen selective DoA head (%s)", cfg.task.doa_checkpoint or "packaged")


def run_training(cfg: ExperimentConfig, resume: bool = False) -> None:
    """Train as ``scripts/train_ppo.py`` does. Called from Python (a notebook), it leaves ``cfg``, the
    stop handlers, the logging set-up, torch's thread count, the observation registry and the global random
    generators (which the run seeds: a sweep drawing its settings from them would draw the same ones after
    every run) as they were."""
    import torch

    from asgf_nav.rl.distributed import is_main_process, local_rank, process_group_for_run
    from asgf_nav.rl.rng import capture_rng_state, restore_rng_state
    from asgf_nav.tasks.observations import restored_observations

    cfg = copy.deepcopy(cfg)  # the run resolves and fills in fields (scenes.source, the doa sensor)
    check_values(cfg)  # a config edited in code after load_config, before anything is written
    run_dir = Path(cfg.train.run_dir)
    with ExitStack() as held:
        device = resolve_device(cfg.train.device, local_rank())
        held.enter_context(process_group_for_run(device))
        check_ranks_agree(cfg, device)
        is_main = is_main_process()
        held.enter_context(stop_handling())  # SIGTERM and Ctrl-C run the clean-up (background build, run lock)
        held.enter_context(logging_scope())
        setup_logging("INFO" if is_main else "WARNING")  # the console until the run's train.log is claimed
        held.callback(torch.set_num_threads, torch.get_num_threads())
        held.callback(restore_rng_state, capture_rng_state(device), device)
        # before the registry is saved: a plugin's providers stay, as its module stays imported
        import_plugins(cfg.model.plugins)
        held.enter_context(restored_observations())  # the run's DoA head is not left registered
        # a bad DoA checkpoint, policy or sensor name stops the run before its directory is made or a scene baked
        register_auxiliary_observations(cfg)
        check_components(cfg)
        claim_on_rank0(held, run_dir, resume, is_main)
        train_in_claimed_run_dir(cfg, run_dir, resume, is_main)


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


def resolve_data_paths(cfg: ExperimentConfig) -> None:
    """The run's data paths made absolute, as its config.yaml and checkpoints record them: a relative one
    named a folder of the directory training started in, and a resume or an evaluation started from another
    would read (or bake again) another data root, or not find the DoA head. ``train.run_dir`` stays as typed:
    ``cli.check_config_beside_its_run`` tells a run started elsewhere."""
    from asgf_nav.rl.checkpoint import RECORDED_ABSOLUTE_KEYS, is_path_value

    for dotted in RECORDED_ABSOLUTE_KEYS:
        section, key = dotted.split(".")
        path = getattr(getattr(cfg, section), key)
        if is_path_value(path):
            setattr(getattr(cfg, section), key, str(Path(path).absolute()))


def train_in_claimed_run_dir(cfg: ExperimentConfig, run_dir: Path, resume: bool, is_main: bool) -> None:
    """The run proper, once its directory is held: the log file, then the scenes and the trainer, with an error
    that ends the run written to train.log too (which would otherwise just stop)."""
    setup_logging("INFO" if is_main else "WARNING", run_dir / "train.log" if is_main else None)
    try:
        bake_scenes_and_train(cfg, run_dir, resume, is_main)
    except UserInputError as exc:
        record_in_log_files(f"error: {exc}")
        raise
    except Exception as exc:
        from asgf_nav.rl.distributed import world_size

        # a rank whose peer failed first fails too, on the collective they shared: the cause is on that rank's console
        peers = " (under DD-PPO another rank may have failed first; its error is on the console)"
        record_in_log_files(
            f"the run stopped on an error: {type(exc).__name__}: {exc}{peers if world_size() > 1 else ''}", exc_info=exc
        )
        raise
    except KeyboardInterrupt:  # before training began, or a second Ctrl-C (the first ends it after an update)
        record_in_log_files("interrupted (Ctrl-C)", level=logging.WARNING)  # as the console says
        raise
    except SystemExit as exc:  # a SIGTERM (asgf_nav.termination), while baking as while training
        if exc.code == 128 + signal.SIGTERM:
            record_in_log_files("terminated (SIGTERM)", level=logging.WARNING)  # as the console says
        raise


def bake_scenes_and_train(cfg: ExperimentConfig, run_dir: Path, resume: bool, is_main: bool) -> None:
    """The scenes (the first baked here, the rest in the background, stopped however the run ends) and the
    trainer."""
    from asgf_nav.rl.trainer import Trainer
    from asgf_nav.scenes.soundspaces_import import scene_source

    # scenes.source=auto resolved once and recorded in config.yaml and the checkpoints: a resume cannot switch
    # between the embedded scenes and SoundSpaces data that appeared (or went missing) since the run began
    cfg.scenes.source = scene_source(cfg)
    resolve_data_paths(cfg)
    if resume:  # a config the checkpoint was not trained with stops the run before any scene is baked
        check_resumed_config(cfg, run_dir, is_main)
    # a resumed run's config is rewritten once its checkpoint has loaded (Trainer.train); one that has none yet
    # (--resume of a new run) gets it now, as the command that bakes a stale spectrogram store file names it
    if is_main and (not resume or not (run_dir / "config.yaml").is_file()):
        save_config(cfg, run_dir / "config.yaml")  # the resolved config beside the outputs
    pool = scene_pool(cfg, run_dir)
    try:  # however the run ends, its background build ends with it
        prepare_scenes(cfg, pool, is_main)
        set_torch_threads(cfg, background_build=pool is not None and pool.process is not None)
        trainer = Trainer(
            cfg,
            env_factory=partial(make_rank_env, pool=pool),
            run_dir=run_dir,
            resume=resume,
            scenes_changed=pool.changed if pool is not None else None,
        )
        trainer.train()
    finally:
        if pool is not None:
            pool.stop()
    logger.info("training finished; outputs in %s (rank %s)", run_dir, os.environ.get("RANK", "0"))
