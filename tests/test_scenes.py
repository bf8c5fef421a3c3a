"""Scene presets, procedural floor plans, the scene build pipeline and the read-side Scene."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.config import ExperimentConfig
from asgf_nav.scenes.build import (
    StageUnavailableError,
    bake_vision,
    build_scenes,
    ensure_scenes,
    stage_is_current,
    stages_to_build,
)
from asgf_nav.scenes.floorplan import OCTAVE_BANDS, Box, Doorway, FloorPlan, Room
from asgf_nav.scenes.furnish import is_walkable, prune_blocking_furniture
from asgf_nav.scenes.generator import GENERATOR_VERSION, WALL_THICKNESS, footprint_area, generate, generate_floorplan
from asgf_nav.scenes.presets import SPLITS, get_preset
from asgf_nav.scenes.scene import FLOORPLAN_FILE, Scene, layout_digest
from asgf_nav.scenes.store import SceneStoreError, remove_stage, scene_dir, stage_complete


# ---------------------------------------------------------------------------------------------- presets
def test_replica_preset_follows_soundspaces_protocol() -> None:
    p = get_preset("replica")
    assert (p.grid_size, p.sample_rate, len(p.scene_names())) == (0.5, 44100, 18)
    splits = {s: set(p.split_scenes(s)) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [9, 4, 5]
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    names = set(p.scene_names())
    assert {"apartment_0", "frl_apartment_5", "office_4", "hotel_0", "room_2"} <= names
    assert p.split_of("apartment_0") == "train" and p.spec("office_3").kind == "office"


def test_mp3d_preset_keeps_split_proportions() -> None:
    p = get_preset("mp3d")
    assert (p.grid_size, p.sample_rate) == (1.0, 16000)
    assert [len(p.split_scenes(s)) for s in SPLITS] == [59, 11, 15]
    assert p.split_counts(10) == {"train": 7, "val": 1, "test": 2}
    assert p.split_counts(3) == {"train": 1, "val": 1, "test": 1}
    small = p.scene_names(17)
    assert len(small) == 17 and all(p.split_of(n) in SPLITS for n in small)
    with pytest.raises(ValueError, match="num_scenes=2"):
        p.scene_names(2)
    with pytest.raises(KeyError, match="no_such_scene"):
        p.spec("no_such_scene")
    with pytest.raises(KeyError, match="available"):
        get_preset("matterport")


# ---------------------------------------------------------------------------------------------- generator
def test_generator_is_deterministic_per_name() -> None:
    a = generate_floorplan("replica", "apartment_1").to_dict()
    assert a == generate_floorplan("replica", "apartment_1").to_dict()
    assert a != generate_floorplan("replica", "apartment_2").to_dict()
    assert generate("house", 5, (120, 200), 1.0).to_dict() == generate("house", 5, (120, 200), 1.0).to_dict()


@pytest.mark.parametrize(
    "preset,scene",
    [("replica", "apartment_0"), ("replica", "office_0"), ("replica", "hotel_0"), ("mp3d", "house_00"),
     ("mp3d", "house_03"), ("tiny", "tiny_apartment")],
)  # fmt: skip
def test_floorplan_is_well_formed(preset: str, scene: str) -> None:
    plan = generate_floorplan(preset, scene)
    names = [r.name for r in plan.rooms]
    assert len(set(names)) == len(names)
    for i, a in enumerate(plan.rooms):  # room interiors do not overlap
        for b in plan.rooms[i + 1 :]:
            assert min(a.x1, b.x1) <= max(a.x0, b.x0) or min(a.z1, b.z1) <= max(a.z0, b.z0)
    for w in plan.walls:  # finite thickness, full height (lintels above doors)
        assert min(w.x1 - w.x0, w.z1 - w.z0) > 0.05 and w.y1 == pytest.approx(plan.ceiling_height)
    for f in plan.furniture:
        room = plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2)
        assert room is not None and room.x0 <= f.x0 and f.x1 <= room.x1 and room.z0 <= f.z0 and f.z1 <= room.z1
    for d in plan.doorways:
        assert set(d.rooms) <= set(names) and d.height > 2.0
        assert plan.room_at(d.x0 - 0.01, d.z0 - 0.01) or plan.room_at(d.x1 + 0.01, d.z1 + 0.01)
    for m in plan.materials.values():
        assert len(m.absorption) == len(OCTAVE_BANDS) and all(0 < a < 1 for a in m.absorption)
        assert all(0 <= c <= 1 for c in m.color)
    for name in [plan.ceiling_material, *(r.floor_material for r in plan.rooms), *(b.material for b in plan.walls)]:
        plan.material(name)
    assert FloorPlan.from_dict(json.loads(plan.to_json())).to_dict() == plan.to_dict()


@pytest.mark.parametrize(
    "preset,scenes",
    [("replica", None), ("tiny", None), ("mp3d", ("house_00", "house_03", "house_08", "house_16", "house_24"))],
)
def test_area_range_bounds_the_footprint_between_wall_centre_lines(preset: str, scenes: tuple[str] | None) -> None:
    """The preset's area range is the footprint between the exterior walls' centre lines, up to rounding
    its sides to the 0.5 m lattice (at most 0.25 m times the longer side); the room interiors that
    ``floor_area`` sums, each grown by its half-thickness wall rims, tile that footprint exactly."""
    p = get_preset(preset)
    for name in scenes or p.scene_names():
        plan, (lo, hi) = generate_floorplan(preset, name), p.spec(name).area_range
        t = WALL_THICKNESS
        xs, zs = [v for r in plan.rooms for v in (r.x0, r.x1)], [v for r in plan.rooms for v in (r.z0, r.z1)]
        longer = max(max(xs) - min(xs), max(zs) - min(zs)) + t
        footprint = footprint_area(plan)
        assert lo - 0.25 * longer <= footprint <= hi + 0.25 * longer, (name, footprint, lo, hi)
        assert footprint == pytest.approx(sum((r.x1 - r.x0 + t) * (r.z1 - r.z0 + t) for r in plan.rooms))
        assert plan.floor_area == pytest.approx(sum(r.area for r in plan.rooms)) and plan.floor_area < footprint


def test_only_the_furniture_that_blocks_a_doorway_is_removed() -> None:
    """A piece in front of the only door goes; the harmless pieces placed after it in the next room stay."""
    t = WALL_THICKNESS / 2
    rooms = [
        Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 2.75 - t, "m", "m"),
        Room("b", "bedroom", 3.25 + t, 0.25 + t, 6.25 - t, 2.75 - t, "m", "m"),
    ]
    walls = [Box(3.25 - t, 0.25 - t, 3.25 + t, 1.0, 0, 2.5, "m"), Box(3.25 - t, 2.0, 3.25 + t, 2.75 + t, 0, 2.5, "m")]
    walls += [
        Box(-0.2, 0.25 - t, 6.25 + t, 0.25 + t, 0, 2.5, "m"),
        Box(-0.2, 2.75 - t, 6.25 + t, 2.75 + t, 0, 2.5, "m"),
    ]
    walls += [Box(0.25 - t, 0.25, 0.25 + t, 2.75, 0, 2.5, "m"), Box(6.25 - t, 0.25, 6.25 + t, 2.75, 0, 2.5, "m")]
    blocker = Box(2.6, 1.0, 3.1, 2.0, 0, 1.0, "m", "furniture:shelf")
    harmless = [
        Box(5.6, 0.4, 6.1, 0.8, 0, 1.0, "m", "furniture:plant"),
        Box(5.6, 2.2, 6.1, 2.6, 0, 1.0, "m", "furniture:plant"),
    ]
    door = Doorway(3.25 - t, 1.0, 3.25 + t, 2.0, 2.1, ("a", "b"))
    plan = FloorPlan("two", "apartment", 0, 2.5, "m", rooms, walls, [blocker, *harmless], [door], {})
    assert not is_walkable(plan, 0.5)
    assert prune_blocking_furniture(plan, 0.5).furniture == harmless
    assert is_walkable(plan, 0.5) and prune_blocking_furniture(plan, 0.5).furniture == harmless  # a no-op now
    plan.doorways = [replace(door, z0=2.8, z1=3.0)]  # a doorway outside every room: never walkable
    with pytest.raises(ValueError, match="'two' is not walkable at grid size 0.5 even without furniture"):
        prune_blocking_furniture(plan, 0.5)


def test_a_new_generator_version_keeps_the_views_of_an_unchanged_layout(tmp_path: Path) -> None:
    """Layouts from an older generator are rebuilt; views (and impulse responses) baked from a layout that
    comes out identical are kept, so a version bump for other scenes costs no re-bake of these."""
    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 16
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    views = (directory / "rgb.npy").stat().st_mtime_ns
    manifest = directory / "manifest.json"
    content = json.loads(manifest.read_text())
    content["stages"]["layout"]["meta"]["generator_version"] = GENERATOR_VERSION - 1
    manifest.write_text(json.dumps(content))
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1) == {
        "tiny_room_test": ["layout"]
    }
    store = Scene(directory).store
    assert store.meta("layout")["generator_version"] == GENERATOR_VERSION
    assert store.meta("vision")["layout_digest"] == layout_digest(store)
    assert (directory / "rgb.npy").stat().st_mtime_ns == views


def test_layouts_include_loops_and_multiroom_homes() -> None:
    p = get_preset("mp3d")
    plans = [generate_floorplan("mp3d", n) for n in p.scene_names()[:8]]
    assert all(len(plan.rooms) >= 4 and any(r.kind == "corridor" for r in plan.rooms) for plan in plans)
    assert any(len(plan.doorways) > len(plan.rooms) - 1 for plan in plans), "some layout must contain a loop"
    assert all(len(plan.furniture) > 0 for plan in plans)


# ---------------------------------------------------------------------------------------------- build + Scene
@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, float]:
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path_factory.mktemp("data"))
    start = time.perf_counter()
    build_scenes(cfg, "tiny", stages=("layout", "vision"), workers=1)
    return cfg, time.perf_counter() - start


def test_tiny_preset_builds_quickly(tiny_build: tuple[ExperimentConfig, float]) -> None:
    cfg, seconds = tiny_build
    assert seconds < 20.0, f"tiny preset took {seconds:.1f} s"
    for split in SPLITS:
        assert len(get_preset("tiny").split_scenes(split)) == 1
    scene = Scene.open(cfg.scenes.data_root, "tiny", "tiny_apartment")
    assert scene.num_nodes <= 60 and scene.has_vision


def test_scene_exposes_layout_and_views(tiny_build: tuple[ExperimentConfig, float]) -> None:
    cfg, _ = tiny_build
    scene = Scene.open(cfg.scenes.data_root, "tiny", "tiny_apartment")
    n, s = scene.num_nodes, cfg.scenes.image_size
    assert (scene.name, scene.dataset, scene.grid_size) == ("tiny_apartment", "tiny", 0.5)
    assert scene.positions.shape == (n, 3) and scene.neighbors.shape == (n, 4) and scene.neighbors.dtype == np.int32
    assert scene.rgb.shape == (n, 4, s, s, 3) and scene.rgb.dtype == np.uint8
    assert scene.depth.shape == (n, 4, s, s) and scene.depth.dtype == np.float16
    assert isinstance(scene.rgb, np.memmap) and scene.image_size == s
    digest = layout_digest(scene.store)
    assert scene.store.meta("vision") == {"image_size": s, "hfov": 90.0, "camera_height": 1.25, "layout_digest": digest}
    assert scene.floorplan.name == "tiny_apartment" and len(scene.floorplan.rooms) == 2
    layout = scene.store.meta("layout")
    assert layout["footprint_area"] == round(footprint_area(scene.floorplan), 2) > layout["floor_area"]
    for node in (0, n // 2, n - 1):
        assert scene.node_at(scene.positions[node]) == node
    with pytest.raises(KeyError, match="not a navigation node"):
        scene.node_at((scene.positions[0][0] + 0.25, 0.0, scene.positions[0][2]))
    a, b = 0, n - 1
    assert scene.geodesic_distance(a, b) == pytest.approx(float(scene.geodesic_hops[a, b]) * 0.5)
    assert scene.geodesic_distance(a, b) >= np.abs(scene.positions[a] - scene.positions[b]).max()
    # moving forward from node n at yaw 90k lands on neighbours[n, k]; the view ahead is deeper than a step
    k = int(np.flatnonzero(scene.neighbors[0] >= 0)[0])
    centre = scene.depth[0, k, s // 2 - 2 : s // 2 + 2, s // 2 - 2 : s // 2 + 2].astype(np.float32)
    assert centre.min() > scene.grid_size - 0.1


def test_build_skips_complete_stages_and_rebuilds_stale_ones(tiny_build: tuple[ExperimentConfig, float]) -> None:
    cfg, _ = tiny_build
    assert build_scenes(cfg, "tiny", stages=("layout", "vision"), workers=1) == {
        n: [] for n in get_preset("tiny").scene_names()
    }
    directory = scene_dir(cfg.scenes.data_root, "tiny", "tiny_room_val")
    remove_stage(directory, "vision")  # as if interrupted before the vision stage was recorded
    with pytest.raises(SceneStoreError, match="tiny_room_val"):
        _ = Scene(directory).rgb
    built = build_scenes(cfg, "tiny", ["tiny_room_val"], stages=("vision",), workers=1)
    assert built == {"tiny_room_val": ["vision"]}
    assert Scene(directory).has_vision


def test_corrupt_store_errors_name_the_file(tiny_build: tuple[ExperimentConfig, float], tmp_path: Path) -> None:
    cfg, _ = tiny_build
    import shutil

    directory = tmp_path / "scenes" / "tiny" / "tiny_room_test"
    shutil.copytree(scene_dir(cfg.scenes.data_root, "tiny", "tiny_room_test"), directory)
    depth_file = directory / "depth.npy"
    intact = depth_file.read_bytes()
    force = f"build_scenes.py --dataset tiny --data-root {tmp_path} --scenes tiny_room_test --stages vision --force"
    for damaged in (intact[:1000], b""):  # a truncated write, an emptied file
        depth_file.write_bytes(damaged)
        with pytest.raises(SceneStoreError, match=f"depth.npy.*{force}"):
            _ = Scene(directory).depth
        assert not stage_complete(directory, "vision") and stage_complete(directory, "layout")
    copy = replace(cfg, scenes=replace(cfg.scenes, data_root=str(tmp_path)))
    assert build_scenes(copy, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1) == {
        "tiny_room_test": ["vision"]  # a plain build repairs it: the recorded size no longer matches
    }
    assert depth_file.read_bytes() == intact
    (directory / "manifest.json").write_text("{ not json")
    with pytest.raises(SceneStoreError, match="manifest.json"):
        Scene(directory)
    (directory / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SceneStoreError, match="manifest.json is not a manifest"):
        Scene(directory)
    with pytest.raises(SceneStoreError, match="missing manifest.json"):
        Scene(tmp_path / "scenes" / "tiny" / "absent")


def test_image_size_change_and_acoustics_stage(
    tiny_build: tuple[ExperimentConfig, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    cfg.scenes.image_size = 32
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    assert Scene(directory).rgb.shape[2:] == (32, 32, 3)
    cfg.scenes.image_size = 16
    with caplog.at_level("WARNING", logger="asgf_nav.scenes.build"):  # runs sharing a root are told
        assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("vision",), workers=1) == {"tiny_room_test": ["vision"]}
    assert Scene(directory).depth.shape[2:] == (16, 16)
    assert [
        r.getMessage() for r in caplog.records if r.name == "asgf_nav.scenes.build" and r.levelname == "WARNING"
    ] == [
        "tiny/tiny_room_test: re-baking vision baked with other settings (image_size 32 -> 16); runs of those "
        "settings will re-bake them in turn, so give them a data root of their own"
    ]
    monkeypatch.setitem(sys.modules, "asgf_nav.acoustics.bake", None)  # make the import fail
    with pytest.raises(StageUnavailableError, match="acoustics"):
        build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision", "acoustics"), workers=1)
    with pytest.raises(ValueError, match="unknown scene stage"):
        build_scenes(cfg, "tiny", ["tiny_room_test"], ("photons",), workers=1)


def test_views_of_another_layout_are_baked_again(tmp_path: Path) -> None:
    """A rebuilt layout must not keep views rendered from the one before: a changed floor plan with the same
    nodes, or a layout rewrite that was interrupted (its entry is dropped from the manifest first)."""
    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 16
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    manifest = directory / "manifest.json"
    plan = json.loads((directory / FLOORPLAN_FILE).read_text())
    (directory / FLOORPLAN_FILE).write_text(json.dumps({**plan, "furniture": []}))  # an older generator's plan
    bake_vision(directory, cfg)  # and views rendered from it
    content = json.loads(manifest.read_text())
    content["stages"]["layout"]["meta"]["generator_version"] = 0
    manifest.write_text(json.dumps(content))
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1) == {"tiny_room_test": ["layout"]}
    assert stages_to_build(directory, ("layout", "vision"), cfg) == ["vision"]
    ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    remove_stage(directory, "layout")  # interrupted while the layout was rewritten to the same plan:
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1) == {"tiny_room_test": ["layout"]}
    assert stages_to_build(directory, ("layout", "vision"), cfg) == []  # the views recorded this very layout
    content = json.loads(manifest.read_text())
    del content["stages"]["vision"]["meta"]["layout_digest"]  # views of a version that did not record it
    manifest.write_text(json.dumps(content))
    remove_stage(directory, "layout")
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1) == {"tiny_room_test": ["layout"]}
    assert stages_to_build(directory, ("layout", "vision"), cfg) == ["vision"]
    ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    assert stages_to_build(directory, ("layout", "vision"), cfg) == []
    (directory / FLOORPLAN_FILE).write_text(json.dumps({**plan, "furniture": []}))  # views that recorded their layout
    assert "vision" in stages_to_build(directory, ("layout", "vision"), cfg)


def test_a_scene_of_another_store_format_is_named_and_baked_again(tmp_path: Path) -> None:
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 0}))
    hint = r"bake it again: python scripts/build_scenes.py --dataset tiny .* --scenes tiny_room_val --force"
    with pytest.raises(SceneStoreError, match=r"format_version 0, this code reads 1; " + hint):
        Scene(directory)
    assert build_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1) == {"tiny_room_val": ["layout"]}
    assert Scene(directory).num_nodes > 0


def test_a_read_only_data_root_is_read_as_it_is_and_a_stage_it_lacks_is_refused_before_any_write(
    tmp_path: Path, monkeypatch
) -> None:
    """A lab's dataset shared read-only: what is baked is used, and a stage to bake there is one error naming the
    data root, the scene and the stage, with advice, instead of a failed write in the middle of the bake."""
    from asgf_nav import io
    from asgf_nav.scenes import build

    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path / "shared"), 16
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    baked = sorted(p.name for p in directory.iterdir())
    real_access = os.access
    monkeypatch.setattr(io.os, "access", lambda path, mode: "shared" not in str(path) and real_access(path, mode))
    assert build_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1) == {"tiny_room_val": []}
    advice = (
        r"bake it where the data root can be written \(python scripts/build_scenes.py --dataset tiny "
        rf"--data-root {tmp_path}/shared with this run's config\), or point scenes.data_root at a writable copy"
    )
    said = (
        rf"scenes.data_root {tmp_path}/shared: scene tiny/tiny_room_val lacks stage\(s\) \['vision'\], and {directory} "
        r"is not writable, so it cannot be baked there; " + advice
    )
    with pytest.raises(SceneStoreError, match=said):
        build_scenes(cfg, "tiny", ["tiny_room_val"], ("layout", "vision"), workers=1)
    assert sorted(p.name for p in directory.iterdir()) == baked  # no lock file, no temporary
    build.bake_vision(directory, cfg)  # baked by its owner, at 16 px
    cfg.scenes.image_size = 24  # a run that wants views of another size
    with pytest.raises(SceneStoreError, match=r"tiny_room_val has stage\(s\) \['vision'\] stale"):
        build_scenes(cfg, "tiny", ["tiny_room_val"], ("vision",), workers=1)
    with pytest.raises(SceneStoreError, match=rf"tiny_room_test lacks stage\(s\) \['layout'\], and {tmp_path}/shared/"):
        build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1)  # a scene not there at all


def test_a_scene_the_user_may_not_read_is_named_so_and_never_baked_over(tmp_path: Path, monkeypatch) -> None:
    """Another user's data root baked with umask 077: an unreadable manifest was read as a scene never baked (a
    build then baked over the owner's files, or was told to where it could not), an unreadable array as a
    damaged one to bake again."""
    import errno

    from asgf_nav.scenes import store
    from asgf_nav.scenes.store import SceneAccessError, SceneStore

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path / "shared")
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    manifest, array = directory / "manifest.json", directory / "positions.npy"
    before = {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}
    denied: set[Path] = set()
    read_text = Path.read_text

    def guard(method):
        def guarded(self, *args, **kwargs):
            if self in denied:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return method(self, *args, **kwargs)

        return guarded

    monkeypatch.setattr(Path, "read_text", guard(read_text))
    load_npy = store.load_npy
    monkeypatch.setattr(store, "load_npy", lambda path, **kwargs: guard(lambda p: load_npy(p, **kwargs))(Path(path)))
    denied.add(array)
    with pytest.raises(SceneAccessError, match=rf"cannot read {array}: Permission denied .*chmod -R a\+rX"):
        _ = SceneStore(directory).array("positions")
    denied.add(manifest)
    with pytest.raises(SceneAccessError, match=rf"cannot read {manifest}: Permission denied"):
        build_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    assert {path.name: path.stat().st_mtime_ns for path in directory.iterdir()} == before  # nothing baked over


def test_a_scene_of_a_later_store_format_is_named_so_and_not_baked_over_without_force(tmp_path: Path, capsys) -> None:
    """A data root shared with a later release: its bake is named as that release's, and a build (scripts or a
    run's) refuses to overwrite it unless --force, which bakes it in this release's format."""
    import build_scenes as script

    from asgf_nav.scenes.build import _build_scene
    from asgf_nav.scenes.store import FORMAT_VERSION

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    manifest = directory / "manifest.json"
    later = FORMAT_VERSION + 1
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": later}))
    baked = manifest.read_text()
    said = (
        rf"scene manifest {manifest} has format_version {later}: the scene was baked by a later release of asgf-nav "
        rf"\(this release reads format {FORMAT_VERSION}\); update asgf-nav to read it, or, to overwrite it with this "
        r"release's format, bake it again: python scripts/build_scenes.py --dataset tiny .* --scenes tiny_room_val "
        r"--force"
    )
    with pytest.raises(SceneStoreError, match=said):
        Scene(directory)
    with pytest.raises(SceneStoreError, match=said):
        build_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    with pytest.raises(SceneStoreError, match=said):  # a build that finds it once it holds the scene's lock
        _build_scene((cfg, "tiny", "tiny_room_val", ("layout",), False, 1))
    argv = ["--dataset", "tiny", "--data-root", str(tmp_path), "--scenes", "tiny_room_val", "--stages", "layout"]
    with pytest.raises(SceneStoreError, match=said):
        script.main(argv)
    assert manifest.read_text() == baked  # untouched
    assert script.main([*argv, "--force"]) == 0
    assert json.loads(manifest.read_text())["format_version"] == FORMAT_VERSION and Scene(directory).num_nodes > 0


def test_parallel_build_matches_serial(tiny_build: tuple[ExperimentConfig, float], tmp_path: Path) -> None:
    cfg, _ = tiny_build
    parallel = ExperimentConfig()
    parallel.scenes.data_root = str(tmp_path)
    parallel.scenes.image_size = 32
    build_scenes(parallel, "tiny", ["tiny_room_val", "tiny_room_test"], ("layout",), workers=2)
    for name in ("tiny_room_val", "tiny_room_test"):
        a, b = Scene.open(tmp_path, "tiny", name), Scene.open(cfg.scenes.data_root, "tiny", name)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.geodesic_hops, b.geodesic_hops)
        assert not a.has_vision


def test_a_bake_removes_what_a_killed_bake_left_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILLed or OOM-killed bake leaves its atomic writes' temporaries and an unfinished stage; the
    bake that finishes it, holding the scene's lock, deletes them (a vision stage's can be 150 MB) and
    nothing else. Where the file system cannot lock, they may be another bake's: they stay."""
    import errno
    import fcntl

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_val"], ("layout",), workers=1)
    stale = [directory / ".rgb.npy.0a1b2c3d.tmp", directory / "acoustics_partial" / ".source_003.npz.deadbeef.tmp"]
    kept = [directory / ".notes.tmp", directory / "rgb.npy.0a1b2c3d.tmp", directory / "acoustics_partial" / "x.npz"]
    for path in stale + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\0" * 1000)
    cfg.scenes.image_size = 16

    def no_locks(handle: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    with monkeypatch.context() as patch:
        patch.setattr(fcntl, "flock", no_locks)
        assert build_scenes(cfg, "tiny", ["tiny_room_val"], ("vision",), workers=1) == {"tiny_room_val": ["vision"]}
    assert all(path.exists() for path in stale + kept)
    cfg.scenes.image_size = 24
    assert build_scenes(cfg, "tiny", ["tiny_room_val"], ("vision",), workers=1) == {"tiny_room_val": ["vision"]}
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def test_a_scene_being_baked_elsewhere_is_waited_for_not_baked_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    from stopping import wait_for_log

    from asgf_nav.scenes.build import bake_layout
    from asgf_nav.scenes.store import bake_lock, stage_complete

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    directory = scene_dir(tmp_path, "tiny", "tiny_room_test")
    result: dict[str, list[str]] = {}
    with bake_lock(directory):  # "another process" is baking this scene
        second = threading.Thread(
            target=lambda: result.update(build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1))
        )
        with caplog.at_level(logging.INFO, logger="asgf_nav.io"):
            second.start()
            wait_for_log(caplog, "is being written by another process; waiting for it", second)
        assert not stage_complete(directory, "layout")  # it waits, it does not bake
        bake_layout(directory, cfg)
    second.join(timeout=60)
    assert result == {"tiny_room_test": []}  # it found the stage current once the lock was free
    with bake_lock(directory):  # released: taken again at once
        pass


