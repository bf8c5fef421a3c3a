"""Bake the rest of a scene set in a child process while training runs on the scenes already baked.

Baking a full preset's acoustics takes far longer than a first PPO update, so the main job bakes the
first training scene in the foreground, starts this builder for everything else, and grows its training
pool between updates as scenes complete (:meth:`ScenePool.ready`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asgf_nav.scenes.build import stage_is_current
from asgf_nav.scenes.presets import get_preset
from asgf_nav.scenes.store import scene_dir

logger = logging.getLogger(__name__)

TASK_STAGES: tuple[str, ...] = ("layout", "vision", "acoustics")
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_scenes.py"


class ScenesNotReadyError(RuntimeError):
    """A split has no baked scene yet (they are still being built in the background)."""


def scene_ready(cfg: Any, dataset: str, scene: str, stages: Sequence[str] = TASK_STAGES) -> bool:
    directory = scene_dir(cfg.scenes.data_root, dataset, scene)
    try:
        return all(stage_is_current(directory, stage, cfg) for stage in stages)
    except Exception:  # noqa: BLE001 - a scene being written right now is simply not ready yet
        return False


def quick_start_order(dataset: str, scenes: Sequence[str]) -> list[str]:
    """Scenes ordered smallest first (by the preset's target area), so the first one bakes quickly."""
    preset = get_preset(dataset)
    return sorted(scenes, key=lambda name: (preset.spec(name).area_range, name))


class ScenePool:
    """The scenes of each split that are fully baked, with an optional background build of the rest."""

    def __init__(self, cfg: Any, dataset: str, log_file: Path | None = None) -> None:
        self.cfg, self.dataset, self.log_file = cfg, dataset, log_file
        self.preset = get_preset(dataset)
        self.process: subprocess.Popen | None = None
        self._known: dict[str, list[str]] = {}

    def split_scenes(self, split: str) -> list[str]:
        return self.preset.split_scenes(split, self.cfg.scenes.num_scenes)

    def ready(self, split: str) -> list[str]:
        """Baked scenes of ``split`` in preset order (stable, so env episode lists are reproducible)."""
        return [s for s in self.split_scenes(split) if scene_ready(self.cfg, self.dataset, s)]

    def changed(self, split: str) -> bool:
        """True when ``split`` gained scenes since the last call (the first call only records)."""
        now = self.ready(split)
        before = self._known.get(split)
        self._known[split] = now
        return before is not None and now != before

    def start_background_build(self, order: Sequence[str]) -> None:
        """Bake ``order`` (skipping what is already done) in a low-priority child process."""
        missing = [s for s in order if not scene_ready(self.cfg, self.dataset, s)]
        if not missing:
            return
        overrides = [f"acoustics.{k}={v}" for k, v in vars(self.cfg.acoustics).items()]
        command = [
            sys.executable, str(BUILD_SCRIPT), *overrides, "--dataset", self.dataset,
            "--data-root", self.cfg.scenes.data_root, "--image-size", str(self.cfg.scenes.image_size),
            "--workers", "1", "--scenes", *missing,
        ]  # fmt: skip
        log = open(self.log_file, "a") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - child owns it
        self.process = subprocess.Popen(  # own session: stop() ends the builder and its worker processes
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_lower_priority,
        )
        logger.info(
            "baking %d more %s scene(s) in the background (pid %d, log %s); training grows onto them as they finish",
            len(missing),
            self.dataset,
            self.process.pid,
            self.log_file,
        )

    def stop(self) -> None:
        """End the background build (finished scenes and baked sources stay; a later run resumes)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


def _lower_priority() -> None:
    os.nice(10)
