"""The RIR pools DoA heads train, validate and are benchmarked on: which rooms, which seeds, and a cache.

A pool is a set of agent poses with the binaural responses of several sources each (``rooms.RirPool``);
rendering one takes minutes, so each is cached in ``pool_dir`` under a name that encodes how it was
drawn, and rendered again when its recorded source (the renderer's version or the bake's digest) differs.
:func:`source_change` says what differs from a source recorded earlier (a resumed training checks it before
rendering any pool).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asgf_nav.io import exclusive_lock, remove_stale_temporaries_of
from asgf_nav.logging_utils import shell_command
from asgf_nav.models.doa.config import ROOM_KINDS
from asgf_nav.models.doa.rooms import RirPool, scene_pool, shoebox_pool

if TYPE_CHECKING:
    from asgf_nav.models.doa.config import DoaTrainConfig

logger = logging.getLogger(__name__)

SHOEBOX_RECEIVERS = {"shoebox": "kemar", "shoebox_pair": "pair"}
SHOEBOX_POOL_VERSION = 2  # bump when shoebox_pool renders the same poses differently at the KEMAR head
SHOEBOX_PAIR_POOL_VERSION = 1  # ... at the microphone pair (its tail did not change with the head's, version 2)


def rir_pool(cfg: DoaTrainConfig, split: str, num_poses: int, seed: int, direct_only: bool = False) -> RirPool:
    """The RIR pool of ``split``: shoebox rooms, baked scenes of that split, or both (half the poses each);
    ``shoebox_pair`` is AV-SSAN's protocol: shoebox rooms heard by a free-field microphone pair, labelled
    with the front-hemisphere angle (``rooms.render_pair_rir``). ``direct_only``: the same poses and
    sources, each response its direct path alone.

    Pools are cached in ``cfg.pool_dir`` under a name that encodes how they were drawn.
    """
    check_rooms(cfg)
    if cfg.rooms == "both":
        half = max(1, num_poses // 2)
        return RirPool.concat(
            [_cached_pool(cfg, rooms, split, half, seed, direct_only) for rooms in ("shoebox", "scenes")]
        )
    return _cached_pool(cfg, cfg.rooms, split, num_poses, seed, direct_only)


def check_rooms(cfg: DoaTrainConfig) -> None:
    """Refuse an unknown ``cfg.rooms``, or baked scenes without the data root that holds them."""
    if cfg.rooms not in ROOM_KINDS:
        raise ValueError(f"DoA rooms must be one of {ROOM_KINDS}, got {cfg.rooms!r}")
    if cfg.rooms not in SHOEBOX_RECEIVERS and not cfg.scenes_root:
        raise ValueError(f"DoA rooms = {cfg.rooms!r} needs scenes_root (the baked scene data root)")


def split_scene_names(cfg: DoaTrainConfig, split: str) -> list[str]:
    """Every scene of ``split`` in the baked scene set: the pools of baked scenes use them all, so a partial
    bake (``--num-scenes``, ``--scenes``) is refused up front, naming each scene still to bake."""
    from asgf_nav.scenes.presets import get_preset
    from asgf_nav.scenes.store import MANIFEST, SceneStoreError, scene_dir

    names = get_preset(cfg.scenes_dataset).split_scenes(split)
    missing = [n for n in names if not (scene_dir(cfg.scenes_root, cfg.scenes_dataset, n) / MANIFEST).is_file()]
    if missing:
        command = shell_command(
            "python", "scripts/build_scenes.py", "--dataset", cfg.scenes_dataset, "--stages", "layout", "acoustics",
            "--data-root", cfg.scenes_root, "--scenes", *missing,
        )  # fmt: skip
        raise SceneStoreError(
            f"the DoA pools of {cfg.scenes_dataset} scenes use every {split} scene, and {missing} are not baked under "
            f"{cfg.scenes_root}: {command}"
        )
    return names


def pool_source(cfg: DoaTrainConfig, rooms: str, split: str) -> str:
    """What a pool of ``rooms`` and ``split`` is rendered from: the shoebox renderer's version, or a digest
    of the split's baked acoustics (bake settings, layout digest) and of how they are rendered."""
    if rooms in SHOEBOX_RECEIVERS:
        return f"{rooms}:{renderer_version(rooms)[1]}"
    return _scenes_source(_acoustics_metas(cfg, split), renderer_version(rooms)[1])


