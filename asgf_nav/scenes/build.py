"""Bake embedded scenes into the scene store, stage by stage, in parallel over scenes.

Stages: "layout" (floor plan, navigation graph, geodesic table), "vision" (RGB-D per node and yaw) and
"acoustics" (binaural impulse responses, from :mod:`asgf_nav.acoustics.bake`, imported only when asked
for). A stage already complete and up to date is skipped, so an interrupted build resumes where it
stopped; every stage is written atomically by :func:`asgf_nav.scenes.store.write_stage`. Processes that
share a data root bake each scene once: a scene's bake holds :func:`asgf_nav.scenes.store.bake_lock`.

``python -m asgf_nav.scenes.build`` (:func:`main`) is the background build a training run starts
(:mod:`asgf_nav.scenes.background`): a module of the package, so an installed wheel, which has no
``scripts/`` folder, has it too. To bake scenes by hand use ``scripts/build_scenes.py``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from asgf_nav.devices import usable_cpus
from asgf_nav.io import remove_stale_temporaries, unwritable_dir_problem
from asgf_nav.logging_utils import bar_pacing, shell_command
from asgf_nav.parallel import spawn_imap_unordered
from asgf_nav.scenes.generator import GENERATOR_VERSION, footprint_area, generate_floorplan, scene_seed
from asgf_nav.scenes.mesh import floorplan_mesh
from asgf_nav.scenes.navgraph import build_navgraph
from asgf_nav.scenes.presets import PRESETS, get_preset
from asgf_nav.scenes.render import DEFAULT_CAMERA_HEIGHT, DEFAULT_HFOV, RayRenderer
from asgf_nav.scenes.scene import FLOORPLAN_FILE, YAWS, layout_digest, read_floorplan
from asgf_nav.scenes.store import (
    MANIFEST,
    SceneStore,
    SceneStoreError,
    bake_lock,
    rebuild_hint,
    refuse_later_format,
    remove_stage,
    scene_dir,
    stage_complete,
    stage_damage,
    write_stage,
)
from asgf_nav.termination import raise_if_stopped

logger = logging.getLogger(__name__)

StageFn = Callable[[Path, Any], None]
STAGE_ORDER: tuple[str, ...] = ("layout", "vision", "acoustics")
DEPENDS_ON: dict[str, tuple[str, ...]] = {"layout": (), "vision": ("layout",), "acoustics": ("layout",)}


class StageUnavailableError(RuntimeError):
    """A requested stage's implementation cannot be imported."""


# ---------------------------------------------------------------------------------------------- stages
def bake_layout(directory: Path, cfg: Any) -> None:
    """Floor plan + navigation graph + geodesic table; dataset and scene come from the directory."""
    dataset, scene = directory.parent.name, directory.name
    preset = get_preset(dataset)
    plan = generate_floorplan(dataset, scene)
    graph = build_navgraph(plan, preset.grid_size)
    previous = _old_layout_digest(directory)
    meta = {
        "grid_size": preset.grid_size,
        "dataset": dataset,
        "preset": preset.name,
        "seed": plan.seed,
        "name_seed": scene_seed(dataset, scene),
        "kind": plan.kind,
        "split": preset.split_of(scene),
        "sample_rate": preset.sample_rate,
        "num_nodes": graph.num_nodes,
        "floor_area": round(plan.floor_area, 2),
        "footprint_area": round(footprint_area(plan), 2),
        "generator_version": GENERATOR_VERSION,
    }
    arrays = {"positions": graph.positions, "neighbors": graph.neighbors, "geodesic_hops": graph.geodesic_hops}
    write_stage(directory, "layout", arrays, meta=meta, files={FLOORPLAN_FILE: plan.to_json()})
    store = SceneStore(directory)
    digest = layout_digest(store)
    if previous != digest:  # None: a new scene, or a rewrite that was interrupted
        # a stage that records the layout it was baked from is kept when that is this one
        stale = [
            stage
            for stage in STAGE_ORDER
            if "layout" in DEPENDS_ON[stage]
            and stage_complete(directory, stage)
            and store.meta(stage).get("layout_digest") != digest
        ]
        for stage in stale:
            remove_stage(directory, stage)
        if stale:
            logger.info("%s/%s: layout changed, stages %s dropped", dataset, scene, stale)


def _old_layout_digest(directory: Path) -> str | None:
    if not stage_complete(directory, "layout"):
        return None
    return layout_digest(SceneStore(directory))