def test_zero_workers_means_one_per_usable_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """``scenes.workers=0`` counts the cores this process may use (taskset, Slurm), not the machine's."""
    from asgf_nav.scenes import build
    from asgf_nav.scenes.build import _resolve_workers

    monkeypatch.setattr(build, "usable_cpus", lambda: 5)
    cfg = ExperimentConfig()
    cfg.scenes.workers = 0
    assert _resolve_workers(None, cfg, jobs=100) == 5 and _resolve_workers(0, cfg, jobs=3) == 3
    assert _resolve_workers(2, cfg, jobs=100) == 2


def test_a_bake_ends_at_a_stop_whose_exception_was_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The background builder's stop can be dropped by Python (raised inside a ``__del__``); the bake then
    ends before its next stage instead of baking on until the run kills it."""
    import signal

    from asgf_nav import termination

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    monkeypatch.setattr(termination, "_received", signal.SIGTERM)  # recorded by the handler, exception lost
    with pytest.raises(SystemExit) as stopped:
        build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert "exception got lost; stopping now" in caplog.text
    assert not stage_complete(scene_dir(tmp_path, "tiny", "tiny_room_test"), "layout")


def test_baked_view_k_is_the_view_at_yaw_90k(tmp_path: Path) -> None:
    from asgf_nav.config import ExperimentConfig
    from asgf_nav.scenes.build import ensure_scenes
    from asgf_nav.scenes.mesh import floorplan_mesh
    from asgf_nav.scenes.render import RayRenderer
    from asgf_nav.scenes.scene import Scene

    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 8
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    scene = Scene(directory)
    renderer = RayRenderer(floorplan_mesh(scene.floorplan), 8)
    node = scene.num_nodes // 2
    for k in range(4):
        _, d = renderer.render(scene.positions[node : node + 1], np.array([90.0 * k]))
        np.testing.assert_array_equal(scene.depth[node, k], d[0].astype(np.float16))


def test_views_are_stale_when_the_layout_was_rewritten_but_they_were_not_dropped(tmp_path: Path) -> None:
    """A bake killed between writing a new layout and dropping the views it invalidates."""
    from asgf_nav.config import ExperimentConfig
    from asgf_nav.scenes.build import ensure_scenes, stages_to_build
    from asgf_nav.scenes.scene import FLOORPLAN_FILE
    from asgf_nav.scenes.store import SceneStore, write_stage

    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 8
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    store = SceneStore(directory)
    arrays = {n: np.array(store.array(n)) for n in ("positions", "neighbors", "geodesic_hops")}
    arrays["positions"][:, 0] += 0.5  # another layout of the same size
    write_stage(directory, "layout", arrays, meta=store.meta("layout"),
                files={FLOORPLAN_FILE: (directory / FLOORPLAN_FILE).read_text()})  # fmt: skip
    assert stages_to_build(directory, ("layout", "vision"), cfg) == ["vision"]


def test_a_stage_rewrite_that_dies_half_way_is_not_complete(tmp_path: Path, monkeypatch) -> None:
    from asgf_nav.scenes import store as store_mod

    write = store_mod.atomic_save_npy
    store_mod.write_stage(tmp_path, "layout", {"a": np.zeros(4), "b": np.zeros(4)}, meta={"v": 1})
    calls = []

    def dies_on_second(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(path, array)

    monkeypatch.setattr(store_mod, "atomic_save_npy", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        store_mod.write_stage(tmp_path, "layout", {"a": np.ones(4), "b": np.ones(4)}, meta={"v": 2})
    assert not store_mod.stage_complete(tmp_path, "layout")  # never old meta {"v": 1} over new a + old b


def test_an_array_of_another_shape_is_refused(tmp_path: Path) -> None:
    from asgf_nav.scenes.store import SceneStore, SceneStoreError, write_stage

    write_stage(tmp_path, "layout", {"positions": np.zeros((4, 3))})
    np.save(tmp_path / "positions.npy", np.zeros((3, 4)))  # same dtype and size, other shape
    with pytest.raises(SceneStoreError, match="manifest says"):
        SceneStore(tmp_path).array("positions")


PLANS = [("replica", "apartment_0"), ("replica", "office_0"), ("mp3d", "house_00"), ("mp3d", "house_03")]


@pytest.mark.parametrize("preset,scene", PLANS)
def test_door_heights_follow_the_documented_rule(preset: str, scene: str) -> None:
    from asgf_nav.scenes.generator import generate_floorplan

    plan = generate_floorplan(preset, scene)
    for d in plan.doorways:
        width = max(d.x1 - d.x0, d.z1 - d.z0)
        expected = 2.1 if width <= 1.0 + 1e-6 else plan.ceiling_height - 0.3
        assert d.height == pytest.approx(expected), (width, d.height)


@pytest.mark.parametrize("preset,scene", PLANS)
def test_every_room_edge_touches_a_wall_of_its_own_material_or_a_doorway(preset: str, scene: str) -> None:
    from asgf_nav.scenes.generator import generate_floorplan

    plan = generate_floorplan(preset, scene)
    solid = [w for w in plan.walls if w.kind == "wall"]
    openings = plan.doorways
    for r in plan.rooms:
        for t in np.linspace(0.05, 0.95, 7):
            x, z = r.x0 + t * (r.x1 - r.x0), r.z0 + t * (r.z1 - r.z0)
            for px, pz in ((r.x0 - 0.01, z), (r.x1 + 0.01, z), (x, r.z0 - 0.01), (x, r.z1 + 0.01)):
                if any(d.x0 - 1e-6 <= px <= d.x1 + 1e-6 and d.z0 - 1e-6 <= pz <= d.z1 + 1e-6 for d in openings):
                    continue
                boxes = [w for w in solid if w.contains_xz(px, pz)]
                assert boxes and all(w.material == r.wall_material for w in boxes), (r.name, px, pz)


@pytest.mark.parametrize("preset,scene", PLANS)
def test_furniture_keeps_clear_of_doorways(preset: str, scene: str) -> None:
    from asgf_nav.scenes.furnish import DOOR_CLEAR_DEPTH
    from asgf_nav.scenes.generator import generate_floorplan

    plan = generate_floorplan(preset, scene)
    m = DOOR_CLEAR_DEPTH - 1e-3
    for f in plan.furniture:
        room = plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2).name
        for d in (d for d in plan.doorways if room in d.rooms):  # the doors of the piece's own room
            overlap = f.x0 < d.x1 + m and d.x0 - m < f.x1 and f.z0 < d.z1 + m and d.z0 - m < f.z1
            assert not overlap, (f, d)


def test_mp3d_scene_names_are_unique_and_the_splits_disjoint():
    """MP3D houses are named by their index in the whole set: train, val and test share no scene."""
    from asgf_nav.scenes.presets import SPLITS, get_preset

    p = get_preset("mp3d")
    names = [s.name for s in p.specs]
    assert len(names) == len(set(names)) == 85
    splits = {s: set(p.split_scenes(s)) for s in SPLITS}
    assert sum(len(v) for v in splits.values()) == len(set().union(*splits.values())) == 85
    for split, scenes in splits.items():
        assert all(p.split_of(n) == split for n in scenes), split
    assert p.split_scenes("val")[0] == "house_59" and p.split_scenes("test")[-1] == "house_84"


def test_a_limited_scene_set_is_the_first_scenes_of_each_split():
    """A limited scene set is the first scenes of each split (docs/scenes.md), so a smaller build is a subset
    of a larger one. replica, num_scenes=6: val = max(1, round(6*4/18)) = 1, test = max(1, round(6*5/18)) = 2."""
    from asgf_nav.scenes.presets import get_preset

    p = get_preset("replica")
    assert p.split_counts(6) == {"train": 3, "val": 1, "test": 2}
    assert p.scene_names(6) == [
        "apartment_0", "apartment_1", "frl_apartment_0", "apartment_2", "frl_apartment_5", "hotel_0",
    ]  # fmt: skip
    assert set(p.scene_names(6)) <= set(p.scene_names(10)) <= set(p.scene_names())


@pytest.mark.parametrize(
    "preset,scene", [("replica", "apartment_0"), ("replica", "frl_apartment_1"), ("mp3d", "house_00")]
)
def test_bathrooms_are_dead_ends(preset: str, scene: str) -> None:
    """Loop-closing doors never open into a bathroom and the spanning tree takes a bathroom door last (its
    weight is 2 higher), so in these plans every bathroom has exactly one doorway (docs/scenes.md)."""
    plan = generate_floorplan(preset, scene)
    bathrooms = [r.name for r in plan.rooms if r.kind == "bathroom"]
    assert bathrooms
    for name in bathrooms:
        assert sum(name in d.rooms for d in plan.doorways) == 1, name


@pytest.mark.parametrize("scene", ["apartment_0", "apartment_1", "apartment_2", "frl_apartment_4"])
def test_furniture_keeps_its_template_size_the_walkway_and_the_area_budget(scene: str) -> None:
    """Each piece has its template's width and depth (either way round: along or across its wall), a
    free-standing piece keeps 0.75 m of walkway from the pieces placed before it in its room, and a room's
    furniture covers at most 28 % of its floor."""
    from asgf_nav.scenes.furnish import FURNITURE

    plan = generate_floorplan("replica", scene)
    for room in plan.rooms:
        pieces = [f for f in plan.furniture if plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2) == room]
        templates = {item.kind: item for item in FURNITURE.get(room.kind, ())}
        for j, f in enumerate(pieces):
            item = templates[f.kind.removeprefix("furniture:")]
            size = sorted((f.x1 - f.x0, f.z1 - f.z0))
            assert size == pytest.approx(sorted((item.width, item.depth)), abs=1e-3), (room.name, f)
            if item.placement == "centre":
                g = 0.75
                for o in pieces[:j]:
                    assert not (f.x0 < o.x1 + g and o.x0 < f.x1 + g and f.z0 < o.z1 + g and o.z0 < f.z1 + g), (f, o)
        assert sum((f.x1 - f.x0) * (f.z1 - f.z0) for f in pieces) <= 0.28 * room.area + 1e-9, room.name


def test_a_column_reaches_the_ceiling() -> None:
    """Office columns are templates of height 0, meaning floor to ceiling: a 0 m box would block walking
    on the graph yet be invisible to the camera and to the sound."""
    plan = generate("office", 0, (45, 50), 0.5)  # a 31 m^2 office: large enough for a column
    columns = [f for f in plan.furniture if f.kind == "furniture:column"]
    assert columns and all(c.y1 == pytest.approx(plan.ceiling_height) for c in columns)
    assert all(0.0 < f.y1 <= plan.ceiling_height for f in plan.furniture)


def test_a_room_reached_only_through_a_boxed_in_pocket_is_not_walkable() -> None:
    """The walkability check looks at the largest component only. Room b (0.88 x 0.88 m, nodes (3.5, 1.5)
    and (4.0, 1.5)) and the node (3.0, 1.5) in front of its door form a 3-node pocket (0.75 m^2, small
    enough to be ignored as a pocket) once three pieces cut that node off from room a; the edge through
    the door then lies outside the main component and room b is unreachable. Putting the pieces back in
    order, the third (the one that closes the pocket) goes."""
    t = WALL_THICKNESS / 2
    rooms = [
        Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 2.75 - t, "m", "m"),
        Room("b", "bathroom", 3.25 + t, 1.0 + t, 4.25 - t, 2.0 - t, "m", "m"),
    ]
    walls = [Box(3.25 - t, 0.25, 3.25 + t, 1.1, 0, 2.5, "m"), Box(3.25 - t, 1.9, 3.25 + t, 2.75, 0, 2.5, "m")]
    walls += [Box(3.25, 1.0 - t, 4.25 + t, 1.0 + t, 0, 2.5, "m"), Box(3.25, 2.0 - t, 4.25 + t, 2.0 + t, 0, 2.5, "m")]
    walls += [Box(4.25 - t, 1.0, 4.25 + t, 2.0, 0, 2.5, "m"), Box(0.25 - t, 0.25, 0.25 + t, 2.75, 0, 2.5, "m")]
    walls += [
        Box(0.25 - t, 0.25 - t, 3.25 + t, 0.25 + t, 0, 2.5, "m"),
        Box(0.25 - t, 2.75 - t, 3.25 + t, 2.75 + t, 0, 2.5, "m"),
    ]
    door = Doorway(3.25 - t, 1.1, 3.25 + t, 1.9, 2.1, ("a", "b"))
    plan = FloorPlan("pocket", "apartment", 0, 2.5, "m", rooms, walls, [], [door], {})
    assert is_walkable(plan, 0.5)
    pieces = [
        Box(2.85, 1.2, 3.19, 1.3, 0, 1.0, "m", "furniture:plant"),  # cuts the step (3.0, 1.0) - (3.0, 1.5)
        Box(2.85, 1.7, 3.19, 1.8, 0, 1.0, "m", "furniture:plant"),  # cuts the step (3.0, 1.5) - (3.0, 2.0)
        Box(2.7, 1.3, 2.8, 1.7, 0, 1.0, "m", "furniture:plant"),  # cuts the step (2.5, 1.5) - (3.0, 1.5)
    ]
    plan.furniture = list(pieces)
    assert not is_walkable(plan, 0.5)
    assert prune_blocking_furniture(plan, 0.5).furniture == pieces[:2]


def _one_room_plan() -> FloorPlan:
    """A 6 x 5 m room with 0.2 m walls, a 2.6 m ceiling, the generator's plaster and oak materials."""
    from asgf_nav.scenes.furnish import MATERIALS

    room = Room("r", "living", 0.0, 0.0, 6.0, 5.0, "oak_floor", "paint_white")
    walls = [
        Box(-0.2, -0.2, 6.2, 0.0, 0, 2.6, "paint_white"),
        Box(-0.2, 5.0, 6.2, 5.2, 0, 2.6, "paint_white"),
        Box(-0.2, 0.0, 0.0, 5.0, 0, 2.6, "paint_white"),
        Box(6.0, 0.0, 6.2, 5.0, 0, 2.6, "paint_white"),
    ]
    used = ("oak_floor", "paint_white", "ceiling_plaster")
    return FloorPlan("one", "room", 0, 2.6, "ceiling_plaster", [room], walls, [], [], {m: MATERIALS[m] for m in used})


