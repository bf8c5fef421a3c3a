"""The background scene bake (its command line, child processes and reports) and the scene meshes' inputs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import trimesh

from asgf_nav.config import load_config
from asgf_nav.scenes import background
from asgf_nav.scenes.background import ScenePool, quick_start_order, scene_ready, start_child
from asgf_nav.scenes.build import build_scenes
from asgf_nav.scenes.floorplan import FloorPlan, Material, Room
from asgf_nav.scenes.mesh import floorplan_mesh, load_mesh_file

FAST_ACOUSTICS = ["acoustics.sources_per_scene=3", "acoustics.rays=300"]


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: [0] is the state, [16] the nice value."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _end(child: subprocess.Popen) -> None:
    """Kill a child started in its own session, with its group, and reap it."""
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


# ----------------------------------------------------------------------------------------- background build
def test_quick_start_order_puts_the_smallest_target_area_first_then_names() -> None:
    """Replica's target areas: office (15-30 m^2) < frl_apartment (45-80) < apartment_1 (60-100) < apartment_0
    (90-150); equal areas go by name, so the first scene baked is the quickest one, not the first name."""
    scenes = ["apartment_0", "frl_apartment_1", "apartment_1", "office_1", "frl_apartment_0", "office_0"]
    assert quick_start_order("replica", scenes) == [
        "office_0", "office_1", "frl_apartment_0", "frl_apartment_1", "apartment_1", "apartment_0",
    ]  # fmt: skip


def test_a_scene_is_ready_only_when_every_task_stage_is_current(tmp_path: Path, monkeypatch) -> None:
    """A scene whose layout and views are baked but whose acoustics are not (or are being written) is not ready."""
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}"])
    current = {"layout", "vision", "acoustics"}
    monkeypatch.setattr(background, "stage_is_current", lambda directory, stage, cfg: stage in current)
    assert scene_ready(cfg, "tiny", "tiny_room_val") is True
    current.discard("acoustics")
    assert scene_ready(cfg, "tiny", "tiny_room_val") is False
    current.clear()
    assert scene_ready(cfg, "tiny", "tiny_room_val") is False


def test_the_builder_command_carries_the_runs_bake_settings(tmp_path: Path) -> None:
    """The child bakes with this run's acoustics settings, image size and data root, else its scenes would
    never be current for the run that waits on them."""
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "scenes.image_size=48", *FAST_ACOUSTICS])
    command = ScenePool(cfg, "tiny").builder_command(["tiny_room_val", "tiny_room_test"])
    args = command[3:]  # after python -c <code>
    value_of = dict(zip(args, args[1:]))  # each flag and the argument after it
    assert value_of.get("--image-size") == "48" and value_of.get("--data-root") == str(tmp_path)
    assert value_of.get("--dataset") == "tiny" and value_of.get("--workers") == "1"
    assert args[-3:] == ["--scenes", "tiny_room_val", "tiny_room_test"]
    overrides = [a for a in args if a.startswith("acoustics.")]
    assert "acoustics.sources_per_scene=3" in overrides and "acoustics.rays=300" in overrides
    assert load_config(None, overrides).acoustics == cfg.acoustics  # every setting, not only the two changed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_background_child_runs_ten_nice_steps_lower(tmp_path: Path) -> None:
    """The bake must not slow the training process down: its child runs at nice + 10 (at most 19)."""
    child = start_child(["sleep", "30"], None)
    try:
        expected = min(19, os.nice(0) + 10)
        deadline = time.monotonic() + 10
        while int(_stat_fields(child.pid)[16]) != expected and time.monotonic() < deadline:
            time.sleep(0.05)  # preexec_fn runs before exec: wait until the child is sleep itself
        assert int(_stat_fields(child.pid)[16]) == expected
    finally:
        _end(child)


def test_a_background_child_appends_to_its_log(tmp_path: Path) -> None:
    """A resumed run's builder adds to build_scenes.log: the log of the earlier, perhaps failed, bake stays."""
    log = tmp_path / "build_scenes.log"
    log.write_text("earlier bake\n")
    child = start_child([sys.executable, "-c", "print('resumed bake')"], log)
    assert child.wait(timeout=60) == 0
    assert log.read_text() == "earlier bake\nresumed bake\n"


def test_a_background_child_draws_no_progress_bars_into_its_log(tmp_path: Path) -> None:
    """Redrawn bars (carriage returns, cursor codes) made nine tenths of build_scenes.log and buried the
    lines a failed bake is diagnosed from."""
    log = tmp_path / "build_scenes.log"
    code = "from tqdm import tqdm; import sys; [None for _ in tqdm(range(3), file=sys.stderr)]; print('built')"
    assert start_child([sys.executable, "-c", code], log).wait(timeout=60) == 0
    assert log.read_text() == "built\n"
    # a bar the package shows only when it has work (the acoustics bake's) is no exception
    code = code.replace("file=sys.stderr", "file=sys.stderr, disable=bar_disabled(True)")
    code = "from asgf_nav.logging_utils import bar_disabled; " + code
    assert start_child([sys.executable, "-c", code], log).wait(timeout=60) == 0
    assert log.read_text() == "built\nbuilt\n"


