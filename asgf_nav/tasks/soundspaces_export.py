"""Write project scenes in the SoundSpaces 1.0 data layout, so SoundSpaces code (or ours) can read them.

Everything a task world holds is written: ``metadata/`` (points.txt in mesh Z-up coordinates and a
pickled networkx graph with 'point' attributes), ``binaural_rirs/`` (float32 stereo wav per azimuth
folder, receiver and source node ids in the name), ``scene_observations/`` (pickle keyed by (node, yaw)),
episode datasets (json.gz with per-scene ``content/``) and ``sounds/1s_all``. Scenes whose RIRs cover
only some source nodes also get ``metadata/.../source_nodes.txt``, which SoundSpaces ignores and the
importer reads. Every file is written atomically; ``skip_existing`` resumes an interrupted export.
``metadata/.../rirs_made_from.json`` records what a scene's RIR files were rendered from (for baked
scenes the acoustics settings and ``RENDER_VERSION``), so a resume keeps only files of the same making.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import soundfile as sf
from scipy.io import wavfile
from tqdm import tqdm

from asgf_nav.errors import UserInputError
from asgf_nav.io import atomic_write_bytes, atomic_write_text, flush_to_disk
from asgf_nav.logging_utils import bar_disabled, bar_pacing
from asgf_nav.scenes.presets import get_preset
from asgf_nav.scenes.scene import YAWS
from asgf_nav.scenes.soundspaces import (
    SoundSpacesPaths,
    dataset_spec,
    habitat_to_mesh,
    read_wav,
)
from asgf_nav.tasks.episodes import episode_dataset_path, save_episodes, scene_id_for
from asgf_nav.tasks.factory import load_task_data
from asgf_nav.tasks.spectrogram_store import rir_identity
from asgf_nav.tasks.world import position_key

logger = logging.getLogger(__name__)
PICKLE_PROTOCOL = 4  # readable by every Python SoundSpaces runs on (>= 3.6)
RIR_RECORD = "rirs_made_from.json"


class ExportError(UserInputError, ValueError):
    """A scene cannot be expressed in the SoundSpaces layout (rate, grid or positions do not fit)."""


@dataclass
class ExportStats:
    """What one export wrote (files counted include skipped existing ones)."""

    scenes: int = 0
    rir_files: int = 0
    rir_bytes: int = 0
    skipped: int = 0
    episodes: int = 0
    sounds: int = 0


def _position_keys_unique(scene) -> None:
    keys = [position_key(p) for p in np.asarray(scene.positions, dtype=np.float64)]
    if len(set(keys)) != len(keys):
        raise ExportError(
            f"scene {scene.name}: two nodes share a 2-decimal position key; SoundSpaces cannot tell them apart"
        )


def check_exportable(scene, dataset: str) -> None:
    """SoundSpaces fixes rate and grid per dataset; a scene that differs would change meaning on import."""
    spec = dataset_spec(dataset)
    if int(scene.sample_rate) != spec.sample_rate:
        raise ExportError(
            f"scene {scene.name} has {scene.sample_rate} Hz RIRs; SoundSpaces {dataset} uses {spec.sample_rate} Hz"
        )
    if not np.isclose(float(scene.grid_size), spec.grid_size):
        raise ExportError(
            f"scene {scene.name} has a {scene.grid_size} m grid; SoundSpaces {dataset} uses {spec.grid_size} m"
        )
    _position_keys_unique(scene)


def scene_graph(scene) -> nx.Graph:
    """networkx graph as SoundSpaces pickles it: integer nodes, 'point' = habitat (x, y, z) tuple."""
    graph = nx.Graph()
    positions = np.asarray(scene.positions, dtype=np.float64)
    for i, p in enumerate(positions):
        graph.add_node(i, point=tuple(float(v) for v in p))
    neighbors = np.asarray(scene.neighbors)
    for i in range(len(neighbors)):
        for j in neighbors[i]:
            if j >= 0:
                graph.add_edge(i, int(j))
    return graph


def _wav_bytes(sample_rate: int, data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, sample_rate, np.ascontiguousarray(data, dtype=np.float32))
    return buffer.getvalue()


def _whole_wav(path: Path) -> bool:
    """Whether ``path`` holds a whole wav file: RIR files are written without a flush (one for the scene at
    the end), so after a power loss one may be empty or cut short, and a resume must write it again."""
    try:
        _, data = read_wav(path, mmap=True)  # the header and the file's size, not the samples
        return data.ndim == 2 and len(data) > 0
    except Exception:  # noqa: BLE001 - missing, empty, cut short or not a wav file: written again
        return False


def _write_wav(path: Path, sample_rate: int, data: np.ndarray) -> int:
    payload = _wav_bytes(sample_rate, data)
    atomic_write_bytes(path, payload, durable=False)  # export_scene flushes once; a rerun rewrites lost files
    return len(payload)


def export_scene(
    scene,
    root: str | Path,
    dataset: str,
    skip_existing: bool = False,
    views: bool = True,
    stats: ExportStats | None = None,
) -> ExportStats:
    """Write one ``TaskScene``: metadata, every (receiver, source node, azimuth) RIR and its views."""
    stats = stats if stats is not None else ExportStats()
    check_exportable(scene, dataset)
    paths = SoundSpacesPaths(Path(root), dataset)
    name = scene.name
    positions = np.asarray(scene.positions, dtype=np.float64)
    mesh = habitat_to_mesh(positions, dataset)
    rows = "".join(f"{i}\t{x:.7f}\t{y:.7f}\t{z:.7f}\n" for i, (x, y, z) in enumerate(mesh))
    atomic_write_text(paths.points_file(name), rows)
    atomic_write_bytes(paths.graph_file(name), pickle.dumps(scene_graph(scene), protocol=PICKLE_PROTOCOL))
    sources = np.asarray(scene.source_nodes, dtype=np.int64)
    source_list = paths.source_nodes_file(name)
    if len(sources) < len(positions):
        atomic_write_text(source_list, "".join(f"{int(s)}\n" for s in sources))
    else:
        source_list.unlink(missing_ok=True)
    skip_existing, record_when_done = _start_rir_files(scene, paths, skip_existing)
    receivers = range(len(positions))
    for receiver in tqdm(
        receivers,
        desc=f"RIRs {dataset}/{name}",
        unit="node",
        disable=bar_disabled(len(positions) >= 50),
        **bar_pacing(),
    ):
        for k in range(len(YAWS)):
            for source in sources:
                path = paths.rir_file(name, receiver, int(source), k)
                stats.rir_files += 1
                if skip_existing and _whole_wav(path):
                    stats.skipped += 1
                    continue
                rir = np.asarray(scene.rir(receiver, int(source), k), dtype=np.float32)
                stats.rir_bytes += _write_wav(path, int(scene.sample_rate), rir)
    flush_to_disk()
    if record_when_done is not None:
        atomic_write_text(paths.metadata_dir(name) / RIR_RECORD, record_when_done)
    if views and scene.rgb is not None and scene.depth is not None:
        write_observations(scene, paths.observations_file(name))
    elif views:
        logger.warning("scene %s has no views; %s not written", name, paths.observations_file(name))
    stats.scenes += 1
    return stats


def _start_rir_files(scene, paths: SoundSpacesPaths, skip_existing: bool) -> tuple[bool, str | None]:
    """(whether files already there may be kept, the record still to write once all RIRs are written).

    Files are kept only where the record says they were rendered from what renders this scene now. A
    folder of this exporter's files of another making is cleared and the new record written first, so
    every file in it is of the recorded making however the export ends. Files without a record (an
    export by older code, or data from elsewhere) are overwritten, never deleted, and the record is
    written only after the last of them, so an interrupted export is not taken for a finished one.
    """
    record = paths.metadata_dir(scene.name) / RIR_RECORD
    made_from = json.dumps(rir_identity(scene), sort_keys=True)
    before = record.read_text(encoding="utf-8") if record.exists() else None
    if skip_existing and before == made_from:
        return True, None
    folder = paths.rir_dir(scene.name)
    if skip_existing and folder.exists():
        logger.warning(
            "%s: RIR files rendered from %s, now %s; writing every RIR of %s again",
            folder,
            "an unrecorded source" if before is None else before,
            made_from,
            scene.name,
        )
    if before is None and folder.exists():
        return False, made_from
    shutil.rmtree(folder, ignore_errors=True)
    atomic_write_text(record, made_from)
    return False, None


def write_observations(scene, path: Path) -> None:
    """(node, yaw degrees) -> {'rgb': (H, W, 3) uint8, 'depth': (H, W) float32 metres}, as habitat-sim
    renders them (alpha dropped)."""
    frames = {}
    for i in range(scene.num_nodes):
        for k, yaw in enumerate(YAWS):
            frames[(i, yaw)] = {
                "rgb": np.array(scene.rgb[i, k], dtype=np.uint8),
                "depth": np.array(scene.depth[i, k], dtype=np.float32),
            }
    atomic_write_bytes(path, pickle.dumps(frames, protocol=PICKLE_PROTOCOL))


def export_episodes(
    root: str | Path,
    dataset: str,
    split: str,
    sound_split: str,
    episodes: Sequence,
    stats: ExportStats | None = None,
) -> Path:
    """Episodes of one split in SoundSpaces' json.gz layout, scene ids rewritten for ``dataset``."""
    rewritten = [replace(e, scene_id=scene_id_for(dataset, e.scene_name)) for e in episodes]
    path = save_episodes(episode_dataset_path(root, dataset, split, sound_split), rewritten)
    if stats is not None:
        stats.episodes += len(rewritten)
    return path


