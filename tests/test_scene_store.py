"""The baked scene store: what makes a stage complete, what a read refuses, what a write replaces, and what
the acoustics bake writes into it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asgf_nav.acoustics import bake
from asgf_nav.acoustics.simulate import HIST_BIN_SECONDS, SourceField, band_centers
from asgf_nav.config import ExperimentConfig
from asgf_nav.scenes.generator import generate_floorplan
from asgf_nav.scenes.store import SceneStore, SceneStoreError, stage_complete, write_stage

PLAN_TEXT = '{"name": "hand"}'  # 16 bytes
FS = 16000


def _layout(directory: Path) -> None:
    """A layout stage of one (4, 3) float64 array (224 bytes as .npy) and one 16-byte extra file."""
    write_stage(directory, "layout", {"positions": np.zeros((4, 3))}, meta={"v": 1}, files={"plan.json": PLAN_TEXT})


# ---------------------------------------------------------------------------------------------- store
def test_the_manifest_records_every_array_and_file_with_its_size(tmp_path: Path) -> None:
    """A stage's entry lists its arrays (file, shape, dtype, bytes) and its extra files with their byte counts."""
    _layout(tmp_path)
    entry = json.loads((tmp_path / "manifest.json").read_text())["stages"]["layout"]
    npy_bytes = 128 + 4 * 3 * 8  # a version-1 .npy header is 128 bytes, then 12 float64 values
    assert entry == {
        "arrays": {"positions": {"file": "positions.npy", "shape": [4, 3], "dtype": "float64", "bytes": npy_bytes}},
        "files": ["plan.json"],
        "file_bytes": {"plan.json": 16},
        "meta": {"v": 1},
    }


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_extra_file_makes_its_stage_incomplete(tmp_path: Path, damage: str) -> None:
    """A stage is complete only while its extra files (the floor plan) are there with their written size."""
    _layout(tmp_path)
    assert stage_complete(tmp_path, "layout")
    plan = tmp_path / "plan.json"
    if damage == "truncated":
        plan.write_text(PLAN_TEXT[:7])
    else:
        plan.unlink()
    assert not stage_complete(tmp_path, "layout")


def test_an_array_file_that_grew_makes_its_stage_incomplete(tmp_path: Path) -> None:
    """A file larger than written (e.g. replaced by another bake's bigger array) is not the stage's file."""
    _layout(tmp_path)
    np.save(tmp_path / "positions.npy", np.zeros((5, 3)))
    assert not stage_complete(tmp_path, "layout")


def test_a_manifest_without_sizes_is_checked_for_existence_only(tmp_path: Path) -> None:
    """Stages recorded before sizes were kept stay complete while their files exist, whatever their size."""
    _layout(tmp_path)
    manifest = tmp_path / "manifest.json"
    content = json.loads(manifest.read_text())
    del content["stages"]["layout"]["arrays"]["positions"]["bytes"], content["stages"]["layout"]["file_bytes"]
    manifest.write_text(json.dumps(content))
    (tmp_path / "plan.json").write_text(PLAN_TEXT + " ")
    assert stage_complete(tmp_path, "layout")
    (tmp_path / "plan.json").unlink()
    assert not stage_complete(tmp_path, "layout")


def test_an_array_of_another_dtype_is_refused(tmp_path: Path) -> None:
    """A file of the manifest's shape but another dtype is reported as corrupt, not read."""
    _layout(tmp_path)
    np.save(tmp_path / "positions.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(SceneStoreError, match=r"is float32\[4, 3\] but the manifest says float64\[4, 3\]"):
        SceneStore(tmp_path).array("positions")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("[1, 2]", "is not a manifest"),
        ('{"stages": 3}', "is not a manifest"),
        ('{"format_version": 1}', "is not a manifest"),
        ('{"format_version": 2, "stag', "is not valid JSON .*bake it again"),  # truncated
    ],
)
def test_a_write_replaces_a_manifest_that_is_not_one(tmp_path: Path, content: str, error: str) -> None:
    """Baking again starts a new manifest over one that has no 'stages' mapping or is not JSON, rather than
    failing forever."""
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(SceneStoreError, match=error):
        SceneStore(tmp_path)
    assert not stage_complete(tmp_path, "layout")
    _layout(tmp_path)
    assert SceneStore(tmp_path).stages == ["layout"] and stage_complete(tmp_path, "layout")


def _drop_first_file(entry: dict) -> dict:
    next(iter(entry["arrays"].values())).pop("file")
    return entry


