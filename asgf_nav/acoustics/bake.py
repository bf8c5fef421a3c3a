"""Bake a scene's acoustics: one pyroomacoustics simulation per source node, heard at every graph node.

Stored compactly (see docs/acoustics.md): per (source, receiver) the specular paths (delay float32,
direction and per-band level float16) and the late energy envelope per octave band (float16 dB); the
binaural responses for any yaw are rendered from these at load time by
:class:`asgf_nav.acoustics.rir.SceneRirs`.

The unit of parallel work is :func:`bake_source`; :func:`bake_acoustics` runs the missing ones (resuming
from ``acoustics_partial/`` after an interruption) and writes the "acoustics" stage once all are done.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.acoustics.simulate import HIST_BIN_SECONDS, SPEED_OF_SOUND, band_centers, simulate_source
from asgf_nav.config import ConfigError
from asgf_nav.io import atomic_savez, atomic_write_text, load_npz
from asgf_nav.logging_utils import bar_disabled
from asgf_nav.parallel import spawn_imap_unordered
from asgf_nav.scenes.scene import layout_digest, read_floorplan
from asgf_nav.scenes.store import SceneStore, SceneStoreError, write_stage
from asgf_nav.termination import raise_if_stopped

logger = logging.getLogger(__name__)

STAGE = "acoustics"
PARTIAL_DIR = "acoustics_partial"
# 2: each room's floor in its own material, a doorway gap in its first room's; 3: the ray-traced tail starts one
# bounce past the image sources' order (it held that order's reflections a second time)
ACOUSTICS_VERSION = 3
LATE_FLOOR_DB = -200.0  # stored late level at or below this means "no energy"
PATH_FLOOR_DB = -120.0  # specular paths weaker than this (amplitude re 1 at 1 m) are not stored


# --------------------------------------------------------------------------------------------- settings
# settings bake_params records only when they differ from these values (what every bake used before they existed)
UNRECORDED_PARAMS: dict[str, Any] = {"source_spread": "farthest"}


def bake_params(scene_dir: Path, cfg: Any) -> dict[str, Any]:
    """Everything that determines the baked result (it keys the partial cache and goes into the meta)."""
    store = SceneStore(scene_dir)
    store.require("layout")
    layout = store.meta("layout")
    sample_rate = layout.get("sample_rate")
    if sample_rate is None:
        from asgf_nav.scenes.presets import get_preset

        sample_rate = get_preset(layout.get("preset") or layout["dataset"]).sample_rate
    ac = cfg.acoustics
    return {
        "version": ACOUSTICS_VERSION,
        "sample_rate": int(sample_rate),
        "dataset": layout.get("dataset", scene_dir.parent.name),
        "preset": layout.get("preset", scene_dir.parent.name),
        "scene": scene_dir.name,
        "sources_per_scene": int(ac.sources_per_scene),
        # recorded only when not the original spread, so that scenes baked before the choice existed stay current
        **({"source_spread": ac.source_spread} if ac.source_spread != UNRECORDED_PARAMS["source_spread"] else {}),
        "ism_order": int(ac.ism_order),
        "rays": int(ac.rays),
        "max_rir_seconds": float(ac.max_rir_seconds),
        "ear_height": float(ac.ear_height),
        "furniture_obstacles": bool(ac.furniture_obstacles),
        "max_images": int(ac.max_image_sources),
        "hist_bin_seconds": HIST_BIN_SECONDS,
        "layout_digest": layout_digest(store),
    }


SOURCE_SPREADS = ("farthest", "stratified")
_LLOYD_ITERATIONS = 100


def _position_hash(pts: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random key per (x, z) position: MurmurHash3's 64-bit finaliser of the millimetre grid
    coordinates packed into one integer. Integer arithmetic only, so the same on every machine and NumPy
    release; from positions, not node ids, so that no id (the first ones run along a wall) is favoured in
    every scene."""
    mm = np.round(np.asarray(pts, dtype=np.float64) * 1000.0).astype(np.int64).astype(np.uint64)
    x = (mm[:, 0] << np.uint64(32)) ^ (mm[:, 1] & np.uint64(0xFFFFFFFF))
    for factor in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        x ^= x >> np.uint64(33)
        x *= np.uint64(factor)  # wraps modulo 2**64, as the hash intends
    return x ^ (x >> np.uint64(33))


def select_source_nodes(positions: np.ndarray, count: int, spread: str = "farthest") -> np.ndarray:
    """``count`` nodes spread over the scene, sorted.

    ``farthest``: farthest-point sampling from the node nearest the centre; it favours the edges of a plan, so
    its nodes stand nearer walls than the average node (docs/task.md). ``stratified``: the nodes split into
    ``count`` regions of about equal area (k-means from the farthest-point nodes), one node picked from each,
    so that a goal is about as likely anywhere as in SoundSpaces, which can put it on any node.
    """
    if spread not in SOURCE_SPREADS:
        raise ValueError(f"acoustics.source_spread must be one of {list(SOURCE_SPREADS)}, got {spread!r}")
    pts = np.asarray(positions, dtype=np.float64)[:, [0, 2]]
    n = len(pts)
    if count >= n:
        return np.arange(n, dtype=np.int32)
    chosen = [int(np.argmin(np.linalg.norm(pts - pts.mean(axis=0), axis=1)))]
    dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    if spread == "stratified":
        chosen = _one_node_per_region(pts, pts[chosen])
    return np.sort(np.asarray(chosen, dtype=np.int32))