def test_specular_paths_arrive_at_343_metres_per_second() -> None:
    """Source and receiver 3 m apart at ear height 1.5 m under a 2.6 m ceiling: the direct sound arrives
    after 3 / 343 s, the floor reflection (image 1.5 m below the floor) after sqrt(3^2 + 3^2) / 343 s and
    the ceiling reflection after sqrt(3^2 + 2.2^2) / 343 s, each with the inverse-distance amplitude."""
    from asgf_nav.acoustics.simulate import simulate_source

    plan = _one_room_plan()
    src, rec = np.array([1.5, 1.5, 2.5]), np.array([4.5, 1.5, 2.5])
    field = simulate_source(plan, src, rec[None], 16000, ism_order=1, rays=0)
    delays = np.sort(field.delay[field.images(0)])
    for path in (3.0, np.hypot(3.0, 3.0), np.hypot(3.0, 2.2)):
        assert np.min(np.abs(delays - path / 343.0)) < 1e-7, path  # 340 m/s would be 8e-5 s late
    direct = int(np.argmin(field.delay[field.images(0)]))
    assert field.delay[direct] == pytest.approx(3.0 / 343.0, abs=1e-7)
    np.testing.assert_allclose(field.band_amplitude[direct], 1.0 / 3.0, rtol=1e-6)


