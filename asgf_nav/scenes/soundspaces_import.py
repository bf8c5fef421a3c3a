"""SoundSpaces scenes into the scene store, and the choice between SoundSpaces and embedded scenes.

:func:`import_scene` converts one scene's navigation graph (and its rendered views, when the download
has them) into a scene store directory once, and again only when a source file changes (the stage's
metadata keeps each file's size, modification time and SHA-256: a copy with new times, as ``cp -r`` makes
on a node's scratch disk, is compared by its bytes, not imported again, and its times are recorded where the
store can be written; a read-only store compares the bytes at each load). The RIRs are never
converted; they stay where they are and :class:`asgf_nav.scenes.soundspaces.SoundSpacesRirs` reads them on
demand.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.io import unwritable_dir_problem
from asgf_nav.scenes.soundspaces import (
    DATASETS,
    SoundSpacesDataError,
    SoundSpacesPaths,
    dataset_spec,
    graph_layout,
    read_graph,
    read_observations,
    read_points,
    read_source_nodes,
)
from asgf_nav.scenes.store import (
    IMPORTED_PREFIX,
    SceneStore,
    SceneStoreError,
    bake_lock,
    refuse_later_format,
    remove_stage,
    scene_dir,
    stage_complete,
    update_stage_meta,
    write_stage,
)

logger = logging.getLogger(__name__)

IMPORT_VERSION = 2  # bump when the same files would import differently (2: normalised depth of habitat Observations)


# ------------------------------------------------------------------------------------------ import
def imported_scene_dir(data_root: str | Path, dataset: str, scene: str) -> Path:
    """Store directory of an imported SoundSpaces scene (kept apart from the embedded scene of that name)."""
    return scene_dir(data_root, f"{IMPORTED_PREFIX}{dataset}", scene)


_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, time) -> SHA-256 hex, this process's


def _file_sha256(path: Path) -> str:
    """The file's SHA-256, read once per process while it stays the same file: an import compares a source
    before and under the lock and then records it, and a views pickle is gigabytes."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _fingerprint(files: Sequence[Path]) -> dict[str, list[int | str]]:
    """Size, modification time and SHA-256 of each existing file, recorded by an import."""
    out: dict[str, list[int | str]] = {}
    for path in files:
        if path.exists():
            st = path.stat()
            out[path.name] = [int(st.st_size), int(st.st_mtime_ns), _file_sha256(path)]
    return out


def _same_sources(recorded: Any, files: Sequence[Path]) -> bool:
    """Whether the existing ``files`` are those an import recorded (:func:`_fingerprint`): the same names and
    sizes, and the same modification time or else the same bytes (a copy made without keeping times). A
    record from before digests were kept ([size, time]) matches on the time alone."""
    present = [path for path in files if path.exists()]
    if not isinstance(recorded, dict) or set(recorded) != {path.name for path in present}:
        return False
    for path in present:
        entry, st = recorded[path.name], path.stat()
        if not isinstance(entry, list) or len(entry) not in (2, 3) or entry[0] != st.st_size:
            return False
        if entry[1] != st.st_mtime_ns and (len(entry) == 2 or entry[2] != _file_sha256(path)):
            return False
    return True


def _stage_matches(directory: Path, stage: str, files: Sequence[Path]) -> bool:
    """Whether ``stage`` of the store holds the current ``files``, imported by this release's importer."""
    if not stage_complete(directory, stage):  # also a file truncated since: imported again
        return False
    try:
        store = SceneStore(directory)
    except SceneStoreError:
        return False
    meta = store.meta(stage)
    return meta.get("import_version") == IMPORT_VERSION and _same_sources(meta.get("fingerprint"), files)


