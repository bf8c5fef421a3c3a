"""Bake the rest of a scene set in a child process while training runs on the scenes already baked.

Baking a full preset's acoustics takes far longer than a first PPO update, so the main job bakes the
first training scene in the foreground, starts this builder for everything else, and grows its training
pool between updates as scenes complete (:meth:`ScenePool.ready`).

The builder runs the module ``asgf_nav.scenes.build`` (a module of the package, so an installed wheel
has it too) through ``runpy`` with this package first on the path (``run_module_command``).

A builder that fails is reported once, as an ERROR naming its log, the next time the
trainer polls the pool (:meth:`ScenePool.changed`); training goes on with the scenes baked so far, since
its checkpoints stay valid and ``--resume`` bakes the rest. On Linux the kernel sends the builder SIGTERM
when the training process dies, even by SIGKILL, so no bake outlives its run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asgf_nav.io import lock_held
from asgf_nav.scenes.build import stage_is_current
from asgf_nav.scenes.presets import SPLITS, get_preset
from asgf_nav.scenes.store import BAKE_LOCK, MANIFEST, SceneStoreError, scene_dir
from asgf_nav.termination import uninterrupted

logger = logging.getLogger(__name__)

TASK_STAGES: tuple[str, ...] = ("layout", "vision", "acoustics")
BUILD_MODULE = "asgf_nav.scenes.build"  # its main() bakes
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding asgf_nav/, put first on the child's path
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def linux_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None (elsewhere a child outlives a parent killed by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def run_module_command(module: str) -> list[str]:
    """``python -m module``, but with this process's package first on the path: ``-m`` would put the working
    directory first, where another checkout's ``asgf_nav`` would bake with other code."""
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
        f"runpy.run_module({module!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", code]


class ScenesNotReadyError(RuntimeError):
    """A split has no baked scene yet (they are still being built in the background)."""


def task_stages(cfg: Any) -> tuple[str, ...]:
    """The stages a run needs: the views only when it sees (``rgb`` or ``depth`` in ``task.sensors``), so an
    audio-only run neither renders them nor waits for them."""
    sees = any(s in ("rgb", "depth") for s in getattr(cfg.task, "sensors", ()))
    return TASK_STAGES if sees else tuple(s for s in TASK_STAGES if s != "vision")


def scene_ready(cfg: Any, dataset: str, scene: str, stages: Sequence[str] = TASK_STAGES) -> bool:
    directory = scene_dir(cfg.scenes.data_root, dataset, scene)
    try:
        return all(stage_is_current(directory, stage, cfg) for stage in stages)
    except (SceneStoreError, OSError, ValueError):  # a scene being written right now is simply not ready yet
        return False


def quick_start_order(dataset: str, scenes: Sequence[str]) -> list[str]:
    """Scenes ordered smallest first (by the preset's target area), so the first one bakes quickly."""
    preset = get_preset(dataset)
    return sorted(scenes, key=lambda name: (preset.spec(name).area_range, name))