def test_a_tall_piece_of_furniture_reflects_sound_off_its_side() -> None:
    """A wardrobe [2.5, 3.5] x [3.0, 3.6], 2 m tall: source (2, 1) and receiver (4, 1) at 1.5 m hear its
    -Z face (z = 3) through the image source at (2, 5), path sqrt(2^2 + 4^2) m, reflected at (3, 1.5, 3)
    inside the face, with sqrt((1 - absorption)(1 - scattering)) of wood per band times 1 / distance."""
    from asgf_nav.acoustics.simulate import simulate_source
    from asgf_nav.scenes.furnish import MATERIALS

    plan = _one_room_plan()
    plan.furniture = [Box(2.5, 3.0, 3.5, 3.6, 0.0, 2.0, "wood_furniture", "furniture:wardrobe")]
    plan.materials["wood_furniture"] = wood = MATERIALS["wood_furniture"]
    field = simulate_source(plan, np.array([2.0, 1.5, 1.0]), np.array([[4.0, 1.5, 1.0]]), 16000, ism_order=1, rays=0)
    s = field.images(0)
    path = np.hypot(2.0, 4.0)
    (off_face,) = np.flatnonzero(np.abs(field.delay[s] - path / 343.0) < 1e-7)
    absorption = np.interp(field.band_centers, 125.0 * 2.0 ** np.arange(6), wood.absorption)  # 4 kHz held
    expected = np.sqrt((1.0 - absorption) * (1.0 - wood.scattering)) / path
    np.testing.assert_allclose(field.band_amplitude[s][off_face], expected, rtol=1e-3)
    assert field.elevation[s][off_face] == pytest.approx(0.0, abs=1e-6)
    assert field.azimuth[s][off_face] == pytest.approx(np.rad2deg(np.arctan2(2.0, -4.0)))  # from (-2, +4)


@pytest.mark.parametrize("scene", ["apartment_0", "apartment_1", "frl_apartment_0"])
def test_the_building_shell_is_full_thickness_and_closed_at_its_corners(scene: str) -> None:
    """Exterior walls are the full 0.12 m thick, reaching WALL_THICKNESS beyond the outermost room
    interiors, and they overlap at the building's corners: points in the outer half of the shell (0.09 m
    outside the interiors), at the corners and halfway along each side, lie inside a wall."""
    plan = generate_floorplan("replica", scene)
    t = WALL_THICKNESS
    x0, z0 = min(r.x0 for r in plan.rooms), min(r.z0 for r in plan.rooms)
    x1, z1 = max(r.x1 for r in plan.rooms), max(r.z1 for r in plan.rooms)
    assert plan.bounds == pytest.approx((x0 - t, z0 - t, x1 + t, z1 + t))
    walls = [w for w in plan.walls if w.kind == "wall"]
    xs, zs = (x0 - 0.75 * t, (x0 + x1) / 2, x1 + 0.75 * t), (z0 - 0.75 * t, (z0 + z1) / 2, z1 + 0.75 * t)
    shell = [(x, z) for x in xs for z in zs if (x, z) != (xs[1], zs[1])]
    for x, z in shell:
        assert any(w.contains_xz(x, z) for w in walls), (x, z)