CHILD_WITH_SIGTERM_HANDLER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from asgf_nav.scenes.background import start_child

    code = (
        "import pathlib, signal, sys, time\\n"
        "def on_term(signum, frame):\\n"
        "    pathlib.Path(sys.argv[1]).write_text(signal.Signals(signum).name)\\n"
        "    sys.exit(0)\\n"
        "signal.signal(signal.SIGTERM, on_term)\\n"
        "pathlib.Path(sys.argv[2]).write_text('ready')\\n"
        "time.sleep(60)\\n"
    )
    start_child([sys.executable, "-c", code, sys.argv[1], sys.argv[2]], None)
    deadline = time.monotonic() + 30
    while not Path(sys.argv[2]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("ready" if Path(sys.argv[2]).exists() else "the builder never started", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_builder_of_a_killed_parent_gets_sigterm_so_it_can_clean_up(tmp_path: Path) -> None:
    """The parent-death signal is SIGTERM, which the builder handles (closing its process pool), not SIGKILL."""
    got, ready = tmp_path / "signal.txt", tmp_path / "ready.txt"
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_WITH_SIGTERM_HANDLER, str(got), str(ready)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not (got.exists() and got.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the handler's write is whole, not only the file made
        assert got.exists() and got.read_text() == "SIGTERM"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)


def test_a_builder_killed_by_a_signal_is_reported_as_an_error(tmp_path: Path, caplog) -> None:
    """A builder that dies of SIGKILL (the OOM killer) has a negative return code: an ERROR naming the
    signal, not the INFO line of a finished build."""
    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}"])
    pool = ScenePool(cfg, "tiny", log_file=tmp_path / "build_scenes.log")
    pool.process = subprocess.Popen(["sleep", "30"])
    pool.process.kill()
    pool.process.wait(timeout=30)
    with caplog.at_level(logging.INFO, logger=background.__name__):
        pool.check_build()
    assert pool.exit_status == -signal.SIGKILL and pool.process is None
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "was killed by SIGKILL" in caplog.records[0].getMessage()


# ----------------------------------------------------------------------------------------------- meshes
def _one_room(pattern: str = "plain") -> FloorPlan:
    """A 2 m x 3 m room without walls, its floor drawn with ``pattern``."""
    materials = {"floor": Material("floor", (0.6, 0.4, 0.2), pattern), "ceil": Material("ceil", (0.9, 0.9, 0.9))}
    room = Room("r", "living", 0, 0, 2, 3, "floor", "floor")
    return FloorPlan("one", "room", 0, 2.5, "ceil", [room], [], [], [], materials)


def test_a_material_with_an_unknown_pattern_is_refused_by_name() -> None:
    """A typo in a material's pattern is a clear ValueError naming it, not a KeyError from deep inside."""
    assert floorplan_mesh(_one_room("planks")).num_faces == 24  # a floor slab and a ceiling slab
    with pytest.raises(ValueError, match="unknown pattern 'plank'"):
        floorplan_mesh(_one_room("plank"))


def test_a_mesh_file_with_an_unknown_up_axis_is_refused(tmp_path: Path) -> None:
    """Only Y-up and Z-up files are converted; "x" must not be read silently as Y-up."""
    path = tmp_path / "tri.ply"
    trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 0, 1]], faces=[[0, 1, 2]], process=False).export(path)
    assert load_mesh_file(path, up_axis="y").num_faces == 1
    with pytest.raises(ValueError, match="up_axis must be 'y' or 'z', got 'x'"):
        load_mesh_file(path, up_axis="x")


def test_a_mesh_file_without_triangles_is_refused(tmp_path: Path) -> None:
    """A point cloud (a scan exported without faces) would render nothing at all: it is refused by name."""
    path = tmp_path / "points.ply"
    trimesh.PointCloud([[0, 0, 0], [1, 0, 0], [0, 1, 0]]).export(path)
    with pytest.raises(ValueError, match="holds no triangles"):
        load_mesh_file(path)


def test_a_textured_mesh_takes_its_colours_from_the_texture(tmp_path: Path) -> None:
    """A GLB whose only colour is a texture image (a uniform red one here) renders red, not grey."""
    mesh = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 0, 1]], faces=[[0, 1, 2]], process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [0, 1]], image=PIL.Image.new("RGB", (4, 4), "red"))
    path = tmp_path / "textured.glb"
    mesh.export(path)
    np.testing.assert_allclose(load_mesh_file(path).face_colors, [[1.0, 0.0, 0.0]], atol=1e-6)


