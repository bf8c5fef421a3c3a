"""Baked spectrogram observations: every (receiver, yaw, source) of a scene for one sound, on disk.

Why: on a CPU one spectrogram miss (RIR render, FFT convolution, STFT) costs several milliseconds, and
training revisits too few states for any cache size to hide that (docs/task.md). When a split has few
sounds, as the heard task has (the telephone everywhere), all of a scene's spectrograms fit on disk:
about 36 kB per state at 44.1 kHz, 6.1 GB for the nine Replica training scenes. The batched env then
reads its misses from a memory-mapped file instead of computing them; the values are the ones it
would have computed (the same torch pipeline wrote them).

Layout: ``{root}/{dataset}/{scene}/{sound}.npy``, float32 of shape (S, N, 4, freq, time, 2), indexed
(source slot, receiver node, yaw index); source slots follow ``TaskScene.source_nodes``.

- Baking writes ``{sound}.partial.npy`` plus ``{sound}.partial.json`` (sources done) and renames the
  file when complete: an interrupted bake resumes at the next source, and readers never see a partial
  file. A process bakes a file only while it holds ``{sound}.lock``, so runs may share a root.
- Opening a file recomputes a few of its states and compares them, so a store baked from other RIRs,
  another sound or other spectrogram settings is refused with an error naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from asgf_nav.io import atomic_write_text, exclusive_lock
from asgf_nav.tasks.spectrogram import TorchSpectrogram, default_batch
from asgf_nav.tasks.world import TaskScene, TaskWorld

logger = logging.getLogger(__name__)

VERIFY_TOLERANCE = 1e-3  # log1p magnitudes are O(1-10); FFT-size rounding differences are ~1e-6


def spectrograms_for(
    scene: TaskScene,
    wave: torch.Tensor,
    spectrogram: TorchSpectrogram,
    receivers: Sequence[int],
    sources: Sequence[int],
    yaws: Sequence[int],
    batch: int | None = None,
) -> torch.Tensor:
    """(B, freq, time, 2) observations of one sound ``wave`` (sr,) at B (receiver, source node, yaw)."""
    rirs = [
        np.asarray(scene.rir(int(r), int(s), int(y)), dtype=np.float32) for r, s, y in zip(receivers, sources, yaws)
    ]
    waves = wave.to(spectrogram.device)[None].expand(len(rirs), -1)
    return spectrogram.from_rirs(waves, rirs, batch)


def store_path(root: str | Path, scene: TaskScene, sound: str) -> Path:
    return Path(root) / scene.dataset / scene.name / f"{sound}.npy"


class SpectrogramStore:
    """Read side: memory-maps baked files on first use, verifies them, serves gathers."""

    def __init__(self, root: str | Path, world: TaskWorld, spectrogram: TorchSpectrogram) -> None:
        self.root = Path(root)
        self.world = world
        self.spectrogram = spectrogram
        self._arrays: dict[tuple[str, str], np.ndarray | None] = {}
        self._slots: dict[str, np.ndarray] = {}

    def _slot_table(self, scene: TaskScene) -> np.ndarray:
        """node -> source slot, -1 for nodes that hold no source."""
        if scene.name not in self._slots:
            table = np.full(scene.num_nodes, -1, dtype=np.int64)
            table[np.asarray(scene.source_nodes, dtype=np.int64)] = np.arange(len(scene.source_nodes))
            self._slots[scene.name] = table
        return self._slots[scene.name]

    def _open(self, scene: TaskScene, sound: str) -> np.ndarray | None:
        key = (scene.name, sound)
        if key not in self._arrays:
            path = store_path(self.root, scene, sound)
            self._arrays[key] = self._verified(path, scene, sound) if path.is_file() else None
        return self._arrays[key]

    def _verified(self, path: Path, scene: TaskScene, sound: str) -> np.ndarray:
        try:
            array = np.load(path, mmap_mode="r")
        except ValueError as err:
            raise ValueError(f"spectrogram store {path} is not a readable .npy file: {err}") from None
        expected = (len(scene.source_nodes), scene.num_nodes, 4, *self.spectrogram.shape)
        if array.shape != expected or array.dtype != np.float32:
            raise ValueError(
                f"spectrogram store {path} holds {array.dtype} {array.shape}, scene {scene.name} at "
                f"{self.spectrogram.sample_rate} Hz needs float32 {expected}; delete it and bake again"
            )
        probes = [
            (0, 0, 0),
            (len(scene.source_nodes) - 1, scene.num_nodes - 1, 3),
            (len(scene.source_nodes) // 2, scene.num_nodes // 2, 1),
        ]
        slots, receivers, yaws = (np.array(v) for v in zip(*probes))
        wave = torch.from_numpy(self.world.sound(sound))
        live = (
            spectrograms_for(scene, wave, self.spectrogram, receivers, np.asarray(scene.source_nodes)[slots], yaws)
            .cpu()
            .numpy()
        )
        difference = float(np.max(np.abs(live - array[slots, receivers, yaws])))
        if not difference <= VERIFY_TOLERANCE:
            raise ValueError(
                f"spectrogram store {path} does not match the spectrograms computed now from scene "
                f"{scene.name} and sound {sound!r} (max difference {difference:.3g} > {VERIFY_TOLERANCE}); it was "
                "baked from other data or settings: delete it and run scripts/bake_spectrograms.py again"
            )
        logger.info("spectrogram store %s: %.1f GB, verified", path, array.nbytes / 1e9)
        return array

    def lookup(
        self, scene: TaskScene, sound: str, receivers: np.ndarray, sources: np.ndarray, yaws: np.ndarray
    ) -> np.ndarray | None:
        """(B, freq, time, 2) stored observations, or None when (scene, sound) is not baked."""
        array = self._open(scene, sound)
        if array is None:
            return None
        slots = self._slot_table(scene)[np.asarray(sources, dtype=np.int64)]
        if (slots < 0).any():
            return None
        return np.asarray(array[slots, np.asarray(receivers, dtype=np.int64), np.asarray(yaws, dtype=np.int64)])

    def baked(self) -> list[tuple[str, str]]:
        """(scene, sound) pairs opened so far that have a store file."""
        return [k for k, v in self._arrays.items() if v is not None]


def bake(
    root: str | Path,
    scene: TaskScene,
    sound: str,
    wave: np.ndarray,
    spectrogram: TorchSpectrogram,
    batch: int | None = None,
    progress=None,
) -> Path:
    """Bake (or finish baking) the store file of one (scene, sound); returns its path.

    ``progress(n)`` is called with the number of states done after each chunk (a tqdm ``update``).
    Two processes baking one root take turns on a file (the partial one is resumed in place, so two
    writers would corrupt it); the second finds it finished.
    """
    final = store_path(root, scene, sound)
    if final.is_file():
        return final
    with exclusive_lock(final.with_name(f"{sound}.lock"), f"spectrogram store {final}"):
        if final.is_file():
            return final
        return _bake_locked(final, scene, sound, wave, spectrogram, batch, progress)


def _bake_locked(
    final: Path,
    scene: TaskScene,
    sound: str,
    wave: np.ndarray,
    spectrogram: TorchSpectrogram,
    batch: int | None,
    progress,
) -> Path:
    partial = final.with_name(f"{sound}.partial.npy")
    state_file = final.with_name(f"{sound}.partial.json")
    shape = (len(scene.source_nodes), scene.num_nodes, 4, *spectrogram.shape)
    done = 0
    if partial.is_file() and state_file.is_file():
        state = json.loads(state_file.read_text())
        if tuple(state.get("shape", ())) == shape:
            done = int(state["sources_done"])
    if done:
        array = np.load(partial, mmap_mode="r+")
        logger.info("resuming %s at source %d of %d", final, done, shape[0])
    else:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
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
        atomic_write_text(state_file, json.dumps({"shape": list(shape), "sources_done": slot + 1}))
    del array
    os.replace(partial, final)
    state_file.unlink(missing_ok=True)
    return final


def store_bytes(scenes: Sequence[TaskScene], sample_rate: int) -> int:
    """Disk space the store files of one sound over ``scenes`` take."""
    per_state = int(np.prod(TorchSpectrogram(sample_rate).shape)) * 4
    return per_state * sum(len(s.source_nodes) * s.num_nodes * 4 for s in scenes)


def bake_world(
    root: str | Path,
    world: TaskWorld,
    sounds: Sequence[str],
    device: str | torch.device = "cpu",
    batch: int | None = None,
) -> list[Path]:
    """Bake every (scene, sound) of ``world`` not yet baked, with one progress bar over all states."""
    from tqdm.auto import tqdm

    spectrogram = TorchSpectrogram(world.sample_rate, device)
    todo = [
        (scene, sound)
        for scene in world.scenes.values()
        for sound in sounds
        if not store_path(root, scene, sound).is_file()
    ]
    total = sum(len(scene.source_nodes) * scene.num_nodes * 4 for scene, _ in todo)
    paths = []
    with tqdm(total=total, unit="state", desc="baking spectrograms", smoothing=0.05) as bar:
        for scene, sound in todo:
            bar.set_postfix_str(f"{scene.name}/{sound}")
            paths.append(bake(root, scene, sound, world.sound(sound), spectrogram, batch, bar.update))
    return paths