@pytest.mark.parametrize("scene", ["apartment_0", "apartment_1", "frl_apartment_0"])
def test_a_home_of_three_or_more_rooms_has_a_bathroom_in_its_smallest_room(scene: str) -> None:
    """Homes get max(1, n // 5) bathrooms for n >= 3 rooms, in the rooms of least footprint (the interior
    grown by the wall thickness, as the partition sized them)."""
    plan = generate_floorplan("replica", scene)
    n = len(plan.rooms)
    bathrooms = [r for r in plan.rooms if r.kind == "bathroom"]
    assert n >= 3 and len(bathrooms) == max(1, n // 5)
    t = WALL_THICKNESS
    footprint = {r.name: round((r.x1 - r.x0 + t) * (r.z1 - r.z0 + t), 4) for r in plan.rooms}
    assert max(footprint[b.name] for b in bathrooms) <= min(
        footprint[r.name] for r in plan.rooms if r.kind != "bathroom"
    )


def _walled_room_3_by_2_5() -> tuple[Room, list[Box]]:
    """One 3 x 2.5 m room, walls centred on x = 0.25, 3.25 and z = 0.25, 2.75: the 0.5 m grid's nodes
    x = 0.5 .. 3.0, z = 0.5 .. 2.5 lie inside it."""
    t = WALL_THICKNESS / 2
    room = Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 2.75 - t, "m", "m")
    walls = [
        Box(0.25 - t, 0.25 - t, 3.25 + t, 0.25 + t, 0, 2.5, "m"),
        Box(0.25 - t, 2.75 - t, 3.25 + t, 2.75 + t, 0, 2.5, "m"),
        Box(0.25 - t, 0.25, 0.25 + t, 2.75, 0, 2.5, "m"),
        Box(3.25 - t, 0.25, 3.25 + t, 2.75, 0, 2.5, "m"),
    ]
    return room, walls


@pytest.mark.parametrize("pocket_nodes,walkable", [(4, True), (5, False)])
def test_a_pocket_of_up_to_one_square_metre_is_tolerated(pocket_nodes: int, walkable: bool) -> None:
    """Furniture may box in grid floor of at most 1 m^2 (MAX_POCKET_AREA): on the 0.5 m grid 4 nodes
    (4 x 0.25 m^2) along the wall at z = 0.5 may be cut off, 5 may not."""
    room, walls = _walled_room_3_by_2_5()
    end = 0.5 * pocket_nodes + 0.2  # the fence stops 0.2 m past the last boxed-in node
    fence = [
        Box(0.31, 0.7, end + 0.1, 0.8, 0, 1.0, "m", "furniture:sideboard"),  # 0.2 m above the z = 0.5 row
        Box(end, 0.31, end + 0.1, 0.8, 0, 1.0, "m", "furniture:plant"),  # across the row
    ]
    plan = FloorPlan("pocket", "room", 0, 2.5, "m", [room], walls, fence, [], {})
    assert is_walkable(plan, 0.5) == walkable


def test_reducing_the_image_order_to_fit_max_images_equals_asking_for_that_order() -> None:
    """simulate_source lowers ism_order while walls ** order exceeds max_images (6 walls: 216 > 100, 36 <= 100,
    so order 2); the ray tracer must take over from that same order, so the late tail equals an order-2 run."""
    from asgf_nav.acoustics.simulate import simulate_source

    plan = _one_room_plan()
    src, rec = np.array([1.5, 1.5, 2.5]), np.array([[4.5, 1.5, 2.0]])
    capped = simulate_source(plan, src, rec, 16000, ism_order=3, rays=300, max_seconds=0.3, max_images=100)
    asked = simulate_source(plan, src, rec, 16000, ism_order=2, rays=300, max_seconds=0.3)
    assert capped.histogram.sum() > 0
    np.testing.assert_array_equal(capped.histogram, asked.histogram)
    np.testing.assert_array_equal(capped.delay, asked.delay)


def test_a_source_hears_only_its_own_part_of_an_unconnected_plan() -> None:
    """Two rooms with no doorway between them: a source in either room reaches the receiver in its own
    room only, whichever part the free-space geometry lists first."""
    from asgf_nav.acoustics.simulate import simulate_source

    plan = _one_room_plan()
    plan.rooms.append(replace(plan.rooms[0], name="s", x0=6.2, x1=9.0))
    plan.walls += [Box(6.2, -0.2, 9.2, 0.0, 0, 2.6, "paint_white"), Box(6.2, 5.0, 9.2, 5.2, 0, 2.6, "paint_white")]
    plan.walls += [Box(9.0, 0.0, 9.2, 5.0, 0, 2.6, "paint_white")]
    ears = np.array([[3.0, 1.5, 2.5], [7.6, 1.5, 2.5]])
    for own in (0, 1):
        source = ears[own] + np.array([0.0, 0.0, 1.0])
        field = simulate_source(plan, source, ears, 16000, ism_order=1, rays=0)
        assert field.audible.tolist() == [own == 0, own == 1]
        assert np.diff(field.offsets)[1 - own] == 0 and np.diff(field.offsets)[own] > 0
        assert field.delay[field.images(own)].min() == pytest.approx(1.0 / 343.0, abs=1e-7)


# ---------------------------------------------------------------------------------------------- stage decisions
def _baked(root: Path, stages: tuple[str, ...] = ("layout",)) -> tuple[ExperimentConfig, Path]:
    """The tiny test room baked under ``root`` with 8-pixel views where asked (well under a second)."""
    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(root), 8
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], stages, workers=1)
    return cfg, directory


def _edit_manifest(directory: Path, edit: Callable[[dict], None]) -> None:
    manifest = directory / "manifest.json"
    content = json.loads(manifest.read_text())
    edit(content)
    manifest.write_text(json.dumps(content))


def test_node_at_refuses_a_position_off_by_more_than_the_tolerance(tmp_path: Path) -> None:
    """A position 5 cm beside a node is no node at the default 1 cm tolerance; 5 mm beside it is that node."""
    _, directory = _baked(tmp_path)
    scene = Scene(directory)
    x, y, z = (float(c) for c in scene.positions[3])
    assert scene.node_at((x + 0.005, y, z - 0.005)) == 3
    with pytest.raises(KeyError, match="not a navigation node"):
        scene.node_at((x + 0.05, y, z))
    assert scene.node_at((x + 0.05, y, z), tolerance=0.06) == 3


def test_a_neighbour_table_of_another_shape_is_refused(tmp_path: Path) -> None:
    """Every node needs one neighbour per yaw: a table of 3 columns for 4 nodes is refused by name."""
    from asgf_nav.scenes.store import write_stage

    arrays = {"positions": np.zeros((4, 3)), "neighbors": np.zeros((4, 3), np.int32), "geodesic_hops": np.zeros((4, 4))}
    write_stage(tmp_path, "layout", arrays, meta={"grid_size": 0.5})
    with pytest.raises(SceneStoreError, match=r"neighbors.npy has shape \(4, 3\), expected \(4, 4\)"):
        Scene(tmp_path)


def test_views_that_did_not_record_their_layout_pass_on_their_image_size(tmp_path: Path) -> None:
    """Views baked before vision recorded its layout digest are kept while the layout and image size hold."""
    cfg, directory = _baked(tmp_path, ("layout", "vision"))
    _edit_manifest(directory, lambda content: content["stages"]["vision"]["meta"].pop("layout_digest"))
    assert stages_to_build(directory, ("layout", "vision"), cfg) == []
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1) == {"tiny_room_test": []}
    cfg.scenes.image_size = 12
    assert stages_to_build(directory, ("layout", "vision"), cfg) == ["vision"]
    cfg.scenes.image_size = 8
    remove_stage(directory, "layout")
    assert not stage_is_current(directory, "vision", cfg)  # no layout left to hold them


ACOUSTIC_CHANGES = [
    ("sources_per_scene", 9), ("ism_order", 1), ("rays", 123), ("max_rir_seconds", 0.7), ("ear_height", 1.1),
    ("furniture_obstacles", False), ("max_image_sources", 77), ("source_spread", "stratified"),
]  # fmt: skip


@pytest.mark.parametrize("setting,value", ACOUSTIC_CHANGES)
def test_acoustics_baked_with_another_setting_are_baked_again(tmp_path: Path, setting: str, value: object) -> None:
    """Every acoustics setting that shapes the responses makes a stage baked with another value stale."""
    from asgf_nav.acoustics.bake import bake_params
    from asgf_nav.scenes.store import write_stage

    cfg, directory = _baked(tmp_path)
    write_stage(directory, "acoustics", {"acoustic_source_nodes": np.zeros(1, np.int32)}, bake_params(directory, cfg))
    assert stages_to_build(directory, ("layout", "acoustics"), cfg) == []
    assert getattr(cfg.acoustics, setting) != value
    setattr(cfg.acoustics, setting, value)
    assert stages_to_build(directory, ("layout", "acoustics"), cfg) == ["acoustics"]


def test_acoustics_baked_before_the_source_spread_was_recorded_stay_current(tmp_path: Path) -> None:
    """The default spread is the one every earlier bake used, so its settings record no spread at all."""
    from asgf_nav.acoustics.bake import bake_params
    from asgf_nav.scenes.build import acoustics_changes
    from asgf_nav.scenes.store import write_stage

    cfg, directory = _baked(tmp_path)
    farthest = bake_params(directory, cfg)
    assert "source_spread" not in farthest
    write_stage(directory, "acoustics", {"acoustic_source_nodes": np.zeros(1, np.int32)}, farthest)
    cfg.acoustics.source_spread = "stratified"
    stratified = bake_params(directory, cfg)
    assert stratified["source_spread"] == "stratified"
    assert acoustics_changes(directory, cfg) == {"source_spread": ("farthest", "stratified")}
    write_stage(directory, "acoustics", {"acoustic_source_nodes": np.zeros(1, np.int32)}, stratified)
    assert stages_to_build(directory, ("layout", "acoustics"), cfg) == []
    cfg.acoustics.source_spread = "farthest"  # and back: the spread the settings leave unrecorded
    assert acoustics_changes(directory, cfg) == {"source_spread": ("stratified", "farthest")}
    assert stages_to_build(directory, ("layout", "acoustics"), cfg) == ["acoustics"]


def test_distance_bounds_that_no_node_distance_meets_are_named_with_the_nearest_ones(tmp_path: Path) -> None:
    """On a 0.5 m grid no start lies 1.1-1.4 m from a source: the message gives the distances that do occur."""
    from asgf_nav.tasks.episode_generation import check_distance_bounds
    from asgf_nav.tasks.episodes import EpisodeError

    cfg, directory = _baked(tmp_path)
    check_distance_bounds(cfg, [directory])  # the defaults leave episodes
    cfg.task.min_geodesic_distance, cfg.task.max_geodesic_distance = 1.1, 1.4
    with pytest.raises(EpisodeError, match=r"1.1 / .*=1.4 m leave no episode in scene\(s\) tiny_room_test "
                       r"\(nearest: 1 m and 1.5 m\): no start node lies that far"):  # fmt: skip
        check_distance_bounds(cfg, [directory])
    cfg.task.min_geodesic_distance, cfg.task.max_geodesic_distance = 900.0, 1000.0
    with pytest.raises(EpisodeError, match=r"tiny_room_test \(nearest: [\d.]+ m\)"):
        check_distance_bounds(cfg, [directory])