def export_sounds(
    root: str | Path,
    names: Iterable[str],
    waveform: Callable[[str], np.ndarray],
    sample_rate: int,
    stats: ExportStats | None = None,
) -> Path:
    """``sounds/1s_all/{name}.wav`` as float32 mono at the RIR rate (what the task hears, unresampled)."""
    directory = SoundSpacesPaths(Path(root), "").sounds_dir()
    for name in sorted(set(names)):
        buffer = io.BytesIO()
        sf.write(
            buffer,
            np.asarray(waveform(name), dtype=np.float32),
            int(sample_rate),
            format="WAV",
            subtype="FLOAT",
        )
        atomic_write_bytes(directory / f"{name}.wav", buffer.getvalue())
        if stats is not None:
            stats.sounds += 1
    return directory


def export_world(
    world,
    root: str | Path,
    dataset: str,
    episodes: dict[tuple[str, str], Sequence] | None = None,
    skip_existing: bool = False,
    views: bool = True,
    stats: ExportStats | None = None,
) -> ExportStats:
    """A whole ``TaskWorld``: its scenes, the given episodes per (split, sound split), and their sounds."""
    stats = stats if stats is not None else ExportStats()
    for name in sorted(world.scenes):
        export_scene(world.scene(name), root, dataset, skip_existing=skip_existing, views=views, stats=stats)
    sounds: set[str] = set()
    for (split, sound_split), eps in (episodes or {}).items():
        export_episodes(root, dataset, split, sound_split, eps, stats)
        sounds.update(e.sound for e in eps)
    export_sounds(root, sounds, world.sound, world.sample_rate, stats)
    logger.info(
        "exported %d scenes, %d RIR files (%.1f MB written, %d kept), %d episodes, %d sounds to %s",
        stats.scenes,
        stats.rir_files,
        stats.rir_bytes / 1e6,
        stats.skipped,
        stats.episodes,
        stats.sounds,
        root,
    )
    return stats


