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

This module reads stores and says whether one fits a run; :mod:`asgf_nav.tasks.spectrogram_bake` writes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgf_nav.acoustics import rir as rendered_rirs
from asgf_nav.config import flatten_dotted
from asgf_nav.errors import UserInputError
from asgf_nav.io import limit_reached, load_npy, readable_size
from asgf_nav.logging_utils import decade_count, shell_command
from asgf_nav.scenes.soundspaces import SoundSpacesRirs, soundspaces_rirs
from asgf_nav.tasks.spectrogram import HOP_LENGTH, N_FFT, POOL, WIN_LENGTH, TorchSpectrogram
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


def silenced_files(baked: Any) -> list[str]:
    """The RIR files a fingerprint file (or a partial bake's state) lists as read as silence; none if absent.
    A list that is not one of file names raises ValueError: read as none, it would pass a silent file off as
    a clean one."""
    files = baked.get(SILENCED_KEY, []) if isinstance(baked, dict) else []
    if not isinstance(files, list) or not all(isinstance(name, str) and name for name in files):
        raise ValueError(f"its {SILENCED_KEY} is not a list of RIR file names: {str(files)[:80]}")
    return files


def read_json_file(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, what is wrong with the file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as err:
        raise_if_not_damage(path, err)
        return None, f"unreadable ({err})"


def raise_if_not_damage(path: Path, err: BaseException) -> None:
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
        raise_if_not_damage(path, err)
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
        raise_if_not_damage(path, err)  # the file may be fine: no "bake it again", and a bake must not delete it
        return f"is not a readable .npy file ({type(err).__name__}: {err})"
    expected = tuple(fingerprint["scene"]["shape"])
    if array.shape != expected or array.dtype != np.float32:
        return (
            f"holds {array.dtype} {array.shape}, scene {fingerprint['scene']['name']} at "
            f"{fingerprint['spectrogram']['sample_rate']} Hz needs float32 {expected}"
        )
    sidecar = fingerprint_path(path)
    baked, problem = read_json_file(sidecar)
    if problem == "missing":
        return f"has no fingerprint file {sidecar.name} (it was baked before stores recorded what they come from)"
    if problem:
        return f"has a fingerprint file {sidecar} that is {problem}"
    try:
        silenced = silenced_files(baked)
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
    baked, problem = read_json_file(sidecar)
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
        silenced = silenced_files(read_json_file(fingerprint_path(path))[0])
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
