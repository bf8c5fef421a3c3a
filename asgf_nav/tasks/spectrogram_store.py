"""Baked spectrogram observations: every (receiver, yaw, source) of a scene for one sound, on disk.

Why: on a CPU one spectrogram miss (RIR render, FFT convolution, STFT) costs several milliseconds, and
training revisits too few states for any cache size to hide that (docs/task.md). When a split has few
sounds, as the heard task has (the telephone everywhere), all of a scene's spectrograms fit on disk:
about 36 kB per state at 44.1 kHz, 6.1 GB for the nine Replica training scenes. The batched env then
reads its misses from a memory-mapped file instead of computing them; the values are the ones it
would have computed (the same torch pipeline wrote them).

Layout: ``{root}/{dataset}/{scene}/{sound}.npy``, float32 of shape (S, N, 4, freq, time, 2), indexed
(source slot, receiver node, yaw index); source slots follow ``TaskScene.source_nodes``.

- Each file has a fingerprint ``{sound}.json`` next to it: what it was baked from (see
  :func:`store_fingerprint`: the scene's RIRs with ``RENDER_VERSION``, a digest of the sound's
  waveform, the spectrogram settings). It is written before the ``.npy`` gets its final name, so a
  finished file always has the fingerprint of its own bake.
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
- On SoundSpaces data with ``scenes.rir_on_missing=silence``, the RIR files a bake read as silence are listed
  in its fingerprint file under ``rirs_replaced_by_silence`` (relative to the scene's RIR folder; not compared:
  absent, in a file of an earlier release too, means none known). An env that opens the file counts them as its
  world's (its spectrograms of them are silent, though no RIR is read), and one whose world has
  ``rir_on_missing=error`` refuses the file, as reading the RIRs would. A file baked while RIRs were silenced is
  not baked again when they are downloaded later: delete it to bake it from them. The probes below read RIRs
  through the world, which counts the files they find silenced as its own: not left out, as a probe passes with
  a silenced file only where the stored state is silent too, which the file then lists anyway (a file of an
  earlier release lists none, and the probes alone then tell that it serves silence).
- Opening a file checks its fingerprint, then recomputes four of its states (the first, middle and
  last source, each heard from the node farthest from it, and the first source on its own node) and
  compares them; a store baked from other RIRs, another sound or other spectrogram settings is refused with a
  :class:`SpectrogramStoreError` naming the file, what differs and the command that bakes it again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.acoustics import rir as rendered_rirs
from asgf_nav.config import flatten_dotted
from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write_text, exclusive_lock, limit_reached, load_npy, readable_size
from asgf_nav.logging_utils import decade_count, shell_command
from asgf_nav.scenes.soundspaces import SoundSpacesRirs, soundspaces_rirs
from asgf_nav.tasks.spectrogram import HOP_LENGTH, N_FFT, POOL, WIN_LENGTH, TorchSpectrogram, default_batch
from asgf_nav.tasks.world import TaskScene, TaskWorld, binaural_rirs

logger = logging.getLogger(__name__)

VERIFY_TOLERANCE = 1e-3  # log1p magnitudes are O(1-10); FFT-size rounding differences are ~1e-6
# in a fingerprint file (and a partial bake's state): the RIR files the bake read as silence, not compared
SILENCED_KEY = "rirs_replaced_by_silence"


class SpectrogramStoreError(UserInputError, ValueError):
    """A store file that cannot serve the run: unreadable, or baked from other RIRs, sound or settings."""


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
    rirs = binaural_rirs((scene, r, s, y) for r, s, y in zip(receivers, sources, yaws))
    waves = wave.to(spectrogram.device)[None].expand(len(rirs), -1)
    return spectrogram.from_rirs(waves, rirs, batch)


def store_path(root: str | Path, scene: TaskScene, sound: str) -> Path:
    return Path(root) / scene.dataset / scene.name / f"{sound}.npy"


def fingerprint_path(path: Path) -> Path:
    """The fingerprint file ``{sound}.json`` of the store file ``{sound}.npy``."""
    return path.with_name(f"{path.name[: -len('.npy')]}.json")


# ------------------------------------------------------------------------------------------ fingerprints
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def rir_identity(scene: TaskScene) -> dict[str, Any]:
    """What the RIRs of ``scene`` are made from, as far as the scene tells.

    Baked scenes (``SceneRirs``): the acoustics stage's meta (bake settings, layout digest),
    ``RENDER_VERSION`` and whether the travel time is cut, which together fix every rendered response.
    SoundSpaces scenes: the dataset and scene only, so that the same data read through another path
    (relative or absolute root, a moved folder) stays valid; RIR files replaced in place are caught by the
    verification probes alone. The files a bake read as silence are listed beside the fingerprint
    (``SILENCED_KEY``), which a world with ``rir_on_missing=error`` refuses (:func:`store_problem`). Other
    RIR functions (synthetic and test worlds) are unidentified: only the probes guard them.
    """
    owner = getattr(scene.rir, "__self__", None)
    if isinstance(owner, rendered_rirs.SceneRirs):
        found = {"source": "baked acoustics", "render_version": rendered_rirs.RENDER_VERSION, "acoustics": owner.meta}
        return found if owner.travel_time else {**found, "start": "straight-line arrival"}
    if isinstance(owner, SoundSpacesRirs):
        return {"source": "soundspaces", "dataset": owner.paths.dataset, "scene": owner.scene}
    return {"source": "unidentified"}


def store_fingerprint(scene: TaskScene, sound: str, wave: np.ndarray, spectrogram: TorchSpectrogram) -> dict[str, Any]:
    """Everything a store file's values depend on, as JSON data (compared on open and on resume)."""
    fingerprint = {
        "scene": {
            "dataset": scene.dataset,
            "name": scene.name,
            "shape": [len(scene.source_nodes), scene.num_nodes, 4, *spectrogram.shape],
            "source_nodes": _digest(np.asarray(scene.source_nodes, dtype=np.int64).tobytes()),
        },
        "rirs": rir_identity(scene),
        "sound": {"name": sound, "sha256": _digest(np.ascontiguousarray(wave, dtype=np.float32).tobytes())},
        "spectrogram": {
            "sample_rate": spectrogram.sample_rate,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "win_length": WIN_LENGTH,
            "pool": POOL,
        },
    }
    return json.loads(json.dumps(fingerprint))  # tuples as lists: equal to what a file reads back


