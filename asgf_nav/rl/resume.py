"""Resuming a training run: what a resumed run keeps, and what it says when its schedule moved.

The resumed run must be the run it continues. A config that differs from the checkpoint's in a key other
than ``ppo.total_frames`` and how the run executes (``checkpoint.RESUMABLE_KEYS``) is refused, naming the
keys, and so is a checkpoint trained on responses of other acoustics or render versions than this code makes
(``checkpoint.check_same_responses``); a larger ``ppo.total_frames`` extends the run by the frames it adds.
A checkpoint holds the model, optimiser, schedule, counters, RNG states, the rollout's carried-over state
(last observation, mask and GRU state) and ``env.state_dict()`` when the env offers it, so a single-process
run on CPU resumed from update K reaches the same parameters as an uninterrupted run when the env's
observations do not depend on what it cached before. The batched env's caches are not saved: it recomputes
their observations in other batches, which changes them in the last float bits, so there the resumed run is
the same run up to rounding (docs/models.md). Under DD-PPO rank 0 checkpoints, and every rank resumes with
fresh episodes (the ranks' envs differ, and one file holds one env): an env with ``reseed(seed)`` gets its
episode samplers reseeded from (train.seed, rank, update), so no resume replays the episodes the run began
with; the same holds when the saved env state no longer fits (the scene pool grew).

The checks and the restore themselves are ``Trainer.check_continues`` and ``Trainer.restore``
(``rl/trainer.py``), and the config comparison ``run_checks.check_resumed_config``; this module holds two of
their helpers: the best validation so far (``remembered_best``) and a moved schedule (``schedule_change``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asgf_nav.config import PPOConfig
from asgf_nav.rl.checkpoint import BEST_CHECKPOINT, CheckpointError, checkpoint_dir, load_checkpoint

logger = logging.getLogger(__name__)


def schedule_change(state: dict[str, Any], ppo: PPOConfig) -> str | None:
    """What a resume does to the linear decays, or None when they go on as the checkpoint's run planned;
    the caller says it only while frames remain (with none left there is no decay to continue).

    The decays run over the frames (:meth:`asgf_nav.rl.ppo.PPO.set_progress`), so another DD-PPO world size
    leaves them where they were. A larger ``ppo.total_frames`` moves their end: they continue from the new
    schedule's value at the frames done, a step up from where the stopped run left them."""
    decays = [name for name, on in (("lr", ppo.use_linear_lr_decay), ("clip", ppo.use_linear_clip_decay)) if on]
    planned, total = int(state["config"]["ppo"]["total_frames"]), int(ppo.total_frames)
    if not decays or planned == total:
        return None
    frames = int(state["frames"])
    before, after = max(0.0, 1.0 - frames / max(planned, 1)), max(0.0, 1.0 - frames / max(total, 1))
    return (
        f"ppo.total_frames {planned} -> {total}: the linear {' and '.join(decays)} decay now ends at frame {total} "
        f"instead of {planned}, so it continues at {after:.3f} of the configured value instead of {before:.3f}"
    )


def remembered_best(run_dir: Path, in_checkpoint: dict[str, float] | None) -> dict[str, float] | None:
    """The best validation a resumed run has to beat. Validation can run more often than checkpointing, so a
    run stopped between the two may have written a best.pt newer than its last checkpoint knows."""
    path = checkpoint_dir(run_dir) / BEST_CHECKPOINT
    if not path.is_file():
        return in_checkpoint
    try:
        on_disk = load_checkpoint(path).get("best_validation")
    except CheckpointError as exc:
        logger.warning("%s; the best validation is taken from the resumed checkpoint", exc)
        return in_checkpoint
    if on_disk is not None and (in_checkpoint is None or on_disk["update"] > in_checkpoint["update"]):
        return on_disk
    return in_checkpoint