def test_acoustics_of_another_layout_are_baked_again(tmp_path: Path) -> None:
    """Impulse responses record the layout they were simulated in; a layout rewritten under them makes them stale."""
    from asgf_nav.acoustics.bake import bake_params
    from asgf_nav.scenes.store import SceneStore, write_stage

    cfg, directory = _baked(tmp_path)
    write_stage(directory, "acoustics", {"acoustic_source_nodes": np.zeros(1, np.int32)}, bake_params(directory, cfg))
    store = SceneStore(directory)
    arrays = {n: np.array(store.array(n)) for n in ("positions", "neighbors", "geodesic_hops")}
    arrays["positions"][:, 2] += 0.5
    write_stage(directory, "layout", arrays, meta=store.meta("layout"),
                files={FLOORPLAN_FILE: (directory / FLOORPLAN_FILE).read_text()})  # fmt: skip
    assert stages_to_build(directory, ("layout", "acoustics"), cfg) == ["acoustics"]


def test_a_stage_brings_the_stages_it_depends_on(tmp_path: Path) -> None:
    """Asking for views or impulse responses of an unbaked scene bakes (or reports) its layout first."""
    from asgf_nav.scenes.build import missing_stages

    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 8
    directory = scene_dir(tmp_path, "tiny", "tiny_room_test")
    assert missing_stages(directory, ("vision",)) == ["layout", "vision"]
    assert missing_stages(directory, ("acoustics",)) == ["layout", "acoustics"]
    assert stages_to_build(directory, ("vision",), cfg) == ["layout", "vision"]
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("vision",), workers=1) == {
        "tiny_room_test": ["layout", "vision"]
    }
    assert missing_stages(directory, ("vision", "acoustics")) == ["acoustics"]


def test_a_stale_layout_lists_the_stages_built_on_it(tmp_path: Path) -> None:
    """A layout due for a rebuild lists the views too: they may go stale with it."""
    cfg, directory = _baked(tmp_path, ("layout", "vision"))
    _edit_manifest(directory, lambda content: content["stages"]["layout"]["meta"].update(generator_version=0))
    assert stages_to_build(directory, ("layout", "vision"), cfg) == ["layout", "vision"]
    assert stages_to_build(directory, ("vision",), cfg) == ["layout", "vision"]


def test_force_lists_and_bakes_only_the_stages_it_names(tmp_path: Path) -> None:
    """``--force --stages vision`` bakes the views again, not the current layout they depend on (the repair
    that a damaged view file's error names)."""
    cfg, directory = _baked(tmp_path, ("layout", "vision"))
    assert stages_to_build(directory, ("vision",), cfg, force=True) == ["vision"]
    assert stages_to_build(directory, ("layout", "vision"), cfg, force=True) == ["layout", "vision"]
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("vision",), workers=1, force=True) == {
        "tiny_room_test": ["vision"]
    }


def test_a_lone_scene_gives_its_acoustics_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one scene to bake, its acoustics stage gets all requested workers (it spreads over sources)."""
    from asgf_nav.scenes import build

    given: list[int] = []
    monkeypatch.setitem(build.STAGES, "acoustics", lambda directory, cfg, workers=1: given.append(workers))
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "acoustics"), workers=3) == {
        "tiny_room_test": ["layout", "acoustics"]
    }
    assert given == [3]


def test_a_layout_rebuilt_to_another_plan_drops_the_views_of_the_old_one(tmp_path: Path) -> None:
    """A layout-only rebuild that changes the layout leaves no views of the old one for a Scene to serve."""
    from asgf_nav.scenes.store import SceneStore, write_stage

    cfg, directory = _baked(tmp_path)
    store = SceneStore(directory)
    arrays = {n: np.array(store.array(n)) for n in ("positions", "neighbors", "geodesic_hops")}
    plan = json.loads((directory / FLOORPLAN_FILE).read_text())
    old = json.dumps({**plan, "furniture": []})  # a complete layout of an older generator's plan
    write_stage(directory, "layout", arrays, {**store.meta("layout"), "generator_version": 0}, {FLOORPLAN_FILE: old})
    bake_vision(directory, cfg)  # and views rendered from it
    assert Scene(directory).has_vision
    assert build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout",), workers=1) == {"tiny_room_test": ["layout"]}
    assert not Scene(directory).has_vision


# ---------------------------------------------------------------------------------------------- room partition
def test_the_partition_halves_a_cell_exactly_twice_the_minimum_side() -> None:
    """A cell 8 x 4 lattice steps split into two with a 4-step minimum can only be cut at its middle, along
    its longer side, whatever the seed: two 4 x 4 cells."""
    from asgf_nav.scenes.generator import Cell, _bsp

    for seed in range(6):
        cells = _bsp(np.random.default_rng(seed), [Cell(0, 0, 8, 4)], 2, 4)
        assert sorted((c.i0, c.j0, c.i1, c.j1) for c in cells) == [(0, 0, 4, 4), (4, 0, 8, 4)], seed


HOMES = [("replica", n) for n in ("apartment_0", "apartment_1", "frl_apartment_0", "apartment_2", "frl_apartment_5")]
HOMES += [("mp3d", n) for n in ("house_00", "house_01", "house_02", "house_03", "house_82")]


@pytest.mark.parametrize("preset,scene", HOMES)
def test_rooms_are_at_least_the_partition_minimum_across(preset: str, scene: str) -> None:
    """Between wall centre lines an apartment room is at least 4 lattice steps (2 m) wide and deep, a house
    room 5 steps (2.5 m) and a corridor 3 steps (1.5 m): the partition never cuts a sliver."""
    plan = generate_floorplan(preset, scene)
    t = WALL_THICKNESS
    for r in plan.rooms:
        least = 1.5 if r.kind == "corridor" else (2.0 if plan.kind == "apartment" else 2.5)
        assert min(r.x1 - r.x0, r.z1 - r.z0) + t >= least - 1e-6, (r.name, r.x1 - r.x0, r.z1 - r.z0)


def test_offices_above_32_square_metres_get_a_meeting_room() -> None:
    """Replica offices under 32 m^2 of footprint are one office room; a larger one (office_2, 39 m^2) is cut
    into the office and a smaller meeting room (docs/scenes.md)."""
    p = get_preset("replica")
    t = WALL_THICKNESS
    large = []
    for name in (n for n in p.scene_names() if p.spec(n).kind == "office"):
        plan = generate_floorplan("replica", name)
        kinds = sorted(r.kind for r in plan.rooms)
        if footprint_area(plan) < 32:
            assert kinds == ["office"], name
            continue
        large.append(name)
        assert kinds == ["meeting", "office"], name
        size = {r.kind: (r.x1 - r.x0 + t) * (r.z1 - r.z0 + t) for r in plan.rooms}
        assert size["office"] >= size["meeting"], name
    assert large == ["office_2"]


def test_a_hotel_room_has_its_bathroom_as_a_strip_across_the_long_side() -> None:
    """hotel_0: the bathroom takes max(3, min(5, L // 3)) lattice steps of the footprint's longer side (L
    steps) at its low end and spans the whole shorter side; the bedroom gets the rest."""
    plan = generate_floorplan("replica", "hotel_0")
    t = WALL_THICKNESS
    rooms = {r.kind: r for r in plan.rooms}
    assert sorted(rooms) == ["bathroom", "bedroom"]
    x0, z0 = min(r.x0 for r in plan.rooms) - t / 2, min(r.z0 for r in plan.rooms) - t / 2
    x1, z1 = max(r.x1 for r in plan.rooms) + t / 2, max(r.z1 for r in plan.rooms) + t / 2
    along_x = x1 - x0 >= z1 - z0
    steps = round(max(x1 - x0, z1 - z0) / 0.5)
    cut = (x0 if along_x else z0) + 0.5 * max(3, min(5, steps // 3))
    bath, bed = rooms["bathroom"], rooms["bedroom"]
    if along_x:
        expected_bath, expected_bed = (x0, z0, cut, z1), (cut, z0, x1, z1)
    else:
        expected_bath, expected_bed = (x0, z0, x1, cut), (x0, cut, x1, z1)
    for room, (a, b, c, d) in ((bath, expected_bath), (bed, expected_bed)):
        grown = (room.x0 - t / 2, room.z0 - t / 2, room.x1 + t / 2, room.z1 + t / 2)
        assert grown == pytest.approx((a, b, c, d)), room.name


@pytest.mark.parametrize("scene,rooms", [("house_01", 8), ("house_02", 13), ("house_03", 19)])
def test_a_house_gets_a_bathroom_per_five_rooms(scene: str, rooms: int) -> None:
    """A house of n rooms besides its corridors gets max(1, n // 5) bathrooms (8 rooms: 1, 13: 2, 19: 3), in
    its rooms of least footprint."""
    plan = generate_floorplan("mp3d", scene)
    t = WALL_THICKNESS
    footprint = {r.name: round((r.x1 - r.x0 + t) * (r.z1 - r.z0 + t), 4) for r in plan.rooms}
    homes = [r for r in plan.rooms if r.kind != "corridor"]
    bathrooms = [r for r in homes if r.kind == "bathroom"]
    assert (len(homes), len(bathrooms)) == (rooms, max(1, rooms // 5))
    assert max(footprint[b.name] for b in bathrooms) <= min(footprint[r.name] for r in homes if r.kind != "bathroom")


def test_a_two_room_home_has_a_living_room_and_a_bedroom_but_no_bathroom() -> None:
    """Homes of fewer than three rooms get no bathroom: the tiny flat is its living room and a bedroom."""
    plan = generate_floorplan("tiny", "tiny_apartment")
    t = WALL_THICKNESS
    size = {r.kind: (r.x1 - r.x0 + t) * (r.z1 - r.z0 + t) for r in plan.rooms}
    assert sorted(size) == ["bedroom", "living"] and size["living"] >= size["bedroom"]


@pytest.mark.parametrize("scene", ["apartment_0", "apartment_1", "frl_apartment_0", "apartment_2"])
def test_room_kinds_follow_room_size(scene: str) -> None:
    """Rooms ranked by footprint (ties by position, west then north first) are living, bedroom, kitchen,
    dining, bedroom, study, bedroom, with the last max(1, n // 5) made bathrooms (docs/scenes.md)."""
    plan = generate_floorplan("replica", scene)
    t = WALL_THICKNESS
    ranked = sorted(plan.rooms, key=lambda r: (-round((r.x1 - r.x0 + t) * (r.z1 - r.z0 + t), 4), r.x0, r.z0))
    n = len(ranked)
    bathrooms = max(1, n // 5)
    expected = ["living", "bedroom", "kitchen", "dining", "bedroom", "study", "bedroom"][: n - bathrooms]
    assert [r.kind for r in ranked] == expected + ["bathroom"] * bathrooms


def test_houses_above_200_square_metres_get_a_cross_corridor() -> None:
    """A house gets one corridor spine, and a second, cross corridor when its footprint exceeds 200 m^2."""
    counts = set()
    for name in get_preset("mp3d").scene_names()[:8]:
        plan = generate_floorplan("mp3d", name)
        corridors = sum(r.kind == "corridor" for r in plan.rooms)
        assert corridors == (2 if footprint_area(plan) > 200 else 1), (name, footprint_area(plan))
        counts.add(corridors)
    assert counts == {1, 2}


# ---------------------------------------------------------------------------------------------- furniture
def test_no_column_stands_in_an_office_under_30_square_metres() -> None:
    """Columns are for large offices only: no replica office (interiors 18-29 m^2) has one."""
    p = get_preset("replica")
    for name in (n for n in p.scene_names() if p.spec(n).kind == "office"):
        plan = generate_floorplan("replica", name)
        small = {r.name for r in plan.rooms if r.area < 30}
        for f in plan.furniture:
            if f.kind == "furniture:column":
                assert plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2).name not in small, (name, f)


@pytest.mark.parametrize("preset,scene", [("replica", "apartment_0"), ("replica", "office_2"), ("mp3d", "house_02")])
def test_furniture_stands_on_the_floor_at_its_template_height(preset: str, scene: str) -> None:
    """Every piece spans y = 0 up to its template's height (a column, height 0, up to the ceiling) and is
    made of its template's material, which the plan defines."""
    from asgf_nav.scenes.furnish import FURNITURE, MATERIALS

    plan = generate_floorplan(preset, scene)
    assert plan.furniture
    for f in plan.furniture:
        room = plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2)
        item = {i.kind: i for i in FURNITURE[room.kind]}[f.kind.removeprefix("furniture:")]
        assert (f.y0, f.y1) == pytest.approx((0.0, item.height or plan.ceiling_height)), (room.name, f)
        assert plan.materials.get(f.material) == MATERIALS[item.material]  # the plan defines what its pieces use


@pytest.mark.parametrize("preset,scene", [("replica", "apartment_0"), ("replica", "apartment_1"), ("mp3d", "house_02")])
def test_free_standing_furniture_keeps_a_walkway_to_the_walls(preset: str, scene: str) -> None:
    """A free-standing piece (coffee table, island, dining or meeting table, column) stands at least 0.8 m
    from each wall of its room, so there is room to walk around it."""
    from asgf_nav.scenes.furnish import FURNITURE

    plan = generate_floorplan(preset, scene)
    centre = {i.kind for items in FURNITURE.values() for i in items if i.placement == "centre"}
    pieces = [f for f in plan.furniture if f.kind.removeprefix("furniture:") in centre]
    assert pieces
    for f in pieces:
        room = plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2)
        gaps = (f.x0 - room.x0, f.z0 - room.z0, room.x1 - f.x1, room.z1 - f.z1)
        assert min(gaps) >= 0.8 - 1e-3, (room.name, f, gaps)


def _three_rooms_two_doors_on_one_wall() -> FloorPlan:
    """Room a (west) meets rooms c (south-east) and b (north-east) through doors in the same wall line
    x = 3.25: a-c over z 0.5..1.5, a-b over z 2.5..3.5; c and b also share a door over x 4.5..5.5."""
    t = WALL_THICKNESS / 2
    rooms = [
        Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 4.25 - t, "m", "m"),
        Room("c", "bedroom", 3.25 + t, 0.25 + t, 6.25 - t, 2.25 - t, "m", "m"),
        Room("b", "bedroom", 3.25 + t, 2.25 + t, 6.25 - t, 4.25 - t, "m", "m"),
    ]
    walls = [
        Box(0.25 - t, 0.25 - t, 6.25 + t, 0.25 + t, 0, 2.5, "m"),
        Box(0.25 - t, 4.25 - t, 6.25 + t, 4.25 + t, 0, 2.5, "m"),
        Box(0.25 - t, 0.25, 0.25 + t, 4.25, 0, 2.5, "m"),
        Box(6.25 - t, 0.25, 6.25 + t, 4.25, 0, 2.5, "m"),
        Box(3.25 - t, 0.25, 3.25 + t, 0.5, 0, 2.5, "m"),
        Box(3.25 - t, 1.5, 3.25 + t, 2.5, 0, 2.5, "m"),
        Box(3.25 - t, 3.5, 3.25 + t, 4.25, 0, 2.5, "m"),
        Box(3.25, 2.25 - t, 4.5, 2.25 + t, 0, 2.5, "m"),
        Box(5.5, 2.25 - t, 6.25, 2.25 + t, 0, 2.5, "m"),
    ]
    doors = [
        Doorway(3.25 - t, 0.5, 3.25 + t, 1.5, 2.1, ("a", "c")),
        Doorway(3.25 - t, 2.5, 3.25 + t, 3.5, 2.1, ("a", "b")),
        Doorway(4.5, 2.25 - t, 5.5, 2.25 + t, 2.1, ("c", "b")),
    ]
    return FloorPlan("three", "apartment", 0, 2.5, "m", rooms, walls, [], doors, {})