def _manifest_stamp(directory: Path) -> tuple[int, int, int] | None:
    """Inode, size and modification time of a scene's manifest (None: there is none); stages are written
    by replacing it, so any bake changes this."""
    try:
        info = os.stat(directory / MANIFEST)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class ScenePool:
    """The scenes of each split that are fully baked, with an optional background build of the rest."""

    def __init__(
        self, cfg: Any, dataset: str, log_file: Path | None = None, on_build_end: Callable[[], None] | None = None
    ) -> None:
        """``on_build_end`` runs once the background build has ended, however it ended (the run then takes
        back the core it left to the builder)."""
        self.cfg, self.dataset, self.log_file, self.on_build_end = cfg, dataset, log_file, on_build_end
        self.stages = task_stages(cfg)
        self.preset = get_preset(dataset)
        self.process: subprocess.Popen | None = None
        self.exit_status: int | None = None  # the builder's, once it has ended on its own
        self._known: dict[str, list[str]] = {}
        self._ready: dict[str, bool] = {}  # per scene, as last seen while no other process baked it
        self._stamps: dict[str, tuple[int, int, int] | None] = {}  # its manifest's, when last checked

    def split_scenes(self, split: str) -> list[str]:
        return self.preset.split_scenes(split, self.cfg.scenes.num_scenes)

    def ready(self, split: str) -> list[str]:
        """Baked scenes of ``split`` in preset order (stable, so env episode lists are reproducible). A scene
        another process is baking right now keeps the readiness it had when last seen: a ``--force`` re-bake
        takes its stages out of the manifest while it writes them."""
        ready = []
        for scene in self.split_scenes(split):
            directory = scene_dir(self.cfg.scenes.data_root, self.dataset, scene)
            if not lock_held(directory / BAKE_LOCK):
                # every bake rewrites the manifest: an unchanged one spares re-reading a ready scene's stages and
                # re-hashing its layout, milliseconds per scene at every update of a run. A scene found not ready
                # is checked again each time: a passing failure to read it must not drop it for the whole run
                stamp = _manifest_stamp(directory)
                if stamp is None or not self._ready.get(scene, False) or self._stamps.get(scene) != stamp:
                    self._ready[scene] = scene_ready(self.cfg, self.dataset, scene, self.stages)
                    self._stamps[scene] = stamp
            if self._ready.get(scene, False):
                ready.append(scene)
        return ready

    def changed(self, split: str) -> bool:
        """True when ``split`` gained scenes since the last call (the first call only records). A scene lost
        since (baked again by another process with other settings) is only logged: the running env keeps
        the copy it loaded, and a split never empties under a run.

        The trainer polls this between updates, so it is also where a finished or failed build is noticed."""
        self.check_build()
        now = self.ready(split)
        before = self._known.get(split)
        self._known[split] = now
        if before is None:
            return False
        lost = sorted(set(before) - set(now))
        if lost:
            logger.warning(
                "%s scene(s) %s no longer match this run's settings (baked again by another process?); training "
                "keeps the copy it loaded, and a run of these settings bakes them back",
                split,
                lost,
            )
        return bool(set(now) - set(before))

    def builder_command(self, scenes: Sequence[str]) -> list[str]:
        """The child's command line: the package's builder module with this run's bake settings."""
        overrides = [f"acoustics.{k}={v}" for k, v in vars(self.cfg.acoustics).items()]
        return [
            *run_module_command(BUILD_MODULE), *overrides, "--dataset", self.dataset,
            "--data-root", str(self.cfg.scenes.data_root), "--image-size", str(self.cfg.scenes.image_size),
            "--workers", "1", "--stages", *self.stages, "--scenes", *scenes,
        ]  # fmt: skip

    def start_background_build(self, order: Sequence[str]) -> None:
        """Bake ``order`` (skipping what is already done) in a low-priority child process."""
        missing = [s for s in order if not scene_ready(self.cfg, self.dataset, s, self.stages)]
        if not missing:
            return
        self.exit_status = None
        with uninterrupted():  # a stop between the start and the assignment would leave the builder unknown
            self.process = start_child(self.builder_command(missing), self.log_file)
        logger.info(
            "baking %d more %s scene(s) in the background (pid %d, log %s); training grows onto them as they finish",
            len(missing),
            self.dataset,
            self.process.pid,
            self.log_file,
        )

    def check_build(self) -> None:
        """Note once that the builder has ended: INFO when it succeeded, ERROR naming its log when not.

        A failed bake does not stop training: the run keeps learning on the scenes baked so far and its
        checkpoints stay valid, so it is reported loudly instead; ``--resume`` restarts the bake."""
        if self.process is None or _poll(self.process) is None:
            return
        self.exit_status = status = self.process.returncode
        self.process = None
        if self.on_build_end is not None:
            self.on_build_end()
        if status == 0:
            logger.info("background scene build finished (log %s)", self.log_file)
            return
        how = f"was killed by signal {-status}" if status < 0 else f"failed with exit status {status}"
        with contextlib.suppress(ValueError):  # a signal Python knows by name
            how = f"was killed by {signal.Signals(-status).name}" if status < 0 else how
        unbaked = [
            s for split in SPLITS for s in self.split_scenes(split) if not scene_ready(self.cfg, self.dataset, s)
        ]
        logger.error(
            "the background build of the %s scenes %s; see its log %s. Training goes on with the scenes baked so "
            "far (validation is skipped while no val scene is baked); %d scene(s) stay unbaked: %s. Fix the cause "
            "and continue the run with --resume, which bakes them",
            self.dataset,
            how,
            self.log_file if self.log_file is not None else "(none: ScenePool got no log_file)",
            len(unbaked),
            unbaked,
        )

    def stop(self) -> None:
        """End the background build (finished scenes and baked sources stay; a later run resumes)."""
        with uninterrupted():  # a second stop arriving here must not keep the builder from being signalled
            if self.process is not None and self.process.poll() is not None:
                self.check_build()  # it ended on its own: report how, once
            process, self.process = self.process, None
            if process is not None:
                _signal_group(process.pid, signal.SIGTERM)
        if process is None:
            return
        if not _reap(process, seconds=30):
            _signal_group(process.pid, signal.SIGKILL)
            _reap(process, seconds=30)  # or it stays a zombie for the rest of this process


def _poll(process: subprocess.Popen) -> int | None:
    """``process.poll()``, which a stop signal must not interrupt (see :func:`uninterrupted`)."""
    with uninterrupted():
        return process.poll()


def _reap(process: subprocess.Popen, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``process`` to end, in short uninterrupted waits, so that a second
    Ctrl-C still stops this one between them; True once it has ended."""
    deadline = time.monotonic() + seconds
    while True:
        with uninterrupted(), contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        if process.returncode is not None or time.monotonic() >= deadline:
            return process.returncode is not None


def start_child(command: Sequence[str], log_file: Path | None) -> subprocess.Popen:
    """Start ``command`` at low priority in its own session (so the whole group can be stopped), with its
    output appended to ``log_file``, and on Linux set to receive SIGTERM when this process dies."""
    # a checkout's package first (the child may start elsewhere); an installed one is found anyway, and its
    # folder, site-packages, must not go ahead of the standard library
    first = str(PACKAGE_ROOT) if (PACKAGE_ROOT / "pyproject.toml").is_file() else None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [first, os.environ.get("PYTHONPATH")]))}
    if log_file is not None:  # progress bars redrawn into a file bury its log lines under cursor codes
        env["TQDM_DISABLE"] = "1"
    with contextlib.ExitStack() as stack:  # the child has its own copy of the log's descriptor
        log = stack.enter_context(open(log_file, "a", encoding="utf-8")) if log_file is not None else subprocess.DEVNULL
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=child_setup(),
        )


def child_setup() -> Callable[[], None]:
    """The ``preexec_fn`` of a background child: lower its priority and tie its life to this process.

    ``PR_SET_PDEATHSIG`` makes the kernel send the child SIGTERM when its parent dies, however it dies (a
    SIGKILL runs no clean-up in the parent); its own session would otherwise keep it running. Strictly it
    fires when the thread that started the child ends, so start children from the main thread. libc is
    looked up here, before the fork, so the child only makes the call."""
    parent = os.getpid()
    prctl = linux_prctl()

    def setup() -> None:
        os.nice(10)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the call: no signal will come
                os._exit(1)

    return setup


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Signal the child's process group (it and its workers); one that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
