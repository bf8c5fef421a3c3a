"""The main job, wired end to end: config -> scenes -> environments -> policy -> PPO trainer.

Only orchestration lives here: each step of the job is one call into the package that owns it, and the checks
that must pass before anything is baked (components, sensors, DD-PPO ranks, the run directory and its lock, a
resumed run's config) are ``run_checks.py``'s. On the embedded scene set the smallest training scene is baked
first (all cores), training starts on it, and the other scenes bake in a background process and join the
training pool as they complete; the torch threads are shared with that bake (``set_torch_threads``).

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
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from asgf_nav.config import ConfigError, ExperimentConfig, check_values, import_plugins, save_config
from asgf_nav.devices import omp_thread_cap, resolve_device, usable_cpus
from asgf_nav.errors import UserInputError
from asgf_nav.logging_utils import logging_scope, record_in_log_files, setup_logging
from asgf_nav.run_checks import (
    check_components,
    check_ranks_agree,
    check_resumed_config,
    claim_on_rank0,
    make_named_dir,
)
from asgf_nav.termination import stop_handling

logger = logging.getLogger(__name__)


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
        from asgf_nav.tasks.episode_generation import check_distance_bounds

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
