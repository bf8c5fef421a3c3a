"""Baking spectrogram stores: the files :mod:`asgf_nav.tasks.spectrogram_store` reads, one per (scene, sound).

Each bake fills every (source slot, receiver node, yaw) of a scene with the observations the batched env would
compute, through the same torch pipeline (``spectrogram_store.spectrograms_for``), and finishes with the
fingerprint file that says what it was baked from.

- Baking writes ``{sound}.partial.npy`` plus ``{sound}.partial.json`` (fingerprint, sources done) and
  renames the file when complete: an interrupted bake resumes at the next source when nothing it was
  baked from has changed, and starts over otherwise; readers never see a partial file. A finished
  file whose fingerprint differs is baked again. A process bakes a file only while it holds
  ``{sound}.lock``, so runs may share a root.
- The partial file's disk space is reserved (``posix_fallocate``) when it is created or resumed: a disk or
  quota too full for it stops the bake there with a :class:`SpectrogramStoreError` naming the file, the size
  and the free space, where writing into a memory-mapped file the filesystem cannot extend would kill the
  process with SIGBUS midway. A new partial file that cannot be reserved is removed; a resumed one is kept
  (and resumed once there is room). Filesystems that cannot reserve space are baked into unreserved.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.io import atomic_write_text, exclusive_lock, load_npy, readable_size
from asgf_nav.tasks.spectrogram import TorchSpectrogram, default_batch
from asgf_nav.tasks.spectrogram_store import (
    SILENCED_KEY,
    SpectrogramStoreError,
    fingerprint_differences,
    fingerprint_path,
    raise_if_not_damage,
    read_json_file,
    refuses_silence,
    silenced_by_source,
    silenced_files,
    spectrograms_for,
    store_fingerprint,
    store_path,
    store_problem,
)
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)


def bake(
    root: str | Path,
    scene: TaskScene,
    sound: str,
    wave: np.ndarray,
    spectrogram: TorchSpectrogram,
    batch: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Path:
    """Bake (or finish baking) the store file of one (scene, sound); returns its path.

    A finished file baked from other data (its fingerprint differs) is baked again. ``progress(n)`` is
    called with the number of states done after each chunk (a tqdm ``update``). Two processes baking
    one root take turns on a file (the partial one is resumed in place, so two writers would corrupt
    it); the second finds it finished.
    """
    final = store_path(root, scene, sound)
    fingerprint = store_fingerprint(scene, sound, wave, spectrogram)
    if store_problem(final, fingerprint, refuses_silence(scene)) is None:
        return final
    with exclusive_lock(final.with_name(f"{sound}.lock"), f"spectrogram store {final}"):
        problem = store_problem(final, fingerprint, refuses_silence(scene))
        if problem is None:
            return final
        if final.exists():  # gone first: its fingerprint file is about to describe the new bake
            logger.warning("spectrogram store %s %s: baking it again", final, problem)
            final.unlink()
        return _bake_locked(final, scene, wave, spectrogram, fingerprint, batch, progress)


def _resumable_sources(partial: Path, state_file: Path, fingerprint: dict[str, Any]) -> tuple[int, list[str]]:
    """Sources an interrupted bake finished for the same fingerprint, and the RIR files it read as silence;
    (0, []) (logged) when it must start over."""
    if not partial.is_file():
        return 0, []
    state, problem = read_json_file(state_file)
    if problem is None and isinstance(state, dict) and state.get("fingerprint") == fingerprint:
        try:
            array = load_npy(partial, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise_if_not_damage(partial, err)
            logger.warning("discarding the partial bake %s: it is not a readable .npy file (%s)", partial, err)
            return 0, []
        try:
            silenced = silenced_files(state)
        except ValueError as exc:
            logger.warning(
                "discarding the partial bake %s: its state file %s is damaged (%s)", partial, state_file.name, exc
            )
            return 0, []
        if list(array.shape) == fingerprint["scene"]["shape"] and array.dtype == np.float32:
            return int(state.get("sources_done", 0)), silenced
        logger.warning("discarding the partial bake %s: it holds %s %s", partial, array.dtype, array.shape)
        return 0, []
    if problem == "missing":  # written after each source: nothing finished is lost
        logger.info("starting %s over: its bake stopped before its first source was done", partial)
        return 0, []
    if problem is not None:
        why = f"its state file {state_file.name} is {problem}"
    elif not isinstance(state, dict) or "fingerprint" not in state:
        why = f"its state file {state_file.name} records no fingerprint"
    else:
        why = f"it was baked from other data ({fingerprint_differences(state['fingerprint'], fingerprint)})"
    logger.warning("discarding the partial bake %s: %s", partial, why)
    return 0, []


def partial_path(final: Path) -> Path:
    """The file a bake of the store file ``final`` writes into until it is complete: ``{sound}.partial.npy``."""
    return final.with_name(f"{final.name[: -len('.npy')]}.partial.npy")


def allocated_bytes(path: Path) -> int:
    """Disk space ``path`` holds (its allocated blocks; 0 if it is missing): the part of its size a write into
    it no longer needs."""
    try:
        return path.stat().st_blocks * 512
    except (FileNotFoundError, AttributeError):  # st_blocks: POSIX only
        return 0


def reserve_space(path: Path) -> bool:
    """Allocate the disk space of all of ``path`` now (``posix_fallocate``; the bytes already written are kept),
    so that a disk or quota that cannot hold it fails here with an OSError (ENOSPC, EDQUOT), not with a SIGBUS at
    a write into the memory-mapped file. False where the platform or filesystem cannot reserve space (then the
    file stays as it is)."""
    if not hasattr(os, "posix_fallocate"):
        _warn_unreserved(path, "this platform has no posix_fallocate")
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            raise
        _warn_unreserved(path, f"the filesystem cannot: {err.strerror or err}")
        return False
    finally:
        os.close(fd)
    return True


_UNRESERVED_WARNED: set[str] = set()  # why space could not be reserved, warned of once per process


def _warn_unreserved(path: Path, why: str) -> None:
    """Once per reason: a bake writes a file per (scene, sound), each scene in its own folder."""
    level = logging.DEBUG if why in _UNRESERVED_WARNED else logging.WARNING
    _UNRESERVED_WARNED.add(why)
    logger.log(
        level, "cannot reserve the disk space of %s (%s): baking into it unreserved, so a disk that fills up "
        "during the bake ends it with a bus error (SIGBUS), not with an error naming the file: keep the space "
        "the bake needs (bake_spectrograms.py checks it as it starts) free until it ends", path, why,
    )  # fmt: skip


def _no_room_error(partial: Path, size: int, err: OSError, done: int, sources: int) -> SpectrogramStoreError:
    """The error of a partial file whose ``size`` bytes could not be reserved: what is free, what to do."""
    try:
        free = f"{readable_size(shutil.disk_usage(partial.parent).free)} free there"
    except OSError:
        free = "the free space could not be read"
    if done:
        held = f", {readable_size(allocated_bytes(partial))} of it already on disk"
        kept = f"the partial file is kept: baking again resumes at source {done + 1} of {sources}"
    else:
        held, kept = "", "the partial file was removed"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        quota = " (or have the disk quota raised)" if err.errno == errno.EDQUOT else ""
        advice = (
            f"free space on that filesystem{quota} and bake again, or bake to another root on a disk with room "
            "(bake_spectrograms.py --out DIR, and task.spectrogram_store=DIR in the runs)"
        )
    else:
        advice = "check the disk and that its directory is writable, or bake to another root (--out DIR)"
    return SpectrogramStoreError(
        f"cannot bake spectrogram store file {partial}: reserving its {readable_size(size)}{held} failed: "
        f"{err.strerror or err} ({free}); {kept}; {advice}"
    )


def _bake_locked(
    final: Path,
    scene: TaskScene,
    wave: np.ndarray,
    spectrogram: TorchSpectrogram,
    fingerprint: dict[str, Any],
    batch: int | None,
    progress: Callable[[int], Any] | None,
) -> Path:
    partial = partial_path(final)
    state_file = final.with_name(f"{final.name[: -len('.npy')]}.partial.json")
    shape = tuple(fingerprint["scene"]["shape"])
    size = int(np.prod(shape)) * 4  # the partial file, less its header
    done, silenced_before = _resumable_sources(partial, state_file, fingerprint)
    if silenced_before and refuses_silence(scene):  # its result would list them, which this policy refuses
        logger.warning(
            "discarding the partial bake %s: it read %d RIR files as silence (scenes.rir_on_missing=silence), "
            "which this bake's scenes.rir_on_missing=error refuses",
            partial, len(silenced_before),
        )  # fmt: skip
        done, silenced_before = 0, []
    silenced = set(silenced_before)  # the RIR files read as silence, by the interrupted bake too
    if done:
        array = load_npy(partial, mmap_mode="r+")
        logger.info("resuming %s at source %d of %d", final, done, shape[0])
        try:  # the sources still to bake are holes in the file: reserved now, not met as SIGBUS midway
            reserve_space(partial)
        except OSError as err:
            del array
            raise _no_room_error(partial, size, err, done, shape[0]) from err
    else:
        state_file.unlink(missing_ok=True)  # describes the old partial file, not the one written now
        try:  # numpy makes a sparse file: a write the disk has no room for would be a SIGBUS, no error
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
            reserve_space(partial)
        except OSError as err:
            array = None  # unmapped before it is removed
            partial.unlink(missing_ok=True)  # holds nothing baked: its space back
            raise _no_room_error(partial, size, err, 0, shape[0]) from err
    batch = int(batch or default_batch(spectrogram.device))
    wave_t = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    receivers = np.repeat(np.arange(scene.num_nodes), 4)
    yaws = np.tile(np.arange(4), scene.num_nodes)
    if progress is not None and done:
        progress(done * len(receivers))
    for slot in range(done, shape[0]):
        sources = np.full(len(receivers), int(scene.source_nodes[slot]))
        for start in range(0, len(receivers), batch):
            part = slice(start, start + batch)
            values = spectrograms_for(scene, wave_t, spectrogram, receivers[part], sources[part], yaws[part], batch)
            array[slot, receivers[part], yaws[part]] = values.cpu().numpy()
            if progress is not None:
                progress(len(values))
        array.flush()
        silenced.update(silenced_by_source(scene, int(scene.source_nodes[slot])))
        listed = {SILENCED_KEY: sorted(silenced)} if silenced else {}
        atomic_write_text(state_file, json.dumps({"fingerprint": fingerprint, "sources_done": slot + 1, **listed}))
    del array
    if silenced:
        logger.warning("spectrogram store %s: %d binaural RIR files were read as silence", final, len(silenced))
    # the fingerprint before the name: a finished file always has the fingerprint of its own bake; the files
    # read as silence only where there are some, so that an earlier release still reads the others
    listed = {SILENCED_KEY: sorted(silenced)} if silenced else {}
    atomic_write_text(fingerprint_path(final), json.dumps({**fingerprint, **listed}, indent=1))
    os.replace(partial, final)
    state_file.unlink(missing_ok=True)
    return final


def store_bytes(scenes: Sequence[TaskScene], sample_rate: int) -> int:
    """Disk space the store files of one sound over ``scenes`` take."""
    per_state = int(np.prod(TorchSpectrogram(sample_rate).shape)) * 4
    return per_state * sum(len(s.source_nodes) * s.num_nodes * 4 for s in scenes)


def stores_to_bake(root: str | Path, world: TaskWorld, sounds: Sequence[str]) -> list[tuple[TaskScene, str, str]]:
    """(scene, sound, why) of every store file of ``world`` that is missing or stale (to be baked)."""
    spectrogram = TorchSpectrogram(world.sample_rate)
    todo = []
    for scene in world.scenes.values():
        for sound in sounds:
            fingerprint = store_fingerprint(scene, sound, world.sound(sound), spectrogram)
            problem = store_problem(store_path(root, scene, sound), fingerprint, refuses_silence(scene))
            if problem is not None:
                todo.append((scene, sound, problem))
    return todo


def bake_world(
    root: str | Path,
    world: TaskWorld,
    sounds: Sequence[str],
    device: str | torch.device = "cpu",
    batch: int | None = None,
) -> list[Path]:
    """Bake every (scene, sound) of ``world`` not yet baked (or stale), with one progress bar over all states."""
    from tqdm.auto import tqdm

    from asgf_nav.logging_utils import bar_pacing

    spectrogram = TorchSpectrogram(world.sample_rate, device)
    todo = stores_to_bake(root, world, sounds)
    total = sum(len(scene.source_nodes) * scene.num_nodes * 4 for scene, _, _ in todo)
    paths = []
    with tqdm(total=total, unit="state", desc="baking spectrograms", smoothing=0.05, **bar_pacing()) as bar:
        for scene, sound, _ in todo:
            bar.set_postfix_str(f"{scene.name}/{sound}", refresh=False)
            paths.append(bake(root, scene, sound, world.sound(sound), spectrogram, batch, bar.update))
    return paths