def export_splits(
    cfg: Any,
    root: str | Path,
    dataset: str,
    splits: Sequence[str],
    sound_splits: Sequence[str],
    scenes: Sequence[str] | None = None,
    skip_existing: bool = False,
    views: bool = True,
) -> ExportStats | None:
    """The embedded scenes of ``splits`` (only ``scenes`` among them, when given) with their episodes for
    each sound split and the sounds those episodes play, loaded with ``cfg`` as a run would; each scene is
    written once, however many splits hold it. None when no scene of the splits is left to export."""
    cfg = copy.deepcopy(cfg)
    cfg.scenes.source = "embedded"  # export the embedded scenes even when SoundSpaces data is present
    if not views:  # the world then loads scenes baked without views (layout + acoustics)
        cfg.task.sensors = [s for s in cfg.task.sensors if s not in ("rgb", "depth")]
    preset = get_preset(cfg.scenes.dataset)
    loaded = []  # every split loaded before anything is written: a scene not baked stops the export up front
    for split in splits:
        names = [n for n in preset.split_scenes(split, cfg.scenes.num_scenes) if scenes is None or n in scenes]
        for sound_split in sound_splits if names else ():
            cfg.task.sound_split = sound_split
            loaded.append((split, sound_split, names, *load_task_data(cfg, split, names)))
    if not loaded:
        return None
    stats, exported, sound_names = ExportStats(), set(), set()
    for split, sound_split, names, world, episodes in loaded:
        for name in names:
            if name not in exported:
                export_scene(world.scene(name), root, dataset, skip_existing, views, stats)
                exported.add(name)
        export_episodes(root, dataset, split, sound_split, episodes, stats)
        sound_names.update(ep.sound for ep in episodes)
    sound_world = loaded[-1][3]
    export_sounds(root, sound_names, sound_world.sound, sound_world.sample_rate, stats)
    return stats