def _point_first_file_outside(entry: dict) -> dict:
    """A shared data root's manifest that reads an array from elsewhere (it passed as complete, and was read)."""
    next(iter(entry["arrays"].values()))["file"] = "/tmp/elsewhere/positions.npy"
    return entry


def _point_first_file_up(entry: dict) -> dict:
    next(iter(entry["arrays"].values()))["file"] = "../other_scene/positions.npy"
    return entry


def _list_a_file_outside(entry: dict) -> dict:
    entry["files"] = [*entry["files"], "../other_scene/floorplan.json"]
    return entry


# how a stage's manifest entry is malformed: (the edit, what the error says of the layout stage)
MALFORMED_STAGES = {
    "no meta": (lambda entry: {k: v for k, v in entry.items() if k != "meta"}, "has no 'meta' mapping"),
    "no arrays": (lambda entry: {k: v for k, v in entry.items() if k != "arrays"}, "has no 'arrays' mapping"),
    "no file": (_drop_first_file, "records array 'positions' without a 'file'"),
    "a file outside": (
        _point_first_file_outside,
        "records array 'positions' in '/tmp/elsewhere/positions.npy', not a plain file name in the scene's folder",
    ),
    "a file up": (
        _point_first_file_up,
        "records array 'positions' in '../other_scene/positions.npy', not a plain file name in the scene's folder",
    ),
    "a listed file outside": (_list_a_file_outside, "lists a file that is not a plain file name in the scene's folder"),
    "a list": (lambda entry: sorted(entry["arrays"]), "is a JSON list, not a mapping"),
}


def _malform(directory: Path, stage: str, how: str) -> None:
    manifest = directory / "manifest.json"
    content = json.loads(manifest.read_text())
    content["stages"][stage] = MALFORMED_STAGES[how][0](content["stages"][stage])
    manifest.write_text(json.dumps(content))


@pytest.mark.parametrize("how", sorted(MALFORMED_STAGES))
def test_a_malformed_stage_is_incomplete_named_when_read_and_replaced_by_a_write(tmp_path: Path, how: str) -> None:
    """A manifest that is JSON but records a stage without its meta, arrays or files (edited by hand, or by
    another tool) treats the stage as a damaged file does: incomplete, so a bake replaces it, and named with
    manifest.json and the bake command when read; it was a bare KeyError or TypeError naming no file."""
    _layout(tmp_path)
    _malform(tmp_path, "layout", how)
    assert not stage_complete(tmp_path, "layout")
    store = SceneStore(tmp_path)
    assert store.stages == ["layout"]
    manifest = tmp_path / "manifest.json"
    error = rf"scene manifest {manifest} is damaged: its stage 'layout' {MALFORMED_STAGES[how][1]}; bake it again"
    with pytest.raises(SceneStoreError, match=error):
        store.meta("layout")
    with pytest.raises(SceneStoreError, match=error):
        store.array("positions")
    _layout(tmp_path)
    assert stage_complete(tmp_path, "layout") and SceneStore(tmp_path).meta("layout") == {"v": 1}


def test_a_malformed_stage_leaves_the_others_readable(tmp_path: Path) -> None:
    """One stage's malformed entry makes that stage incomplete, not the scene: the layout's arrays, its bake
    command and its completeness are as before."""
    _layout(tmp_path)
    write_stage(tmp_path, "vision", {"rgb": np.zeros((4, 2), np.uint8)}, meta={"image_size": 2})
    _malform(tmp_path, "vision", "no file")
    store = SceneStore(tmp_path)
    assert stage_complete(tmp_path, "layout") and not stage_complete(tmp_path, "vision")
    np.testing.assert_array_equal(store.array("positions"), np.zeros((4, 3)))
    assert store.meta("layout") == {"v": 1}
    with pytest.raises(SceneStoreError, match=r"its stage 'vision' records array 'rgb' without a 'file'"):
        store.require("layout", "vision")