def test_a_blocked_door_is_not_excused_by_another_door_in_the_same_wall() -> None:
    """Every doorway needs its own crossing edge: with the a-c door walled in on a's side (room c is still
    reached through b), the crossing through the a-b door further along the same wall line does not count."""
    plan = _three_rooms_two_doors_on_one_wall()
    assert is_walkable(plan, 0.5)
    plan.furniture = [Box(2.7, 0.31, 3.19, 1.9, 0, 1.0, "m", "furniture:shelf")]  # covers nodes x = 3.0, z 0.5..1.5
    assert not is_walkable(plan, 0.5)
    assert prune_blocking_furniture(plan, 0.5).furniture == []


def test_the_largest_boxed_in_pocket_is_the_one_held_to_one_square_metre() -> None:
    """Two pockets, one node (0.25 m^2) and five nodes (1.25 m^2): the larger one makes the plan unwalkable,
    whichever pocket is listed first."""
    room, walls = _walled_room_3_by_2_5()
    corner = [  # boxes in the node (3.0, 2.5) alone
        Box(2.7, 2.2, 3.19, 2.3, 0, 1.0, "m", "furniture:shelf"),
        Box(2.7, 2.2, 2.8, 2.69, 0, 1.0, "m", "furniture:plant"),
    ]
    five = [  # boxes in the row z = 0.5 for x = 0.5 .. 2.5
        Box(0.31, 0.7, 2.8, 0.8, 0, 1.0, "m", "furniture:sideboard"),
        Box(2.7, 0.31, 2.8, 0.8, 0, 1.0, "m", "furniture:plant"),
    ]
    plan = FloorPlan("pockets", "room", 0, 2.5, "m", [room], walls, corner, [], {})
    assert is_walkable(plan, 0.5)
    plan.furniture = corner + five
    assert not is_walkable(plan, 0.5)
    plan.furniture = five + corner  # whichever pocket is listed first
    assert not is_walkable(plan, 0.5)


# ---------------------------------------------------------------------------------------------- doors, ceilings, seeds
def test_two_metre_openings_join_only_living_kitchen_dining_and_corridor() -> None:
    """Open-plan openings (2 m wide, lintel 0.3 m below the ceiling) occur, and only between living room,
    kitchen, dining room and corridor; bedrooms, bathrooms and studies get 1 m doors."""
    kinds_of = {"living", "kitchen", "dining", "corridor"}
    wide = 0
    for preset, scene in [("replica", "apartment_0"), ("replica", "apartment_1"), ("mp3d", "house_00"),
                          ("mp3d", "house_02"), ("mp3d", "house_03")]:  # fmt: skip
        plan = generate_floorplan(preset, scene)
        kind = {r.name: r.kind for r in plan.rooms}
        for d in plan.doorways:
            width = max(d.x1 - d.x0, d.z1 - d.z0)
            assert width == pytest.approx(1.0) or width == pytest.approx(2.0), (scene, d)
            if width > 1.5:
                wide += 1
                assert {kind[n] for n in d.rooms} <= kinds_of, (scene, d.rooms)
    assert wide >= 3


def test_offices_have_higher_acoustic_tile_ceilings_than_homes() -> None:
    """Offices get acoustic tiles 2.7-3.0 m up; rooms, hotel rooms and apartments plaster 2.5-2.8 m up."""
    p = get_preset("replica")
    for name in p.scene_names():
        plan = generate_floorplan("replica", name)
        office = p.spec(name).kind == "office"
        assert plan.ceiling_material == ("ceiling_tiles" if office else "ceiling_plaster"), name
        lo, hi = (2.7, 3.0) if office else (2.5, 2.8)
        assert lo <= plan.ceiling_height <= hi, (name, plan.ceiling_height)


def test_an_unjoinable_partition_is_retried_with_the_next_derived_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """generate_floorplan retries a plan that fails with seed + 7919 per attempt, and gives up after 20."""
    from asgf_nav.scenes import generator
    from asgf_nav.scenes.generator import scene_seed

    seeds: list[int] = []
    real = generator.generate

    def fails_twice(kind: str, seed: int, *args: object, **kwargs: object) -> FloorPlan:
        seeds.append(seed)
        if len(seeds) <= 2:
            raise ValueError("rooms cannot all be joined by doorways")
        return real(kind, seed, *args, **kwargs)

    monkeypatch.setattr(generator, "generate", fails_twice)
    plan = generate_floorplan("tiny", "tiny_room_val")
    first = scene_seed("tiny", "tiny_room_val")
    assert seeds == [first, first + 7919, first + 2 * 7919]
    assert (plan.seed, plan.name) == (first + 2 * 7919, "tiny_room_val")
    seeds.clear()

    def always_fails(kind: str, seed: int, *args: object, **kwargs: object) -> FloorPlan:
        seeds.append(seed)
        raise ValueError("rooms cannot all be joined by doorways")

    monkeypatch.setattr(generator, "generate", always_fails)
    with pytest.raises(RuntimeError, match="tiny/tiny_room_val"):
        generate_floorplan("tiny", "tiny_room_val")
    assert seeds == [first + 7919 * k for k in range(20)]


def test_a_limited_set_keeps_a_training_scene_when_rounding_favours_the_small_splits() -> None:
    """A preset of 1/3/5 train/val/test scenes cut to 5: rounding gives val round(5*3/9) = 2 and test
    round(5*5/9) = 3, leaving no training scene, so the largest of them (test) gives one back: 1/2/2."""
    from asgf_nav.scenes.presets import ScenePreset, SceneSpec

    splits = ["train"] + ["val"] * 3 + ["test"] * 5
    specs = tuple(SceneSpec(f"s{i}", "room", (20.0, 30.0), split) for i, split in enumerate(splits))
    p = ScenePreset("custom", 0.5, 16000, specs)
    assert p.split_counts(5) == {"train": 1, "val": 2, "test": 2}
    assert p.scene_names(5) == ["s0", "s1", "s2", "s4", "s5"]
    assert p.split_counts(3) == {"train": 1, "val": 1, "test": 1}


def test_the_configs_dataset_values_are_the_presets() -> None:
    """scenes.dataset is checked against its Literal while --dataset offers PRESETS: a preset in one and not the
    other would be offered by --help and refused by the config check (docs/scenes.md: a preset takes both)."""
    import typing

    from asgf_nav.config import ScenesConfig
    from asgf_nav.scenes.presets import PRESETS

    hints = typing.get_type_hints(ScenesConfig)
    assert set(typing.get_args(hints["dataset"])) == set(PRESETS)