def bake_vision(directory: Path, cfg: Any) -> None:
    """RGB-D view for every node and yaw 0/90/180/270 at the configured image size."""
    store = SceneStore(directory)
    store.require("layout")
    plan = read_floorplan(directory)
    image_size = int(getattr(cfg.scenes, "image_size", 128))
    renderer = RayRenderer(floorplan_mesh(plan), image_size, DEFAULT_HFOV, DEFAULT_CAMERA_HEIGHT)
    rgb, depth = renderer.render_all(np.asarray(store.array("positions")), tuple(float(y) for y in YAWS))
    meta = {
        "image_size": image_size,
        "hfov": DEFAULT_HFOV,
        "camera_height": DEFAULT_CAMERA_HEIGHT,
        "layout_digest": layout_digest(store),
    }
    write_stage(directory, "vision", {"rgb": rgb, "depth": depth.astype(np.float16)}, meta=meta)


def _acoustics_bake() -> Any:
    """``asgf_nav.acoustics.bake``, imported only when asked for (it needs pyroomacoustics)."""
    try:
        bake = importlib.import_module("asgf_nav.acoustics.bake")
    except ImportError as exc:
        raise StageUnavailableError(
            f"stage 'acoustics' needs asgf_nav.acoustics.bake.bake_acoustics, which cannot be imported: {exc}"
        ) from exc
    return bake


def bake_acoustics_stage(directory: Path, cfg: Any, workers: int = 1) -> None:
    _acoustics_bake().bake_acoustics(directory, cfg, workers=workers)


STAGES: dict[str, StageFn] = {"layout": bake_layout, "vision": bake_vision, "acoustics": bake_acoustics_stage}


def stage_is_current(directory: Path, stage: str, cfg: Any) -> bool:
    """Complete, and baked with the settings ``cfg`` asks for (:func:`setting_changes`), from a complete layout."""
    if not stage_complete(directory, stage):
        return False
    if stage != "layout" and not stage_complete(directory, "layout"):  # a damaged layout is rebuilt first
        return False
    return not setting_changes(directory, stage, cfg)