@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize("stage", ["layout", "vision"])
def test_a_bake_repairs_a_stage_recorded_with_an_array_without_a_file(tmp_path: Path, stage: str, force: bool) -> None:
    """``build_scenes.py`` (with ``--force`` or without: the stage is incomplete) bakes a stage again over an
    array entry with no 'file'; that failed with KeyError 'file', so only deleting the scene helped."""
    from asgf_nav.scenes.build import build_scenes, ensure_scenes
    from asgf_nav.scenes.scene import Scene

    cfg = ExperimentConfig()
    cfg.scenes.data_root, cfg.scenes.image_size = str(tmp_path), 8
    (directory,) = ensure_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1)
    _malform(directory, stage, "no file")
    built = build_scenes(cfg, "tiny", ["tiny_room_test"], ("layout", "vision"), workers=1, force=force)
    assert stage in built["tiny_room_test"]
    assert stage_complete(directory, "layout") and stage_complete(directory, "vision")
    assert Scene(directory).rgb.shape[-1] == 3


# ---------------------------------------------------------------------------------------------- acoustics bake
def _acoustic_layout(directory: Path, meta: dict | None = None) -> None:
    """Three nodes along x (1, 2, 3 m) in the tiny preset's test room; node 1 is nearest their centre."""
    positions = np.array([[1.0, 0.0, 1.0], [2.0, 0.0, 1.0], [3.0, 0.0, 1.0]], dtype=np.float32)
    plan = generate_floorplan("tiny", "tiny_room_test").to_json()
    meta = {"dataset": "tiny", "preset": "tiny", "sample_rate": FS} if meta is None else meta
    write_stage(directory, "layout", {"positions": positions}, meta=meta, files={"floorplan.json": plan})


class FakeSimulation:
    """Stands in for ``simulate_source``: records its calls and returns a hand-made field for 3 receivers.

    Receiver 0 hears a strong path (0.5 in every band) and one below the -120 dB floor (1e-7); receiver 1 a
    path loud only in the lowest band (0.1, the rest 1e-8); receiver 2 nothing. Only receiver 0 has late
    energy: 1e-3 in band 0, bin 0.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, int, dict]] = []

    def __call__(self, plan, source, receivers, sample_rate, **kwargs) -> SourceField:  # noqa: ANN001
        self.calls.append((np.array(source), np.array(receivers), sample_rate, kwargs))
        bands = len(band_centers(sample_rate))
        amplitude = np.full((3, bands), 1e-8)
        amplitude[0], amplitude[1], amplitude[2, 0] = 0.5, 1e-7, 0.1
        histogram = np.zeros((3, bands, 5))
        histogram[0, 0, 0] = 1e-3
        return SourceField(
            sample_rate=sample_rate,
            band_centers=band_centers(sample_rate),
            offsets=np.array([0, 2, 3, 3]),
            delay=np.array([0.01, 0.02, 0.03]),
            azimuth=np.array([10.0, 20.0, 30.0]),
            elevation=np.array([-5.0, 0.0, 5.0]),
            band_amplitude=amplitude,
            histogram=histogram,
            audible=np.array([True, True, False]),
        )


def _acoustics_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.acoustics.sources_per_scene, cfg.acoustics.ear_height = 1, 1.5
    return cfg


def test_a_baked_source_keeps_the_paths_above_the_floor_and_marks_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per receiver, paths loud in any band are kept (in dB), weaker ones dropped, and no late energy is stored
    at the -200 dB floor; the source sits at the central node, everything at ear height."""
    fake = FakeSimulation()
    monkeypatch.setattr(bake, "simulate_source", fake)
    _acoustic_layout(tmp_path)
    path = bake.bake_source(tmp_path, _acoustics_cfg(), 0)
    with np.load(path) as data:
        saved = {name: data[name] for name in data.files}
    np.testing.assert_array_equal(saved["counts"], [1, 1, 0])
    np.testing.assert_array_equal(saved["delay"], np.array([0.01, 0.03], dtype=np.float32))
    np.testing.assert_array_equal(saved["direction"], np.array([[10.0, -5.0], [30.0, 5.0]], dtype=np.float16))
    bands = len(band_centers(FS))
    expected_level = np.full((2, bands), -160.0)  # 20 log10(1e-8)
    expected_level[0], expected_level[1, 0] = 20 * np.log10(0.5), -20.0
    np.testing.assert_allclose(saved["level_db"].astype(float), expected_level, atol=0.05)
    late = np.full((3, bands, 5), -200.0)
    late[0, 0, 0] = -30.0  # 10 log10(1e-3)
    np.testing.assert_array_equal(saved["late_db"], late.astype(np.float16))
    ((source, receivers, sample_rate, _),) = fake.calls
    np.testing.assert_allclose(source, [2.0, 1.5, 1.0])
    np.testing.assert_allclose(receivers, [[1.0, 1.5, 1.0], [2.0, 1.5, 1.0], [3.0, 1.5, 1.0]])
    assert sample_rate == FS
    assert bake.bake_source(tmp_path, _acoustics_cfg(), 0) == path and len(fake.calls) == 1  # saved: not again