def import_scene(paths: SoundSpacesPaths, data_root: str | Path, scene: str, force: bool = False) -> Path:
    """Convert one scene's graph (and views, when rendered) into the scene store; skip what is up to date.

    Holds the scene's bake lock, as a bake does: processes sharing a data root (DD-PPO ranks) that open
    the same scene at once import it once, the others wait and then find it up to date. A scene a later
    release stored in its format is not imported over unless ``force`` (:func:`refuse_later_format`).
    """
    directory = imported_scene_dir(data_root, paths.dataset, scene)
    if not force and _up_to_date(paths, directory, scene):  # no lock: a read-only shared store serves as it is
        if _moved_times(paths, directory, scene) and unwritable_dir_problem(directory) is None:
            with bake_lock(directory):  # the same bytes at other times: record them, or each load reads them all
                for stage, fingerprint in _moved_times(paths, directory, scene).items():
                    update_stage_meta(directory, stage, fingerprint=fingerprint)
        return directory
    with bake_lock(directory):
        refuse_later_format(directory, force)  # under the lock: a later release may have imported it meanwhile
        _import_scene(paths, directory, scene, force)  # checks again: a process waited for may have done it
    return directory


def _layout_files(paths: SoundSpacesPaths, scene: str) -> list[Path]:
    return [paths.points_file(scene), paths.graph_file(scene), paths.source_nodes_file(scene)]


def _moved_times(paths: SoundSpacesPaths, directory: Path, scene: str) -> dict[str, dict[str, list[int | str]]]:
    """For each stage of an up-to-date scene whose recorded file times differ from the files' (a copy made
    without keeping times, matched by its bytes), its fingerprint with the current times."""
    moved = {}
    store = SceneStore(directory)
    for stage, files in (("layout", _layout_files(paths, scene)), ("vision", [paths.observations_file(scene)])):
        recorded = store.meta(stage).get("fingerprint") if store.has_stage(stage) else None
        if not isinstance(recorded, dict):
            continue
        current = {
            path.name: [recorded[path.name][0], int(path.stat().st_mtime_ns), *recorded[path.name][2:]]
            for path in files
            if path.name in recorded and path.exists()
        }
        if current != recorded:
            moved[stage] = current
    return moved


def _up_to_date(paths: SoundSpacesPaths, directory: Path, scene: str) -> bool:
    """True when the store holds the scene's current layout and exactly its current views."""
    if not _stage_matches(directory, "layout", _layout_files(paths, scene)):
        return False
    obs_path = paths.observations_file(scene)
    if obs_path.exists():
        return _stage_matches(directory, "vision", [obs_path])
    return not SceneStore(directory).has_stage("vision")


def _import_scene(paths: SoundSpacesPaths, directory: Path, scene: str, force: bool) -> None:
    """The body of :func:`import_scene`, run under the scene's lock."""
    spec = dataset_spec(paths.dataset)
    if force or not _stage_matches(directory, "layout", _layout_files(paths, scene)):
        fingerprint = _fingerprint(_layout_files(paths, scene))  # before reading: a later change re-imports
        points = read_points(paths.points_file(scene), paths.dataset)
        graph_path = paths.graph_file(scene)
        layout = graph_layout(read_graph(graph_path), points, graph_path)
        sources = read_source_nodes(paths.source_nodes_file(scene), layout.node_ids)
        meta = {
            "dataset": paths.dataset,
            "grid_size": spec.grid_size,
            "sample_rate": spec.sample_rate,
            "num_nodes": int(len(layout.node_ids)),
            "source": "soundspaces",
            "soundspaces_root": str(paths.root),
            "fingerprint": fingerprint,
            "import_version": IMPORT_VERSION,
        }
        arrays = {
            "positions": layout.positions,
            "neighbors": layout.neighbors,
            "geodesic_hops": layout.geodesic_hops,
            "soundspaces_node_ids": layout.node_ids,
            "source_nodes": sources,
        }
        if (directory / "manifest.json").exists():
            remove_stage(directory, "vision")  # views are indexed by the old node list
        write_stage(directory, "layout", arrays, meta=meta)
        logger.info(
            "imported SoundSpaces %s/%s: %d nodes, %d sources",
            paths.dataset,
            scene,
            len(layout.node_ids),
            len(sources),
        )
    obs_path = paths.observations_file(scene)
    if obs_path.exists():
        if force or not _stage_matches(directory, "vision", [obs_path]):
            fingerprint = _fingerprint([obs_path])
            node_ids = np.array(SceneStore(directory).array("soundspaces_node_ids"))
            rgb, depth = read_observations(obs_path, node_ids)
            meta = {
                "image_size": int(rgb.shape[2]),
                "fingerprint": fingerprint,
                "import_version": IMPORT_VERSION,
            }
            write_stage(directory, "vision", {"rgb": rgb, "depth": depth}, meta=meta)
            logger.info("imported SoundSpaces views of %s/%s: %s", paths.dataset, scene, rgb.shape)
    elif SceneStore(directory).has_stage("vision"):
        remove_stage(directory, "vision")