def _acoustics_metas(cfg: DoaTrainConfig, split: str) -> dict[str, Any]:
    from asgf_nav.scenes.scene import Scene

    return {
        name: Scene.open(cfg.scenes_root, cfg.scenes_dataset, name).store.meta("acoustics")
        for name in split_scene_names(cfg, split)
    }


def _scenes_source(metas: dict[str, Any], render_version: int) -> str:
    text = json.dumps({"render_version": render_version, "acoustics": metas}, sort_keys=True)
    return f"scenes:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def renderer_version(rooms: str) -> tuple[str, int]:
    """The constant that fixes how a pool of ``rooms`` is rendered now, by name and value:
    ``SHOEBOX_POOL_VERSION`` for the shoebox rooms at the head, ``SHOEBOX_PAIR_POOL_VERSION`` at the microphone
    pair, ``RENDER_VERSION`` (``acoustics.rir``) for the scenes."""
    if rooms == "shoebox_pair":
        return "SHOEBOX_PAIR_POOL_VERSION", SHOEBOX_PAIR_POOL_VERSION
    if rooms in SHOEBOX_RECEIVERS:
        return "SHOEBOX_POOL_VERSION", SHOEBOX_POOL_VERSION
    from asgf_nav.acoustics.rir import RENDER_VERSION

    return "RENDER_VERSION", RENDER_VERSION


def source_renderer_version(cfg: DoaTrainConfig, rooms: str, split: str, source: str) -> int | None:
    """The renderer version (:func:`renderer_version`) a pool of ``rooms`` and ``split`` recorded as ``source``
    was rendered at, where it can be told: a shoebox source names it; a scenes source is a digest, matched
    against the digest of the split's acoustics as baked under ``cfg.scenes_root`` now at every render version
    up to today's. None: another kind's source, or no match (other scenes, or these baked again since)."""
    kind, _, rest = source.partition(":")
    if rooms in SHOEBOX_RECEIVERS:
        return int(rest) if kind == rooms and rest.isdigit() else None
    if kind != "scenes" or not cfg.scenes_root:
        return None
    from asgf_nav.scenes.store import SceneStoreError

    try:
        metas = _acoustics_metas(cfg, split)
    except (SceneStoreError, OSError, ValueError):  # not baked there (any more): nothing to match
        return None
    newest = renderer_version(rooms)[1]
    return next((v for v in range(newest, 0, -1) if _scenes_source(metas, v) == source), None)


def source_change(
    cfg: DoaTrainConfig, rooms: str, split: str, old: str, recorded_version: int | None = None
) -> tuple[str, bool]:
    """Why a pool of ``rooms`` and ``split`` rendered now is not the one recorded as ``old`` (rendered at
    ``recorded_version`` where that was recorded), in words, and whether the renderer changed (True) rather than
    only the data (another ``--scenes-root``'s scenes, or scenes baked again)."""
    name, now = renderer_version(rooms)
    then = source_renderer_version(cfg, rooms, split, old)
    if then is not None and then != now:  # the same data, rendered differently now
        what = (
            "the shoebox renderer" if rooms in SHOEBOX_RECEIVERS else "the scenes' renderer (the same baked acoustics)"
        )
        return f"{what} changed ({name} {then} -> {now})", True
    if rooms in SHOEBOX_RECEIVERS:
        return f"{rooms} pools are rendered from other data now ({name} {now})", False
    other = (
        f"the {split} scenes' acoustics baked under {cfg.scenes_root} match {old} at no {name} up to {now}: it was "
        "trained on other scenes, or on these before they were baked again"
    )
    if recorded_version is not None and recorded_version != now:
        return f"the scenes' renderer changed ({name} {recorded_version} -> {now}) and {other}", True
    return other, False