def test_ears_stay_below_a_low_ceiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ear height above the ceiling puts the ears 0.3 m under the ceiling instead."""
    fake = FakeSimulation()
    monkeypatch.setattr(bake, "simulate_source", fake)
    _acoustic_layout(tmp_path)
    cfg = _acoustics_cfg()
    cfg.acoustics.ear_height = 50.0
    bake.bake_source(tmp_path, cfg, 0)
    ceiling = generate_floorplan("tiny", "tiny_room_test").ceiling_height
    np.testing.assert_allclose(fake.calls[0][1][:, 1], ceiling - 0.3, rtol=1e-6)


def test_the_acoustics_stage_indexes_each_pair_and_records_its_bands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets start every (source, receiver) pair's paths; the meta holds the sample rate's band centres."""
    monkeypatch.setattr(bake, "simulate_source", FakeSimulation())
    _acoustic_layout(tmp_path)
    bake.bake_acoustics(tmp_path, _acoustics_cfg())
    store = SceneStore(tmp_path)
    np.testing.assert_array_equal(store.array("acoustic_source_nodes"), [1])
    np.testing.assert_array_equal(store.array("rir_path_offsets"), [0, 1, 2, 2])
    np.testing.assert_array_equal(store.array("rir_path_delay"), np.array([0.01, 0.03], dtype=np.float32))
    meta = store.meta("acoustics")
    assert meta["band_centers"] == [125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0]
    assert meta["late_floor_db"] == -200.0 and meta["hist_bin_seconds"] == HIST_BIN_SECONDS
    assert not (tmp_path / bake.PARTIAL_DIR).exists()


@pytest.mark.parametrize(
    "name,value,why",
    [("rir_path_delay", np.nan, "holds values that are not finite"),
     ("rir_path_delay", -1.0, "holds negative delays"),
     ("rir_path_offsets", 5, "does not index the 2 paths in order")],
)  # fmt: skip
def test_acoustics_damaged_without_changing_size_are_named_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: float, why: str
) -> None:
    """Same size, shape and dtype pass the manifest's checks; values no bake writes are caught on opening."""
    from asgf_nav.acoustics.rir import SceneRirs

    monkeypatch.setattr(bake, "simulate_source", FakeSimulation())
    _acoustic_layout(tmp_path)
    bake.bake_acoustics(tmp_path, _acoustics_cfg())
    path = tmp_path / f"{name}.npy"
    values = np.load(path)
    size = path.stat().st_size
    values[-1] = value
    np.save(path, values)
    assert path.stat().st_size == size
    with pytest.raises(SceneStoreError, match=f"scene array {path} {why}: the file is damaged; bake it again"):
        SceneRirs(SceneStore(tmp_path))


def test_a_truncated_floor_plan_is_named_rather_than_read_as_another_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout's digest hashes the floor plan: a truncated one was reported as acoustics "baked with other
    settings than the config asks (layout_digest ...)"; it is named as the damaged file it is."""
    from asgf_nav.tasks.world import check_acoustics_settings

    monkeypatch.setattr(bake, "simulate_source", FakeSimulation())
    _acoustic_layout(tmp_path)
    bake.bake_acoustics(tmp_path, _acoustics_cfg())
    check_acoustics_settings(tmp_path, _acoustics_cfg())
    plan = tmp_path / "floorplan.json"
    written = plan.stat().st_size
    plan.write_bytes(plan.read_bytes()[:100])
    message = rf"scene file {plan} is 100 bytes but was written with {written}: the file is damaged, .*; bake it again"
    with pytest.raises(SceneStoreError, match=message):
        check_acoustics_settings(tmp_path, _acoustics_cfg())


@pytest.mark.parametrize("preset,rate", [("mp3d", 16000), ("replica", 44100)])
def test_a_layout_without_a_sample_rate_takes_its_presets(tmp_path: Path, preset: str, rate: int) -> None:
    """Layouts baked before they recorded a sample rate are simulated at their preset's rate."""
    _acoustic_layout(tmp_path, meta={"dataset": preset, "preset": preset})
    assert bake.bake_params(tmp_path, _acoustics_cfg())["sample_rate"] == rate


