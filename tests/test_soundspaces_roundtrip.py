"""SoundSpaces export: the files it writes, checked against the layout by hand, and what a re-export leaves."""

from __future__ import annotations

import gzip
import json
import pickle
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.io import wavfile

from asgf_nav.scenes import soundspaces as ss
from asgf_nav.tasks.episodes import Episode
from asgf_nav.tasks.soundspaces_export import (
    ExportError,
    check_exportable,
    export_episodes,
    export_scene,
    export_world,
    scene_graph,
    write_observations,
)
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

SR = 44100
REPLICA_OFFSET = 1.5528907


def small_scene(name: str = "g", nx: int = 2, nz: int = 2, **kwargs) -> object:
    """A replica-compatible grid (44100 Hz, 0.5 m), nodes at (0.5 ix, 0, 0.5 iz) in row-major iz order."""
    return grid_scene(
        name, nx=nx, nz=nz, grid_size=0.5, sample_rate=SR, image_size=4, rir_seconds=0.01, dataset="replica", **kwargs
    )


def wav_names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.wav")}


def test_points_txt_holds_mesh_z_up_coordinates(tmp_path: Path) -> None:
    """Each row is (node, x, -z, y + 1.5528907): SoundSpaces reads points.txt, not only the graph's points."""
    export_scene(small_scene(), tmp_path, "replica", views=False)
    rows = [line.split("\t") for line in (tmp_path / "metadata/replica/g/points.txt").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    got = np.array([[float(v) for v in r[1:]] for r in rows])
    habitat = [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.0, 0.0, 0.5), (0.5, 0.0, 0.5)]
    np.testing.assert_allclose(got, [(x, -z, y + REPLICA_OFFSET) for x, y, z in habitat], atol=1e-7)


def test_export_refuses_another_grid_and_positions_one_key_apart(tmp_path: Path) -> None:
    """A 1 m grid as replica, or two nodes 4 mm apart (one 2-decimal key, as SoundSpaces names them), is refused."""
    coarse = grid_scene("coarse", nx=2, nz=2, grid_size=1.0, sample_rate=SR, image_size=4, rir_seconds=0.01)
    with pytest.raises(ExportError, match=r"scene coarse has a 1\.0 m grid; SoundSpaces replica uses 0\.5 m"):
        check_exportable(coarse, "replica")
    scene = small_scene()
    positions = np.array(scene.positions, dtype=np.float64)
    positions[1] = (0.004, 0.0, 0.0)  # key 0.00_0.00_0.00, as node 0
    with pytest.raises(ExportError, match=r"scene g: two nodes share a 2-decimal position key"):
        check_exportable(replace(scene, positions=positions), "replica")


def test_graph_keeps_an_edge_listed_by_one_end_only() -> None:
    """An edge into node 0 that only node 1's neighbour row names is still an edge of the pickled graph."""
    scene = SimpleNamespace(
        positions=np.array([(0.0, 0.0, 0.0), (0.5, 0.0, 0.0)]),
        neighbors=np.array([[-1, -1, -1, -1], [-1, 0, -1, -1]]),
    )
    graph = scene_graph(scene)
    assert sorted(graph.nodes) == [0, 1] and graph.has_edge(0, 1)
    assert graph.nodes[1]["point"] == (0.5, 0.0, 0.0)


def test_a_resume_rewrites_a_wav_with_a_header_and_no_samples(tmp_path: Path) -> None:
    """A 0-sample RIR file (a whole header, nothing after it) is not kept by skip_existing."""
    world = synthetic_world([small_scene()], SR, dataset="replica")
    total = export_world(world, tmp_path, "replica", views=False).rir_files
    wav = tmp_path / "binaural_rirs/replica/g/270/1_0.wav"
    whole = wav.read_bytes()
    wavfile.write(wav, SR, np.zeros((0, 2), dtype=np.float32))
    assert export_world(world, tmp_path, "replica", skip_existing=True, views=False).skipped == total - 1
    assert wav.read_bytes() == whole