def _cached_pool(
    cfg: DoaTrainConfig, rooms: str, split: str, num_poses: int, seed: int, direct_only: bool = False
) -> RirPool:
    tag = rooms if rooms in SHOEBOX_RECEIVERS else cfg.scenes_dataset
    part = "_direct" if direct_only else ""
    path = Path(cfg.pool_dir) / f"{tag}_{split}_{num_poses}x{cfg.sources_per_pose}_s{seed}{part}.npz"
    source = pool_source(cfg, rooms, split) + part
    # a current pool is read without the lock (pools are written atomically, so it is whole), which also reads
    # one in a directory nobody here can write (a shared pool directory without its lock file)
    pool = _current_pool(path, source, say=False)
    if pool is not None:
        return pool
    # one writer per pool (two runs sharing a pool directory render it once), and the temporaries of a
    # killed write removed (a pool is about 100 MB)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"RIR pool {path}"):
        remove_stale_temporaries_of(path)
        return _load_or_render_pool(cfg, rooms, path, source, split, num_poses, seed, direct_only)


def _current_pool(path: Path, source: str, say: bool = True) -> RirPool | None:
    """The pool at ``path`` when it is whole and rendered from ``source`` by this renderer, else None (with
    ``say``, logged: it is rendered again)."""
    if not path.exists():
        return None
    try:
        pool = RirPool.load(path)
    except ValueError as exc:  # a cache: rendered again rather than stopping the run
        if say:
            logger.warning("%s; rebuilding it", exc)
        return None
    if pool.source == source and pool.line_of_sight is not None:
        return pool
    if say:
        logger.info("RIR pool %s was rendered from other data or by an older renderer; rebuilding it", path)
    return None


def _load_or_render_pool(
    cfg: DoaTrainConfig, rooms: str, path: Path, source: str, split: str, num_poses: int, seed: int,
    direct_only: bool,
) -> RirPool:  # fmt: skip
    pool = _current_pool(path, source)  # checked again under the lock: another run may have rendered it
    if pool is not None:
        return pool
    if rooms in SHOEBOX_RECEIVERS:
        receiver = SHOEBOX_RECEIVERS[rooms]
        pool = shoebox_pool(num_poses, cfg.sources_per_pose, seed, receiver=receiver, direct_only=direct_only)
    else:
        from asgf_nav.acoustics.rir import DirectPathRirs

        pool = baked_pool(cfg, split, num_poses, seed, responses=DirectPathRirs if direct_only else None)
    pool.source = source
    pool.save(path)
    logger.info("wrote RIR pool %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return pool


def baked_pool(
    cfg: DoaTrainConfig, split: str, num_poses: int, seed: int, responses: Callable[[Any], Any] | None = None
) -> RirPool:
    """The poses of ``split``'s baked scenes, spread evenly over them; ``responses`` (a ``SceneRirs``
    subclass, called with each scene's store) renders them another way for the same draws, as
    ``DirectPathRirs`` does for the pools of :attr:`DoaTrainConfig.mask_target` ``direct``."""
    from asgf_nav.acoustics.rir import SceneRirs
    from asgf_nav.scenes.scene import Scene

    responses = responses or SceneRirs
    names = split_scene_names(cfg, split)
    per_scene = max(1, num_poses // len(names))
    pools = []
    for i, name in enumerate(names):
        scene = Scene.open(cfg.scenes_root, cfg.scenes_dataset, name)
        pools.append(scene_pool(scene, responses(scene.store), per_scene, cfg.sources_per_pose, seed + i))
    return RirPool.concat(pools)