@pytest.mark.parametrize("count,expected", [(1, [12]), (2, [0, 12]), (3, [0, 4, 12])])
def test_source_nodes_start_at_the_centre_and_go_farthest_first(count: int, expected: list[int]) -> None:
    """Farthest-point sampling from the node nearest the centre of a 5 x 5 grid (node 12)."""
    grid = np.array([[x, 0.0, z] for x in range(5) for z in range(5)], dtype=float)
    assert bake.select_source_nodes(grid, count).tolist() == expected


def test_stratified_source_nodes_take_one_node_from_each_equal_area_region() -> None:
    """On a 10 x 10 grid, four regions are the four quadrants: one distinct node from each, the same every time."""
    grid = np.array([[x, 0.0, z] for x in range(10) for z in range(10)], dtype=float)
    chosen = bake.select_source_nodes(grid, 4, "stratified")
    assert chosen.tolist() == sorted(chosen.tolist()) and len(set(chosen.tolist())) == 4
    quadrants = {(int(grid[i, 0] >= 5), int(grid[i, 2] >= 5)) for i in chosen}
    assert quadrants == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert bake.select_source_nodes(grid, 4, "stratified").tolist() == chosen.tolist()
    assert bake.select_source_nodes(grid, 100, "stratified").tolist() == list(range(100))
    with pytest.raises(ValueError, match=r"acoustics\.source_spread must be one of \['farthest', 'stratified'\]"):
        bake.select_source_nodes(grid, 4, "random")


def test_the_stratified_pick_hashes_positions_with_murmur3s_finaliser_in_plain_integers() -> None:
    """The key that picks a region's node is integer arithmetic with no generator: the same on every machine
    and NumPy release (here against the finaliser written in Python's unbounded integers)."""

    def fmix64(k: int) -> int:
        mask = (1 << 64) - 1
        k ^= k >> 33
        k = (k * 0xFF51AFD7ED558CCD) & mask
        k ^= k >> 33
        k = (k * 0xC4CEB9FE1A85EC53) & mask
        return k ^ (k >> 33)

    mask = (1 << 64) - 1
    pts = np.array([[0.0, 0.0], [0.5, -1.0], [-12.25, 3.5], [1e3, -2e3]])
    packed = [((round(x * 1000) & mask) << 32 & mask) ^ (round(z * 1000) & 0xFFFFFFFF) for x, z in pts]
    assert [int(v) for v in bake._position_hash(pts)] == [fmix64(k) for k in packed]


def test_a_path_that_is_no_scene_directory_gets_no_made_up_bake_command(tmp_path: Path) -> None:
    """The bake command is built from DATA_ROOT/scenes/DATASET/SCENE: for another path (a typo, or the
    dataset's folder given for a scene's) it named '--dataset scenes' or '--data-root /'."""
    scene = tmp_path / "data" / "scenes" / "tiny" / "tiny_room_test"
    never_baked = r"no baked scene at .*; bake it: python scripts/build_scenes.py --dataset tiny .* --scenes \w+ \("
    with pytest.raises(SceneStoreError, match=never_baked):  # nothing to bake "again", no --force needed
        SceneStore(scene).meta("layout")
    write_stage(scene, "layout", {"positions": np.zeros((2, 3), np.float32)})
    with pytest.raises(SceneStoreError, match=r"tiny is not a scene directory .*; it holds the scenes \['tiny_room_"):
        SceneStore(scene.parent).meta("layout")
    with pytest.raises(SceneStoreError, match=r"nothing is not a scene directory \(DATA_ROOT/scenes/DATASET/SCENE\)$"):
        SceneStore(tmp_path / "nothing").meta("layout")


def test_a_scene_being_baked_by_another_process_is_named_as_such_not_as_damaged(tmp_path: Path) -> None:
    """Read while another process bakes it, a scene lacks stages: the hint says to wait, not to bake it again
    (which, without the run's config, would bake it with other settings)."""
    from asgf_nav.scenes.store import bake_lock, rebuild_hint, scene_dir

    directory = scene_dir(tmp_path, "tiny", "tiny_room_test")
    directory.mkdir(parents=True)
    assert rebuild_hint(directory / "manifest.json").endswith("--scenes tiny_room_test (add the run's --config and "
                                                              "acoustics.* overrides, if any, right after "
                                                              "build_scenes.py)")  # fmt: skip
    with bake_lock(directory):
        assert rebuild_hint(directory / "manifest.json") == (
            f"another process is baking it right now ({directory / '.bake.lock'} is held): wait for that bake to end"
        )