@pytest.mark.parametrize(
    ("specs", "error"),
    [
        ([("a", "room", "train"), ("b", "room", "tset"), ("c", "room", "test")], "scene 'b': split 'tset' is none of"),
        ([("a", "rooom", "train"), ("b", "room", "val"), ("c", "room", "test")], "scene 'a': kind 'rooom' is none of"),
        ([("a", "room", "train"), ("a", "room", "val"), ("c", "room", "test")], r"lists scenes \['a'\] more than once"),
        ([("a", "room", "train"), ("b", "room", "train"), ("c", "room", "test")], r"no scene in split\(s\) \['val'\]"),
    ],
)
def test_a_preset_of_ones_own_is_checked_as_it_is_made(specs, error) -> None:
    """Unchecked, a misspelt split left the scene out of every split, a repeated name built two scenes into one
    folder (a train scene also a val one), and a misspelt kind failed as 20 unlucky layouts."""
    from asgf_nav.scenes.presets import ScenePreset, SceneSpec

    with pytest.raises(ValueError, match=error):
        ScenePreset("custom", 0.5, 16000, tuple(SceneSpec(n, k, (20.0, 30.0), s) for n, k, s in specs))


def test_apartments_close_loops_too() -> None:
    """Apartments, not only houses, get loop-closing doors: apartment_1 (5 rooms) and frl_apartment_0
    (4 rooms) have as many doorways as rooms, one more than a spanning tree."""
    for scene in ("apartment_1", "frl_apartment_0"):
        plan = generate_floorplan("replica", scene)
        assert len(plan.doorways) == len(plan.rooms), scene


def test_the_corridor_spine_is_the_hub_of_a_house() -> None:
    """The spanning tree prefers corridor doors, so in every one of the first ten houses a corridor has more
    doorways than any room that is not a corridor."""
    for name in get_preset("mp3d").scene_names()[:10]:
        plan = generate_floorplan("mp3d", name)
        kind = {r.name: r.kind for r in plan.rooms}
        doors = {r: sum(r in d.rooms for d in plan.doorways) for r in kind}
        busiest_corridor = max(doors[r] for r in kind if kind[r] == "corridor")
        assert busiest_corridor > max(doors[r] for r in kind if kind[r] != "corridor"), (name, doors)


@pytest.mark.parametrize("preset,scene", [("replica", "apartment_0"), ("mp3d", "house_02")])
def test_a_lintel_closes_each_doorway_above_its_height_only(preset: str, scene: str) -> None:
    """Each doorway has one lintel: the doorway's footprint, from the door height up to the ceiling, so the
    opening below is free for the camera and the sound, not only for walking."""
    plan = generate_floorplan(preset, scene)
    lintels = [w for w in plan.walls if w.kind == "lintel"]
    assert len(lintels) == len(plan.doorways) > 0
    for d in plan.doorways:
        over = [w for w in lintels if w.footprint == pytest.approx((d.x0, d.z0, d.x1, d.z1), abs=1e-4)]
        assert len(over) == 1, d
        assert (over[0].y0, over[0].y1) == pytest.approx((d.height, plan.ceiling_height)), d


def test_the_furniture_budget_lets_a_room_be_furnished_beyond_a_fifth_of_its_floor() -> None:
    """The area budget is 28 % of a room's floor, not a token amount: in house_02 some rooms are furnished
    over 20 % of their floor (a budget of a tenth would cap every room at 10 %)."""
    plan = generate_floorplan("mp3d", "house_02")
    covered = {r.name: 0.0 for r in plan.rooms}
    for f in plan.furniture:
        covered[plan.room_at((f.x0 + f.x1) / 2, (f.z0 + f.z1) / 2).name] += (f.x1 - f.x0) * (f.z1 - f.z0)
    share = sorted(covered[r.name] / r.area for r in plan.rooms)
    assert 0.2 < share[-1] <= 0.28 and share[-3] > 0.2


# ---------------------------------------------------------------------------------------------- floor-plan model
def test_a_material_needs_one_absorption_per_octave_band() -> None:
    """Six bands (125 Hz - 4 kHz): five or seven coefficients are refused by name."""
    from asgf_nav.scenes.floorplan import Material

    for bands in (5, 7):
        with pytest.raises(ValueError, match=rf"'odd': absorption needs 6 bands, got {bands}"):
            Material("odd", (0.5, 0.5, 0.5), "plain", (0.1,) * bands)


def test_a_floor_plan_file_missing_a_field_is_named_in_a_value_error(tmp_path: Path) -> None:
    """A floorplan.json without its rooms, or with a room of unknown fields, is a ValueError naming the file."""
    plan = generate_floorplan("tiny", "tiny_room_val").to_dict()
    path = tmp_path / "floorplan.json"
    path.write_text(json.dumps({k: v for k, v in plan.items() if k != "rooms"}))
    with pytest.raises(ValueError, match=r"cannot read floor plan .*floorplan.json: 'rooms'"):
        FloorPlan.load(path)
    path.write_text(json.dumps({**plan, "rooms": [{**plan["rooms"][0], "colour": 1}]}))
    with pytest.raises(ValueError, match=r"cannot read floor plan .*floorplan.json"):
        FloorPlan.load(path)


def test_a_scenes_damaged_floor_plan_names_the_command_that_bakes_it_again(tmp_path: Path) -> None:
    from asgf_nav.scenes.scene import read_floorplan

    directory = tmp_path / "scenes" / "tiny" / "tiny_room_val"
    directory.mkdir(parents=True)
    with pytest.raises(SceneStoreError, match=r"lacks .*floorplan.json; bake it again: .*--stages layout --force"):
        read_floorplan(directory)
    (directory / "floorplan.json").write_text("{" + " " * 40)  # same-size garbage a size check cannot see
    with pytest.raises(SceneStoreError, match=r"cannot read floor plan .*floorplan.json: .*--scenes tiny_room_val"):
        read_floorplan(directory)


def test_a_navigation_graph_damaged_without_changing_size_is_named(tiny_build, tmp_path: Path) -> None:
    import shutil

    cfg, _ = tiny_build
    directory = tmp_path / "scenes" / "tiny" / "tiny_apartment"
    shutil.copytree(scene_dir(cfg.scenes.data_root, "tiny", "tiny_apartment"), directory)
    neighbors = np.load(directory / "neighbors.npy")
    neighbors[0, 0] = len(neighbors) + 7  # a node that is not there
    np.save(directory / "neighbors.npy", neighbors)
    with pytest.raises(SceneStoreError, match=r"neighbors.npy holds node indices outside \[-1, \d+\): the file is"):
        _ = Scene.open(tmp_path, "tiny", "tiny_apartment").neighbors


def test_a_room_holds_the_points_on_its_edges() -> None:
    """room_at treats a room interior as closed: its corners and edges belong to it, a point 1 mm out not."""
    room = Room("r", "living", 1.0, 2.0, 4.0, 5.0, "m", "m")
    plan = FloorPlan("one", "room", 0, 2.5, "m", [room], [], [], [], {})
    for x, z in ((1.0, 2.0), (4.0, 5.0), (1.0, 5.0), (4.0, 3.0), (2.5, 5.0)):
        assert plan.room_at(x, z) == room, (x, z)
    for x, z in ((0.999, 3.0), (4.001, 3.0), (2.5, 1.999), (2.5, 5.001)):
        assert plan.room_at(x, z) is None, (x, z)


def test_each_mp3d_split_cycles_through_the_four_home_sizes_from_its_first_house() -> None:
    """Area ranges cycle per split (80-140, 120-200, 180-280, 250-400 m^2), so val and test, like train,
    start with a small home: house_59 (val) and house_70 (test) are 80-140 m^2."""
    p = get_preset("mp3d")
    sizes = [(80.0, 140.0), (120.0, 200.0), (180.0, 280.0), (250.0, 400.0)]
    for split in SPLITS:
        names = p.split_scenes(split)
        assert [p.spec(n).area_range for n in names] == [sizes[i % 4] for i in range(len(names))], split
    assert p.spec("house_59").area_range == p.spec("house_70").area_range == (80.0, 140.0)


def test_a_segment_touching_a_solid_is_blocked() -> None:
    """segment_blocked treats solids as closed rectangles, like the navigation graph: a step along a box's
    edge or ending on its corner is blocked, one that stops 1 mm short or runs 1 mm beside it is not."""
    box = Box(0.0, 0.0, 1.0, 1.0, 0.0, 1.0, "m", "furniture:plant")
    plan = FloorPlan("one", "room", 0, 2.5, "m", [], [], [box], [], {})
    assert plan.segment_blocked((0.0, -1.0), (0.0, 2.0))  # along the edge x = 0
    assert plan.segment_blocked((-1.0, 0.0), (0.0, 0.0))  # ends on the corner (0, 0)
    assert not plan.segment_blocked((-0.001, -1.0), (-0.001, 2.0))
    assert not plan.segment_blocked((-1.0, 0.0), (-0.001, 0.0))
    assert plan.segment_blocked((-1.0, 0.0), (-0.1, 0.0), margin=0.1)


def test_free_space_is_the_rooms_joined_through_their_doorways() -> None:
    """Two 3 x 2.38 m rooms and the 1 m doorway through the 0.12 m wall between them: one polygon of area
    2 * 7.14 + 0.12 m^2; without the doorway the two rooms stay apart."""
    t = WALL_THICKNESS / 2
    rooms = [
        Room("a", "living", 0.25 + t, 0.25 + t, 3.25 - t, 2.75 - t, "m", "m"),
        Room("b", "bedroom", 3.25 + t, 0.25 + t, 6.25 - t, 2.75 - t, "m", "m"),
    ]
    door = Doorway(3.25 - t, 1.0, 3.25 + t, 2.0, 2.1, ("a", "b"))
    plan = FloorPlan("two", "apartment", 0, 2.5, "m", rooms, [], [], [door], {})
    space = plan.free_space_polygon()
    assert space.geom_type == "Polygon" and space.area == pytest.approx(2 * (3 - 2 * t) * (2.5 - 2 * t) + 2 * t)
    plan.doorways = []
    assert plan.free_space_polygon().geom_type == "MultiPolygon"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenes", "nosuch"], "--scenes: tiny has no scene 'nosuch'"),
        (["acoustics.nosuch=1", "--scenes", "tiny_room_test"], "unknown config key 'acoustics.nosuch'"),
        (["acoustics.rays=0", "--scenes", "tiny_room_test"], "config key 'acoustics.rays' must be positive, got 0"),
    ],
)
def test_the_background_bake_module_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """``python -m asgf_nav.scenes.build`` is documented for use by hand too: a bad scene, key or value is one
    ``error:`` line with status 2, as the scripts say it, not a traceback, and nothing is baked."""
    from asgf_nav.scenes.build import main

    with pytest.raises(SystemExit) as ended:
        main(["--dataset", "tiny", "--data-root", str(tmp_path), "--image-size", "32", *args, "--stages", "layout"])
    assert ended.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "scenes").exists()


def test_a_scene_build_refuses_a_response_too_short_before_baking_its_views(tmp_path: Path) -> None:
    """The response length is checked on the layout, before the vision stage: not after minutes of rendering."""
    from asgf_nav.config import ConfigError, load_config

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "acoustics.max_rir_seconds=0.004"])
    with pytest.raises(ConfigError, match=r"'acoustics.max_rir_seconds': 0.004 s .* scene tiny_room_test"):
        build_scenes(cfg, "tiny", ["tiny_room_test"], stages=("layout", "vision", "acoustics"), workers=1)
    directory = tmp_path / "scenes" / "tiny" / "tiny_room_test"
    assert (directory / "manifest.json").is_file() and not list(directory.glob("rgb*"))
    build_scenes(cfg, "tiny", ["tiny_room_test"], stages=("layout", "vision"), workers=1)  # no responses: no check