def fingerprint_differences(baked: Any, now: dict[str, Any], limit: int = 6) -> str:
    """``key: baked X, now Y`` for each differing entry (the first ``limit``), e.g. ``rirs.render_version``."""
    old, new = flatten_dotted(baked), flatten_dotted(now)
    missing = "(none)"

    def shown(values: dict[str, Any], key: str) -> str:
        if key in values:
            return repr(values[key])
        if key == "rirs.start" and values.get("rirs.source") == "baked acoustics":  # responses that keep the
            return "'emission' (task.keep_travel_time=true)"  # travel time record no start: they begin at emission
        return repr(missing)

    lines = [
        f"{key}: baked {shown(old, key)}, now {shown(new, key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]
    more = f" and {len(lines) - limit} more" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def silenced_by_source(scene: TaskScene, source_node: int) -> list[str]:
    """The RIR files of the states of ``source_node`` (every receiver and yaw) that ``scene``'s SoundSpaces RIRs
    replaced by silence, relative to the scene's RIR folder (the same data under another root names the same
    files); none for other RIRs."""
    owner = soundspaces_rirs(scene)
    if owner is None or not owner.silenced:
        return []
    folder = owner.paths.rir_dir(owner.scene)
    paths = (owner.path(receiver, source_node, yaw) for receiver in range(scene.num_nodes) for yaw in range(4))
    return sorted(str(path.relative_to(folder)) for path in paths if str(path) in owner.silenced)


def refuses_silence(scene: TaskScene) -> bool:
    """Whether ``scene``'s RIRs refuse a missing file (SoundSpaces' ``rir_on_missing=error``), so a store file
    baked while some were silence must not serve them either."""
    owner = soundspaces_rirs(scene)
    return owner is not None and owner.on_missing == "error"


def _silenced_files(baked: Any) -> list[str]:
    """The RIR files a fingerprint file (or a partial bake's state) lists as read as silence; none if absent.
    A list that is not one of file names raises ValueError: read as none, it would pass a silent file off as
    a clean one."""
    files = baked.get(SILENCED_KEY, []) if isinstance(baked, dict) else []
    if not isinstance(files, list) or not all(isinstance(name, str) and name for name in files):
        raise ValueError(f"its {SILENCED_KEY} is not a list of RIR file names: {str(files)[:80]}")
    return files


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, what is wrong with the file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as err:
        _raise_if_not_damage(path, err)
        return None, f"unreadable ({err})"


def _raise_if_not_damage(path: Path, err: BaseException) -> None:
    """A process limit (open files) or a permission stopped the read: the file may be fine, and a bake must
    not delete it or start its partial bake over (in a shared store, another user's)."""
    limit = limit_reached(err)
    if limit:
        raise SpectrogramStoreError(f"cannot read spectrogram store file {path}: {limit}") from err
    if isinstance(err, PermissionError):
        raise SpectrogramStoreError(
            f"cannot read spectrogram store file {path}: {err.strerror} (another user's store, made without read "
            "permission for you?); ask its owner to make the store readable (chmod -R a+rX on its directory), or give "
            "this run a store of its own (task.spectrogram_store=DIR, baked with scripts/bake_spectrograms.py --out "
            "DIR) or none (task.spectrogram_store='', spectrograms computed as the run goes)"
        ) from err


def _is_file(path: Path) -> bool:
    """``path.is_file()``, where a directory the user may not enter is not taken for a missing file."""
    try:
        return path.is_file()  # an unreadable file is: reading it says whose it is
    except PermissionError as err:
        _raise_if_not_damage(path, err)
        raise


def store_problem(path: Path, fingerprint: dict[str, Any], refuse_silenced: bool = False) -> str | None:
    """Why the finished store file ``path`` cannot serve ``fingerprint``, or None when it can; with
    ``refuse_silenced`` (:func:`refuses_silence`), a file baked while RIR files were silence cannot either.

    The cheap checks only (the .npy header and the fingerprint file); opening a store also recomputes a
    few states. The text follows ``spectrogram store {path}``.
    """
    if not _is_file(path):
        return "does not exist"
    try:
        array = load_npy(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        _raise_if_not_damage(path, err)  # the file may be fine: no "bake it again", and a bake must not delete it
        return f"is not a readable .npy file ({type(err).__name__}: {err})"
    expected = tuple(fingerprint["scene"]["shape"])
    if array.shape != expected or array.dtype != np.float32:
        return (
            f"holds {array.dtype} {array.shape}, scene {fingerprint['scene']['name']} at "
            f"{fingerprint['spectrogram']['sample_rate']} Hz needs float32 {expected}"
        )
    sidecar = fingerprint_path(path)
    baked, problem = _read_json(sidecar)
    if problem == "missing":
        return f"has no fingerprint file {sidecar.name} (it was baked before stores recorded what they come from)"
    if problem:
        return f"has a fingerprint file {sidecar} that is {problem}"
    try:
        silenced = _silenced_files(baked)
    except ValueError as exc:
        return f"has a fingerprint file {sidecar} that is damaged ({exc})"
    if isinstance(baked, dict):
        baked = {key: value for key, value in baked.items() if key != SILENCED_KEY}
    if baked != fingerprint:
        return f"was baked from other data than the run uses ({fingerprint_differences(baked, fingerprint)})"
    if refuse_silenced and silenced:
        return (
            f"was baked with {len(silenced)} binaural RIR files replaced by silence (scenes.rir_on_missing=silence; "
            f"e.g. {silenced[0]}), which this run's scenes.rir_on_missing=error refuses"
        )
    return None


def scene_split(scene: TaskScene) -> str | None:
    """The split of ``scene`` in its preset (each preset scene belongs to one split), or None when the
    preset does not know it (SoundSpaces scenes of other names, synthetic worlds)."""
    from asgf_nav.scenes.presets import PRESETS

    preset = PRESETS.get(scene.dataset)
    if preset is None:
        return None
    try:
        return preset.split_of(scene.name)
    except KeyError:  # UnknownSceneError
        return None


def differs_in_travel_time_only(sidecar: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether the fingerprint file ``sidecar`` is ``fingerprint`` but for where the responses start (their
    travel time kept or cut, ``task.keep_travel_time``): a store of the same scene and sound another run uses."""
    baked, problem = _read_json(sidecar)
    if problem or not isinstance(baked, dict):
        return False
    baked = {key: value for key, value in baked.items() if key != SILENCED_KEY}
    old, new = flatten_dotted(baked), flatten_dotted(fingerprint)
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)} == {"rirs.start"}


def rebake_command(
    root: Path, scene: TaskScene, sound: str, split: str | None = None, config: str | None = None
) -> str:
    """The command that bakes one store file again (it replaces a stale one), runnable as printed where
    the scene tells everything it needs.

    It names the scenes' data root (a baked scene's ``DATA_ROOT/scenes/DATASET/SCENE``, or the SoundSpaces
    root), the dataset, the split (``split``, else the scene's split in its preset) and ``config`` when
    given. What is unknown stays a placeholder, ``<config>`` or ``<split>``, and the command says what to
    put there. The options come in an order that lets the run's overrides be appended at the end.
    """
    owner = getattr(scene.rir, "__self__", None)
    split = split or scene_split(scene)
    words = ["python", "scripts/bake_spectrograms.py", "--config", shlex.quote(config) if config else "<config>"]
    if isinstance(owner, rendered_rirs.SceneRirs):
        directory = Path(owner.store.directory)  # DATA_ROOT/scenes/DATASET/SCENE
        words += ["--dataset", shlex.quote(scene.dataset), "--data-root", shlex.quote(str(directory.parents[2]))]
        # as the world hears the responses, with their travel time or without: a run's config may say otherwise
        # (an evaluation takes the checkpoint's), and a bake that differs would be stale again
        words.append(f"task.keep_travel_time={'true' if owner.travel_time else 'false'}")
    elif isinstance(owner, SoundSpacesRirs):
        words += ["--dataset", shlex.quote(scene.dataset)]
        if owner.data_root is not None:  # else the bake would import the scene again under ./data
            words += ["--data-root", shlex.quote(str(owner.data_root))]
        words.append("scenes.source=soundspaces")
        words.append(shlex.quote(f"scenes.soundspaces_root={owner.paths.root}"))
    words += ["--split", split or "<split>", "--scenes", shlex.quote(scene.name), "--sounds", shlex.quote(sound)]
    words += ["--out", shlex.quote(str(root))]
    placeholders = {"<config>: the run's config": config, "<split>: the run's split": split}
    filled = "".join(f"{name}; " for name, known in placeholders.items() if not known)
    return " ".join(words) + f" ({filled}the run's config overrides, if any, go at the end)"


# ------------------------------------------------------------------------------------------ reading
def verification_probes(scene: TaskScene) -> list[tuple[int, int, int]]:
    """(source slot, receiver, yaw) states recomputed when a store opens.

    The first, middle and last source slot, each heard from the node farthest from its source, where
    most renderer changes (such as where the late tail starts) show; and the first source heard on its
    own node, which alone changed when that node got its direct sound (``RENDER_VERSION`` 3).
    """
    positions = np.asarray(scene.positions, dtype=np.float64)
    slots = len(scene.source_nodes)
    probes = []
    for slot, yaw in ((0, 0), (slots // 2, 1), (slots - 1, 3)):
        source = int(scene.source_nodes[slot])
        receiver = int(np.argmax(np.linalg.norm(positions - positions[source], axis=1)))
        probes.append((slot, receiver, yaw))
    probes.append((0, int(scene.source_nodes[0]), 2))
    return probes


class SpectrogramStore:
    """Read side: memory-maps baked files on first use, verifies them, serves gathers.

    ``split`` and ``config`` (the run's, when the caller knows them) fill in the bake command a stale file's
    refusal prints; without them it names the split of the scene's preset, and ``<config>``."""

    def __init__(
        self,
        root: str | Path,
        world: TaskWorld,
        spectrogram: TorchSpectrogram,
        split: str | None = None,
        config: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.split, self.config = split, config
        self.world = world
        self.spectrogram = spectrogram
        self._arrays: dict[tuple[str, str], np.ndarray | None] = {}
        self._slots: dict[str, np.ndarray] = {}
        self._verified_count, self._verified_bytes = 0, 0

    def _slot_table(self, scene: TaskScene) -> np.ndarray:
        """node -> source slot, -1 for nodes that hold no source."""
        if scene.name not in self._slots:
            table = np.full(scene.num_nodes, -1, dtype=np.int64)
            table[np.asarray(scene.source_nodes, dtype=np.int64)] = np.arange(len(scene.source_nodes))
            self._slots[scene.name] = table
        return self._slots[scene.name]

    def _rebake(self, scene: TaskScene, sound: str) -> str:
        return rebake_command(self.root, scene, sound, self.split, self.config)

    def _open(self, scene: TaskScene, sound: str) -> np.ndarray | None:
        key = (scene.name, sound)
        if key not in self._arrays:
            path = store_path(self.root, scene, sound)
            self._arrays[key] = self._verified(path, scene, sound) if _is_file(path) else None
        return self._arrays[key]

    def _verified(self, path: Path, scene: TaskScene, sound: str) -> np.ndarray:
        """The memory-mapped file, once its header, fingerprint and a few recomputed states match the run."""
        wave = self.world.sound(sound)
        fingerprint = store_fingerprint(scene, sound, wave, self.spectrogram)
        problem = store_problem(path, fingerprint, refuses_silence(scene))
        if problem is not None and differs_in_travel_time_only(fingerprint_path(path), fingerprint):
            # another run's store, of the same responses with (or without) their travel time: keep both
            kept = "start" not in fingerprint["rirs"]  # this run's responses keep their travel time
            other = self.root.with_name(f"{self.root.name}_{'travel_time' if kept else 'no_travel_time'}")
            raise SpectrogramStoreError(
                f"spectrogram store {path} {problem}: it is the store of runs with the other task.keep_travel_time. "
                f"To keep it, give this run a root of its own, {shell_command(f'task.spectrogram_store={other}')}, "
                f"baked with {rebake_command(other, scene, sound, self.split, self.config)}; or bake it again here "
                f"(this replaces it): {self._rebake(scene, sound)}"
            )
        if problem is not None:
            raise SpectrogramStoreError(
                f"spectrogram store {path} {problem}; run without the store (task.spectrogram_store='': spectrograms "
                f"computed as the run goes), or bake it again (this replaces it): {self._rebake(scene, sound)}"
            )
        array = load_npy(path, mmap_mode="r")
        slots, receivers, yaws = (np.array(v) for v in zip(*verification_probes(scene)))
        live = (
            spectrograms_for(
                scene, torch.from_numpy(wave), self.spectrogram, receivers, np.asarray(scene.source_nodes)[slots], yaws
            )
            .cpu()
            .numpy()
        )
        difference = float(np.max(np.abs(live - array[slots, receivers, yaws])))
        if not difference <= VERIFY_TOLERANCE:
            raise SpectrogramStoreError(
                f"spectrogram store {path} does not match the spectrograms computed now from scene "
                f"{scene.name} and sound {sound!r} (max difference {difference:.3g} > {VERIFY_TOLERANCE}) although "
                f"its fingerprint {fingerprint_path(path).name} does; it was baked from other data or settings: "
                f"delete it and bake it again: {self._rebake(scene, sound)}"
            )
        self._verified_count, self._verified_bytes = self._verified_count + 1, self._verified_bytes + array.nbytes
        # opened lazily, one per (scene, sound) drawn, again by each env built: not a line for each file
        level = logging.INFO if decade_count(self._verified_count) else logging.DEBUG
        logger.log(
            level, "spectrogram store %s: %d file(s) opened and verified so far, %s (the latest %s)",
            self.root, self._verified_count, readable_size(self._verified_bytes), path.relative_to(self.root),
        )  # fmt: skip
        self._count_silenced(path, scene)
        return array

    def _count_silenced(self, path: Path, scene: TaskScene) -> None:
        """Count the RIR files the store file ``path`` was baked with as silence as the world's own: its
        spectrograms of them are silent, though no RIR is read (an evaluation's summary says so)."""
        owner = soundspaces_rirs(scene)
        silenced = _silenced_files(_read_json(fingerprint_path(path))[0])
        if owner is None or not silenced:
            return
        folder = owner.paths.rir_dir(owner.scene)
        owner.count_silenced(folder / name for name in silenced)
        logger.warning(
            "spectrogram store %s was baked with %d binaural RIR files replaced by silence (e.g. %s): its "
            "spectrograms of them are silent, and counted as heard as silence",
            path, len(silenced), folder / silenced[0],
        )  # fmt: skip

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


# ------------------------------------------------------------------------------------------ baking
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
    state, problem = _read_json(state_file)
    if problem is None and isinstance(state, dict) and state.get("fingerprint") == fingerprint:
        try:
            array = load_npy(partial, mmap_mode="r")
        except (ValueError, OSError) as err:
            _raise_if_not_damage(partial, err)
            logger.warning("discarding the partial bake %s: it is not a readable .npy file (%s)", partial, err)
            return 0, []
        try:
            silenced = _silenced_files(state)
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