def acoustics_changes(directory: Path, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """``{key: (baked, wanted)}`` for each setting the scene's complete acoustics stage was baked with that
    ``cfg`` asks otherwise (the layout's digest included); empty when they agree."""
    from asgf_nav.acoustics.bake import UNRECORDED_PARAMS, bake_params

    # the layout's digest hashes its files: a truncated floor plan would read as acoustics of another layout
    damage = stage_damage(directory, "layout")
    if damage is not None:
        raise SceneStoreError(
            f"{damage}, so the layout its acoustics were baked from cannot be checked; "
            f"{rebuild_hint(directory / MANIFEST, 'layout')}"
        )
    baked = {**UNRECORDED_PARAMS, **SceneStore(directory).meta("acoustics")}
    wanted = {**UNRECORDED_PARAMS, **bake_params(directory, cfg)}
    return {k: (baked.get(k), v) for k, v in wanted.items() if baked.get(k) != v}


def setting_changes(directory: Path, stage: str, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """``{key: (baked, asked)}`` for each setting the complete ``stage`` was baked with that ``cfg`` asks
    otherwise: what makes it stale in :func:`stage_is_current`, named for a message."""
    if stage == "acoustics":
        return acoustics_changes(directory, cfg)
    store = SceneStore(directory)
    meta = store.meta(stage)
    if stage == "layout":
        asked: dict[str, Any] = {"generator_version": GENERATOR_VERSION}
    elif stage == "vision":  # views baked before they recorded their layout pass on the image size alone
        asked = {"image_size": int(getattr(cfg.scenes, "image_size", 128))}
        if meta.get("layout_digest") is not None and stage_complete(directory, "layout"):
            asked["layout_digest"] = layout_digest(store)
    else:
        return {}
    return {key: (meta.get(key), value) for key, value in asked.items() if meta.get(key) != value}


def _with_dependencies(stages: Iterable[str]) -> list[str]:
    wanted = set()
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown scene stage {stage!r}; available: {list(STAGE_ORDER)}")
        wanted.add(stage)
        wanted.update(DEPENDS_ON[stage])
    return [s for s in STAGE_ORDER if s in wanted]


def missing_stages(directory: Path, stages: Sequence[str]) -> list[str]:
    """Stages (with their dependencies) that ``directory`` lacks, whatever settings the present ones were baked
    with: what a script that only looks at a scene must bake, without re-baking a training run's store."""
    return [stage for stage in _with_dependencies(stages) if not stage_complete(directory, stage)]


def stages_to_build(directory: Path, stages: Sequence[str], cfg: Any, force: bool = False) -> list[str]:
    """Stages (in build order) that ``directory`` may still need; dependencies are added when missing.

    A stage whose dependency is listed is listed too, since it may go stale; the build itself decides each
    stage only once its dependencies are current (:func:`_build_scene`), so views and impulse responses
    survive a layout rebuilt by a new generator version when the layout comes out identical.
    """
    todo = []
    for stage in _with_dependencies(stages):
        forced = force and stage in stages
        if forced or any(d in todo for d in DEPENDS_ON[stage]) or not stage_is_current(directory, stage, cfg):
            todo.append(stage)
    return todo


def refuse_unbakeable(cfg: Any, dataset: str, names: Iterable[str], stages: Sequence[str], force: bool = False) -> None:
    """A SceneStoreError naming the data root, the scene and its stages when a scene of ``names`` must be baked
    (a stage missing or stale) where nothing can be written (a lab's dataset shared read-only): found before
    any work, rather than as a failed write in the middle of a bake."""
    root = Path(cfg.scenes.data_root)
    for name in names:
        directory = scene_dir(root, dataset, name)
        problem = unwritable_dir_problem(directory)
        if problem is None:
            continue
        todo = stages_to_build(directory, stages, cfg, force)
        if not todo:
            continue
        missing = [stage for stage in todo if not stage_complete(directory, stage)]
        stale = [stage for stage in todo if stage not in missing]
        what = " and ".join(
            part for part in (f"lacks stage(s) {missing}" if missing else "",
                              f"has stage(s) {stale} stale (other settings or an older release)" if stale else "")
            if part
        )  # fmt: skip
        command = shell_command("python", "scripts/build_scenes.py", "--dataset", dataset, "--data-root", root)
        raise SceneStoreError(
            f"scenes.data_root {root}: scene {dataset}/{name} {what}, and {problem}, so it cannot be baked there; "
            f"bake it where the data root can be written ({command} with this run's config), or point "
            "scenes.data_root at a writable copy"
        )


# ---------------------------------------------------------------------------------------------- driver
def _build_scene(job: tuple[Any, str, str, tuple[str, ...], bool, int]) -> tuple[str, list[str], float]:
    """Build one scene's missing stages (module level so that spawned worker processes can run it).

    ``inner_workers`` > 1 lets a stage that supports it (acoustics, over sources) use several processes:
    used when fewer scenes than workers are pending, e.g. the first scene a training run needs.
    """
    cfg, dataset, scene, stages, force, inner_workers = job
    start = time.perf_counter()
    directory = scene_dir(cfg.scenes.data_root, dataset, scene)
    built: list[str] = []
    with bake_lock(directory) as locked:  # another process may be baking this scene: wait, then bake the rest
        refuse_later_format(directory, force)  # checked again: a later release may have baked it meanwhile
        # without a lock (a file system with no flock) another bake's temporaries may be in use
        freed = remove_stale_temporaries(directory) if locked else 0
        if freed:
            logger.info("%s/%s: removed %.1f MB an interrupted bake left half-written", dataset, scene, freed / 1e6)
        length_checked = "acoustics" not in stages
        for stage in _with_dependencies(stages):
            raise_if_stopped()  # a stop whose exception Python dropped (raised inside a __del__) ends it here
            if stage != "layout" and not length_checked:  # on the layout, before views or responses are baked
                _acoustics_bake().check_scene_response_length(directory, cfg)
                length_checked = True
            # judged after its dependencies were rebuilt: a rebuilt layout drops the stages it invalidates
            # (bake_layout) and keeps those that recorded a layout with the same digest
            forced = force and stage in stages
            if not forced and stage_is_current(directory, stage, cfg):
                continue
            if stage != "layout" and not forced and stage_complete(directory, stage):
                changed = setting_changes(directory, stage, cfg)
                if changed and "layout_digest" not in changed:  # a data root shared by runs of other settings
                    logger.warning(
                        "%s/%s: re-baking %s baked with other settings (%s); runs of those settings "
                        "will re-bake them in turn, so give them a data root of their own",
                        dataset, scene, stage, ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
                    )  # fmt: skip
            t0 = time.perf_counter()
            if stage == "acoustics":
                STAGES[stage](directory, cfg, workers=inner_workers)
            else:
                STAGES[stage](directory, cfg)
            built.append(stage)
            logger.debug("%s/%s: stage %s in %.1f s", dataset, scene, stage, time.perf_counter() - t0)
    return scene, built, time.perf_counter() - start


def _resolve_workers(workers: int | None, cfg: Any, jobs: int) -> int:
    """``workers`` (None: ``cfg.scenes.workers``; 0: one per usable core) capped at the number of jobs."""
    if workers is None:
        workers = int(getattr(cfg.scenes, "workers", 0))
    if workers <= 0:
        workers = usable_cpus()
    return max(1, min(workers, jobs))


def build_scenes(
    cfg: Any,
    dataset: str,
    scenes: Sequence[str] | None = None,
    stages: Sequence[str] = ("layout", "vision", "acoustics"),
    workers: int | None = None,
    force: bool = False,
) -> dict[str, list[str]]:
    """Bake ``stages`` of ``scenes`` (default: the preset's ``cfg.scenes.num_scenes`` scenes).

    Returns scene name -> stages built now (empty when everything was already current).
    """
    preset = get_preset(dataset)
    names = list(scenes) if scenes else preset.scene_names(getattr(cfg.scenes, "num_scenes", None))
    for name in names:
        preset.spec(name)  # unknown names fail here, before any work starts
    _with_dependencies(stages)  # unknown stages fail here; the builds add the dependencies, forcing only `stages`
    stages = tuple(stages)
    root = Path(cfg.scenes.data_root)
    pending = [n for n in names if stages_to_build(scene_dir(root, dataset, n), stages, cfg, force)]
    for name in pending:  # before any work: no scene is baked when one of them would be refused
        refuse_later_format(scene_dir(root, dataset, name), force)
    refuse_unbakeable(cfg, dataset, pending, stages, force)
    result: dict[str, list[str]] = {n: [] for n in names}
    if not pending:
        logger.info("scenes %s: all %d scenes have stages %s", dataset, len(names), list(stages))
        return result
    n_workers = _resolve_workers(workers, cfg, len(pending))
    logger.info(
        "building %d %s scene(s) (stages %s) under %s with %d worker(s)",
        len(pending), dataset, list(stages), root / "scenes" / dataset, n_workers,
    )  # fmt: skip
    requested = _resolve_workers(workers, cfg, 1 << 30)
    inner = max(1, requested // len(pending)) if n_workers == 1 else 1
    jobs = [(cfg, dataset, name, stages, force, inner) for name in pending]
    progress = tqdm(total=len(jobs), desc=f"build {dataset} scenes", unit="scene", **bar_pacing())
    start = time.perf_counter()
    try:
        if n_workers == 1:
            outcomes = map(_build_scene, jobs)
            _collect(outcomes, result, progress)
        else:
            _collect(spawn_imap_unordered(_build_scene, jobs, n_workers), result, progress)
    finally:
        progress.close()
    built = sum(1 for n in pending if result[n])
    elsewhere = f" ({len(pending) - built} baked meanwhile by another process)" if built < len(pending) else ""
    logger.info("built %d %s scene(s) in %.1f s%s", built, dataset, time.perf_counter() - start, elsewhere)
    return result


def _collect(outcomes: Iterable[tuple[str, list[str], float]], result: dict[str, list[str]], progress: tqdm) -> None:
    for scene, built, seconds in outcomes:
        result[scene] = built
        progress.set_postfix_str(f"{scene} {seconds:.1f}s", refresh=False)
        progress.update(1)


def ensure_scenes(
    cfg: Any,
    dataset: str,
    scenes: Sequence[str] | None = None,
    stages: Sequence[str] = ("layout", "vision"),
    workers: int | None = None,
) -> list[Path]:
    """Build whatever ``stages`` of ``scenes`` are missing or stale; return the scene directories."""
    build_scenes(cfg, dataset, scenes, stages, workers=workers)
    preset = get_preset(dataset)
    names = list(scenes) if scenes else preset.scene_names(getattr(cfg.scenes, "num_scenes", None))
    return [scene_dir(cfg.scenes.data_root, dataset, n) for n in names]


# ---------------------------------------------------------------------------------------------- background build
def main(argv: list[str] | None = None) -> int:
    """Bake ``--scenes`` with a training run's data root, image size and ``acoustics.*`` overrides; a failed
    bake exits non-zero (a traceback in the build log), which the run reports. Bad arguments (a config key or
    value, an unknown scene) end in one line with status 2, as every script's do."""
    from asgf_nav.config import ConfigError, load_config
    from asgf_nav.logging_utils import setup_logging
    from asgf_nav.termination import install_stop_handlers

    parser = argparse.ArgumentParser(prog="python -m asgf_nav.scenes.build", description=main.__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scenes", nargs="+", required=True)
    parser.add_argument("--stages", nargs="+", choices=STAGE_ORDER, default=list(STAGE_ORDER))
    parser.add_argument("overrides", nargs="*", help="config overrides like acoustics.rays=300 (before --scenes)")
    args = parser.parse_args(argv)
    install_stop_handlers()  # SIGTERM (the run's stop, or its death) raises SystemExit: a process pool is closed
    setup_logging("INFO")
    try:
        cfg = load_config(
            None, args.overrides, {"scenes.data_root": args.data_root, "scenes.image_size": args.image_size}
        )
        unknown = sorted(set(args.scenes) - set(get_preset(args.dataset).scene_names()))
    except ConfigError as exc:
        parser.error(str(exc))
    if unknown:  # before the bake: build_scenes would refuse it too, with a traceback in this log
        parser.error(f"--scenes: {args.dataset} has no scene {', '.join(map(repr, unknown))}")
    try:
        build_scenes(cfg, args.dataset, args.scenes, stages=args.stages, workers=args.workers)
    except (KeyboardInterrupt, SystemExit):  # the run stopped it: the build log says so, not just ends
        logger.info("background bake stopped; finished scenes and baked sources stay for the next run")
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