def _one_node_per_region(pts: np.ndarray, centres: np.ndarray) -> list[int]:
    """Lloyd's k-means of the nodes from ``centres``, then one node of each region, picked by a hash of its
    position (no random generator, whose draws may differ between NumPy releases: a resumed bake and the
    checks that recompute the nodes must find the same ones)."""

    def nearest_centre() -> np.ndarray:
        return np.argmin(((pts[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1), axis=1)

    for _ in range(_LLOYD_ITERATIONS):
        region = nearest_centre()
        moved = np.stack([pts[region == k].mean(axis=0) if np.any(region == k) else c for k, c in enumerate(centres)])
        if np.allclose(moved, centres):
            break
        centres = moved
    else:  # not settled: the regions of the last centres
        region = nearest_centre()
    chosen: list[int] = []
    for k, centre in enumerate(centres):
        members = np.setdiff1d(np.flatnonzero(region == k), chosen)
        if len(members) == 0:  # a region k-means emptied (rare): the free node nearest its centre
            order = np.argsort(np.linalg.norm(pts - centre, axis=1), kind="stable")
            members = order[~np.isin(order, chosen)][:1]
        chosen.append(int(members[np.argmin(_position_hash(pts[members]))]))
    return chosen


def _source_nodes(positions: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    spread = params.get("source_spread", UNRECORDED_PARAMS["source_spread"])
    return select_source_nodes(positions, params["sources_per_scene"], spread)


def _ears(positions: np.ndarray, ear_height: float, ceiling: float) -> np.ndarray:
    ears = np.asarray(positions, dtype=np.float64).copy()
    ears[:, 1] += min(ear_height, ceiling - 0.3)
    return ears


def _partial_dir(scene_dir: Path, params: dict[str, Any]) -> Path:
    """Partial-results directory, emptied when it holds results of other settings."""
    directory = Path(scene_dir) / PARTIAL_DIR
    stamp = directory / "params.json"
    text = json.dumps(params, sort_keys=True)
    if directory.exists() and (not stamp.exists() or stamp.read_text(encoding="utf-8") != text):
        logger.info("%s: bake settings changed, dropping partial acoustics", scene_dir)
        shutil.rmtree(directory)
    if not stamp.exists():
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, text)
    return directory


def _source_file(partial: Path, slot: int) -> Path:
    return partial / f"source_{slot:03d}.npz"


# --------------------------------------------------------------------------------------------- baking
def bake_source(scene_dir: str | Path, cfg: Any, source_slot: int) -> Path:
    """Simulate source ``source_slot`` at every node and save it atomically; skip if already saved."""
    scene_dir = Path(scene_dir)
    params = bake_params(scene_dir, cfg)
    partial = _partial_dir(scene_dir, params)
    out = _source_file(partial, source_slot)
    if out.exists():
        return out
    store = SceneStore(scene_dir)
    plan = read_floorplan(scene_dir)
    positions = np.asarray(store.array("positions"))
    sources = _source_nodes(positions, params)
    if not 0 <= source_slot < len(sources):
        raise IndexError(f"scene {scene_dir}: source slot {source_slot} out of range (0..{len(sources) - 1})")
    ears = _ears(positions, params["ear_height"], plan.ceiling_height)
    node = int(sources[source_slot])
    field = simulate_source(
        plan,
        ears[node],
        ears,
        params["sample_rate"],
        ism_order=params["ism_order"],
        rays=params["rays"],
        max_seconds=params["max_rir_seconds"],
        furniture=params["furniture_obstacles"],
        max_images=params["max_images"],
    )
    level = 20.0 * np.log10(np.maximum(field.band_amplitude, 1e-12))
    strong = level.max(axis=1) > PATH_FLOOR_DB if len(level) else np.zeros(0, dtype=bool)
    counts = np.array([strong[field.images(r)].sum() for r in range(field.num_receivers)], dtype=np.int64)
    late_db = 10.0 * np.log10(np.maximum(field.histogram, 1e-30))
    late_db[field.histogram <= 0] = LATE_FLOOR_DB
    arrays = {
        "counts": counts,
        "delay": field.delay[strong].astype(np.float32),
        "direction": np.stack([field.azimuth[strong], field.elevation[strong]], axis=1).astype(np.float16),
        "level_db": level[strong].astype(np.float16),
        "late_db": np.maximum(late_db, LATE_FLOOR_DB).astype(np.float16),
    }

    return atomic_savez(out, **arrays)


def _bake_source_job(job: tuple[Path, Any, int]) -> int:
    bake_source(*job)
    return job[2]


def bake_acoustics(scene_dir: Path, cfg: Any, workers: int = 1) -> None:
    """Bake every source (resuming finished ones), over ``workers`` processes, and write the "acoustics" stage."""
    scene_dir = Path(scene_dir)
    params = bake_params(scene_dir, cfg)
    store = SceneStore(scene_dir)
    positions = np.asarray(store.array("positions"))
    sources = _source_nodes(positions, params)
    check_response_length(scene_dir.name, positions, sources, params["max_rir_seconds"])
    partial = _partial_dir(scene_dir, params)
    todo = [s for s in range(len(sources)) if not _finished_source(_source_file(partial, s))]
    progress = tqdm(
        total=len(todo), desc=f"acoustics {params['dataset']}/{scene_dir.name}", unit="source",
        disable=bar_disabled(bool(todo)), leave=False,
    )  # fmt: skip
    jobs = [(scene_dir, cfg, slot) for slot in todo]
    with progress:
        if workers > 1 and len(todo) > 1:
            for _ in spawn_imap_unordered(_bake_source_job, jobs, min(workers, len(todo))):
                progress.update(1)
        else:
            for job in jobs:
                raise_if_stopped()  # a stop whose exception got lost: between two sources, nothing is lost
                _bake_source_job(job)
                progress.update(1)
    write_acoustics_stage(scene_dir, params, sources, partial)
    shutil.rmtree(partial, ignore_errors=True)


def check_scene_response_length(scene_dir: Path, cfg: Any) -> None:
    """:func:`check_response_length` for a scene whose layout is baked, with the sources ``cfg`` would bake: a run
    checks every scene before it bakes any views or responses, not as the background build reaches each."""
    scene_dir = Path(scene_dir)
    params = bake_params(scene_dir, cfg)
    positions = np.asarray(SceneStore(scene_dir).array("positions"))
    check_response_length(scene_dir.name, positions, _source_nodes(positions, params), params["max_rir_seconds"])


def check_response_length(scene: str, positions: np.ndarray, sources: np.ndarray, seconds: float) -> None:
    """Refuse responses too short to hold the direct sound of every source at every node: the renderer cuts
    each response at ``seconds`` from the emission, so a source farther away than that would be heard as
    silence, and a run would train on it without a word."""
    distance = np.linalg.norm(positions[:, None, :] - positions[np.asarray(sources)][None, :, :], axis=-1)
    longest = float(distance.max(initial=0.0)) / SPEED_OF_SOUND
    if longest >= seconds:
        raise ConfigError(
            f"config key 'acoustics.max_rir_seconds': {seconds} s is shorter than sound takes to cross scene {scene} "
            f"({longest:.3f} s over {longest * SPEED_OF_SOUND:.1f} m from a source to a node): its far sources would "
            "be silent; give a longer response (the default is 1.0 s)"
        )


PARTIAL_KEYS = ("counts", "delay", "direction", "level_db", "late_db")  # what bake_source writes per source


def _finished_source(path: Path) -> bool:
    """Whether a resumed bake may keep this source's file: one damaged since it was written (a full disk,
    a copy cut short, bytes overwritten) is baked again, with a warning, instead of stopping the stage at its
    end. Every member is read (a few hundred kB), since a damaged one only shows when it is read."""
    if not path.exists():
        return False
    try:
        load_npz(path, PARTIAL_KEYS)
    except (OSError, ValueError) as exc:
        logger.warning("partial acoustics file %s is unreadable (%s); baking that source again", path, exc)
        path.unlink()
        return False
    return True


def write_acoustics_stage(scene_dir: Path, params: dict[str, Any], sources: np.ndarray, partial: Path) -> None:
    """Concatenate the per-source files into the stage's arrays (offsets index source-major pairs)."""
    counts, delay, direction, level, late = [], [], [], [], []
    for slot in range(len(sources)):
        path = _source_file(partial, slot)
        try:
            data = load_npz(path, PARTIAL_KEYS)
        except (OSError, ValueError) as exc:  # damaged since the resume checked it
            raise SceneStoreError(
                f"partial acoustics file {path} is unreadable ({exc}); delete it and bake again"
            ) from exc
        counts.append(data["counts"])
        delay.append(data["delay"])
        direction.append(data["direction"])
        level.append(data["level_db"])
        late.append(data["late_db"])
    offsets = np.zeros(sum(len(c) for c in counts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.concatenate(counts))
    arrays = {
        "acoustic_source_nodes": sources.astype(np.int32),
        "rir_path_offsets": offsets,
        "rir_path_delay": np.concatenate(delay),
        "rir_path_direction": np.concatenate(direction),
        "rir_path_level_db": np.concatenate(level),
        "rir_late_db": np.stack(late),
    }
    meta = {k: v for k, v in params.items()}
    meta["band_centers"] = [float(c) for c in band_centers(params["sample_rate"])]
    meta["late_floor_db"] = LATE_FLOOR_DB
    write_stage(scene_dir, STAGE, arrays, meta=meta)
    size = sum(a.nbytes for a in arrays.values())
    logger.info("%s: acoustics stage written (%d sources, %.1f MB)", scene_dir, len(sources), size / 1e6)
