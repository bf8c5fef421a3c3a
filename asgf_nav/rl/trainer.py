"""One PPO / DD-PPO trainer for every registered policy.

``Trainer(cfg, env_factory, run_dir).train()`` collects ``ppo.num_steps`` steps from a batched env,
runs the PPO update, logs to TensorBoard and a tqdm bar, validates every ``train.val_interval`` updates
and checkpoints every ``train.checkpoint_interval`` updates until ``ppo.total_frames`` frames are used.

The loop (``train``) reads: collect a rollout (its GAE advantages included), run the PPO update
(``rl/ppo.py``), report it and validate when due, checkpoint. Resuming is ``check_continues`` and ``restore``
below (``rl/resume.py`` holds their helpers); validation, which samples actions on the val split, is
``rl/validation.py``'s. The env comes from ``env_factory``: in a run ``experiment.make_rank_env``, which builds
``tasks/batched_env.py``'s ``BatchedAudioNavEnv`` through ``tasks.factory.make_env``.

The checkpoint of the best validation so far on ``train.best_metric`` is kept as
``checkpoints/best.pt`` (SoundSpaces reports the test figures of the checkpoint with the best val SPL; short
runs can get worse late in training, and the newest-K pruning would delete the better checkpoint). A pending
stop (SIGTERM, Ctrl-C) ends the loop between updates, after a checkpoint.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from asgf_nav.config import ConfigError, ExperimentConfig, config_to_dict, save_config
from asgf_nav.devices import resolve_device
from asgf_nav.io import code_version, remove_stale_temporaries_of
from asgf_nav.logging_utils import live_console, resume_option, shell_command
from asgf_nav.models.doa.observation import head_identity
from asgf_nav.models.policies import build_policy, count_parameters
from asgf_nav.rl import distributed
from asgf_nav.rl.checkpoint import (
    CheckpointError,
    check_resume_config,
    check_same_doa_head,
    check_same_responses,
    checkpoint_dir,
    load_latest,
    remove_stale_checkpoint_temporaries,
    response_versions,
    save_best_checkpoint,
    save_checkpoint,
)
from asgf_nav.rl.ppo import PPO
from asgf_nav.rl.resume import remembered_best, schedule_change
from asgf_nav.rl.rng import capture_rng_state, restore_rng_state, seed_everything
from asgf_nav.rl.rollout import WINDOW_KEYS, EpisodeWindow, RolloutStorage, to_device
from asgf_nav.rl.throughput import SharedCoreWatch
from asgf_nav.rl.validation import ValidationStopped, run_validation
from asgf_nav.scenes.background import ScenesNotReadyError
from asgf_nav.termination import raise_if_stopped, stop_between_updates, stop_requested

logger = logging.getLogger(__name__)


class TrainingEnv(Protocol):
    """What the trainer and validation need of an env: B episodes stepped together, torch tensors in and out.

    ``tasks.batched_env.BatchedAudioNavEnv`` is the one the runs use; tests use toy envs. Optional, used when
    present: ``device`` (where actions go; cpu otherwise), ``state_dict`` / ``load_state_dict`` (an exact
    resume, and every validation from the same start), ``reseed(seed)`` (fresh episodes on a resume that cannot
    restore them), ``episodes`` and ``scene_names`` (what validation runs over, and how many scenes it saw)."""

    num_envs: int
    observation_space: Any

    def reset(self) -> dict[str, torch.Tensor]: ...

    # info: finished episodes' metrics by name, each a (num_envs,) tensor (rl.rollout.EpisodeWindow.add reads them)
    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any, Any, dict[str, torch.Tensor]]: ...


EnvFactory = Callable[[ExperimentConfig, str, int], TrainingEnv]  # (config, split, rank) -> a batched env
SUMMARY_KEYS = {  # what the log line of an update or a validation shows (TensorBoard gets every key)
    "train": {"fps", "value_loss", "episode/success", "episode/spl"},
    "val": {"success", "spl", "sna"},
}


@contextmanager
def malformed_entries(run_dir: Path) -> Iterator[None]:
    """A checkpoint entry the loader does not check, missing or malformed, raised as a CheckpointError naming
    the run's checkpoints (a ConfigError, which is a ValueError, passes as it is)."""
    try:
        yield
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"the newest checkpoint in {checkpoint_dir(run_dir)} cannot be resumed: an entry is missing or malformed "
            f"({type(exc).__name__}: {exc}); it was altered, or not written by this trainer"
        ) from exc


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        env_factory: EnvFactory,
        run_dir: str | Path | None = None,
        resume: bool = False,
        scenes_changed: Callable[[str], bool] | None = None,
    ) -> None:
        """``scenes_changed(split)`` reports that more scenes of a split became available (they bake in the
        background); the trainer then rebuilds that split's env between updates."""
        self.cfg, self.env_factory, self.scenes_changed = cfg, env_factory, scenes_changed
        self.code = code_version()  # now: the checkout may change under a long run
        self.run_dir = Path(run_dir if run_dir is not None else cfg.train.run_dir)
        self.device = resolve_device(cfg.train.device, distributed.local_rank())
        self.rank, self.world, _ = distributed.init_distributed(self.device)  # the backend follows the device
        self.is_main = self.rank == 0
        if cfg.train.torch_threads > 0:
            torch.set_num_threads(cfg.train.torch_threads)
        seed_everything(cfg.train.seed + self.rank)
        self.doa_head = head_identity(cfg.task.doa_checkpoint) if cfg.task.use_doa else None
        self.responses = response_versions(cfg)  # the acoustics and render versions it trains on
        if self.is_main:  # rank 0 writes the checkpoints; a run holds its directory (run_checks.claim_run_dir)
            remove_stale_checkpoint_temporaries(checkpoint_dir(self.run_dir))
            remove_stale_temporaries_of(self.run_dir / "config.yaml")
        # on the CPU: the weights are copied into the policy's own tensors, and the RNG states must stay there;
        # read and checked before any env is built, so that a run which cannot be continued builds none
        state = load_latest(self.run_dir, map_location="cpu") if resume else None
        if state is not None:
            with malformed_entries(self.run_dir):
                self.check_continues(state)

        if scenes_changed is not None:  # the baseline, taken before the env reads the pool: a scene baked
            scenes_changed("train")  # while the trainer starts up then rebuilds the env at the first update
        self.env: TrainingEnv = env_factory(cfg, "train", self.rank)
        self.num_envs = int(self.env.num_envs)
        self.env_device = torch.device(getattr(self.env, "device", "cpu"))
        self.policy = build_policy(cfg, self.env.observation_space).to(self.device)
        distributed.broadcast_parameters(self.policy)
        several = self.world > 1
        self.ppo = PPO(
            self.policy,
            cfg.ppo,
            gradient_hook=distributed.all_reduce_gradients if several else None,
            mean_over_ranks=distributed.mean_over_ranks if several else None,
        )
        hidden_shape = (self.policy.num_recurrent_layers, self.policy.hidden_size)
        self.storage = RolloutStorage.for_space(
            cfg.ppo.num_steps, self.num_envs, self.env.observation_space, hidden_shape, self.device
        )
        self.frames_per_update = cfg.ppo.num_steps * self.num_envs * self.world
        self.num_updates = max(1, math.ceil(cfg.ppo.total_frames / self.frames_per_update))
        self.updates_done, self.frames = 0, 0
        self.window = EpisodeWindow(int(cfg.train.stats_window_episodes))
        self.shared_core_watch = SharedCoreWatch()  # says why a CPU run's frames/s collapsed, when it can
        self.episode_returns = torch.zeros(self.num_envs, device=self.device)
        self.next_rollout_hidden = self.policy.initial_hidden(self.num_envs, self.device)
        self.val_env: TrainingEnv | None = None
        self.val_env_initial_state: Any = None
        self.best_validation: dict[str, float] | None = None  # the metrics behind checkpoints/best.pt
        self.validation_pending = False  # the validation due after the last update was cut short by a stop
        self.writer: Any = None

        if state is not None:
            with malformed_entries(self.run_dir):
                self.restore(state)
        else:
            if resume:
                logger.warning("--resume found no checkpoint under %s; starting from scratch", self.run_dir)
            self.start_fresh_episodes()
        if self.is_main:
            logger.info(
                "policy %s: %d parameters; %d updates of %d frames on %s (world size %d)",
                cfg.model.policy,
                count_parameters(self.policy),
                self.num_updates,
                self.frames_per_update,
                self.device,
                self.world,
            )

    # ------------------------------------------------------------------------------------ rollouts
    def collect_rollout(self) -> dict[str, float]:
        """Fill the storage with num_steps transitions and their GAE returns; returns the policy's diagnostics
        (the fusion gate and attention entropy) averaged over the steps."""
        self.policy.eval()
        diagnostics: dict[str, torch.Tensor] = {}
        hidden = self.storage.hidden.clone()
        with torch.no_grad():
            for _ in range(self.storage.num_steps):
                obs, masks = self.storage.current()
                value, action, log_prob, hidden = self.policy.act(obs, hidden, masks)
                for key, val in self.policy.diagnostics().items():
                    diagnostics[key] = diagnostics.get(key, 0.0) + val
                next_obs, reward, done, info = self.env.step(action.to(self.env_device))
                next_obs = to_device(next_obs, self.device)
                reward = torch.as_tensor(reward, device=self.device, dtype=torch.float32)
                done = torch.as_tensor(done, device=self.device, dtype=torch.bool)
                self.episode_returns += reward
                self.window.add(self.episode_returns, done, info)
                self.episode_returns.masked_fill_(done, 0.0)
                self.storage.insert(next_obs, action, log_prob, value, reward, (~done).float())
            last_obs, last_masks = self.storage.current()
            next_value = self.policy.get_value(last_obs, hidden, last_masks)
        self.storage.compute_advantages_and_returns(next_value, self.cfg.ppo.gamma, self.cfg.ppo.gae_lambda)
        self.next_rollout_hidden = hidden
        return {k: float(v) / self.storage.num_steps for k, v in diagnostics.items()}

    # ------------------------------------------------------------------------------------ main loop
    def train(self, max_updates: int | None = None) -> dict[str, float]:
        """Train until the frame budget (or ``max_updates`` total updates) is used; returns the last stats."""
        stop = self.num_updates if max_updates is None else min(self.num_updates, max_updates)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            # scalars are logged at frame counts (>= 1): TensorBoard hides earlier events at steps >= purge_step,
            # so a resumed run hides what the run it continues logged after its checkpoint, not before, and a
            # fresh run everything a run in this directory logged before it died without a checkpoint
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.frames + 1)
        progress = tqdm(
            total=self.planned_frames(),
            initial=self.frames,
            unit="frame",
            disable=not (self.is_main and live_console()),  # none in a log file: the update lines say the progress
            dynamic_ncols=True,
            desc=f"train {self.cfg.model.policy}",
        )
        stats: dict[str, float] = {}
        last_saved: int | None = self.updates_done
        # the first SIGTERM / Ctrl-C ends the loop between updates and the run after a checkpoint; under DD-PPO
        # the ranks agree on it before each update, so all stop after the same one (none waits in an all-reduce)
        stopping = False
        try:
            with stop_between_updates():
                if self.finish_pending_validation():  # saved at once: a later resume must not run (and log) it again
                    self.save()
                while self.updates_done < stop:
                    stopping = distributed.any_rank(stop_requested(), self.device)
                    if stopping:
                        break
                    self.reload_if_scenes_changed(saved=self.updates_done == last_saved)
                    stats = self.update_once()
                    try:
                        self.report_and_validate(stats, progress)
                    except Exception:  # e.g. damaged val data: the update is kept, its validation still due
                        self.save()
                        raise
                    if self.updates_done % self.cfg.train.checkpoint_interval == 0:
                        self.save()
                        last_saved = self.updates_done
                # a stop during the last update's validation: the loop ended without seeing it
                stopping = stopping or distributed.any_rank(stop_requested(), self.device)
                if self.updates_done != last_saved:
                    self.save()
                if stopping:
                    # every rank waits for rank 0's checkpoint: torchrun answers a rank's exit by signalling the
                    # others, and that second signal would stop rank 0 in the middle of writing it
                    distributed.barrier()
                    logger.info(
                        "stopped at update %d; %s continues from its checkpoint", self.updates_done, resume_option()
                    )
                    raise_if_stopped()
                    raise SystemExit(128 + signal.SIGTERM)  # this rank's peer was stopped, not this rank
        finally:
            progress.close()
            if self.writer is not None:
                self.writer.flush()
                self.writer.close()
                self.writer = None
        return stats

    def update_once(self) -> dict[str, float]:
        """Collect one rollout and run the PPO update on it; returns the update's statistics."""
        start = time.perf_counter()
        self.ppo.set_progress(self.frames, self.cfg.ppo.total_frames)
        diagnostics = self.collect_rollout()
        self.policy.train()
        stats = self.ppo.update(self.storage)
        # storage.hidden (this rollout's start, read by the minibatches) is replaced only after the update
        self.storage.after_update(self.next_rollout_hidden)
        self.updates_done += 1
        self.frames += self.frames_per_update
        stats.update(diagnostics)
        # every rank's frames over this rank's rollout and update time (validation and checkpoints not counted)
        stats["fps"] = self.frames_per_update / (time.perf_counter() - start)
        stats.update({f"episode/{k}": v for k, v in self.episode_means().items()})
        return stats

    def episode_means(self) -> dict[str, float]:
        """The window's means; under DD-PPO over every rank's window (one all-reduce), since each rank trains on
        its own share of the scenes and rank 0's alone would make a curve unlike a single process's."""
        if self.world == 1:
            return self.window.means()
        totals = distributed.sum_over_ranks(self.window.totals().to(self.device)).cpu().tolist()
        return {key: total / count for key, (total, count) in zip(WINDOW_KEYS, totals) if count > 0}

    def report_and_validate(self, stats: dict[str, float], progress: tqdm) -> None:
        """Show the update on the progress bar, log it and validate when due."""
        progress.update(self.frames_per_update)
        progress.set_postfix(
            fps=f"{stats['fps']:.0f}",
            SR=f"{stats.get('episode/success', float('nan')):.2f}",
            SPL=f"{stats.get('episode/spl', float('nan')):.2f}",
            refresh=False,  # drawn at the bar's own pace
        )
        if self.is_main and self.updates_done % max(self.cfg.train.log_interval, 1) == 0:
            self.log_scalars("train", stats)
        fps, on_cpu = stats["fps"], self.device.type == "cpu"
        slowed = self.shared_core_watch.observe(fps, self.frames_per_update / fps, torch.get_num_threads(), on_cpu)
        if slowed:
            logger.warning(slowed)
        val_interval = self.cfg.train.val_interval
        if self.is_main and val_interval > 0 and self.updates_done % val_interval == 0:
            self.validate_and_keep_best()

    def finish_pending_validation(self) -> bool:
        """Run the validation a stop cut short in the run this one resumes; True when it ran to the end now."""
        if self.validation_pending and self.cfg.train.val_interval <= 0:
            self.validation_pending = False  # validation is switched off now (train.val_interval=0)
        if not (self.is_main and self.validation_pending):
            return False
        self.validate_and_keep_best()
        return not self.validation_pending

    def validate_and_keep_best(self) -> None:
        """The validation due at this update; one a stop cut short stays pending in the checkpoint, and the
        resumed run starts with it, so a stop never leaves a hole in the validations best.pt is chosen from."""
        self.validation_pending = True
        try:
            metrics = self.validate()
        except ValidationStopped as exc:
            logger.info(
                "validation at update %d cut short (%s); the resumed run starts with it", self.updates_done, exc
            )
            return
        except ScenesNotReadyError as exc:
            logger.info("validation skipped at update %d: %s", self.updates_done, exc)
            self.validation_pending = False
            return
        self.validation_pending = False  # done before best.pt is written, which must not ask for it again
        self.log_scalars("val", metrics)
        self.keep_if_best(metrics)

    def start_fresh_episodes(self, first_obs: Any = None) -> None:
        """Reset every env (unless given its ``first_obs`` after a reset) and start the rollout on its first
        observations: zero hidden states, no reward carried over, every mask 0 (no step before them)."""
        self.next_rollout_hidden = self.policy.initial_hidden(self.num_envs, self.device)
        self.episode_returns.zero_()
        obs = to_device(self.env.reset() if first_obs is None else first_obs, self.device)
        self.storage.start(obs, self.next_rollout_hidden, torch.zeros(self.num_envs, device=self.device))

    def reload_if_scenes_changed(self, saved: bool) -> None:
        """Move training onto a grown scene pool. A failure on any rank (a new scene's data damaged) stops every
        rank together, after rank 0's checkpoint of the updates done (unless ``saved``); the run is unchanged
        by it, since the new env replaces the old one only once it has reset."""
        failure: Exception | None = None
        try:
            if self.scenes_changed is not None and self.scenes_changed("train"):
                self.reload_train_env()
        except Exception as exc:  # noqa: BLE001 - re-raised below, once every rank knows
            failure = exc
        if distributed.any_rank(failure is not None, self.device):
            if not saved:
                self.save()
            raise failure or RuntimeError("another DD-PPO rank failed to load its training scenes (its log says why)")

    def reload_train_env(self) -> None:
        """Rebuild the training env on the grown scene pool; episodes in flight are dropped."""
        env = self.env_factory(self.cfg, "train", self.rank)
        obs = env.reset()  # before anything of the run changes: a failure here leaves it as it was
        self.env = env
        self.start_fresh_episodes(obs)
        logger.info("training env rebuilt at update %d on the grown scene pool", self.updates_done)

    def planned_frames(self) -> int:
        """The frames the run will have seen at its end: those so far and the remaining updates' (a resume on
        another number of ranks changes the frames per update)."""
        return self.frames + (self.num_updates - self.updates_done) * self.frames_per_update

    def log_scalars(self, prefix: str, values: dict[str, float]) -> None:
        """Write ``prefix/key`` scalars to TensorBoard and a summary line to the log; the callers decide when."""
        for key, value in values.items():
            if self.writer is not None and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, self.frames)
        shown = {k: round(v, 4) for k, v in values.items() if k in SUMMARY_KEYS[prefix]}
        logger.info(
            "%s update %d frames %d of %d: %s", prefix, self.updates_done, self.frames, self.planned_frames(), shown
        )

    # ------------------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Mean metrics on the val split (``validation.run_validation``), on a val env built once and put back
        in its initial state each time. Raises ValidationStopped once a stop signal is pending."""
        if stop_requested():
            raise ValidationStopped("a stop was requested")
        if self.scenes_changed is not None and self.scenes_changed("val"):
            self.val_env = None
        if self.val_env is None:
            self.val_env = self.env_factory(self.cfg, "val", self.rank)
            if hasattr(self.val_env, "state_dict"):
                self.val_env_initial_state = self.val_env.state_dict()
        elif self.val_env_initial_state is not None:
            self.val_env.load_state_dict(self.val_env_initial_state)
        return run_validation(self.policy, self.val_env, self.cfg, self.device)

    def keep_if_best(self, metrics: dict[str, float]) -> None:
        """Save checkpoints/best.pt when this validation beats every earlier one (ties keep the earlier)."""
        name = self.cfg.train.best_metric
        if name == "none" or not math.isfinite(metrics.get(name, math.nan)):
            return
        earlier = self.best_validation
        if earlier is not None and earlier.get("scenes") != metrics.get("scenes"):
            logger.info(
                "the val split has grown to %s scenes (the best so far was validated on %s); best.pt is "
                "chosen afresh among validations on all of them",
                metrics.get("scenes"),
                earlier.get("scenes"),
            )
        elif earlier is not None and metrics[name] <= earlier[name]:
            return
        self.best_validation = {**metrics, "update": float(self.updates_done), "frames": float(self.frames)}
        save_best_checkpoint(self.run_dir, self.state_dict())
        logger.info("best val %s so far: %.4f at update %d", name, metrics[name], self.updates_done)

    # ------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.policy.state_dict(),
            "optimizer": self.ppo.state_dict(),
            "update": self.updates_done,
            "frames": self.frames,
            "frames_per_update": self.frames_per_update,  # all ranks together: a resume on others can say so
            "world_size": self.world,  # the env state is rank 0's, on its share of the scenes
            "num_updates": self.num_updates,
            "rng": capture_rng_state(self.device),
            "config": config_to_dict(self.cfg),
            "policy_name": self.cfg.model.policy,
            "code": self.code,  # the figures a checkpoint gives change with the code
            "doa_head": self.doa_head,
            # the responses it trained on (None on SoundSpaces data): a resume after a version change is refused,
            # and an evaluation at other versions says so
            **self.responses,
            "rollout": {
                "obs": {k: v[0].clone() for k, v in self.storage.obs.items()},
                "masks": self.storage.masks[0].clone(),
                "hidden": self.storage.hidden.clone(),
                "episode_returns": self.episode_returns.clone(),
            },
            "episode_window": list(self.window.episodes),
            "best_validation": self.best_validation,
            "validation_pending": self.validation_pending,
        }
        if hasattr(self.env, "state_dict"):
            state["env"] = self.env.state_dict()
        return state

    def save(self) -> Path | None:
        if not self.is_main:
            return None
        return save_checkpoint(self.run_dir, self.state_dict(), self.cfg.train.keep_checkpoints)

    def try_restore_env_state(self, state: dict[str, Any]) -> str | None:
        """Load the checkpoint's env state into the env for an exact resume; returns why it could not, or None."""
        if self.world > 1:
            return f"DD-PPO with {self.world} ranks"
        if "env" not in state or not hasattr(self.env, "load_state_dict"):
            return "the checkpoint or the env has none"
        try:
            self.env.load_state_dict(state["env"])
        except ValueError as exc:  # e.g. more scenes are baked now than when the checkpoint was written
            ranks = int(state.get("world_size", 1))
            if ranks > 1:  # rank 0 trained on its share of the scenes, this run on all of them
                return f"it is rank 0's of {ranks} DD-PPO ranks, on its share of the training scenes"
            return str(exc)
        return None

    def check_continues(self, state: dict[str, Any]) -> None:
        """Raise CheckpointError where continuing ``state`` would make the run another experiment: another
        config, DoA head, or acoustics or render version of the responses it hears. Run before any env is built
        or anything loaded (so ``train`` never overwrites the run's config.yaml with it)."""
        check_resume_config(state, config_to_dict(self.cfg), self.run_dir)
        check_same_doa_head(state.get("doa_head"), self.doa_head, self.run_dir)
        check_same_responses(state, self.responses, self.run_dir)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the checkpointed run (``state`` passed :meth:`check_continues`)."""
        same_run = (
            f"resume with the run's own config: {shell_command('--config', self.run_dir / 'config.yaml')} --resume"
        )
        try:
            self.policy.load_state_dict(state["model"])
        except RuntimeError as exc:  # widths or sensors changed since the checkpoint was written
            first = str(exc).strip().splitlines()
            raise CheckpointError(
                f"checkpoint in {self.run_dir} does not fit the policy this config builds (a model.* or "
                f"task.sensors value changed?): {' '.join(first[:3])}; {same_run}"
            ) from None
        distributed.broadcast_parameters(self.policy)
        self.ppo.load_state_dict(state["optimizer"])
        self.updates_done, self.frames = int(state["update"]), int(state["frames"])
        # the frames still to go decide the updates still to go: ppo.total_frames may have grown, and under
        # DD-PPO the frames per update change with the number of ranks
        remaining = max(0, int(self.cfg.ppo.total_frames) - self.frames)
        self.num_updates = self.updates_done + math.ceil(remaining / self.frames_per_update)
        moved = schedule_change(state, self.cfg.ppo)
        if self.is_main and remaining and moved:
            logger.info(moved)
        # the checkpoint's own figure; one written before it recorded that, the mean over its updates
        planned_per_update = state.get("frames_per_update") or self.frames // max(self.updates_done, 1)
        if self.is_main and remaining and self.updates_done and int(planned_per_update) != self.frames_per_update:
            decays_on = self.cfg.ppo.use_linear_lr_decay or self.cfg.ppo.use_linear_clip_decay
            logger.info(
                "frames per update %d -> %d (DD-PPO ranks: %s in the checkpoint, %d now): %d updates left%s",
                int(planned_per_update),
                self.frames_per_update,
                state.get("world_size", "unrecorded"),
                self.world,
                self.num_updates - self.updates_done,
                "; the linear decays count frames and go on from where they were" if decays_on and not moved else "",
            )
        if not remaining:
            logger.warning(
                "the checkpoint has used %d frames of ppo.total_frames=%d: nothing left to train (raise "
                "ppo.total_frames to extend the run)",
                self.frames,
                self.cfg.ppo.total_frames,
            )
        self.window.episodes.extend(state.get("episode_window", []))
        self.best_validation = remembered_best(self.run_dir, state.get("best_validation"))
        self.validation_pending = bool(state.get("validation_pending", False))
        rollout = state["rollout"]
        not_restored = self.try_restore_env_state(state)
        if not_restored is None:
            self.next_rollout_hidden = rollout["hidden"].to(self.device)
            self.episode_returns = rollout["episode_returns"].to(self.device)
            restore_rng_state(state["rng"], self.device)
            masks = rollout["masks"].to(self.device)
            self.storage.start(to_device(rollout["obs"], self.device), self.next_rollout_hidden, masks)
        else:
            logger.warning("env state not restored (%s); resuming with fresh episodes", not_restored)
            seed_everything(self.cfg.train.seed + self.rank + 1000003 * self.updates_done)
            if hasattr(self.env, "reseed"):  # the env draws episodes from samplers of its own
                self.env.reseed((int(self.cfg.train.seed), self.rank, self.updates_done))
            self.start_fresh_episodes()
        logger.info("resumed from update %d (%d frames) in %s", self.updates_done, self.frames, self.run_dir)