def import_dataset(
    paths: SoundSpacesPaths, data_root: str | Path, scenes: Sequence[str] | None = None, force: bool = False
) -> list[Path]:
    """Import ``scenes`` (default: every downloaded scene) with a progress bar; returns their directories."""
    available = paths.available_scenes()
    names = list(scenes) if scenes is not None else available
    if not names:
        raise SoundSpacesDataError(
            f"no SoundSpaces {paths.dataset} scene found: need "
            f"{paths.root / 'metadata' / paths.dataset}/<scene>/"
            f"{{points.txt,graph.pkl}} and {paths.root / 'binaural_rirs' / paths.dataset}/<scene>/"
        )
    check_downloaded(paths, names, available)
    for name in names:  # before any work: no scene is imported when one of them would be refused
        refuse_later_format(imported_scene_dir(data_root, paths.dataset, name), force)
    dirs = []
    for name in tqdm(names, desc=f"import soundspaces/{paths.dataset}", unit="scene"):
        dirs.append(import_scene(paths, data_root, name, force=force))
        if not paths.observations_file(name).exists():
            logger.warning(
                "%s/%s has no rendered views (%s is missing): it can run with sensors that exclude rgb and depth only",
                paths.dataset,
                name,
                paths.observations_file(name),
            )
    return dirs


def check_downloaded(paths: SoundSpacesPaths, names: Sequence[str], available: Sequence[str]) -> None:
    missing = [n for n in names if n not in set(available)]
    if missing:
        n = missing[0]
        raise SoundSpacesDataError(
            f"SoundSpaces {paths.dataset} scene(s) {missing} are not downloaded: {n} lacks "
            f"{' and '.join(paths.missing_parts(n))}; downloaded: {list(available)}"
        )


# ------------------------------------------------------------------------------------------ data source
def soundspaces_root(cfg: Any) -> Path:
    """``cfg.scenes.soundspaces_root``, or ``{data_root}/soundspaces`` when unset."""
    root = cfg.scenes.soundspaces_root
    return Path(root) if root else Path(cfg.scenes.data_root) / "soundspaces"


def scene_source(cfg: Any) -> str:
    """ "soundspaces" or "embedded" for ``cfg.scenes.source`` (auto: SoundSpaces when its data is there)."""
    source = cfg.scenes.source
    if source not in ("auto", "embedded", "soundspaces"):  # checked first, whatever the dataset
        raise SoundSpacesDataError(f"scenes.source must be auto, embedded or soundspaces, got {source!r}")
    if source == "embedded":
        return "embedded"
    named = cfg.scenes.soundspaces_root  # set on purpose: a wrong path must not quietly train on generated scenes
    asked = "scenes.source=soundspaces" if source == "soundspaces" else f"scenes.soundspaces_root={named}"
    if cfg.scenes.dataset not in DATASETS:
        if source == "soundspaces" or named:
            raise SoundSpacesDataError(
                f"{asked} needs scenes.dataset replica or mp3d, not {cfg.scenes.dataset!r} (SoundSpaces 1.0 "
                "has those two; an exported tiny set is written as replica)"
            )
        return "embedded"
    paths = SoundSpacesPaths(soundspaces_root(cfg), cfg.scenes.dataset)
    found = bool(paths.available_scenes())
    if not found and named and not Path(named).is_dir():
        raise SoundSpacesDataError(
            f"scenes.soundspaces_root: {named} is not a directory (the SoundSpaces data root; leave the key "
            "unset for the generated scenes)"
        )
    if not found and (source == "soundspaces" or named):
        raise SoundSpacesDataError(
            f"{asked} but no {cfg.scenes.dataset} scene is under {paths.root} (need "
            f"metadata/{cfg.scenes.dataset}/<scene>/graph.pkl + points.txt and "
            f"binaural_rirs/{cfg.scenes.dataset}/<scene>/ there; see docs/data.md)"
        )
    return "soundspaces" if found else "embedded"