def test_re_export_under_the_same_name_leaves_only_the_new_scenes_files(tmp_path: Path) -> None:
    """A smaller scene (all nodes sources) exported over a larger one (2 sources) leaves none of the old
    RIR files and no stale source_nodes.txt, which the importer would otherwise read."""
    export_scene(small_scene(nx=3, nz=2, num_sources=2), tmp_path, "replica", views=False)
    source_list = tmp_path / "metadata/replica/g/source_nodes.txt"
    assert source_list.exists()
    export_scene(small_scene(), tmp_path, "replica", views=False)
    assert not source_list.exists()
    expected = {f"{az}/{r}_{s}.wav" for az in (0, 90, 180, 270) for r in range(4) for s in range(4)}
    assert wav_names(tmp_path / "binaural_rirs/replica/g") == expected
    paths = ss.SoundSpacesPaths(tmp_path, "replica")
    np.testing.assert_array_equal(ss.read_source_nodes(paths.source_nodes_file("g"), np.arange(4)), np.arange(4))


@pytest.mark.parametrize(("dataset", "scene_id"), [("replica", "g/habitat/mesh_semantic.ply"), ("mp3d", "g/g.glb")])
def test_exported_episodes_name_the_scene_as_the_dataset_does(tmp_path: Path, dataset: str, scene_id: str) -> None:
    """An episode of a project scene ('g' alone) is written with SoundSpaces' scene id for the dataset."""
    episode = Episode("0", "g", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0], "chirp", 0.5)
    path = export_episodes(tmp_path, dataset, "train", "heard", [episode])
    with gzip.open(path.parent / "content" / "g.json.gz", "rt") as f:
        records = json.load(f)["episodes"]
    assert [r["scene_id"] for r in records] == [scene_id]


def test_export_without_views_writes_no_views_pickle(tmp_path: Path) -> None:
    """views=False (the script's --no-views) leaves scene_observations/ out even for a scene that has views."""
    world = synthetic_world([small_scene()], SR, dataset="replica")
    views = tmp_path / "scene_observations/replica/g.pkl"
    export_world(world, tmp_path, "replica", views=False)
    assert not views.exists()
    export_world(world, tmp_path, "replica", skip_existing=True)
    assert views.exists()


def test_views_pickle_holds_what_habitat_sim_renders(tmp_path: Path) -> None:
    """Keys (node, yaw in degrees); rgb (H, W, 3) uint8 and depth (H, W) float32 metres, as SoundSpaces reads them."""
    scene = small_scene()
    write_observations(scene, tmp_path / "g.pkl")
    frames = pickle.loads((tmp_path / "g.pkl").read_bytes())
    assert sorted(frames) == [(n, yaw) for n in range(4) for yaw in (0, 90, 180, 270)]
    view = frames[(3, 180)]
    assert view["rgb"].dtype == np.uint8 and view["rgb"].shape == (4, 4, 3)
    assert view["depth"].dtype == np.float32 and view["depth"].shape == (4, 4)
    np.testing.assert_array_equal(view["rgb"], scene.rgb[3, 2])
    np.testing.assert_array_equal(view["depth"], scene.depth[3, 2].astype(np.float32))


def test_an_interrupted_first_export_is_resumed_keeping_the_files_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first export cut off after 10 RIR files is of the recorded making: its resume keeps those 10."""
    scene = small_scene()
    calls, rir = {"n": 0}, scene.rir

    def dies_after_ten(*args):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return rir(*args)

    monkeypatch.setattr(scene, "rir", dies_after_ten)
    with pytest.raises(KeyboardInterrupt):
        export_scene(scene, tmp_path, "replica", views=False)
    monkeypatch.setattr(scene, "rir", rir)
    stats = export_scene(scene, tmp_path, "replica", skip_existing=True, views=False)
    assert (stats.rir_files, stats.skipped) == (4 * 4 * 4, 10)
