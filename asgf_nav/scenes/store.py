"""Baked scene store: one directory per (dataset, scene) holding memory-mappable ``.npy`` arrays.

A scene is baked in *stages* ("layout", "vision", "acoustics", ...). Each stage writes its arrays
atomically and is recorded in ``manifest.json`` only after all of them are on disk, so an interrupted
build leaves either the previous complete stage or no stage, never a half one that loads.

Layout::

    {root}/scenes/{dataset}/{scene}/manifest.json
    {root}/scenes/{dataset}/{scene}/{array}.npy
    {root}/scenes/{dataset}/{scene}/{file}          # small extra files, e.g. floorplan.json
    {root}/scenes/{dataset}/{scene}/.bake.lock      # held while a process bakes the scene
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from asgf_nav.config import is_whole_number
from asgf_nav.errors import UserInputError
from asgf_nav.io import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_text,
    exclusive_lock,
    is_plain_file_name,
    limit_reached,
    load_npy,
    lock_held,
)
from asgf_nav.logging_utils import shell_command

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BAKE_LOCK = ".bake.lock"


class SceneStoreError(UserInputError, RuntimeError):
    """A scene directory is missing, incomplete, of another format version, or corrupt."""


class SceneAccessError(SceneStoreError):
    """A scene file the user may not read: no damage, so never a reason to bake the scene again (over the files
    of another user who baked a shared data root with a umask that leaves them unreadable to others)."""


def access_error(path: Path, exc: OSError) -> SceneAccessError:
    return SceneAccessError(
        f"cannot read {path}: {exc.strerror or exc} (a data root another user baked without read permission for "
        "you?); ask its owner to make it readable (chmod -R a+rX on the data root), or point scenes.data_root at "
        "a copy of your own"
    )


def scene_dir(root: str | Path, dataset: str, scene: str) -> Path:
    return Path(root) / "scenes" / dataset / scene


def is_later_format(version: Any) -> bool:
    """Whether a manifest's ``format_version`` is one a later release of asgf-nav writes."""
    return isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION


def later_format_message(path: Path, version: Any) -> str:
    """Why the manifest ``path`` of a later format is neither read nor baked over without ``--force``."""
    return (
        f"scene manifest {path} has format_version {version}: the scene was baked by a later release of asgf-nav "
        f"(this release reads format {FORMAT_VERSION}); update asgf-nav to read it, or, to overwrite it with this "
        f"release's format, {rebuild_hint(path, any_lock=True)}"
    )