def test_an_audio_only_run_neither_bakes_nor_waits_for_views(tmp_path: Path) -> None:
    seeing = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", *FAST_ACOUSTICS])
    hearing = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "task.sensors=[spectrogram]", *FAST_ACOUSTICS])
    assert ScenePool(seeing, "tiny").stages == ("layout", "vision", "acoustics")
    pool = ScenePool(hearing, "tiny")
    assert pool.stages == ("layout", "acoustics")
    args = pool.builder_command(["tiny_room_val"])
    assert args[args.index("--stages") + 1 : args.index("--scenes")] == ["layout", "acoustics"]
    build_scenes(hearing, "tiny", ["tiny_room_val"], stages=pool.stages, workers=1)
    assert pool.ready("val") == ["tiny_room_val"]  # no views, ready for this run
    assert ScenePool(seeing, "tiny").ready("val") == []  # not for a run that sees


def test_a_scene_another_process_re_bakes_stays_in_the_pool_and_a_lost_one_does_not_empty_it(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """A --force re-bake takes the stages out of the manifest while it writes them, and a bake with other
    settings leaves a scene this run cannot read: neither may empty the training split under a live run (it
    crashed with "no train scene is baked yet", its updates since the last checkpoint lost)."""
    from asgf_nav.io import lock_held
    from asgf_nav.scenes.store import BAKE_LOCK, bake_lock, remove_stage, scene_dir

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "task.sensors=[spectrogram]", *FAST_ACOUSTICS])
    pool = ScenePool(cfg, "tiny")
    build_scenes(cfg, "tiny", ["tiny_room_val"], stages=pool.stages, workers=1)
    directory = scene_dir(tmp_path, "tiny", "tiny_room_val")
    assert pool.changed("val") is False and pool.ready("val") == ["tiny_room_val"]
    with bake_lock(directory):  # another process re-baking it: its stages are out of the manifest meanwhile
        assert lock_held(directory / BAKE_LOCK)
        remove_stage(directory, "acoustics")
        assert scene_ready(cfg, "tiny", "tiny_room_val") is False
        assert pool.ready("val") == ["tiny_room_val"] and pool.changed("val") is False
    assert not lock_held(directory / BAKE_LOCK)
    with caplog.at_level(logging.WARNING, logger="asgf_nav.scenes.background"):
        assert pool.changed("val") is False  # lost for good (here: not baked back): logged, no rebuild
    assert "val scene(s) ['tiny_room_val'] no longer match this run's settings" in caplog.text
    build_scenes(cfg, "tiny", ["tiny_room_val"], stages=pool.stages, workers=1)
    assert pool.changed("val") is True  # baked back: a gain again


def test_the_pool_re_reads_a_scene_only_when_its_manifest_changed(tmp_path: Path, monkeypatch) -> None:
    """The trainer polls the pool at every update: re-reading every scene's stages and re-hashing its layout
    cost milliseconds per scene each time, for the whole run. A bake rewrites the manifest, which is noticed."""
    from asgf_nav.scenes import background
    from asgf_nav.scenes.store import remove_stage, scene_dir

    cfg = load_config("tiny_heard", [f"scenes.data_root={tmp_path}", "task.sensors=[spectrogram]", *FAST_ACOUSTICS])
    pool = ScenePool(cfg, "tiny")
    build_scenes(cfg, "tiny", ["tiny_room_val"], stages=pool.stages, workers=1)
    checked: list[str] = []
    real = background.scene_ready
    monkeypatch.setattr(background, "scene_ready", lambda *args, **kw: checked.append(args[2]) or real(*args, **kw))
    assert pool.ready("val") == ["tiny_room_val"] and checked == ["tiny_room_val"]
    assert pool.ready("val") == ["tiny_room_val"] and pool.changed("val") is False and len(checked) == 1
    remove_stage(scene_dir(tmp_path, "tiny", "tiny_room_val"), "acoustics")  # another process's bake
    assert pool.ready("val") == [] and len(checked) == 2
    assert pool.ready("val") == [] and len(checked) == 3  # not ready: checked again each time
    build_scenes(cfg, "tiny", ["tiny_room_val"], stages=pool.stages, workers=1)
    monkeypatch.setattr(background, "scene_ready", lambda *args, **kw: checked.append(args[2]) and False)
    assert pool.ready("val") == []  # a passing failure to read it (out of open files, say) ...
    monkeypatch.setattr(background, "scene_ready", lambda *args, **kw: checked.append(args[2]) or real(*args, **kw))
    assert pool.ready("val") == ["tiny_room_val"]  # ... does not drop it for the rest of the run