def later_format(directory: str | Path) -> int | None:
    """The ``format_version`` of the scene's manifest when a later release wrote it (see
    :func:`is_later_format`), else None (no manifest, this release's or an earlier format, or no manifest at
    all). A build or an import refuses to write over it unless forced: :func:`refuse_later_format`."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    return version if is_later_format(version) else None


def refuse_later_format(directory: str | Path, force: bool) -> None:
    """A scene baked (or imported) in a later release's store format (a data root shared with a newer
    asgf-nav) is not baked or imported over unless ``force``: this release cannot read it, and the later one
    would have to bake it again."""
    version = later_format(directory)
    if version is not None and not force:
        raise SceneStoreError(later_format_message(Path(directory) / MANIFEST, version))


def _read_manifest(directory: Path, writing: bool = False) -> dict[str, Any]:
    """The scene's manifest. One of another format version, or one that is not a manifest or not JSON at
    all, cannot be read; a write starts a new one, so baking the scene again replaces its stages (a build
    refuses to do so over a later release's format unless forced: :func:`later_format`)."""
    path = directory / MANIFEST
    empty = {"format_version": FORMAT_VERSION, "stages": {}}
    try:
        if not path.exists():
            return empty
        text = path.read_text(encoding="utf-8")
    except PermissionError as exc:
        raise access_error(path, exc) from exc
    except OSError as exc:
        raise SceneStoreError(f"unreadable scene manifest {path}: {exc}") from exc
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # e.g. truncated by a full disk or a copy
        if writing:
            return empty
        raise SceneStoreError(f"scene manifest {path} is not valid JSON ({exc}); {rebuild_hint(path)}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
        if writing:
            return empty
        raise SceneStoreError(f"scene manifest {path} is not a manifest (no 'stages' mapping); {rebuild_hint(path)}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        if writing:
            return empty
        if is_later_format(version):
            raise SceneStoreError(later_format_message(path, version))
        raise SceneStoreError(
            f"scene manifest {path} has format_version {version!r}, this code reads {FORMAT_VERSION}; "
            f"{rebuild_hint(path)}"
        )
    return manifest


IMPORTED_PREFIX = "soundspaces_"  # {root}/scenes/soundspaces_{dataset}/: imported SoundSpaces scenes


def rebuild_hint(path: Path, stage: str | None = None, any_lock: bool = False) -> str:
    """The command that bakes (or imports) a damaged scene again: with ``--force``, since a manifest written
    before file sizes were recorded still calls the stage complete; a scene never baked, without. A scene whose
    bake lock is held is named as being baked, unless ``any_lock`` (the caller may hold it, or the scene's state
    is no bake's half-written one)."""
    directory = path.parent
    dataset, root = directory.parent.name, directory.parent.parent.parent
    if directory.parent.parent.name != "scenes":  # not DATA_ROOT/scenes/DATASET/SCENE: no arguments to make up
        if (directory / MANIFEST).exists():
            return f"bake it again with scripts/build_scenes.py --force (for the scene stored at {directory})"
        inside = sorted(d.name for d in directory.glob("*") if (d / MANIFEST).is_file()) if directory.is_dir() else []
        held = f"; it holds the scenes {inside}" if inside else ""
        return f"{directory} is not a scene directory (DATA_ROOT/scenes/DATASET/SCENE){held}"
    # a scene never baked (no manifest) needs no "again" nor --force: what is missing is baked anyway
    again, forced = ("", []) if path.name == MANIFEST and not path.exists() else (" again", ["--force"])
    if dataset.startswith(IMPORTED_PREFIX):
        command = shell_command(
            "python", "scripts/import_soundspaces.py", "--root", "SOUNDSPACES_ROOT",
            "--dataset", dataset.removeprefix(IMPORTED_PREFIX), "--data-root", root,
            "--scenes", directory.name, *forced,
        )  # fmt: skip
        return f"import it{again}: {command}"
    if not any_lock and lock_held(directory / BAKE_LOCK):  # not damaged: still being written
        return f"another process is baking it right now ({directory / BAKE_LOCK} is held): wait for that bake to end"
    stages = ["--stages", stage] if stage else []
    command = shell_command(
        "python", "scripts/build_scenes.py", "--dataset", dataset, "--data-root", root,
        "--scenes", directory.name, *stages, *forced,
    )  # fmt: skip
    return f"bake it{again}: {command} {SAME_SETTINGS}"


SAME_SETTINGS = "(add the run's --config and acoustics.* overrides, if any, right after build_scenes.py)"


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def write_stage(
    directory: str | Path,
    stage: str,
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
    files: dict[str, bytes | str] | None = None,
) -> None:
    """Write one stage's arrays and files, then record the stage in the manifest (last, atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(directory, writing=True)
    if stage in manifest["stages"]:  # forget the old stage first: a crash below must not pair old meta with new data
        del manifest["stages"][stage]
        _write_manifest(directory, manifest)
    entries = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        path = atomic_save_npy(directory / f"{name}.npy", array)
        entries[name] = {
            "file": path.name, "shape": list(array.shape), "dtype": str(array.dtype), "bytes": path.stat().st_size,
        }  # fmt: skip
    file_bytes = {}
    for name, content in (files or {}).items():
        data = content.encode() if isinstance(content, str) else content
        atomic_write_bytes(directory / name, data)
        file_bytes[name] = len(data)
    manifest["stages"][stage] = {
        "arrays": entries,
        "files": sorted(file_bytes),
        "file_bytes": file_bytes,
        "meta": meta or {},
    }
    _write_manifest(directory, manifest)


def update_stage_meta(directory: str | Path, stage: str, **changes: Any) -> None:
    """Change entries of a recorded stage's metadata, its files untouched (the manifest replaced atomically)."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    manifest["stages"][stage]["meta"].update(changes)
    _write_manifest(directory, manifest)


def bake_lock(directory: str | Path) -> AbstractContextManager[bool]:
    """A scene's bake lock, held while deciding what to bake and baking it.

    Two runs started on one fresh data root (heard and unheard side by side) would otherwise bake every
    scene twice and overwrite each other's manifest; with the lock the second waits, then finds the
    stages current. Yields whether the lock is really held (see :func:`asgf_nav.io.exclusive_lock`).
    """
    return exclusive_lock(Path(directory) / BAKE_LOCK, f"scene {directory}")


def remove_stage(directory: str | Path, stage: str) -> None:
    directory = Path(directory)
    manifest = _read_manifest(directory, writing=True)
    if manifest["stages"].pop(stage, None) is not None:
        _write_manifest(directory, manifest)


def stage_complete(directory: str | Path, stage: str) -> bool:
    """True when ``stage`` is recorded and every file it lists exists with the size it was written with (cheap
    check for build skipping: a truncated or emptied file makes the stage incomplete, so a build bakes it again;
    so does a malformed entry in the manifest). Manifests written before sizes were recorded are checked for
    existence only."""
    return stage_damage(directory, stage) is None


def stage_damage(directory: str | Path, stage: str) -> str | None:
    """Why ``stage`` is not complete (see :func:`stage_complete`), naming the file at fault; None when it is."""
    directory = Path(directory)
    try:
        info = _read_manifest(directory)["stages"].get(stage)
    except SceneAccessError:  # not damage: a build must not bake over it
        raise
    except SceneStoreError as exc:
        return str(exc)
    if info is None:
        return f"scene {directory} lacks stage {stage!r}"
    problem = _stage_problem(info)
    if problem is not None:
        return f"scene manifest {directory / MANIFEST} is damaged: its stage {stage!r} {problem}"
    for name, size in _stage_file_sizes(info).items():
        path = directory / name
        try:
            if not path.is_file():
                return f"scene {directory} lacks {path}, a file of its stage {stage!r}"
            actual = path.stat().st_size
        except PermissionError as exc:
            raise access_error(path, exc) from exc
        if size is not None and actual != size:
            return f"scene file {path} is {actual} bytes but was written with {size}: the file is damaged"
    return None


def _stage_problem(info: Any) -> str | None:
    """What makes a recorded stage's manifest entry unusable (None: nothing). ``write_stage`` writes none of
    these; a manifest edited by hand or damaged in a copy can hold them, and its stage is then incomplete."""
    if not isinstance(info, dict):
        return f"is a JSON {type(info).__name__}, not a mapping"
    for key, kind in (("arrays", dict), ("files", list), ("meta", dict)):
        if not isinstance(info.get(key), kind):
            return f"has no {key!r} {'list' if kind is list else 'mapping'}"
    if not isinstance(info.get("file_bytes", {}), dict):
        return "has a 'file_bytes' that is not a mapping"
    if not all(is_plain_file_name(name) for name in info["files"]):  # a path would read from outside the scene
        return "lists a file that is not a plain file name in the scene's folder"
    for name, entry in info["arrays"].items():
        if not isinstance(entry, dict):
            return f"records array {name!r} as a JSON {type(entry).__name__}, not a mapping"
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            return f"records array {name!r} without a 'file'"
        if not is_plain_file_name(entry["file"]):
            return f"records array {name!r} in {entry['file']!r}, not a plain file name in the scene's folder"
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(map(is_whole_number, shape)):
            return f"records array {name!r} without a 'shape' list of integers"
        if not isinstance(entry.get("dtype"), str):
            return f"records array {name!r} without a 'dtype'"
    sizes = [e.get("bytes") for e in info["arrays"].values()] + list(info.get("file_bytes", {}).values())
    if not all(size is None or is_whole_number(size) for size in sizes):
        return "records a file size that is not an integer"
    return None


def _stage_file_sizes(info: dict[str, Any]) -> dict[str, int | None]:
    """A stage's files and the sizes they were written with (None: recorded before sizes were)."""
    sizes = {e["file"]: e.get("bytes") for e in info["arrays"].values()}
    sizes.update({name: info.get("file_bytes", {}).get(name) for name in info["files"]})
    return sizes


class SceneStore:
    """Read-only view of one baked scene; arrays are memory-mapped and checked against the manifest."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).exists():
            raise SceneStoreError(
                f"no baked scene at {self.directory} (missing {MANIFEST}); {rebuild_hint(self.directory / MANIFEST)}"
            )
        self.manifest = _read_manifest(self.directory)
        # stage -> what is wrong with its manifest entry; such a stage is recorded but cannot be read
        self._malformed = {s: why for s, info in self.manifest["stages"].items() if (why := _stage_problem(info))}
        self._cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def stages(self) -> list[str]:
        return sorted(self.manifest["stages"])

    def has_stage(self, stage: str) -> bool:
        return stage in self.manifest["stages"]

    def require(self, *stages: str) -> None:
        """Refuse a stage that is not recorded, or whose manifest entry is malformed (naming what is wrong)."""
        missing = [s for s in stages if not self.has_stage(s)]
        if missing:
            raise SceneStoreError(
                f"scene {self.directory} lacks stage(s) {missing} (has {self.stages}); "
                f"{rebuild_hint(self.directory / MANIFEST, ' '.join(missing))}"
            )
        malformed = [s for s in stages if s in self._malformed]
        if malformed:
            raise self._malformed_error(malformed)

    def _malformed_error(self, stages: list[str]) -> SceneStoreError:
        path = self.directory / MANIFEST
        problems = "; ".join(f"its stage {s!r} {self._malformed[s]}" for s in stages)  # as stage_damage says
        return SceneStoreError(f"scene manifest {path} is damaged: {problems}; {rebuild_hint(path, ' '.join(stages))}")

    def _stages_read(self) -> dict[str, dict[str, Any]]:
        """The stages whose manifest entries are well formed."""
        return {s: info for s, info in self.manifest["stages"].items() if s not in self._malformed}

    def meta(self, stage: str) -> dict[str, Any]:
        self.require(stage)
        return self.manifest["stages"][stage]["meta"]

    def _entry(self, name: str) -> dict[str, Any]:
        for info in self._stages_read().values():
            if name in info["arrays"]:
                return info["arrays"][name]
        if self._malformed:  # the array may be one of theirs
            raise self._malformed_error(sorted(self._malformed))
        known = sorted(n for info in self.manifest["stages"].values() for n in info["arrays"])
        raise SceneStoreError(f"scene {self.directory} has no array {name!r}; it has {known}")

    def array(self, name: str) -> np.ndarray:
        """Memory-mapped array ``name``; shape and dtype are checked against the manifest."""
        if name in self._cache:
            return self._cache[name]
        entry = self._entry(name)
        path = self.directory / entry["file"]
        try:
            arr = load_npy(path, mmap_mode="r")
        except PermissionError as exc:
            raise access_error(path, exc) from exc
        except (OSError, ValueError) as exc:
            why = limit_reached(exc) or f"{exc or type(exc).__name__}; {self.rebuild_hint(path)}"
            raise SceneStoreError(f"cannot read scene array {path}: {why}") from exc
        if list(arr.shape) != entry["shape"] or str(arr.dtype) != entry["dtype"]:
            raise SceneStoreError(
                f"scene array {path} is {arr.dtype}{list(arr.shape)} but the manifest says "
                f"{entry['dtype']}{entry['shape']}; the file is corrupt, {self.rebuild_hint(path)}"
            )
        self._cache[name] = arr
        return arr

    def damaged(self, name: str, why: str) -> SceneStoreError:
        """The error for array ``name`` holding values no bake writes (a file damaged without changing its
        size passes the manifest's checks)."""
        path = self.directory / self._entry(name)["file"]
        return SceneStoreError(f"scene array {path} {why}: the file is damaged; {self.rebuild_hint(path)}")

    def rebuild_hint(self, path: Path) -> str:
        stage = next((s for s, info in self._stages_read().items() if path.name in _stage_file_sizes(info)), None)
        return rebuild_hint(path, stage)

    def file_bytes(self, name: str) -> bytes:
        path = self.directory / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SceneStoreError(f"cannot read scene file {path}: {exc}") from exc
